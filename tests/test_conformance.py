"""Every kind of host passes the same conformance suite, against a real server."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudmanager.hosts import FolderHost, Host, MemoryHost, PlowshareHost
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
