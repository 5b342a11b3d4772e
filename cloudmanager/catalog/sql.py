"""The catalog's SQL flow, written once over a small dialect interface.

SQLCatalog implements every method of CatalogBase (base.py, the contract): the
loops, the grouping, the results, the validation.  A dialect (sqlite.py,
postgres.py) gives what truly differs: connecting and the transaction
(``_write``), how a statement runs (``_exec``, ``_reader``), how a list binds
(``_list``), the bulk load of a merge (``_load``), migrations, and the
statements whose text differs, by name in ``Q``.

The everyday figures (``usage``, ``count``, ``counts``) are read from running
counts the schema's triggers keep in the same transaction as the rows (a bulk
merge keeps them itself): they cost the same whatever the number of files.

Statements are written with named parameters (``:name``) and two markers the
dialect spells its own way: ``IN LIST(:names)`` (a list parameter) and
``LEN(:names)`` (its length).  ``:node`` is bound to the node id in every
statement (None for SQLite: one node per catalog).
"""

from __future__ import annotations

import functools
import inspect
import re
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

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

T = TypeVar("T")

#: Rows read per round trip where results are streamed (records, listing) or walked (eviction).
PAGE = 1000
VICTIM_BATCH = 64


class _Retry(Exception):
    """The transaction met a concurrent change it cannot work around: run it again."""


def lru(source: str, key: str, size: str, evictable: str, order: str) -> dict[str, str]:
    """The LRU eviction policy as data (after diskcache's EVICTION_POLICY): where the
    cache rows live, the one condition a victim meets (the one its index is made for),
    and what a cull selects, from it.  What a read updates is the dialect's ``touch``."""
    return {
        "cull": f"""SELECT {key}, {size}, {order} FROM {source}
                     WHERE {evictable} AND {order} > :after ORDER BY {order} LIMIT :batch""",
        "evictable": f"SELECT {key} FROM {source} WHERE {evictable} ORDER BY {order}",
        "evictable_of": f"""SELECT {key} FROM {source} WHERE {key} IN LIST(:hashes) AND {evictable}
                             ORDER BY {order}""",
    }


def _upsert(table: str, columns: str, key: str, select: str, update: str) -> str:
    return (f"INSERT INTO {table} ({columns}) {select} ON CONFLICT ({key}) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in update.split(", ")))


_UPLOAD = _upsert("uploads", "hash, host, url, error, time, encrypted", "hash, host",
                  "VALUES (:hash, :host, :url, :error, :time, :encrypted)", "url, error, time, encrypted")
_SHARE = _upsert("shares", "hash, idx, host, url, error, digest, size, encrypted, time", "hash, idx",
                 """SELECT :hash, :idx, :host, :url, :error, :digest, :size, :encrypted, :time
                      FROM files WHERE hash = :hash AND spread_k = :k AND spread_n = :n""",
                 "host, url, error, digest, size, encrypted, time")
_RECORDS = (f"SELECT {RECORD_COLUMNS} FROM {{}} f LEFT JOIN uploads u ON u.hash = f.hash {{}}"
            " ORDER BY f.hash, u.host")
_SHARES = f"SELECT {SHARE_COLUMNS} FROM shares WHERE {{}} ORDER BY hash, idx"
_LOAD_TABLES = ("load_files", "load_uploads", "load_shares")

#: The statements both dialects run as they are (in the neutral spelling above).
COMMON: dict[str, str] = {
    "exists": "SELECT 1 FROM files WHERE hash = :hash",
    # -- this node's view: {files} (aliases f, and c where the cache rows are apart), {cached_rows},
    # {node_rows} (its cached or pinned files), its running totals in the {state} row where {mine},
    # the change sequence and the count of files in {shared}; {holders}, the set of hosts holding
    # files.hash (as holdings keeps it), and {members}, the hosts m.value of the holdings row k
    "totals": "SELECT cached_bytes, cached_files, pinned_files FROM {state} WHERE {mine}",
    "set_totals": """UPDATE {state} SET cached_bytes = :bytes, cached_files = :files, pinned_files = :pinned
                      WHERE {mine}""",
    "actual_totals": """SELECT coalesce(sum(size) FILTER (WHERE cached), 0), count(*) FILTER (WHERE cached),
                               count(*) FILTER (WHERE pinned)
                          FROM {node_rows}""",
    "cached_sizes": "SELECT hash, size FROM {cached_rows}",
    "sequence": "SELECT seq FROM {shared} WHERE id = 0",
    "advance": "UPDATE {shared} SET seq = seq + :by, files = files + :added WHERE id = 0",
    "entry": "SELECT f.hash, f.name, f.size, {cached}, {pinned}, f.copies FROM {files} WHERE f.hash = :hash",
    "recent_entries": """SELECT f.hash, f.name, f.size, {cached}, {pinned}, f.copies FROM {files}
                          ORDER BY f.datetime DESC, f.hash DESC LIMIT :limit""",
    "uncopied": "SELECT f.hash, {cached} FROM {files} WHERE f.copies = 0 ORDER BY f.hash",
    "listing": """SELECT f.hash, f.name, f.size, f.datetime, {cached}, {pinned}, count(u.url) AS held,
                         count(u.host) AS tried, f.spread_k, f.spread_n,
                         (SELECT count(s.url) FROM shares s WHERE s.hash = f.hash) AS shares
                    FROM {files} LEFT JOIN uploads u ON u.hash = f.hash AND u.host IN LIST(:hosts)
                   WHERE (NOT :cached OR {cached}) AND (f.name, f.hash) > (:name, :hash)
                   GROUP BY f.hash, {cached}, {pinned}
                  HAVING (NOT :pending OR count(u.url) < LEN(:hosts))
                   ORDER BY f.name, f.hash LIMIT :page""",
    "counts": """SELECT g.files, coalesce(n.cached_files, 0), coalesce(n.pinned_files, 0),
                        (SELECT coalesce(sum(k.files), 0) FROM holdings k
                          WHERE (SELECT count(*) FROM {members} WHERE m.value IN LIST(:hosts)) < LEN(:hosts))
                   FROM {shared} g LEFT JOIN {state} n ON n.{mine} WHERE g.id = 0""",
    "records_of": _RECORDS.format("files", "WHERE f.hash IN LIST(:hashes)"),
    "shares_of": _SHARES.format("hash IN LIST(:hashes)"),
    "records_page": _RECORDS.format("(SELECT * FROM files WHERE hash > :after ORDER BY hash LIMIT :page)",
                                    ""),
    "shares_page": _SHARES.format("hash > :after AND hash <= :last"),
    "count": "SELECT files FROM {shared} WHERE id = 0",
    "recent": "SELECT hash FROM files ORDER BY datetime DESC, hash DESC LIMIT :limit",
    "host_health": """SELECT name, failures, last_ok, last_error, last_error_time FROM hosts
                       WHERE name IN LIST(:names)""",
    "held_per_host": "SELECT m.value, sum(k.files) FROM holdings k, {members} GROUP BY m.value",
    "transfers": "SELECT month, host, sent, fetched FROM transfers ORDER BY month, host",
    "copies_older_than": """SELECT u.hash, u.url, f.copies FROM uploads u JOIN files f ON f.hash = u.hash
                             WHERE u.host = :host AND u.url IS NOT NULL AND u.time < :before
                             ORDER BY u.time""",
    "under_copies": "SELECT hash FROM files WHERE copies < :copies ORDER BY hash",
    "incomplete_spreads": """SELECT hash FROM files f WHERE spread_n IS NOT NULL
                              AND (SELECT count(url) FROM shares s WHERE s.hash = f.hash) < spread_n
                             ORDER BY hash""",
    "changes": "SELECT hash, seq FROM files WHERE seq > :since ORDER BY seq LIMIT :limit",
    "drop_upload": "DELETE FROM uploads WHERE hash = :hash AND host = :host",
    "add": """INSERT INTO files (hash, name, size, datetime) VALUES (:hash, :name, :size, :datetime)
              ON CONFLICT (hash) DO NOTHING""",
    "forget": "DELETE FROM files WHERE hash = :hash",
    "set_upload": _UPLOAD,
    "keep_upload": _UPLOAD + " WHERE excluded.url IS NOT NULL OR uploads.url IS NULL",
    "set_spread": "UPDATE files SET spread_k = :k, spread_n = :n WHERE hash = :hash AND spread_k IS NULL",
    "keep_share": _SHARE + " WHERE excluded.url IS NOT NULL OR shares.url IS NULL",
    "share_lost": """UPDATE shares SET url = NULL, error = :error, time = :time
                      WHERE hash = :hash AND idx = :idx RETURNING host""",
    "host_ok": """INSERT INTO hosts (name, failures, last_ok) VALUES (:host, 0, :now)
                  ON CONFLICT (name) DO UPDATE SET failures = 0, last_ok = excluded.last_ok""",
    "host_error": """INSERT INTO hosts (name, failures, last_error, last_error_time)
                     VALUES (:host, 1, :error, :now)
                     ON CONFLICT (name) DO UPDATE SET failures = hosts.failures + 1,
                         last_error = excluded.last_error, last_error_time = excluded.last_error_time""",
    "traffic": """INSERT INTO transfers (month, host, sent, fetched) VALUES (:month, :host, :sent, :fetched)
                  ON CONFLICT (month, host) DO UPDATE SET sent = transfers.sent + excluded.sent,
                      fetched = transfers.fetched + excluded.fetched""",
    # -- a merge, once the dialect has loaded load_files, load_uploads, load_shares (union()'s rows)
    "clashes": """SELECT l.hash FROM load_files l JOIN files f ON f.hash = l.hash
                   WHERE f.size <> l.size ORDER BY l.hash""",
    **{f"unload_{t}": f"DELETE FROM {t} WHERE hash IN LIST(:hashes)" for t in _LOAD_TABLES},
    "other_spread": """DELETE FROM load_shares WHERE hash IN (
                           SELECT l.hash FROM load_files l JOIN files f ON f.hash = l.hash
                            WHERE f.spread_k IS NOT NULL
                              AND (l.spread_k IS NULL OR f.spread_k <> l.spread_k
                                   OR f.spread_n <> l.spread_n))""",
    "changed": """INSERT INTO load_changed
                  SELECT l.hash, f.hash IS NULL FROM load_files l LEFT JOIN files f ON f.hash = l.hash
                   WHERE f.hash IS NULL
                      OR EXISTS (SELECT 1 FROM load_uploads lu
                                   LEFT JOIN uploads u ON u.hash = lu.hash AND u.host = lu.host
                                  WHERE lu.hash = l.hash
                                    AND (u.hash IS NULL OR (u.url IS NULL AND lu.url IS NOT NULL)))
                      OR EXISTS (SELECT 1 FROM load_shares ls
                                   LEFT JOIN shares s ON s.hash = ls.hash AND s.idx = ls.idx
                                  WHERE ls.hash = l.hash
                                    AND (s.hash IS NULL OR (s.url IS NULL AND ls.url IS NOT NULL)))
                   ORDER BY l.hash""",
    "count_changed": """SELECT count(*) FILTER (WHERE added), count(*) FILTER (WHERE NOT added)
                          FROM load_changed""",
    # the holdings of the changed files, out before their holders are set again, back in after
    "unhold": """UPDATE holdings SET files = holdings.files - c.n
                   FROM (SELECT f.holders, count(*) AS n FROM load_changed l JOIN files f ON f.hash = l.hash
                          WHERE NOT l.added GROUP BY f.holders) AS c
                  WHERE holdings.holders = c.holders""",
    "hold": """INSERT INTO holdings (holders, files)
               SELECT f.holders, count(*) FROM load_changed l JOIN files f ON f.hash = l.hash
                WHERE true GROUP BY f.holders
               ON CONFLICT (holders) DO UPDATE SET files = holdings.files + excluded.files""",
    "unheld": "DELETE FROM holdings WHERE files = 0",
    "merge_files": """INSERT INTO files (hash, name, size, datetime, spread_k, spread_n)
                      SELECT hash, name, size, datetime, spread_k, spread_n FROM load_files
                       WHERE true ORDER BY hash
                      ON CONFLICT (hash) DO UPDATE
                      SET spread_k = excluded.spread_k, spread_n = excluded.spread_n
                      WHERE files.spread_k IS NULL AND excluded.spread_k IS NOT NULL""",
    "merge_uploads": """INSERT INTO uploads (hash, host, url, error, time, encrypted)
                        SELECT hash, host, url, error, :now, encrypted FROM load_uploads
                         WHERE true ORDER BY hash, host
                        ON CONFLICT (hash, host) DO UPDATE
                        SET url = excluded.url, error = NULL, time = excluded.time,
                            encrypted = excluded.encrypted
                        WHERE uploads.url IS NULL AND excluded.url IS NOT NULL""",
    "merge_shares": """INSERT INTO shares (hash, idx, host, url, error, digest, size, encrypted, time)
                       SELECT hash, idx, host, url, error, digest, size, encrypted, :now FROM load_shares
                        WHERE true ORDER BY hash, idx
                       ON CONFLICT (hash, idx) DO UPDATE
                       SET host = excluded.host, url = excluded.url, error = NULL, digest = excluded.digest,
                           size = excluded.size, encrypted = excluded.encrypted, time = excluded.time
                       WHERE shares.url IS NULL AND excluded.url IS NOT NULL""",
    "merge_copies": """UPDATE files
                          SET copies = (SELECT count(u.url) FROM uploads u WHERE u.hash = files.hash)
                                     + CASE WHEN files.spread_k IS NOT NULL
                                             AND (SELECT count(s.url) FROM shares s WHERE s.hash = files.hash)
                                                 >= files.spread_k THEN 1 ELSE 0 END,
                              holders = {holders},
                              seq = :base + c.n
                         FROM (SELECT hash, row_number() OVER (ORDER BY hash) AS n FROM load_changed) AS c
                        WHERE files.hash = c.hash""",
    # -- the running counts set from the rows (the migration that brought them; see _fill_counts)
    "fill_holders": "UPDATE files SET holders = {holders}",
    "clear_holdings": "DELETE FROM holdings",
    "fill_holdings": """INSERT INTO holdings (holders, files)
                        SELECT holders, count(*) FROM files GROUP BY holders""",
    "fill_files": "UPDATE {shared} SET files = (SELECT count(*) FROM files) WHERE id = 0",
}

#: The statements of _fill_counts, in order ("fill_pinned" is the dialect's: every node's pins).
_FILL = ("fill_holders", "clear_holdings", "fill_holdings", "fill_files", "fill_pinned")


def dialect(statements: dict[str, str], view: dict[str, str], list_in: str, length: str,
            param: str = ":{}") -> dict[str, str]:
    """COMMON and a dialect's own ``statements`` in its spelling: ``view`` gives this
    node's view of the catalog (the names in COMMON's braces), ``list_in`` and
    ``length`` spell the markers, ``param`` a named parameter (``{}``: its name)."""
    def spell(text: str) -> str:
        text = text.format(**view)
        text = re.sub(r"IN LIST\(:(\w+)\)", lambda m: list_in.format(m[1]), text)
        text = re.sub(r"LEN\(:(\w+)\)", lambda m: length.format(m[1]), text)
        return re.sub(r"(?<![:\w]):([a-z_]\w*)", lambda m: param.format(m[1]), text)

    return {name: spell(text) for name, text in {**COMMON, **statements}.items()}


def _entry(row: Sequence[Any]) -> CacheEntry:
    """A file's state on this node from a row of (hash, name, size, cached, pinned, copies)."""
    return CacheEntry(row[0], row[1], row[2], bool(row[3]), bool(row[4]), row[5])


def _guarded(method: Callable[..., T]) -> Callable[..., T]:
    """The driver's errors raised by ``method`` (a generator's too) become CatalogError."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def stream(self: SQLCatalog, *args: Any, **kwargs: Any) -> Any:
            try:
                yield from method(self, *args, **kwargs)
            except self._errors as exc:
                raise self._failure(exc) from None

        return stream

    @functools.wraps(method)
    def call(self: SQLCatalog, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except self._errors as exc:
            raise self._failure(exc) from None

    return call


class SQLCatalog(CatalogBase):
    """Every catalog method, over the dialect primitives below."""

    #: The dialect's statements by name, in its spelling (see :func:`dialect`).
    Q: ClassVar[dict[str, str]]
    #: The driver's errors, turned into CatalogError by ``_failure`` (none: left as they are).
    _errors: ClassVar[tuple[type[Exception], ...]] = ()
    _node: str | None = None

    # -- what a dialect gives -------------------------------------------------------

    @abstractmethod
    def _write(self, body: Callable[[Any], T], *, node: bool = False, shared: bool = False,
               durable: bool = True, nodes_of: str | None = None) -> T:
        """Run ``body(tx)`` in one write transaction.  ``node``: this node's cache state
        changes; ``shared``: shared records change; ``nodes_of``: the cache state of every
        node caching that file changes; ``durable=False``: the commit need not reach the disk."""

    @abstractmethod
    def _reader(self) -> Any:
        """What a read outside any transaction runs on."""

    @abstractmethod
    def _list(self, values: Sequence[str]) -> Any:
        """A list of names bound as one parameter."""

    @abstractmethod
    def _load(self, tx: Any, loaded: list[FileRecord], spreads: bool) -> None:
        """Fill load_files, load_uploads and load_shares with ``loaded`` (union()'s records)
        and load_changed (hash, added) with the files the merge adds or changes."""

    def _exec(self, tx: Any, query: str, params: dict[str, Any]) -> Any:
        return tx.execute(query, params)

    def _failure(self, exc: Exception) -> CatalogError:
        return CatalogError(str(exc))

    def _admit_new(self, tx: Any, record: FileRecord) -> None:
        """Before a file unknown to the catalog is cached by ``admit``: nothing by default."""

    def _fill_counts(self, tx: Any) -> None:
        """Set the running counts (files, every node's pins, the holders of each file and
        the holdings of each set of hosts) from the rows, the per-row triggers standing
        aside: the one scan of the migration that brought them (its "@counts" step)."""
        self._run(tx, "bulk", on=True)
        for key in _FILL:
            self._run(tx, key)
        self._run(tx, "bulk", on=False)

    # -- connections: one per thread, every one closed by close() --------------------

    def _open_connections(self) -> None:
        self._local = threading.local()
        self._connections: list[Any] = []
        self._guard = threading.Lock()
        self._closed = False

    def _register(self, conn: Any) -> None:
        """Keep ``conn`` as this thread's connection (and close it with the catalog)."""
        self._local.conn = conn
        with self._guard:
            self._connections.append(conn)

    def _unregister(self, conn: Any) -> None:
        with self._guard:
            if conn in self._connections:
                self._connections.remove(conn)
        conn.close()

    def close(self) -> None:
        """Close every connection opened by any thread."""
        with self._guard:
            self._closed = True
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def _check_open(self) -> None:
        if self._closed:
            raise CatalogError("the catalog is closed")

    def _check_version(self, version: int, known: int) -> None:
        if version > known:
            raise CatalogError(f"catalog {self} has schema version {version}; this cloudmanager "
                               f"knows up to {known}: upgrade cloudmanager")

    @staticmethod
    def _load_rows(loaded: list[FileRecord]) -> dict[str, Iterator[tuple[Any, ...]]]:
        """The rows of the load tables, by table, for ``loaded`` (union()'s records)."""
        return {
            "load_files": ((r.hash, r.name, r.size, r.datetime, *(r.spread or (None, None))) for r in loaded),
            "load_uploads": ((r.hash, u.host, u.url, u.error, u.encrypted)
                             for r in loaded for u in r.uploads),
            "load_shares": ((r.hash, s.index, s.host, s.url, s.error, s.digest, s.size, s.encrypted)
                            for r in loaded for s in r.shares),
        }

    # -- running statements ---------------------------------------------------------

    def _run(self, tx: Any, key: str, /, **params: Any) -> Any:
        return self._exec(tx, self.Q[key], {"node": self._node, **params})

    def _changed(self, tx: Any, key: str, /, **params: Any) -> bool:
        """Whether the statement changed a row."""
        return bool(self._run(tx, key, **params).rowcount > 0)

    def _rows(self, key: str, /, **params: Any) -> list[Any]:
        return list(self._run(self._reader(), key, **params).fetchall())

    def _lookup(self, key: str, digest: str) -> Any:
        """The first row of the read ``key`` about one file, or None: the lean path of
        the lookups every command makes (exists, is_cached, entry)."""
        try:  # its own guard (see the end of the module): one call less on the hottest path
            return self._exec(self._reader(), self.Q[key], {"hash": digest, "node": self._node}).fetchone()
        except self._errors as exc:
            raise self._failure(exc) from None

    def _one(self, key: str, tx: Any = None, /, **params: Any) -> Any:
        rows = self._run(self._reader() if tx is None else tx, key, **params).fetchall()
        return rows[0] if rows else None

    def _records_of(self, digests: Sequence[str]) -> list[FileRecord]:
        wanted = self._list(digests)
        rows, shares = self._rows("records_of", hashes=wanted), self._rows("shares_of", hashes=wanted)
        return list(group_records(rows, shares))

    # -- reads ----------------------------------------------------------------------

    def schema_version(self) -> int:
        row = self._one("schema_version")
        return int(row[0]) if row else 0

    def exists(self, digest: str) -> bool:
        return self._lookup("exists", digest) is not None

    def is_cached(self, digest: str) -> bool:
        row = self._lookup("is_cached", digest)
        return bool(row and row[0])

    def entry(self, digest: str) -> CacheEntry | None:
        row = self._lookup("entry", digest)
        return None if row is None else _entry(row)

    def recent_files(self, limit: int) -> list[tuple[FileRecord, CacheEntry]]:
        entries = [_entry(row) for row in self._rows("recent_entries", limit=limit)]
        found = {record.hash: record for record in self._records_of([entry.hash for entry in entries])}
        return [(found[entry.hash], entry) for entry in entries if entry.hash in found]

    def record(self, digest: str) -> FileRecord | None:
        return next(iter(self._records_of([digest])), None)

    def records(self) -> Iterator[FileRecord]:
        """Every record, in hash order, read a page at a time."""
        after = ""
        while rows := self._rows("records_page", after=after, page=PAGE):
            shares = self._rows("shares_page", after=after, last=rows[-1][0])
            after = rows[-1][0]
            yield from group_records(rows, shares)

    def usage(self) -> tuple[int, int]:
        used, cached, _ = self._totals()
        return used, cached

    def _totals(self, tx: Any = None) -> tuple[int, int, int]:
        """This node's running totals: cached bytes, cached files, pinned files."""
        row = self._one("totals", tx)
        return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)

    def cached_sizes(self) -> dict[str, int]:
        return {str(r[0]): int(r[1]) for r in self._rows("cached_sizes")}

    def count(self) -> int:
        return int(self._one("count")[0])

    def recent(self, limit: int) -> list[str]:
        return [r[0] for r in self._rows("recent", limit=limit)]

    def host_health(self, names: Iterable[str]) -> dict[str, HostHealth]:
        wanted = list(names)
        found = {row[0]: HostHealth(*row) for row in self._rows("host_health", names=self._list(wanted))}
        return {name: found.get(name, HostHealth(name)) for name in wanted}

    def missing_copies(self, hosts: Sequence[str]) -> list[tuple[str, str]]:
        return [(str(a), str(b)) for a, b in self._rows("missing_copies", names=self._list(hosts))]

    # -- cache state ----------------------------------------------------------------

    def admit(self, record: FileRecord, capacity: int) -> Admission:
        def body(tx: Any) -> Admission:
            state = self._one("admit_state", tx, hash=record.hash)
            if state is None:
                raise CatalogError(f"catalog {self}: node {self._node!r} is not registered")
            used, cached, known_size = state
            if cached:
                self._touch(tx, record.hash)
                return Admission(True, already=True)
            size = record.size if known_size is None else int(known_size)
            victims = self._victims(tx, int(used) + size - capacity)
            if victims is None:
                return Admission(False)
            self._uncount(tx, victims)
            if known_size is None:
                self._admit_new(tx, record)
            if self._run(tx, "admit", hash=record.hash, name=record.name, size=record.size,
                         datetime=record.datetime, access=self._tick(tx)).rowcount != 1:
                raise _Retry(f"{record.hash} was forgotten while it was being cached")
            return Admission(True, tuple(victims))

        return self._write(body)

    def _victims(self, tx: Any, need: int) -> list[str] | None:
        """Least recently used evictable files freeing ``need`` bytes (None: impossible)."""
        victims: list[str] = []
        if need <= 0:
            return victims
        freed, after = 0, -1
        while True:
            rows = self._run(tx, "cull", after=after, batch=VICTIM_BATCH).fetchall()
            for digest, size, _ in rows:
                victims.append(digest)
                freed += size
                if freed >= need:
                    return victims
            if len(rows) < VICTIM_BATCH:
                return None
            after = rows[-1][2]

    def _uncount(self, tx: Any, digests: Sequence[str]) -> list[str]:
        """Count these files as not cached; those that were, as given."""
        if not digests:
            return []
        changed = {row[0] for row in self._run(tx, "uncount", hashes=self._list(digests)).fetchall()}
        return [d for d in dict.fromkeys(digests) if d in changed]

    def _tick(self, tx: Any) -> int | None:
        """The LRU clock's next value, where the dialect's touch does not take it itself."""
        return int(self._one("tick", tx)[0]) if "tick" in self.Q else None

    def _touch(self, tx: Any, digest: str) -> None:
        self._run(tx, "touch", hash=digest, access=self._tick(tx))

    def shrink_to(self, capacity: int) -> list[str]:
        def body(tx: Any) -> list[str]:
            used, _, _ = self._totals(tx)
            if used <= capacity:
                return []
            victims = self._victims(tx, used - capacity)
            if victims is None:  # cannot fit: free what may be freed
                victims = [row[0] for row in self._run(tx, "evictable").fetchall()]
            return self._uncount(tx, victims)

        return self._write(body, node=True)

    def touch(self, digest: str) -> None:
        self._write(lambda tx: self._touch(tx, digest), durable=False)

    def uncache(self, digests: Iterable[str]) -> list[str]:
        wanted = list(digests)
        if not wanted:
            return []
        return self._write(lambda tx: self._uncount(tx, wanted), node=True)

    def evictable(self, digests: Iterable[str] | None = None) -> list[str]:
        if digests is None:
            return [r[0] for r in self._rows("evictable")]
        return [r[0] for r in self._rows("evictable_of", hashes=self._list(list(digests)))]

    def set_pinned(self, digest: str, pinned: bool) -> bool:
        return self._write(lambda tx: self._changed(tx, "set_pinned", hash=digest, pinned=pinned), node=True)

    def cache_owner(self) -> str | None:
        row = self._one("cache_owner")
        return None if row is None or row[0] is None else str(row[0])

    def set_cache_owner(self, cache: str) -> None:
        self._write(lambda tx: self._run(tx, "set_cache_owner", cache=cache))

    def recount(self, fix: bool = True) -> bool:
        def body(tx: Any) -> bool:
            row = self._one("actual_totals", tx)
            actual = (int(row[0]), int(row[1]), int(row[2]))
            if actual == self._totals(tx):
                return False
            if fix:
                self._run(tx, "set_totals", bytes=actual[0], files=actual[1], pinned=actual[2])
            return True

        return self._write(body, node=True)

    # -- files and host copies ------------------------------------------------------

    def add(self, record: FileRecord) -> bool:
        def body(tx: Any) -> bool:
            added = self._changed(tx, "add", hash=record.hash, name=record.name, size=record.size,
                                  datetime=record.datetime)
            for upload in record.uploads:
                self._set_upload(tx, record.hash, upload, keep_url=True)
            if record.spread is not None:
                self._set_shares(tx, record.hash, record.spread, record.shares)
            return added

        return self._write(body, shared=True)

    def forget(self, digest: str) -> bool:
        return self._write(lambda tx: self._changed(tx, "forget", hash=digest), shared=True, nodes_of=digest)

    def _set_upload(self, tx: Any, digest: str, upload: Upload, *, keep_url: bool) -> None:
        """Upsert one host entry; with ``keep_url`` an error does not replace a URL."""
        self._run(tx, "keep_upload" if keep_url else "set_upload", hash=digest, host=upload.host,
                  url=upload.url, error=upload.error, time=int(time.time()), encrypted=upload.encrypted)

    def _set_shares(self, tx: Any, digest: str, spread: tuple[int, int], shares: Iterable[Share]) -> None:
        """Record shares of a spread file (the spread is set if the file had none);
        shares of another spread than the file's are left out.  An error never
        replaces a URL."""
        self._run(tx, "set_spread", hash=digest, k=spread[0], n=spread[1])
        now = int(time.time())
        rows = [{"hash": digest, "idx": s.index, "host": s.host, "url": s.url, "error": s.error,
                 "digest": s.digest, "size": s.size, "encrypted": s.encrypted, "time": now,
                 "k": spread[0], "n": spread[1]} for s in shares]
        if rows:
            tx.executemany(self.Q["keep_share"], rows)

    def record_upload(self, digest: str, upload: Upload, sent: int = 0) -> None:
        def body(tx: Any) -> None:
            self._set_upload(tx, digest, upload, keep_url=True)
            self._note_host(tx, upload.host, upload.error, sent=sent)

        self._write(body, shared=True, durable=False)

    def record_uploads(self, digest: str, uploads: Sequence[Upload]) -> bool:
        def body(tx: Any) -> bool:
            if self._one("file_held", tx, hash=digest) is None:  # held against a forget until the commit
                return False
            for upload in uploads:
                self._set_upload(tx, digest, upload, keep_url=True)
            return True

        return self._write(body, shared=True)

    def record_fetch(self, host: str, error: str | None, fetched: int = 0, *,
                     digest: str | None = None, lost: bool = False) -> None:
        def body(tx: Any) -> None:
            if lost and digest is not None:
                self._set_upload(tx, digest, Upload(host, error=error or "copy lost"), keep_url=False)
            self._note_host(tx, host, error, fetched=fetched)

        self._write(body, shared=lost and digest is not None)

    def note_host(self, host: str, error: str | None, sent: int = 0, fetched: int = 0) -> None:
        self._write(lambda tx: self._note_host(tx, host, error, sent=sent, fetched=fetched), durable=False)

    def _note_host(self, tx: Any, host: str, error: str | None, sent: int = 0, fetched: int = 0) -> None:
        now = int(time.time())
        self._run(tx, "host_ok" if error is None else "host_error", host=host, error=error, now=now)
        if sent or fetched:
            self._run(tx, "traffic", month=month(now), host=host, sent=sent, fetched=fetched)

    def record_shares(self, digest: str, spread: tuple[int, int], shares: Sequence[Share],
                      sent: int = 0) -> None:
        def body(tx: Any) -> None:
            self._set_shares(tx, digest, spread, shares)
            for share in shares:
                self._note_host(tx, share.host, share.error, sent=share.size if share.ok else 0)

        self._write(body, shared=True, durable=False)

    def share_lost(self, digest: str, index: int, error: str, fetched: int = 0) -> None:
        def body(tx: Any) -> None:
            row = self._one("share_lost", tx, error=error, time=int(time.time()), hash=digest, idx=index)
            if row is not None:
                self._note_host(tx, row[0], error, fetched=fetched)

        self._write(body, shared=True)

    def incomplete_spreads(self) -> list[str]:
        return [r[0] for r in self._rows("incomplete_spreads")]

    def drop_upload(self, digest: str, host: str) -> None:
        self._write(lambda tx: self._run(tx, "drop_upload", hash=digest, host=host), shared=True)

    # -- node sync ------------------------------------------------------------------

    def merge(self, records: Sequence[FileRecord], *, skip_clashes: bool = False) -> MergeResult:
        """Union ``records`` into the catalog in one transaction (see CatalogBase.merge).

        The united records are bulk-loaded into temporary tables, then merged by a
        few set-wise statements with the per-row sequence triggers standing aside;
        the changed files get consecutive sequence numbers in hash order."""
        loaded = union(records)
        spreads = any(r.spread is not None for r in loaded)  # the share steps cost nothing otherwise

        def body(tx: Any) -> MergeResult:
            self._load(tx, loaded, spreads)
            clashes = tuple(str(row[0]) for row in self._run(tx, "clashes").fetchall())
            if clashes and not skip_clashes:
                raise ValueError(clashes[0])
            for table in _LOAD_TABLES if clashes else ():
                self._run(tx, f"unload_{table}", hashes=self._list(clashes))
            if spreads:  # shares of a file this catalog knows under another spread are left out
                self._run(tx, "other_spread")
            self._run(tx, "changed")
            counted = self._one("count_changed", tx)
            added, changed = int(counted[0]), int(counted[1])
            self._run(tx, "bulk", on=True)  # the per-row triggers stand aside
            if changed:
                self._run(tx, "unhold")
            self._run(tx, "merge_files")
            now = int(time.time())
            self._run(tx, "merge_uploads", now=now)
            if spreads:
                self._run(tx, "merge_shares", now=now)
            base = int(self._one("sequence", tx)[0])
            self._run(tx, "merge_copies", base=base)
            self._run(tx, "hold")
            if changed:
                self._run(tx, "unheld")
            self._run(tx, "advance", by=added + changed, added=added)
            self._run(tx, "bulk", on=False)
            return MergeResult(added, changed, clashes, base, base + added + changed)

        return self._write(body, shared=True)

    def changes(self, since: int, limit: int) -> tuple[list[FileRecord], int, bool]:
        rows = self._rows("changes", since=since, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        if not rows:
            return [], since, False
        wanted = [r[0] for r in rows]
        found = {record.hash: record for record in self._records_of(wanted)}
        return [found[d] for d in wanted if d in found], int(rows[-1][1]), more

    def sequence(self) -> int:
        row = self._one("sequence")
        return int(row[0]) if row else 0

    def peer_cursors(self, url: str) -> tuple[int, int]:
        row = self._one("peer_cursors", url=url)
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def set_peer_cursor(self, url: str, *, pulled: int | None = None, pushed: int | None = None) -> None:
        self._write(lambda tx: self._run(tx, "set_peer_cursor", url=url, pulled=pulled, pushed=pushed))

    # -- listings and figures -------------------------------------------------------

    def listing(self, hosts: Sequence[str], *, cached_only: bool = False,
                pending_only: bool = False) -> Iterator[Listed]:
        """By name, read a page at a time."""
        params: dict[str, Any] = {"hosts": self._list(hosts), "cached": cached_only, "pending": pending_only,
                                  "page": PAGE, "name": "", "hash": ""}
        while True:
            rows = self._rows("listing", **params)
            for row in rows:
                spread = (row[8], row[9]) if row[8] is not None else None
                yield Listed(row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5]), row[6], row[7],
                             spread, row[10])
            if len(rows) < PAGE:
                return
            params.update(name=rows[-1][1], hash=rows[-1][0])

    def counts(self, hosts: Sequence[str]) -> dict[str, int]:
        """See CatalogBase.counts.  One statement over running counts that the schema's
        triggers keep in the transaction changing the rows (a bulk merge keeps them
        itself): ``files`` (shared), ``cached`` and ``pinned`` (this node's totals), and
        ``pending`` from ``holdings``, the count of files of each set of hosts holding
        whole copies (each file's set is its ``holders``).

        ``pending`` sums the holdings whose set has fewer than ``len(hosts)`` of
        ``hosts``: exact for any ``hosts``, copies on hosts outside them (inactive
        hosts, hosts gone from the configuration, another node's) included.  Its cost
        is O(S x len(hosts)), S the number of sets in use: at most min(files, 2 ** hosts
        ever recorded), in practice a handful (every host, all but one that failed...);
        neither the number of files nor that of pending files.  The price: each file
        keeps its set, and a change of the hosts holding a file moves it from one
        holdings row to another.  (``files.copies`` under an index would not do: it
        counts hosts outside ``hosts`` and a copy for K shares, so ``copies <
        len(hosts)`` finds only part of the pending files, and an index range costs
        the pending files, which are every file once a host is added.)
        """
        row = self._one("counts", hosts=self._list(hosts))
        return dict(zip(("files", "cached", "pinned", "pending"), (int(v) for v in row), strict=True))

    def held_per_host(self) -> dict[str, int]:
        return {str(r[0]): int(r[1]) for r in self._rows("held_per_host")}

    def transfers(self) -> list[tuple[str, str, int, int]]:
        return [(r[0], r[1], int(r[2]), int(r[3])) for r in self._rows("transfers")]

    def copies_older_than(self, host: str, before: int) -> list[tuple[str, str, int]]:
        return [(r[0], r[1], int(r[2])) for r in self._rows("copies_older_than", host=host, before=before)]

    def uncopied(self) -> list[tuple[str, bool]]:
        return [(str(digest), bool(cached)) for digest, cached in self._rows("uncopied")]

    def under_copies(self, copies: int) -> list[str]:
        return [r[0] for r in self._rows("under_copies", copies=copies)]


#: Every public method maps the driver's errors (the lookups through _lookup, which does it itself).
_SELF_GUARDED = {"close", "exists", "is_cached", "entry"}
for _name in CatalogBase.__abstractmethods__ - _SELF_GUARDED:
    _method = _guarded(getattr(SQLCatalog, _name))
    _method.__doc__ = _method.__doc__ or getattr(CatalogBase, _name).__doc__
    setattr(SQLCatalog, _name, _method)
