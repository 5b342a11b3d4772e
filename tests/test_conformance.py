"""Every kind of host passes the same conformance suite, against a real server."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudmanager.crypto import Key
from cloudmanager.hosts import FolderHost, Host, MemoryHost, PlowshareHost
from cloudmanager.hosts.encrypted import encrypting
from cloudmanager.testing import HostConformance


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
    @pytest.fixture
    def host(self, plowshare: Path) -> Host:
        return PlowshareHost("rghost")

    @pytest.fixture
    def broken_hosts(self, plowshare: Path, monkeypatch: pytest.MonkeyPatch) -> list[Host]:
        monkeypatch.setenv("PLOW_FAIL", "deadlocker")
        return [PlowshareHost("deadlocker")]


class TestEncryptedFolder(HostConformance):
    """A folder host behind client-side encryption behaves as any host."""

    @pytest.fixture
    def host(self, tmp_path: Path) -> Host:
        return encrypting(FolderHost(tmp_path / "vault"), Key.generate())

    @pytest.fixture
    def broken_hosts(self, tmp_path: Path) -> list[Host]:
        blocked = tmp_path / "blocked"
        blocked.write_text("a file where the folder should be")
        return [encrypting(FolderHost(blocked / "vault"), Key.generate()),
                encrypting(FolderHost(tmp_path / "keyless"), None)]
