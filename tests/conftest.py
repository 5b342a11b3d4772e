"""Shared fixtures: a fresh node (catalog + cache + hosts) per test, plowshare stand-ins."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cloudmanager import CloudManager
from cloudmanager.cli import main
from cloudmanager.hosts import MemoryHost

TESTS = Path(__file__).parent
Factory = Callable[..., CloudManager]
Run = Callable[..., Result]


def run_cm(*args: str, code: int | None = 0, **kwargs: Any) -> Result:
    """Run ``cm ARGS`` in-process (stdout and stderr apart); with ``code``, check the
    exit status.  ``kwargs`` go to click's runner (``input=``...)."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False, **kwargs)
    if code is not None:
        assert result.exit_code == code, (result.output, result.stderr)
    return result

#: Each module of tests/servers/ starts one kind of real server from a fixture.
pytest_plugins = sorted(
    f"tests.servers.{p.stem}" for p in (TESTS / "servers").glob("*.py") if p.stem != "__init__"
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test writes to the real HOME, and in-memory hosts start empty."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        monkeypatch.delenv(var, raising=False)
    MemoryHost.reset()
    yield
    MemoryHost.reset()


@pytest.fixture
def plowshare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the plowup/plowdown stand-ins on PATH; returns their store folder."""
    store = tmp_path / "plowstore"
    store.mkdir()
    monkeypatch.setenv("PATH", f"{TESTS / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PLOW_STORE", str(store))
    monkeypatch.delenv("PLOW_FAIL", raising=False)
    monkeypatch.delenv("PLOW_CORRUPT", raising=False)
    return store


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Factory]:
    """Make nodes: ``node(capacity, hosts, name="a")``; all are closed after the test."""
    made: list[CloudManager] = []

    def make(capacity: int = 1 << 20, hosts: list[str] | None = None, name: str = "a") -> CloudManager:
        folder = tmp_path / f"node-{name}"
        folder.mkdir(exist_ok=True)
        cm = CloudManager(folder / "catalog.sqlite3", folder / "cache", capacity,
                          hosts=["memory://m"] if hosts is None else hosts)
        made.append(cm)
        return cm

    yield make
    for cm in made:
        cm.close()


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write a file: ``write("name", b"bytes")`` -> its path (in a per-test folder)."""
    folder = tmp_path / "files"
    folder.mkdir()

    def make(name: str, data: bytes) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    return make


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """An empty per-test folder for local files to upload."""
    folder = tmp_path / "local"
    folder.mkdir()
    return folder
