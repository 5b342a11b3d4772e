"""A file larger than the cache comes back: streamed from a host, verified, never cached
(issue 12, section 2): ``get``, ``open``, ``cm get``, a share link of ``cm serve``, spread
files, and ``sync`` sending it again to a host that failed it."""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from cloudmanager import CloudManager, Unavailable
from cloudmanager.cli import main
from cloudmanager.errors import HostError
from cloudmanager.hosts import MemoryHost
from cloudmanager.testing import MEMORY_BOUND, sha256_hex
from tests.conftest import Factory
from tests.servers.node import NodeServer

CAPACITY = 64 * 1024
BIG = os.urandom(200 * 1024)
DIGEST = sha256_hex(BIG)


class SwitchableHost(MemoryHost):
    """A memory host that refuses uploads while ``down``."""

    def __init__(self, name: str):
        super().__init__(name)
        self.down = False

    def upload(self, source: Path, name: str, digest: str) -> str:
        """Refuse while down, else keep the bytes."""
        if self.down:
            raise HostError(self.name, "down for maintenance")
        return super().upload(source, name, digest)


def untouched(cm: CloudManager) -> None:
    """Nothing of the big file is counted in the cache, and no temporary file is left."""
    assert cm.catalog.usage() == (0, 0) and not cm.on_cache(DIGEST)
    assert list(cm.cache.root.glob(".tmp-*")) == []


def corrupt(host: str) -> None:
    """Replace the host's copy by other bytes of the same size."""
    MemoryHost(host).objects[DIGEST] = bytes(len(BIG))


def leftovers(folder: Path) -> list[Path]:
    return list(folder.glob(".*cm-partial"))


@pytest.fixture
def big(write: Callable[..., Path]) -> Path:
    return write("big.bin", BIG)


def test_get_streams_an_oversize_file_to_its_destination_without_caching_it(
        node: Factory, big: Path, tmp_path: Path) -> None:
    cm = node(CAPACITY, ["memory://a", "memory://b"])
    assert cm.upload(big) == DIGEST
    untouched(cm)
    out = tmp_path / "out.bin"
    assert cm.get(DIGEST, out) == out
    assert out.read_bytes() == BIG
    untouched(cm)
    assert leftovers(tmp_path) == []
    assert cm.get("0" * 64, tmp_path / "unknown") is None and not (tmp_path / "unknown").exists()
    assert leftovers(tmp_path) == []


def test_open_gives_a_readable_file_the_cache_does_not_count(node: Factory, big: Path) -> None:
    cm = node(CAPACITY, ["memory://a"])
    cm.upload(big)
    handle = cm.open(DIGEST)
    assert handle is not None
    with handle:
        untouched(cm)  # already unlinked: nothing in the cache directory while it is read
        assert handle.read() == BIG
    untouched(cm)


def test_a_corrupted_copy_is_refused_and_the_next_host_tried(node: Factory, big: Path,
                                                             tmp_path: Path) -> None:
    cm = node(CAPACITY, ["memory://bad", "memory://good"])
    cm.upload(big)
    corrupt("bad")
    cm.catalog.note_host("good", "slow a moment ago")  # so the bad copy is tried first
    out = tmp_path / "out.bin"
    cm.get(DIGEST, out)
    assert out.read_bytes() == BIG
    record = cm.catalog.record(DIGEST)
    assert record is not None
    bad = next(u for u in record.uploads if u.host == "bad")
    assert not bad.ok and "other bytes" in str(bad.error)
    untouched(cm)


def test_a_file_no_host_gives_back_leaves_the_destination_as_it_was(node: Factory, big: Path,
                                                                     tmp_path: Path) -> None:
    cm = node(CAPACITY, ["memory://a", "memory://b"])
    cm.upload(big)
    corrupt("a")
    corrupt("b")
    out = tmp_path / "out.bin"
    out.write_bytes(b"what was there")
    with pytest.raises(Unavailable):
        cm.get(DIGEST, out)
    with pytest.raises(Unavailable):
        cm.open(DIGEST)
    assert out.read_bytes() == b"what was there"
    assert leftovers(tmp_path) == []
    untouched(cm)


def test_an_oversize_spread_file_is_rebuilt_without_caching_it(node: Factory, big: Path,
                                                               tmp_path: Path) -> None:
    cm = node(CAPACITY, ["memory://s1", "memory://s2", "memory://s3"])
    assert cm.upload(big, spread="2/3") == DIGEST
    MemoryHost.reset("s2")  # one share lost: any two rebuild it
    out = tmp_path / "out.bin"
    cm.get(DIGEST, out)
    assert out.read_bytes() == BIG
    handle = cm.open(DIGEST)
    assert handle is not None
    with handle:
        assert handle.read() == BIG
    untouched(cm)


def test_sync_sends_an_oversize_file_to_a_host_that_failed_it(node: Factory, big: Path) -> None:
    flaky = SwitchableHost("flaky")
    flaky.down = True
    cm = node(CAPACITY, [flaky, "memory://steady"])
    cm.upload(big)
    assert DIGEST not in flaky.objects
    flaky.down = False
    changes = cm.sync()
    assert [(u.host, u.ok) for u in changes[DIGEST]] == [("flaky", True)]
    assert flaky.objects[DIGEST] == BIG
    record = cm.info(DIGEST)
    assert record is not None and all("url" in u for u in record["uploads"])
    untouched(cm)


def test_cm_get_of_a_file_larger_than_the_cache(tmp_path: Path, big: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    config = work / "cm.toml"
    config.write_text(f'[catalog]\npath = "catalog.db"\n[cache]\npath = "cache"\ncapacity = "64 KiB"\n'
                      f'[[hosts]]\nurl = "{(tmp_path / "vault").as_uri()}"\n')

    def cm(*args: str) -> str:
        done = CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)
        assert done.exit_code == 0, (done.output, done.stderr)
        return done.stdout

    assert cm("upload", str(big)).split() == [DIGEST, str(big), "vault:", "ok"]
    assert cm("get", DIGEST, "-o", "out.bin").strip() == "out.bin"
    assert (work / "out.bin").read_bytes() == BIG
    assert leftovers(work) == []
    figures = json.loads(cm("stats", "--json"))
    assert figures["used"] == 0 and figures["files"] == 1


def test_a_share_link_serves_a_file_larger_than_the_cache(node_servers: Callable[..., NodeServer],
                                                          big: Path) -> None:
    server = node_servers(capacity=CAPACITY)

    def cm(*args: str) -> str:
        done = CliRunner().invoke(main, ["--config", str(server.config), *args], catch_exceptions=False)
        assert done.exit_code == 0, (done.output, done.stderr)
        return done.stdout

    cm("upload", str(big))  # beside the server, into the node's catalog and vault
    url = cm("link", DIGEST).strip()
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 200 and answer.content == BIG
    part = httpx.get(url, headers={"Range": "bytes=1000-1999"}, timeout=30)
    assert part.status_code == 206 and part.content == BIG[1000:2000]
    assert json.loads(cm("stats", "--json"))["used"] == 0
    deadline = time.monotonic() + 30  # the server lets the copy go once the answer is sent
    while list(server.cache.glob(".tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(server.cache.glob(".tmp-*")) == []


def test_memory_stays_bounded_getting_and_syncing_a_large_file(tmp_path: Path) -> None:
    size = 2 * MEMORY_BOUND
    source = tmp_path / "large.bin"
    block = os.urandom(1 << 20)
    with open(source, "wb") as out:
        for i in range(size // len(block)):
            out.write(block[i:] + block[:i])
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    blocker = tmp_path / "unmounted"
    blocker.write_bytes(b"a file where the second host's folder should be")
    late = blocker / "late"
    with CloudManager(tmp_path / "catalog.db", tmp_path / "cache", CAPACITY,
                      hosts=[(tmp_path / "early").as_uri(), late.as_uri()]) as cm:
        assert cm.upload(source) == digest  # "late" cannot take it yet
        blocker.unlink()
        tracemalloc.start()
        try:
            assert cm.get(digest, tmp_path / "back.bin") is not None
            _, get_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            changes = cm.sync()
            _, sync_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert [(u.host, u.ok) for u in changes[digest]] == [("late", True)]
        assert (late / digest[:2] / digest[2:4] / digest).stat().st_size == size
        assert filecmp.cmp(source, tmp_path / "back.bin", shallow=False)
        assert get_peak < MEMORY_BOUND and sync_peak < MEMORY_BOUND, (get_peak, sync_peak)
        assert cm.catalog.usage() == (0, 0)


def test_a_file_that_fits_but_not_now_is_brought_back_without_caching_it(
        node: Factory, write: Callable[..., Path], tmp_path: Path) -> None:
    """The cache is full of pinned files: warm_up cannot place the file, but get and open
    still bring it back (verified, not counted), as for a file larger than the cache."""
    cm = node(capacity=100, hosts=[(tmp_path / "vault").as_uri()])
    pinned = cm.upload(write("pinned", b"p" * 80))
    assert pinned and cm.pin(pinned)
    wanted = cm.upload(write("wanted", b"w" * 50))  # it does not fit beside the pinned one: sent only
    assert wanted and not cm.on_cache(wanted)
    assert cm.warm_up(wanted) is False
    with cm.open(wanted) as handle:  # type: ignore[union-attr]
        assert handle.read() == b"w" * 50
    assert cm.get(wanted, tmp_path / "out") == tmp_path / "out"
    assert (tmp_path / "out").read_bytes() == b"w" * 50
    assert not cm.on_cache(wanted) and cm.usage_ratio() == 0.8
