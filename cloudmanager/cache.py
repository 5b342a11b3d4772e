"""The on-disk half of the cache: where cached bytes live, and how they get there.

Layout: ``ROOT/ab/cd/<sha256>`` (:mod:`cloudmanager.layout`: two levels of two hex digits, so no directory
holds more than a few hundred entries even with millions of files).  Writes go
to ``ROOT/.tmp-*`` (locked while written), are fsynced and renamed into place
atomically.  ``ROOT/.cloudmanager-owner`` names the catalog and node the folder
belongs to; ``ROOT/.locks/<sha256>`` are the per-file download locks
(:meth:`Cache.fetching`), present only while held.  This module knows nothing
of the catalog: which files *should* be here is the manager's business; this
one only places, removes and lists bytes.

Nothing found in the cache is deleted on suspicion: bytes that are not (or no
longer) a counted cache file may be the only copy of something, so they are
moved to the quarantine folder, which only an explicit purge empties.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .layout import is_shard, placed, shards
from .locking import FileLock

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
#: The marker in the cache root naming the catalog and node the folder belongs to.
OWNER_FILE = ".cloudmanager-owner"
#: The folder of the per-file download locks (skipped by the scan, as temps are).
LOCKS_DIR = ".locks"


@dataclass
class TempFile:
    """A temporary file being written in the cache directory (locked by its writer)."""

    path: Path
    file: BinaryIO
    placed: bool = field(default=False)


@dataclass(frozen=True)
class Owner:
    """Who a cache folder belongs to: a catalog (an SQLite file's absolute path, or a
    server catalog's URL without its secret) and the node's id there."""

    catalog: str
    node: str


@dataclass
class ScanResult:
    """What a scan of the cache directory found."""

    files: dict[str, int] = field(default_factory=dict)  # digest -> size on disk
    removed_temps: list[Path] = field(default_factory=list)  # abandoned (removed when fixing)
    misplaced: list[Path] = field(default_factory=list)  # not cache files (quarantined when fixing)
    foreign: list[Path] = field(default_factory=list)  # left alone, reported


@contextmanager
def new_file(path: Path, mode: int = 0o600, *, locked: bool = False) -> Iterator[TempFile]:
    """A new file at ``path`` (it must not exist), open for writing and locked by its
    writer when ``locked``; removed on exit unless it was placed meanwhile."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    if locked:
        fcntl.flock(fd, fcntl.LOCK_EX)
    handle = os.fdopen(fd, "w+b", buffering=0)
    temp = TempFile(path, handle)
    try:
        yield temp
    finally:
        handle.close()
        if not temp.placed:
            path.unlink(missing_ok=True)


def fsync_dir(path: Path) -> None:
    """Make the entries of the directory ``path`` durable (a rename into it, say)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Cache:
    """The cache directory: a content-addressed store of verified files."""

    def __init__(self, root: Path, lock: FileLock, quarantine: Path | None = None):
        self.root = root
        self.lock = lock
        #: Where bytes that are not a counted cache file are moved, never deleted.
        self.quarantine_dir = quarantine or root.with_name(f"{root.name}.quarantine")
        root.mkdir(parents=True, exist_ok=True)

    # -- who the folder belongs to -----------------------------------------------------

    @staticmethod
    def read_owner(root: Path) -> Owner | None:
        """The owner recorded in the cache folder ``root`` (None: none, or unreadable)."""
        try:
            data = json.loads((root / OWNER_FILE).read_text(encoding="utf-8"))
            return Owner(str(data["catalog"]), str(data["node"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write_owner(self, owner: Owner) -> None:
        """Record ``owner`` in the cache root (atomically)."""
        temp = self.root / f"{TEMP_PREFIX}owner-{secrets.token_hex(4)}"
        try:
            temp.write_text(json.dumps({"catalog": owner.catalog, "node": owner.node}) + "\n",
                            encoding="utf-8")
            os.replace(temp, self.root / OWNER_FILE)
        finally:
            temp.unlink(missing_ok=True)

    def disown(self) -> None:
        """Remove the owner marker (the folder is no longer a node's cache)."""
        (self.root / OWNER_FILE).unlink(missing_ok=True)

    # -- the quarantine ----------------------------------------------------------------

    def quarantine(self, path: Path) -> Path:
        """Move ``path`` (a file or folder inside the cache) to the quarantine folder,
        under its place in the cache; returns where it went.  Atomic on one file
        system; elsewhere copied and synced before the original goes."""
        relative = path.relative_to(self.root)
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        target = self.quarantine_dir / "_".join(relative.parts)
        if target.exists():
            stamp = time.strftime("%Y%m%dT%H%M%S")
            target = target.with_name(f"{target.name}.{stamp}-{secrets.token_hex(2)}")
        try:
            os.rename(path, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            partial = target.with_name(f"{TEMP_PREFIX}{target.name}")
            if path.is_dir():
                shutil.copytree(path, partial, symlinks=True)
            else:
                shutil.copy2(path, partial, follow_symlinks=False)
                with open(partial, "rb") as handle:
                    os.fsync(handle.fileno())
            os.rename(partial, target)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        fsync_dir(self.quarantine_dir)
        log.info("moved to the quarantine: %s -> %s", path, target)
        return target

    def quarantined(self) -> list[tuple[Path, int]]:
        """What the quarantine holds: (path, bytes), by name."""
        if not self.quarantine_dir.is_dir():
            return []
        found = []
        for entry in sorted(self.quarantine_dir.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                size = sum(p.lstat().st_size for p in entry.rglob("*") if p.is_file())
            else:
                size = entry.lstat().st_size
            found.append((entry, size))
        return found

    def purge_quarantine(self) -> int:
        """Delete what the quarantine holds; returns how many entries went."""
        entries = self.quarantined()
        for entry, _ in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)
        return len(entries)

    def path(self, digest: str) -> Path:
        """Where the file with this SHA-256 lives when cached."""
        return self.root.joinpath(*shards(digest))

    def size(self, digest: str) -> int | None:
        """Size of the cached file on disk, or None when it is not there."""
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    @contextmanager
    def temp(self) -> Iterator[TempFile]:
        """A new locked temporary file in the cache; removed on exit unless placed."""
        with ExitStack() as stack:
            with self.lock.shared():  # not created while a scan is removing temps
                temp = stack.enter_context(new_file(self.root / f"{TEMP_PREFIX}{secrets.token_hex(8)}",
                                                    locked=True))
            yield temp

    @contextmanager
    def hold(self, digest: str) -> Iterator[Path]:
        """A private name for a cached file, valid until the block ends.

        A locked hard link in the cache directory: the bytes stay readable under
        it even if the file is evicted meanwhile (by this or another process).
        Raises FileNotFoundError when the file is not in the cache.
        """
        with self.lock.shared():
            link = self.root / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
            os.link(self.path(digest), link)
            fd = os.open(link, os.O_RDONLY | os.O_CLOEXEC)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield link
        finally:
            link.unlink(missing_ok=True)
            os.close(fd)

    @contextmanager
    def fetching(self, digest: str) -> Iterator[None]:
        """Hold the download lock of the file ``digest`` until the block ends.

        One holder at a time, across the threads and the processes that use this
        cache (an ``flock`` on ``ROOT/.locks/<digest>``, released by the kernel if
        the holder dies): the first reader of an uncached file downloads it while
        the others wait here, then find it cached.  The lock file is removed on
        release; a waiter that got the lock of a removed file tries again.
        """
        folder = self.root / LOCKS_DIR
        folder.mkdir(exist_ok=True)
        path = folder / digest
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            if _names(fd, path):
                break
            os.close(fd)  # removed by its last holder while we waited: a fresh one
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # still holding it: no one else holds this file
            os.close(fd)

    def place(self, temp: TempFile, digest: str) -> Path:
        """Make ``temp`` durable and move it to its place for ``digest`` (atomic).

        The caller holds ``self.lock.shared()`` from here until the catalog
        records the file, so that a scan never sees the one without the other.
        """
        temp.file.flush()
        os.fsync(temp.file.fileno())
        target = self.path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp.path, target)
        temp.placed = True
        fsync_dir(target.parent)
        return target

    def remove(self, digest: str) -> None:
        """Remove the cached file for ``digest`` (nothing happens when it is absent)."""
        self.path(digest).unlink(missing_ok=True)

    def scan(self, fix: bool = True) -> ScanResult:
        """List the cached files and find what a finished write never leaves.

        Finds temporary files whose writer is gone (their lock is free: removed
        when ``fix``, they are never a file's only copy) and entries inside the
        shard directories that are not well-named cached files (moved to the
        quarantine when ``fix``).  Anything else at the top level is not ours:
        it is left alone and reported, but for the owner marker and the download
        locks: those left by dead holders are removed when ``fix``, held ones are
        left alone, and neither is reported (they hold no bytes).  Call with
        ``self.lock.exclusive()`` held.
        """
        result = ScanResult()
        for top in os.scandir(self.root):
            path = Path(top.path)
            if top.name == OWNER_FILE:
                continue
            if top.name.startswith(TEMP_PREFIX) and top.is_file(follow_symlinks=False):
                if self._abandoned(path, remove=fix):
                    result.removed_temps.append(path)
            elif is_shard(top.name) and top.is_dir(follow_symlinks=False):
                self._scan_shard(path, result, fix)
            elif top.name == LOCKS_DIR and top.is_dir(follow_symlinks=False):
                if fix:
                    self._remove_free_locks(path)
            else:
                result.foreign.append(path)
        for path in result.foreign:
            log.warning("not a cache file, left alone: %s", path)
        return result

    def _scan_shard(self, shard: Path, result: ScanResult, fix: bool) -> None:
        for sub in os.scandir(shard):
            sub_path = Path(sub.path)
            if not (is_shard(sub.name) and sub.is_dir(follow_symlinks=False)):
                self._stray(sub_path, result, fix)
                continue
            for entry in os.scandir(sub_path):
                name = entry.name
                well_placed = placed(shard.name, sub.name, name) and entry.is_file(follow_symlinks=False)
                if well_placed:
                    try:
                        result.files[name] = entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:  # evicted since it was listed
                        continue
                else:
                    self._stray(Path(entry.path), result, fix)

    def _stray(self, path: Path, result: ScanResult, fix: bool) -> None:
        if fix:
            try:
                self.quarantine(path)
            except OSError as exc:  # pragma: no cover - e.g. a read-only mount
                log.warning("could not move %s to the quarantine: %s", path, exc)
                return
        result.misplaced.append(path)

    @staticmethod
    def _remove_free_locks(folder: Path) -> None:
        """Remove the download locks nobody holds (left by a holder that died)."""
        for entry in os.scandir(folder):
            if not entry.is_file(follow_symlinks=False):
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _names(fd, Path(entry.path)):
                    os.unlink(entry.path)  # while held: a waiter on it will see it gone
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.ENOENT):
                    raise
            finally:
                os.close(fd)

    @staticmethod
    def _abandoned(path: Path, remove: bool) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False  # its writer is alive
            raise
        finally:
            os.close(fd)
        if remove:
            path.unlink(missing_ok=True)
        return True


def _names(fd: int, path: Path) -> bool:
    """True when ``path`` still names the file open as ``fd`` (not removed or replaced)."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
