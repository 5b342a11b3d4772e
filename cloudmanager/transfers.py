"""Moving bytes between this node and its hosts: one object the manager, spreading and
maintenance all receive (none of them reaches into another).

It holds the configured hosts, the pool of threads transfers run on, how fast each
host moved bytes lately, and the one ranking of hosts every caller uses (fewest
recent failures, then the fastest, then the latest success).  It sends a file to
hosts (recording each result or only the host's health), and fetches a whole copy
into a file, verified on the way, trying the best holder first and recording a
host that fails or lies.  Reading a sealed copy needs the node's key: the reader
of each copy is chosen here too.  Shares of spread files are spreading.py's; the
cache and the cache state are the manager's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import locators
from .cache import TempFile
from .catalog import CatalogBase
from .crypto import Key
from .errors import HostError, ObjectMissing
from .hosts import Host
from .hosts.base import describe
from .hosts.encrypted import EncryptedHost, encrypting, underneath
from .hosts.speed import Speeds
from .records import FileRecord, Upload
from .streams import HashingWriter

log = logging.getLogger(__name__)


class Transfers:
    """The node's hosts and the transfers to and from them (safe between threads)."""

    def __init__(self, hosts: Sequence[Host], catalog: CatalogBase, key: Key | None):
        #: Every configured host, in configuration order.
        self.hosts = list(hosts)
        self.catalog = catalog
        #: The node's encryption key (None: it has none); reads sealed copies.
        self.key = key
        #: How fast each host moved bytes lately (ranks hosts for downloads and spreads).
        self.speeds = Speeds()
        self._by_name = {host.name: host for host in self.hosts}
        self._pool: ThreadPoolExecutor | None = None
        self._guard = threading.Lock()

    # -- the hosts ----------------------------------------------------------------------

    def host(self, name: str) -> Host | None:
        """The configured host of this name, or None."""
        return self._by_name.get(name)

    @property
    def active(self) -> list[Host]:
        """The hosts that get new uploads (inactive ones still serve downloads)."""
        return [host for host in self.hosts if host.active]

    def ranked(self, hosts: Iterable[Host]) -> list[Host]:
        """``hosts``, best first: fewest recent failures, then the fastest lately (in
        this process), then the latest success."""
        hosts = list(hosts)
        health = self.catalog.host_health(host.name for host in hosts)
        return sorted(hosts, key=lambda h: (health[h.name].failures, -self.speeds.rate(h.name),
                                            -(health[h.name].last_ok or 0)))

    def executor(self) -> ThreadPoolExecutor:
        """The pool of threads for host transfers."""
        with self._guard:  # upload_many's threads may ask at the same moment
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=max(4, 2 * len(self.hosts)),
                                                thread_name_prefix="cloudmanager-host")
            return self._pool

    def close(self) -> None:
        """Finish the running transfers and close every host."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for host in self.hosts:
            host.close()

    # -- sending ------------------------------------------------------------------------

    def send(self, record: FileRecord, source: Path, hosts: Sequence[Host], *,
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

    # -- fetching -----------------------------------------------------------------------

    def sources(self, record: FileRecord) -> list[tuple[Host, str]]:
        """(host, locator) for every configured host holding a copy this node can
        read, best first, each with the host object that reads it as stored.  A
        locator that cannot be the file's (see locators.py) is recorded as a lost copy."""
        readers: dict[str, tuple[Host, str]] = {}
        for upload in record.uploads:
            host = self._by_name.get(upload.host)
            if upload.url is None or host is None:
                continue
            if locators.copy_locates(host, upload, record.hash, self.key) is False:  # never asked for
                self.catalog.record_fetch(host.name, locators.FOREIGN, digest=record.hash, lost=True)
                continue
            reader = self.reader(host, upload.encrypted)
            if reader is None:
                log.info("%s: the copy on %s is encrypted and this node has no key", record.hash, host.name)
                continue
            readers[host.name] = (reader, upload.url)
        return [readers[host.name] for host in self.ranked(self._by_name[name] for name in readers)]

    def reader(self, host: Host, sealed: bool) -> Host | None:
        """What reads a copy on ``host``: a sealed copy needs the key (None: no key);
        a plain copy on a host that encrypts now (made before) is read underneath."""
        bare = underneath(host)
        if not sealed:
            return bare
        if isinstance(host, EncryptedHost) and host.key is not None:
            return host
        return encrypting(bare, self.key) if self.key is not None else None

    def fetch_whole(self, record: FileRecord, out: TempFile) -> bool:
        """Write a whole copy of the file into ``out``, verified (size and SHA-256):
        holders best first, a host that fails or lies recorded and the next one tried.
        True when one gave it; raises OSError when ``out`` cannot be written (not the
        hosts' doing: no other host is tried)."""
        for host, locator in self.sources(record):
            out.file.seek(0)
            out.file.truncate()
            writer = HashingWriter(out.file, limit=record.size)  # a flood stops here
            try:
                started = time.monotonic()
                host.download(locator, writer)
                self.speeds.note(host.name, writer.size, time.monotonic() - started)
            except ObjectMissing as exc:
                self.catalog.record_fetch(host.name, exc.reason, digest=record.hash, lost=True)
                continue
            except Exception as exc:  # a host's failure is recorded, never raised
                if writer.target_error is not None:  # our disk, not the host: stop here
                    raise writer.target_error from None
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
            return True
        return False
