"""upload(): hashing, caching, sending to hosts, and what happens when hosts fail."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from cloudmanager import CloudManager
from cloudmanager.cache import OWNER_FILE
from cloudmanager.hosts import FolderHost, MemoryHost
from tests.conftest import Factory
from tests.hostkit import Recording


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_files(cm: CloudManager) -> dict[str, int]:
    root = cm.cache.root
    return {p.name: p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name != OWNER_FILE}


def test_upload_returns_the_sha256_and_records_every_host(node: Factory, write: Callable[..., Path],
                                                          tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    cm = node(hosts=[vault.as_uri(), "memory://m"])
    digest = cm.upload(write("report.pdf", b"%PDF-1.4 hello"))
    assert digest == sha(b"%PDF-1.4 hello")
    assert cm.exists(digest) and cm.on_cache(digest)
    record = cm.info(digest)
    assert record is not None
    assert record["filename"] == "report.pdf"
    assert record["filesize"] == str(len(b"%PDF-1.4 hello"))
    assert {u["host_name"] for u in record["uploads"]} == {"vault", "m"}
    assert all("url" in u for u in record["uploads"])
    assert (vault / digest[:2] / digest[2:4] / digest).read_bytes() == b"%PDF-1.4 hello"
    assert Path(cm.warm_up(digest) or "").read_bytes() == b"%PDF-1.4 hello"


def test_bad_paths_raise_and_record_nothing(node: Factory, tmp_path: Path) -> None:
    cm = node()
    with pytest.raises(FileNotFoundError):
        cm.upload(tmp_path / "missing.txt")
    with pytest.raises(IsADirectoryError):
        cm.upload(tmp_path)
    assert cm.catalog.count() == 0
    assert cache_files(cm) == {}


def test_same_content_twice_is_sent_once(node: Factory, write: Callable[..., Path]) -> None:
    host = Recording(MemoryHost("m"))
    cm = node(hosts=[host])
    first = cm.upload(write("a.txt", b"same"))
    second = cm.upload(write("b.txt", b"same"))
    assert first == second
    assert host.uploads == 1
    cm.evict()
    assert cm.upload(write("c.txt", b"same")) == first  # known, not cached: cached again, not sent
    assert host.uploads == 1 and cm.on_cache(first)


def test_uploads_go_to_all_hosts_in_parallel_and_errors_are_recorded(
        node: Factory, write: Callable[..., Path]) -> None:
    good, bad = Recording(MemoryHost("good")), Recording(MemoryHost("bad"))
    bad.fail_uploads = True
    cm = node(hosts=[good, bad])
    digest = cm.upload(write("x", b"x" * 100))
    assert digest
    uploads = {u["host_name"]: u for u in cm.info(digest)["uploads"]}
    assert "url" in uploads["good"] and uploads["bad"] == {"host_name": "bad", "error": True}
    health = cm.catalog.host_health(["bad", "good"])
    assert health["bad"].failures == 1 and health["bad"].last_error == "refused (test)"
    assert health["good"].failures == 0 and health["good"].last_ok is not None


def test_a_file_no_host_took_stays_cached_and_is_never_evicted(
        node: Factory, write: Callable[..., Path]) -> None:
    host = Recording(MemoryHost("m"))
    host.fail_uploads = True
    cm = node(capacity=250, hosts=[host])
    pending = cm.upload(write("pending", b"p" * 100))
    assert pending and cm.on_cache(pending)
    host.fail_uploads = False
    kept = cm.upload(write("kept", b"k" * 100))
    assert kept and cm.on_cache(kept)
    third = cm.upload(write("third", b"t" * 100))  # evicts "kept", never "pending"
    assert third and cm.on_cache(third)
    assert cm.on_cache(pending) and not cm.on_cache(kept)
    assert cm.evict([pending]) == []
    assert cm.on_cache(pending)


def test_upload_returns_false_when_the_file_can_be_kept_nowhere(
        node: Factory, write: Callable[..., Path]) -> None:
    host = Recording(MemoryHost("m"))
    host.fail_uploads = True
    cm = node(capacity=150, hosts=[host])
    assert cm.upload(write("pending", b"p" * 100))  # fills the cache with an unsendable file
    assert cm.upload(write("nowhere", b"n" * 100)) is False
    assert cm.catalog.count() == 1
    assert len(cache_files(cm)) == 1
    assert cm.usage_ratio() == pytest.approx(100 / 150)
    assert cm.upload(write("huge", b"h" * 1000)) is False  # larger than the cache, no host


def test_a_file_larger_than_the_cache_is_uploaded_but_not_cached(
        node: Factory, write: Callable[..., Path], tmp_path: Path) -> None:
    cm = node(capacity=100, hosts=[(tmp_path / "vault").as_uri()])
    digest = cm.upload(write("big.bin", b"b" * 1000))
    assert digest == sha(b"b" * 1000)
    assert cm.exists(digest) and not cm.on_cache(digest)
    assert cache_files(cm) == {}
    assert cm.warm_up(digest) is False  # cannot fit
    assert cm.usage_ratio() == 0


def test_names_are_cleaned(node: Factory, tmp_path: Path) -> None:
    cm = node()
    odd = tmp_path / "CON.txt"
    odd.write_bytes(b"reserved on windows")
    digest = cm.upload(odd)
    assert digest and cm.info(digest)["filename"] == "_CON.txt"


def test_the_default_host_is_a_folder_in_the_user_data_directory(
        tmp_path: Path, write: Callable[..., Path]) -> None:
    home = Path.home()
    before = {p for p in home.rglob("*")}
    with CloudManager(tmp_path / "c.sqlite3", tmp_path / "cache", 1 << 20) as cm:
        assert [type(h) for h in cm.hosts] == [FolderHost]
        assert cm.hosts[0].name == "vault"
        digest = cm.upload(write("x.txt", b"default host"))
        assert digest
    vault = home / ".local" / "share" / "cloudmanager" / "vault"
    assert (vault / digest[:2] / digest[2:4] / digest).read_bytes() == b"default host"
    created = {p for p in home.rglob("*")} - before
    assert all(p == vault or vault in p.parents or p in vault.parents for p in created)


@pytest.mark.parametrize("capacity", [-1, 1.5, True, "10"])
def test_a_bad_capacity_is_refused(tmp_path: Path, capacity: object) -> None:
    with pytest.raises(ValueError, match="capacity"):
        CloudManager(tmp_path / "c.sqlite3", tmp_path / "cache", capacity, hosts=[])


@pytest.mark.parametrize("hosts, message", [
    (["ftp://example"], "unknown host kind 'ftp'"),
    (["file://relative/dir"], "absolute path"),
    (["not a url"], "not a host URL"),
    (["memory://a", "memory://a"], "two hosts are named 'a'"),
])
def test_bad_host_urls_are_refused(tmp_path: Path, hosts: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CloudManager(tmp_path / "c.sqlite3", tmp_path / "cache", 100, hosts=hosts)
    assert not (tmp_path / "c.sqlite3").exists()


def test_upload_many_keeps_order_and_refuses_bad_paths_first(
        node: Factory, write: Callable[..., Path], tmp_path: Path) -> None:
    cm = node(capacity=10_000)
    paths = [write(f"f{i}", bytes([i]) * (i + 1)) for i in range(30)]
    assert cm.upload_many(paths) == [sha(bytes([i]) * (i + 1)) for i in range(30)]
    assert cm.catalog.count() == 30 and cm.catalog.usage()[0] == sum(range(1, 31))
    with pytest.raises(FileNotFoundError):
        cm.upload_many([write("new", b"new"), tmp_path / "missing"])
    assert not cm.exists(sha(b"new"))
