"""The PostgreSQL catalog: one catalog shared by a fleet of nodes.  Every PostgreSQL
statement lives here (and in schema_pg.sql).

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

import functools
import inspect
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import resources
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg.rows import TupleRow

from ..records import CacheEntry, FileRecord, Share, Upload
from .base import (
    RECORD_COLUMNS,
    SHARE_COLUMNS,
    Admission,
    CatalogBase,
    CatalogError,
    HostHealth,
    Listed,
    MergeResult,
    group_records,
    month,
    union,
)
from .location import password_of, redact

#: The schema version this code reads and writes (the table ``schema_version``).
SCHEMA_VERSION = 4

#: Steps from each older version to the next.  "@schema" applies schema_pg.sql,
#: whose statements are all idempotent.  PostgreSQL catalogs start at version 3,
#: the logical schema of SQLite's version 3.
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
}

#: Transactions failing with these are run again (at most RETRIES times in all).
RETRIES = 8
#: The advisory lock key under which a schema is created or migrated ("cmcatalo").
_SCHEMA_LOCK = 0x636D_6361_7461_6C6F
#: Rows read per round trip where results are streamed (records, listing) or walked (eviction).
PAGE = 1000
VICTIM_BATCH = 64

Cursor = psycopg.Cursor[TupleRow]
P = ParamSpec("P")
T = TypeVar("T")


class _Retry(Exception):
    """The transaction met a concurrent change it cannot work around: run it again."""


_RETRYABLE = (pgerrors.SerializationFailure, pgerrors.DeadlockDetected, pgerrors.ForeignKeyViolation, _Retry)

# -- statements used in several places -------------------------------------------------

_LOCK_NODE = "SELECT cached_bytes FROM node_state WHERE node = %s FOR UPDATE"
_LOCK_SHARED = "SELECT seq FROM catalog_state WHERE id = 0 FOR UPDATE"
_SET_UPLOAD = """
    INSERT INTO uploads (hash, host, url, error, time, encrypted) VALUES (%s, %s, %s, %s, %s, %s)
    ON CONFLICT (hash, host) DO UPDATE
    SET url = excluded.url, error = excluded.error, time = excluded.time, encrypted = excluded.encrypted"""
_SET_UPLOAD_KEEP_URL = _SET_UPLOAD + "\n    WHERE excluded.url IS NOT NULL OR uploads.url IS NULL"
_SET_SHARE = """
    INSERT INTO shares (hash, idx, host, url, error, digest, size, encrypted, time)
    SELECT %(hash)s, %(idx)s, %(host)s, %(url)s, %(error)s, %(digest)s, %(size)s, %(encrypted)s, %(time)s
      FROM files WHERE hash = %(hash)s AND spread_k = %(k)s AND spread_n = %(n)s
    ON CONFLICT (hash, idx) DO UPDATE
    SET host = excluded.host, url = excluded.url, error = excluded.error, digest = excluded.digest,
        size = excluded.size, encrypted = excluded.encrypted, time = excluded.time"""
_SET_SHARE_KEEP_URL = _SET_SHARE + "\n    WHERE excluded.url IS NOT NULL OR shares.url IS NULL"
_EVICTABLE = """
    SELECT c.hash, c.size, c.access FROM cache c JOIN files f ON f.hash = c.hash
     WHERE c.node = %s AND c.cached AND NOT c.pinned AND f.copies > 0 AND c.access > %s
     ORDER BY c.access LIMIT %s"""


def schema_text() -> str:
    """The text of schema_pg.sql shipped with the package."""
    return resources.files("cloudmanager").joinpath("schema_pg.sql").read_text(encoding="utf-8")


def _guarded(method: Callable[P, T]) -> Callable[P, T]:
    """psycopg's errors raised by ``method`` (a generator's too) become CatalogError."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def stream(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                yield from method(*args, **kwargs)
            except psycopg.Error as exc:
                raise args[0]._failure(exc) from None  # type: ignore[attr-defined]

        return stream

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except psycopg.Error as exc:
            raise args[0]._failure(exc) from None  # type: ignore[attr-defined]

    return call


class PostgresCatalog(CatalogBase):
    """The catalog on a PostgreSQL server, as node ``node`` sees it.  Safe to share
    between threads; any number of processes and nodes may open it at once.

    ``node=None`` opens it for administration only (the schema is created or
    migrated, no node is registered): the cache state methods are not for use.
    """

    def __init__(self, url: str, *, node: str | None):
        self.url = url
        self.node = node
        #: The URL as it may be shown (no password).
        self.shown = redact(url)
        self._secret = password_of(url)
        self._local = threading.local()
        self._connections: list[psycopg.Connection[TupleRow]] = []
        self._guard = threading.Lock()
        self._closed = False
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

    # -- connections, errors and transactions -----------------------------------------

    def _connect(self) -> psycopg.Connection[TupleRow]:
        if self._closed:
            raise CatalogError("the catalog is closed")
        try:
            conn = psycopg.connect(self.url, autocommit=True)
        except psycopg.Error as exc:
            raise CatalogError(f"cannot connect to catalog {self.shown}: {self._scrub(str(exc))}") from None
        self._local.conn = conn
        self._local.cursor = conn.cursor()
        with self._guard:
            self._connections.append(conn)
        return conn

    @property
    def _conn(self) -> psycopg.Connection[TupleRow]:
        conn: psycopg.Connection[TupleRow] | None = getattr(self._local, "conn", None)
        return self._connect() if conn is None else conn

    def _one(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> TupleRow | None:
        """The first row of a prepared query, on this thread's own cursor."""
        try:
            cursor: Cursor = self._local.cursor
        except AttributeError:
            self._connect()
            cursor = self._local.cursor
        return cursor.execute(query, params, prepare=True).fetchone()

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _failure(self, exc: psycopg.Error) -> CatalogError:
        """The CatalogError for a psycopg error; a broken connection is dropped (the
        thread's next call connects again)."""
        conn: psycopg.Connection[TupleRow] | None = getattr(self._local, "conn", None)
        if conn is not None and (conn.broken or conn.closed):
            del self._local.conn, self._local.cursor  # this thread's only
            with self._guard:
                if conn in self._connections:
                    self._connections.remove(conn)
            conn.close()
        message = self._scrub(str(exc).strip()) or type(exc).__name__
        return CatalogError(f"catalog {self.shown}: {message}")

    def _write(self, body: Callable[[Cursor], T], *, node: bool = False, shared: bool = False,
               durable: bool = True) -> T:
        """Run ``body`` in a transaction, again if a concurrent writer made it fail.

        ``node``: this node's cache state changes (its node_state row is locked
        first); ``shared``: shared records change (the change sequence is locked
        next).  ``durable=False`` is for records that may be lost to a power cut
        without harm (an access time, a host's health): the commit does not wait
        for the disk.
        """
        conn = self._conn
        for attempt in range(1, RETRIES + 1):
            try:
                with conn.transaction():
                    cur = conn.cursor()
                    if not durable:
                        cur.execute("SET LOCAL synchronous_commit TO OFF")
                    if node:
                        cur.execute(_LOCK_NODE, (self.node,), prepare=True)
                    if shared:
                        cur.execute(_LOCK_SHARED, prepare=True)
                    return body(cur)
            except _RETRYABLE as exc:
                if attempt == RETRIES:
                    if isinstance(exc, _Retry):
                        raise CatalogError(f"catalog {self.shown}: {exc}") from None
                    raise
                time.sleep(random.uniform(0, 0.005 * attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close every connection opened by any thread."""
        with self._guard:
            self._closed = True
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

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
            if version > SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog {self.shown} has schema version {version}; this cloudmanager "
                    f"knows up to {SCHEMA_VERSION}: upgrade cloudmanager"
                )
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
                    cur.execute((schema_text() if step == "@schema" else step).encode())
                version += 1
                cur.execute("UPDATE schema_version SET version = %s WHERE id = 0", (version,))
            if self.node:
                cur.execute("INSERT INTO node_state (node) VALUES (%s) ON CONFLICT DO NOTHING", (self.node,))

    @_guarded
    def schema_version(self) -> int:
        """The schema version of the open catalog."""
        row = self._one("SELECT version FROM schema_version WHERE id = 0")
        return int(row[0]) if row else 0

    # -- reads ----------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        """True when the file is in the catalog."""
        try:
            return self._one("SELECT 1 FROM files WHERE hash = %s", (digest,)) is not None
        except psycopg.Error as exc:
            raise self._failure(exc) from None

    def is_cached(self, digest: str) -> bool:
        """True when the catalog counts the file as cached on this node."""
        try:
            row = self._one("SELECT cached FROM cache WHERE node = %s AND hash = %s", (self.node, digest))
        except psycopg.Error as exc:
            raise self._failure(exc) from None
        return bool(row and row[0])

    @_guarded
    def entry(self, digest: str) -> CacheEntry | None:
        """The file's state on this node and its copies, or None when unknown."""
        row = self._one(
            """SELECT f.hash, f.name, f.size, coalesce(c.cached, false), coalesce(c.pinned, false), f.copies
                 FROM files f LEFT JOIN cache c ON c.node = %s AND c.hash = f.hash
                WHERE f.hash = %s""", (self.node, digest))
        if row is None:
            return None
        return CacheEntry(row[0], row[1], row[2], bool(row[3]), bool(row[4]), row[5])

    @_guarded
    def record(self, digest: str) -> FileRecord | None:
        """The exchangeable record of one file (name, size, time, uploads), or None."""
        return next(iter(self._records_of([digest])), None)

    def _records_of(self, digests: Sequence[str]) -> list[FileRecord]:
        """The records of these files (those known), in hash order."""
        cur = self._conn.cursor()
        rows = cur.execute(
            f"""SELECT {RECORD_COLUMNS} FROM files f LEFT JOIN uploads u ON u.hash = f.hash
                WHERE f.hash = ANY(%s::text[]) ORDER BY f.hash, u.host""", (list(digests),),
            prepare=True).fetchall()
        shares = cur.execute(
            f"SELECT {SHARE_COLUMNS} FROM shares WHERE hash = ANY(%s::text[]) ORDER BY hash, idx",
            (list(digests),), prepare=True).fetchall()
        return list(group_records(rows, shares))

    @_guarded
    def records(self) -> Iterator[FileRecord]:
        """Every record, in hash order, read a page at a time."""
        cur = self._conn.cursor()
        after = ""
        while True:
            rows = cur.execute(
                f"""SELECT {RECORD_COLUMNS}
                      FROM (SELECT * FROM files WHERE hash > %s ORDER BY hash LIMIT %s) f
                      LEFT JOIN uploads u ON u.hash = f.hash
                     ORDER BY f.hash, u.host""", (after, PAGE), prepare=True).fetchall()
            if not rows:
                return
            shares = cur.execute(
                f"""SELECT {SHARE_COLUMNS} FROM shares WHERE hash > %s AND hash <= %s
                     ORDER BY hash, idx""", (after, rows[-1][0]), prepare=True).fetchall()
            after = rows[-1][0]
            yield from group_records(rows, shares)

    def usage(self) -> tuple[int, int]:
        """(cached bytes, cached files) of this node, from the running totals."""
        try:
            row = self._one("SELECT cached_bytes, cached_files FROM node_state WHERE node = %s", (self.node,))
        except psycopg.Error as exc:
            raise self._failure(exc) from None
        return (int(row[0]), int(row[1])) if row else (0, 0)

    @_guarded
    def cached_sizes(self) -> dict[str, int]:
        """Every file the catalog counts as cached on this node, with its size."""
        cur = self._conn.cursor()
        return dict(cur.execute("SELECT hash, size FROM cache WHERE node = %s AND cached", (self.node,)))

    @_guarded
    def count(self) -> int:
        """How many files the catalog knows."""
        row = self._one("SELECT count(*) FROM files")
        return int(row[0]) if row else 0

    @_guarded
    def recent(self, limit: int) -> list[str]:
        """The ``limit`` files first known most lately, newest first."""
        cur = self._conn.cursor()
        return [r[0] for r in cur.execute(
            "SELECT hash FROM files ORDER BY datetime DESC, hash DESC LIMIT %s", (limit,))]

    @_guarded
    def host_health(self, names: Iterable[str]) -> dict[str, HostHealth]:
        """Health of the named hosts (a host never used is perfectly healthy)."""
        wanted = list(names)
        cur = self._conn.cursor()
        found = {row[0]: HostHealth(*row) for row in cur.execute(
            """SELECT name, failures, last_ok, last_error, last_error_time FROM hosts
                WHERE name = ANY(%s::text[])""", (wanted,), prepare=True)}
        return {name: found.get(name, HostHealth(name)) for name in wanted}

    @_guarded
    def missing_copies(self, hosts: Sequence[str]) -> list[tuple[str, str]]:
        """(hash, host) pairs a sync should retry: an error recorded for one of
        ``hosts``, or a file no host holds yet that ``host`` has no entry for."""
        cur = self._conn.cursor()
        rows = cur.execute(
            """SELECT hash, host FROM uploads
                WHERE error IS NOT NULL AND host = ANY(%(names)s::text[])
               UNION
               SELECT f.hash, h.name COLLATE "C"
                 FROM files f CROSS JOIN unnest(%(names)s::text[]) AS h (name)
                WHERE f.copies = 0 AND f.spread_k IS NULL
                  AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.hash = f.hash AND u.host = h.name)
               ORDER BY 1, 2""", {"names": list(hosts)})
        return [(str(a), str(b)) for a, b in rows]

    # -- this node's cache state ----------------------------------------------------

    @_guarded
    def admit(self, record: FileRecord, capacity: int) -> Admission:
        """Count a file as cached on this node if it fits, evicting least recently used
        files (see CatalogBase.admit).  Locks this node's state first."""

        def body(cur: Cursor) -> Admission:
            state = cur.execute(
                """SELECT n.cached_bytes, c.cached, f.size FROM node_state n
                     LEFT JOIN files f ON f.hash = %(hash)s
                     LEFT JOIN cache c ON c.node = n.node AND c.hash = %(hash)s
                    WHERE n.node = %(node)s FOR UPDATE OF n""",
                {"hash": record.hash, "node": self.node}, prepare=True).fetchone()
            if state is None:
                raise CatalogError(f"catalog {self.shown}: node {self.node!r} is not registered")
            used, cached, known_size = state
            if cached:
                self._touch(cur, record.hash)
                return Admission(True, already=True)
            size = record.size if known_size is None else int(known_size)
            victims = self._choose_victims(cur, int(used) + size - capacity)
            if victims is None:
                return Admission(False)
            self._uncount(cur, victims)
            if known_size is None:
                cur.execute(_LOCK_SHARED, prepare=True)  # a new record: the sequence, after the node
                cur.execute(
                    """INSERT INTO files (hash, name, size, datetime) VALUES (%s, %s, %s, %s)
                       ON CONFLICT (hash) DO NOTHING""",
                    (record.hash, record.name, record.size, record.datetime), prepare=True)
            cur.execute(
                """WITH tick AS (UPDATE node_state SET clock = clock + 1 WHERE node = %(node)s
                                 RETURNING clock)
                   INSERT INTO cache (node, hash, size, cached, access)
                   SELECT %(node)s, f.hash, f.size, true, tick.clock FROM files f, tick
                    WHERE f.hash = %(hash)s
                   ON CONFLICT (node, hash) DO UPDATE SET cached = true, access = excluded.access""",
                {"node": self.node, "hash": record.hash}, prepare=True)
            if cur.rowcount != 1:
                raise _Retry(f"{record.hash} was forgotten while it was being cached")
            return Admission(True, tuple(victims))

        return self._write(body)

    def _choose_victims(self, cur: Cursor, need: int) -> list[str] | None:
        """Least recently used evictable files freeing ``need`` bytes (None: impossible)."""
        victims: list[str] = []
        if need <= 0:
            return victims
        freed, after = 0, -1
        while True:
            rows = cur.execute(_EVICTABLE, (self.node, after, VICTIM_BATCH), prepare=True).fetchall()
            for digest, size, _ in rows:
                victims.append(digest)
                freed += size
                if freed >= need:
                    return victims
            if len(rows) < VICTIM_BATCH:
                return None
            after = rows[-1][2]

    def _uncount(self, cur: Cursor, digests: Sequence[str]) -> list[str]:
        """Count these files as not cached on this node; those that were, as given."""
        if not digests:
            return []
        changed = {row[0] for row in cur.execute(
            """UPDATE cache SET cached = false WHERE node = %s AND hash = ANY(%s::text[]) AND cached
               RETURNING hash""", (self.node, list(digests)), prepare=True)}
        return [d for d in dict.fromkeys(digests) if d in changed]

    @_guarded
    def shrink_to(self, capacity: int) -> list[str]:
        """Uncount least recently used evictable files until usage fits ``capacity``."""

        def body(cur: Cursor) -> list[str]:
            used, _ = self._totals(cur)
            if used <= capacity:
                return []
            victims = self._choose_victims(cur, used - capacity)
            if victims is None:  # cannot fit: free what may be freed
                victims = [row[0] for row in cur.execute(_EVICTABLE, (self.node, -1, None))]
            return self._uncount(cur, victims)

        return self._write(body, node=True)

    def _totals(self, cur: Cursor) -> tuple[int, int]:
        row = cur.execute("SELECT cached_bytes, cached_files FROM node_state WHERE node = %s",
                          (self.node,), prepare=True).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def _touch(self, cur: Cursor, digest: str) -> None:
        cur.execute(
            """WITH tick AS (UPDATE node_state SET clock = clock + 1 WHERE node = %(node)s RETURNING clock)
               UPDATE cache SET access = tick.clock FROM tick
                WHERE cache.node = %(node)s AND cache.hash = %(hash)s""",
            {"node": self.node, "hash": digest}, prepare=True)

    @_guarded
    def touch(self, digest: str) -> None:
        """Mark a cached file as this node's most recently used."""
        self._write(lambda cur: self._touch(cur, digest), durable=False)

    @_guarded
    def uncache(self, digests: Iterable[str]) -> list[str]:
        """Count these files as no longer cached on this node; returns those that were."""
        wanted = list(digests)
        if not wanted:
            return []
        return self._write(lambda cur: self._uncount(cur, wanted), node=True)

    @_guarded
    def evictable(self, digests: Iterable[str] | None = None) -> list[str]:
        """Of ``digests`` (or all), the files this node may evict, LRU first."""
        cur = self._conn.cursor()
        if digests is None:
            rows = cur.execute(_EVICTABLE, (self.node, -1, None))
        else:
            rows = cur.execute(
                """SELECT c.hash FROM cache c JOIN files f ON f.hash = c.hash
                    WHERE c.node = %s AND c.hash = ANY(%s::text[])
                      AND c.cached AND NOT c.pinned AND f.copies > 0 ORDER BY c.access""",
                (self.node, list(digests)))
        return [row[0] for row in rows]

    @_guarded
    def set_pinned(self, digest: str, pinned: bool) -> bool:
        """Pin (never evict) or unpin a file on this node; False when the file is unknown."""

        def body(cur: Cursor) -> bool:
            cur.execute(
                """INSERT INTO cache (node, hash, size, pinned)
                   SELECT %(node)s, hash, size, %(pinned)s FROM files WHERE hash = %(hash)s
                   ON CONFLICT (node, hash) DO UPDATE SET pinned = excluded.pinned""",
                {"node": self.node, "hash": digest, "pinned": pinned})
            return cur.rowcount > 0

        return self._write(body, node=True)

    def cache_owner(self) -> str | None:
        """None: each node keeps a cache state of its own, under its node id."""
        return None

    def set_cache_owner(self, cache: str) -> None:
        """Nothing to record: each node keeps a cache state of its own."""

    @_guarded
    def recount(self, fix: bool = True) -> bool:
        """Check this node's running totals against its rows (and set them, when ``fix``);
        True when they were wrong."""

        def body(cur: Cursor) -> bool:
            row = cur.execute("SELECT coalesce(sum(size), 0), count(*) FROM cache WHERE node = %s AND cached",
                              (self.node,)).fetchone()
            actual = (int(row[0]), int(row[1])) if row else (0, 0)
            if actual == self._totals(cur):
                return False
            if fix:
                cur.execute("UPDATE node_state SET cached_bytes = %s, cached_files = %s WHERE node = %s",
                            (*actual, self.node))
            return True

        return self._write(body, node=True)

    # -- files and host copies (shared) ---------------------------------------------

    @_guarded
    def add(self, record: FileRecord) -> bool:
        """Insert a file (not cached) with its uploads; False when it was known."""

        def body(cur: Cursor) -> bool:
            cur.execute(
                """INSERT INTO files (hash, name, size, datetime) VALUES (%s, %s, %s, %s)
                   ON CONFLICT (hash) DO NOTHING""",
                (record.hash, record.name, record.size, record.datetime), prepare=True)
            added = cur.rowcount > 0
            for upload in record.uploads:
                self._set_upload(cur, record.hash, upload, keep_url=True)
            if record.spread is not None:
                self._set_shares(cur, record.hash, record.spread, record.shares)
            return added

        return self._write(body, shared=True)

    @_guarded
    def forget(self, digest: str) -> bool:
        """Remove a file, its uploads and shares, and every node's cache state of it."""

        def body(cur: Cursor) -> bool:
            cur.execute(
                """SELECT node FROM node_state WHERE node IN (SELECT node FROM cache WHERE hash = %s)
                    ORDER BY node FOR UPDATE""", (digest,))
            cur.execute(_LOCK_SHARED, prepare=True)
            cur.execute("DELETE FROM files WHERE hash = %s", (digest,))
            return cur.rowcount > 0

        return self._write(body)

    @staticmethod
    def _set_upload(cur: Cursor, digest: str, upload: Upload, *, keep_url: bool) -> None:
        """Upsert one host entry; with ``keep_url`` an error does not replace a URL."""
        cur.execute(_SET_UPLOAD_KEEP_URL if keep_url else _SET_UPLOAD,
                    (digest, upload.host, upload.url, upload.error, int(time.time()), upload.encrypted),
                    prepare=True)

    @staticmethod
    def _set_shares(cur: Cursor, digest: str, spread: tuple[int, int], shares: Iterable[Share], *,
                    keep_url: bool = True) -> None:
        """Record shares of a spread file (the spread is set if the file had none);
        shares of another spread than the file's are left out."""
        cur.execute("UPDATE files SET spread_k = %s, spread_n = %s WHERE hash = %s AND spread_k IS NULL",
                    (spread[0], spread[1], digest))
        now = int(time.time())
        cur.executemany(_SET_SHARE_KEEP_URL if keep_url else _SET_SHARE, [
            {"hash": digest, "idx": share.index, "host": share.host, "url": share.url, "error": share.error,
             "digest": share.digest, "size": share.size, "encrypted": share.encrypted, "time": now,
             "k": spread[0], "n": spread[1]} for share in shares])

    @_guarded
    def record_upload(self, digest: str, upload: Upload, sent: int = 0) -> None:
        """Record one host's result for one file, and the host's health and traffic
        (a failed upload never replaces a URL).  The commit does not wait for the disk."""

        def body(cur: Cursor) -> None:
            self._set_upload(cur, digest, upload, keep_url=True)
            self._note_host(cur, upload.host, upload.error, sent=sent)

        self._write(body, shared=True, durable=False)

    @_guarded
    def record_uploads(self, digest: str, uploads: Sequence[Upload]) -> bool:
        """Record hosts' results for a file, only if the catalog still knows it (False:
        it was forgotten meanwhile, nothing recorded).  A failed upload never replaces
        a URL.  The hosts' health is the caller's to note."""

        def body(cur: Cursor) -> bool:
            # The file's row is locked against a concurrent forget until the commit.
            if cur.execute("SELECT 1 FROM files WHERE hash = %s FOR SHARE", (digest,)).fetchone() is None:
                return False
            for upload in uploads:
                self._set_upload(cur, digest, upload, keep_url=True)
            return True

        return self._write(body, shared=True)

    @_guarded
    def record_fetch(self, host: str, error: str | None, fetched: int = 0, *,
                     digest: str | None = None, lost: bool = False) -> None:
        """Record a download attempt from ``host``; with ``lost``, its copy of ``digest`` is gone."""
        gone = lost and digest is not None

        def body(cur: Cursor) -> None:
            if gone and digest is not None:
                self._set_upload(cur, digest, Upload(host, error=error or "copy lost"), keep_url=False)
            self._note_host(cur, host, error, fetched=fetched)

        self._write(body, shared=gone)

    @_guarded
    def note_host(self, host: str, error: str | None, sent: int = 0, fetched: int = 0) -> None:
        """Record how a host did (error None: success) and the bytes it moved."""
        self._write(lambda cur: self._note_host(cur, host, error, sent=sent, fetched=fetched),
                    durable=False)

    @staticmethod
    def _note_host(cur: Cursor, host: str, error: str | None, sent: int = 0, fetched: int = 0) -> None:
        now = int(time.time())
        if error is None:
            cur.execute(
                """INSERT INTO hosts (name, failures, last_ok) VALUES (%s, 0, %s)
                   ON CONFLICT (name) DO UPDATE SET failures = 0, last_ok = excluded.last_ok""",
                (host, now), prepare=True)
        else:
            cur.execute(
                """INSERT INTO hosts (name, failures, last_error, last_error_time) VALUES (%s, 1, %s, %s)
                   ON CONFLICT (name) DO UPDATE SET failures = hosts.failures + 1,
                       last_error = excluded.last_error, last_error_time = excluded.last_error_time""",
                (host, error, now), prepare=True)
        if sent or fetched:
            cur.execute(
                """INSERT INTO transfers (month, host, sent, fetched) VALUES (%s, %s, %s, %s)
                   ON CONFLICT (month, host) DO UPDATE
                   SET sent = transfers.sent + excluded.sent,
                       fetched = transfers.fetched + excluded.fetched""",
                (month(now), host, sent, fetched), prepare=True)

    @_guarded
    def record_shares(self, digest: str, spread: tuple[int, int], shares: Sequence[Share],
                      sent: int = 0) -> None:
        """Record where a spread file's shares went (and each host's health)."""

        def body(cur: Cursor) -> None:
            self._set_shares(cur, digest, spread, shares)
            for share in shares:
                self._note_host(cur, share.host, share.error, sent=share.size if share.ok else 0)

        self._write(body, shared=True, durable=False)

    @_guarded
    def share_lost(self, digest: str, index: int, error: str, fetched: int = 0) -> None:
        """Record that a share's host does not give it back right (gone, or wrong bytes)."""

        def body(cur: Cursor) -> None:
            row = cur.execute(
                """UPDATE shares SET url = NULL, error = %s, time = %s WHERE hash = %s AND idx = %s
                   RETURNING host""", (error, int(time.time()), digest, index)).fetchone()
            if row is not None:
                self._note_host(cur, row[0], error, fetched=fetched)

        self._write(body, shared=True)

    @_guarded
    def incomplete_spreads(self) -> list[str]:
        """Spread files some of whose N shares no host holds."""
        cur = self._conn.cursor()
        return [r[0] for r in cur.execute(
            """SELECT hash FROM files f WHERE spread_n IS NOT NULL
                  AND (SELECT count(url) FROM shares s WHERE s.hash = f.hash) < spread_n ORDER BY hash""")]

    @_guarded
    def drop_upload(self, digest: str, host: str) -> None:
        """Forget ``host``'s entry for a file (its copy was deleted)."""
        self._write(lambda cur: cur.execute("DELETE FROM uploads WHERE hash = %s AND host = %s",
                                            (digest, host)), shared=True)

    # -- node sync ------------------------------------------------------------------

    @_guarded
    def merge(self, records: Sequence[FileRecord], *, skip_clashes: bool = False) -> MergeResult:
        """Union ``records`` into the catalog in one transaction (see CatalogBase.merge).

        The united records are copied into temporary tables (COPY), then merged
        by a few set-wise statements with the per-row sequence triggers standing
        aside; the changed files get consecutive sequence numbers in hash order."""
        loaded = union(records)
        return self._write(lambda cur: self._merge(cur, loaded, skip_clashes), shared=True)

    def _merge(self, cur: Cursor, loaded: list[FileRecord], skip_clashes: bool) -> MergeResult:
        cur.execute(
            """CREATE TEMP TABLE load_files (hash text COLLATE "C" PRIMARY KEY, name text, size bigint,
                   datetime bigint, spread_k integer, spread_n integer) ON COMMIT DROP;
               CREATE TEMP TABLE load_uploads (hash text COLLATE "C", host text COLLATE "C", url text,
                   error text, encrypted boolean, PRIMARY KEY (hash, host)) ON COMMIT DROP;
               CREATE TEMP TABLE load_shares (hash text COLLATE "C", idx integer, host text COLLATE "C",
                   url text, error text, digest text, size bigint, encrypted boolean,
                   PRIMARY KEY (hash, idx)) ON COMMIT DROP""")
        with cur.copy("COPY load_files FROM STDIN") as copy:
            for r in loaded:
                copy.write_row((r.hash, r.name, r.size, r.datetime, *(r.spread or (None, None))))
        with cur.copy("COPY load_uploads FROM STDIN") as copy:
            for r in loaded:
                for u in r.uploads:
                    copy.write_row((r.hash, u.host, u.url, u.error, u.encrypted))
        with cur.copy("COPY load_shares FROM STDIN") as copy:
            for r in loaded:
                for sh in r.shares:
                    copy.write_row((r.hash, sh.index, sh.host, sh.url, sh.error, sh.digest, sh.size,
                                    sh.encrypted))
        if len(loaded) >= PAGE:  # plans for large loads
            cur.execute("ANALYZE load_files; ANALYZE load_uploads; ANALYZE load_shares")
        clashes = tuple(row[0] for row in cur.execute(
            """SELECT l.hash FROM load_files l JOIN files f ON f.hash = l.hash
                WHERE f.size <> l.size ORDER BY l.hash"""))
        if clashes and not skip_clashes:
            raise ValueError(clashes[0])
        if clashes:
            for table in ("load_files", "load_uploads", "load_shares"):
                cur.execute(f"DELETE FROM {table} WHERE hash = ANY(%s::text[])", (list(clashes),))
        # Shares of a file this catalog knows under another spread are left out.
        cur.execute(
            """DELETE FROM load_shares WHERE hash IN (
                   SELECT l.hash FROM load_files l JOIN files f ON f.hash = l.hash
                    WHERE f.spread_k IS NOT NULL
                      AND (l.spread_k IS NULL OR f.spread_k <> l.spread_k OR f.spread_n <> l.spread_n))""")
        # The files this merge adds or changes (a new host entry, or a URL for an error).
        cur.execute(
            """CREATE TEMP TABLE load_changed ON COMMIT DROP AS
               SELECT l.hash, f.hash IS NULL AS added,
                      row_number() OVER (ORDER BY l.hash) AS n
                 FROM load_files l LEFT JOIN files f ON f.hash = l.hash
                WHERE f.hash IS NULL
                   OR EXISTS (SELECT 1 FROM load_uploads lu
                                LEFT JOIN uploads u ON u.hash = lu.hash AND u.host = lu.host
                               WHERE lu.hash = l.hash
                                 AND (u.hash IS NULL OR (u.url IS NULL AND lu.url IS NOT NULL)))
                   OR EXISTS (SELECT 1 FROM load_shares ls
                                LEFT JOIN shares s ON s.hash = ls.hash AND s.idx = ls.idx
                               WHERE ls.hash = l.hash
                                 AND (s.hash IS NULL OR (s.url IS NULL AND ls.url IS NOT NULL)))""")
        counted = cur.execute(
            "SELECT count(*) FILTER (WHERE added), count(*) FILTER (WHERE NOT added) FROM load_changed"
        ).fetchone()
        added, changed = (int(counted[0]), int(counted[1])) if counted else (0, 0)
        # Bulk mode: the per-row sequence triggers stand aside; copies and seq are set
        # below, in this same transaction, for all the changed files at once.
        cur.execute("SELECT set_config('cloudmanager.bulk', 'on', true)")
        cur.execute(
            """INSERT INTO files (hash, name, size, datetime, spread_k, spread_n)
               SELECT hash, name, size, datetime, spread_k, spread_n FROM load_files ORDER BY hash
               ON CONFLICT (hash) DO UPDATE SET spread_k = excluded.spread_k, spread_n = excluded.spread_n
               WHERE files.spread_k IS NULL AND excluded.spread_k IS NOT NULL""")
        now = int(time.time())
        cur.execute(
            """INSERT INTO uploads (hash, host, url, error, time, encrypted)
               SELECT hash, host, url, error, %s, encrypted FROM load_uploads ORDER BY hash, host
               ON CONFLICT (hash, host) DO UPDATE
               SET url = excluded.url, error = NULL, time = excluded.time, encrypted = excluded.encrypted
               WHERE uploads.url IS NULL AND excluded.url IS NOT NULL""", (now,))
        cur.execute(
            """INSERT INTO shares (hash, idx, host, url, error, digest, size, encrypted, time)
               SELECT hash, idx, host, url, error, digest, size, encrypted, %s FROM load_shares
                ORDER BY hash, idx
               ON CONFLICT (hash, idx) DO UPDATE
               SET host = excluded.host, url = excluded.url, error = NULL, digest = excluded.digest,
                   size = excluded.size, encrypted = excluded.encrypted, time = excluded.time
               WHERE shares.url IS NULL AND excluded.url IS NOT NULL""", (now,))
        row = cur.execute("SELECT seq FROM catalog_state WHERE id = 0").fetchone()
        base = int(row[0]) if row else 0
        cur.execute(
            """UPDATE files
                  SET copies = (SELECT count(u.url) FROM uploads u WHERE u.hash = files.hash)
                             + coalesce(((SELECT count(s.url) FROM shares s WHERE s.hash = files.hash)
                                         >= files.spread_k)::int, 0),
                      seq = %s + c.n
                 FROM load_changed c WHERE files.hash = c.hash""", (base,))
        cur.execute("UPDATE catalog_state SET seq = seq + %s WHERE id = 0", (added + changed,))
        cur.execute("SELECT set_config('cloudmanager.bulk', 'off', true)")
        return MergeResult(added, changed, clashes, base, base + added + changed)

    @_guarded
    def changes(self, since: int, limit: int) -> tuple[list[FileRecord], int, bool]:
        """Records changed after change sequence number ``since``, oldest change first:
        at most ``limit``, the cursor to ask from next, and whether more remain.

        Writers number their changes holding the sequence's row lock until they
        commit, so a reader never sees a later number before an earlier one."""
        cur = self._conn.cursor()
        rows = cur.execute("SELECT hash, seq FROM files WHERE seq > %s ORDER BY seq LIMIT %s",
                           (since, limit + 1), prepare=True).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        if not rows:
            return [], since, False
        wanted = [row[0] for row in rows]
        found = {record.hash: record for record in self._records_of(wanted)}
        return [found[d] for d in wanted if d in found], int(rows[-1][1]), more

    @_guarded
    def sequence(self) -> int:
        """The last change sequence number given."""
        row = self._one("SELECT seq FROM catalog_state WHERE id = 0")
        return int(row[0]) if row else 0

    @_guarded
    def peer_cursors(self, url: str) -> tuple[int, int]:
        """(last sequence number pulled from the peer at ``url``, last of ours pushed to it)."""
        row = self._one("SELECT pulled, pushed FROM peers WHERE node = %s AND url = %s", (self.node, url))
        return (int(row[0]), int(row[1])) if row else (0, 0)

    @_guarded
    def set_peer_cursor(self, url: str, *, pulled: int | None = None, pushed: int | None = None) -> None:
        """Remember how far this node's exchange with the peer at ``url`` went."""
        self._write(lambda cur: cur.execute(
            """INSERT INTO peers (node, url, pulled, pushed)
               VALUES (%(node)s, %(url)s, coalesce(%(pulled)s::bigint, 0), coalesce(%(pushed)s::bigint, 0))
               ON CONFLICT (node, url) DO UPDATE SET pulled = coalesce(%(pulled)s::bigint, peers.pulled),
                                                     pushed = coalesce(%(pushed)s::bigint, peers.pushed)""",
            {"node": self.node, "url": url, "pulled": pulled, "pushed": pushed}))

    # -- listings and figures -------------------------------------------------------

    @_guarded
    def listing(self, hosts: Sequence[str], *, cached_only: bool = False,
                pending_only: bool = False) -> Iterator[Listed]:
        """Every file with its cache state on this node and how many of ``hosts`` hold it,
        by name, read a page at a time."""
        cur = self._conn.cursor()
        params: dict[str, Any] = {"node": self.node, "hosts": list(hosts), "cached": cached_only,
                                  "pending": pending_only, "page": PAGE, "name": "", "hash": ""}
        while True:
            rows = cur.execute(
                """SELECT f.hash, f.name, f.size, f.datetime, coalesce(c.cached, false),
                          coalesce(c.pinned, false), count(u.url) AS held, count(u.host) AS tried,
                          f.spread_k, f.spread_n,
                          (SELECT count(s.url) FROM shares s WHERE s.hash = f.hash) AS shares
                     FROM files f
                     LEFT JOIN cache c ON c.node = %(node)s AND c.hash = f.hash
                     LEFT JOIN uploads u ON u.hash = f.hash AND u.host = ANY(%(hosts)s::text[])
                    WHERE (NOT %(cached)s OR c.cached) AND (f.name, f.hash) > (%(name)s, %(hash)s)
                    GROUP BY f.hash, c.cached, c.pinned
                   HAVING (NOT %(pending)s OR count(u.url) < cardinality(%(hosts)s::text[]))
                    ORDER BY f.name, f.hash LIMIT %(page)s""", params, prepare=True).fetchall()
            for row in rows:
                spread = (row[8], row[9]) if row[8] is not None else None
                yield Listed(row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5]), row[6], row[7],
                             spread, row[10])
            if len(rows) < PAGE:
                return
            params.update(name=rows[-1][1], hash=rows[-1][0])

    @_guarded
    def counts(self, hosts: Sequence[str]) -> dict[str, int]:
        """files, cached and pinned (on this node), and pending (not on every one of ``hosts``)."""
        row = self._one(
            """SELECT count(*), count(*) FILTER (WHERE c.cached), count(*) FILTER (WHERE c.pinned),
                      count(*) FILTER (WHERE (SELECT count(*) FROM uploads u
                                               WHERE u.hash = f.hash AND u.url IS NOT NULL
                                                 AND u.host = ANY(%(hosts)s::text[]))
                                             < cardinality(%(hosts)s::text[]))
                 FROM files f LEFT JOIN cache c ON c.node = %(node)s AND c.hash = f.hash""",
            {"hosts": list(hosts), "node": self.node})
        values = [int(v) for v in row] if row else [0, 0, 0, 0]
        return dict(zip(("files", "cached", "pinned", "pending"), values, strict=True))

    @_guarded
    def held_per_host(self) -> dict[str, int]:
        """How many files each host holds a copy of."""
        cur = self._conn.cursor()
        return {row[0]: int(row[1]) for row in cur.execute(
            "SELECT host, count(*) FROM uploads WHERE url IS NOT NULL GROUP BY host")}

    @_guarded
    def transfers(self) -> list[tuple[str, str, int, int]]:
        """(month, host, bytes sent, bytes fetched), oldest month first."""
        cur = self._conn.cursor()
        return [(r[0], r[1], int(r[2]), int(r[3])) for r in cur.execute(
            "SELECT month, host, sent, fetched FROM transfers ORDER BY month, host")]

    @_guarded
    def copies_older_than(self, host: str, before: int) -> list[tuple[str, str, int]]:
        """(hash, locator, copies of that file) for ``host``'s copies made before ``before``."""
        cur = self._conn.cursor()
        return [(r[0], r[1], int(r[2])) for r in cur.execute(
            """SELECT u.hash, u.url, f.copies FROM uploads u JOIN files f ON f.hash = u.hash
                WHERE u.host = %s AND u.url IS NOT NULL AND u.time < %s ORDER BY u.time""",
            (host, before))]

    @_guarded
    def uncopied(self) -> list[tuple[str, bool]]:
        """Files no host holds, in hash order, with whether this node caches them."""
        cur = self._conn.cursor()
        rows = cur.execute(
            """SELECT f.hash, coalesce(c.cached, false) FROM files f
                 LEFT JOIN cache c ON c.node = %s AND c.hash = f.hash
                WHERE f.copies = 0 ORDER BY f.hash""", (self.node,))
        return [(str(digest), bool(cached)) for digest, cached in rows]

    @_guarded
    def under_copies(self, copies: int) -> list[str]:
        """Files held by fewer than ``copies`` hosts."""
        cur = self._conn.cursor()
        return [r[0] for r in cur.execute("SELECT hash FROM files WHERE copies < %s ORDER BY hash",
                                          (copies,))]

    # -- the newest files at once (for the node's page) ---------------------------------

    @_guarded
    def recent_files(self, limit: int) -> list[tuple[FileRecord, CacheEntry]]:
        """The ``limit`` newest files with their records and this node's cache state:
        three statements."""
        cur = self._conn.cursor()
        entries = [CacheEntry(r[0], r[1], r[2], bool(r[3]), bool(r[4]), r[5]) for r in cur.execute(
            """SELECT f.hash, f.name, f.size, coalesce(c.cached, false), coalesce(c.pinned, false), f.copies
                 FROM files f LEFT JOIN cache c ON c.node = %s AND c.hash = f.hash
                ORDER BY f.datetime DESC, f.hash DESC LIMIT %s""", (self.node, limit))]
        found = {record.hash: record for record in self._records_of([entry.hash for entry in entries])}
        return [(found[entry.hash], entry) for entry in entries if entry.hash in found]
