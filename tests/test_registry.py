"""The host registry: URL schemes, names, options, plugins found by entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cloudmanager.hosts import FolderHost, MemoryHost, make_host, schemes
from cloudmanager.hosts.registry import ENTRY_POINT_GROUP


def test_built_in_kinds_and_names() -> None:
    assert {"file", "memory", "plowshare", "sftp", "webdav", "webdavs", "s3", "rclone"} <= set(schemes())
    folder = make_host("file:///srv/vault?name=nas")
    assert isinstance(folder, FolderHost) and folder.name == "nas" and folder.url() == "file:///srv/vault"
    assert make_host("file:///srv/vault").name == "vault"
    memory = make_host("memory://scratch", name="given")
    assert isinstance(memory, MemoryHost) and memory.name == "given"


def test_a_third_party_kind_is_found_through_its_entry_point(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed distribution (a real .dist-info on sys.path) names its host kind."""
    package = tmp_path / "cmplugin_demo"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from cloudmanager.hosts import MemoryHost\n"
        "def from_spec(spec):\n"
        "    return MemoryHost('demo-' + spec.netloc)\n")
    info = tmp_path / "cmplugin_demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cmplugin-demo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ndemo = cmplugin_demo:from_spec\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "demo" in schemes()
    host = make_host("demo://box")
    assert host.name == "demo-box"
    monkeypatch.delitem(sys.modules, "cmplugin_demo", raising=False)


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if boto3 were not installed
    monkeypatch.delitem(sys.modules, "cloudmanager.hosts.s3", raising=False)
    with pytest.raises(ValueError, match=r"pip install 'cloudmanager\[s3\]'"):
        make_host("s3://bucket/prefix")


def test_unknown_kinds_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown host kind 'gopher': known kinds are .*file"):
        make_host("gopher://example/x")
