"""The SQLite catalog: the embedded default, one node per catalog file.

The contract is CatalogBase (base.py), the flow SQLCatalog (sql.py); here is what
SQLite does its own way: connecting, the transaction, the statements on the
schema's shape (the cache state is kept on the ``files`` row: one cache per
catalog), the bulk load of a merge and the migrations.

One connection per thread (SQLite connections are not shared between threads),
WAL so that readers never wait for the writer, a long busy timeout and
``BEGIN IMMEDIATE`` for every write so that concurrent writers queue instead of
failing with "database is locked".  Running totals and the change sequence are
kept by triggers (see schema.sql), so they move in the same transaction as the
rows.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from ..records import FileRecord
from .base import CatalogError
from .sql import SQLCatalog, dialect, lru

T = TypeVar("T")

#: The schema version this code reads and writes (``PRAGMA user_version``).
SCHEMA_VERSION = 6

#: Connection settings, in one place: how long a writer waits for another
#: before failing, and the pragmas every connection runs.
BUSY_TIMEOUT_S = 60.0
PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",  # a commit that returned survives a power loss
    "PRAGMA foreign_keys = ON",
    "PRAGMA mmap_size = 268435456",  # reads straight from the page cache: faster lookups
)

#: Steps from each older version to the next.  "@schema" applies schema.sql, whose
#: statements are all idempotent: it adds the tables, indexes and triggers a step needs
#: ("CREATE ... IF NOT EXISTS" keeps an older trigger: a step that changes one drops it
#: first).  "@counts" sets the running counts from the rows (SQLCatalog._fill_counts).
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 1 -> 2: the change sequence, for catalog sync between nodes.
    1: (
        "ALTER TABLE files ADD COLUMN seq INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE state ADD COLUMN seq INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE state ADD COLUMN bulk INTEGER NOT NULL DEFAULT 0",
        "DROP TRIGGER IF EXISTS uploads_insert",
        "DROP TRIGGER IF EXISTS uploads_update",
        "DROP TRIGGER IF EXISTS uploads_delete",
        "@schema",
        """WITH numbered AS (
               SELECT hash, row_number() OVER (ORDER BY datetime, hash) AS n FROM files)
           UPDATE files SET seq = numbered.n FROM numbered WHERE numbered.hash = files.hash""",
        "UPDATE state SET seq = (SELECT count(*) FROM files)",
    ),
    # 2 -> 3: the peers table (cursors of catalog sync over HTTP).
    2: ("@schema",),
    # 3 -> 4: encrypted copies, and erasure-coded shares of spread files.
    3: (
        "ALTER TABLE uploads ADD COLUMN encrypted INTEGER NOT NULL DEFAULT 0 CHECK (encrypted IN (0, 1))",
        "ALTER TABLE files ADD COLUMN spread_k INTEGER",
        "ALTER TABLE files ADD COLUMN spread_n INTEGER",
        "@schema",
    ),
    # 4 -> 5: the cache folder the catalog keeps the state of (a second one is refused).
    4: ("ALTER TABLE state ADD COLUMN cache TEXT",),
    # 5 -> 6: running counts of files, pinned files and of the files each set of hosts
    # holds, so that counts() reads no file.
    5: (
        "ALTER TABLE files ADD COLUMN holders TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE state ADD COLUMN files INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE state ADD COLUMN pinned_files INTEGER NOT NULL DEFAULT 0",
        *(f"DROP TRIGGER IF EXISTS {name}" for name in (
            "files_usage_insert", "files_usage_update", "files_usage_delete",
            "uploads_insert", "uploads_update", "uploads_delete")),
        "@schema",
        "@counts",
    ),
}


def schema_text() -> str:
    """The text of schema.sql shipped with the package."""
    return resources.files("cloudmanager").joinpath("schema.sql").read_text(encoding="utf-8")


def _statements(script: str) -> Iterator[str]:
    """Split an SQL script into complete statements (triggers kept whole)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                yield pending.strip()
            pending = ""


#: The statements on SQLite's shape of the schema (the rest are COMMON, in sql.py).
_SQL = dialect({
    **lru(source="files", key="hash", size="size", order="access",
          evictable="cached = 1 AND pinned = 0 AND copies > 0"),  # the files_lru index's condition
    "schema_version": "PRAGMA user_version",
    "is_cached": "SELECT cached FROM files WHERE hash = :hash",
    "missing_copies": """SELECT hash, host FROM uploads WHERE error IS NOT NULL AND host IN LIST(:names)
                         UNION
                         SELECT f.hash, h.value FROM files f, json_each(:names) h
                          WHERE f.copies = 0 AND f.spread_k IS NULL
                            AND NOT EXISTS (SELECT 1 FROM uploads u
                                             WHERE u.hash = f.hash AND u.host = h.value)
                         ORDER BY 1, 2""",
    "admit_state": """SELECT s.cached_bytes, f.cached, f.size FROM state s LEFT JOIN files f ON f.hash = :hash
                       WHERE s.id = 0""",
    "tick": "UPDATE state SET clock = clock + 1 WHERE id = 0 RETURNING clock",
    "touch": "UPDATE files SET access = :access WHERE hash = :hash",
    "admit": """INSERT INTO files (hash, name, size, datetime, cached, access)
                VALUES (:hash, :name, :size, :datetime, 1, :access)
                ON CONFLICT (hash) DO UPDATE SET cached = 1, access = excluded.access""",
    "uncount": "UPDATE files SET cached = 0 WHERE hash IN LIST(:hashes) AND cached = 1 RETURNING hash",
    "set_pinned": "UPDATE files SET pinned = :pinned WHERE hash = :hash",
    "cache_owner": "SELECT cache FROM state WHERE id = 0",
    "set_cache_owner": "UPDATE state SET cache = :cache WHERE id = 0",
    "file_held": "SELECT 1 FROM files WHERE hash = :hash",
    "peer_cursors": "SELECT pulled, pushed FROM peers WHERE url = :url",
    "set_peer_cursor": """INSERT INTO peers (url, pulled, pushed)
                          VALUES (:url, coalesce(:pulled, 0), coalesce(:pushed, 0))
                          ON CONFLICT (url) DO UPDATE SET pulled = coalesce(:pulled, pulled),
                                                          pushed = coalesce(:pushed, pushed)""",
    "bulk": "UPDATE state SET bulk = :on WHERE id = 0",
    "fill_pinned": """UPDATE state SET pinned_files = (SELECT count(*) FROM files WHERE pinned = 1)
                       WHERE id = 0""",
}, view={"files": "files f", "cached": "f.cached", "pinned": "f.pinned",
         "cached_rows": "files WHERE cached = 1", "node_rows": "files WHERE cached = 1 OR pinned = 1",
         "state": "state", "mine": "id = 0", "shared": "state",
         # the schema's triggers set holders the same way
         "holders": """(SELECT json_group_array(host) FROM (
                            SELECT host FROM uploads WHERE hash = files.hash AND url IS NOT NULL
                             ORDER BY host))""",
         "members": "json_each(k.holders) m"},
   list_in="IN (SELECT value FROM json_each(:{}))", length="json_array_length(:{})")

_LOAD = (
    "CREATE TEMP TABLE IF NOT EXISTS load_files (hash TEXT PRIMARY KEY, name TEXT, size INTEGER, "
    "datetime INTEGER, spread_k INTEGER, spread_n INTEGER) WITHOUT ROWID",
    "CREATE TEMP TABLE IF NOT EXISTS load_uploads (hash TEXT, host TEXT, url TEXT, error TEXT, "
    "encrypted INTEGER, PRIMARY KEY (hash, host)) WITHOUT ROWID",
    "CREATE TEMP TABLE IF NOT EXISTS load_shares (hash TEXT, idx INTEGER, host TEXT, url TEXT, error TEXT, "
    "digest TEXT, size INTEGER, encrypted INTEGER, PRIMARY KEY (hash, idx)) WITHOUT ROWID",
    "CREATE TEMP TABLE IF NOT EXISTS load_changed (hash TEXT PRIMARY KEY, added INTEGER) WITHOUT ROWID",
    *(f"DELETE FROM {table}" for table in ("load_files", "load_uploads", "load_shares", "load_changed")),
)


class SQLiteCatalog(SQLCatalog):
    """The SQLite catalog of one node.  Safe to share between threads."""

    Q = _SQL

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise CatalogError(f"cannot create catalog {self.path}: no directory {self.path.parent}")
        self._open_connections()
        try:
            self._migrate(self._db)
        except sqlite3.Error as exc:
            self.close()
            raise CatalogError(f"cannot use catalog {self.path}: {exc}") from exc

    def __str__(self) -> str:
        return str(self.path)

    # -- connections and transactions -------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
        return conn

    def _reader(self) -> sqlite3.Connection:
        return self._db

    def _lookup(self, key: str, digest: str) -> Any:
        """SQLCatalog's, straight on this thread's connection and bound by position,
        SQLite's fastest (its errors pass as they are, as for every statement here):
        the lookups every command makes."""
        return self._db.execute(_BY_POSITION[key], (digest,)).fetchone()

    def _connect(self) -> sqlite3.Connection:
        self._check_open()
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,  # close() may close it from another thread
            )
            for pragma in PRAGMAS:
                conn.execute(pragma)
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot open catalog {self.path}: {exc}") from exc
        self._register(conn)
        return conn

    @contextmanager
    def _transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken at once (``BEGIN IMMEDIATE``) so it queues safely.

        ``durable=False`` is for records that may be lost to a power cut without
        harm (an access time, a host's health, a host's answer that ``sync``
        would find again): the commit then skips its fsync and holds the write
        lock far shorter.  The next durable commit makes it durable too.
        """
        db = self._db
        if not durable:
            db.execute("PRAGMA synchronous = NORMAL")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            if not durable:
                db.execute("PRAGMA synchronous = FULL")

    def _write(self, body: Callable[[Any], T], *, node: bool = False, shared: bool = False,
               durable: bool = True, nodes_of: str | None = None) -> T:
        """``body`` in one write transaction (which locks the whole catalog: no lock to name)."""
        with self._transaction(durable) as db:
            return body(db)

    def _list(self, values: Sequence[str]) -> str:
        """A list of names as one JSON parameter (read back in SQL with json_each)."""
        return json.dumps(list(values))

    def _load(self, tx: Any, loaded: list[FileRecord], spreads: bool) -> None:
        for statement in _LOAD:
            tx.execute(statement)
        for table, rows in self._load_rows(loaded).items():
            if spreads or table != "load_shares":
                marks = ", ".join("?" * {"load_files": 6, "load_uploads": 5, "load_shares": 8}[table])
                tx.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)

    # -- schema ---------------------------------------------------------------------

    def _migrate(self, db: sqlite3.Connection) -> None:
        with self._transaction():
            version = db.execute("PRAGMA user_version").fetchone()[0]
            self._check_version(version, SCHEMA_VERSION)
            if version == 0:
                tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if tables:
                    raise CatalogError(f"{self.path} is an SQLite file, but not a cloudmanager catalog")
                self._run_script(db, schema_text())
                return
            while version < SCHEMA_VERSION:
                for step in _MIGRATIONS[version]:
                    if step == "@schema":
                        self._run_script(db, schema_text())
                    elif step == "@counts":
                        self._fill_counts(db)
                    else:
                        db.execute(step)
                version += 1
                db.execute(f"PRAGMA user_version = {int(version)}")

    @staticmethod
    def _run_script(db: sqlite3.Connection, script: str) -> None:
        for statement in _statements(script):
            db.execute(statement)


#: The lookups of one file (exists, is_cached, entry) with their one parameter bound by position.
_BY_POSITION = {key: SQLiteCatalog.Q[key].replace(":hash", "?") for key in ("exists", "is_cached", "entry")}
