"""The catalog's everyday counts (``counts``, ``count``, ``usage``) against a recount from
the rows, on SQLite and PostgreSQL, after random mixes of operations (a second node on a
PostgreSQL catalog)."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

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

    def check(self, catalogs: list[CatalogBase], when: str) -> None:
        """Every catalog's counts, count and usage are the recount's, for every host list."""
        for catalog in catalogs:
            node = self.node_of(catalog)
            for hosts in ASKED:
                counted, used = self.recount(node, hosts)
                assert catalog.counts(hosts) == counted, (when, node, hosts)
                assert catalog.usage() == used, (when, node)
            assert catalog.count() == counted["files"], (when, node)
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
