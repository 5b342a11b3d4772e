"""``file:///dir``: a folder (a second disk, a NAS mount) as a host.

Objects are stored by content as ``DIR/ab/cd/<sha256>``, written to a temporary
file in DIR, fsynced and renamed, so a reader never sees half a file and an
upload of content already there costs nothing.  The locator is the object's
``file://`` URL; only its last three parts are used when fetching, so the same
folder mounted at another path on another node still works, and a locator that
points elsewhere is refused.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from pathlib import Path

from ..errors import HostError, ObjectMissing
from ..layout import shards
from ..streams import Sink, copy_stream
from .base import Adopter, Checker, Deleter, Host
from .kit import Sharded
from .registry import HostSpec


class FolderHost(Sharded, Adopter, Deleter, Checker):
    """A local or mounted folder."""

    scheme = "file"
    kind = "folder"
    locator_schemes = frozenset({"file"})
    locator_query = True

    def __init__(self, root: str | Path, name: str | None = None):
        root = Path(root)
        if not root.is_absolute():
            raise ValueError(f"a folder host needs an absolute path, not {str(root)!r}")
        super().__init__(name or root.name or "root")
        self.root = root

    def url(self) -> str:
        """The folder as a ``file://`` URL."""
        return self.root.as_uri()

    def _object(self, digest: str) -> Path:
        return self.root.joinpath(*shards(digest))

    def _path(self, locator: str) -> Path:
        digest = self._digest_of(locator)
        if not self.root.is_dir():  # unmounted or stopped: it cannot say what it holds
            raise HostError(self.name, f"{self.root} is not there (not mounted?)")
        return self._object(digest)

    def upload(self, source: Path, name: str, digest: str) -> str:
        """Copy ``source`` into the folder (atomic; skipped when already there)."""
        target = self._object(digest)
        try:
            size = source.stat().st_size
            if target.is_file() and target.stat().st_size == size:
                return target.as_uri()
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = self.root / f".tmp-{secrets.token_hex(8)}"
            try:
                shutil.copyfile(source, temp)
                fd = os.open(temp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(temp, target)
            finally:
                temp.unlink(missing_ok=True)
        except OSError as exc:
            raise HostError(self.name, f"cannot store in {self.root}: {exc.strerror or exc}") from exc
        return target.as_uri()

    def adopt(self, source: Path, name: str, digest: str) -> str:
        """Move ``source`` into the folder when it is on the same file system (after
        flushing it to the disk); copy it otherwise."""
        target = self._object(digest)
        try:
            fd = os.open(source, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise HostError(self.name, f"cannot store in {self.root}: {exc.strerror or exc}") from exc
            return self.upload(source, name, digest)
        return target.as_uri()

    def download(self, locator: str, out: Sink) -> None:
        """Stream the object to ``out``."""
        path = self._path(locator)
        try:
            with open(path, "rb") as handle:
                copy_stream(handle, out)
        except FileNotFoundError:
            raise ObjectMissing(self.name, f"no such object: {path.name}") from None
        except OSError as exc:
            raise HostError(self.name, f"cannot read {path}: {exc.strerror or exc}") from exc

    def delete(self, locator: str) -> None:
        """Remove the object (nothing happens when it is gone already)."""
        try:
            self._path(locator).unlink(missing_ok=True)
        except OSError as exc:
            raise HostError(self.name, f"cannot delete: {exc.strerror or exc}") from exc

    def check(self, locator: str) -> int | None:
        """The object's size."""
        try:
            return self._path(locator).stat().st_size
        except FileNotFoundError:
            raise ObjectMissing(self.name, "no such object") from None
        except OSError as exc:
            raise HostError(self.name, f"cannot check: {exc.strerror or exc}") from exc


def from_spec(spec: HostSpec) -> Host:
    """``file:///abs/dir``: a folder host."""
    if spec.netloc not in ("", "localhost"):
        raise ValueError(f"a folder host needs an absolute path: file:///abs/dir (got host {spec.netloc!r})")
    return FolderHost(spec.path, spec.name)
