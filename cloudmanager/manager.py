"""CloudManager: the orchestration of one node's catalog, cache and hosts.

No SQL here (catalog/) and no file layout (cache.py): this module decides
*what* happens to a file, in which order, so that the catalog and the cache
never disagree and a file whose upload returned its hash is never lost.
"""

from __future__ import annotations

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

from . import locators, maintenance, payload, spreading
from .cache import Cache, TempFile
from .catalog import Listed, cache_lock_path, node_id, open_catalog
from .crypto import Key
from .erasure import Spread
from .errors import CacheFull, HashMismatch, HostError, InvalidDump, InvalidHash, ObjectMissing, Unavailable
from .hosts import Deleter, Host, make_hosts
from .hosts.base import describe
from .hosts.encrypted import EncryptedHost, encrypting
from .hosts.speed import Speeds
from .locking import FileLock
from .names import clean_name, is_sha256
from .paths import default_host_urls
from .records import FileRecord, Upload
from .streams import HashingWriter, copy_hashing

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What a lenient import of a dump did: files added, files changed, records rejected."""

    added: int
    changed: int
    rejected: list[payload.Rejected]
    #: The change sequence numbers the merge gave in this catalog: (first_seq, last_seq].
    first_seq: int = 0
    last_seq: int = 0


@dataclass
class RepairReport:
    """What the consistency check between catalog and cache found and mended."""

    removed_temps: int = 0
    removed_strays: int = 0  # files on disk the catalog did not count as cached
    uncounted: list[str] = field(default_factory=list)  # rows whose cached file was gone or wrong
    recounted: bool = False  # the running totals were wrong and were reset
    evicted: int = 0  # evicted to fit a smaller capacity
    foreign: list[str] = field(default_factory=list)  # not ours, left alone

    damaged: list[str] = field(default_factory=list)  # cached bytes whose SHA-256 is wrong

    @property
    def problems(self) -> int:
        """How many disagreements were found."""
        return (self.removed_temps + self.removed_strays + len(self.uncounted) + len(self.damaged)
                + int(self.recounted))

    @property
    def clean(self) -> bool:
        """True when nothing needed mending."""
        return self.problems == 0


@dataclass
class CheckReport:
    """What :meth:`CloudManager.check` found (and mended, with ``repair``)."""

    local: RepairReport
    hosts: maintenance.CopiesReport | None = None
    resent: int = 0  # lost copies sent again (with repair)
    repaired: bool = False

    @property
    def problems(self) -> int:
        """Disagreements found, in the cache and on the hosts."""
        return self.local.problems + (len(self.hosts.lost) if self.hosts else 0)

    @property
    def mended(self) -> bool:
        """True when a repair mended every problem found (lost copies all sent again)."""
        lost = len(self.hosts.lost) if self.hosts else 0
        return self.repaired and self.resent >= lost


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
        self.hosts: list[Host] = make_hosts(default_host_urls() if hosts is None else hosts)
        if encrypt:
            self.hosts = [h if isinstance(h, EncryptedHost) else encrypting(h, key) for h in self.hosts]
        self._by_name = {host.name: host for host in self.hosts}
        self.catalog = open_catalog(database_path, node=node or node_id(storage_path))
        lock = FileLock(cache_lock_path(database_path, storage_path))
        self.cache = Cache(Path(storage_path), lock)
        self._pool: ThreadPoolExecutor | None = None
        self._background: ThreadPoolExecutor | None = None  # sends of accepted files
        self._pool_guard = threading.Lock()
        #: How fast each host moved bytes lately (ranks hosts for downloads and spreads).
        self.speeds = Speeds()
        self.last_repair = self.repair()

    # -- life cycle -------------------------------------------------------------------

    def close(self) -> None:
        """Finish pending work and release the catalog, the threads and the hosts."""
        if self._background is not None:
            self._background.shutdown(wait=True)
            self._background = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for host in self.hosts:
            host.close()
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
        return [host for host in self.hosts if host.active]

    def upload(self, path: str | os.PathLike[str],
               progress: Callable[[int], object] | None = None, *,
               spread: Spread | str | None = None) -> str | Literal[False]:
        """Keep a file: cache it and send it to every host, in parallel.

        Returns its SHA-256, or False when it could be kept nowhere (no host
        took it and it does not fit the cache).  The file is read once: hashed
        while copied into the cache.  Content already known is not sent again.
        A file no host took stays in the cache, is never evicted, and
        :meth:`sync` sends it later.  Raises FileNotFoundError or
        IsADirectoryError for a bad path, recording nothing.  ``progress`` is
        called with the number of bytes of each chunk read.

        ``spread`` (default: the node's policy) cuts the file into N
        erasure-coded shares on N different hosts, any K of which rebuild it,
        instead of a whole copy on every host; ValueError when there are fewer
        than N active hosts.
        """
        policy = Spread.parse(spread) if isinstance(spread, str) else spread or self.spread
        if policy is not None:
            spreading.preflight(self, policy)  # enough hosts, the key? (before anything is kept)
        source = Path(path)
        info = os.stat(source)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(21, "Is a directory", str(source))
        with open(source, "rb") as handle:
            if info.st_size > self.capacity:
                digest, size = copy_hashing(handle, progress=progress)
                record = self._new_record(source, digest, size)
                return self._keep_uncached(record, source, policy)
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
                    return digest
                placed = self._place(temp, record)
        if entry is not None:  # known content: nothing is sent again
            return digest
        if not placed:
            return self._keep_uncached(record, source, policy)
        try:
            with self.cache.hold(digest) as copy:  # readable even if evicted meanwhile
                self._distribute(record, copy, policy)
        except FileNotFoundError:  # evicted already: so some host holds it (sync sent it)
            self._distribute(record, source, policy)
        return digest

    def _distribute(self, record: FileRecord, source: Path, spread: Spread | None) -> bool:
        """Send a new file to the hosts: whole copies, or spread shares; True when
        it can be brought back from them (a copy, or K shares)."""
        if spread is None:
            return any(u.ok for u in self._send(record, source, self.active_hosts))
        shares = spreading.send(self, record, source, spread)
        return sum(share.ok for share in shares) >= spread.k

    def upload_many(self, paths: Iterable[str | os.PathLike[str]], *, workers: int = 8,
                    progress: Callable[[int], object] | None = None) -> list[str | Literal[False]]:
        """:meth:`upload` each of ``paths``, ``workers`` at a time; results in order.

        Many small files go much faster this way: their disk syncs and network
        round trips overlap.  The first bad path (missing, a directory) raises
        as :meth:`upload` does, before anything is uploaded.
        """
        sources = [Path(p) for p in paths]
        for source in sources:
            if stat.S_ISDIR(os.stat(source).st_mode):
                raise IsADirectoryError(21, "Is a directory", str(source))
        if workers <= 1 or len(sources) <= 1:
            return [self.upload(source, progress) for source in sources]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cloudmanager-upload") as pool:
            return list(pool.map(lambda source: self.upload(source, progress), sources))

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
            with self._pool_guard:
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
                results = self._send(record, copy, self.active_hosts, record_each=False)
        except FileNotFoundError:  # evicted or forgotten meanwhile: nothing left to send
            log.info("%s left the cache before it was sent", record.hash)
            return
        except Exception:  # a background job has no caller to raise to
            log.exception("sending %s to the hosts failed", record.hash)
            return
        if self.catalog.record_uploads(record.hash, results):
            return
        for result in results:  # forgotten meanwhile: take the new copies back
            host = self._by_name.get(result.host)
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
                       spread: Spread | None = None) -> str | Literal[False]:
        """Send a file that is not cached; record it only if the hosts took it."""
        if self.catalog.exists(record.hash):
            return record.hash
        if spread is not None:  # the shares are recorded on a row that says "not cached"
            self.catalog.add(record)
            if self._distribute(record, source, spread):
                return record.hash
            self.catalog.forget(record.hash)
            return False
        results = self._send(record, source, self.active_hosts, record_each=False)
        if not any(result.ok for result in results):
            return False
        self.catalog.add(FileRecord(record.hash, record.name, record.size, record.datetime,
                                    tuple(results)))
        return record.hash

    def _send(self, record: FileRecord, source: Path, hosts: Sequence[Host], *,
              record_each: bool = True) -> list[Upload]:
        """Upload ``source`` to ``hosts`` in parallel; each result is recorded as it
        arrives (``record_each``) or only the hosts' health is (the caller records)."""
        size = record.size

        def one(host: Host) -> Upload:
            try:
                started = time.monotonic()
                locator = host.upload(source, record.name, record.hash)
                self.speeds.note(host.name, size, time.monotonic() - started)
                if not isinstance(locator, str) or not locator:
                    raise HostError(host.name, f"upload returned no locator: {locator!r}")
                result = Upload(host.name, url=locator, encrypted=host.encrypted)
            except Exception as exc:  # a host's failure is recorded, never raised
                result = Upload(host.name, error=describe(exc))
            sent = size if result.ok else 0
            if record_each:
                self.catalog.record_upload(record.hash, result, sent=sent)
            else:
                self.catalog.note_host(host.name, result.error, sent=sent)
            return result

        if len(hosts) <= 1:
            return [one(host) for host in hosts]
        return list(self.executor().map(one, hosts))

    def executor(self) -> ThreadPoolExecutor:
        """The node's pool of threads for host transfers."""
        with self._pool_guard:  # upload_many's threads may ask at the same moment
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=max(4, 2 * len(self.hosts)),
                                                thread_name_prefix="cloudmanager-host")
            return self._pool

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
        cannot fit the cache.  Hosts are tried healthiest first; the bytes are
        verified against the SHA-256 before they are cached, and a host that
        fails or lies is recorded as such.
        """
        if not is_sha256(digest):
            return None
        entry = self.catalog.entry(digest)
        if entry is None:
            return None
        if entry.cached:
            if self.cache.size(digest) == entry.size:
                self.catalog.touch(digest)
                return str(self.cache.path(digest))
            log.warning("cached file %s was gone or damaged: fetching it again", digest)
            self.catalog.uncache([digest])
            self.cache.remove(digest)
        if entry.size > self.capacity:
            return False
        record = self.catalog.record(digest)
        if record is None:  # forgotten meanwhile
            return None
        return self._fetch(record)

    download = warm_up

    def open(self, digest: str) -> BinaryIO | None:
        """Warm the file up and open the cached copy for reading (binary).

        Unlike a path from :meth:`warm_up`, an open file stays readable even if
        another process evicts the file meanwhile.  Returns None for an unknown
        or malformed hash; raises Unavailable when it cannot be brought back.
        """
        with self.hold(digest) as copy:
            return None if copy is None else open(copy, "rb")

    @contextmanager
    def hold(self, digest: str) -> Iterator[Path | None]:
        """Warm the file up and hold it: the path given stays readable until the block
        ends, even if the file is evicted meanwhile (by this or another process).

        Gives None for an unknown or malformed hash; raises Unavailable when the
        file cannot be brought back (or is evicted again and again before it is held).
        """
        for _ in range(3):
            path = self.warm_up(digest)
            if path is None:
                yield None
                return
            if path is False:
                raise Unavailable(f"{digest}: no host gave the file back, or it does not fit the cache")
            with ExitStack() as stack:
                try:
                    copy = stack.enter_context(self.cache.hold(digest))
                except FileNotFoundError:  # evicted between the warm-up and the hold: again
                    continue
                yield copy
                return
        raise Unavailable(f"{digest}: evicted again and again before it could be held")

    def ranked(self, hosts: Sequence[Host]) -> list[Host]:
        """``hosts``, best first: fewest recent failures, then the fastest lately (in
        this process), then the latest success."""
        health = self.catalog.host_health(host.name for host in hosts)
        return sorted(hosts, key=lambda h: (health[h.name].failures, -self.speeds.rate(h.name),
                                            -(health[h.name].last_ok or 0)))

    def _sources(self, record: FileRecord) -> list[tuple[Host, str]]:
        """(host, locator) for every configured host holding a copy this node can
        read, healthiest first, each with the host object that reads it as stored."""
        readers: dict[str, tuple[Host, str]] = {}
        for upload in record.uploads:
            host = self._by_name.get(upload.host)
            if upload.url is None or host is None:
                continue
            if locators.copy_locates(host, upload, record.hash, self.key) is False:  # never asked for
                self.catalog.record_fetch(host.name, locators.FOREIGN, digest=record.hash, lost=True)
                continue
            reader = self._reader(host, upload.encrypted)
            if reader is None:
                log.info("%s: the copy on %s is encrypted and this node has no key", record.hash, host.name)
                continue
            readers[host.name] = (reader, upload.url)
        return [readers[host.name] for host in self.ranked([self._by_name[name] for name in readers])]

    def _reader(self, host: Host, sealed: bool) -> Host | None:
        """What reads a copy on ``host``: a sealed copy needs the key (None: no key);
        a plain copy on a host that encrypts now (made before) is read underneath."""
        bare = host.inner if isinstance(host, EncryptedHost) else host
        if not sealed:
            return bare
        if isinstance(host, EncryptedHost) and host.key is not None:
            return host
        return encrypting(bare, self.key) if self.key is not None else None

    def _fetch(self, record: FileRecord) -> str | Literal[False]:
        for host, locator in self._sources(record):
            with self.cache.temp() as temp:
                writer = HashingWriter(temp.file, limit=record.size)  # a flood stops here
                try:
                    started = time.monotonic()
                    host.download(locator, writer)
                    self.speeds.note(host.name, writer.size, time.monotonic() - started)
                except ObjectMissing as exc:
                    self.catalog.record_fetch(host.name, exc.reason, digest=record.hash, lost=True)
                    continue
                except Exception as exc:  # a host's failure is recorded, never raised
                    if writer.target_error is not None:  # our disk, not the host: stop here
                        log.error("cannot write to the cache: %s", writer.target_error)
                        return False
                    if writer.overflow:
                        self.catalog.record_fetch(host.name, "sent more bytes than the file has",
                                                  fetched=writer.size, digest=record.hash, lost=True)
                    else:
                        self.catalog.record_fetch(host.name, describe(exc))
                    continue
                if writer.size != record.size or writer.hexdigest() != record.hash:
                    self.catalog.record_fetch(host.name, "returned other bytes than were stored",
                                              fetched=writer.size, digest=record.hash, lost=True)
                    continue
                self.catalog.record_fetch(host.name, None, fetched=writer.size)
                if not self._place(temp, record):
                    return False
                return str(self.cache.path(record.hash))
        if record.spread is not None:
            with self.cache.temp() as temp:
                rebuilt = spreading.rebuild(self, record, temp)
                if rebuilt is not True:
                    log.warning("%s: %s", record.hash, rebuilt)
                    return False
                if self._place(temp, record):
                    return str(self.cache.path(record.hash))
        return False

    # -- sync with hosts and with other nodes -----------------------------------------

    def sync(self, copies: int | None = None, *, repair: bool = False) -> dict[str, list[Upload]]:
        """Send files to the hosts that failed to take them (or never got them).

        Retries, for every file, each active host whose entry is an error, and
        sends files no host holds yet (an upload cut off by a crash).  With
        ``copies``, files held by fewer hosts than that are also sent to more
        active hosts (healthiest first) until they would be.  The bytes come
        from the cache, or are fetched from a host that holds them.  A spread
        file whose upload left fewer than K shares gets its missing shares;
        with ``repair``, every spread file does (shares lost with a host, found
        by :meth:`check` with ``hosts`` or a failed fetch), on other active hosts.
        Returns, per file hash, the result of each host tried (a share's host is
        shown as "HOST (share I)").
        """
        active = self.active_hosts
        wanted: dict[str, list[Host]] = {}
        for digest, host_name in self.catalog.missing_copies([h.name for h in active]):
            wanted.setdefault(digest, []).append(self._by_name[host_name])
        if copies is not None:
            for digest, extra in self._more_copies(copies, active):
                wanted.setdefault(digest, [])
                wanted[digest] += [h for h in extra if h not in wanted[digest]]
        changes: dict[str, list[Upload]] = {}

        def resend(hosts: list[Host]) -> Callable[[FileRecord, Path], object]:
            return lambda record, copy: changes.update({record.hash: self._send(record, copy, hosts)})

        for digest, hosts in wanted.items():
            if hosts:
                self._with_copy(digest, resend(hosts))
        for digest in self.catalog.incomplete_spreads():
            record = self.catalog.record(digest)
            if record is None or record.spread is None:
                continue
            if repair or sum(share.ok for share in record.shares) < record.spread[0]:
                changes[digest] = [Upload(f"{s.host} (share {s.index})", s.url, s.error)
                                   for s in spreading.repair(self, record)]
        return changes

    def _more_copies(self, copies: int, active: list[Host]) -> Iterator[tuple[str, list[Host]]]:
        """For each file held by fewer than ``copies`` hosts, the active hosts to add."""
        health = self.catalog.host_health(h.name for h in active)
        ranked = sorted(active, key=lambda h: (health[h.name].failures, -(health[h.name].last_ok or 0)))
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
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise ValueError(f"since must be a change number >= 0, not {since!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be >= 1, not {limit!r}")
        records, cursor, more = self.catalog.changes(since, limit)
        return [payload.to_dict(r) for r in records], cursor, more

    def import_dump(self, dump: str | bytes | list[Any]) -> LoadReport:
        """Merge what is valid in a dump, and report the rest instead of refusing it all.

        ``dump`` is JSON text, or a list of records already decoded from JSON
        (validated all the same).  A record with a locator, for a host of this
        node, that cannot be its own is rejected whole (see locators.py).  Raises
        InvalidDump only when the document is not a dump at all.
        """
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

    def stats(self) -> dict[str, Any]:
        """Capacity, usage, file counts and bytes moved per host and month."""
        used, _ = self.catalog.usage()
        figures: dict[str, Any] = {"capacity": self.capacity, "used": used,
                                   "usage_ratio": self.usage_ratio()}
        figures.update(self.catalog.counts([h.name for h in self.active_hosts]))
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
        return self._by_name.get(name)

    def forget(self, digest: str, *, from_hosts: bool = False) -> maintenance.ForgetReport | None:
        """Remove a file from the cache and the catalog (None when unknown); with
        ``from_hosts``, delete its copies from the hosts that can delete first."""
        return maintenance.forget(self, digest, from_hosts=from_hosts) if is_sha256(digest) else None

    def relocate(self, target: str | os.PathLike[str],
                 on_switch: Callable[[Path], object] | None = None) -> maintenance.RelocateReport:
        """Move the cache to another directory (copy, verify, switch, clean up);
        ``on_switch(new_dir)`` records the new place before the old one is removed."""
        return maintenance.relocate(self, Path(target), on_switch)

    def expire(self, *, force: bool = False) -> maintenance.ExpireReport:
        """Delete host copies older than their host's ``keep_days``, keeping last copies
        unless ``force``."""
        return maintenance.expire(self, force=force)

    def check_hosts(self) -> dict[str, str | None]:
        """A small round trip to each host: None when it went well, else the problem."""
        return maintenance.check_hosts(self)

    # -- consistency --------------------------------------------------------------------

    def repair(self) -> RepairReport:
        """Make the catalog and the cache agree (run on open, safe at any time).

        Removes temporary files left by dead writers and cached files the
        catalog does not count; a row whose cached file is gone or has the
        wrong size counts as not cached (warm_up fetches it again); the usage
        total is reset if it drifted; files are evicted down to the capacity.
        """
        report = self._audit(fix=True, verify=False)
        if not report.clean:
            log.warning("catalog and cache disagreed and were mended: %s", report)
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
            strays = [d for d, size in scan.files.items() if counted.get(d) != size]
            report.removed_temps = len(scan.removed_temps)
            report.removed_strays = len(scan.removed_strays) + len(strays)
            report.foreign = [str(p) for p in scan.foreign]
            if fix:
                self.catalog.uncache(bad + report.damaged)
                for digest in strays + report.damaged:
                    self.cache.remove(digest)
            report.uncounted = bad
            report.recounted = self.catalog.recount(fix=fix)
        if fix:
            victims = self.catalog.shrink_to(self.capacity)
            self._remove_uncounted(victims)
            report.evicted = len(victims)
        return report

    def _hash_of(self, digest: str) -> str | None:
        """The SHA-256 of the cached file's bytes (None when it cannot be read)."""
        try:
            with open(self.cache.path(digest), "rb") as handle:
                return copy_hashing(handle)[0]
        except OSError:
            return None

    def check(self, *, repair: bool = False, hosts: bool = False,
              verify_hash: bool = False) -> CheckReport:
        """Check that the catalog tells the truth (``cm fsck``).

        Locally: every cached file known with the right size (and, with
        ``verify_hash``, the right SHA-256), no leftover temporary file, the
        usage total exact.  With ``hosts``: each host is asked whether it
        still holds each copy recorded for it (its size where it can tell;
        the bytes' hash with ``verify_hash``); a lost copy is recorded as an
        error for that host.  With ``repair``, what was found is mended: the
        cache as :meth:`repair` does, lost copies sent again by :meth:`sync`.
        """
        report = CheckReport(local=self._audit(fix=repair, verify=verify_hash))
        if hosts:
            report.hosts = maintenance.check_copies(self, verify_hash=verify_hash, remove_bad=repair)
            if repair and report.hosts.lost:
                changes = self.sync(repair=True)
                report.resent = sum(u.ok for uploads in changes.values() for u in uploads)
        report.repaired = repair
        return report

