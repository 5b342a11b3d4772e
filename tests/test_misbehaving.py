"""Fault injection, end to end through CloudManager: real misbehaving servers on 127.0.0.1.

Each test runs a node with two hosts: a misbehaving one (a WebDAV server from
tests/servers/misbehaving.py, or an SSH port that never answers) with a short
``timeout`` and few ``retries``, and a healthy one (a folder, or the real
WsgiDAV).  ``upload`` and ``warm_up`` must finish within the bad host's
timeout (per attempt, plus a margin: a correctness bound, not a benchmark),
record its error, use the healthy host, and leave the cache and the catalog
consistent: no temporary file, no stray file, the usage total equal to the
bytes on disk.  A download that brings more bytes than the file has (a flood)
must not write them to disk, and a disk that fills up during a download (a
small tmpfs, where the machine allows mounting one) must leave everything
consistent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import pytest

from cloudmanager import CloudManager
from cloudmanager.cache import OWNER_FILE
from tests.servers.misbehaving import MisbehavingServer
from tests.servers.sshd import SilentServer
from tests.servers.webdav import WebdavServer

#: The bad host's timeout (seconds) and the pause before its retry.
TIMEOUT = 1.0
RETRY_DELAY = 0.05
#: What may come on top of the bad host's timeouts: threads, fsyncs, SQLite, the healthy host.
MARGIN = 3.0
DATA = secrets.token_bytes(1024)
DIGEST = hashlib.sha256(DATA).hexdigest()
#: Bytes a flood may push into the sockets before the client hangs up: the socket buffers and
#: a read chunk (webdav.CHUNK, 1 MiB), far below the flood (200 MiB) that an unbounded
#: download takes.
FLOOD_BOUND = 32 * 1024 * 1024
#: The size of the small filesystem for the full-disk tests.
SMALL_DISK = 1024 * 1024

#: mode -> (retries, what the recorded upload error says (None: the upload is taken),
#: what the recorded download error says).
MODES: dict[str, tuple[int, str | None, str]] = {
    "hang": (0, r"no answer within 1 s", r"no answer within 1 s"),
    "half": (1, r"(RemoteProtocolError|ReadError|WriteError|disconnected).*after 2 attempts",
             r"(RemoteProtocolError|broke off|closed).*after 2 attempts|broke off"),
    "slow": (0, r"too slow.*within 1 s", r"too slow.*within 1 s"),
    "liar": (0, None, r"other bytes"),  # lies when asked for the bytes, takes them fine
    "flood": (0, None, r"more bytes|other bytes"),  # floods downloads only
}


# -- helpers ----------------------------------------------------------------------------------


def _bound(retries: int) -> float:
    """How long one operation of the bad host may take at most, the margin included."""
    attempts = retries + 1
    return TIMEOUT * attempts + RETRY_DELAY * (1 << attempts) + MARGIN


def _uploads(cm: CloudManager, digest: str) -> dict[str, dict[str, Any]]:
    info = cm.info(digest)
    assert info is not None
    return {entry["host_name"]: entry for entry in info["uploads"]}


def _timed(action: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = action()
    return result, time.monotonic() - started


def _assert_consistent(cm: CloudManager, expected: dict[str, int], *folders: Path) -> None:
    """The cache holds exactly ``expected`` (hash -> size), no temporary or stray file, the
    catalog counts what is on disk, a repair finds nothing to mend; ``folders`` (folder
    hosts) hold no temporary file either."""
    root = cm.cache.root
    temps = sorted(p.name for p in root.iterdir() if p.name.startswith(".tmp-"))
    assert temps == [], f"temporary files left in the cache: {temps}"
    on_disk = {p: p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name != OWNER_FILE}
    assert sorted(on_disk) == sorted(cm.cache.path(d) for d in expected), "stray or missing cache files"
    assert all(on_disk[cm.cache.path(d)] == size for d, size in expected.items())
    assert cm.catalog.cached_sizes() == expected
    assert cm.catalog.usage() == (sum(on_disk.values()), len(expected))
    assert cm.usage_ratio() == sum(on_disk.values()) / cm.capacity
    report = cm.repair()
    assert report.clean, report
    for folder in folders:
        assert [p for p in folder.rglob(".tmp-*")] == [], f"temporary files left in {folder}"


def _prefer_the_bad_host(cm: CloudManager, bad: str, good: str) -> None:
    """Record failures on the healthy host until the bad one is tried first."""
    while True:
        health = cm.catalog.host_health([bad, good])
        if health[good].failures > health[bad].failures:
            return
        cm.catalog.note_host(good, "x")


class _Peak:
    """Watches a cache directory from a thread: the largest temporary file seen in it."""

    def __init__(self, root: Path):
        self.root = root
        self.largest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="peak", daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.002):
            with os.scandir(self.root) as entries:
                for entry in entries:
                    if entry.name.startswith(".tmp-"):
                        with contextlib.suppress(FileNotFoundError):
                            self.largest = max(self.largest, entry.stat().st_size)

    def __enter__(self) -> _Peak:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[..., CloudManager]]:
    """Make nodes: ``nodes(hosts, cache=None, capacity=1 MiB)``; all closed after the test."""
    made: list[CloudManager] = []

    def make(hosts: list[str], cache: Path | None = None, capacity: int = 1 << 20) -> CloudManager:
        folder = tmp_path / f"node-{len(made)}"
        folder.mkdir()
        made.append(CloudManager(folder / "catalog.sqlite3", cache or folder / "cache", capacity,
                                 hosts=hosts))
        return made[-1]

    yield make
    for cm in made:
        cm.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A 1 MiB tmpfs mounted for the test where the machine allows it (root, mount
    rights), else None; unmounted after the test."""
    where = tmp_path / "small-disk"
    where.mkdir()
    mount, umount = shutil.which("mount"), shutil.which("umount")
    mounted = False
    if os.geteuid() == 0 and mount and umount:
        done = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={SMALL_DISK},mode=0700", "tmpfs",
                               str(where)], capture_output=True, check=False)
        mounted = done.returncode == 0
    try:
        yield where if mounted else None
    finally:
        if mounted and umount and subprocess.run([umount, str(where)], capture_output=True,
                                                 check=False).returncode:
            subprocess.run([umount, "-l", str(where)], capture_output=True, check=False)


def _folder_url(folder: Path, name: str = "good") -> str:
    return f"{folder.as_uri()}?name={name}"


def _wsgidav_url(server: WebdavServer, name: str = "good") -> str:
    return (f"webdav://{server.user}:{quote(server.password, safe='')}@127.0.0.1:{server.port}"
            f"/m-{secrets.token_hex(6)}?name={name}&timeout=10")


# -- every mode, end to end -------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "healthy"), [(mode, "folder") for mode in MODES]
                         + [("slow", "wsgidav"), ("half", "wsgidav")])
def test_upload_and_warm_up_get_past_a_misbehaving_server(
        mode: str, healthy: str, misbehaving: Callable[..., MisbehavingServer],
        nodes: Callable[..., CloudManager], tmp_path: Path, request: pytest.FixtureRequest) -> None:
    retries, upload_error, fetch_error = MODES[mode]
    server = misbehaving(mode)
    vault = tmp_path / "vault"
    good = (_wsgidav_url(request.getfixturevalue("webdav_server")) if healthy == "wsgidav"
            else _folder_url(vault))
    cm = nodes([server.url("/store", name="bad", timeout=TIMEOUT, retries=retries, retry_delay=RETRY_DELAY),
                good])
    source = tmp_path / "f.bin"
    source.write_bytes(DATA)

    digest, took = _timed(lambda: cm.upload(source))
    assert digest == DIGEST
    assert took < _bound(retries), f"upload took {took:.1f} s with a {mode} host"
    uploads = _uploads(cm, digest)
    assert "url" in uploads["good"]
    bad = cm.catalog.host_health(["bad"])["bad"]
    if upload_error is None:  # this mode misbehaves on downloads only
        assert "url" in uploads["bad"] and bad.failures == 0
    else:
        assert uploads["bad"].get("error") is True and "url" not in uploads["bad"]
        assert bad.failures == 1 and bad.last_error and re.search(upload_error, bad.last_error), bad
        server.mode = "ok"  # let it take the file (a later sync), so that warm_up has it to try
        changes = cm.sync()
        assert [u.ok for u in changes[digest]] == [True]
        assert "url" in _uploads(cm, digest)["bad"]
        server.mode = mode
    assert next(iter(server.objects.values())) == DATA  # it holds the right bytes

    assert cm.evict() == [digest] and not cm.on_cache(digest)
    _prefer_the_bad_host(cm, "bad", "good")
    failures_before = cm.catalog.host_health(["bad"])["bad"].failures
    gets_before = len(server.requests("GET", mode))
    path, took = _timed(lambda: cm.warm_up(digest))
    assert path and Path(path).read_bytes() == DATA
    assert took < _bound(retries), f"warm_up took {took:.1f} s with a {mode} host"
    assert len(server.requests("GET", mode)) > gets_before, "the bad host was not tried first"
    health = cm.catalog.host_health(["bad", "good"])
    assert health["bad"].failures == failures_before + 1
    assert health["bad"].last_error and re.search(fetch_error, health["bad"].last_error), health["bad"]
    assert health["good"].failures == 0 and health["good"].last_ok is not None  # it served the file
    if mode == "liar":  # its copy is recorded as lost, so sync sends the file again
        assert _uploads(cm, digest)["bad"].get("error") is True
    _assert_consistent(cm, {digest: len(DATA)}, *([vault] if healthy == "folder" else []))


# -- more bytes than the file has, and a disk that fills up ------------------------------------


def _flood_then_healthy(misbehaving: Callable[..., MisbehavingServer], nodes: Callable[..., CloudManager],
                        tmp_path: Path, cache: Path | None) -> None:
    """A flood host tried first, the healthy one next: the flood reaches neither the disk nor
    the cache, the file comes from the healthy host, the flood host is recorded."""
    server = misbehaving("flood")
    vault = tmp_path / "vault"
    cm = nodes([server.url("/store", name="bad", timeout=TIMEOUT, retries=0), _folder_url(vault)], cache)
    source = tmp_path / "f.bin"
    source.write_bytes(DATA)
    assert cm.upload(source) == DIGEST
    assert "url" in _uploads(cm, DIGEST)["bad"]  # a flood only comes with downloads
    assert cm.evict() == [DIGEST]
    _prefer_the_bad_host(cm, "bad", "good")

    with _Peak(cm.cache.root) as peak:
        path, took = _timed(lambda: cm.warm_up(DIGEST))
    assert server.requests("GET", "flood"), "the flood host was not tried"
    assert path and Path(path).read_bytes() == DATA
    health = cm.catalog.host_health(["bad", "good"])
    assert health["bad"].failures == 1 and health["bad"].last_error, health["bad"]
    assert health["good"].failures == 0
    _assert_consistent(cm, {DIGEST: len(DATA)}, vault)
    fetched = cm.stats()["transfers"]["total"]["fetched"]
    assert peak.largest <= len(DATA), (
        f"the download wrote {peak.largest} bytes to a temporary file in the cache for a "
        f"{len(DATA)}-byte file (the flood host sent {server.flood_sent} bytes, the catalog counts "
        f"{fetched} bytes fetched, it took {took:.1f} s)")
    assert server.flood_sent < FLOOD_BOUND, f"the client took {server.flood_sent} bytes of flood"
    assert took < _bound(0), f"warm_up took {took:.1f} s with a flood host"


@pytest.mark.parametrize("disk", ["regular", "small"])
def test_a_flood_never_reaches_the_disk(disk: str, small_disk: Path | None,
                                        misbehaving: Callable[..., MisbehavingServer],
                                        nodes: Callable[..., CloudManager], tmp_path: Path) -> None:
    """``small``: the cache is on a 1 MiB filesystem where the machine allows one (the
    flood fills it up if nothing stops it), else on the regular disk."""
    cache = small_disk / "cache" if disk == "small" and small_disk is not None else None
    _flood_then_healthy(misbehaving, nodes, tmp_path, cache)


def _bigger_than_the_free_space(small_disk: Path, nodes: Callable[..., CloudManager],
                                tmp_path: Path) -> tuple[CloudManager, str, str, Path]:
    """A node whose cache (capacity 8 MiB) is on a 1 MiB disk, holding B (600 KiB) cached,
    and A (600 KiB) on the hosts only: A does not fit the free space.  (cm, A, B, vault)"""
    vault = tmp_path / "vault"
    cm = nodes([_folder_url(vault), _folder_url(tmp_path / "vault2", "good2")],
               small_disk / "cache", capacity=8 << 20)
    first, second = tmp_path / "a.bin", tmp_path / "b.bin"
    first.write_bytes(secrets.token_bytes(600 * 1024))
    second.write_bytes(secrets.token_bytes(600 * 1024))
    a = cm.upload(first)
    assert a and cm.evict() == [a]
    b = cm.upload(second)
    assert b and cm.on_cache(b)
    return cm, a, b, vault


def test_a_disk_that_fills_up_during_a_download_leaves_cache_and_catalog_consistent(
        small_disk: Path | None, misbehaving: Callable[..., MisbehavingServer],
        nodes: Callable[..., CloudManager], tmp_path: Path) -> None:
    """The cache is on a 1 MiB filesystem and a download does not fit what is left of it.
    Where the machine cannot mount one, a host that sends more bytes than the recorded
    size stands in for the full disk (the flood test, on the regular disk)."""
    if small_disk is None:
        _flood_then_healthy(misbehaving, nodes, tmp_path, None)
        return
    cm, a, b, vault = _bigger_than_the_free_space(small_disk, nodes, tmp_path)
    assert cm.warm_up(a) is False  # it cannot fit (the disk, not the capacity)
    assert not cm.on_cache(a) and cm.on_cache(b)
    _assert_consistent(cm, {b: 600 * 1024}, vault)
    # Room made, it comes back.
    assert cm.evict([b]) == [b]
    path = cm.warm_up(a)
    assert path and hashlib.sha256(Path(path).read_bytes()).hexdigest() == a
    _assert_consistent(cm, {a: 600 * 1024}, vault)


def test_a_full_disk_is_not_blamed_on_the_hosts(small_disk: Path | None,
                                               misbehaving: Callable[..., MisbehavingServer],
                                               nodes: Callable[..., CloudManager], tmp_path: Path) -> None:
    """A download that fails because the local disk is full is not the host's failure
    (HashingWriter keeps the disk's error apart for this).  Without a small disk, a healthy
    host beside a flood one must stay healthy."""
    if small_disk is None:
        _flood_then_healthy(misbehaving, nodes, tmp_path, None)
        return
    cm, a, _, _ = _bigger_than_the_free_space(small_disk, nodes, tmp_path)
    before = cm.catalog.host_health(["good", "good2"])
    assert cm.warm_up(a) is False
    after = cm.catalog.host_health(["good", "good2"])
    assert {n: h.failures for n, h in after.items()} == {n: h.failures for n, h in before.items()}, (
        f"hosts blamed for the local disk: {after}")
    assert all(u.get("url") for u in _uploads(cm, a).values())  # their copies are not lost either


# -- SFTP: a server that accepts and never answers -----------------------------------------------


def test_an_ssh_server_that_never_answers(silent_server: SilentServer, nodes: Callable[..., CloudManager],
                                          tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    bad_url = (f"sftp://tester@127.0.0.1:{silent_server.port}/vault?name=bad&timeout={TIMEOUT:g}"
               f"&retries=0&known_hosts={quote(str(tmp_path / 'known_hosts'))}")
    cm = nodes([bad_url, _folder_url(vault)])
    source = tmp_path / "f.bin"
    source.write_bytes(DATA)

    accepted = silent_server.accepted
    digest, took = _timed(lambda: cm.upload(source))
    assert digest == DIGEST
    assert took < _bound(0), f"upload took {took:.1f} s"
    assert silent_server.accepted > accepted  # it did connect, and then heard nothing
    uploads = _uploads(cm, digest)
    assert "url" in uploads["good"] and uploads["bad"].get("error") is True
    bad = cm.catalog.host_health(["bad"])["bad"]
    assert bad.failures == 1 and bad.last_error
    assert re.search(r"no SSH greeting|did not complete the SSH handshake|no answer", bad.last_error), bad

    # Another node says the SSH host holds a copy: warm_up tries it, then the folder.
    dump = json.loads(cm.data_dump())
    for entry in dump[0]["uploads"]:
        if entry["host_name"] == "bad":
            entry.pop("error")
            entry["url"] = (f"sftp://tester@127.0.0.1:{silent_server.port}/vault/"
                            f"{digest[:2]}/{digest[2:4]}/{digest}")
    assert cm.data_load(json.dumps(dump)) == 1
    assert "url" in _uploads(cm, digest)["bad"]
    assert cm.evict() == [digest]
    _prefer_the_bad_host(cm, "bad", "good")
    accepted = silent_server.accepted
    path, took = _timed(lambda: cm.warm_up(digest))
    assert path and Path(path).read_bytes() == DATA
    assert took < _bound(0), f"warm_up took {took:.1f} s"
    assert silent_server.accepted > accepted, "the SSH host was not tried first"
    health = cm.catalog.host_health(["bad", "good"])
    assert health["bad"].failures == 2 and health["good"].failures == 0
    _assert_consistent(cm, {digest: len(DATA)}, vault)
