"""The cm_setup_db command: creates a catalog, harmless twice, one clear line on failure."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cloudmanager.catalog import SCHEMA_VERSION, schema_text

ROOT = Path(__file__).parent.parent
COMMAND = [sys.executable, str(ROOT / "bin" / "cm_setup_db")]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=60)


def test_creates_a_catalog_and_is_harmless_twice(tmp_path: Path) -> None:
    path = tmp_path / "db" / "production.sqlite3"
    path.parent.mkdir()
    for _ in range(2):
        done = run(str(path))
        assert done.returncode == 0, done.stderr
        assert "catalog ready" in done.stdout
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"files", "uploads", "hosts", "state", "transfers"} <= tables


@pytest.mark.parametrize("where", ["missing-dir/db.sqlite3", "notsqlite/db.sqlite3", "notsqlite",
                                   "/proc/self/db.sqlite3"])  # unwritable even for root
def test_an_unusable_path_is_one_line_and_a_non_zero_exit(tmp_path: Path, where: str) -> None:
    (tmp_path / "notsqlite").write_text("hello " * 1000)
    done = run(str(tmp_path / where))
    assert done.returncode != 0
    assert done.stderr.startswith("cm_setup_db: ") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_the_top_level_schema_is_the_package_schema() -> None:
    assert (ROOT / "schema.sql").read_text() == schema_text()


def test_usage_without_arguments() -> None:
    done = run()
    assert done.returncode == 2 and "usage: cm_setup_db" in done.stdout
