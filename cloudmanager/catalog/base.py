"""The catalog's contract: one abstract class whose docstrings every implementation follows.

A catalog records what is known of every file (name, size, time, and each
host's copy or error: shared by every node that uses the catalog) and one
node's cache state (which files are cached, pinned, and in which LRU order,
with exact running totals).  SQLite (sqlite.py) is the embedded default, one
node per catalog; PostgreSQL (postgres.py) lets a fleet of nodes share one
catalog, each with the cache state of its own.

Every method is atomic: it changes everything it says, or nothing.  The
records exchanged (FileRecord, Upload, Share, CacheEntry) are in records.py;
the results particular to the catalog are defined here.  Helpers that both
implementations need (grouping rows into records, the union of records before
a merge) live here too, so that the implementations hold their SQL only.
"""

from __future__ import annotations

import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import CloudManagerError
from ..records import CacheEntry, FileRecord, Share, Upload


class CatalogError(CloudManagerError):
    """The catalog cannot be used (unreachable, unreadable, or from a newer version)."""


@dataclass(frozen=True)
class Admission:
    """The outcome of asking the catalog to count a file as cached."""

    admitted: bool
    victims: tuple[str, ...] = ()  # files evicted to make room (to remove from disk)
    already: bool = False  # it was cached already


@dataclass(frozen=True)
class MergeResult:
    """What a merge of another node's records did."""

    added: int
    changed: int
    clashes: tuple[str, ...] = ()  # hashes whose size disagreed with the catalog (left out)
    #: The change sequence numbers this merge gave: (first_seq, last_seq]; equal when it
    #: changed nothing.  A peer that sent the records need not pull those changes back.
    first_seq: int = 0
    last_seq: int = 0


@dataclass(frozen=True)
class Listed:
    """One line of a listing: a file, its cache state, and its copies."""

    hash: str
    name: str
    size: int
    datetime: int
    cached: bool
    pinned: bool
    held: int  # hosts (of those asked about) holding a copy
    tried: int  # hosts (of those asked about) with an entry, copy or error
    spread: tuple[int, int] | None = None  # (K, N) of a spread file
    shares: int = 0  # shares held, of a spread file


@dataclass(frozen=True)
class HostHealth:
    """How a host has behaved lately."""

    name: str
    failures: int = 0
    last_ok: int | None = None
    last_error: str | None = None
    last_error_time: int | None = None


class CatalogBase(ABC):
    """What the manager and the maintenance operations ask of a catalog.

    Safe to share between threads; several processes may open the same
    catalog at once.  Hashes given are valid SHA-256 (the manager checks them).
    "This node" is the node whose cache state the catalog was opened for: the
    only one for SQLite, the ``node`` id given to PostgreSQL.
    """

    # -- life cycle and schema ------------------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Close every connection opened by any thread; later calls raise CatalogError."""

    @abstractmethod
    def schema_version(self) -> int:
        """The schema version of the open catalog (opening migrates an older one and
        refuses a newer one with CatalogError "... upgrade cloudmanager")."""

    # -- reads ----------------------------------------------------------------------

    @abstractmethod
    def exists(self, digest: str) -> bool:
        """True when the file is in the catalog."""

    @abstractmethod
    def is_cached(self, digest: str) -> bool:
        """True when the catalog counts the file as cached on this node."""

    @abstractmethod
    def entry(self, digest: str) -> CacheEntry | None:
        """The file's state on this node (cached, pinned) and its copies, or None when unknown."""

    @abstractmethod
    def record(self, digest: str) -> FileRecord | None:
        """The exchangeable record of one file (name, size, time, uploads, shares), or None."""

    @abstractmethod
    def records(self) -> Iterator[FileRecord]:
        """Every record, in hash order, streamed.  The caller may call other methods
        (writes included) between two records."""

    @abstractmethod
    def usage(self) -> tuple[int, int]:
        """(cached bytes, cached files) of this node, from the running totals: constant time."""

    @abstractmethod
    def cached_sizes(self) -> dict[str, int]:
        """Every file the catalog counts as cached on this node, with its size."""

    @abstractmethod
    def count(self) -> int:
        """How many files the catalog knows, from a running count: constant time."""

    @abstractmethod
    def recent(self, limit: int) -> list[str]:
        """The ``limit`` files first known most lately, newest first."""

    @abstractmethod
    def host_health(self, names: Iterable[str]) -> dict[str, HostHealth]:
        """Health of the named hosts (a host never used is perfectly healthy)."""

    @abstractmethod
    def missing_copies(self, hosts: Sequence[str]) -> list[tuple[str, str]]:
        """(hash, host) pairs a sync should retry, in order: an error recorded for one
        of ``hosts``, or a file no host holds yet that ``host`` has no entry for (but
        not a spread file: its missing shares are rebuilt instead)."""

    # -- this node's cache state ----------------------------------------------------

    @abstractmethod
    def admit(self, record: FileRecord, capacity: int) -> Admission:
        """Count a file as cached on this node if it fits, evicting least recently used files.

        In one transaction: when the file is cached already it is touched;
        otherwise the least recently used evictable files (cached, unpinned,
        held by a host: a file no host holds is never evicted) are uncounted
        until the file fits, the file is created if new, counted as cached and
        stamped most recently used.  When it cannot fit, nothing changes.  The
        caller removes the victims' bytes.  Two processes of one node admitting
        at once never take the usage above ``capacity``.
        """

    @abstractmethod
    def shrink_to(self, capacity: int) -> list[str]:
        """Uncount least recently used evictable files until usage fits ``capacity``
        (or, when it cannot, every evictable file); returns them."""

    @abstractmethod
    def touch(self, digest: str) -> None:
        """Mark a cached file as this node's most recently used (may be lost to a power cut)."""

    @abstractmethod
    def uncache(self, digests: Iterable[str]) -> list[str]:
        """Count these files as no longer cached on this node; returns those that were,
        in the order given."""

    @abstractmethod
    def evictable(self, digests: Iterable[str] | None = None) -> list[str]:
        """Of ``digests`` (or all), the files this node may evict, least recently used first."""

    @abstractmethod
    def set_pinned(self, digest: str, pinned: bool) -> bool:
        """Pin (never evict) or unpin a file on this node; False when the file is unknown."""

    @abstractmethod
    def cache_owner(self) -> str | None:
        """The cache folder whose state this catalog keeps, when it keeps one cache only
        (SQLite: recorded by :meth:`set_cache_owner`); None when none is recorded, and
        always None where every node keeps a cache state of its own (PostgreSQL)."""

    @abstractmethod
    def set_cache_owner(self, cache: str) -> None:
        """Record ``cache`` (an absolute path) as the folder whose state this catalog
        keeps (nothing to record where each node keeps its own state)."""

    @abstractmethod
    def recount(self, fix: bool = True) -> bool:
        """Check this node's running totals (cached bytes, cached files, pinned files)
        against its rows (and set them, when ``fix``); True when they were wrong."""

    # -- files and host copies (shared) ---------------------------------------------

    @abstractmethod
    def add(self, record: FileRecord) -> bool:
        """Insert a file (not cached) with its uploads and shares; False when it was known
        (its uploads are recorded all the same; an error never replaces a URL)."""

    @abstractmethod
    def forget(self, digest: str) -> bool:
        """Remove a file, its uploads and shares, and every node's cache state of it;
        False when unknown."""

    @abstractmethod
    def record_upload(self, digest: str, upload: Upload, sent: int = 0) -> None:
        """Record one host's result for one file, and the host's health and traffic.

        A failed upload does not replace a URL recorded for the same host (the
        copy another process made meanwhile is still there).  May be lost to a
        power cut: the file then counts as not yet sent and ``sync`` sends it again."""

    @abstractmethod
    def record_uploads(self, digest: str, uploads: Sequence[Upload]) -> bool:
        """Record hosts' results for a file, only if the catalog still knows it (False:
        it was forgotten meanwhile, nothing recorded).  A failed upload never replaces
        a URL.  The hosts' health is the caller's to note."""

    @abstractmethod
    def record_fetch(self, host: str, error: str | None, fetched: int = 0, *,
                     digest: str | None = None, lost: bool = False) -> None:
        """Record a download attempt from ``host``.  With ``lost``, the host's copy
        of ``digest`` is recorded as gone (wrong bytes, or not there any more)."""

    @abstractmethod
    def note_host(self, host: str, error: str | None, sent: int = 0, fetched: int = 0) -> None:
        """Record how a host did (error None: success) and the bytes it moved."""

    @abstractmethod
    def record_shares(self, digest: str, spread: tuple[int, int], shares: Sequence[Share],
                      sent: int = 0) -> None:
        """Record where a spread file's shares went (and each host's health); the file
        gets the spread (K, N) if it had none, shares of another spread are left out.
        May be lost to a power cut, as :meth:`record_upload`."""

    @abstractmethod
    def share_lost(self, digest: str, index: int, error: str, fetched: int = 0) -> None:
        """Record that a share's host does not give it back right (gone, or wrong bytes)."""

    @abstractmethod
    def incomplete_spreads(self) -> list[str]:
        """Spread files some of whose N shares no host holds, in hash order."""

    @abstractmethod
    def drop_upload(self, digest: str, host: str) -> None:
        """Forget ``host``'s entry for a file (its copy was deleted)."""

    # -- node sync ------------------------------------------------------------------

    @abstractmethod
    def merge(self, records: Sequence[FileRecord], *, skip_clashes: bool = False) -> MergeResult:
        """Union ``records`` into the catalog in one transaction (see :func:`union`).

        A URL beats an error for the same host; a known file keeps its name.  A
        record whose size disagrees with the catalog is a clash: by default
        ValueError (naming the hash) is raised and nothing changes; with
        ``skip_clashes`` those records are left out and reported.  Each file
        added or changed gets one new change sequence number.
        """

    @abstractmethod
    def changes(self, since: int, limit: int) -> tuple[list[FileRecord], int, bool]:
        """Records changed after change sequence number ``since``, oldest change first:
        at most ``limit`` of them, the cursor to ask from next, and whether more remain.

        A reader never sees a later number before an earlier one is committed, so
        paging by the cursor never skips a change."""

    @abstractmethod
    def sequence(self) -> int:
        """The last change sequence number given."""

    @abstractmethod
    def peer_cursors(self, url: str) -> tuple[int, int]:
        """(last sequence number pulled from the peer at ``url``, last of ours pushed to it),
        as this node remembers them."""

    @abstractmethod
    def set_peer_cursor(self, url: str, *, pulled: int | None = None, pushed: int | None = None) -> None:
        """Remember how far this node's exchange with the peer at ``url`` went."""

    # -- listings and figures -------------------------------------------------------

    @abstractmethod
    def listing(self, hosts: Sequence[str], *, cached_only: bool = False,
                pending_only: bool = False) -> Iterator[Listed]:
        """Every file with its cache state on this node and how many of ``hosts`` hold it,
        by name then hash (``cached_only``: cached here; ``pending_only``: files not yet
        held by every one of ``hosts``)."""

    @abstractmethod
    def counts(self, hosts: Sequence[str]) -> dict[str, int]:
        """The everyday figures, from running counts: the same cost whatever the number
        of files (a monitor may read them at every scrape).

        * ``files``: every file the catalog knows (shared by every node);
        * ``cached``: the files this node counts as cached (as ``usage()[1]``);
        * ``pinned``: the files pinned on this node, cached or not;
        * ``pending``: the files held by fewer than ``len(hosts)`` of ``hosts``, a host
          holding a file when its entry has a URL (an error is no copy, nor are the
          shares of a spread file): the files some host of ``hosts`` lacks, as
          :meth:`listing` with ``pending_only`` lists them.  None when ``hosts`` is
          empty; every file when a name is given twice.
        """

    @abstractmethod
    def held_per_host(self) -> dict[str, int]:
        """How many files each host holds a whole copy of (hosts holding none left out),
        from running counts, as :meth:`counts`."""

    @abstractmethod
    def transfers(self) -> list[tuple[str, str, int, int]]:
        """(month, host, bytes sent, bytes fetched), oldest month first."""

    @abstractmethod
    def copies_older_than(self, host: str, before: int) -> list[tuple[str, str, int]]:
        """(hash, locator, copies of that file) for ``host``'s copies made before ``before``,
        oldest first."""

    @abstractmethod
    def uncopied(self) -> list[tuple[str, bool]]:
        """Files no host holds (no whole copy, and fewer than K shares of a spread file),
        in hash order, each with whether this node counts it as cached."""

    @abstractmethod
    def under_copies(self, copies: int) -> list[str]:
        """Files held by fewer than ``copies`` hosts, in hash order."""

    # -- the newest files at once (for the node's page: a constant number of statements) --

    @abstractmethod
    def recent_files(self, limit: int) -> list[tuple[FileRecord, CacheEntry]]:
        """The ``limit`` files first known most lately, newest first (as :meth:`recent`),
        each with its record and its state on this node (as :meth:`record` and
        :meth:`entry`), read in a few statements however many files there are."""


# -- helpers both implementations use ------------------------------------------------

#: The columns of a record row: the file, one host entry, and the file's spread
#: (what :func:`group_records` reads; both schemas name them alike).
RECORD_COLUMNS = ("f.hash, f.name, f.size, f.datetime, u.host, u.url, u.error, u.encrypted, "
                  "f.spread_k, f.spread_n")
#: The columns of a share row.
SHARE_COLUMNS = "hash, idx, host, url, error, digest, size, encrypted"


def group_records(rows: Iterable[Sequence[Any]],
                  shares: Iterable[Sequence[Any]] = ()) -> Iterator[FileRecord]:
    """Records from rows of files joined with uploads (RECORD_COLUMNS) and rows of
    shares (SHARE_COLUMNS), both in hash order (merged as they stream)."""
    share_rows = itertools.groupby(shares, key=lambda row: row[0])
    pending = next(share_rows, None)
    for digest, group in itertools.groupby(rows, key=lambda row: row[0]):
        items = list(group)
        first = items[0]
        uploads = tuple(Upload(row[4], row[5], row[6], bool(row[7]))
                        for row in items if row[4] is not None)
        found: list[Share] = []
        while pending is not None and pending[0] < digest:
            pending = next(share_rows, None)
        if pending is not None and pending[0] == digest:
            found = [Share(r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7])) for r in pending[1]]
            pending = next(share_rows, None)
        spread = (int(first[8]), int(first[9])) if first[8] is not None else None
        yield FileRecord(str(first[0]), str(first[1]), int(first[2]), int(first[3]), uploads,
                         spread, tuple(found))


def union(records: Iterable[FileRecord]) -> list[FileRecord]:
    """Records with one record per file, in hash order: what a merge loads.

    The first record of a file gives its name, size, time and spread; host
    entries of every record of the file are united, one per host: the first URL
    met (with its ``encrypted`` flag), else the first error (with the flag of the
    last entry); shares are taken from records of the first record's spread, the
    first one per index.  A file's only record already in that form (hosts and
    share numbers each once, in order) is kept as it is: most dumps are all such.
    """
    groups: dict[str, list[FileRecord]] = {}
    for record in records:
        groups.setdefault(record.hash, []).append(record)
    return [group[0] if len(group) == 1 and _united_already(group[0]) else _unite(group)
            for _, group in sorted(groups.items(), key=lambda item: item[0])]


def _united_already(record: FileRecord) -> bool:
    """True when :func:`_unite` would give ``record`` back unchanged."""
    hosts = [upload.host for upload in record.uploads]
    indexes = [share.index for share in record.shares]
    return (all(a < b for a, b in itertools.pairwise(hosts))
            and all(a < b for a, b in itertools.pairwise(indexes))
            and all(upload.url is None or upload.error is None for upload in record.uploads)
            and (record.spread is not None or not record.shares))


def _unite(group: list[FileRecord]) -> FileRecord:
    """One record of the records of one file (see :func:`union`)."""
    first = group[0]
    uploads: dict[str, Upload] = {}
    shares: dict[int, Share] = {}
    for record in group:
        for upload in record.uploads:
            known = uploads.get(upload.host)
            if known is None or known.url is None:
                url = upload.url
                error = None if url is not None else (known.error if known is not None else upload.error)
                uploads[upload.host] = Upload(upload.host, url, error, upload.encrypted)
        if first.spread is not None and record.spread == first.spread:
            for share in record.shares:
                shares.setdefault(share.index, share)
    return FileRecord(first.hash, first.name, first.size, first.datetime,
                      tuple(uploads[host] for host in sorted(uploads)), first.spread,
                      tuple(shares[index] for index in sorted(shares)))


def month(now: float) -> str:
    """The month ("YYYY-MM", UTC) a transfer at Unix time ``now`` is counted in."""
    return time.strftime("%Y-%m", time.gmtime(now))
