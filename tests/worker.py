"""A child process that works a node hard: used by the crash and concurrency tests.

    python -m tests.worker CATALOG CACHE CAPACITY HOST_DIR JOURNAL SEED OPS

Runs OPS random operations (upload, warm_up, evict, data_load, sync) on the
node.  After each upload returns, its hash is appended to JOURNAL and fsynced:
the parent checks that every journaled file survives whatever happens next
(a SIGKILL included).  Exit status 0 when every operation behaved.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from pathlib import Path

from cloudmanager import CloudManager


def content(seed: int, index: int) -> bytes:
    """The bytes of file ``index`` of worker ``seed`` (1 KiB to 48 KiB, distinct)."""
    rng = random.Random(seed * 1_000_003 + index)
    return f"{seed}:{index}:".encode() + rng.randbytes(rng.randint(1024, 48 * 1024))


def main(argv: list[str]) -> int:
    catalog, cache, capacity, host_dir, journal, seed, ops = argv
    rng = random.Random(int(seed))
    work = Path(journal).with_suffix(".files")
    work.mkdir(exist_ok=True)
    known: list[str] = []
    with CloudManager(catalog, cache, int(capacity), hosts=[Path(host_dir).as_uri()]) as cm, \
            open(journal, "a") as log:
        for index in range(int(ops)):
            op = rng.choice(["upload"] * 4 + ["warm_up"] * 3 + ["exists", "evict", "load", "sync"])
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
                with cm.open(digest) as handle:
                    if hashlib.sha256(handle.read()).hexdigest() != digest:
                        print(f"open gave wrong bytes for {digest}", file=sys.stderr)
                        return 1
            elif op == "exists":
                if not cm.exists(rng.choice(known)):
                    print("a known file is not in the catalog", file=sys.stderr)
                    return 1
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
