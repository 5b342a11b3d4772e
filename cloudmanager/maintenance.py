"""Administrative operations on a node: forget a file, move the cache, expire old
copies, check the hosts.  Each is exposed as a CloudManager method; they live
here so that manager.py stays the flow of a file.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from . import locators
from .cache import Cache, Owner
from .errors import HostError, ObjectMissing
from .hosts import Checker, Deleter, Host
from .hosts.encrypted import underneath
from .locking import FileLock
from .records import FileRecord
from .streams import Discard, HashingWriter, TooManyBytes, copy_hashing

if TYPE_CHECKING:
    from .catalog import CatalogBase
    from .transfers import Transfers

DAY = 86_400


@dataclass
class ForgetReport:
    """What ``forget`` did with each host's copy, and whether the record went."""

    forgotten: bool = False
    deleted: list[str] = field(default_factory=list)  # hosts whose copy was deleted
    left: dict[str, str] = field(default_factory=dict)  # host -> why its copy is still there
    failed: dict[str, str] = field(default_factory=dict)  # host -> error (the record is kept)


def forget(transfers: Transfers, cache: Cache, digest: str, *,
           from_hosts: bool = False) -> ForgetReport | None:
    """Remove a file from the cache and the catalog; with ``from_hosts``, first
    delete its copies from the hosts that can delete.  When a deletion fails
    the record is kept (so the copy is not lost track of) and the failure is
    reported.  A copy is deleted only through a locator that can only be this
    file's (see locators.py): a record from another node may name another file's
    object.  None for an unknown file."""
    record = transfers.catalog.record(digest)
    if record is None:
        return None
    report = ForgetReport()
    for upload in record.uploads:
        if upload.url is None:
            continue
        host = transfers.host(upload.host)
        if not from_hosts:
            report.left[upload.host] = "not asked to delete"
        elif host is None:
            report.left[upload.host] = "not a host of this node"
        elif not isinstance(host, Deleter):
            report.left[upload.host] = "this kind of host cannot delete"
        elif (refused := locators.not_deletable(host, upload, digest, transfers.key)) is not None:
            report.left[upload.host] = refused
        else:
            try:
                host.delete(upload.url)
            except HostError as exc:
                report.failed[upload.host] = exc.reason
                continue
            transfers.catalog.drop_upload(digest, upload.host)
            report.deleted.append(upload.host)
    if report.failed:
        return report
    transfers.catalog.uncache([digest])
    cache.remove(digest)
    report.forgotten = transfers.catalog.forget(digest)
    return report


@dataclass
class RelocateReport:
    """What moving the cache did."""

    target: Path
    moved: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # hash -> why it could not be moved
    switched: bool = False


def relocate(catalog: CatalogBase, cache: Cache, owner: Owner, target: Path,
             on_switch: Callable[[Path], object] | None = None) -> tuple[RelocateReport, Cache | None]:
    """Move the cache to ``target``: copy each cached file, verify its SHA-256,
    switch to the new directory, then remove the old copies.

    ``on_switch(target)`` records the new place where the next process will look
    for it (the configuration file): it runs after every copy is verified and
    before anything old is removed, so a crash at any moment leaves a
    configuration that names a complete cache.  If it raises, nothing is
    switched and the copies are removed.

    A file that cannot be moved is reported and stops counting as cached (a
    host holds it, so warm_up brings it back); if such a file is held by no
    host, nothing is switched.  ``target`` must be empty or new, and not inside
    the current cache (nor contain it).  Other processes using this cache
    should be stopped first: they would keep writing to the old directory.
    Returns the report and the cache in its new place (None when nothing was
    switched), which the caller uses from then on.
    """
    target = target.expanduser().resolve()
    old_root = cache.root.resolve()
    if target == old_root or old_root in target.parents or target in old_root.parents:
        raise ValueError(f"{target} overlaps the current cache {old_root}")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"{target} must be a new or empty directory")
    report = RelocateReport(target)
    # The copy runs under the cache's exclusive lock, so it writes with a lock of
    # its own (taking the shared cache lock again there would wait forever).
    staging_lock = target.parent / f".{target.name}.relocating.lock"
    target.parent.mkdir(parents=True, exist_ok=True)
    new = Cache(target, FileLock(staging_lock))
    with cache.lock.exclusive():
        counted = catalog.cached_sizes()
        pending = {e for e in counted if (entry := catalog.entry(e)) is not None and entry.copies == 0}
        for digest, size in counted.items():
            problem = _copy_verified(cache.path(digest), new, digest, size)
            if problem is None:
                report.moved += 1
            else:
                report.failed[digest] = problem
        staging_lock.unlink(missing_ok=True)
        if set(report.failed) & pending:
            shutil.rmtree(target, ignore_errors=True)
            return report, None  # a file held by no host could not be moved: nothing switched
        # Ownership moves with the files: the new folder is marked first, and the
        # old one unmarked before the switch, so that whichever folder the
        # configuration names after a crash, the catalog lets it in.
        new.write_owner(owner)
        cache.disown()
        try:
            if on_switch is not None:
                on_switch(target)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            cache.write_owner(owner)
            raise
        catalog.set_cache_owner(str(target))
        catalog.uncache(report.failed)
        moved = Cache(target, cache.lock, cache.quarantine_dir)
        report.switched = True
    shutil.rmtree(old_root, ignore_errors=True)
    return report, moved


def _copy_verified(source: Path, new: Cache, digest: str, size: int) -> str | None:
    """Copy one cached file into the new cache, verified; the problem, or None."""
    try:
        with open(source, "rb") as handle, new.temp() as temp:
            got, count = copy_hashing(handle, temp.file)
            if got != digest or count != size:
                return "its bytes do not match its SHA-256 any more"
            new.place(temp, digest)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


@dataclass
class ExpireReport:
    """What expiring old host copies did."""

    expired: list[tuple[str, str]] = field(default_factory=list)  # (hash, host) deleted
    last_copies: list[tuple[str, str]] = field(default_factory=list)  # kept: the last copy
    #: (hash, host, why) kept: its locator cannot be told to be the file's (see locators.py)
    unverified: list[tuple[str, str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (hash, host, error)
    cannot_delete: list[str] = field(default_factory=list)  # hosts with keep_days that can't delete


def expire(transfers: Transfers, *, force: bool = False, now: float | None = None) -> ExpireReport:
    """Delete host copies older than their host's ``keep_days``, where the host can.

    A copy that is the file's last one is kept and reported, unless ``force``:
    only copies that verify as the file's count (a locator that can only be the
    file's, on a host of this node), whatever else the catalog says, since a
    record from another node may name any object.  A copy whose own locator
    does not verify is never deleted (reported as unverified).
    """
    report = ExpireReport()
    now = time.time() if now is None else now
    for host in transfers.hosts:
        if host.keep_days is None:
            continue
        if not isinstance(host, Deleter):
            report.cannot_delete.append(host.name)
            continue
        cutoff = int(now - host.keep_days * DAY)
        for digest, _locator, _copies in transfers.catalog.copies_older_than(host.name, cutoff):
            record = transfers.catalog.record(digest)
            verified, refused = _held(transfers, record) if record is not None else ({}, {})
            if host.name in refused:
                report.unverified.append((digest, host.name, refused[host.name]))
                continue
            if host.name not in verified:  # forgotten or deleted meanwhile
                continue
            if len(verified) <= 1 and not force:
                report.last_copies.append((digest, host.name))
                continue
            try:
                host.delete(verified[host.name])
            except HostError as exc:
                report.failed.append((digest, host.name, exc.reason))
                continue
            transfers.catalog.drop_upload(digest, host.name)
            report.expired.append((digest, host.name))
    return report


def _held(transfers: Transfers, record: FileRecord) -> tuple[dict[str, str], dict[str, str]]:
    """The record's whole copies on this node's hosts: (host -> locator) of those that
    verify as the file's (a locator that can only be the file's), and (host -> why
    not) of the others."""
    verified: dict[str, str] = {}
    refused: dict[str, str] = {}
    for upload in record.uploads:
        host = transfers.host(upload.host)
        if upload.url is None or host is None:
            continue
        why = locators.not_deletable(host, upload, record.hash, transfers.key)
        if why is None:
            verified[upload.host] = upload.url
        else:
            refused[upload.host] = why
    return verified, refused


def check_hosts(transfers: Transfers) -> dict[str, str | None]:
    """A small round trip to each host (upload, download, compare, delete where it
    can): per host name, None when all went well, else what went wrong."""
    payload = b"cloudmanager host check " + secrets.token_bytes(32)
    results: dict[str, str | None] = {}
    with tempfile.TemporaryDirectory(prefix="cm-check-") as folder:
        probe = Path(folder) / "cloudmanager-check.bin"
        probe.write_bytes(payload)
        digest = hashlib.sha256(payload).hexdigest()
        for host in transfers.hosts:
            results[host.name] = _round_trip(host, probe, digest, payload, Path(folder))
    return results


def _round_trip(host: Host, probe: Path, digest: str, payload: bytes, folder: Path) -> str | None:
    try:
        locator = host.upload(probe, probe.name, digest)
        with open(folder / f"back-{host.name}", "wb") as out:
            writer = HashingWriter(out)
            host.download(locator, writer)
        if writer.hexdigest() != digest:
            return "returned other bytes than were sent"
        if isinstance(host, Deleter):
            host.delete(locator)
    except HostError as exc:
        return exc.reason
    except Exception as exc:  # a host bug is reported like a failure
        return f"{type(exc).__name__}: {exc}"
    finally:
        (folder / f"back-{host.name}").unlink(missing_ok=True)
    return None


@dataclass
class CopiesReport:
    """What asking the hosts about their copies found."""

    checked: int = 0
    lost: list[tuple[str, str, str]] = field(default_factory=list)  # (hash, host, why)
    unreachable: list[tuple[str, str, str]] = field(default_factory=list)  # could not ask
    unchecked: int = 0  # copies on hosts that cannot tell without sending the file, or not here


_GONE = "not there any more"
log = logging.getLogger(__name__)


def check_copies(transfers: Transfers, *, verify_hash: bool = False,
                 remove_bad: bool = False) -> CopiesReport:
    """Ask each host whether it still holds each copy recorded for it (as ``git annex
    fsck --from`` and ``rclone check`` do); record a lost copy as that host's error.

    A copy whose locator cannot be the file's (a record from another node naming
    another object, see locators.py) is not asked about: it is recorded as lost.
    With ``remove_bad``, a damaged copy is deleted where the host can, so that
    sending the file again replaces it (hosts skip an object of the same size),
    but only through a locator that can only be the file's (or the share's).
    """
    report = CopiesReport()
    for record in transfers.catalog.records():
        for copy in _copies(transfers, record):
            if copy.host is None or not (verify_hash or isinstance(copy.host, Checker)):
                report.unchecked += 1
                continue
            if copy.locates is False:
                report.lost.append((record.hash, copy.label, locators.FOREIGN))
                copy.lost(locators.FOREIGN)
                continue
            report.checked += 1
            try:
                problem = _copy_problem(copy.host, copy.locator, copy.size, copy.digest, verify_hash)
            except HostError as exc:
                report.unreachable.append((record.hash, copy.label, exc.reason))
                continue
            if problem is None:
                continue
            report.lost.append((record.hash, copy.label, problem))
            copy.lost(problem)
            if remove_bad and isinstance(copy.host, Deleter) and problem != _GONE and copy.locates:
                try:
                    copy.host.delete(copy.locator)
                except HostError as exc:
                    log.warning("cannot delete the damaged %s of %s: %s", copy.label, record.hash, exc.reason)
    return report


@dataclass
class _Copy:
    """One copy or share to check: who reads it, what it should be, how to record its loss."""

    label: str
    host: Host | None
    locator: str
    size: int
    digest: str
    lost: Callable[[str], object]
    locates: bool | None = None  # whether the locator can be this copy's (see locators.py)


def _copies(transfers: Transfers, record: FileRecord) -> Iterator[_Copy]:
    """The whole copies and the shares the catalog says the hosts hold of ``record``."""
    for upload in record.uploads:
        if upload.url is not None:
            host = transfers.host(upload.host)
            yield _Copy(upload.host, host, upload.url, record.size, record.hash,
                        partial(_lose_copy, transfers.catalog, upload.host, record.hash),
                        host is not None and locators.copy_locates(host, upload, record.hash, transfers.key))
    for share in record.shares:
        if share.url is not None:
            host = transfers.host(share.host)
            reader = underneath(host) if host is not None else None  # shares come sealed
            yield _Copy(f"{share.host} (share {share.index})", reader, share.url, share.size, share.digest,
                        partial(_lose_share, transfers.catalog, record.hash, share.index),
                        host is not None and locators.share_locates(host, share, transfers.catalog.exists))


def _lose_copy(catalog: CatalogBase, host: str, digest: str, problem: str) -> None:
    catalog.record_fetch(host, f"copy lost: {problem}", digest=digest, lost=True)


def _lose_share(catalog: CatalogBase, digest: str, index: int, problem: str) -> None:
    catalog.share_lost(digest, index, f"share lost: {problem}")


def _copy_problem(host: Host, locator: str, size: int, digest: str, verify_hash: bool) -> str | None:
    """What is wrong with one copy (None: it is fine).  HostError: the host did not answer."""
    try:
        if verify_hash:
            writer = HashingWriter(Discard(), limit=size)
            try:
                host.download(locator, writer)
            except TooManyBytes:
                return "more bytes than the file has"
            if writer.size != size or writer.hexdigest() != digest:
                return "other bytes than were stored"
            return None
        assert isinstance(host, Checker)
        found = host.check(locator)
    except ObjectMissing:
        return _GONE
    if found is not None and found != size:
        return f"{found} bytes instead of {size}"
    return None
