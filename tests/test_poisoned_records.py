"""Records that break every node (issue 12, section 5): a date no display can show, a peer
whose catalog cursor never advances or does not fit the catalog, and numbers written with
digits that are not ASCII.  Each is refused where it comes in, and what an older version
may have stored is shown, never a crash."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from cloudmanager import InvalidDump
from cloudmanager.cli import main
from cloudmanager.numbers import when
from tests.conftest import Factory
from tests.servers.node import NodeServer

H = "a" * 64
#: The last second of 9999-12-31 (UTC), the latest date a record may carry.
LAST_DATE = 253_402_300_799
#: Valid-looking dates no calendar shows: the largest 64-bit integer (as text and as a number),
#: the second after 9999-12-31, a number beyond 64 bits, and before 1970.
BAD_DATES: list[object] = ["9223372036854775807", 9223372036854775807, str(LAST_DATE + 1), LAST_DATE + 1,
                           10**30, -1, "-1"]
BACKENDS = ["sqlite", "postgres"]


def record(digest: str = H, date: object = "1391212800", name: str = "f.txt") -> dict[str, Any]:
    return {"version": "0.2", "datetime": date, "filename": name, "filesize": "4", "filehash": digest,
            "uploads": []}


def one_line_error(result: Result, *fragments: str) -> None:
    assert result.stderr.startswith("cm: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# -- dates ---------------------------------------------------------------------------------


@pytest.mark.parametrize("date", BAD_DATES, ids=repr)
def test_data_load_refuses_a_date_outside_1970_to_9999(node: Factory, date: object) -> None:
    cm = node()
    with pytest.raises(InvalidDump, match="1970-01-01 to 9999-12-31") as refused:
        cm.data_load(json.dumps([record("b" * 64), record(H, date)]))
    assert (refused.value.record, refused.value.field) == (1, "datetime")
    assert cm.catalog.count() == 0  # nothing imported, not even the good record


def test_the_first_and_the_last_date_are_accepted(node: Factory) -> None:
    cm = node()
    assert cm.data_load(json.dumps([record("b" * 64, "0"), record(H, LAST_DATE)])) == 2
    assert cm.info(H)["datetime"] == str(LAST_DATE)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """``cli(*args, code=0)``: `cm` in process, in a working folder, on the embedded defaults."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("CM_CONFIG", raising=False)

    def run(*args: str, code: int | None = 0) -> Result:
        result = CliRunner().invoke(main, list(args))
        if code is not None:
            assert result.exit_code == code, (result.output, result.exception)
        return result

    return run


def test_cm_load_rejects_a_record_with_a_bad_date_and_loads_the_others(cli: Callable[..., Result]) -> None:
    Path("in.json").write_text(json.dumps([record("b" * 64), record(H, "9223372036854775807")]))
    result = cli("load", "in.json", code=1)
    assert "added 1, changed 0, rejected 1" in result.stdout
    (rejected,) = json.loads(Path("in.rejected.json").read_text())
    assert rejected["index"] == 1 and rejected["field"] == "datetime"
    assert "1970-01-01 to 9999-12-31" in rejected["reason"]
    assert json.loads(cli("info", "b" * 64).stdout)["filename"] == "f.txt"
    cli("exists", H, code=1)


@pytest.mark.parametrize("stored, shown", [
    (None, "-"), (0, "-"), (1391212800, "2014-02-01 00:00"), (LAST_DATE, "9999-12-31 23:59"),
    (LAST_DATE + 1, "invalid date"), (2**63 - 1, "invalid date"), (-1, "invalid date"),
    (-(2**63), "invalid date"),
])
def test_any_stored_date_is_shown(stored: int | None, shown: str) -> None:
    assert when(stored) == shown


@pytest.fixture(params=BACKENDS)
def catalog_config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A configuration (and its catalog's address) on each kind of catalog: SQLite and PostgreSQL."""
    if request.param == "sqlite":
        database = str(tmp_path / "catalog.sqlite3")
        table = f'[catalog]\npath = "{database}"\n'
    else:
        database = request.getfixturevalue("postgres_url")
        table = f'[catalog]\nurl = "{database}"\n'
    conf = tmp_path / "node.toml"
    conf.write_text(f'{table}[cache]\npath = "{tmp_path / "cache"}"\n'
                    f'[[hosts]]\nurl = "{(tmp_path / "vault").as_uri()}"\n')
    yield conf, database


def store_date(database: str, date: int) -> None:
    """Write ``date`` into every file's row behind the catalog's back (as an older version,
    which did not check dates, may have stored it)."""
    if database.startswith("postgresql://"):
        with psycopg.connect(database, autocommit=True) as db:
            db.execute("UPDATE files SET datetime = %s", (date,))
    else:
        with sqlite3.connect(database) as db:
            db.execute("UPDATE files SET datetime = ?", (date,))
        db.close()


@pytest.mark.parametrize("date", [2**63 - 1, -(2**63), LAST_DATE + 1])
def test_cm_ls_shows_a_stored_date_out_of_range(cli: Callable[..., Result], catalog_config: tuple[Path, str],
                                                date: int) -> None:
    conf, database = catalog_config
    Path("a.txt").write_bytes(b"alpha")
    cli("--config", str(conf), "upload", "a.txt")
    store_date(database, date)
    listing = cli("--config", str(conf), "ls").stdout
    assert "a.txt" in listing and "invalid date" in listing
    assert json.loads(cli("--config", str(conf), "ls", "--json").stdout)[0]["datetime"] == date


def test_the_page_shows_a_stored_date_out_of_range(node_servers: Callable[..., NodeServer],
                                                   files: Path) -> None:
    server = node_servers()
    path = files / "poisoned.txt"
    path.write_bytes(b"a file whose date an older version stored unchecked")
    with server.client() as client:
        client.put(hashlib.sha256(path.read_bytes()).hexdigest(), path.name, path)
    store_date(str(server.root / "catalog.sqlite3"), 2**63 - 1)
    with server.http() as browser:
        assert browser.post("/login", data={"token": server.token}).status_code in (200, 303)
        page = browser.get("/")
    assert page.status_code == 200, page.text[:500]
    assert "poisoned.txt" in page.text and "invalid date" in page.text
