"""Which host a download tries first: fewest recent failures, then the fastest lately."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cloudmanager import CloudManager
from cloudmanager.hosts import FolderHost
from cloudmanager.hosts.speed import SMALLEST, Speeds
from cloudmanager.streams import Sink


class Slow(FolderHost):
    """A folder host that takes its time, and counts the downloads asked of it."""

    def __init__(self, root: Path):
        super().__init__(root, name="slow")
        self.downloads = 0

    def upload(self, source: Path, name: str, digest: str) -> str:
        time.sleep(0.6)  # far slower than a disk sync, even on a busy machine
        return super().upload(source, name, digest)

    def adopt(self, source: Path, name: str, digest: str) -> str:
        time.sleep(0.6)
        return super().adopt(source, name, digest)

    def download(self, locator: str, out: Sink) -> None:
        self.downloads += 1
        super().download(locator, out)


def test_speeds_average_the_recent_rates_and_ignore_small_transfers() -> None:
    speeds = Speeds()
    speeds.note("a", 100, 0.001)  # too small to say anything
    assert speeds.rate("a") == 0.0
    speeds.note("a", SMALLEST, 1.0)
    speeds.note("a", SMALLEST, 0.5)
    assert SMALLEST < speeds.rate("a") < 2 * SMALLEST


def test_a_warm_up_tries_the_host_that_was_fastest_lately(tmp_path: Path) -> None:
    slow = Slow(tmp_path / "slow")
    data = os.urandom(SMALLEST * 4)
    (tmp_path / "f.bin").write_bytes(data)
    with CloudManager(tmp_path / "c.db", tmp_path / "cache", 1 << 30,
                      hosts=[slow, FolderHost(tmp_path / "fast", name="fast")]) as cm:
        digest = cm.upload(tmp_path / "f.bin")
        assert digest and cm.transfers.speeds.rate("fast") > cm.transfers.speeds.rate("slow") > 0
        cm.evict([digest])
        path = cm.warm_up(digest)
        assert path and Path(path).read_bytes() == data and slow.downloads == 0


def test_a_spread_file_is_rebuilt_from_the_fastest_holders(tmp_path: Path) -> None:
    slow = Slow(tmp_path / "slow")
    data = os.urandom(SMALLEST * 8)
    (tmp_path / "f.bin").write_bytes(data)
    hosts = [slow, FolderHost(tmp_path / "a", name="a"), FolderHost(tmp_path / "b", name="b")]
    with CloudManager(tmp_path / "c.db", tmp_path / "cache", 1 << 30, hosts=hosts, spread="2/3") as cm:
        digest = cm.upload(tmp_path / "f.bin")
        assert digest
        cm.evict([digest])
        path = cm.warm_up(digest)
        assert path and Path(path).read_bytes() == data and slow.downloads == 0
