"""A child process that works a node hard: used by the crash and concurrency tests.

    python -m tests.worker CATALOG CACHE CAPACITY HOST_DIR JOURNAL SEED OPS [relocate] [fleet] [damage]

Runs OPS random operations (upload, warm_up, exists, evict, data_load, sync,
and with ``relocate`` moving the cache between CACHE-a and CACHE-b) on the
node.  CATALOG is an SQLite file or a PostgreSQL URL.  With ``relocate``, the
cache in use is the one named in the file CACHE.current, which relocation
rewrites (atomically) before it removes the old cache, as ``cm relocate``
rewrites the configuration.  With ``fleet`` (one node of several sharing a
PostgreSQL catalog), half the warm-ups are of files any node uploaded that a
host holds, found through the change sequence.  With ``damage`` (an SQLite
catalog), some operations make a cached file the only copy (its host copy gone
and recorded as lost), uncount it behind the manager's back, plant bytes that are
no file in the cache, and run recovery: it must adopt the one and quarantine the
others.  JOURNAL.recovering exists while such a step runs (the parent counts the
kills that land there).

After each upload returns, its hash is appended to JOURNAL and fsynced:
the parent checks that every journaled file survives whatever happens next
(a SIGKILL included).  Exit status 0 when every operation behaved.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import sys
from pathlib import Path

from cloudmanager import CloudManager


def content(seed: int, index: int) -> bytes:
    """The bytes of file ``index`` of worker ``seed`` (1 KiB to 48 KiB, distinct)."""
    rng = random.Random(seed * 1_000_003 + index)
    return f"{seed}:{index}:".encode() + rng.randbytes(rng.randint(1024, 48 * 1024))


def current_cache(cache: str) -> Path:
    """The cache directory in use: the one CACHE.current names, else CACHE itself."""
    pointer = Path(f"{cache}.current")
    return Path(pointer.read_text()) if pointer.exists() else Path(cache)


def point_to(cache: str, target: Path) -> None:
    """Name ``target`` in CACHE.current, atomically and durably."""
    pointer = Path(f"{cache}.current")
    partial = pointer.with_suffix(".partial")
    with open(partial, "w") as out:
        out.write(str(target))
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, pointer)


def held_elsewhere(cm: CloudManager, rng: random.Random) -> str | None:
    """A file some node uploaded and some host holds (from a random point of the change
    sequence), or None."""
    records, _, _ = cm.catalog.changes(rng.randrange(max(cm.catalog.sequence(), 1)), 20)
    held = [record.hash for record in records if any(upload.ok for upload in record.uploads)]
    return rng.choice(held) if held else None


def relocate(cm: CloudManager, cache: str) -> None:
    """Move the cache to the other of CACHE-a and CACHE-b."""
    target = Path(f"{cache}-b" if cm.cache.root.name.endswith("-a") else f"{cache}-a")
    shutil.rmtree(target, ignore_errors=True)  # what an earlier, killed relocation left
    report = cm.relocate(target, on_switch=lambda new: point_to(cache, new))
    if not report.switched or report.failed:
        raise AssertionError(f"relocation failed: {report}")


def damage_and_recover(cm: CloudManager, rng: random.Random, known: list[str], marker: Path) -> None:
    """Make one cached file the only copy and uncount it, plant bytes that are no file,
    and run recovery (which adopts the one and quarantines the others)."""
    cached = [digest for digest in known if cm.on_cache(digest)]
    # One file held only by the cache at a time: such files are never evicted, and
    # more would fill the small cache until a warm-up cannot fit (not a loss).
    pending = cm.catalog.uncopied()  # of every run, counted in the cache or not (yet)
    marker.touch()
    if cached and not pending:
        digest = rng.choice(cached)
        host = cm.hosts[0]
        cm.catalog.record_fetch(host.name, "removed by the crash test", digest=digest, lost=True)
        for copy in Path(host.url().removeprefix("file://")).rglob(digest):
            copy.unlink()
        with sqlite3.connect(cm.catalog.path) as db:  # as a second cache's open once did
            db.execute("UPDATE files SET cached = 0 WHERE hash = ?", (digest,))
    planted = cm.cache.root / "00" / "00"
    planted.mkdir(parents=True, exist_ok=True)
    (planted / rng.randbytes(32).hex()).write_bytes(rng.randbytes(rng.randint(1, 4096)))
    (planted / "misplaced").write_bytes(b"not a cache file")
    cm.repair()
    marker.unlink()


def main(argv: list[str]) -> int:
    catalog, cache, capacity, host_dir, journal, seed, ops, *flags = argv
    moving = "relocate" in flags
    fleet = "fleet" in flags
    damaging = "damage" in flags
    recovering = Path(f"{journal}.recovering")
    rng = random.Random(int(seed))
    work = Path(journal).with_suffix(".files")
    work.mkdir(exist_ok=True)
    known: list[str] = []
    with CloudManager(catalog, current_cache(cache), int(capacity), hosts=[Path(host_dir).as_uri()]) as cm, \
            open(journal, "a") as log:
        for index in range(int(ops)):
            op = rng.choice(["upload"] * 4 + ["warm_up"] * 3 + ["exists", "evict", "load", "sync"]
                            + ["relocate"] * moving + ["damage"] * damaging)
            if op == "upload" or not known:
                data = content(int(seed), index)
                path = work / f"file-{index}.bin"
                path.write_bytes(data)
                digest = cm.upload(path)
                if digest != hashlib.sha256(data).hexdigest():
                    print(f"upload returned {digest!r}", file=sys.stderr)
                    return 1
                known.append(digest)
                log.write(digest + "\n")
                log.flush()
                os.fsync(log.fileno())
            elif op == "warm_up":
                digest = rng.choice(known)
                if fleet and rng.random() < 0.5:
                    digest = held_elsewhere(cm, rng) or digest
                with cm.open(digest) as handle:
                    if hashlib.sha256(handle.read()).hexdigest() != digest:
                        print(f"open gave wrong bytes for {digest}", file=sys.stderr)
                        return 1
            elif op == "exists":
                if not cm.exists(rng.choice(known)):
                    print("a known file is not in the catalog", file=sys.stderr)
                    return 1
            elif op == "relocate":
                relocate(cm, cache)
            elif op == "damage":
                damage_and_recover(cm, rng, known, recovering)
            elif op == "evict":
                cm.evict([rng.choice(known)])
            elif op == "load":
                info = cm.info(rng.choice(known))
                cm.data_load(json.dumps([info]))
            else:
                cm.sync()
            if cm.usage_ratio() > 1.0:
                print(f"usage above capacity: {cm.usage_ratio()}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
