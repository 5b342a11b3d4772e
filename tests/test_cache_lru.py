"""warm_up()/download(), the LRU order, verification of fetched bytes, host order."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloudmanager import CloudManager, Unavailable
from cloudmanager.cache import OWNER_FILE
from cloudmanager.hosts import FolderHost, MemoryHost
from cloudmanager.streams import Sink
from tests.conftest import Factory
from tests.hostkit import Recording


def test_least_recently_used_is_evicted_first_even_within_one_clock_tick(
        node: Factory, write: Callable[..., Path]) -> None:
    cm = node(capacity=300)
    a, b, c = (cm.upload(write(n, n.encode() * 100)) for n in "abc")
    assert all(cm.on_cache(h) for h in (a, b, c))
    assert cm.warm_up(a)  # a is now the most recent
    d = cm.upload(write("d", b"d" * 100))
    assert d and cm.on_cache(d)
    assert [cm.on_cache(h) for h in (a, b, c)] == [True, False, True]
    e = cm.upload(write("e", b"e" * 100))
    assert e and [cm.on_cache(h) for h in (a, c, d)] == [True, False, True]
    assert cm.usage_ratio() == pytest.approx(1.0)


def test_eviction_walks_an_index(node: Factory) -> None:
    cm = node()
    plan = " ".join(str(row) for row in cm.catalog._db.execute(
        "EXPLAIN QUERY PLAN SELECT hash, size FROM files "
        "WHERE cached = 1 AND pinned = 0 AND copies > 0 ORDER BY access"))
    assert "files_lru" in plan and "TEMP B-TREE" not in plan


def test_warm_up_fetches_verifies_and_caches(node: Factory, write: Callable[..., Path]) -> None:
    cm = node(capacity=1000)
    data = b"fetch me" * 10
    digest = cm.upload(write("f", data))
    assert digest and cm.evict() == [digest]
    assert not cm.on_cache(digest) and cm.exists(digest)
    path = cm.download(digest)
    assert path and Path(path).read_bytes() == data
    assert cm.on_cache(digest)
    assert cm.usage_ratio() == pytest.approx(len(data) / 1000)


@pytest.mark.parametrize("value", ["", "abc", "G" * 64, "A" * 64, "0" * 63, "x' OR '1'='1",
                                   "0" * 64 + "; DROP TABLE files", None, 42, b"0" * 64])
def test_malformed_hashes_are_answered_not_raised(node: Factory, value: object) -> None:
    cm = node()
    assert cm.warm_up(value) is None
    assert cm.exists(value) is False
    assert cm.on_cache(value) is False
    assert cm.info(value) is None
    assert cm.catalog.count() == 0


def test_unknown_hash_is_none(node: Factory) -> None:
    assert node().warm_up("0" * 64) is None


def test_a_lying_host_is_recorded_and_the_next_one_tried(
        node: Factory, write: Callable[..., Path]) -> None:
    liar, honest = Recording(MemoryHost("liar")), Recording(MemoryHost("honest"))
    cm = node(hosts=[liar, honest])
    digest = cm.upload(write("f", b"precious"))
    assert digest
    cm.evict()
    liar.lie = True
    cm.catalog.note_host("honest", "made worse so the liar is asked first")
    path = cm.warm_up(digest)
    assert path and Path(path).read_bytes() == b"precious"
    assert liar.downloads == 1 and honest.downloads == 1
    uploads = {u["host_name"]: u for u in cm.info(digest)["uploads"]}
    assert uploads["liar"] == {"host_name": "liar", "error": True}
    assert "url" in uploads["honest"]


def test_when_every_host_fails_warm_up_is_false(node: Factory, write: Callable[..., Path]) -> None:
    one, two = Recording(MemoryHost("one")), Recording(MemoryHost("two"))
    cm = node(hosts=[one, two])
    digest = cm.upload(write("f", b"gone"))
    assert digest
    cm.evict()
    one.lie = True
    two.fail_downloads = True
    assert cm.warm_up(digest) is False
    assert not cm.on_cache(digest)
    assert list(cm.cache.root.rglob("*.tmp*")) == [] and list(cm.cache.root.glob(".tmp-*")) == []


def test_hosts_are_tried_healthiest_first(node: Factory, write: Callable[..., Path]) -> None:
    log: list[str] = []
    first, second = Recording(MemoryHost("first"), log=log), Recording(MemoryHost("second"), log=log)
    cm = node(hosts=[first, second])
    digest = cm.upload(write("f", b"order"))
    assert digest
    for _ in range(3):
        cm.catalog.note_host("first", "timeout")
    cm.evict()
    assert cm.warm_up(digest)
    assert log == ["second"]


def test_a_missing_object_is_recorded_as_a_lost_copy(
        node: Factory, write: Callable[..., Path], tmp_path: Path) -> None:
    vault = FolderHost(tmp_path / "vault")
    cm = node(hosts=[vault, "memory://m"])
    digest = cm.upload(write("f", b"lost on one host"))
    assert digest
    cm.evict()
    for path in (tmp_path / "vault").rglob(digest):
        path.unlink()
    cm.catalog.note_host("m", "so the folder is asked first")
    assert cm.warm_up(digest)
    uploads = {u["host_name"]: u for u in cm.info(digest)["uploads"]}
    assert uploads["vault"] == {"host_name": "vault", "error": True}


def test_pinned_files_are_never_evicted(node: Factory, write: Callable[..., Path]) -> None:
    cm = node(capacity=200)
    pinned = cm.upload(write("p", b"p" * 100))
    assert pinned and cm.pin(pinned)
    for name in "abc":
        assert cm.upload(write(name, name.encode() * 100))
    assert cm.on_cache(pinned)
    assert cm.pin(pinned, False)
    assert cm.upload(write("d", b"d" * 100))
    assert not cm.on_cache(pinned)
    assert not cm.pin("0" * 64)


def test_usage_ratio_is_exact(node: Factory, write: Callable[..., Path]) -> None:
    cm = node(capacity=1000)
    sizes = [10, 200, 333]
    hashes = [cm.upload(write(f"f{n}", bytes([n % 256]) * n)) for n in sizes]
    assert cm.usage_ratio() == pytest.approx(sum(sizes) / 1000)
    cm.evict([hashes[1]])
    assert cm.usage_ratio() == pytest.approx((10 + 333) / 1000)
    on_disk = sum(p.stat().st_size for p in cm.cache.root.rglob("*") if p.is_file() and p.name != OWNER_FILE)
    assert on_disk == 343


def test_open_gives_a_readable_file_even_if_evicted_meanwhile(
        node: Factory, write: Callable[..., Path]) -> None:
    cm = node()
    digest = cm.upload(write("f", b"open me"))
    assert digest
    cm.evict()
    handle = cm.open(digest)
    assert handle is not None
    with handle:
        cm.evict()
        assert not cm.path(digest).exists()
        assert handle.read() == b"open me"
    assert cm.open("0" * 64) is None and cm.open("nonsense") is None


def test_open_raises_when_no_host_gives_the_file_back(node: Factory, write: Callable[..., Path]) -> None:
    host = Recording(MemoryHost("m"))
    cm = node(hosts=[host])
    digest = cm.upload(write("f", b"unreachable"))
    assert digest
    cm.evict()
    host.fail_downloads = True
    with pytest.raises(Unavailable, match=digest):
        cm.open(digest)


class Flooding(Recording):
    """A host that sends endless bytes for any object."""

    def download(self, locator: str, out: Sink) -> None:
        chunk = b"x" * 65536
        for _ in range(10_000):  # 640 MiB if nothing stops it
            out.write(chunk)


def test_a_host_that_floods_is_cut_off_at_the_files_size(node: Factory, write: Callable[..., Path]) -> None:
    flood, honest = Flooding(MemoryHost("flood")), Recording(MemoryHost("honest"))
    cm = node(hosts=[flood, honest])
    digest = cm.upload(write("f", b"small" * 10))
    assert digest
    cm.evict()
    cm.catalog.note_host("honest", "so the flood is asked first")
    path = cm.warm_up(digest)
    assert path and Path(path).read_bytes() == b"small" * 10
    assert cm.catalog.host_health(["flood"])["flood"].last_error == "sent more bytes than the file has"
    assert cm.info(digest)["uploads"][0] == {"host_name": "flood", "error": True}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB file system (tmpfs; the tests run as root, as in CI)."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_during_a_download_is_not_blamed_on_the_host(
        small_disk: Path, tmp_path: Path, write: Callable[..., Path]) -> None:
    host = Recording(FolderHost(tmp_path / "vault"))
    data = os.urandom(150 * 1024)
    with CloudManager(tmp_path / "c.sqlite3", small_disk / "cache", 10 * 2**20, hosts=[host]) as cm:
        digest = cm.upload(write("f", data))
        assert digest and cm.evict() == [digest]
        (small_disk / "cache" / "filler").write_bytes(b"\0" * 150 * 1024)  # not ours: left alone
        assert cm.warm_up(digest) is False  # no room on the disk
        assert cm.catalog.host_health([host.name])[host.name].failures == 0
        assert cm.info(digest)["uploads"][0]["url"]
        assert not list(cm.cache.root.glob(".tmp-*")) and not cm.on_cache(digest)
        assert cm.catalog.usage() == (0, 0)
        (small_disk / "cache" / "filler").unlink()
        path = cm.warm_up(digest)
        assert path and Path(path).read_bytes() == data


def test_a_full_disk_during_an_upload_sends_the_file_uncached(
        small_disk: Path, tmp_path: Path, write: Callable[..., Path]) -> None:
    data = os.urandom(200 * 1024)
    with CloudManager(tmp_path / "c.sqlite3", small_disk / "cache", 10 * 2**20,
                      hosts=[(tmp_path / "vault").as_uri()]) as cm:
        (small_disk / "cache" / "filler").write_bytes(b"\0" * 100 * 1024)
        digest = cm.upload(write("f", data))
        assert digest and cm.exists(digest) and not cm.on_cache(digest)
        assert not list(cm.cache.root.glob(".tmp-*")) and cm.catalog.usage() == (0, 0)
        (small_disk / "cache" / "filler").unlink()
        path = cm.warm_up(digest)
        assert path and Path(path).read_bytes() == data
