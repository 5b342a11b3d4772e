"""The catalog contract (catalog/base.py), one suite for both implementations: SQLite and
PostgreSQL (a real server, tests/servers/postgres.py).  Then what only a shared catalog
has: several nodes, each with its own cache state; and a node over PostgreSQL end to end."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from cloudmanager import CloudManager, config
from cloudmanager.catalog import (
    CatalogBase,
    CatalogError,
    node_id,
    open_catalog,
    redact,
)
from cloudmanager.catalog.postgres import SCHEMA_VERSION as PG_VERSION
from cloudmanager.catalog.sqlite import SCHEMA_VERSION as SQLITE_VERSION
from cloudmanager.records import FileRecord, Share, Upload
from cloudmanager.setup_db import main as setup_db
from tests.servers.postgres import PostgresServer

BACKENDS = ["sqlite", "postgres"]


def h(n: int) -> str:
    """A made-up SHA-256: ``n`` in 64 hex digits."""
    return f"{n:064x}"


def rec(n: int, size: int = 10, *uploads: Upload, name: str | None = None) -> FileRecord:
    return FileRecord(h(n), name or f"file-{n}", size, 1_700_000_000 + n, tuple(uploads))


HELD = Upload("vault", url="vault://x")


@dataclass
class Backend:
    """One catalog database and the catalogs opened on it (closed after the test)."""

    kind: str
    database: str
    opened: list[CatalogBase] = field(default_factory=list)

    def open(self, node: str = "a") -> CatalogBase:
        catalog = open_catalog(self.database, node=node)
        self.opened.append(catalog)
        return catalog

    def set_version(self, version: int) -> None:
        """Write another schema version into the database, behind the catalog's back."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.database) as db:
                db.execute(f"PRAGMA user_version = {int(version)}")
        else:
            with psycopg.connect(self.database, autocommit=True) as db:
                db.execute("UPDATE schema_version SET version = %s", (version,))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """An empty catalog database of each kind."""
    if request.param == "sqlite":
        made = Backend("sqlite", str(tmp_path / "catalog.sqlite3"))
    else:
        made = Backend("postgres", request.getfixturevalue("postgres_url"))
    yield made
    for catalog in made.opened:
        catalog.close()


@pytest.fixture
def cat(backend: Backend) -> CatalogBase:
    return backend.open()


# -- files, uploads, shares -------------------------------------------------------------


def test_add_record_and_records(cat: CatalogBase) -> None:
    spread = FileRecord(h(3), "spread", 30, 3, (), (2, 3), (
        Share(0, "vault", url="v/0", digest="d0", size=15),
        Share(1, "other", error="down", digest="d1", size=15)))
    assert cat.add(rec(2, 20, HELD, Upload("other", error="refused")))
    assert cat.add(rec(1, 10))
    assert cat.add(spread)
    assert not cat.add(rec(1, 10, Upload("other", error="late")))  # known: its uploads still count
    assert cat.exists(h(1)) and not cat.exists(h(9)) and cat.count() == 3
    assert cat.record(h(2)) == rec(2, 20, Upload("other", error="refused"), HELD)  # hosts in order
    assert cat.record(h(1)) == rec(1, 10, Upload("other", error="late"))
    assert cat.record(h(3)) == spread
    assert cat.record(h(9)) is None
    assert [r.hash for r in cat.records()] == [h(1), h(2), h(3)]
    entry = cat.entry(h(2))
    assert entry is not None and entry.copies == 1 and not entry.cached and not entry.pinned
    assert cat.entry(h(9)) is None
    assert cat.add(rec(4, 5, Upload("vault", error="no")))
    cat.record_upload(h(4), HELD)
    cat.record_upload(h(4), Upload("vault", error="failed later"))  # an error never replaces a URL
    assert cat.record(h(4)) == rec(4, 5, HELD)
    assert cat.under_copies(1) == [h(1), h(3)]
    assert cat.held_per_host() == {"vault": 2}
    assert cat.incomplete_spreads() == [h(3)]


def test_records_stream_past_a_page(cat: CatalogBase) -> None:
    cat.merge([rec(n, n, Upload(f"host-{n % 3}", url=f"u{n}")) for n in range(1, 2502)])
    seen = [r.hash for r in cat.records()]
    assert seen == [h(n) for n in range(1, 2502)]
    assert sum(1 for _ in cat.listing(["host-0"])) == 2501


def test_record_uploads_only_while_the_file_is_known(cat: CatalogBase) -> None:
    cat.add(rec(1, 10, Upload("vault", error="first try")))
    assert cat.record_uploads(h(1), [HELD, Upload("other", error="refused")])
    assert cat.record(h(1)) == rec(1, 10, Upload("other", error="refused"), HELD)
    assert cat.record_uploads(h(1), [Upload("vault", error="later")])  # never replaces a URL
    assert cat.record(h(1)) == rec(1, 10, Upload("other", error="refused"), HELD)
    assert cat.forget(h(1))
    assert not cat.record_uploads(h(1), [HELD]) and not cat.exists(h(1))  # not brought back


def test_recent_files_newest_first(cat: CatalogBase) -> None:
    cat.merge([FileRecord(h(n), f"f{n}", 1, 1000 + n % 4) for n in range(1, 9)])
    assert cat.recent(3) == [h(7), h(3), h(6)]  # by time first known, then hash, newest first
    assert len(cat.recent(100)) == 8 and cat.recent(0) == []


def test_recent_files_with_their_records_and_cache_state(cat: CatalogBase) -> None:
    spread = FileRecord(h(3), "spread", 30, 1_700_000_003, (), (2, 3), (
        Share(0, "vault", url="v/0", digest="d0", size=15),
        Share(1, "other", error="down", digest="d1", size=15)))
    cat.merge([rec(1, 10, HELD), rec(2, 20, Upload("other", error="refused"), HELD), spread, rec(4, 5)])
    assert cat.admit(rec(2, 20), 100).admitted and cat.set_pinned(h(2), True)
    assert cat.admit(rec(4, 5), 100).admitted
    newest = cat.recent_files(3)
    assert [record.hash for record, _ in newest] == cat.recent(3) == [h(4), h(3), h(2)]
    assert newest == [(cat.record(d), cat.entry(d)) for d in cat.recent(3)]
    assert [(e.cached, e.pinned, e.copies) for _, e in newest] == [(True, False, 0), (False, False, 0),
                                                                    (True, True, 1)]
    assert len(cat.recent_files(100)) == 4 and cat.recent_files(0) == []


def test_forget_removes_the_file_and_its_cache_state(cat: CatalogBase) -> None:
    cat.add(rec(1, 10, HELD))
    assert cat.admit(rec(1, 10), 100).admitted and cat.usage() == (10, 1)
    assert cat.forget(h(1)) and not cat.forget(h(1))
    assert not cat.exists(h(1)) and cat.record(h(1)) is None and cat.usage() == (0, 0)
    assert not cat.recount()


# -- the cache state: admission, LRU, pins, totals ------------------------------------------


def test_admit_evicts_least_recently_used_files_some_host_holds(cat: CatalogBase) -> None:
    for n in (1, 2, 3):
        cat.add(rec(n, 30, HELD))
        assert cat.admit(rec(n, 30), 100).admitted
    cat.touch(h(1))  # now 2 is the least recently used
    first = cat.admit(rec(4, 30), 100)
    assert first.admitted and first.victims == (h(2),)
    assert cat.is_cached(h(4)) and not cat.is_cached(h(2)) and cat.usage() == (90, 3)
    assert cat.admit(rec(1, 30), 100).already  # touched
    assert cat.evictable() == [h(3), h(1)]  # 4 was created by admit: no host holds it yet
    cat.record_upload(h(4), HELD)
    assert cat.evictable() == [h(3), h(4), h(1)]
    assert cat.set_pinned(h(3), True) and not cat.set_pinned(h(9), True)
    assert cat.entry(h(3)).pinned  # type: ignore[union-attr]
    assert cat.evictable() == [h(4), h(1)] and cat.evictable([h(1), h(3), h(9)]) == [h(1)]
    second = cat.admit(rec(5, 60), 100)
    assert second.admitted and second.victims == (h(4), h(1)) and cat.usage() == (90, 2)


def test_files_no_host_holds_and_pinned_files_are_never_evicted(cat: CatalogBase) -> None:
    assert cat.admit(rec(1, 40), 100).admitted  # no host holds it
    cat.add(rec(2, 40, HELD))
    assert cat.admit(rec(2, 40), 100).admitted
    assert cat.set_pinned(h(2), True)
    refused = cat.admit(rec(3, 40), 100)
    assert not refused.admitted and refused.victims == ()
    assert not cat.exists(h(3)) and cat.usage() == (80, 2)  # nothing changed
    assert cat.set_pinned(h(2), False)
    taken = cat.admit(rec(3, 40), 100)
    assert taken.admitted and taken.victims == (h(2),) and cat.usage() == (80, 2)
    assert cat.shrink_to(10) == [] and cat.usage() == (80, 2)  # 1 is held by no host, 3 by none yet
    cat.record_upload(h(3), HELD, sent=40)
    assert cat.shrink_to(50) == [h(3)] and cat.usage() == (40, 1)


def test_usage_totals_stay_exact(cat: CatalogBase) -> None:
    for n in range(1, 21):
        cat.add(rec(n, n, HELD))
        cat.admit(rec(n, n), 120)
    sizes = cat.cached_sizes()
    assert h(20) in sizes and h(1) not in sizes
    assert cat.usage() == (sum(sizes.values()), len(sizes)) and sum(sizes.values()) <= 120
    cat.uncache([h(20), h(14)])
    cat.set_pinned(h(15), True)
    cat.shrink_to(60)
    sizes = cat.cached_sizes()
    assert cat.usage() == (sum(sizes.values()), len(sizes)) and sum(sizes.values()) <= 60
    assert h(15) in sizes and not cat.recount()


def test_uncache_returns_what_was_cached_in_the_order_given(cat: CatalogBase) -> None:
    for n in (1, 2, 3):
        cat.add(rec(n, 10, HELD))
        cat.admit(rec(n, 10), 100)
    assert cat.uncache([h(3), h(9), h(1), h(3)]) == [h(3), h(1)]
    assert cat.uncache([h(3)]) == [] and cat.usage() == (10, 1)
    assert cat.cached_sizes() == {h(2): 10}


def test_recount_finds_and_fixes_drifted_totals(backend: Backend, cat: CatalogBase) -> None:
    cat.add(rec(1, 10, HELD))
    cat.admit(rec(1, 10), 100)
    if backend.kind == "sqlite":
        with sqlite3.connect(backend.database) as db:
            db.execute("UPDATE state SET cached_bytes = 999")
    else:
        with psycopg.connect(backend.database, autocommit=True) as db:
            db.execute("UPDATE node_state SET cached_bytes = 999")
    assert cat.usage() == (999, 1)
    assert cat.recount(fix=False) and cat.usage() == (999, 1)
    assert cat.recount() and cat.usage() == (10, 1) and not cat.recount()


def test_one_node_admitting_from_many_threads_never_overfills(backend: Backend) -> None:
    catalogs = [backend.open("a") for _ in range(3)]  # as three processes of one node
    for n in range(1, 61):
        catalogs[0].add(rec(n, 10 + n % 7, HELD))
    errors: list[BaseException] = []

    def work(catalog: CatalogBase, first: int) -> None:
        try:
            for n in range(first, 61, 3):
                assert catalog.admit(rec(n, 10 + n % 7), 100).admitted
                assert catalog.usage()[0] <= 100
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c, i + 1)) for i, c in enumerate(catalogs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    sizes = catalogs[1].cached_sizes()
    assert catalogs[2].usage() == (sum(sizes.values()), len(sizes)) and sum(sizes.values()) <= 100
    assert not catalogs[0].recount()


# -- hosts -------------------------------------------------------------------------------


def test_host_health_and_transfers(cat: CatalogBase) -> None:
    cat.add(rec(1, 10))
    cat.record_upload(h(1), Upload("a", url="a://1"), sent=10)
    cat.record_upload(h(1), Upload("b", error="refused"))
    cat.note_host("b", "timeout")
    health = cat.host_health(["a", "b", "never"])
    assert health["a"].failures == 0 and health["a"].last_ok
    assert health["b"].failures == 2 and health["b"].last_error == "timeout" and health["b"].last_ok is None
    assert health["never"].failures == 0 and health["never"].last_error is None
    cat.record_fetch("a", None, fetched=10)
    cat.record_fetch("a", "other bytes", fetched=3, digest=h(1), lost=True)
    assert cat.record(h(1)) == rec(1, 10, Upload("a", error="other bytes"), Upload("b", error="refused"))
    assert cat.entry(h(1)).copies == 0  # type: ignore[union-attr]
    assert cat.host_health(["a"])["a"].failures == 1
    cat.note_host("b", None)
    assert cat.host_health(["b"])["b"].failures == 0
    [(_, host, sent, fetched)] = [t for t in cat.transfers() if t[1] == "a"]
    assert (host, sent, fetched) == ("a", 10, 13)
    assert cat.missing_copies(["a", "b", "c"]) == [(h(1), "a"), (h(1), "b"), (h(1), "c")]
    cat.drop_upload(h(1), "a")
    assert [u.host for u in cat.record(h(1)).uploads] == ["b"]  # type: ignore[union-attr]


def test_copies_older_than(cat: CatalogBase) -> None:
    cat.add(rec(1, 10, Upload("a", url="a://1"), Upload("b", url="b://1")))
    assert cat.copies_older_than("a", 2**40) == [(h(1), "a://1", 2)]
    assert cat.copies_older_than("a", 0) == []


def test_shares_record_and_loss(cat: CatalogBase) -> None:
    cat.add(rec(1, 30))
    shares = [Share(i, f"host-{i}", url=f"s://{i}", digest=f"d{i}", size=15) for i in range(3)]
    cat.record_shares(h(1), (2, 3), shares, sent=45)
    record = cat.record(h(1))
    assert record is not None and record.spread == (2, 3) and record.shares == tuple(shares)
    assert cat.entry(h(1)).copies == 1 and cat.incomplete_spreads() == []  # type: ignore[union-attr]
    cat.share_lost(h(1), 0, "gone")
    cat.share_lost(h(1), 1, "gone")
    assert cat.entry(h(1)).copies == 0 and cat.incomplete_spreads() == [h(1)]  # type: ignore[union-attr]
    assert cat.host_health(["host-0"])["host-0"].failures == 1


# -- merge, the change sequence, peers ------------------------------------------------------


def test_merge_unites_and_a_url_beats_an_error(cat: CatalogBase) -> None:
    cat.add(rec(1, 10, Upload("a", error="refused")))
    result = cat.merge([rec(1, 10, Upload("a", url="a://1"), Upload("b", error="x")),
                        rec(2, 20, Upload("b", error="first")), rec(2, 20, Upload("b", url="b://2")),
                        rec(3, 30, name="three"), rec(3, 30, name="renamed")])
    assert (result.added, result.changed, result.clashes) == (2, 1, ())
    assert result.last_seq - result.first_seq == 3 and cat.sequence() == result.last_seq
    assert cat.record(h(1)) == rec(1, 10, Upload("a", url="a://1"), Upload("b", error="x"))
    assert cat.record(h(2)) == rec(2, 20, Upload("b", url="b://2"))
    assert cat.record(h(3)).name == "three"  # type: ignore[union-attr]
    assert cat.entry(h(1)).copies == 1  # type: ignore[union-attr]
    again = cat.merge([rec(1, 10, Upload("a", error="later")), rec(2, 20)])
    assert (again.added, again.changed) == (0, 0) and again.first_seq == again.last_seq == cat.sequence()
    assert cat.record(h(1)).uploads[0] == Upload("a", url="a://1")  # type: ignore[union-attr]


def test_merge_clashes(cat: CatalogBase) -> None:
    cat.add(rec(1, 10))
    before = cat.sequence()
    with pytest.raises(ValueError, match=h(1)):
        cat.merge([rec(2, 5), rec(1, 11)])
    assert not cat.exists(h(2)) and cat.sequence() == before  # nothing changed
    result = cat.merge([rec(2, 5), rec(1, 11, HELD)], skip_clashes=True)
    assert result.clashes == (h(1),) and (result.added, result.changed) == (1, 0)
    assert cat.record(h(1)) == rec(1, 10) and cat.exists(h(2))


def test_merge_keeps_spreads_and_shares(cat: CatalogBase) -> None:
    shares = (Share(0, "x", url="x://0", digest="d", size=5), Share(1, "y", error="e", digest="d", size=5))
    spread = FileRecord(h(1), "s", 10, 1, (), (1, 2), shares)
    assert cat.merge([spread]).added == 1
    assert cat.record(h(1)) == spread and cat.entry(h(1)).copies == 1  # type: ignore[union-attr]
    other = FileRecord(h(1), "s", 10, 1, (), (2, 2), (Share(1, "z", url="z://1", digest="d", size=5),))
    assert cat.merge([other]).changed == 0  # another spread: its shares are left out
    fixed = FileRecord(h(1), "s", 10, 1, (), (1, 2), (Share(1, "y", url="y://1", digest="d", size=5),))
    assert cat.merge([fixed]).changed == 1
    assert cat.record(h(1)).shares[1].url == "y://1"  # type: ignore[union-attr]


def test_changes_page_by_sequence_number(cat: CatalogBase) -> None:
    cat.merge([rec(n, n) for n in range(1, 6)])
    cat.add(rec(6, 6))
    seen: list[str] = []
    cursor, more, pages = 0, True, 0
    while more:
        records, cursor, more = cat.changes(cursor, 2)
        seen += [r.hash for r in records]
        pages += 1
    assert seen == [h(n) for n in range(1, 7)] and pages == 3 and cursor == cat.sequence()
    assert cat.changes(cursor, 2) == ([], cursor, False)
    cat.record_upload(h(2), HELD)  # a change moves the record to the end
    records, later, more = cat.changes(cursor, 10)
    assert [r.hash for r in records] == [h(2)] and later == cursor + 1 and not more
    assert records[0].uploads == (HELD,)


def test_a_reader_paging_changes_while_writers_write_misses_nothing(backend: Backend) -> None:
    reader = backend.open("reader")
    writers = [backend.open(f"w{i}") for i in range(3)]
    errors: list[BaseException] = []

    def write(catalog: CatalogBase, base: int) -> None:
        try:
            for n in range(base, base + 40):
                if n % 2:
                    catalog.add(rec(n, 1, Upload("a", error="no")))
                    catalog.record_upload(h(n), Upload("a", url=f"a://{n}"))
                else:
                    catalog.merge([rec(n, 1), rec(n + 100_000, 1)])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w, 1000 * (i + 1))) for i, w in enumerate(writers)]
    for thread in threads:
        thread.start()
    seen: set[str] = set()
    cursor = 0

    def read() -> None:
        nonlocal cursor
        more = True
        while more:
            records, cursor, more = reader.changes(cursor, 7)
            seen.update(r.hash for r in records)

    while any(t.is_alive() for t in threads):
        read()
    for thread in threads:
        thread.join()
    read()
    assert errors == []
    assert seen == {r.hash for r in reader.records()}


def test_peer_cursors(cat: CatalogBase) -> None:
    assert cat.peer_cursors("http://peer") == (0, 0)
    cat.set_peer_cursor("http://peer", pulled=5)
    cat.set_peer_cursor("http://peer", pushed=7)
    cat.set_peer_cursor("http://other", pushed=1)
    assert cat.peer_cursors("http://peer") == (5, 7) and cat.peer_cursors("http://other") == (0, 1)


# -- listings ------------------------------------------------------------------------------


def test_listing_and_counts(cat: CatalogBase) -> None:
    cat.add(rec(1, 10, Upload("a", url="a://1"), Upload("b", url="b://1"), name="zeta"))
    cat.add(rec(2, 20, Upload("a", error="no"), name="alpha"))
    cat.add(rec(3, 30, Upload("a", url="a://3"), name="Beta"))
    cat.admit(rec(3, 30), 100)
    cat.set_pinned(h(2), True)
    names = [(x.name, x.held, x.tried, x.cached, x.pinned) for x in cat.listing(["a", "b"])]
    assert names == [("Beta", 1, 1, True, False), ("alpha", 0, 1, False, True), ("zeta", 2, 2, False, False)]
    assert [x.name for x in cat.listing(["a", "b"], cached_only=True)] == ["Beta"]
    assert [x.name for x in cat.listing(["a", "b"], pending_only=True)] == ["Beta", "alpha"]
    assert [x.name for x in cat.listing([], pending_only=True)] == []
    assert cat.counts(["a", "b"]) == {"files": 3, "cached": 1, "pinned": 1, "pending": 2}
    assert cat.counts([]) == {"files": 3, "cached": 1, "pinned": 1, "pending": 0}


# -- schema versions -------------------------------------------------------------------------


def test_schema_version_and_a_newer_catalog_is_refused(backend: Backend) -> None:
    known = SQLITE_VERSION if backend.kind == "sqlite" else PG_VERSION
    catalog = backend.open()
    assert catalog.schema_version() == known
    catalog.close()
    reopened = backend.open()  # opening again changes nothing
    assert reopened.schema_version() == known
    reopened.close()
    backend.set_version(known + 1)
    with pytest.raises(CatalogError, match="upgrade cloudmanager"):
        backend.open()


def _pg_shape(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Tables and columns, constraints, indexes and triggers of a PostgreSQL catalog."""
    with psycopg.connect(url) as db:
        return {
            "columns": sorted(db.execute(
                """SELECT table_name, column_name, data_type, column_default, is_nullable, collation_name
                     FROM information_schema.columns WHERE table_schema = 'public'""").fetchall()),
            "constraints": sorted(db.execute(
                """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
                    WHERE connamespace = 'public'::regnamespace""").fetchall()),
            "indexes": sorted(db.execute(
                "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'").fetchall()),
            "triggers": sorted(db.execute(
                "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal").fetchall()),
        }


def test_an_older_postgres_catalog_is_migrated(postgres_server: PostgresServer) -> None:
    fresh, old = postgres_server.create_database("fresh"), postgres_server.create_database("old")
    try:
        open_catalog(fresh, node="n").close()
        catalog = open_catalog(old, node="n")
        catalog.add(rec(1, 10, HELD))
        catalog.admit(rec(1, 10), 100)
        catalog.close()
        with psycopg.connect(old, autocommit=True) as db:  # what version 3 was
            db.execute("""DROP TABLE shares; ALTER TABLE uploads DROP COLUMN encrypted;
                          ALTER TABLE files DROP COLUMN spread_k, DROP COLUMN spread_n;
                          DROP TRIGGER files_count_delete ON files; DROP FUNCTION cm_files_delete, cm_hold;
                          DROP TABLE holdings; ALTER TABLE files DROP COLUMN holders;
                          ALTER TABLE catalog_state DROP COLUMN files;
                          ALTER TABLE node_state DROP COLUMN pinned_files;
                          UPDATE schema_version SET version = 3""")
        assert _pg_shape(old) != _pg_shape(fresh)
        migrated = open_catalog(old, node="n")
        try:
            assert migrated.schema_version() == PG_VERSION
            assert migrated.record(h(1)) == rec(1, 10, HELD) and migrated.usage() == (10, 1)
            assert migrated.counts(["vault", "other"]) == {"files": 1, "cached": 1, "pinned": 0, "pending": 1}
            migrated.record_shares(h(1), (1, 1), [Share(0, "s", url="s://0", digest="d", size=10)])
            assert migrated.record(h(1)).spread == (1, 1)  # type: ignore[union-attr]
        finally:
            migrated.close()
        assert _pg_shape(old) == _pg_shape(fresh)
    finally:
        postgres_server.drop_database(fresh)
        postgres_server.drop_database(old)


def test_other_postgres_databases_are_refused(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("CREATE TABLE t (x integer)")
    with pytest.raises(CatalogError, match="not a cloudmanager catalog"):
        open_catalog(postgres_url, node="n")


def test_nodes_opening_a_fresh_database_at_once(postgres_url: str) -> None:
    opened: list[CatalogBase] = []
    errors: list[BaseException] = []

    def start(n: int) -> None:
        try:
            opened.append(open_catalog(postgres_url, node=f"node-{n}"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for catalog in opened:
        catalog.close()
    assert errors == [] and len(opened) == 6


# -- a fleet sharing one PostgreSQL catalog ---------------------------------------------------


def test_nodes_share_files_but_not_cache_state(backend: Backend) -> None:
    if backend.kind == "sqlite":  # one node per SQLite file: nothing to share
        assert backend.open().record(h(1)) is None
        return
    a, b = backend.open("a"), backend.open("b")
    a.add(rec(1, 10, HELD))
    assert a.admit(rec(1, 10), 100).admitted and a.admit(rec(2, 20), 100).admitted
    assert b.exists(h(1)) and b.exists(h(2)) and b.record(h(1)) == a.record(h(1))
    assert not b.is_cached(h(1)) and b.usage() == (0, 0) and b.cached_sizes() == {}
    assert b.set_pinned(h(1), True) and not a.entry(h(1)).pinned  # type: ignore[union-attr]
    assert b.admit(rec(1, 10), 15).admitted and b.usage() == (10, 1) and a.usage() == (30, 2)
    second = b.admit(rec(2, 20), 25)  # 1 is pinned on b: 2 cannot fit there
    assert not second.admitted and a.is_cached(h(2))
    assert [x.cached for x in b.listing([])] == [True, False] and b.counts([])["pinned"] == 1
    assert a.counts([])["pinned"] == 0
    b.touch(h(1))
    assert a.evictable() == [h(1)] and b.evictable() == []
    a.record_upload(h(2), HELD)  # shared: copies count for eviction on every node
    assert a.evictable() == [h(1), h(2)]
    a.set_peer_cursor("http://p", pulled=3)
    assert b.peer_cursors("http://p") == (0, 0)
    assert a.forget(h(1))  # forgotten for every node
    assert b.usage() == (0, 0) and a.usage() == (20, 1) and not b.recount() and not a.recount()


def test_a_password_is_never_shown(postgres_server: PostgresServer) -> None:
    url = f"postgresql://postgres:s3cret-word@127.0.0.1:{postgres_server.port}/no_such_db"
    assert "s3cret" not in redact(url) and "***" in redact(url)
    assert "s3cret" not in redact(url.replace("postgres:s3cret-word@", "") + "?password=s3cret-word")
    with pytest.raises(CatalogError) as caught:
        open_catalog(url, node="n")
    assert "s3cret" not in str(caught.value) and "no_such_db" in str(caught.value)
    closed = f"postgresql://u:s3cret-word@127.0.0.1:{postgres_server.port + 1}/x?connect_timeout=2"
    with pytest.raises(CatalogError) as caught:
        open_catalog(closed, node="n")
    assert "s3cret" not in str(caught.value)


def test_node_ids_and_the_sqlite_default() -> None:
    assert node_id("/srv/cache").endswith(":/srv/cache") and node_id("/a") != node_id("/b")


# -- a node whose catalog is on PostgreSQL ------------------------------------------------------


def test_a_node_on_postgres_end_to_end(postgres_url: str, tmp_path: Path, write: Callable[..., Path]) -> None:
    with CloudManager(postgres_url, tmp_path / "cache-a", 100, hosts=["memory://m"]) as a, \
            CloudManager(postgres_url, tmp_path / "cache-b", 100, hosts=["memory://m"], node="b") as b:
        assert not (tmp_path / "cache-a" / "catalog.lock").exists() and (tmp_path / "cache-a.lock").exists()
        first = a.upload(write("one", b"1" * 60))
        second = a.upload(write("two", b"2" * 60))  # evicts one (a host holds it)
        assert first and second and not a.on_cache(first) and a.on_cache(second)
        assert b.exists(first) and not b.on_cache(second)  # shared files, its own cache
        path = b.warm_up(first)
        assert path and Path(path).read_bytes() == b"1" * 60 and b.on_cache(first)
        assert a.evict() == [second] and a.usage_ratio() == 0 and b.usage_ratio() == 0.6
        dump = a.data_dump()
        assert [r["filehash"] for r in json.loads(dump)] == sorted([first, second])
    with CloudManager(tmp_path / "other.sqlite3", tmp_path / "cache-c", 100, hosts=["memory://m"]) as c:
        assert c.data_load(dump) == 2
        assert c.warm_up(second)
        assert c.data_dump() == dump
    with CloudManager(postgres_url, tmp_path / "cache-b", 100, hosts=["memory://m"], node="b") as b:
        assert b.last_repair.clean and b.on_cache(first)  # its cache state survived
        assert b.check(verify_hash=True).problems == 0


# -- configuration and cm_setup_db -------------------------------------------------------------


def _config(tmp_path: Path, text: str, **environ: str) -> config.Config:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return config.load(path, environ=environ)


def test_configuration_names_a_postgres_catalog(tmp_path: Path) -> None:
    url = "postgresql://cm:pass-word@db.invalid:5432/cloud"
    conf = _config(tmp_path, f'[catalog]\nurl = "{url}"\nnode = "nas"\n')
    assert conf.database == url and conf.node == "nas" and "pass-word" not in conf.catalog_shown
    assert "pass-word" not in repr(conf)
    conf = _config(tmp_path, '[catalog]\nurl_env = "CM_URL"\n', CM_URL=url)
    assert conf.database == url and conf.node is None
    plain = _config(tmp_path, '[catalog]\npath = "cat.sqlite3"\n')
    assert plain.database == tmp_path / "cat.sqlite3" and plain.catalog_url is None
    for text, problem in [
        (f'[catalog]\npath = "x"\nurl = "{url}"\n', "not path and url"),
        ('[catalog]\nurl_env = "CM_NOT_SET"\n', "is not set"),
        ('[catalog]\nurl = "mysql://cm:pass-word@db/x"\n', "postgresql://"),
        ('[catalog]\nnode = ""\n', "non-empty"),
    ]:
        with pytest.raises(config.ConfigError, match=problem) as caught:
            _config(tmp_path, text)
        assert "pass-word" not in str(caught.value)


def test_cm_setup_db_makes_a_postgres_catalog(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(2):
        assert setup_db([postgres_url]) == 0
        assert f"{postgres_url}: catalog ready (schema version {PG_VERSION})" in capsys.readouterr().out
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT count(*) FROM node_state").fetchone() == (0,)  # no node registered
    assert setup_db([postgres_url.rsplit("/", 1)[0] + "/no_such_db"]) == 1
    assert "no_such_db" in capsys.readouterr().err


def test_a_file_forgotten_by_one_node_leaves_the_others_at_their_next_open(
        postgres_url: str, tmp_path: Path, write: Callable[..., Path]) -> None:
    a = CloudManager(postgres_url, tmp_path / "cache-a", 1000, hosts=["memory://m"])
    b = CloudManager(postgres_url, tmp_path / "cache-b", 1000, hosts=["memory://m"])
    try:
        digest = a.upload(write("f", b"shared bytes"))
        assert digest and b.warm_up(digest) and b.on_cache(digest)
        report = a.forget(digest)
        assert report is not None and report.forgotten
        assert not b.exists(digest) and not b.on_cache(digest) and b.usage_ratio() == 0
        assert b.path(digest).exists()  # its bytes stay until b checks its cache
    finally:
        a.close()
        b.close()
    with CloudManager(postgres_url, tmp_path / "cache-b", 1000, hosts=["memory://m"]) as b:
        assert b.last_repair.quarantined == [digest] and not b.path(digest).exists()
        assert [path.read_bytes() for path, _ in b.quarantined()] == [b"shared bytes"]  # not deleted


def test_a_node_on_postgres_mends_its_cache_at_open(
        postgres_url: str, tmp_path: Path, write: Callable[..., Path]) -> None:
    with CloudManager(postgres_url, tmp_path / "cache", 1000, hosts=["memory://m"]) as cm:
        hashes = [cm.upload(write(f"f{i}", bytes([i]) * 100)) for i in range(5)]
        gone = hashes[4]
        assert gone
        cm.path(gone).unlink()
        (cm.cache.root / ".tmp-deadbeef").write_bytes(b"half a file")
    with CloudManager(postgres_url, tmp_path / "cache", 250, hosts=["memory://m"]) as cm:
        report = cm.last_repair
        assert report.uncounted == [gone] and report.removed_temps == 1 and report.evicted == 2
        assert [cm.on_cache(d) for d in hashes if d] == [False, False, True, True, False]
        assert cm.usage_ratio() == 0.8 and cm.check().problems == 0
        assert Path(cm.warm_up(gone) or "").read_bytes() == bytes([4]) * 100


def test_both_catalogs_implement_the_whole_interface_and_no_more() -> None:
    from cloudmanager.catalog import PostgresCatalog, SQLiteCatalog

    def public(cls: type) -> set[str]:
        return {name for name in dir(cls) if not name.startswith("_") and callable(getattr(cls, name))}

    assert public(SQLiteCatalog) == public(PostgresCatalog) == set(CatalogBase.__abstractmethods__)


def test_moving_the_cache_keeps_the_node_id_of_a_shared_catalog(tmp_path: Path) -> None:
    conf = _config(tmp_path, '[catalog]\nurl = "postgresql://cm@db.invalid/cloud"\n[cache]\npath = "old"\n')
    config.set_cache_path(conf, tmp_path / "new")
    moved = config.load(conf.path, environ={})
    assert moved.cache == tmp_path / "new" and moved.node == node_id(tmp_path / "old")
    config.set_cache_path(moved, tmp_path / "newer")  # named now: kept as it is
    assert config.load(conf.path, environ={}).node == node_id(tmp_path / "old")
