"""CloudManager: the orchestration of one node's catalog, cache and hosts.

No SQL here (catalog/) and no file layout (cache.py): this module decides
*what* happens to a file, in which order, so that the catalog and the cache
never disagree and a file whose upload returned its hash is never lost.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal

from . import links, locators, maintenance, payload, spreading
from .cache import Cache, Owner, TempFile
from .catalog import (
    Listed,
    cache_lock_path,
    catalog_identity,
    is_server_url,
    node_id,
    open_catalog,
    quarantine_path,
)
from .crypto import Key
from .erasure import Spread
from .errors import (
    CacheFull,
    CacheOwned,
    HashMismatch,
    HostError,
    InvalidDump,
    InvalidHash,
    Unavailable,
)
from .fetching import partial_beside, publish
from .hosts import Deleter, Host, make_hosts
from .hosts.encrypted import EncryptedHost, encrypting
from .locking import FileLock
from .names import clean_name, is_sha256
from .paths import default_host_urls
from .records import FileRecord, Upload
from .streams import copy_hashing, copy_stream
from .transfers import Transfers
from .views import FileState, HostReport, HostState, NodeView

log = logging.getLogger(__name__)


def _check_paging(since: int, limit: int) -> None:
    """ValueError unless ``since`` is a change number and ``limit`` a count of records."""
    if isinstance(since, bool) or not isinstance(since, int) or since < 0:
        raise ValueError(f"since must be a change number >= 0, not {since!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be >= 1, not {limit!r}")


@dataclass
class LoadReport:
    """What a lenient import of a dump did: files added, files changed, records rejected."""

    added: int
    changed: int
    rejected: list[payload.Rejected]
    #: The change sequence numbers the merge gave in this catalog: (first_seq, last_seq].
    first_seq: int = 0
    last_seq: int = 0


class _Miss(enum.Enum):
    """Why a warm-up did not bring a file into the cache."""

    UNKNOWN = "not in the catalog"
    GONE = "no host gave the file back"
    DISK = "the cache's disk cannot be written"
    NO_ROOM = "it does not fit the cache now (full of pinned files and files no host holds yet)"


@dataclass(frozen=True)
class UploadOutcome:
    """What uploading one file did."""

    path: Path
    #: The file's SHA-256, or None when it could be kept nowhere.
    hash: str | None
    #: Each host's answer to this upload ("HOST (share I)" for a share); empty when
    #: the file was known and no host needed it again.
    results: tuple[Upload, ...]
    #: The file's record afterwards: every host's copy or error (None: not kept).
    record: FileRecord | None

    @property
    def held(self) -> bool:
        """True when some host holds the file (a whole copy, or K shares)."""
        record = self.record
        if record is None:
            return False
        if any(u.ok for u in record.uploads):
            return True
        return record.spread is not None and sum(s.ok for s in record.shares) >= record.spread[0]


@dataclass
class RepairReport:
    """What the consistency check between catalog and cache found and mended.

    Nothing found is deleted but abandoned temporary files: bytes the catalog
    did not count are adopted when they are a known file's (its hash, its
    size), and moved to the quarantine otherwise."""

    removed_temps: int = 0
    adopted: list[str] = field(default_factory=list)  # uncounted files that verified: counted again
    quarantined: list[str] = field(default_factory=list)  # bytes that are no counted file: quarantined
    uncounted: list[str] = field(default_factory=list)  # rows whose cached file was gone or wrong
    recounted: bool = False  # the running totals were wrong and were reset
    evicted: int = 0  # evicted to fit a smaller capacity
    foreign: list[str] = field(default_factory=list)  # not ours, left alone

    damaged: list[str] = field(default_factory=list)  # cached bytes whose SHA-256 is wrong (quarantined)

    @property
    def problems(self) -> int:
        """How many disagreements were found."""
        return (self.removed_temps + len(self.adopted) + len(self.quarantined) + len(self.uncounted)
                + len(self.damaged) + int(self.recounted))

    @property
    def clean(self) -> bool:
        """True when nothing needed mending."""
        return self.problems == 0

    def describe(self) -> str:
        """What was found, in words, on one line ("" when nothing was)."""
        def files(count: int) -> str:
            return f"{count} file{'s' if count != 1 else ''}"

        parts = []
        if self.adopted:
            parts.append(f"{files(len(self.adopted))} found in the cache and counted again")
        if self.quarantined:
            parts.append(f"{files(len(self.quarantined))} unknown moved to the quarantine "
                         "(cm fsck lists it)")
        if self.uncounted:
            parts.append(f"{files(len(self.uncounted))} gone from the cache or of the wrong size, "
                         "to be fetched again")
        if self.damaged:
            parts.append(f"{files(len(self.damaged))} with the wrong SHA-256 moved to the quarantine")
        if self.removed_temps:
            parts.append(f"{files(self.removed_temps)} left half-written removed")
        if self.recounted:
            parts.append("the usage total recounted")
        return "; ".join(parts)


@dataclass
class CheckReport:
    """What :meth:`CloudManager.check` found (and mended, with ``repair``)."""

    local: RepairReport
    hosts: maintenance.CopiesReport | None = None
    resent: int = 0  # lost copies sent again (with repair)
    repaired: bool = False
    #: Known files no host holds and this node's cache does not hold: lost here.
    lost: list[str] = field(default_factory=list)
    #: Files only this node's cache holds (one failure from lost; `cm sync` sends them).
    only_here: list[str] = field(default_factory=list)
    #: What the quarantine holds: (path, bytes); ``purged`` entries were deleted.
    quarantine: list[tuple[Path, int]] = field(default_factory=list)
    purged: int = 0

    @property
    def problems(self) -> int:
        """Disagreements found, in the cache and on the hosts, and files lost."""
        return self.local.problems + (len(self.hosts.lost) if self.hosts else 0) + len(self.lost)

    @property
    def mended(self) -> bool:
        """True when a repair mended every problem found (lost copies all sent again,
        and no file lost)."""
        lost = len(self.hosts.lost) if self.hosts else 0
        return self.repaired and self.resent >= lost and not self.lost


class CloudManager:
    """A pool of files kept on several hosts, with a local LRU cache.

    ``CloudManager(database_path, storage_path, capacity, hosts=None)``

    * ``database_path``: the SQLite catalog (created with the schema when
      missing, migrated when older), or the URL of a PostgreSQL catalog
      (``postgresql://user@host/db``) that a fleet of nodes shares; ``node``
      names this node there (default: host name and cache directory).
    * ``storage_path``: the cache directory; it holds cached files only.
    * ``capacity``: how many bytes the cache may hold.
    * ``hosts``: host URLs (``file:///abs/dir``, ``plowshare://MODULE``,
      ``memory://NAME``) or Host objects; ``None`` means one folder host,
      ``vault``, in the user's data directory.

    Every file is known by its SHA-256 (64 lowercase hex digits).  Safe to use
    from several threads, and several processes may open the same catalog and
    cache.  Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        database_path: str | os.PathLike[str],
        storage_path: str | os.PathLike[str],
        capacity: int,
        hosts: Sequence[str | Host] | None = None,
        *,
        key: Key | None = None,
        encrypt: bool = False,
        spread: Spread | str | None = None,
        node: str | None = None,
    ):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"capacity must be a number of bytes >= 0, not {capacity!r}")
        if encrypt and key is None:
            raise ValueError("encrypt=True needs a key (cloudmanager.crypto.Key; `cm key init` makes one)")
        self.capacity = capacity
        #: The node's encryption key (None: it has none); never shown.
        self.key = key
        #: The default spread policy of uploads (None: whole copies on every host).
        self.spread = Spread.parse(spread) if isinstance(spread, str) else spread
        made = make_hosts(default_host_urls() if hosts is None else hosts)
        if encrypt:
            made = [h if isinstance(h, EncryptedHost) else encrypting(h, key) for h in made]
        #: The configured hosts, in configuration order.
        self.hosts: list[Host] = made
        self.catalog = open_catalog(database_path, node=node or node_id(storage_path))
        #: The node's hosts and the transfers to and from them (ranking, sending, fetching).
        self.transfers = Transfers(made, self.catalog, key)
        #: The catalog and node this node's cache folder belongs to.
        self.owner = Owner(catalog_identity(database_path), node or node_id(storage_path))
        root = Path(storage_path).expanduser()
        try:
            marked, recorded = self._claim(root, shared_catalog=is_server_url(database_path))
        except BaseException:
            self.catalog.close()
            raise
        lock = FileLock(cache_lock_path(database_path, storage_path))
        self.cache = Cache(root, lock, quarantine_path(database_path, storage_path))
        if marked != self.owner:
            self.cache.write_owner(self.owner)
        if recorded != str(root.resolve()):
            self.catalog.set_cache_owner(str(root.resolve()))
        self._background: ThreadPoolExecutor | None = None  # sends of accepted files
        self._background_guard = threading.Lock()
        self.last_repair = self.repair()

    def _claim(self, root: Path, *, shared_catalog: bool) -> tuple[Owner | None, str | None]:
        """Refuse a cache folder that belongs to another node (or another SQLite
        catalog), and a second cache folder for an SQLite catalog, which keeps the
        state of one cache: either would make one node drop the other's files.
        Returns what it read: the folder's owner marker and the catalog's recorded cache."""
        mine = str(root.resolve())
        marked = Cache.read_owner(root)
        if marked is not None and (marked.node != self.owner.node if shared_catalog
                                   else marked.catalog != self.owner.catalog):
            raise CacheOwned(f"the cache {mine} belongs to node {marked.node!r} of the catalog "
                             f"{marked.catalog}: give each node a cache folder of its own")
        recorded = self.catalog.cache_owner()
        if recorded is None or recorded == mine:
            return marked, recorded
        other = Cache.read_owner(Path(recorded))
        if other is not None and other.catalog == self.owner.catalog:  # still that catalog's cache
            raise CacheOwned(f"the catalog {self.owner.catalog} keeps the cache {recorded}, not {mine}: "
                             "give this cache a catalog of its own ([catalog] path), or share a "
                             "PostgreSQL catalog, where each node keeps a cache state of its own")
        return marked, recorded

    # -- life cycle -------------------------------------------------------------------

    def close(self) -> None:
        """Finish pending work and release the catalog, the threads and the hosts."""
        if self._background is not None:
            self._background.shutdown(wait=True)
            self._background = None
        self.transfers.close()
        self.catalog.close()

    def __enter__(self) -> CloudManager:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    # -- questions --------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        """True when the file is in the catalog (False for a malformed hash)."""
        return is_sha256(digest) and self.catalog.exists(digest)

    def on_cache(self, digest: str) -> bool:
        """True when the file is in the local cache (False for a malformed hash)."""
        return is_sha256(digest) and self.catalog.is_cached(digest)

    def info(self, digest: str) -> dict[str, Any] | None:
        """The file's record in the exchange format "0.2", or None when unknown."""
        if not is_sha256(digest):
            return None
        record = self.catalog.record(digest)
        return None if record is None else payload.to_dict(record)

    def cached_bytes(self) -> int:
        """Bytes the cache holds, from the catalog's running total (constant time)."""
        return self.catalog.usage()[0]

    def usage_ratio(self) -> float:
        """Cached bytes / capacity, from the catalog's running total (constant time)."""
        used, _ = self.catalog.usage()
        return used / self.capacity if self.capacity else 0.0

    def path(self, digest: str) -> Path:
        """Where the file with this hash lives when it is cached."""
        return self.cache.path(digest)

    # -- upload -----------------------------------------------------------------------

    @property
    def active_hosts(self) -> list[Host]:
        """The hosts that get new uploads (inactive ones still serve downloads)."""
        return self.transfers.active

    def upload(self, path: str | os.PathLike[str],
               progress: Callable[[int], object] | None = None, *,
               spread: Spread | str | None = None) -> str | Literal[False]:
        """Keep a file: cache it and send it to every active host, in parallel.

        Returns its SHA-256, or False when it could be kept nowhere (no host
        took it and it does not fit the cache).  The file is read once: hashed
        while copied into the cache.  Content already known is not sent again,
        but the active hosts that failed it are tried again.  A file no host
        took stays in the cache, is never evicted, and :meth:`sync` sends it
        later.  Raises FileNotFoundError or IsADirectoryError for a bad path,
        recording nothing.  ``progress`` is called with the number of bytes of
        each chunk read.  :meth:`upload_file` tells what each host answered.

        ``spread`` (default: the node's policy) cuts the file into N
        erasure-coded shares on N different hosts, any K of which rebuild it,
        instead of a whole copy on every host; ValueError when there are fewer
        than N active hosts.
        """
        return self.upload_file(path, progress, spread=spread).hash or False

    def upload_file(self, path: str | os.PathLike[str],
                    progress: Callable[[int], object] | None = None, *,
                    spread: Spread | str | None = None) -> UploadOutcome:
        """:meth:`upload`, telling what happened: each host's answer to this call, and
        the file's record afterwards (None when it could be kept nowhere)."""
        policy = Spread.parse(spread) if isinstance(spread, str) else spread or self.spread
        if policy is not None:
            spreading.preflight(self.transfers, policy)  # enough hosts, the key? (before anything is kept)
        source = Path(path)
        info = os.stat(source)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(21, "Is a directory", str(source))
        with open(source, "rb") as handle:
            if info.st_size > self.capacity:
                digest, size = copy_hashing(handle, progress=progress)
                return self._keep_uncached(self._new_record(source, digest, size), source, policy)
            with self.cache.temp() as temp:
                try:
                    digest, size = copy_hashing(handle, temp.file, progress)
                except OSError as exc:
                    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    log.warning("the cache's disk is full: %s is sent without caching", source)
                    handle.seek(0)
                    digest, size = copy_hashing(handle)
                    return self._keep_uncached(self._new_record(source, digest, size), source, policy)
                record = self._new_record(source, digest, size)
                entry = self.catalog.entry(digest)
                if entry is not None and entry.cached:
                    self.catalog.touch(digest)
                    return self._complete(source, digest)
                placed = self._place(temp, record)
        if entry is not None:  # known content: only the hosts that failed it are tried
            return self._complete(source, digest)
        if not placed:
            return self._keep_uncached(record, source, policy)
        try:
            with self.cache.hold(digest) as copy:  # readable even if evicted meanwhile
                results = self._distribute(record, copy, policy)
        except FileNotFoundError:  # evicted already: so some host holds it (sync sent it)
            results = self._distribute(record, source, policy)
        return self._outcome(source, digest, results)

    def _outcome(self, source: Path, digest: str | None, results: Sequence[Upload]) -> UploadOutcome:
        record = self.catalog.record(digest) if digest is not None else None
        return UploadOutcome(source, digest if record is not None else None, tuple(results), record)

    def _complete(self, source: Path, digest: str) -> UploadOutcome:
        """Send a known file to the active hosts that failed it (an error recorded, or
        no entry while no host holds it, as :meth:`sync` does), from the cache when
        it is there, else from ``source`` (just hashed)."""
        record = self.catalog.record(digest)
        if record is None or record.spread is not None:  # spread shares: `sync` rebuilds them
            return self._outcome(source, digest, [])
        holding = {u.host for u in record.uploads if u.ok}
        tried = {u.host for u in record.uploads}
        hosts = [h for h in self.active_hosts
                 if h.name in tried - holding or (not holding and h.name not in tried)]
        if not hosts:
            return self._outcome(source, digest, [])
        try:
            with self.cache.hold(digest) as copy:
                results = self.transfers.send(record, copy, hosts)
        except FileNotFoundError:  # not cached: the file just hashed
            results = self.transfers.send(record, source, hosts)
        return self._outcome(source, digest, results)

    def _distribute(self, record: FileRecord, source: Path, spread: Spread | None) -> list[Upload]:
        """Send a new file to the hosts: whole copies, or spread shares (shown as
        "HOST (share I)"); each host's result."""
        if spread is None:
            return self.transfers.send(record, source, self.active_hosts)
        return [Upload(f"{s.host} (share {s.index})", s.url, s.error)
                for s in spreading.send(self.transfers, self.cache, record, source, spread)]

    def upload_many(self, paths: Iterable[str | os.PathLike[str]], *, workers: int = 8,
                    progress: Callable[[int], object] | None = None) -> list[str | Literal[False]]:
        """:meth:`upload` each of ``paths``, ``workers`` at a time; results in order.

        Many small files go much faster this way: their disk syncs and network
        round trips overlap.  The first bad path (missing, a directory) raises
        as :meth:`upload` does, before anything is uploaded.
        """
        return [outcome.hash or False for outcome in self.upload_files(paths, workers=workers,
                                                                        progress=progress)]

    def upload_files(self, paths: Iterable[str | os.PathLike[str]], *, workers: int = 8,
                     progress: Callable[[int], object] | None = None,
                     spread: Spread | str | None = None) -> list[UploadOutcome]:
        """:meth:`upload_file` each of ``paths``, ``workers`` at a time; outcomes in order
        (see :meth:`upload_many`)."""
        sources = [Path(p) for p in paths]
        for source in sources:
            if stat.S_ISDIR(os.stat(source).st_mode):
                raise IsADirectoryError(21, "Is a directory", str(source))
        policy = Spread.parse(spread) if isinstance(spread, str) else spread

        def one(source: Path) -> UploadOutcome:
            return self.upload_file(source, progress, spread=policy)

        if workers <= 1 or len(sources) <= 1:
            return [one(source) for source in sources]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cloudmanager-upload") as pool:
            return list(pool.map(one, sources))

    def accept(self, source: BinaryIO, name: str, digest: str) -> str:
        """Keep the bytes read from ``source`` (to its end) as the file ``digest``.

        For bytes arriving from elsewhere (another node's PUT): they are written
        to the cache while hashed, and kept only when their SHA-256 is
        ``digest``; then recorded as cached, and sent to this node's active
        hosts in the background (until then the file is never evicted).  Known
        content is kept once.  Raises InvalidHash for a malformed ``digest``,
        HashMismatch when the bytes are other ones, CacheFull when they cannot
        fit the cache; in every failure (an OSError from ``source`` too)
        nothing is kept.
        """
        if not is_sha256(digest):
            raise InvalidHash(f"not a SHA-256: {digest[:80]!r}")
        try:
            name = clean_name(name)
        except ValueError:
            name = digest
        entry = self.catalog.entry(digest)
        with self.cache.temp() as temp:
            try:
                got, size = copy_hashing(source, temp.file)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT) and exc.filename is None:
                    raise CacheFull(f"{digest}: the cache's disk is full") from None
                raise
            if got != digest:
                raise HashMismatch(f"the bytes received have SHA-256 {got}, not {digest}")
            if entry is not None and entry.cached:
                self.catalog.touch(digest)
                return digest
            record = FileRecord(digest, name, size, int(time.time()))
            if size > self.capacity:
                raise CacheFull(f"{digest}: {size} bytes are more than the cache's {self.capacity}")
            if not self._place(temp, record):
                raise CacheFull(f"{digest}: {size} bytes do not fit the cache now (it is full of "
                                "pinned files and files no host holds yet)")
        if entry is None:
            with self._background_guard:
                if self._background is None:
                    self._background = ThreadPoolExecutor(max_workers=2,
                                                          thread_name_prefix="cloudmanager-accept")
                self._background.submit(self._send_cached, record)
        return digest

    def _send_cached(self, record: FileRecord) -> None:
        """Send a cached file to the active hosts (a background job of :meth:`accept`).

        A file forgotten while it was being sent (another node's DELETE) gets its
        new copies deleted again, where the hosts can."""
        try:
            with self.cache.hold(record.hash) as copy:
                results = self.transfers.send(record, copy, self.active_hosts, record_each=False)
        except FileNotFoundError:  # evicted or forgotten meanwhile: nothing left to send
            log.info("%s left the cache before it was sent", record.hash)
            return
        except Exception:  # a background job has no caller to raise to
            log.exception("sending %s to the hosts failed", record.hash)
            return
        if self.catalog.record_uploads(record.hash, results):
            return
        for result in results:  # forgotten meanwhile: take the new copies back
            host = self.transfers.host(result.host)
            if result.url is not None and isinstance(host, Deleter):
                try:
                    host.delete(result.url)
                except HostError as exc:
                    log.warning("cannot delete the copy of forgotten %s on %s: %s",
                                record.hash, host.name, exc.reason)

    @staticmethod
    def _new_record(source: Path, digest: str, size: int) -> FileRecord:
        try:
            name = clean_name(source.name)
        except ValueError:
            name = digest
        return FileRecord(digest, name, size, int(time.time()))

    def _keep_uncached(self, record: FileRecord, source: Path,
                       spread: Spread | None = None) -> UploadOutcome:
        """Send a file that is not cached; record it only if the hosts took it."""
        if self.catalog.exists(record.hash):
            return self._complete(source, record.hash)
        if spread is not None:  # the shares are recorded on a row that says "not cached"
            self.catalog.add(record)
            results = self._distribute(record, source, spread)
            if sum(u.ok for u in results) >= spread.k:
                return self._outcome(source, record.hash, results)
            self.catalog.forget(record.hash)
            return UploadOutcome(source, None, tuple(results), None)
        results = self.transfers.send(record, source, self.active_hosts, record_each=False)
        if not any(result.ok for result in results):
            return UploadOutcome(source, None, tuple(results), None)
        self.catalog.add(FileRecord(record.hash, record.name, record.size, record.datetime,
                                    tuple(results)))
        return self._outcome(source, record.hash, results)

    # -- cache placement and eviction -------------------------------------------------

    def _place(self, temp: TempFile, record: FileRecord) -> bool:
        """Move a verified temp file into the cache and count it, making room by
        evicting least recently used files; False (and nothing kept) if it can't fit."""
        with self.cache.lock.shared():
            self.cache.place(temp, record.hash)
            admission = self.catalog.admit(record, self.capacity)
            if not admission.admitted:
                self.cache.remove(record.hash)
        self._remove_uncounted(admission.victims)
        return admission.admitted

    def _remove_uncounted(self, digests: Iterable[str]) -> None:
        for digest in digests:
            if not self.catalog.is_cached(digest):  # not cached again meanwhile
                self.cache.remove(digest)

    def evict(self, digests: Iterable[str] | None = None) -> list[str]:
        """Evict these files (default: every evictable one) from the cache.

        Only files some host holds, and not pinned, are evicted; returns those
        that were.  Malformed or unknown hashes are ignored.
        """
        wanted = None if digests is None else [d for d in digests if is_sha256(d)]
        victims = self.catalog.uncache(self.catalog.evictable(wanted))
        self._remove_uncounted(victims)
        return victims

    def pin(self, digest: str, pinned: bool = True) -> bool:
        """Pin a file (a pinned file is never evicted); False when unknown."""
        return is_sha256(digest) and self.catalog.set_pinned(digest, pinned)

    # -- download ---------------------------------------------------------------------

    def warm_up(self, digest: str) -> str | Literal[False] | None:
        """Make sure the file is in the cache and return the path of the cached copy.

        Returns None for an unknown or malformed hash, False when the file
        cannot be brought back (every host failed or returned wrong bytes) or
        cannot fit the cache (:meth:`get`, :meth:`open` and :meth:`hold` bring
        back a file larger than the cache without caching it).  Hosts are tried
        healthiest first; the bytes are verified against the SHA-256 before they
        are cached, and a host that fails or lies is recorded as such.

        One download per file, however many readers: the first one (thread or
        process) fetches it while the others wait, then they read the cached
        copy; when the first one fails, each waiter tries the hosts itself.
        """
        found = self._warm(digest)
        return None if found is _Miss.UNKNOWN else False if isinstance(found, _Miss) else found

    def _warm(self, digest: str) -> str | _Miss:
        """:meth:`warm_up`, saying why a file is not in the cache afterwards."""
        if not is_sha256(digest):
            return _Miss.UNKNOWN
        entry = self.catalog.entry(digest)
        if entry is None:
            return _Miss.UNKNOWN
        if (path := self._cached_copy(digest, entry.cached, entry.size)) is not None:
            return path
        if entry.size > self.capacity:
            return _Miss.NO_ROOM
        with self.cache.fetching(digest):
            record = self.catalog.record(digest)  # again: the reader before us may have fetched it
            if record is None:  # forgotten meanwhile
                return _Miss.UNKNOWN
            if (path := self._cached_copy(digest, self.catalog.is_cached(digest), record.size)) is not None:
                return path
            return self._fetch(record)

    download = warm_up

    def _cached_copy(self, digest: str, cached: bool, size: int) -> str | None:
        """The path of the cached copy, touched, when the catalog counts it and it is
        there; a counted copy that is gone or damaged stops counting (None)."""
        if not cached:
            return None
        if self.cache.size(digest) == size:
            self.catalog.touch(digest)
            return str(self.cache.path(digest))
        log.warning("cached file %s was gone or damaged: fetching it again", digest)
        self.catalog.uncache([digest])
        self.cache.remove(digest)
        return None

    def _oversize(self, digest: str) -> FileRecord | None:
        """The record of a known file that is not cached and cannot fit the cache
        (brought back without caching), else None."""
        if not is_sha256(digest):
            return None
        entry = self.catalog.entry(digest)
        if entry is None or entry.cached or entry.size <= self.capacity:
            return None
        return self.catalog.record(digest)

    def get(self, digest: str, destination: str | os.PathLike[str]) -> Path | None:
        """Write the file to ``destination`` (replaced if it exists) and return that path.

        From the cache (warmed up first) when it fits; a file larger than the
        cache is streamed from a host straight to ``destination``, never cached.
        Either way it is verified (SHA-256 and size) and written atomically: a
        temporary file beside ``destination``, renamed over it when complete, and
        removed on any failure.  Returns None for an unknown or malformed hash;
        raises Unavailable when no host gives the file back, OSError when
        ``destination`` cannot be written.
        """
        if not self.exists(digest):
            return None  # before anything is written beside the destination
        target = Path(destination)
        with partial_beside(target) as out:
            record = self._oversize(digest)
            if record is not None:
                self._fill(record, out)
            else:
                with self.hold(digest) as copy:
                    if copy is None:
                        return None
                    with open(copy, "rb") as source:
                        copy_stream(source, out.file)
            return publish(out, target)

    def _fill(self, record: FileRecord, out: TempFile) -> None:
        """Write the verified file into ``out`` from its hosts (no cache involved);
        Unavailable, with the reason, when none gives it back."""
        try:
            problem = self._fetch_into(record, out)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write {out.path}: {exc.strerror}") from exc
        if problem is not None:
            raise Unavailable(f"{record.hash}: {problem}")

    @contextmanager
    def _spooled(self, record: FileRecord) -> Iterator[Path]:
        """A verified copy of a file too large for the cache, fetched from its hosts
        into a temporary file that the cache does not count, removed when the block
        ends (a crash leaves it to the next open's repair)."""
        with self.cache.temp() as spool:
            self._fill(record, spool)
            yield spool.path

    def open(self, digest: str) -> BinaryIO | None:
        """Warm the file up and open the cached copy for reading (binary).

        Unlike a path from :meth:`warm_up`, an open file stays readable even if
        another process evicts the file meanwhile.  A file larger than the cache
        is fetched and verified into a temporary file that is not counted in the
        cache and is already removed when this returns (its bytes go when the file
        is closed).  Returns None for an unknown or malformed hash; raises
        Unavailable when it cannot be brought back.
        """
        with self.hold(digest) as copy:
            return None if copy is None else open(copy, "rb")

    @contextmanager
    def hold(self, digest: str) -> Iterator[Path | None]:
        """Warm the file up and hold it: the path given stays readable until the block
        ends, even if the file is evicted meanwhile (by this or another process).

        A file that does not fit the cache (larger than it, or not now: the cache
        is full of pinned files and files no host holds yet) is not cached: the
        path is then a verified temporary copy, fetched for this block only and not
        counted in the cache.  Gives None for an unknown or malformed hash; raises
        Unavailable when the file cannot be brought back (or is evicted again and
        again before it is held).
        """
        for _ in range(3):
            path = self._warm(digest)
            if path is _Miss.UNKNOWN:
                yield None
                return
            if path is _Miss.NO_ROOM:
                record = self.catalog.record(digest)
                if record is None:  # forgotten meanwhile
                    yield None
                    return
                with self._spooled(record) as spool:
                    yield spool
                return
            if isinstance(path, _Miss):
                raise Unavailable(f"{digest}: {path.value}")
            with ExitStack() as stack:
                try:
                    copy = stack.enter_context(self.cache.hold(digest))
                except FileNotFoundError:  # evicted between the warm-up and the hold: again
                    continue
                yield copy
                return
        raise Unavailable(f"{digest}: evicted again and again before it could be held")

    def _fetch(self, record: FileRecord) -> str | _Miss:
        """Fetch the file from its hosts into the cache; its path, or why not."""
        with self.cache.temp() as temp:
            try:
                problem = self._fetch_into(record, temp)
            except OSError as exc:  # our disk, not the hosts
                log.error("cannot write to the cache: %s", exc)
                return _Miss.DISK
            if problem is not None:
                log.warning("%s: %s", record.hash, problem)
                return _Miss.GONE
            if not self._place(temp, record):
                return _Miss.NO_ROOM
            return str(self.cache.path(record.hash))

    def _fetch_into(self, record: FileRecord, out: TempFile) -> str | None:
        """Write the file into ``out``, verified: from a whole copy, hosts best first
        (a host that fails or lies is recorded and the next one tried), else rebuilt
        from K shares.  None when done; otherwise why not.  Raises OSError when
        ``out`` cannot be written (not the hosts' doing: no other host is tried)."""
        if self.transfers.fetch_whole(record, out):
            return None
        if record.spread is None:
            return "no host gave the file back"
        out.file.seek(0)
        out.file.truncate()
        rebuilt = spreading.rebuild(self.transfers, record, out)
        return None if rebuilt is True else rebuilt

    # -- sync with hosts and with other nodes -----------------------------------------

    def sync(self, copies: int | None = None, *, repair: bool = False) -> dict[str, list[Upload]]:
        """Send files to the hosts that failed to take them (or never got them).

        Retries, for every file, each active host whose entry is an error, and
        sends files no host holds yet (an upload cut off by a crash).  With
        ``copies``, files held by fewer hosts than that are also sent to more
        active hosts (healthiest first) until they would be.  The bytes come
        from the cache, or are fetched from a host that holds them (a file
        larger than the cache through a temporary copy that the cache does not
        count, removed when sent).  A spread
        file whose upload left fewer than K shares gets its missing shares;
        with ``repair``, every spread file does (shares lost with a host, found
        by :meth:`check` with ``hosts`` or a failed fetch), on other active hosts.
        Returns, per file hash, the result of each host tried (a share's host is
        shown as "HOST (share I)").
        """
        active = self.active_hosts
        wanted: dict[str, list[Host]] = {}
        for digest, host_name in self.catalog.missing_copies([h.name for h in active]):
            host = self.transfers.host(host_name)
            if host is not None:
                wanted.setdefault(digest, []).append(host)
        if copies is not None:
            for digest, extra in self._more_copies(copies, active):
                wanted.setdefault(digest, [])
                wanted[digest] += [h for h in extra if h not in wanted[digest]]
        changes: dict[str, list[Upload]] = {}

        def resend(hosts: list[Host]) -> Callable[[FileRecord, Path], object]:
            return lambda record, copy: changes.update({record.hash: self.transfers.send(record, copy,
                                                                                          hosts)})

        for digest, hosts in wanted.items():
            if hosts:
                self._with_copy(digest, resend(hosts))
        for digest in self.catalog.incomplete_spreads():
            record = self.catalog.record(digest)
            if record is None or record.spread is None:
                continue
            if repair or sum(share.ok for share in record.shares) < record.spread[0]:
                changes[digest] = [Upload(f"{s.host} (share {s.index})", s.url, s.error)
                                   for s in spreading.repair(self.transfers, self.cache, record)]
        return changes

    def _more_copies(self, copies: int, active: list[Host]) -> Iterator[tuple[str, list[Host]]]:
        """For each file held by fewer than ``copies`` hosts, the active hosts to add."""
        ranked = self.transfers.ranked(active)
        for digest in self.catalog.under_copies(copies):
            record = self.catalog.record(digest)
            if record is None:
                continue
            holding = {u.host for u in record.uploads if u.ok}
            yield digest, [h for h in ranked if h.name not in holding][: copies - len(holding)]

    def _with_copy(self, digest: str, action: Callable[[FileRecord, Path], object]) -> None:
        """Run ``action(record, path)`` on a held local copy of the file (warmed up first)."""
        record = self.catalog.record(digest)
        try:
            with self.hold(digest) as copy:
                if record is not None and copy is not None:
                    action(record, copy)
                    return
        except Unavailable:
            pass
        log.warning("cannot sync %s: no copy to send from", digest)

    def data_dump(self) -> str:
        """Every file's record as JSON text in format "0.2", for other nodes."""
        return payload.dumps(self.catalog.records())

    def data_load(self, text: str | bytes) -> int:
        """Merge another node's dump into the catalog; returns how many files were
        added or changed.

        Accepts format "0.2" and "0.1".  A known file gets the union of host
        entries (a URL beats an error for the same host).  Invalid input raises
        InvalidDump naming the record and field, and imports nothing (so does a
        locator, for a host of this node, that cannot be its record's: see locators.py).
        """
        parsed = locators.screen(payload.parse(text), self.host, self.key, self.catalog.exists)
        if parsed.rejected:
            raise parsed.rejected[0].error()
        try:
            result = self.catalog.merge(parsed.records)
        except ValueError as clash:
            index = parsed.position_of(str(clash))
            raise InvalidDump("filesize disagrees with the catalog", index, "filesize") from None
        return result.added + result.changed

    def changes(self, since: int, limit: int = 1000) -> tuple[list[dict[str, Any]], int, bool]:
        """Records changed after the change sequence number ``since``, in format "0.2":
        at most ``limit``, the cursor to ask from next, and whether more remain."""
        _check_paging(since, limit)
        records, cursor, more = self.catalog.changes(since, limit)
        return [payload.to_dict(r) for r in records], cursor, more

    def change_page(self, since: int, limit: int = 1000) -> payload.Outgoing:
        """What :meth:`changes` gives, as one page within payload.PAGE_MAX_BYTES (what
        ``GET /catalog`` serves, and a push sends): fewer than ``limit`` records
        when ``limit`` of them would pass it, the cursor after the last one sent.

        A record that no page can hold (its JSON alone passes the cap: only a
        record grown by merges past what validation accepts can) is left out,
        logged and named in ``skipped``, and the cursor goes past it, so that a
        sync never sticks on it.
        """
        _check_paging(since, limit)
        skipped: list[str] = []
        while True:
            records, cursor, more = self.catalog.changes(since, limit)
            texts = [payload.record_text(r) for r in records]
            fit = payload.fitting(texts)
            if fit == len(texts):
                return payload.Outgoing(texts, cursor, more, skipped)
            if fit:
                limit = fit  # the same first records, and the cursor right after them
                continue
            log.warning("record %s is %d bytes as JSON, more than a catalog page holds: not sent",
                        records[0].hash, len(texts[0]))
            skipped.append(records[0].hash)
            _, since, _ = self.catalog.changes(since, 1)  # the cursor right after it

    def import_dump(self, dump: str | bytes | list[Any] | payload.Parsed) -> LoadReport:
        """Merge what is valid in a dump, and report the rest instead of refusing it all.

        ``dump`` is JSON text, a list of records already decoded from JSON
        (validated all the same), or a dump already validated as it was read
        (payload.read_dump, payload.read_page).  A record with a locator, for a
        host of this node, that cannot be its own is rejected whole (see
        locators.py).  Raises InvalidDump only when the document is not a dump at all.
        """
        if isinstance(dump, payload.Parsed):
            parsed = dump
        else:
            parsed = payload.validate(dump) if isinstance(dump, list) else payload.parse(dump)
        parsed = locators.screen(parsed, self.host, self.key, self.catalog.exists)
        result = self.catalog.merge(parsed.records, skip_clashes=True)
        rejected = list(parsed.rejected)
        clashes = set(result.clashes)
        for position, record in zip(parsed.positions, parsed.records, strict=True):
            if record.hash in clashes:
                clashes.discard(record.hash)  # the first record of that file stands for it
                rejected.append(payload.Rejected(position, "filesize", "disagrees with the catalog",
                                                 payload.to_dict(record)))
        rejected.sort(key=lambda r: r.index)
        return LoadReport(result.added, result.changed, rejected, result.first_seq, result.last_seq)

    # -- figures ----------------------------------------------------------------------

    def listing(self, *, cached_only: bool = False, pending_only: bool = False) -> Iterator[Listed]:
        """Every file by name: size, date, cached or not, and copies on the active hosts
        (``pending_only``: files not yet on every active host)."""
        return self.catalog.listing([h.name for h in self.active_hosts],
                                    cached_only=cached_only, pending_only=pending_only)

    def counts(self) -> dict[str, int]:
        """The file counts, from the catalog's running counts (the same cost whatever the
        number of files): ``files`` known to the catalog (every node's), ``cached`` and
        ``pinned`` on this node, ``pending``: not yet held by every active host (a copy
        on an inactive host does not count for an active one)."""
        return self.catalog.counts([h.name for h in self.active_hosts])

    def stats(self) -> dict[str, Any]:
        """Capacity, usage, file counts (:meth:`counts`) and bytes moved per host and month."""
        used, _ = self.catalog.usage()
        figures: dict[str, Any] = {"capacity": self.capacity, "used": used,
                                   "usage_ratio": self.usage_ratio()}
        figures.update(self.counts())
        months: dict[str, dict[str, int]] = {}
        for month, _host, sent, fetched in self.catalog.transfers():
            totals = months.setdefault(month, {"sent": 0, "fetched": 0})
            totals["sent"] += sent
            totals["fetched"] += fetched
        figures["transfers"] = {
            "months": months,
            "total": {"sent": sum(m["sent"] for m in months.values()),
                      "fetched": sum(m["fetched"] for m in months.values())},
        }
        return figures

    # -- administration (see maintenance.py) -----------------------------------------

    def host(self, name: str) -> Host | None:
        """The configured host of this name, or None."""
        return self.transfers.host(name)

    def forget(self, digest: str, *, from_hosts: bool = False) -> maintenance.ForgetReport | None:
        """Remove a file from the cache and the catalog (None when unknown); with
        ``from_hosts``, delete its copies from the hosts that can delete first."""
        if not is_sha256(digest):
            return None
        return maintenance.forget(self.transfers, self.cache, digest, from_hosts=from_hosts)

    def relocate(self, target: str | os.PathLike[str],
                 on_switch: Callable[[Path], object] | None = None) -> maintenance.RelocateReport:
        """Move the cache to another directory (copy, verify, switch, clean up);
        ``on_switch(new_dir)`` records the new place before the old one is removed."""
        report, moved = maintenance.relocate(self.catalog, self.cache, self.owner, Path(target), on_switch)
        if moved is not None:
            self.cache = moved
        return report

    def expire(self, *, force: bool = False) -> maintenance.ExpireReport:
        """Delete host copies older than their host's ``keep_days``, keeping last copies
        unless ``force``."""
        return maintenance.expire(self.transfers, force=force)

    def check_hosts(self) -> dict[str, str | None]:
        """A small round trip to each host: None when it went well, else the problem."""
        return maintenance.check_hosts(self.transfers)

    # -- consistency --------------------------------------------------------------------

    def repair(self) -> RepairReport:
        """Make the catalog and the cache agree (run on open, safe at any time).

        Removes temporary files left by dead writers; a file in the cache the
        catalog does not count is counted again when it is a known file (its
        name is its hash, its bytes hash to it), and moved to the quarantine
        otherwise (never deleted: it may be the only copy of something); a row
        whose cached file is gone or has the wrong size counts as not cached
        (warm_up fetches it again); the usage total is reset if it drifted;
        files are evicted down to the capacity.
        """
        report = self._audit(fix=True, verify=False)
        if not report.clean:
            log.warning("the cache and the catalog disagreed, mended: %s", report.describe())
        return report

    def _audit(self, *, fix: bool, verify: bool) -> RepairReport:
        """Compare the cache directory with the catalog; mend what differs when ``fix``.
        With ``verify``, every cached file's bytes are hashed too."""
        report = RepairReport()
        with self.cache.lock.exclusive():
            scan = self.cache.scan(fix=fix)
            counted = self.catalog.cached_sizes()
            bad = [digest for digest, size in counted.items() if scan.files.get(digest) != size]
            if verify:
                report.damaged = [d for d in counted if d not in bad and self._hash_of(d) != d]
            for digest, size in scan.files.items():
                if counted.get(digest) == size:
                    continue
                entry = None if digest in counted else self.catalog.entry(digest)
                if entry is not None and entry.size == size and self._hash_of(digest) == digest:
                    report.adopted.append(digest)  # only a known file of its size is worth hashing
                elif self.cache.path(digest).exists():  # else evicted, its evicter removed the bytes
                    report.quarantined.append(digest)
            report.removed_temps = len(scan.removed_temps)
            report.quarantined += [str(path.relative_to(self.cache.root)) for path in scan.misplaced]
            report.foreign = [str(p) for p in scan.foreign]
            if fix:
                self.catalog.uncache(bad + report.damaged)
                for digest in report.adopted:
                    self._adopt(digest)
                for digest in [d for d in report.quarantined if is_sha256(d)] + report.damaged:
                    try:
                        self.cache.quarantine(self.cache.path(digest))
                    except FileNotFoundError:  # removed by the process that evicted it
                        continue
            report.uncounted = bad
            report.recounted = self.catalog.recount(fix=fix)
        if fix:
            victims = self.catalog.shrink_to(self.capacity)
            self._remove_uncounted(victims)
            report.evicted = len(victims)
        return report

    def _adopt(self, digest: str) -> None:
        """Count a verified uncounted cache file as cached, within the capacity (less
        recently used files make room).  One that cannot fit is counted all the same
        when no host holds it (it may be the only copy: over capacity, until sync sends
        it), and removed when a host does (e.g. evicted by another process that had
        not removed its bytes yet)."""
        record = self.catalog.record(digest)
        if record is None:
            return
        admission = self.catalog.admit(record, self.capacity)
        self._remove_uncounted(admission.victims)
        if admission.admitted:
            return
        entry = self.catalog.entry(digest)
        if entry is not None and entry.copies == 0:
            log.warning("%s is held by no host and does not fit the cache: counted over capacity", digest)
            self.catalog.admit(record, 1 << 62)
        else:
            self.cache.remove(digest)

    def quarantined(self) -> list[tuple[Path, int]]:
        """What the cache's quarantine holds (bytes found in the cache that were no
        counted file): (path, size), by name.  Emptied only by :meth:`purge_quarantine`."""
        return self.cache.quarantined()

    def purge_quarantine(self) -> int:
        """Delete what the quarantine holds (``cm fsck --repair --purge``); returns how
        many entries went."""
        return self.cache.purge_quarantine()

    def at_risk(self) -> tuple[list[str], list[str]]:
        """(lost, only here): known files that no host holds and this node's cache does
        not hold either, and files this node's cache alone holds (one failure from lost)."""
        lost: list[str] = []
        only_here: list[str] = []
        for digest, cached in self.catalog.uncopied():
            (only_here if cached else lost).append(digest)
        return lost, only_here

    def _hash_of(self, digest: str) -> str | None:
        """The SHA-256 of the cached file's bytes (None when it cannot be read)."""
        try:
            with open(self.cache.path(digest), "rb") as handle:
                return copy_hashing(handle)[0]
        except OSError:
            return None

    def check(self, *, repair: bool = False, hosts: bool = False,
              verify_hash: bool = False, purge: bool = False) -> CheckReport:
        """Check that the catalog tells the truth (``cm fsck``).

        Locally: every cached file known with the right size (and, with
        ``verify_hash``, the right SHA-256), no leftover temporary file, the
        usage total exact.  With ``hosts``: each host is asked whether it
        still holds each copy recorded for it (its size where it can tell;
        the bytes' hash with ``verify_hash``); a lost copy is recorded as an
        error for that host.  With ``repair``, what was found is mended: the
        cache as :meth:`repair` does, lost copies sent again by :meth:`sync`;
        with ``purge`` too, the quarantine is emptied.  The report also names
        the files at risk (see :meth:`at_risk`) and what the quarantine holds.
        """
        report = CheckReport(local=self._audit(fix=repair, verify=verify_hash))
        if hosts:
            report.hosts = maintenance.check_copies(self.transfers, verify_hash=verify_hash,
                                                    remove_bad=repair)
            if repair and report.hosts.lost:
                changes = self.sync(repair=True)
                report.resent = sum(u.ok for uploads in changes.values() for u in uploads)
        report.repaired = repair
        if repair and purge:
            report.purged = self.purge_quarantine()
        report.quarantine = self.quarantined()
        report.lost, report.only_here = self.at_risk()
        return report

    # -- what the faces show (the CLI, the server, peer sync) ---------------------------

    def host_report(self) -> list[HostReport]:
        """Every configured host as ``cm hosts`` shows it: kind, URL, active,
        keep_days, how many files it holds a copy of, and how it behaved lately."""
        held = self.catalog.held_per_host()
        health = self.catalog.host_health(h.name for h in self.hosts)
        return [HostReport(name=h.name, kind=h.scheme, url=h.url(), active=h.active,
                           description=h.description, keep_days=h.keep_days, files=held.get(h.name, 0),
                           last_ok=health[h.name].last_ok, last_error=health[h.name].last_error,
                           failures=health[h.name].failures) for h in self.hosts]

    def host_failures(self) -> dict[str, int]:
        """Each configured host's consecutive failures, as the catalog records them."""
        return {name: health.failures
                for name, health in self.catalog.host_health(h.name for h in self.hosts).items()}

    def longest_link(self) -> int:
        """The longest a share link to this node's files may live, in seconds: the
        smallest ``keep_days`` of its hosts (a copy may be gone after that), never more
        than ``links.DEFAULT_MAX_DAYS`` days."""
        return links.longest_expiry(host.keep_days for host in self.hosts)

    def link_expiry(self, seconds: int, now: float | None = None) -> int:
        """The Unix time at which a share link living ``seconds`` from ``now`` (default:
        the current time) expires; ValueError naming the longest allowed, and why, when
        ``seconds`` is longer than :meth:`longest_link`."""
        longest = self.longest_link()
        if seconds > longest:
            bounded = longest < links.DEFAULT_MAX_DAYS * links.DAY
            why = "the smallest keep_days of this node's hosts" if bounded else "the longest allowed"
            raise ValueError(f"longer than a link may live here, {links.describe_seconds(longest)} ({why})")
        return int(time.time() if now is None else now) + seconds

    # -- for the faces: the server's page and peer sync (no catalog outside the core) -------

    def peer_cursors(self, peer: str) -> tuple[int, int]:
        """(the last of the peer's change numbers pulled, the last of ours pushed to it) for
        the peer named ``peer`` (its URL), as this node remembers them; (0, 0) at first."""
        return self.catalog.peer_cursors(peer)

    def set_peer_cursor(self, peer: str, *, pulled: int | None = None, pushed: int | None = None) -> None:
        """Remember how far this node's catalog sync with ``peer`` went (None: unchanged)."""
        self.catalog.set_peer_cursor(peer, pulled=pulled, pushed=pushed)

    def view(self, newest: int) -> NodeView:
        """The node at a glance, for its page: the cache's capacity and usage, how many
        files are known, the ``newest`` files (each with its record and cache state) and
        every configured host with its health.  A constant number of catalog calls,
        however large the pool."""
        used, _ = self.catalog.usage()
        files = [FileState(record, entry) for record, entry in self.catalog.recent_files(newest)]
        health = self.catalog.host_health([h.name for h in self.hosts])
        return NodeView(capacity=self.capacity, used=used, total=self.catalog.count(), files=files,
                        hosts=[HostState(h, health[h.name]) for h in self.hosts])
