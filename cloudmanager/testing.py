"""The host conformance suite: the same tests for every kind of host.

Subclass :class:`HostConformance` in a pytest module and provide the fixtures:

* ``host``: a working host of your kind, against a real server;
* ``broken_hosts``: a list of hosts that must fail cleanly (a stopped server,
  a wrong password...), each within its timeout; ``[]`` if none apply.

Every test here is what a user of any host relies on (Devilry's
DeliveryStoreTestMixin is the model).  Run it against your own kind::

    from cloudmanager.testing import HostConformance

    class TestMyHost(HostConformance):
        @pytest.fixture
        def host(self, my_server): return MyHost(my_server.url)
        @pytest.fixture
        def broken_hosts(self): return [MyHost("myscheme://127.0.0.1:1/")]
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .errors import HostError, ObjectMissing
from .hosts.base import Adopter, Checker, Deleter, Host
from .streams import HashingWriter

#: Size of the file that must go through without being held in memory.
LARGE_FILE = 64 * 1024 * 1024
#: How much more Python memory a 64 MiB round trip may take (buffers only).
MEMORY_BOUND = 16 * 1024 * 1024
#: How long a broken host may take to fail, at most.
FAIL_WITHIN_S = 60.0


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data``, as hosts are given it."""
    return hashlib.sha256(data).hexdigest()


def put_bytes(host: Host, folder: Path, data: bytes, name: str = "f.bin") -> tuple[str, str]:
    """Write ``data`` to ``folder/name`` and upload it: (its SHA-256, the locator)."""
    path = folder / name
    path.write_bytes(data)
    digest = sha256_hex(data)
    return digest, host.upload(path, name, digest)


def get_bytes(host: Host, locator: str) -> bytes:
    """Download ``locator`` into memory (for small test objects)."""
    out = io.BytesIO()
    host.download(locator, out)
    return out.getvalue()


def host_error(action: Callable[[], object]) -> HostError:
    """Run ``action``, which must raise HostError; return that error."""
    with pytest.raises(HostError) as caught:
        action()
    return caught.value


def assert_refuses_locators(host: Host, locators: list[str]) -> None:
    """Each locator (not one this host made) is refused, with ObjectMissing, by
    download and, where the host has them, check and delete: nothing is touched."""
    for bad in locators:
        with pytest.raises(ObjectMissing, match="not a locator"):
            get_bytes(host, bad)
        if isinstance(host, Checker):
            with pytest.raises(ObjectMissing, match="not a locator"):
                host.check(bad)
        if isinstance(host, Deleter):
            with pytest.raises(ObjectMissing, match="not a locator"):
                host.delete(bad)


class HostConformance:
    """The conformance tests; a subclass provides ``host`` and ``broken_hosts``."""

    #: True only for a kind that keeps files in memory by design (memory://):
    #: its large-file test checks the bytes, not the memory bound.
    in_memory = False
    #: False for a kind whose locators do not always say which file they hold (a
    #: file locker's opaque URLs, sealed copies): its ``locates`` may then answer
    #: None ("cannot tell") where a content-addressed kind answers True or False.
    locators_tell = True

    def test_round_trip_returns_the_exact_bytes(self, host: Host, tmp_path: Path) -> None:
        data = os.urandom(100_000) + b"\x00\r\n" * 10
        _, locator = put_bytes(host, tmp_path, data, "data.bin")
        assert isinstance(locator, str) and locator
        assert get_bytes(host, locator) == data

    def test_empty_file(self, host: Host, tmp_path: Path) -> None:
        _, locator = put_bytes(host, tmp_path, b"", "empty")
        assert get_bytes(host, locator) == b""

    @pytest.mark.parametrize("name", ["with space.txt", "ünïcödé €.txt", "日本語.txt", "a'b\"c;d.txt"])
    def test_names_with_spaces_and_non_ascii(self, host: Host, tmp_path: Path, name: str) -> None:
        data = f"content of {name}".encode()
        _, locator = put_bytes(host, tmp_path, data, name)
        assert get_bytes(host, locator) == data

    def test_same_content_twice(self, host: Host, tmp_path: Path) -> None:
        data = b"twice" * 1000
        _, first = put_bytes(host, tmp_path, data, "one")
        _, second = put_bytes(host, tmp_path, data, "two")
        assert get_bytes(host, first) == data and get_bytes(host, second) == data

    def test_a_large_file_is_streamed_not_held_in_memory(self, host: Host, tmp_path: Path) -> None:
        path = tmp_path / "large.bin"
        block = os.urandom(1024 * 1024)
        with open(path, "wb") as handle:
            for i in range(LARGE_FILE // len(block)):
                handle.write(block[i:] + block[:i])
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        tracemalloc.start()
        try:
            locator = host.upload(path, "large.bin", digest)
            _, upload_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            with open(tmp_path / "back.bin", "wb") as out:
                writer = HashingWriter(out)
                host.download(locator, writer)
            _, download_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert writer.size == LARGE_FILE and writer.hexdigest() == digest
        if not self.in_memory:
            assert upload_peak < MEMORY_BOUND, f"upload held {upload_peak / 2**20:.1f} MiB"
            assert download_peak < MEMORY_BOUND, f"download held {download_peak / 2**20:.1f} MiB"

    def test_concurrent_uploads_to_one_host(self, host: Host, tmp_path: Path) -> None:
        payloads = [f"file {i} ".encode() * (1000 + i) for i in range(12)]
        with ThreadPoolExecutor(max_workers=6) as pool:
            locators = list(pool.map(lambda p: put_bytes(host, tmp_path, p, f"c{payloads.index(p)}")[1],
                                     payloads))
        assert len(set(locators)) == len(payloads)
        for data, locator in zip(payloads, locators, strict=True):
            assert get_bytes(host, locator) == data

    def test_a_locator_of_another_hash_does_not_belong(self, host: Host, tmp_path: Path) -> None:
        """A record from another node may pair a file's hash with another file's locator:
        the host must never say that such a locator is the file's (deleting the file
        through it would delete the other one)."""
        mine, locator = put_bytes(host, tmp_path, b"this file's bytes", "mine")
        other, elsewhere = put_bytes(host, tmp_path, b"another file's bytes", "other")
        assert host.locates(locator, mine) is not False
        assert host.locates(locator, other) is not True and host.locates(elsewhere, mine) is not True
        for bad in ("", "not a locator", "file:///etc/passwd", f"memory://x/{mine}", "http://127.0.0.1:1/x",
                    f"cm://127.0.0.1:1/objects/{mine}", "sftp://[::1"):
            assert host.locates(bad, mine) is not True, bad
        if self.locators_tell:
            assert host.locates(locator, mine) is True
            assert host.locates(locator, other) is False and host.locates(elsewhere, mine) is False
        assert get_bytes(host, locator) == b"this file's bytes"  # asking changed nothing

    def test_delete_where_supported(self, host: Host, tmp_path: Path) -> None:
        if not isinstance(host, Deleter):
            return  # not an ability of this kind: nothing to check
        _, locator = put_bytes(host, tmp_path, b"delete me", "doomed")
        host.delete(locator)
        with pytest.raises(ObjectMissing):
            get_bytes(host, locator)
        host.delete(locator)  # deleting what is gone is not an error

    def test_adopt_where_supported(self, host: Host, tmp_path: Path) -> None:
        if not isinstance(host, Adopter):
            return
        data = os.urandom(50_000)
        given = tmp_path / "given away.bin"
        given.write_bytes(data)
        locator = host.adopt(given, given.name, sha256_hex(data))
        assert get_bytes(host, locator) == data

    def test_check_where_supported(self, host: Host, tmp_path: Path) -> None:
        if not isinstance(host, Checker):
            return
        _, locator = put_bytes(host, tmp_path, b"12345", "sized")
        assert host.check(locator) in (5, None)

    def test_a_missing_object_is_a_clear_host_error(self, host: Host, tmp_path: Path) -> None:
        _, locator = put_bytes(host, tmp_path, b"here", "present")
        if isinstance(host, Deleter):
            host.delete(locator)
            with pytest.raises(ObjectMissing) as caught:
                get_bytes(host, locator)
            assert caught.value.host == host.name

    def test_broken_hosts_fail_with_a_host_error_in_time(self, broken_hosts: list[Host],
                                                         tmp_path: Path) -> None:
        path = tmp_path / "f"
        path.write_bytes(b"nowhere to go")
        def attempt(target: Host, outcome: list[BaseException | str]) -> None:
            try:
                outcome.append(target.upload(path, "f", sha256_hex(b"nowhere to go")))
            except BaseException as exc:  # checked by the caller
                outcome.append(exc)

        for broken in broken_hosts:
            outcome: list[BaseException | str] = []
            started = time.monotonic()
            worker = threading.Thread(target=attempt, args=(broken, outcome), daemon=True)
            worker.start()
            worker.join(FAIL_WITHIN_S)
            assert not worker.is_alive(), f"{broken!r} hung for {FAIL_WITHIN_S} s"
            assert isinstance(outcome[0], HostError), f"{broken!r} gave {outcome[0]!r}"
            assert outcome[0].host == broken.name
            assert time.monotonic() - started < FAIL_WITHIN_S
