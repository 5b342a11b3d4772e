"""The PostgreSQL catalog: one catalog shared by a fleet of nodes.  The flow is
SQLCatalog's (sql.py); here is what PostgreSQL does its own way: connecting, the
transaction and its locks, the statements on the schema's shape (schema_pg.sql),
the bulk load of a merge (COPY) and the migrations.

Files, host entries, shares, host health and transfers are shared; each node's
cache state (cached, pinned, LRU order, running totals, sync cursors) is kept
under its node id, so node A caching a file does not make it cached on node B.

Connections: psycopg 3, one connection per thread, in autocommit mode: a read
is one prepared statement and one round trip, no transaction around it.
Writes run in explicit transactions that take their locks first, always in one
order, so that writers queue instead of deadlocking:

1. ``node_state`` rows of the nodes whose cache state changes (their own
   node's, or, for ``forget``, every node caching the file, in node order):
   two processes of one node never over-fill its cache;
2. the ``catalog_state`` row, for a change to shared records: it holds the
   change sequence, so numbers are given and committed in order, and a reader
   paging by sequence number never skips a change;
3. then the rows themselves.

A transaction that still fails on a serialization failure or a deadlock (or a
file forgotten under it) is run again, a few times.  Running totals and
sequence numbers are kept by the triggers of schema_pg.sql.  psycopg's errors
become CatalogError, with the URL's password never shown.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg.rows import TupleRow

from ..records import FileRecord
from .base import CatalogError
from .location import password_of, redact
from .sql import PAGE, SQLCatalog, _Retry, dialect, lru

#: The schema version this code reads and writes (the table ``schema_version``).
SCHEMA_VERSION = 5

#: Steps from each older version to the next.  "@schema" applies schema_pg.sql,
#: whose statements are all idempotent; "@counts" sets the running counts from the
#: rows (SQLCatalog._fill_counts).  PostgreSQL catalogs start at version 3, the
#: logical schema of SQLite's version 3; version 5 is that of SQLite's version 6.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 3 -> 4: encrypted copies, and erasure-coded shares of spread files.
    3: (
        "ALTER TABLE uploads ADD COLUMN IF NOT EXISTS encrypted boolean NOT NULL DEFAULT false",
        "ALTER TABLE files ADD COLUMN IF NOT EXISTS spread_k integer",
        "ALTER TABLE files ADD COLUMN IF NOT EXISTS spread_n integer",
        """ALTER TABLE files ADD CONSTRAINT files_check CHECK ((spread_k IS NULL) = (spread_n IS NULL)
               AND (spread_k IS NULL OR spread_k BETWEEN 1 AND spread_n))""",
        "@schema",
    ),
    # 4 -> 5: running counts of files, of every node's pinned files and of the files
    # each set of hosts holds, so that counts() reads no file.
    4: (
        """ALTER TABLE files ADD COLUMN IF NOT EXISTS holders text[] COLLATE "C" NOT NULL DEFAULT '{}'""",
        "ALTER TABLE catalog_state ADD COLUMN IF NOT EXISTS files bigint NOT NULL DEFAULT 0",
        "ALTER TABLE node_state ADD COLUMN IF NOT EXISTS pinned_files bigint NOT NULL DEFAULT 0",
        "@schema",
        "@counts",
    ),
}

#: Transactions failing with these are run again (at most RETRIES times in all).
RETRIES = 8
#: The advisory lock key under which a schema is created or migrated ("cmcatalo").
_SCHEMA_LOCK = 0x636D_6361_7461_6C6F

Cursor = psycopg.Cursor[TupleRow]
T = TypeVar("T")

_RETRYABLE = (pgerrors.SerializationFailure, pgerrors.DeadlockDetected, pgerrors.ForeignKeyViolation, _Retry)

_TICK = "WITH tick AS (UPDATE node_state SET clock = clock + 1 WHERE node = :node RETURNING clock)"

#: The statements on PostgreSQL's shape of the schema (the rest are COMMON, in sql.py).
_SQL = dialect({
    **lru(source="cache c JOIN files f ON f.hash = c.hash", key="c.hash", size="c.size", order="c.access",
          evictable="c.node = :node AND c.cached AND NOT c.pinned AND f.copies > 0"),  # cache_lru's
    "schema_version": "SELECT version FROM schema_version WHERE id = 0",
    "lock_node": "SELECT cached_bytes FROM node_state WHERE node = :node FOR UPDATE",
    "lock_nodes_of": """SELECT node FROM node_state WHERE node IN (SELECT node FROM cache WHERE hash = :hash)
                         ORDER BY node FOR UPDATE""",
    "lock_shared": "SELECT seq FROM catalog_state WHERE id = 0 FOR UPDATE",
    "is_cached": "SELECT cached FROM cache WHERE node = :node AND hash = :hash",
    "missing_copies": """SELECT hash, host FROM uploads WHERE error IS NOT NULL AND host IN LIST(:names)
                         UNION
                         SELECT f.hash, h.name COLLATE "C"
                           FROM files f CROSS JOIN unnest(:names::text[]) AS h (name)
                          WHERE f.copies = 0 AND f.spread_k IS NULL
                            AND NOT EXISTS (SELECT 1 FROM uploads u
                                             WHERE u.hash = f.hash AND u.host = h.name)
                         ORDER BY 1, 2""",
    "admit_state": """SELECT n.cached_bytes, c.cached, f.size FROM node_state n
                        LEFT JOIN files f ON f.hash = :hash
                        LEFT JOIN cache c ON c.node = n.node AND c.hash = :hash
                       WHERE n.node = :node FOR UPDATE OF n""",
    "touch": f"""{_TICK} UPDATE cache SET access = tick.clock FROM tick
                  WHERE cache.node = :node AND cache.hash = :hash""",
    "admit": f"""{_TICK} INSERT INTO cache (node, hash, size, cached, access)
                 SELECT :node, f.hash, f.size, true, tick.clock FROM files f, tick WHERE f.hash = :hash
                 ON CONFLICT (node, hash) DO UPDATE SET cached = true, access = excluded.access""",
    "uncount": """UPDATE cache SET cached = false WHERE node = :node AND hash IN LIST(:hashes) AND cached
                  RETURNING hash""",
    "set_pinned": """INSERT INTO cache (node, hash, size, pinned) SELECT :node, hash, size, :pinned FROM files
                      WHERE hash = :hash ON CONFLICT (node, hash) DO UPDATE SET pinned = excluded.pinned""",
    "file_held": "SELECT 1 FROM files WHERE hash = :hash FOR SHARE",
    "peer_cursors": "SELECT pulled, pushed FROM peers WHERE node = :node AND url = :url",
    "set_peer_cursor": """INSERT INTO peers (node, url, pulled, pushed)
                          VALUES (:node, :url, coalesce(:pulled::bigint, 0), coalesce(:pushed::bigint, 0))
                          ON CONFLICT (node, url) DO UPDATE
                          SET pulled = coalesce(:pulled::bigint, peers.pulled),
                              pushed = coalesce(:pushed::bigint, peers.pushed)""",
    "bulk": "SELECT set_config('cloudmanager.bulk', CASE WHEN :on THEN 'on' ELSE 'off' END, true)",
    "fill_pinned": """UPDATE node_state n SET pinned_files = (SELECT count(*) FROM cache c
                                                                WHERE c.node = n.node AND c.pinned)""",
}, view={"files": "files f LEFT JOIN cache c ON c.node = :node AND c.hash = f.hash",
         "cached": "coalesce(c.cached, false)", "pinned": "coalesce(c.pinned, false)",
         "cached_rows": "cache WHERE node = :node AND cached", "node_rows": "cache WHERE node = :node",
         "state": "node_state", "mine": "node = :node", "shared": "catalog_state",
         # cm_copies_change (schema_pg.sql) sets holders the same way
         "holders": """array(SELECT host FROM uploads WHERE hash = files.hash AND url IS NOT NULL
                              ORDER BY host)""",
         "members": "unnest(k.holders) AS m (value)"},
   list_in="= ANY(:{}::text[])", length="cardinality(:{}::text[])", param="%({})s")

_LOAD = """CREATE TEMP TABLE load_files (hash text COLLATE "C" PRIMARY KEY, name text, size bigint,
               datetime bigint, spread_k integer, spread_n integer) ON COMMIT DROP;
           CREATE TEMP TABLE load_uploads (hash text COLLATE "C", host text COLLATE "C", url text,
               error text, encrypted boolean, PRIMARY KEY (hash, host)) ON COMMIT DROP;
           CREATE TEMP TABLE load_shares (hash text COLLATE "C", idx integer, host text COLLATE "C",
               url text, error text, digest text, size bigint, encrypted boolean,
               PRIMARY KEY (hash, idx)) ON COMMIT DROP;
           CREATE TEMP TABLE load_changed (hash text COLLATE "C" PRIMARY KEY, added boolean) ON COMMIT DROP"""


def schema_text() -> str:
    """The text of schema_pg.sql shipped with the package."""
    return resources.files("cloudmanager").joinpath("schema_pg.sql").read_text(encoding="utf-8")


class PostgresCatalog(SQLCatalog):
    """The catalog on a PostgreSQL server, as node ``node`` sees it.  Safe to share
    between threads; any number of processes and nodes may open it at once.

    ``node=None`` opens it for administration only (the schema is created or
    migrated, no node is registered): the cache state methods are not for use.
    """

    Q = _SQL
    _errors = (psycopg.Error,)

    def __init__(self, url: str, *, node: str | None):
        self.url = url
        self.node = self._node = node
        #: The URL as it may be shown (no password).
        self.shown = redact(url)
        self._secret = password_of(url)
        self._open_connections()
        try:
            self._migrate()
        except psycopg.Error as exc:
            self.close()
            raise self._failure(exc) from None
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresCatalog({self.shown!r}, node={self.node!r})"

    def __str__(self) -> str:
        return self.shown

    # -- connections, errors and transactions -----------------------------------------

    def _connect(self) -> psycopg.Connection[TupleRow]:
        self._check_open()
        try:
            conn = psycopg.connect(self.url, autocommit=True)
        except psycopg.Error as exc:
            raise CatalogError(f"cannot connect to catalog {self.shown}: {self._scrub(str(exc))}") from None
        self._register(conn)
        self._local.cursor = conn.cursor()
        return conn

    @property
    def _conn(self) -> psycopg.Connection[TupleRow]:
        conn: psycopg.Connection[TupleRow] | None = getattr(self._local, "conn", None)
        return self._connect() if conn is None else conn

    def _reader(self) -> Cursor:
        """This thread's own cursor, in autocommit: a read is one round trip."""
        try:
            cursor: Cursor = self._local.cursor
        except AttributeError:
            self._connect()
            cursor = self._local.cursor
        return cursor

    def _exec(self, tx: Any, query: str, params: dict[str, Any]) -> Any:
        return tx.execute(query, params, prepare=True)

    def _list(self, values: Sequence[str]) -> list[str]:
        return list(values)

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _failure(self, exc: Exception) -> CatalogError:
        """The CatalogError for a psycopg error; a broken connection is dropped (the
        thread's next call connects again)."""
        conn: psycopg.Connection[TupleRow] | None = getattr(self._local, "conn", None)
        if conn is not None and (conn.broken or conn.closed):
            del self._local.conn, self._local.cursor  # this thread's only
            self._unregister(conn)
        message = self._scrub(str(exc).strip()) or type(exc).__name__
        return CatalogError(f"catalog {self.shown}: {message}")

    def _write(self, body: Callable[[Any], T], *, node: bool = False, shared: bool = False,
               durable: bool = True, nodes_of: str | None = None) -> T:
        """Run ``body`` in a transaction, again if a concurrent writer made it fail.

        Its locks are taken first, in the order above: ``nodes_of``, the node_state
        rows of every node caching that file; ``node``, this node's (its cache state
        changes); ``shared``, the change sequence (shared records change).
        ``durable=False`` is for records that may be lost to a power cut without
        harm (an access time, a host's health): the commit does not wait for the disk.
        """
        conn = self._conn
        for attempt in range(1, RETRIES + 1):
            try:
                with conn.transaction():
                    cur = conn.cursor()
                    if not durable:
                        cur.execute("SET LOCAL synchronous_commit TO OFF")
                    locks = {"lock_nodes_of": nodes_of, "lock_node": node, "lock_shared": shared}
                    for lock in (name for name, wanted in locks.items() if wanted):
                        self._run(cur, lock, hash=nodes_of)
                    return body(cur)
            except _RETRYABLE as exc:
                if attempt == RETRIES:
                    if isinstance(exc, _Retry):
                        raise CatalogError(f"catalog {self.shown}: {exc}") from None
                    raise
                time.sleep(random.uniform(0, 0.005 * attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _admit_new(self, tx: Any, record: FileRecord) -> None:
        """A new record: the change sequence is locked (after the node), the file added."""
        self._run(tx, "lock_shared")
        self._run(tx, "add", hash=record.hash, name=record.name, size=record.size, datetime=record.datetime)

    def _load(self, tx: Any, loaded: list[FileRecord], spreads: bool) -> None:
        tx.execute(_LOAD)
        for table, rows in self._load_rows(loaded).items():
            with tx.copy(f"COPY {table} FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        if len(loaded) >= PAGE:  # plans for large loads
            tx.execute("ANALYZE load_files; ANALYZE load_uploads; ANALYZE load_shares")

    def cache_owner(self) -> str | None:
        """None: each node keeps a cache state of its own, under its node id."""
        return None

    def set_cache_owner(self, cache: str) -> None:
        """Nothing to record: each node keeps a cache state of its own."""

    # -- schema ---------------------------------------------------------------------

    def _migrate(self) -> None:
        """Create the schema in an empty database, or bring an older one up to date;
        one process at a time (an advisory lock), so fresh nodes may start together."""
        conn = self._conn
        with conn.transaction():
            cur = conn.cursor()
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            found = cur.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
            row = cur.execute("SELECT version FROM schema_version WHERE id = 0").fetchone() \
                if found and found[0] else None
            version = int(row[0]) if row else 0
            self._check_version(version, SCHEMA_VERSION)
            if version == 0:
                tables = cur.execute(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()").fetchone()
                if tables and tables[0]:
                    raise CatalogError(f"{self.shown} is a PostgreSQL database, but not a cloudmanager "
                                       "catalog (it has other tables)")
                cur.execute(schema_text().encode())
                cur.execute("INSERT INTO schema_version (id, version) VALUES (0, %s)", (SCHEMA_VERSION,))
                version = SCHEMA_VERSION
            while version < SCHEMA_VERSION:
                for step in _MIGRATIONS[version]:
                    if step == "@counts":
                        self._fill_counts(cur)
                    else:
                        cur.execute((schema_text() if step == "@schema" else step).encode())
                version += 1
                cur.execute("UPDATE schema_version SET version = %s WHERE id = 0", (version,))
            if self.node:
                cur.execute("INSERT INTO node_state (node) VALUES (%s) ON CONFLICT DO NOTHING", (self.node,))
