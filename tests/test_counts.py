"""The catalog's everyday counts (``counts``, ``count``, ``usage``, ``held_per_host``) against
a recount from the rows, on SQLite and PostgreSQL: after random mixes of operations (a second
node on a PostgreSQL catalog), after the migration of a catalog made before the running
counts, and read without a scan of the files: the work they do does not grow with the
number of files."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cloudmanager import CloudManager
from cloudmanager.catalog import CatalogBase, open_catalog
from cloudmanager.records import FileRecord, Share, Upload
from tests.servers.postgres import PostgresServer

DATA = Path(__file__).parent / "data"
BACKENDS = ["sqlite", "postgres"]
HOSTS = ("a", "b", "c", "d")
#: The host lists counts are asked for: none, some, all, one no file is on, a name twice.
ASKED: tuple[tuple[str, ...], ...] = ((), ("a",), ("a", "b"), ("b", "c", "d"), HOSTS, ("a", "z"), ("z",),
                                      ("b", "b"))
POOL = 40  # files are drawn from h(0) .. h(POOL - 1)
CAPACITY = 200

#: What counts() ran before the running counts (a scan of files, a subquery per file):
#: the oracle, spelled for each backend.
RECOUNT = {
    "sqlite": """SELECT count(*), count(*) FILTER (WHERE f.cached), count(*) FILTER (WHERE f.pinned),
                        count(*) FILTER (WHERE (SELECT count(*) FROM uploads u
                                                 WHERE u.hash = f.hash AND u.url IS NOT NULL
                                                   AND u.host IN (SELECT value FROM json_each(:hosts)))
                                               < json_array_length(:hosts)),
                        coalesce(sum(f.size) FILTER (WHERE f.cached), 0)
                   FROM files f""",
    "postgres": """SELECT count(*), count(*) FILTER (WHERE coalesce(c.cached, false)),
                          count(*) FILTER (WHERE coalesce(c.pinned, false)),
                          count(*) FILTER (WHERE (SELECT count(*) FROM uploads u
                                                   WHERE u.hash = f.hash AND u.url IS NOT NULL
                                                     AND u.host = ANY(%(hosts)s::text[]))
                                                 < cardinality(%(hosts)s::text[])),
                          coalesce(sum(c.size) FILTER (WHERE c.cached), 0)
                     FROM files f LEFT JOIN cache c ON c.node = %(node)s AND c.hash = f.hash""",
}

#: What held_per_host() ran before the running counts (a scan of uploads).
HELD = "SELECT host, count(*) FROM uploads WHERE url IS NOT NULL GROUP BY host"


def h(n: int) -> str:
    """A made-up SHA-256: ``n`` in 64 hex digits."""
    return f"{n:064x}"


def size_of(n: int) -> int:
    """Every file's one size (a record of another size clashes)."""
    return 10 + n * 7 % 41


class Database:
    """One catalog database of either kind, the catalogs opened on it, and the recount."""

    def __init__(self, kind: str, location: str):
        self.kind, self.location = kind, location
        self.opened: list[CatalogBase] = []
        self.raw: Any = sqlite3.connect(location) if kind == "sqlite" else psycopg.connect(location,
                                                                                            autocommit=True)

    def open(self, node: str = "a") -> CatalogBase:
        catalog = open_catalog(self.location, node=node)
        self.opened.append(catalog)
        return catalog

    def node_of(self, catalog: CatalogBase) -> str | None:
        return getattr(catalog, "node", None)

    def recount(self, node: str | None, hosts: tuple[str, ...]) -> tuple[dict[str, int], tuple[int, int]]:
        """counts() and usage() from the rows, as before the running counts."""
        listed: Any = json.dumps(hosts) if self.kind == "sqlite" else list(hosts)
        row = self.raw.execute(RECOUNT[self.kind], {"hosts": listed, "node": node}).fetchone()
        files, cached, pinned, pending, used = (int(v) for v in row)
        return {"files": files, "cached": cached, "pinned": pinned, "pending": pending}, (used, cached)

    def held(self) -> dict[str, int]:
        """held_per_host() from the rows, as before the running counts."""
        return dict(self.raw.execute(HELD).fetchall())

    def check(self, catalogs: list[CatalogBase], when: str) -> None:
        """Every catalog's counts, count and usage are the recount's, for every host list."""
        for catalog in catalogs:
            node = self.node_of(catalog)
            for hosts in ASKED:
                counted, used = self.recount(node, hosts)
                assert catalog.counts(hosts) == counted, (when, node, hosts)
                assert catalog.usage() == used, (when, node)
            assert catalog.count() == counted["files"], (when, node)
            assert catalog.held_per_host() == self.held(), (when, node)
            assert not catalog.recount(fix=False), (when, node)

    def close(self) -> None:
        for catalog in self.opened:
            catalog.close()
        self.raw.close()


@pytest.fixture(params=BACKENDS)
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Database]]:
    """Makes empty catalog databases of one kind (each kind in turn), removed after the test."""
    made: list[Database] = []

    def make() -> Database:
        if request.param == "sqlite":
            made.append(Database("sqlite", str(tmp_path / f"catalog-{len(made)}.sqlite3")))
        else:
            server: PostgresServer = request.getfixturevalue("postgres_server")
            made.append(Database("postgres", server.create_database("counts")))
        return made[-1]

    yield make
    for database in made:
        database.close()
        if database.kind == "postgres":
            request.getfixturevalue("postgres_server").drop_database(database.location)


@pytest.fixture
def database(databases: Callable[[], Database]) -> Database:
    """An empty catalog database of each kind."""
    return databases()


def two_catalogs(database: Database) -> list[CatalogBase]:
    """Two nodes on a PostgreSQL catalog; two processes of the one node of an SQLite one."""
    return [database.open("a"), database.open("b" if database.kind == "postgres" else "a")]


# -- random mixes of everything that changes the counts ---------------------------------------


class Mix:
    """Random operations on ``catalogs``: each step one of OPERATIONS on a file of the pool."""

    OPERATIONS = ("add", "upload", "uploads", "lost", "drop", "admit", "admit", "uncache", "shrink",
                  "pin", "pin", "forget", "merge", "spread", "share_lost", "recount")

    def __init__(self, rng: random.Random, catalogs: list[CatalogBase]):
        self.rng, self.catalogs = rng, catalogs

    def upload(self, host: str) -> Upload:
        if self.rng.random() < 0.7:
            return Upload(host, url=f"{host}://{self.rng.randrange(1000)}")
        return Upload(host, error="refused")

    def record(self, n: int) -> FileRecord:
        uploads = tuple(self.upload(host) for host in HOSTS if self.rng.random() < 0.6)
        return FileRecord(h(n), f"file-{n}", size_of(n), 1_700_000_000 + n, uploads)

    def step(self) -> str:
        rng = self.rng
        catalog = rng.choice(self.catalogs)
        operation, n, host = rng.choice(self.OPERATIONS), rng.randrange(POOL), rng.choice(HOSTS)
        digest, known = h(n), catalog.exists(h(n))
        if operation == "add":
            catalog.add(self.record(n))
        elif operation == "upload" and known:
            catalog.record_upload(digest, self.upload(host))
        elif operation == "uploads" and known:
            catalog.record_uploads(digest, [self.upload(x) for x in rng.sample(HOSTS, 2)])
        elif operation == "lost" and known:  # a host's copy found gone
            catalog.record_fetch(host, "gone", digest=digest, lost=True)
        elif operation == "drop":  # a host's entry removed
            catalog.drop_upload(digest, host)
        elif operation == "admit":
            catalog.admit(FileRecord(digest, f"file-{n}", size_of(n), 1_700_000_000 + n), CAPACITY)
        elif operation == "uncache":
            catalog.uncache([h(rng.randrange(POOL)) for _ in range(3)])
        elif operation == "shrink":
            catalog.shrink_to(rng.randrange(CAPACITY))
        elif operation == "pin":
            catalog.set_pinned(digest, rng.random() < 0.6)
        elif operation == "forget":
            catalog.forget(digest)
        elif operation == "merge":  # what data_load and peer sync do
            records = [self.record(m) for m in rng.sample(range(POOL), 6)]
            if known:  # a record of another size: left out
                records.append(FileRecord(digest, "clash", size_of(n) + 1, 1))
            catalog.merge(records, skip_clashes=True)
        elif operation == "spread" and known:
            catalog.record_shares(digest, (1, 2), [Share(i, x, url=f"{x}://s{i}", digest=f"d{i}", size=5)
                                                   for i, x in enumerate(rng.sample(HOSTS, 2))])
        elif operation == "share_lost":
            catalog.share_lost(digest, 0, "gone")
        elif operation == "recount":
            catalog.recount()
        return f"{operation} {n} {host}"


@pytest.mark.parametrize("seed", [1, 2])
def test_counts_match_a_recount_after_random_operations(database: Database, seed: int) -> None:
    catalogs = two_catalogs(database)
    mix = Mix(random.Random(seed), catalogs)
    database.check(catalogs, "empty")
    done: list[str] = []
    for _ in range(200):
        done.append(mix.step())
        database.check(catalogs, " / ".join(done[-5:]))


# -- a catalog made before the running counts ---------------------------------------------------


def _old_catalog(kind: str, location: str, rng: random.Random) -> None:
    """Write the schema as it shipped before the running counts (SQLite 5, PostgreSQL 4)
    and random rows into it, as the code of then kept them (its triggers at work)."""
    if kind == "sqlite":
        with sqlite3.connect(location) as db:
            db.executescript((DATA / "schema_v5.sql").read_text())
            run: Callable[..., Any] = db.execute
            _old_rows(rng, run, "?", lambda n, cached, pinned, node: run(
                "UPDATE files SET cached = ?, pinned = ?, access = ? WHERE hash = ?",
                (cached, pinned, n, h(n))), nodes=("a",))
        return
    with psycopg.connect(location, autocommit=True) as pg:
        pg.execute((DATA / "schema_pg_v4.sql").read_text().encode())
        pg.execute("INSERT INTO schema_version (id, version) VALUES (0, 4)")
        pg.execute("INSERT INTO node_state (node) VALUES ('a'), ('b')")
        _old_rows(rng, pg.execute, "%s", lambda n, cached, pinned, node: pg.execute(
            "INSERT INTO cache (node, hash, size, cached, pinned, access) VALUES (%s, %s, %s, %s, %s, %s)",
            (node, h(n), size_of(n), bool(cached), bool(pinned), n)), nodes=("a", "b"))


def _old_rows(rng: random.Random, run: Callable[..., Any], mark: str,
              cache: Callable[[int, int, int, str], object], nodes: tuple[str, ...]) -> None:
    for n in range(30):
        run(f"INSERT INTO files (hash, name, size, datetime) VALUES ({mark}, {mark}, {mark}, {mark})",
            (h(n), f"file-{n}", size_of(n), 1_700_000_000 + n))
        for host in HOSTS:
            if rng.random() < 0.6:
                url, error = (f"{host}://{n}", None) if rng.random() < 0.7 else (None, "refused")
                run(f"INSERT INTO uploads (hash, host, url, error, time) VALUES ({mark}, {mark}, {mark}, "
                    f"{mark}, 1)", (h(n), host, url, error))
        for node in nodes:
            cached, pinned = int(rng.random() < 0.3), int(rng.random() < 0.2)
            if cached or pinned:
                cache(n, cached, pinned, node)


def shape(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    """The columns, indexes, triggers (their text) and functions of a catalog."""
    if database.kind == "sqlite":
        db = database.raw
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        found = {t: sorted(db.execute(f"PRAGMA table_info({t})").fetchall()) for t in tables}
        found["objects"] = sorted(db.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger')").fetchall())
        return found
    pg = database.raw
    return {
        "columns": sorted(pg.execute(
            """SELECT table_name, column_name, data_type, column_default, is_nullable, collation_name
                 FROM information_schema.columns WHERE table_schema = 'public'""").fetchall()),
        "indexes": sorted(pg.execute(
            "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'").fetchall()),
        "triggers": sorted(pg.execute(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal").fetchall()),
        "functions": sorted(pg.execute(
            """SELECT proname, pg_get_functiondef(oid) FROM pg_proc
                WHERE pronamespace = 'public'::regnamespace""").fetchall()),
    }


def test_counts_match_a_recount_after_migrating_an_older_catalog(databases: Callable[[], Database]) -> None:
    database = databases()
    _old_catalog(database.kind, database.location, random.Random(7))
    catalogs = two_catalogs(database)
    database.check(catalogs, "migrated")
    mix = Mix(random.Random(8), catalogs)
    for _ in range(60):
        when = mix.step()
        database.check(catalogs, f"migrated, then {when}")
    fresh = databases()
    fresh.open().close()
    assert shape(database) == shape(fresh)


# -- the work counts() does: constant in the number of files ----------------------------------


def _filled(database: Database, count: int) -> CatalogBase:
    """A catalog of ``count`` files, held by the same four sets of hosts, some cached and pinned."""
    catalog = database.open()
    patterns = ((), ("a",), ("a", "b"), ("a", "b", "c"))
    catalog.merge([FileRecord(h(n), f"file-{n}", 10, n, tuple(Upload(x, url=f"{x}://{n}")
                                                             for x in patterns[n % 4]))
                   for n in range(count)])
    for n in range(0, count, max(1, count // 10)):
        catalog.admit(FileRecord(h(n), f"file-{n}", 10, n), 1 << 30)
        catalog.set_pinned(h(n), n % 2 == 0)
    return catalog


def _statements_of(catalog: CatalogBase, monkeypatch: pytest.MonkeyPatch,
                   call: Callable[[], object]) -> list[tuple[str, dict[str, Any]]]:
    """The statements ``call`` runs on ``catalog``, with their parameters."""
    seen: list[tuple[str, dict[str, Any]]] = []
    run = catalog._exec  # type: ignore[attr-defined]

    def recording(tx: Any, query: str, params: dict[str, Any]) -> Any:
        seen.append((query, params))
        return run(tx, query, params)

    monkeypatch.setattr(catalog, "_exec", recording)
    call()
    monkeypatch.undo()
    return seen


def _figures(catalog: CatalogBase) -> None:
    """What a scrape of the node's figures reads from the catalog."""
    catalog.counts(["a", "b"])
    catalog.count()
    catalog.usage()
    catalog.held_per_host()


def _plan_nodes(plan: Any) -> Iterator[dict[str, Any]]:
    """Every node of a PostgreSQL JSON plan."""
    if isinstance(plan, list):
        for item in plan:
            yield from _plan_nodes(item)
    elif isinstance(plan, dict):
        if "Node Type" in plan:
            yield plan
        for value in plan.values():
            yield from _plan_nodes(value)


def test_counts_read_no_files(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The statements the figures run open no table of files, scan or search: SQLite's
    compiled program opens only the b-trees of state and holdings (its OpenRead steps,
    by root page); PostgreSQL's plans read only those tables."""
    catalog = _filled(database, 400)
    statements = _statements_of(catalog, monkeypatch, lambda: _figures(catalog))
    assert statements
    for query, params in statements:
        if database.kind == "sqlite":
            trees = dict(database.raw.execute("SELECT rootpage, name FROM sqlite_master"))
            program = database.raw.execute(f"EXPLAIN {query}", params).fetchall()
            read = {trees[step[3]] for step in program if step[1] == "OpenRead"}
            assert read <= {"state", "holdings"}, (query, read)
        else:
            plan = database.raw.execute(f"EXPLAIN (FORMAT JSON) {query}", params).fetchone()[0]
            read = {node["Relation Name"] for node in _plan_nodes(plan) if "Relation Name" in node}
            assert read <= {"catalog_state", "node_state", "holdings"}, (query, plan)


def _work(database: Database, catalog: CatalogBase, monkeypatch: pytest.MonkeyPatch) -> int:
    """What the figures cost, counted, not timed: SQLite's virtual machine steps; the rows
    every node of PostgreSQL's plans produced, as EXPLAIN ANALYZE reports them."""
    if database.kind == "sqlite":
        steps = [0]

        def tick() -> int:
            steps[0] += 1
            return 0

        connection = catalog._db  # type: ignore[attr-defined]
        connection.set_progress_handler(tick, 1)
        _figures(catalog)
        connection.set_progress_handler(None, 1)
        return steps[0]
    rows = 0
    for query, params in _statements_of(catalog, monkeypatch, lambda: _figures(catalog)):
        plan = database.raw.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", params).fetchone()[0]
        rows += sum(int(node["Actual Rows"] * node["Actual Loops"]) for node in _plan_nodes(plan))
    return rows


def test_the_work_of_counts_does_not_grow_with_the_files(
        databases: Callable[[], Database], monkeypatch: pytest.MonkeyPatch) -> None:
    small, large = databases(), databases()
    work = {count: _work(where, _filled(where, count), monkeypatch) for where, count in ((small, 100),
                                                                                        (large, 3000))}
    assert 0 < work[3000] == work[100], work


# -- the node's figures ---------------------------------------------------------------------------


def test_the_node_counts_for_its_active_hosts(tmp_path: Path, write: Callable[..., Path]) -> None:
    with CloudManager(tmp_path / "catalog.sqlite3", tmp_path / "cache", 1000,
                      hosts=["memory://one", "memory://two"]) as cm:
        first = cm.upload(write("first", b"first file"))
        assert first and cm.counts() == {"files": 1, "cached": 1, "pinned": 0, "pending": 0}
        cm.hosts[1].active = False  # no new uploads there; what it holds still counts for it
        second = cm.upload(write("second", b"second file"))
        assert second and cm.pin(second)
        assert cm.counts() == {"files": 2, "cached": 2, "pinned": 1, "pending": 0}
        cm.hosts[1].active = True
        assert cm.counts() == {"files": 2, "cached": 2, "pinned": 1, "pending": 1}
        figures = cm.stats()
        assert {key: figures[key] for key in cm.counts()} == cm.counts()
