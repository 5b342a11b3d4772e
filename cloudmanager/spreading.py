"""Spread files: N erasure-coded shares on N hosts, any K of which bring the file back.

What the manager does with spread files (as maintenance.py does the
administrative commands), given the node's transfers and cache: cutting a file
into shares and sending each to its own host, fetching K shares back and
rebuilding the file, and rebuilding shares lost with a host onto other hosts.
The coding itself is erasure.py's; sealing is crypto.py's.  When the hosts are
encrypting ones, the file is sealed first and
the sealed bytes are cut (encrypt, then cut); shares then go to the hosts
underneath, since they are sealed already.

Shares wait in the cache directory as locked temporary files (a crash leaves
nothing that the next open does not remove); the catalog keeps each share's
host, index, locator and SHA-256, and a share whose bytes are not that SHA-256
is refused and recorded as lost.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

from .cache import Cache, TempFile
from .catalog import CatalogBase
from .crypto import DecryptError, Decryptor, Key, encrypt, sealed_size
from .erasure import ShareError, Spread, decode, encode
from .errors import HostError, ObjectMissing
from .hosts import Adopter, Deleter, Host
from .hosts.base import describe
from .hosts.encrypted import EncryptedHost, underneath
from .locators import share_locates
from .records import FileRecord, Share
from .streams import Discard, Handoff, HashingWriter, Pipe, Sink, Tee, TooManyBytes

if TYPE_CHECKING:
    from .transfers import Transfers

log = logging.getLogger(__name__)


#: The host that stores shares: underneath an encrypting one (shares come sealed).
_bare = underneath


def _key(hosts: Sequence[Host]) -> Key | None:
    """The key of the encrypting hosts among ``hosts`` (None: shares are not sealed)."""
    for host in hosts:
        if isinstance(host, EncryptedHost):
            if host.key is None:
                raise HostError(host.name, "its copies are encrypted and this node has no key")
            return host.key
    return None


def choose_hosts(transfers: Transfers, spread: Spread, exclude: set[str] | None = None) -> list[Host]:
    """The ``spread.n`` best active hosts (ValueError when there are fewer)."""
    candidates = [h for h in transfers.active if h.name not in (exclude or set())]
    if len(candidates) < spread.n:
        raise ValueError(f"a {spread} spread needs {spread.n} active hosts; this node has "
                         f"{len(candidates)}")
    return transfers.ranked(candidates)[: spread.n]


def preflight(transfers: Transfers, spread: Spread) -> None:
    """Check, before anything is kept, that a new file can be spread: enough active
    hosts, and the key when they encrypt.  ValueError saying what is missing."""
    try:
        _key(choose_hosts(transfers, spread))
    except HostError as exc:
        raise ValueError(f"cannot spread: {exc}") from None


def _object_id(digest: str, key: Key | None) -> str:
    return key.object_name(digest) if key is not None else digest


@contextmanager
def _object_stream(cache: Cache, source: Path, key: Key | None) -> Iterator[tuple[BinaryIO, int]]:
    """The bytes to cut: the file itself, or sealed into a cache temp first."""
    with open(source, "rb") as plain:
        if key is None:
            yield plain, Path(source).stat().st_size
            return
        with cache.temp() as sealed:
            handoff = Handoff(sealed.file)  # sealing overlaps writing what is sealed
            try:
                size = encrypt(plain, handoff, key)
            finally:
                handoff.close()
            with open(sealed.path, "rb") as handle:
                yield handle, size


def send(transfers: Transfers, cache: Cache, record: FileRecord, source: Path, spread: Spread,
         hosts: Sequence[Host] | None = None) -> list[Share]:
    """Cut the file at ``source`` into shares (sealed first when the hosts encrypt)
    and send share *i* to the *i*-th of ``hosts`` (default: the best active ones), in
    parallel; recorded in the catalog as they go."""
    chosen = list(hosts) if hosts is not None else choose_hosts(transfers, spread)
    key = _key(chosen)
    with _object_stream(cache, source, key) as (stream, size):
        return _cut_and_send(transfers, cache, record, stream, size, spread, key, dict(enumerate(chosen)))


def _cut_and_send(transfers: Transfers, cache: Cache, record: FileRecord, stream: BinaryIO, size: int,
                  spread: Spread, key: Key | None, hosts: dict[int, Host]) -> list[Share]:
    """Cut the object (the file, or its sealed bytes when ``key``) read from ``stream``
    into shares, and send share *i* to ``hosts[i]`` (only those shares)."""
    object_id = _object_id(record.hash, key)
    with ExitStack() as stack:
        temps = [stack.enter_context(cache.temp()) for _ in range(spread.n)]
        writers = [HashingWriter(temp.file) for temp in temps]
        handoffs = [Handoff(writer) for writer in writers]  # shares hashed and written in parallel
        try:
            encode(stream, size, spread, bytes.fromhex(object_id), handoffs)
        finally:
            for handoff in handoffs:
                handoff.close()

        def one(index: int) -> Share:
            host = hosts[index]
            digest, length = writers[index].hexdigest(), writers[index].size
            try:
                bare = _bare(host)  # a share is a new file: a host that can adopt it moves it
                send = bare.adopt if isinstance(bare, Adopter) else bare.upload
                started = time.monotonic()
                locator = send(temps[index].path, f"{object_id}.{index}", digest)
                transfers.speeds.note(host.name, length, time.monotonic() - started)
                return Share(index, host.name, url=locator, digest=digest, size=length,
                             encrypted=key is not None)
            except Exception as exc:  # a host's failure is recorded, never raised
                return Share(index, host.name, error=describe(exc), digest=digest, size=length,
                             encrypted=key is not None)

        shares = list(transfers.executor().map(one, sorted(hosts)))
    transfers.catalog.record_shares(record.hash, (spread.k, spread.n), shares)
    return shares


def _sources(transfers: Transfers, record: FileRecord) -> list[tuple[Host, Share]]:
    """(host, share) for every held share on a configured host whose locator can be that
    share's (see locators.py), best first (Transfers.ranked)."""
    held = [(host, share) for share in record.shares
            if share.ok and (host := transfers.host(share.host)) is not None
            and share_locates(host, share) is not False]
    order = {host.name: i for i, host in enumerate(transfers.ranked([h for h, _ in held]))}
    return sorted(held, key=lambda pair: order[pair[0].name])


@dataclass
class _Fetch:
    """One share's download into a pipe, as the decoder reads it."""

    host: Host
    share: Share
    verify: bool  # hash the share (to find which one is bad), or trust the file's hash
    pipe: Pipe = field(default_factory=Pipe)
    writer: HashingWriter | None = None
    error: BaseException | None = None
    stopped: bool = False  # the download failed because the decoder had given up

    def run(self) -> None:
        """Download the share into the pipe (in a worker thread)."""
        assert self.share.url is not None
        self.writer = HashingWriter(self.pipe, limit=self.share.size, hashing=self.verify)
        try:
            _bare(self.host).download(self.share.url, self.writer)
        except BaseException as exc:  # told to the decoder, judged after
            self.error = exc
            self.stopped = self.pipe.abandoned  # by the reader, not the host's doing
            self.pipe.close(ShareError(f"share {self.share.index} did not come back"))
            return
        self.pipe.close()

    def problem(self) -> tuple[str, bool] | None:
        """What went wrong with this share (and whether the share is lost), or None."""
        writer = self.writer
        if self.error is not None:
            if self.stopped and not isinstance(self.error, ObjectMissing):
                return None  # stopped by us: the host is not to blame
            if isinstance(self.error, ObjectMissing):
                return self.error.reason, True
            if writer is not None and writer.overflow:
                return "sent more bytes than the share has", True
            return describe(self.error), False
        assert writer is not None  # the download ran to its end
        if writer.size != self.share.size or (self.verify and writer.hexdigest() != self.share.digest):
            return "returned other bytes than the share stored", True
        return None

    def record(self, catalog: CatalogBase, digest: str) -> bool:
        """Record how the host did; True when the share is to be avoided."""
        problem = self.problem()
        fetched = self.writer.size if self.writer is not None else 0
        if problem is None:
            if self.error is None:
                catalog.note_host(self.host.name, None, fetched=fetched)
            return False
        reason, lost = problem
        if lost:
            catalog.share_lost(digest, self.share.index, reason, fetched)
        else:
            catalog.note_host(self.host.name, reason)
        return True


def _attempt(transfers: Transfers, record: FileRecord, chosen: list[tuple[Host, Share]], out: TempFile,
             key: Key | None, verify: bool, sealed_out: bool) -> tuple[bool, set[int], str]:
    """Stream K shares from their hosts straight into the decoder (no share touches
    the disk); (rebuilt and verified, the shares to avoid next time, why not).
    ``verify``: hash each share too, to tell which one is bad.  ``sealed_out``: write
    the sealed bytes to ``out`` (they are opened all the same, to verify them)."""
    assert record.spread is not None
    spread = Spread(*record.spread)
    fetches = {share.index: _Fetch(host, share, verify) for host, share in chosen}
    running = [transfers.executor().submit(fetch.run) for fetch in fetches.values()]
    writer = HashingWriter(Discard() if sealed_out else out.file, limit=record.size)
    opener = Decryptor(writer, key) if key is not None else None
    target: Sink = opener if opener is not None else writer
    if sealed_out:
        target = Tee(out.file, target)
    handoff = Handoff(target)  # decoding overlaps hashing and writing
    failure = ""
    try:
        try:
            decode({i: fetch.pipe for i, fetch in fetches.items()}, spread,
                   sealed_size(record.size) if key is not None else record.size,
                   bytes.fromhex(_object_id(record.hash, key)), handoff)
        finally:
            handoff.close()
        if opener is not None:
            opener.finish()
    except (ShareError, DecryptError, TooManyBytes) as exc:
        failure = f"its shares do not rebuild it: {exc}"
    except OSError as exc:
        if writer.target_error is None:
            raise
        return False, set(), f"cannot write to the cache: {exc}"
    finally:
        for fetch in fetches.values():
            fetch.pipe.abandon()
        wait(running)
    avoid = {i for i, fetch in fetches.items() if fetch.record(transfers.catalog, record.hash)}
    if not failure and (writer.size != record.size or writer.hexdigest() != record.hash):
        failure = "its shares rebuild other bytes than were stored"
    return not failure, avoid, failure


def rebuild(transfers: Transfers, record: FileRecord, out: TempFile, *,
            sealed_out: bool = False) -> Literal[True] | str:
    """Write the file rebuilt from K shares into ``out`` and verify its SHA-256
    (``sealed_out``: write the object the shares were cut from, sealed bytes for an
    encrypted spread, verified all the same).

    The K best holders stream their shares in parallel straight into the
    decoder; the rebuilt file's SHA-256 vouches for them all.  When it does not
    match, the same is done again with every share hashed too: a share whose
    bytes are not its SHA-256 (or that fails) is recorded and replaced by the
    next holder's, from the start.  True when done; otherwise the reason it
    could not be.
    """
    assert record.spread is not None
    k, n = record.spread
    sealed = any(share.encrypted for share in record.shares)
    key = transfers.key if sealed else None
    if sealed and key is None:
        return "its shares are encrypted and this node has no key"
    sources = _sources(transfers, record)
    avoided: set[int] = set()
    verify = False
    while True:
        chosen = [(host, share) for host, share in sources if share.index not in avoided][:k]
        if len(chosen) < k:
            return f"fewer than {k} of its {n} shares came back"
        done, avoid, failure = _attempt(transfers, record, chosen, out, key, verify, sealed_out)
        if done:
            return True
        if not avoid and verify:
            return failure
        avoided |= avoid
        verify = verify or not avoid  # a bad share somewhere: find it
        out.file.seek(0)
        out.file.truncate()


def missing_shares(record: FileRecord) -> set[int]:
    """The share numbers of a spread file that no host holds."""
    if record.spread is None:
        return set()
    held = {share.index for share in record.shares if share.ok}
    return set(range(record.spread[1])) - held


def repair(transfers: Transfers, cache: Cache, record: FileRecord) -> list[Share]:
    """Rebuild the shares of a spread file that no host holds onto other active hosts.

    With K shares still held, the object the shares were cut from (the file, or its
    sealed bytes) is rebuilt from them and cut again: the same shares come out, so
    only the lost ones are sent and the held ones stay as they are.  With fewer
    (an upload most hosts refused), the cached copy is cut instead: a plain file
    gives the same shares again; a sealed one is sealed anew, so every share is
    new and the old ones are deleted where their hosts can.
    """
    assert record.spread is not None
    spread = Spread(*record.spread)
    lost = missing_shares(record)
    if not lost:
        return []
    held = {share.index: share for share in record.shares if share.ok}
    others = {share.host for share in held.values()}
    fresh = iter(choose_hosts(transfers, Spread(len(lost), len(lost)), exclude=others))
    targets = {index: next(fresh) for index in sorted(lost)}
    sealed = any(share.encrypted for share in record.shares)
    if len(held) >= spread.k:
        with cache.temp() as cut:
            rebuilt = rebuild(transfers, record, cut, sealed_out=True)
            if rebuilt is not True:
                log.warning("cannot repair %s: %s", record.hash, rebuilt)
                return []
            with open(cut.path, "rb") as stream:
                return _cut_and_send(transfers, cache, record, stream, os.fstat(stream.fileno()).st_size,
                                     spread, transfers.key if sealed else None, targets)
    try:
        with cache.hold(record.hash) as copy:
            if not sealed:
                with open(copy, "rb") as stream:
                    return _cut_and_send(transfers, cache, record, stream, os.fstat(stream.fileno()).st_size,
                                         spread, None, targets)
            key = transfers.key
            if key is None:
                log.warning("cannot repair %s: its shares are sealed and this node has no key", record.hash)
                return []
            for index, share in held.items():  # the old sealing's shares are of no use now
                host = transfers.host(share.host)
                targets[index] = host if host is not None else targets[index]
                _withdraw(host, share, transfers.catalog.exists)
            with _object_stream(cache, copy, key) as (stream, size):
                return _cut_and_send(transfers, cache, record, stream, size, spread, key, targets)
    except FileNotFoundError:
        log.warning("cannot repair %s: fewer than %d shares are held and it is not cached",
                    record.hash, spread.k)
        return []


def _withdraw(host: Host | None, share: Share, is_file: Callable[[str], bool]) -> None:
    """Delete a share that is replaced, where its host can delete and its locator can
    only be that share's (else it stays, unused; ``is_file``: see share_locates)."""
    if host is None or share.url is None or share_locates(host, share, is_file) is not True:
        return
    bare = _bare(host)
    if not isinstance(bare, Deleter):
        return
    try:
        bare.delete(share.url)
    except HostError as exc:
        log.warning("cannot delete the replaced share %d on %s: %s", share.index, share.host, exc.reason)
