"""Records that break every node (issue 12, section 5): a date no display can show, a peer
whose catalog cursor never advances or does not fit the catalog, and numbers written with
digits that are not ASCII.  Each is refused where it comes in, and what an older version
may have stored is shown, never a crash."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from click.testing import CliRunner, Result

from cloudmanager import CloudManager, InvalidDump, links, payload
from cloudmanager.cli import main
from cloudmanager.nodeclient import NodeClient
from cloudmanager.numbers import when
from cloudmanager.peersync import PeerError, pull, push
from tests.conftest import Factory
from tests.servers.node import NodeServer
from tests.servers.peer import LyingPeer

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
def catalog_config(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
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
    return conf, database


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


# -- catalog cursors -----------------------------------------------------------------------


def page(records: list[dict[str, Any]], cursor: object, more: bool) -> dict[str, Any]:
    """A catalog page as ``GET /catalog`` answers it."""
    return {"version": "0.2", "records": records, "cursor": cursor, "more": more}


#: Pages no pull may merge (``since`` in, the page out): a cursor that stays where it was
#: while more is said to come, and cursors no catalog integer holds.
BAD_PAGES: dict[str, Callable[[int], dict[str, Any]]] = {
    "stuck": lambda since: page([record()], since, True),
    "stuck-and-empty": lambda since: page([], since, True),
    "beyond-64-bits": lambda since: page([record()], 10**30, False),
    "one-past-the-largest": lambda since: page([record()], 2**63, False),
}


@pytest.fixture
def puller(catalog_config: tuple[Path, str], tmp_path: Path) -> Iterator[CloudManager]:
    """A node on each kind of catalog, to pull into."""
    with CloudManager(catalog_config[1], tmp_path / "puller-cache", 1 << 20, hosts=[]) as manager:
        yield manager


@pytest.mark.parametrize("bad", BAD_PAGES)
def test_a_pull_stops_at_a_cursor_that_does_not_advance_or_fit(puller: CloudManager, lying_peer: LyingPeer,
                                                                bad: str) -> None:
    first = record("b" * 64, name="first.txt")
    lying_peer.answer = lambda since, limit: page([first], 5, True) if since == 0 else BAD_PAGES[bad](since)
    with NodeClient(lying_peer.url, "t") as client, pytest.raises(PeerError, match="cursor"):
        pull(puller, client, "liar")
    assert lying_peer.asked == [0, 5]  # one bad page, and the pull stopped there
    assert {r.hash for r in puller.catalog.records()} == {"b" * 64}  # nothing of the bad page
    assert puller.catalog.peer_cursors("liar")[0] == 5  # where the last good page ended


@pytest.mark.parametrize("cursor", [True, "7", 7.0, None, -1])
def test_a_cursor_that_is_not_a_catalog_number_is_refused(node: Factory, cursor: object) -> None:
    class Liar:
        def catalog_page(self, since: int, limit: int) -> tuple[payload.Parsed, object, bool]:
            return payload.validate([record()]), cursor, False

        def push_catalog(self, dump: bytes) -> dict[str, Any]:
            raise AssertionError("a pull pushes nothing")

    cm = node()
    with pytest.raises(PeerError, match="cursor"):
        pull(cm, Liar(), "liar")  # type: ignore[arg-type]
    assert cm.catalog.count() == 0 and cm.catalog.peer_cursors("liar") == (0, 0)


def test_the_largest_cursor_is_accepted_and_an_empty_last_page_may_keep_it(puller: CloudManager,
                                                                           lying_peer: LyingPeer) -> None:
    largest = 2**63 - 1
    lying_peer.answer = lambda since, limit: page([record()], largest, False)
    with NodeClient(lying_peer.url, "t") as client:
        assert pull(puller, client, "peer").added == 1
        lying_peer.answer = lambda since, limit: page([], since, False)
        assert pull(puller, client, "peer").records == 0
    assert puller.catalog.peer_cursors("peer")[0] == largest


@pytest.mark.parametrize("bad", ["stuck", "beyond-64-bits"])
def test_cm_sync_from_a_lying_peer_is_one_line_and_exit_1(cli: Callable[..., Result],
                                                          catalog_config: tuple[Path, str],
                                                          lying_peer: LyingPeer, bad: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CM_PEER_TOKEN", "t")
    lying_peer.answer = lambda since, limit: BAD_PAGES[bad](since)
    conf, _ = catalog_config
    result = cli("--config", str(conf), "sync", "--from", lying_peer.url, code=1)
    one_line_error(result, "cursor")
    assert len(lying_peer.asked) == 1
    assert json.loads(cli("--config", str(conf), "ls", "--json").stdout) == []


# -- numbers in requests -------------------------------------------------------------------

#: Numbers that str.isdigit() or int() take and only ASCII digits are not.
#: Superscript two, twelve in Arabic-Indic and in fullwidth digits, then what int() forgives.
NOT_ASCII_NUMBERS = ["\u00b2", "\u0661\u0662", "\uff11\uff12", "1_0", "+1", " 1"]


@pytest.mark.parametrize("key", ["since", "limit"])
@pytest.mark.parametrize("number", NOT_ASCII_NUMBERS)
def test_catalog_paging_takes_ascii_digits_only(node_server: NodeServer, key: str, number: str) -> None:
    with node_server.http(node_server.token) as http:
        answer = http.get("/catalog", params={key: number})
    assert answer.status_code == 400, answer.text
    said = answer.json()["error"]
    assert f"{key} must be a whole number" in said and "ASCII digits" in said


def test_catalog_paging_still_takes_its_numbers(node_server: NodeServer) -> None:
    with node_server.http(node_server.token) as http:
        last = http.get("/catalog", params={"since": str(2**63 - 1), "limit": "10000"})
        assert last.status_code == 200 and last.json()["records"] == []
        assert http.get("/catalog", params={"since": str(2**63)}).status_code == 400


@pytest.fixture(scope="module")
def served_file(node_server: NodeServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    """A file of 1000 bytes kept by the session's node: its hash and bytes."""
    data = bytes(range(250)) * 4
    path = tmp_path_factory.mktemp("served") / "ranged.bin"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    with node_server.client() as client:
        client.put(digest, path.name, path)
    return digest, data


@pytest.mark.parametrize("spec", ["bytes=1_0-", "bytes=+10-20", "bytes=0-1_0", "bytes=0-1, 5-+6",
                                  b"bytes=\xb2-"], ids=repr)
def test_a_range_takes_ascii_digits_only(node_server: NodeServer, served_file: tuple[str, bytes],
                                         spec: str | bytes) -> None:
    digest, _ = served_file
    with node_server.http(node_server.token) as http:
        answer = http.get(f"/objects/{digest}", headers={"Range": spec})
    assert answer.status_code == 400, answer.text
    assert "Range" in answer.json()["error"] and "ASCII digits" in answer.json()["error"]


def test_ranges_in_ascii_digits_still_work(node_server: NodeServer, served_file: tuple[str, bytes]) -> None:
    digest, data = served_file
    with node_server.http(node_server.token) as http:
        assert http.get(f"/objects/{digest}", headers={"Range": "bytes=10-19"}).content == data[10:20]
        assert http.get(f"/objects/{digest}", headers={"Range": "bytes = 990 -"}).content == data[990:]
        assert http.get(f"/objects/{digest}", headers={"Range": "bytes=-5"}).content == data[-5:]
        both = http.get(f"/objects/{digest}", headers={"Range": "bytes=0-1, 5-6"})
        assert both.status_code == 206 and data[5:7] in both.content


def test_a_share_link_s_expiry_is_ascii_digits_only(node_server: NodeServer,
                                                    served_file: tuple[str, bytes]) -> None:
    digest, data = served_file
    expires = int(time.time()) + 3600
    url = links.make_link(node_server.base_url, node_server.secret, digest, expires)
    assert httpx.get(url).content == data
    arabic = "".join(chr(0x660 + int(d)) for d in str(expires))  # the same number in Arabic-Indic digits
    assert httpx.get(url.replace(f"e={expires}", f"e={quote(arabic)}")).status_code == 403


@pytest.mark.parametrize("text", ["\u0667d", "\uff17d", "\u00b2h"])
def test_a_link_s_lifetime_is_ascii_digits_only(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        links.parse_duration(text)


@pytest.mark.parametrize("key", ["added", "first_seq", "last_seq"])
def test_a_push_answer_with_a_number_beyond_64_bits_is_refused(node: Factory, write: Callable[..., Path],
                                                               key: str) -> None:
    cm = node()
    assert cm.upload(write("pushed.txt", b"pushed"))

    class Liar:
        def push_catalog(self, dump: bytes) -> dict[str, Any]:
            return {"added": 1, "changed": 0, "rejected": 0, "first_seq": 0, "last_seq": 1, key: 10**30}

    with pytest.raises(PeerError, match=f"bad {key!r}"):
        push(cm, Liar(), "liar")  # type: ignore[arg-type]
    assert cm.catalog.peer_cursors("liar") == (0, 0)  # nothing counted as pushed
