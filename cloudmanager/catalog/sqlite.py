"""The SQLite catalog: the embedded default, one node per catalog file.

The contract is CatalogBase (base.py); every SQLite statement lives here.

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
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

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
)

#: The schema version this code reads and writes (``PRAGMA user_version``).
SCHEMA_VERSION = 5

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
#: statements are all idempotent: it adds the indexes and triggers a step needs.
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


class SQLiteCatalog(CatalogBase):
    """The SQLite catalog of one node.  Safe to share between threads."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise CatalogError(f"cannot create catalog {self.path}: no directory {self.path.parent}")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._closed = False
        try:
            self._migrate(self._db)
        except sqlite3.Error as exc:
            self.close()
            raise CatalogError(f"cannot use catalog {self.path}: {exc}") from exc

    # -- connections and transactions -------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
        return conn

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise CatalogError("the catalog is closed")
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
        self._local.conn = conn
        with self._guard:
            self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
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

    def close(self) -> None:
        """Close every connection opened by any thread."""
        with self._guard:
            self._closed = True
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    # -- schema ---------------------------------------------------------------------

    def _migrate(self, db: sqlite3.Connection) -> None:
        with self._write():
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog {self.path} has schema version {version}; this cloudmanager "
                    f"knows up to {SCHEMA_VERSION}: upgrade cloudmanager"
                )
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
                    else:
                        db.execute(step)
                version += 1
                db.execute(f"PRAGMA user_version = {int(version)}")

    @staticmethod
    def _run_script(db: sqlite3.Connection, script: str) -> None:
        for statement in _statements(script):
            db.execute(statement)

    def schema_version(self) -> int:
        """The schema version of the open catalog."""
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # -- reads ----------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        """True when the file is in the catalog."""
        return self._db.execute("SELECT 1 FROM files WHERE hash = ?", (digest,)).fetchone() is not None

    def is_cached(self, digest: str) -> bool:
        """True when the catalog counts the file as cached."""
        row = self._db.execute("SELECT cached FROM files WHERE hash = ?", (digest,)).fetchone()
        return bool(row and row[0])

    def entry(self, digest: str) -> CacheEntry | None:
        """The local state of one file, or None when unknown."""
        row = self._db.execute(
            "SELECT hash, name, size, cached, pinned, copies FROM files WHERE hash = ?", (digest,)
        ).fetchone()
        if row is None:
            return None
        return CacheEntry(row[0], row[1], row[2], bool(row[3]), bool(row[4]), row[5])

    def record(self, digest: str) -> FileRecord | None:
        """The exchangeable record of one file (name, size, time, uploads), or None."""
        rows = self._db.execute(
            f"""SELECT {RECORD_COLUMNS} FROM files f LEFT JOIN uploads u ON u.hash = f.hash
                WHERE f.hash = ? ORDER BY u.host""",
            (digest,),
        ).fetchall()
        shares = self._db.execute(f"SELECT {SHARE_COLUMNS} FROM shares WHERE hash = ? ORDER BY idx",
                                  (digest,))
        return next(group_records(rows, shares), None)

    def records(self) -> Iterator[FileRecord]:
        """Every record, in hash order, streamed."""
        cursor = self._db.execute(
            f"""SELECT {RECORD_COLUMNS} FROM files f LEFT JOIN uploads u ON u.hash = f.hash
                ORDER BY f.hash, u.host"""
        )
        shares = self._db.execute(f"SELECT {SHARE_COLUMNS} FROM shares ORDER BY hash, idx")
        yield from group_records(cursor, shares)

    def usage(self) -> tuple[int, int]:
        """(cached bytes, cached files), read from the running totals: constant time."""
        row = self._db.execute("SELECT cached_bytes, cached_files FROM state WHERE id = 0").fetchone()
        return int(row[0]), int(row[1])

    def cached_sizes(self) -> dict[str, int]:
        """Every file the catalog counts as cached, with its size."""
        return dict(self._db.execute("SELECT hash, size FROM files WHERE cached = 1"))

    def count(self) -> int:
        """How many files the catalog knows."""
        return int(self._db.execute("SELECT count(*) FROM files").fetchone()[0])

    def recent(self, limit: int) -> list[str]:
        """The ``limit`` files first known most lately, newest first."""
        return [r[0] for r in self._db.execute(
            "SELECT hash FROM files ORDER BY datetime DESC, hash DESC LIMIT ?", (limit,))]

    def host_health(self, names: Iterable[str]) -> dict[str, HostHealth]:
        """Health of the named hosts (a host never used is perfectly healthy)."""
        wanted = list(names)
        found = {
            row[0]: HostHealth(*row)
            for row in self._db.execute(
                """SELECT name, failures, last_ok, last_error, last_error_time FROM hosts
                    WHERE name IN (SELECT value FROM json_each(?))""",
                (_json_list(wanted),),
            )
        }
        return {name: found.get(name, HostHealth(name)) for name in wanted}

    def missing_copies(self, hosts: Sequence[str]) -> list[tuple[str, str]]:
        """(hash, host) pairs a sync should retry: an error recorded for one of
        ``hosts``, or a file no host holds yet that ``host`` has no entry for (but not
        a spread file: its missing shares are rebuilt instead)."""
        names = _json_list(hosts)
        rows = self._db.execute(
            """SELECT hash, host FROM uploads
                WHERE error IS NOT NULL AND host IN (SELECT value FROM json_each(:names))
               UNION
               SELECT f.hash, h.value FROM files f, json_each(:names) h
                WHERE f.copies = 0 AND f.spread_k IS NULL
                  AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.hash = f.hash AND u.host = h.value)
               ORDER BY 1, 2""",
            {"names": names},
        )
        return [(str(a), str(b)) for a, b in rows]

    # -- cache state ----------------------------------------------------------------

    def admit(self, record: FileRecord, capacity: int) -> Admission:
        """Count a file as cached if it fits, evicting least recently used files.

        In one transaction: when the file is cached already it is touched;
        otherwise the least recently used evictable files (cached, unpinned,
        held by a host) are uncounted until the file fits, the file's row is
        created if new, marked cached and stamped most recently used.  When it
        cannot fit, nothing changes.  The caller removes the victims' bytes.
        """
        with self._write() as db:
            row = db.execute("SELECT cached FROM files WHERE hash = ?", (record.hash,)).fetchone()
            if row is not None and row[0]:
                self._touch(db, record.hash)
                return Admission(True, already=True)
            used = db.execute("SELECT cached_bytes FROM state WHERE id = 0").fetchone()[0]
            victims = self._choose_victims(db, used + record.size - capacity)
            if victims is None:
                return Admission(False)
            db.executemany("UPDATE files SET cached = 0 WHERE hash = ?", ((v,) for v in victims))
            clock = self._tick(db)
            db.execute(
                """INSERT INTO files (hash, name, size, datetime, cached, access)
                   VALUES (?, ?, ?, ?, 1, ?)
                   ON CONFLICT (hash) DO UPDATE SET cached = 1, access = excluded.access""",
                (record.hash, record.name, record.size, record.datetime, clock),
            )
            return Admission(True, tuple(victims))

    @staticmethod
    def _choose_victims(db: sqlite3.Connection, need: int) -> list[str] | None:
        """Least recently used evictable files freeing ``need`` bytes (None: impossible)."""
        victims: list[str] = []
        freed = 0
        if need <= 0:
            return victims
        cursor = db.execute(
            "SELECT hash, size FROM files WHERE cached = 1 AND pinned = 0 AND copies > 0 ORDER BY access"
        )
        for digest, size in cursor:
            victims.append(digest)
            freed += size
            if freed >= need:
                cursor.close()
                return victims
        return None

    def shrink_to(self, capacity: int) -> list[str]:
        """Uncount least recently used evictable files until usage fits ``capacity``."""
        with self._write() as db:
            used = db.execute("SELECT cached_bytes FROM state WHERE id = 0").fetchone()[0]
            if used <= capacity:
                return []
            victims = self._choose_victims(db, used - capacity)
            if victims is None:  # cannot fit: free what may be freed
                victims = [
                    r[0]
                    for r in db.execute(
                        "SELECT hash FROM files WHERE cached = 1 AND pinned = 0 AND copies > 0"
                    )
                ]
            db.executemany("UPDATE files SET cached = 0 WHERE hash = ?", ((v,) for v in victims))
            return victims

    @staticmethod
    def _tick(db: sqlite3.Connection) -> int:
        row = db.execute("UPDATE state SET clock = clock + 1 WHERE id = 0 RETURNING clock").fetchone()
        return int(row[0])

    def _touch(self, db: sqlite3.Connection, digest: str) -> None:
        db.execute("UPDATE files SET access = ? WHERE hash = ?", (self._tick(db), digest))

    def touch(self, digest: str) -> None:
        """Mark a cached file as the most recently used."""
        with self._write(durable=False) as db:
            self._touch(db, digest)

    def uncache(self, digests: Iterable[str]) -> list[str]:
        """Count these files as no longer cached; returns those that were."""
        changed = []
        with self._write() as db:
            for digest in digests:
                cur = db.execute("UPDATE files SET cached = 0 WHERE hash = ? AND cached = 1", (digest,))
                if cur.rowcount:
                    changed.append(digest)
        return changed

    def evictable(self, digests: Iterable[str] | None = None) -> list[str]:
        """Of ``digests`` (or all), the cached files that may be evicted, LRU first."""
        if digests is None:
            rows = self._db.execute(
                "SELECT hash FROM files WHERE cached = 1 AND pinned = 0 AND copies > 0 ORDER BY access")
        else:
            rows = self._db.execute(
                """SELECT hash FROM files WHERE hash IN (SELECT value FROM json_each(?))
                      AND cached = 1 AND pinned = 0 AND copies > 0 ORDER BY access""",
                (_json_list(list(digests)),))
        return [r[0] for r in rows]

    def set_pinned(self, digest: str, pinned: bool) -> bool:
        """Pin (never evict) or unpin a file; False when the file is unknown."""
        with self._write() as db:
            cur = db.execute("UPDATE files SET pinned = ? WHERE hash = ?", (int(pinned), digest))
            return cur.rowcount > 0

    def cache_owner(self) -> str | None:
        """The cache folder recorded as this catalog's (None: none yet)."""
        row = self._db.execute("SELECT cache FROM state WHERE id = 0").fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def set_cache_owner(self, cache: str) -> None:
        """Record ``cache`` as the folder whose state this catalog keeps."""
        with self._write() as db:
            db.execute("UPDATE state SET cache = ? WHERE id = 0", (cache,))

    def recount(self, fix: bool = True) -> bool:
        """Check the running totals against the rows (and set them, when ``fix``);
        True when they were wrong."""
        with self._write() as db:
            actual = db.execute(
                "SELECT coalesce(sum(size), 0), count(*) FROM files WHERE cached = 1"
            ).fetchone()
            kept = db.execute("SELECT cached_bytes, cached_files FROM state WHERE id = 0").fetchone()
            if tuple(actual) == tuple(kept):
                return False
            if fix:
                db.execute("UPDATE state SET cached_bytes = ?, cached_files = ? WHERE id = 0", actual)
            return True

    # -- files and host copies ------------------------------------------------------

    def add(self, record: FileRecord) -> bool:
        """Insert a file (not cached) with its uploads; False when it was known."""
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO files (hash, name, size, datetime) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (record.hash, record.name, record.size, record.datetime),
            )
            for upload in record.uploads:
                self._set_upload(db, record.hash, upload, keep_url=True)
            if record.spread is not None:
                self._set_shares(db, record.hash, record.spread, record.shares)
            return cur.rowcount > 0

    def forget(self, digest: str) -> bool:
        """Remove a file and its uploads from the catalog; False when unknown."""
        with self._write() as db:
            return db.execute("DELETE FROM files WHERE hash = ?", (digest,)).rowcount > 0

    @staticmethod
    def _set_upload(db: sqlite3.Connection, digest: str, upload: Upload, *, keep_url: bool) -> None:
        """Upsert one host entry; with ``keep_url`` an error does not replace a URL."""
        db.execute(
            f"""INSERT INTO uploads (hash, host, url, error, time, encrypted) VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (hash, host) DO UPDATE
               SET url = excluded.url, error = excluded.error, time = excluded.time,
                   encrypted = excluded.encrypted
               {"WHERE excluded.url IS NOT NULL OR uploads.url IS NULL" if keep_url else ""}""",
            (digest, upload.host, upload.url, upload.error, int(time.time()), int(upload.encrypted)),
        )

    @staticmethod
    def _set_shares(db: sqlite3.Connection, digest: str, spread: tuple[int, int],
                    shares: Iterable[Share], *, keep_url: bool = True) -> None:
        """Record shares of a spread file (the spread is set if the file had none);
        shares of another spread than the file's are left out."""
        db.execute("UPDATE files SET spread_k = ?, spread_n = ? WHERE hash = ? AND spread_k IS NULL",
                   (spread[0], spread[1], digest))
        for share in shares:
            db.execute(
                f"""INSERT INTO shares (hash, idx, host, url, error, digest, size, encrypted, time)
                   SELECT :hash, :idx, :host, :url, :error, :digest, :size, :encrypted, :time
                     FROM files WHERE hash = :hash AND spread_k = :k AND spread_n = :n
                   ON CONFLICT (hash, idx) DO UPDATE
                   SET host = excluded.host, url = excluded.url, error = excluded.error,
                       digest = excluded.digest, size = excluded.size, encrypted = excluded.encrypted,
                       time = excluded.time
                   {"WHERE excluded.url IS NOT NULL OR shares.url IS NULL" if keep_url else ""}""",
                {"hash": digest, "idx": share.index, "host": share.host, "url": share.url,
                 "error": share.error, "digest": share.digest, "size": share.size,
                 "encrypted": int(share.encrypted), "time": int(time.time()), "k": spread[0], "n": spread[1]},
            )

    def record_shares(self, digest: str, spread: tuple[int, int], shares: Sequence[Share],
                      sent: int = 0) -> None:
        """Record where a spread file's shares went (and each host's health).  Not
        fsynced, as :meth:`record_upload`."""
        with self._write(durable=False) as db:
            self._set_shares(db, digest, spread, shares)
            for share in shares:
                self._note_host(db, share.host, share.error, sent=share.size if share.ok else 0)

    def share_lost(self, digest: str, index: int, error: str, fetched: int = 0) -> None:
        """Record that a share's host does not give it back right (gone, or wrong bytes)."""
        with self._write() as db:
            row = db.execute("SELECT host FROM shares WHERE hash = ? AND idx = ?", (digest, index)).fetchone()
            if row is None:
                return
            db.execute("UPDATE shares SET url = NULL, error = ?, time = ? WHERE hash = ? AND idx = ?",
                       (error, int(time.time()), digest, index))
            self._note_host(db, row[0], error, fetched=fetched)

    def record_upload(self, digest: str, upload: Upload, sent: int = 0) -> None:
        """Record one host's result for one file, and the host's health and traffic.

        A failed upload does not replace a URL recorded for the same host (the
        copy another process made meanwhile is still there).  Not fsynced: lost to a
        power cut, the file counts as not yet sent and ``sync`` sends it again."""
        with self._write(durable=False) as db:
            self._set_upload(db, digest, upload, keep_url=True)
            self._note_host(db, upload.host, upload.error, sent=sent)

    def record_uploads(self, digest: str, uploads: Sequence[Upload]) -> bool:
        """Record hosts' results for a file, only if the catalog still knows it (False:
        it was forgotten meanwhile, nothing recorded).  A failed upload never replaces
        a URL.  The hosts' health is the caller's to note."""
        with self._write() as db:
            if db.execute("SELECT 1 FROM files WHERE hash = ?", (digest,)).fetchone() is None:
                return False
            for upload in uploads:
                self._set_upload(db, digest, upload, keep_url=True)
            return True

    def record_fetch(self, host: str, error: str | None, fetched: int = 0, *,
                     digest: str | None = None, lost: bool = False) -> None:
        """Record a download attempt from ``host``.  With ``lost``, the host's copy
        of ``digest`` is recorded as gone (wrong bytes, or not there any more)."""
        with self._write() as db:
            if lost and digest is not None:
                self._set_upload(db, digest, Upload(host, error=error or "copy lost"), keep_url=False)
            self._note_host(db, host, error, fetched=fetched)

    def note_host(self, host: str, error: str | None, sent: int = 0, fetched: int = 0) -> None:
        """Record how a host did (error None: success) and the bytes it moved."""
        with self._write(durable=False) as db:
            self._note_host(db, host, error, sent=sent, fetched=fetched)

    @staticmethod
    def _note_host(db: sqlite3.Connection, host: str, error: str | None,
                   sent: int = 0, fetched: int = 0) -> None:
        now = int(time.time())
        if error is None:
            db.execute(
                """INSERT INTO hosts (name, failures, last_ok) VALUES (?, 0, ?)
                   ON CONFLICT (name) DO UPDATE SET failures = 0, last_ok = excluded.last_ok""",
                (host, now),
            )
        else:
            db.execute(
                """INSERT INTO hosts (name, failures, last_error, last_error_time) VALUES (?, 1, ?, ?)
                   ON CONFLICT (name) DO UPDATE SET failures = failures + 1,
                       last_error = excluded.last_error, last_error_time = excluded.last_error_time""",
                (host, error, now),
            )
        if sent or fetched:
            db.execute(
                """INSERT INTO transfers (month, host, sent, fetched) VALUES (?, ?, ?, ?)
                   ON CONFLICT (month, host) DO UPDATE
                   SET sent = sent + excluded.sent, fetched = fetched + excluded.fetched""",
                (month(now), host, sent, fetched),
            )

    # -- node sync ------------------------------------------------------------------

    def merge(self, records: Sequence[FileRecord], *, skip_clashes: bool = False) -> MergeResult:
        """Union ``records`` into the catalog in one transaction.

        A URL beats an error for the same host; a known file keeps its name.  A
        record whose size disagrees with the catalog is a clash: by default
        ValueError (naming the hash) is raised and nothing changes; with
        ``skip_clashes`` those records are left out and reported.
        """
        with self._write() as db:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS load_files (hash TEXT PRIMARY KEY, name TEXT, "
                       "size INTEGER, datetime INTEGER, spread_k INTEGER, spread_n INTEGER) WITHOUT ROWID")
            db.execute("CREATE TEMP TABLE IF NOT EXISTS load_uploads (hash TEXT, host TEXT, url TEXT, "
                       "error TEXT, encrypted INTEGER, PRIMARY KEY (hash, host)) WITHOUT ROWID")
            db.execute("CREATE TEMP TABLE IF NOT EXISTS load_shares (hash TEXT, idx INTEGER, host TEXT, "
                       "url TEXT, error TEXT, digest TEXT, size INTEGER, encrypted INTEGER, "
                       "PRIMARY KEY (hash, idx)) WITHOUT ROWID")
            for table in ("load_files", "load_uploads", "load_shares"):
                db.execute(f"DELETE FROM {table}")
            records = sorted(records, key=lambda r: r.hash)  # key order: far fewer page splits
            db.executemany(
                "INSERT INTO load_files VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                ((r.hash, r.name, r.size, r.datetime, None, None) if r.spread is None
                 else (r.hash, r.name, r.size, r.datetime, *r.spread) for r in records),
            )
            db.executemany(
                """INSERT INTO load_uploads VALUES (?, ?, ?, ?, ?) ON CONFLICT (hash, host) DO UPDATE
                   SET url = coalesce(load_uploads.url, excluded.url),
                       encrypted = CASE WHEN load_uploads.url IS NULL THEN excluded.encrypted
                                        ELSE load_uploads.encrypted END,
                       error = CASE WHEN coalesce(load_uploads.url, excluded.url) IS NULL
                                    THEN load_uploads.error END""",
                ((r.hash, u.host, u.url, u.error, u.encrypted) for r in records  # a bool binds as 0/1
                 for u in sorted(r.uploads, key=lambda u: u.host)),
            )
            spreads = any(r.spread is not None for r in records)  # the share steps cost nothing otherwise
            if spreads:
                db.executemany(
                    """INSERT INTO load_shares SELECT ?, ?, ?, ?, ?, ?, ?, ? FROM load_files
                        WHERE hash = ?1 AND spread_k = ? AND spread_n = ?
                       ON CONFLICT (hash, idx) DO NOTHING""",
                    ((r.hash, sh.index, sh.host, sh.url, sh.error, sh.digest, sh.size, int(sh.encrypted),
                      *(r.spread or (0, 0))) for r in records for sh in r.shares),
                )
            clashes = tuple(row[0] for row in db.execute(
                """SELECT l.hash FROM load_files l JOIN files f ON f.hash = l.hash
                    WHERE f.size <> l.size ORDER BY l.hash"""))
            if clashes and not skip_clashes:
                raise ValueError(clashes[0])
            for table in ("load_files", "load_uploads", "load_shares"):
                db.executemany(f"DELETE FROM {table} WHERE hash = ?", ((h,) for h in clashes))
            if spreads:  # shares of a file this catalog knows under another spread are left out
                db.execute(
                    """DELETE FROM load_shares WHERE hash IN (
                           SELECT l.hash FROM load_files l JOIN files f ON f.hash = l.hash
                            WHERE f.spread_k IS NOT NULL
                              AND (l.spread_k IS NULL OR f.spread_k <> l.spread_k
                                   OR f.spread_n <> l.spread_n))""")
            # The files this merge adds or changes (a new host entry, or a URL for an error).
            db.execute("CREATE TEMP TABLE IF NOT EXISTS load_changed "
                       "(hash TEXT PRIMARY KEY, added INTEGER) WITHOUT ROWID")
            db.execute("DELETE FROM load_changed")
            new_shares = """OR EXISTS (
                          SELECT 1 FROM load_shares ls
                            LEFT JOIN shares s ON s.hash = ls.hash AND s.idx = ls.idx
                           WHERE ls.hash = l.hash
                             AND (s.hash IS NULL OR (s.url IS NULL AND ls.url IS NOT NULL)))"""
            db.execute(
                f"""INSERT INTO load_changed
                   SELECT hash, NOT EXISTS (SELECT 1 FROM files f WHERE f.hash = l.hash) AS added
                     FROM load_files l
                    WHERE added OR EXISTS (
                          SELECT 1 FROM load_uploads lu
                            LEFT JOIN uploads u ON u.hash = lu.hash AND u.host = lu.host
                           WHERE lu.hash = l.hash
                             AND (u.hash IS NULL OR (u.url IS NULL AND lu.url IS NOT NULL)))
                       {new_shares if spreads else ""}
                    ORDER BY hash"""
            )
            added, changed = db.execute(
                "SELECT count(*) FILTER (WHERE added), count(*) FILTER (WHERE NOT added) FROM load_changed"
            ).fetchone()
            # Bulk mode: the per-row triggers stand aside; copies and seq are set below,
            # in this same transaction, for all the changed files at once.
            db.execute("UPDATE state SET bulk = 1 WHERE id = 0")
            spread_known = """DO UPDATE SET spread_k = excluded.spread_k, spread_n = excluded.spread_n
                   WHERE files.spread_k IS NULL AND excluded.spread_k IS NOT NULL"""
            db.execute(
                f"""INSERT INTO files (hash, name, size, datetime, spread_k, spread_n)
                   SELECT hash, name, size, datetime, spread_k, spread_n FROM load_files
                    WHERE true ORDER BY hash
                   ON CONFLICT (hash) {spread_known if spreads else "DO NOTHING"}"""
            )
            now = int(time.time())
            db.execute(
                """INSERT INTO uploads (hash, host, url, error, time, encrypted)
                   SELECT hash, host, url, error, ?, encrypted FROM load_uploads
                    WHERE true ORDER BY hash, host
                   ON CONFLICT (hash, host) DO UPDATE
                   SET url = excluded.url, error = NULL, time = excluded.time, encrypted = excluded.encrypted
                   WHERE uploads.url IS NULL AND excluded.url IS NOT NULL""",
                (now,),
            )
            if spreads:
                db.execute(
                    """INSERT INTO shares (hash, idx, host, url, error, digest, size, encrypted, time)
                       SELECT hash, idx, host, url, error, digest, size, encrypted, ? FROM load_shares
                        WHERE true ORDER BY hash, idx
                       ON CONFLICT (hash, idx) DO UPDATE
                       SET host = excluded.host, url = excluded.url, error = NULL, digest = excluded.digest,
                           size = excluded.size, encrypted = excluded.encrypted, time = excluded.time
                       WHERE shares.url IS NULL AND excluded.url IS NOT NULL""",
                    (now,),
                )
            base = db.execute("SELECT seq FROM state WHERE id = 0").fetchone()[0]
            db.execute(
                """UPDATE files
                      SET copies = (SELECT count(u.url) FROM uploads u WHERE u.hash = files.hash)
                                 + CASE WHEN files.spread_k IS NULL THEN 0
                                        ELSE (SELECT count(s.url) FROM shares s WHERE s.hash = files.hash)
                                             >= files.spread_k END,
                          seq = :base + c.n
                     FROM (SELECT hash, row_number() OVER (ORDER BY hash) AS n FROM load_changed) AS c
                    WHERE files.hash = c.hash""",
                {"base": base},
            )
            db.execute("UPDATE state SET seq = seq + ?, bulk = 0 WHERE id = 0", (added + changed,))
            for table in ("load_files", "load_uploads", "load_shares", "load_changed"):
                db.execute(f"DELETE FROM {table}")
            return MergeResult(int(added), int(changed), clashes, int(base), int(base + added + changed))

    # -- listings and figures -------------------------------------------------------

    def listing(self, hosts: Sequence[str], *, cached_only: bool = False,
                pending_only: bool = False) -> Iterator[Listed]:
        """Every file with its cache state and how many of ``hosts`` hold it, by name.

        ``pending_only``: files not yet held by every one of ``hosts``.
        """
        query = """
            SELECT f.hash, f.name, f.size, f.datetime, f.cached, f.pinned,
                   count(u.url) AS held, count(u.host) AS tried, f.spread_k, f.spread_n,
                   (SELECT count(s.url) FROM shares s WHERE s.hash = f.hash) AS shares
              FROM files f
              LEFT JOIN uploads u ON u.hash = f.hash AND u.host IN (SELECT value FROM json_each(:hosts))
             WHERE (:cached = 0 OR f.cached = 1)
             GROUP BY f.hash
            HAVING (:pending = 0 OR count(u.url) < json_array_length(:hosts))
             ORDER BY f.name, f.hash"""
        params = {"hosts": _json_list(hosts), "cached": int(cached_only), "pending": int(pending_only)}
        for row in self._db.execute(query, params):
            spread = (row[8], row[9]) if row[8] is not None else None
            yield Listed(row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5]), row[6], row[7],
                         spread, row[10])

    def counts(self, hosts: Sequence[str]) -> dict[str, int]:
        """files, cached, pinned, and pending (not on every one of ``hosts``)."""
        row = self._db.execute(
            """SELECT count(*), coalesce(sum(cached), 0), coalesce(sum(pinned), 0),
                      coalesce(sum((SELECT count(*) FROM uploads u WHERE u.hash = f.hash AND u.url IS NOT NULL
                                      AND u.host IN (SELECT value FROM json_each(:hosts)))
                                   < json_array_length(:hosts)), 0)
                 FROM files f""",
            {"hosts": _json_list(hosts)},
        ).fetchone()
        return {"files": row[0], "cached": row[1], "pinned": row[2], "pending": row[3]}

    def held_per_host(self) -> dict[str, int]:
        """How many files each host holds a copy of."""
        return dict(self._db.execute(
            "SELECT host, count(*) FROM uploads WHERE url IS NOT NULL GROUP BY host"))

    def transfers(self) -> list[tuple[str, str, int, int]]:
        """(month, host, bytes sent, bytes fetched), oldest month first."""
        return [(r[0], r[1], r[2], r[3]) for r in self._db.execute(
            "SELECT month, host, sent, fetched FROM transfers ORDER BY month, host")]

    def copies_older_than(self, host: str, before: int) -> list[tuple[str, str, int]]:
        """(hash, locator, copies of that file) for ``host``'s copies made before ``before``."""
        return [(r[0], r[1], r[2]) for r in self._db.execute(
            """SELECT u.hash, u.url, f.copies FROM uploads u JOIN files f ON f.hash = u.hash
                WHERE u.host = ? AND u.url IS NOT NULL AND u.time < ? ORDER BY u.time""",
            (host, before))]

    def uncopied(self) -> list[tuple[str, bool]]:
        """Files no host holds, in hash order, with whether they are cached."""
        rows = self._db.execute("SELECT hash, cached FROM files WHERE copies = 0 ORDER BY hash")
        return [(str(digest), bool(cached)) for digest, cached in rows]

    def under_copies(self, copies: int) -> list[str]:
        """Files held by fewer than ``copies`` hosts."""
        return [r[0] for r in self._db.execute(
            "SELECT hash FROM files WHERE copies < ? ORDER BY hash", (copies,))]

    def changes(self, since: int, limit: int) -> tuple[list[FileRecord], int, bool]:
        """Records changed after change sequence number ``since``, oldest change first:
        at most ``limit`` of them, the cursor to ask from next, and whether more remain.

        Writers are serialized and number their changes inside their transaction,
        so a reader never sees a later number before an earlier one commits."""
        rows = self._db.execute(
            "SELECT hash, seq FROM files WHERE seq > ? ORDER BY seq LIMIT ?", (since, limit + 1)
        ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        if not rows:
            return [], since, False
        wanted = [r[0] for r in rows]
        found = {record.hash: record for record in group_records(self._db.execute(
            f"""SELECT {RECORD_COLUMNS} FROM files f LEFT JOIN uploads u ON u.hash = f.hash
                WHERE f.hash IN (SELECT value FROM json_each(?))
                ORDER BY f.hash, u.host""", (_json_list(wanted),)), self._db.execute(
            f"""SELECT {SHARE_COLUMNS} FROM shares WHERE hash IN (SELECT value FROM json_each(?))
                ORDER BY hash, idx""", (_json_list(wanted),)))}
        return [found[d] for d in wanted if d in found], int(rows[-1][1]), more

    def peer_cursors(self, url: str) -> tuple[int, int]:
        """(last sequence number pulled from the peer at ``url``, last of ours pushed to it)."""
        row = self._db.execute("SELECT pulled, pushed FROM peers WHERE url = ?", (url,)).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def set_peer_cursor(self, url: str, *, pulled: int | None = None, pushed: int | None = None) -> None:
        """Remember how far the exchange with the peer at ``url`` went."""
        with self._write() as db:
            db.execute(
                """INSERT INTO peers (url, pulled, pushed) VALUES (:url, coalesce(:pulled, 0),
                          coalesce(:pushed, 0))
                   ON CONFLICT (url) DO UPDATE SET pulled = coalesce(:pulled, pulled),
                                                   pushed = coalesce(:pushed, pushed)""",
                {"url": url, "pulled": pulled, "pushed": pushed})

    def sequence(self) -> int:
        """The last change sequence number given."""
        return int(self._db.execute("SELECT seq FROM state WHERE id = 0").fetchone()[0])

    def incomplete_spreads(self) -> list[str]:
        """Spread files some of whose N shares no host holds."""
        return [r[0] for r in self._db.execute(
            """SELECT hash FROM files f WHERE spread_n IS NOT NULL
                  AND (SELECT count(url) FROM shares s WHERE s.hash = f.hash) < spread_n ORDER BY hash""")]

    def drop_upload(self, digest: str, host: str) -> None:
        """Forget ``host``'s entry for a file (its copy was deleted)."""
        with self._write() as db:
            db.execute("DELETE FROM uploads WHERE hash = ? AND host = ?", (digest, host))

    # -- the newest files at once (for the node's page) ---------------------------------

    def recent_files(self, limit: int) -> list[tuple[FileRecord, CacheEntry]]:
        """The ``limit`` newest files with their records and cache state: three statements."""
        entries = [CacheEntry(r[0], r[1], r[2], bool(r[3]), bool(r[4]), r[5]) for r in self._db.execute(
            """SELECT hash, name, size, cached, pinned, copies FROM files
                ORDER BY datetime DESC, hash DESC LIMIT ?""", (limit,))]
        wanted = _json_list([entry.hash for entry in entries])
        found = {record.hash: record for record in group_records(self._db.execute(
            f"""SELECT {RECORD_COLUMNS} FROM files f LEFT JOIN uploads u ON u.hash = f.hash
                WHERE f.hash IN (SELECT value FROM json_each(?)) ORDER BY f.hash, u.host""", (wanted,)),
            self._db.execute(f"""SELECT {SHARE_COLUMNS} FROM shares WHERE hash IN (SELECT value FROM
                                 json_each(?)) ORDER BY hash, idx""", (wanted,)))}
        return [(found[entry.hash], entry) for entry in entries if entry.hash in found]


def _json_list(values: Sequence[str]) -> str:
    """A list of names as one JSON parameter (read back in SQL with json_each)."""
    return json.dumps(list(values))
