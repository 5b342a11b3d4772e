"""Spread files: N erasure-coded shares on N hosts, any K of which bring the file back.

The manager's orchestration for spread files (as maintenance.py is for the
administrative commands): cutting a file into shares and sending each to its own
host, fetching K shares back and rebuilding the file, and rebuilding shares lost
with a host onto other hosts.  The coding itself is erasure.py's; sealing is
crypto.py's.  When the hosts are encrypting ones, the file is sealed first and
the sealed bytes are cut (encrypt, then cut); shares then go to the hosts
underneath, since they are sealed already.

Shares wait in the cache directory as locked temporary files (a crash leaves
nothing that the next open does not remove); the catalog keeps each share's
host, index, locator and SHA-256, and a share whose bytes are not that SHA-256
is refused and recorded as lost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

from .cache import TempFile
from .crypto import DecryptError, Decryptor, Key, encrypt, sealed_size
from .erasure import ShareError, Spread, decode, encode
from .errors import HostError, ObjectMissing
from .hosts import Host
from .hosts.base import describe
from .hosts.encrypted import EncryptedHost
from .records import FileRecord, Share
from .streams import HashingWriter

if TYPE_CHECKING:
    from .manager import CloudManager

log = logging.getLogger(__name__)


def _bare(host: Host) -> Host:
    """The host that stores shares: underneath an encrypting one (shares come sealed)."""
    return host.inner if isinstance(host, EncryptedHost) else host


def _key(hosts: Sequence[Host]) -> Key | None:
    """The key of the encrypting hosts among ``hosts`` (None: shares are not sealed)."""
    for host in hosts:
        if isinstance(host, EncryptedHost):
            if host.key is None:
                raise HostError(host.name, "its copies are encrypted and this node has no key")
            return host.key
    return None


def choose_hosts(manager: CloudManager, spread: Spread, exclude: set[str] | None = None) -> list[Host]:
    """The ``spread.n`` healthiest active hosts (ValueError when there are fewer)."""
    candidates = [h for h in manager.active_hosts if h.name not in (exclude or set())]
    if len(candidates) < spread.n:
        raise ValueError(f"a {spread} spread needs {spread.n} active hosts; this node has "
                         f"{len(candidates)}")
    return manager.ranked(candidates)[: spread.n]


def _object_id(digest: str, key: Key | None) -> str:
    return key.object_name(digest) if key is not None else digest


@contextmanager
def _object_stream(manager: CloudManager, source: Path, key: Key | None) -> Iterator[tuple[BinaryIO, int]]:
    """The bytes to cut: the file itself, or sealed into a cache temp first."""
    with open(source, "rb") as plain:
        if key is None:
            yield plain, Path(source).stat().st_size
            return
        with manager.cache.temp() as sealed:
            size = encrypt(plain, sealed.file, key)
            with open(sealed.path, "rb") as handle:
                yield handle, size


def send(manager: CloudManager, record: FileRecord, source: Path, spread: Spread,
         hosts: Sequence[Host] | None = None, only: set[int] | None = None) -> list[Share]:
    """Cut ``source`` into shares and send share *i* to the *i*-th of ``hosts`` (default:
    the healthiest active ones), in parallel; recorded in the catalog as they go.
    ``only``: send just these share numbers (a repair; the others exist already)."""
    chosen = list(hosts) if hosts is not None else choose_hosts(manager, spread)
    key = _key(chosen)
    object_id = _object_id(record.hash, key)
    with ExitStack() as stack:
        temps = [stack.enter_context(manager.cache.temp()) for _ in range(spread.n)]
        writers = [HashingWriter(temp.file) for temp in temps]
        stream, size = stack.enter_context(_object_stream(manager, source, key))
        encode(stream, size, spread, bytes.fromhex(object_id), writers)
        wanted = [i for i in range(spread.n) if only is None or i in only]

        def one(index: int) -> Share:
            host = chosen[wanted.index(index)] if only is not None else chosen[index]
            digest, length = writers[index].hexdigest(), writers[index].size
            try:
                locator = _bare(host).upload(temps[index].path, f"{object_id}.{index}", digest)
                return Share(index, host.name, url=locator, digest=digest, size=length,
                             encrypted=key is not None)
            except Exception as exc:  # a host's failure is recorded, never raised
                return Share(index, host.name, error=describe(exc), digest=digest, size=length,
                             encrypted=key is not None)

        shares = list(manager.executor().map(one, wanted))
    manager.catalog.record_shares(record.hash, (spread.k, spread.n), shares)
    return shares


def _sources(manager: CloudManager, record: FileRecord) -> list[tuple[Host, Share]]:
    """(host, share) for every held share on a configured host, healthiest first."""
    held = [(host, share) for share in record.shares
            if share.ok and (host := manager.host(share.host)) is not None]
    order = {host.name: i for i, host in enumerate(manager.ranked([h for h, _ in held]))}
    return sorted(held, key=lambda pair: order[pair[0].name])


def _fetch_share(manager: CloudManager, stack: ExitStack, host: Host, share: Share, digest: str
                 ) -> TempFile | None:
    """Download one share into a cache temp (kept open by ``stack``) and verify it."""
    temp = stack.enter_context(manager.cache.temp())
    writer = HashingWriter(temp.file, limit=share.size)
    assert share.url is not None
    try:
        _bare(host).download(share.url, writer)
    except ObjectMissing as exc:
        manager.catalog.share_lost(digest, share.index, exc.reason)
        return None
    except Exception as exc:  # a host's failure is recorded, never raised
        if writer.overflow:
            manager.catalog.share_lost(digest, share.index, "sent more bytes than the share has",
                                       writer.size)
        else:
            manager.catalog.note_host(host.name, describe(exc))
        return None
    if writer.size != share.size or writer.hexdigest() != share.digest:
        manager.catalog.share_lost(digest, share.index, "returned other bytes than the share stored",
                                   writer.size)
        return None
    manager.catalog.note_host(host.name, None, fetched=writer.size)
    return temp


def gather(manager: CloudManager, record: FileRecord, stack: ExitStack) -> dict[int, TempFile] | None:
    """K verified shares of a spread file, fetched in parallel from the best hosts
    (a failed one is replaced by the next); None when fewer than K come back."""
    assert record.spread is not None
    k = record.spread[0]
    waiting = _sources(manager, record)
    got: dict[int, TempFile] = {}
    running: dict[Future[TempFile | None], Share] = {}
    pool = manager.executor()
    while len(got) < k:
        while waiting and len(running) < k - len(got):
            host, share = waiting.pop(0)
            running[pool.submit(_fetch_share, manager, stack, host, share, record.hash)] = share
        if not running:
            return None
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            share = running.pop(future)
            temp = future.result()
            if temp is not None:
                got[share.index] = temp
    wait(running)  # more than K asked for: let the extra ones finish (their temps are on the stack)
    return got


def rebuild(manager: CloudManager, record: FileRecord, out: TempFile) -> Literal[True] | str:
    """Write the file rebuilt from K shares into ``out`` and verify its SHA-256.

    True when done; otherwise the reason it could not be."""
    assert record.spread is not None
    spread = Spread(*record.spread)
    sealed = any(share.encrypted for share in record.shares)
    key = manager.key if sealed else None
    if sealed and key is None:
        return "its shares are encrypted and this node has no key"
    with ExitStack() as stack:
        shares = gather(manager, record, stack)
        if shares is None:
            return f"fewer than {spread.k} of its {spread.n} shares came back"
        writer = HashingWriter(out.file, limit=record.size)
        opener = Decryptor(writer, key) if key is not None else None
        size = sealed_size(record.size) if key is not None else record.size
        readers = {i: stack.enter_context(open(temp.path, "rb")) for i, temp in shares.items()}
        try:
            decode(readers, spread, size, bytes.fromhex(_object_id(record.hash, key)),
                   opener if opener is not None else writer)
            if opener is not None:
                opener.finish()
        except (ShareError, DecryptError) as exc:
            return f"its shares do not rebuild it: {exc}"
        if writer.size != record.size or writer.hexdigest() != record.hash:
            return "its shares rebuild other bytes than were stored"
    return True


def missing_shares(record: FileRecord) -> set[int]:
    """The share numbers of a spread file that no host holds."""
    if record.spread is None:
        return set()
    held = {share.index for share in record.shares if share.ok}
    return set(range(record.spread[1])) - held


def repair(manager: CloudManager, record: FileRecord, source: Path) -> list[Share]:
    """Rebuild the shares of a spread file that no host holds onto other active hosts,
    from the file's bytes at ``source``.

    A sealed file is sealed again with a new salt, so *every* share changes: the
    shares still held are replaced too (on the same hosts) along with the lost ones."""
    assert record.spread is not None
    spread = Spread(*record.spread)
    lost = missing_shares(record)
    if not lost:
        return []
    holders = {share.index: share.host for share in record.shares if share.ok}
    fresh = choose_hosts(manager, Spread(len(lost), len(lost)), exclude=set(holders.values()))
    if any(share.encrypted for share in record.shares):
        refill = iter(fresh)
        hosts = [manager.host(holders[i]) if i in holders else None for i in range(spread.n)]
        return send(manager, record, source, spread, [h if h is not None else next(refill) for h in hosts])
    return send(manager, record, source, spread, fresh, only=lost)
