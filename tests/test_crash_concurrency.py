"""Many writers at once, and SIGKILL at random moments: nothing lost, nothing lying."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cloudmanager import CloudManager
from cloudmanager.cache import OWNER_FILE
from cloudmanager.errors import Unavailable
from tests.worker import current_cache

ROOT = Path(__file__).parent.parent
#: Kill points per run; the long run (tox -e torture) sets CM_CRASH_POINTS=2000.
CRASH_POINTS = int(os.environ.get("CM_CRASH_POINTS", "200"))
#: Processes and operations each for the many-writers test (the long run sets more).
WRITERS = int(os.environ.get("CM_WRITERS", "4"))
WRITER_OPS = int(os.environ.get("CM_WRITER_OPS", "500"))
CAPACITY = 160 * 1024


def worker(tmp: Path, seed: int, ops: int, journal: Path, *flags: str) -> subprocess.Popen[bytes]:
    args = [str(tmp / "catalog.sqlite3"), str(tmp / "cache"), str(CAPACITY), str(tmp / "vault"),
            str(journal), str(seed), str(ops), *flags]
    return subprocess.Popen([sys.executable, "-m", "tests.worker", *args], cwd=ROOT,
                            stderr=subprocess.PIPE)


def assert_consistent(tmp: Path, journals: list[Path], *, start: int = 0,
                      older: random.Random | None = None) -> int:
    """Reopen the node: recovery at open, then check() finds nothing; totals exact, no
    temp files; every file journaled from position ``start`` on comes back (and, with
    ``older``, 20 earlier ones drawn at random).  Returns what recovery at open mended."""
    with CloudManager(tmp / "catalog.sqlite3", current_cache(str(tmp / "cache")), CAPACITY,
                      hosts=[(tmp / "vault").as_uri()]) as cm:
        mended = cm.last_repair.problems
        on_disk = {p.name: p.stat().st_size for p in cm.cache.root.rglob("*")
                   if p.is_file() and p.name != OWNER_FILE}
        assert not [name for name in on_disk if name.startswith(".tmp-")]
        assert on_disk == cm.catalog.cached_sizes()
        used, count = cm.catalog.usage()
        assert used == sum(on_disk.values()) <= CAPACITY and count == len(on_disk)
        assert cm.check(verify_hash=True).problems == 0
        for journal in journals:
            digests = journal.read_text().split()
            wanted = digests[start:]
            if older is not None and start:
                wanted += older.sample(digests[:start], min(20, start))
            for digest in wanted:
                assert cm.exists(digest), digest
                try:  # as `cm get` does: cached, or through a copy the cache does not count
                    with cm.open(digest) as handle:  # type: ignore[union-attr]
                        assert hashlib.sha256(handle.read()).hexdigest() == digest
                except Unavailable:
                    raise AssertionError(f"{digest} was uploaded and is lost: {cm.catalog.record(digest)}, "
                                         f"on the host: {list((tmp / 'vault').rglob(digest))}") from None
        return mended


def test_threads_share_one_node(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    vault = tmp_path / "vault"
    with CloudManager(tmp_path / "catalog.sqlite3", tmp_path / "cache", 64 * 1024,
                      hosts=[vault.as_uri(), "memory://m"]) as cm:
        def run(seed: int) -> None:
            rng = random.Random(seed)
            try:
                mine = []
                for i in range(25):
                    path = tmp_path / f"t{seed}-{i}"
                    path.write_bytes(rng.randbytes(rng.randint(100, 9000)))
                    digest = cm.upload(path)
                    assert digest
                    mine.append(digest)
                    got = cm.warm_up(rng.choice(mine))
                    assert got is not None
                    if i % 5 == 0:
                        cm.evict([rng.choice(mine)])
                    assert cm.usage_ratio() <= 1.0
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert cm.catalog.count() == 200
        on_disk = {p.name: p.stat().st_size for p in cm.cache.root.rglob("*")
                   if p.is_file() and p.name != OWNER_FILE}
        assert on_disk == cm.catalog.cached_sizes()
        assert cm.catalog.usage() == (sum(on_disk.values()), len(on_disk))


def test_processes_share_one_catalog_and_cache(tmp_path: Path) -> None:
    journals = [tmp_path / f"journal-{n}" for n in range(WRITERS)]
    procs = [worker(tmp_path, seed=n + 1, ops=WRITER_OPS, journal=j) for n, j in enumerate(journals)]
    # observe from a fourth process while they run
    (tmp_path / "cache").mkdir(exist_ok=True)
    observations = 0
    while any(p.poll() is None for p in procs):
        time.sleep(0.02)
        if (tmp_path / "catalog.sqlite3").exists():
            with CloudManager(tmp_path / "catalog.sqlite3", tmp_path / "cache", CAPACITY,
                              hosts=[(tmp_path / "vault").as_uri()]) as observer:
                assert observer.usage_ratio() <= 1.0
                observations += 1
    errors = [proc.communicate()[1].decode() for proc in procs]  # every worker reaped first
    assert [proc.returncode for proc in procs] == [0] * len(procs), errors
    assert observations > 0
    assert_consistent(tmp_path, journals)
    uploads = sum(len(j.read_text().split()) for j in journals)
    print(f"{WRITERS} writers x {WRITER_OPS} operations: {uploads} uploads, 0 errors, "
          f"{observations} observations of usage <= capacity")


@pytest.mark.parametrize("seed", [int(os.environ.get("CM_CRASH_SEED", "20261124"))])
def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    print(f"crash test seed {seed}, {CRASH_POINTS} kill points")
    journal = tmp_path / "journal"
    journal.touch()
    mended = checked = in_recovery = 0
    recovering = Path(f"{journal}.recovering")
    for point in range(CRASH_POINTS):
        proc = worker(tmp_path, point + 1, 10_000, journal, "relocate", "damage")
        time.sleep(rng.uniform(0.15, 0.5))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err.decode()
        if recovering.exists():  # killed while adopting or quarantining
            in_recovery += 1
            recovering.unlink()
        last = point == CRASH_POINTS - 1
        # The files returned since the last kill, and a sample of older ones; all at the end.
        mended += assert_consistent(tmp_path, [journal], start=0 if last else checked, older=rng)
        checked = len(journal.read_text().split())
        if point % 100 == 99:
            print(f"  {point + 1} kill points: {checked} returned uploads retrieved, "
                  f"{mended} disagreements mended at open, {in_recovery} kills during "
                  "damage and recovery", flush=True)
    uploads = len(journal.read_text().split())
    print(f"{CRASH_POINTS} kill points ({in_recovery} during damage, adoption and quarantine): "
          f"{uploads} returned uploads all retrievable, {mended} disagreements mended by recovery "
          "at open, 0 left for check()")
    assert in_recovery, "no kill landed during damage and recovery: kill at other moments"
    assert uploads, "the worker never got an upload done: kill later"
