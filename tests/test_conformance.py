"""Every kind of host passes the same conformance suite, against a real server."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudmanager.crypto import Key
from cloudmanager.hosts import FolderHost, Host, MemoryHost, PlowshareHost
from cloudmanager.hosts.encrypted import encrypting
from cloudmanager.testing import HostConformance, sha256_hex


class TestFolder(HostConformance):
    @pytest.fixture
    def host(self, tmp_path: Path) -> Host:
        return FolderHost(tmp_path / "vault")

    @pytest.fixture
    def broken_hosts(self, tmp_path: Path) -> list[Host]:
        blocked = tmp_path / "blocked"
        blocked.write_text("a file where the folder should be")
        return [FolderHost(blocked / "vault")]


class TestMemory(HostConformance):
    in_memory = True

    @pytest.fixture
    def host(self) -> Host:
        return MemoryHost("conformance")

    @pytest.fixture
    def broken_hosts(self) -> list[Host]:
        return []


class TestPlowshare(HostConformance):
    locators_tell = False  # a file locker's URLs are opaque
    @pytest.fixture
    def host(self, plowshare: Path) -> Host:
        return PlowshareHost("rghost")

    @pytest.fixture
    def broken_hosts(self, plowshare: Path, monkeypatch: pytest.MonkeyPatch) -> list[Host]:
        monkeypatch.setenv("PLOW_FAIL", "deadlocker")
        return [PlowshareHost("deadlocker")]


class TestEncryptedFolder(HostConformance):
    """A folder host behind client-side encryption behaves as any host."""

    locators_tell = False  # another keyed name may be a copy sealed before keyed names

    @pytest.fixture
    def host(self, tmp_path: Path) -> Host:
        return encrypting(FolderHost(tmp_path / "vault"), Key.generate())

    @pytest.fixture
    def broken_hosts(self, tmp_path: Path) -> list[Host]:
        blocked = tmp_path / "blocked"
        blocked.write_text("a file where the folder should be")
        return [encrypting(FolderHost(blocked / "vault"), Key.generate()),
                encrypting(FolderHost(tmp_path / "keyless"), None)]


def test_a_sealed_copy_is_located_by_its_keyed_name(tmp_path: Path) -> None:
    """An encrypting host stores a sealed copy under the file's keyed name, so a node with
    the key tells its own file's sealed copy from another's; without the key it cannot."""
    key = Key.generate()
    inner = FolderHost(tmp_path / "vault")
    host = encrypting(inner, key)
    (tmp_path / "mine").write_bytes(b"mine")
    (tmp_path / "other").write_bytes(b"other")
    mine, other = sha256_hex(b"mine"), sha256_hex(b"other")
    locator = host.upload(tmp_path / "mine", "mine", mine)
    elsewhere = host.upload(tmp_path / "other", "other", other)
    assert key.object_name(mine) in locator and mine not in locator  # the host learns no hash
    assert host.locates(locator, mine) is True
    assert host.locates(elsewhere, mine) is None  # another keyed name (or an older sealing's hash)
    assert host.locates(inner.upload(tmp_path / "other", "other", other), other) is None  # plain bytes
    assert host.locates("file:///etc/passwd", mine) is False
    assert encrypting(inner, None).locates(locator, mine) is None  # no key: cannot be told
    assert encrypting(inner, Key.generate()).locates(locator, mine) is None
