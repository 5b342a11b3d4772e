"""plowshare:// hosts through the PyPI plowshare wrapper and stand-in plowup/plowdown."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from cloudmanager import HostError
from cloudmanager.hosts import PlowshareHost, make_host
from tests.conftest import Factory


def test_upload_and_fetch_through_plowshare(plowshare: Path, node: Factory,
                                            write: Callable[..., Path]) -> None:
    cm = node(hosts=["plowshare://rghost", "plowshare://mediafire"])
    digest = cm.upload(write("holiday photo.jpg", b"JFIF" * 100))
    assert digest
    uploads = {u["host_name"]: u["url"] for u in cm.info(digest)["uploads"]}
    assert set(uploads) == {"rghost", "mediafire"}
    assert uploads["rghost"].startswith("https://rghost.invalid/")
    stored = list((plowshare / "rghost").rglob("*.jpg"))
    assert [p.name for p in stored] == ["holiday_photo.jpg"]  # its name, not its hash
    cm.evict()
    path = cm.warm_up(digest)
    assert path and Path(path).read_bytes() == b"JFIF" * 100


def test_a_failing_module_is_recorded_and_sync_retries_it(
        plowshare: Path, node: Factory, write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLOW_FAIL", "rghost")
    cm = node(hosts=["plowshare://rghost", "plowshare://mediafire"])
    digest = cm.upload(write("f.txt", b"retry me"))
    assert digest
    uploads = {u["host_name"]: u for u in cm.info(digest)["uploads"]}
    assert uploads["rghost"] == {"host_name": "rghost", "error": True}
    error = cm.catalog.host_health(["rghost"])["rghost"].last_error
    assert error is not None and "plowup failed" in error
    monkeypatch.delenv("PLOW_FAIL")
    assert cm.sync()[digest][0].ok


def test_wrong_bytes_from_a_locker_are_refused(
        plowshare: Path, node: Factory, write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    cm = node(hosts=["plowshare://rghost"])
    digest = cm.upload(write("f.txt", b"the real bytes"))
    assert digest
    cm.evict()
    monkeypatch.setenv("PLOW_CORRUPT", "rghost")
    assert cm.warm_up(digest) is False
    assert cm.info(digest)["uploads"] == [{"host_name": "rghost", "error": True}]


def test_without_plowshare_installed_the_host_fails_clearly(
        node: Factory, write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    cm = node(hosts=["plowshare://rghost", "memory://m"])
    digest = cm.upload(write("f.txt", b"still kept"))
    assert digest
    error = cm.catalog.host_health(["rghost"])["rghost"].last_error
    assert error == "the 'plowup' command is not installed (install plowshare, see INSTALL.md)"
    assert cm.evict() == [digest] and cm.warm_up(digest)


def test_locators_that_are_not_locker_urls_are_refused(plowshare: Path) -> None:
    host = make_host("plowshare://rghost")
    assert isinstance(host, PlowshareHost) and host.url() == "plowshare://rghost"
    for bad in ["file:///etc/passwd", "https://x.invalid/a b", "-o /tmp"]:
        with pytest.raises(HostError, match="not a file locker URL"):
            host.download(bad, io.BytesIO())
    with pytest.raises(HostError, match="not a file locker URL"):
        host.download("https://x.invalid/\nfile", io.BytesIO())
    with pytest.raises(ValueError, match="not a plowshare module"):
        make_host("plowshare://rg;rm")
