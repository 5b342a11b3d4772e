"""One download per file, however many readers (issue 12, section 3): threads and
processes asking for one uncached file wait for the first one's download; when it
fails, they try themselves; a reader killed while downloading blocks no one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cloudmanager import CloudManager
from cloudmanager.cache import LOCKS_DIR
from cloudmanager.errors import HostError
from cloudmanager.hosts import MemoryHost
from cloudmanager.streams import Sink
from cloudmanager.testing import sha256_hex
from tests.conftest import Factory

ROOT = Path(__file__).parent.parent
DATA = os.urandom(100_000)
DIGEST = sha256_hex(DATA)
READERS = 20
#: Every wait of these tests ends within this (a bound, not a measure).
WAIT_S = 60.0


class CountingHost(MemoryHost):
    """A memory host that counts downloads; each waits until every reader has asked
    (so they all ask while it runs), and the first ``failures`` of them fail."""

    def __init__(self, name: str, readers: int, failures: int = 0):
        super().__init__(name)
        self.downloads = 0
        self.failures = failures
        self._asked = 0
        self._everyone = threading.Event()
        self._readers = readers
        self._count = threading.Lock()

    def asking(self) -> None:
        """A reader is about to ask for the file."""
        with self._count:
            self._asked += 1
            if self._asked >= self._readers:
                self._everyone.set()

    def download(self, locator: str, out: Sink) -> None:
        """Count, wait for every reader, then fail or give the bytes."""
        with self._count:
            self.downloads += 1
            failing = self.downloads <= self.failures
        assert self._everyone.wait(WAIT_S), "the readers never all asked"
        if failing:
            raise HostError(self.name, "dropped the connection")
        super().download(locator, out)


def uncached(cm: CloudManager, data: bytes, files: Path) -> str:
    """Upload ``data`` and evict it: known, held by the hosts, not cached."""
    path = files / "popular.bin"
    path.write_bytes(data)
    digest = cm.upload(path)
    assert digest and cm.evict([digest]) == [digest] and not cm.on_cache(digest)
    return digest


def many_readers(cm: CloudManager, host: CountingHost) -> list[str | bool | None]:
    def read(_: int) -> str | bool | None:
        host.asking()
        return cm.warm_up(DIGEST)

    with ThreadPoolExecutor(max_workers=READERS) as pool:
        futures = [pool.submit(read, i) for i in range(READERS)]
        return [future.result(timeout=WAIT_S) for future in futures]


def test_twenty_threads_make_one_download(node: Factory, files: Path) -> None:
    host = CountingHost("popular", READERS)
    cm = node(1 << 20, [host])
    uncached(cm, DATA, files)
    results = many_readers(cm, host)
    assert results == [str(cm.path(DIGEST))] * READERS
    assert host.downloads == 1
    assert cm.path(DIGEST).read_bytes() == DATA
    assert list((cm.cache.root / LOCKS_DIR).iterdir()) == []  # no lock is left behind


def test_when_the_first_download_fails_the_waiting_readers_fetch_it_themselves(
        node: Factory, files: Path) -> None:
    host = CountingHost("flaky", READERS, failures=1)
    cm = node(1 << 20, [host])
    uncached(cm, DATA, files)
    results = many_readers(cm, host)
    assert results.count(False) == 1  # the first reader, whose download failed
    assert results.count(str(cm.path(DIGEST))) == READERS - 1
    assert host.downloads == 2  # the next reader fetched it; the others read its copy


def test_a_held_lock_is_left_alone_by_the_scan_and_a_free_one_removed(node: Factory) -> None:
    cm = node()
    locks = cm.cache.root / LOCKS_DIR
    with cm.cache.fetching(DIGEST):
        report = cm.repair()
        assert (locks / DIGEST).exists()
        assert report.clean and report.foreign == []
    assert not (locks / DIGEST).exists()
    (locks / DIGEST).touch()  # as a holder that died leaves it
    report = cm.repair()
    assert report.clean and report.foreign == [] and not (locks / DIGEST).exists()


# -- across processes -----------------------------------------------------------------


def worker(tmp: Path, count: int, mode: str) -> subprocess.Popen[bytes]:
    args = [str(tmp / "catalog.sqlite3"), str(tmp / "cache"), str(1 << 20), str(tmp / "vault"),
            str(tmp / "downloads.log"), DIGEST, str(tmp / "arrivals"), str(count), mode]
    return subprocess.Popen([sys.executable, "-m", "tests.fetch_worker", *args], cwd=ROOT,
                            stderr=subprocess.PIPE)


def shared_node(tmp: Path) -> CloudManager:
    (tmp / "arrivals").mkdir(exist_ok=True)
    return CloudManager(tmp / "catalog.sqlite3", tmp / "cache", 1 << 20, hosts=[(tmp / "vault").as_uri()])


def downloads(tmp: Path) -> list[str]:
    log = tmp / "downloads.log"
    return log.read_text(encoding="ascii").split() if log.exists() else []


def test_four_processes_make_one_download(tmp_path: Path) -> None:
    with shared_node(tmp_path) as cm:
        uncached(cm, DATA, tmp_path)
    workers = [worker(tmp_path, 4, "count") for _ in range(4)]
    for process in workers:
        _, err = process.communicate(timeout=WAIT_S * 2)
        assert process.returncode == 0, err.decode()
    assert len(downloads(tmp_path)) == 1


def test_a_reader_killed_while_downloading_does_not_block_the_next(tmp_path: Path) -> None:
    with shared_node(tmp_path) as cm:
        uncached(cm, DATA, tmp_path)
        hung = worker(tmp_path, 1, "hang")
        try:
            deadline = time.monotonic() + WAIT_S
            while not downloads(tmp_path) and hung.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert downloads(tmp_path), "the worker never started its download"
            assert (cm.cache.root / LOCKS_DIR / DIGEST).exists()  # it holds the file's lock
        finally:
            hung.send_signal(signal.SIGKILL)
            hung.communicate(timeout=WAIT_S)
        with ThreadPoolExecutor(max_workers=1) as pool:
            assert pool.submit(cm.warm_up, DIGEST).result(timeout=WAIT_S) == str(cm.path(DIGEST))
        assert cm.path(DIGEST).read_bytes() == DATA
