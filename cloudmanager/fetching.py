"""Files written outside the cache: a download to a path the user chose.

A file is written under a temporary name beside its destination (so the final
rename stays on one file system), made durable, then renamed over the
destination in one step: the destination is either untouched or the whole,
verified file, never a part of it.  A failed write leaves no temporary file.
This module knows nothing of hosts or the catalog; the manager fills the file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .cache import TempFile, fsync_dir

#: How the temporary file beside a destination ``NAME`` ends: ``.NAME.<random>.cm-partial``.
PARTIAL_SUFFIX = ".cm-partial"


@contextmanager
def partial_beside(destination: Path) -> Iterator[TempFile]:
    """A new temporary file beside ``destination``; removed on exit unless
    :func:`publish` moved it there."""
    path = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    handle = os.fdopen(fd, "w+b", buffering=0)
    temp = TempFile(path, handle)
    try:
        yield temp
    finally:
        handle.close()
        if not temp.placed:
            path.unlink(missing_ok=True)


def publish(temp: TempFile, destination: Path) -> Path:
    """Make ``temp`` durable and rename it to ``destination`` (replacing it, atomically)."""
    temp.file.flush()
    os.fsync(temp.file.fileno())
    os.replace(temp.path, destination)
    temp.placed = True
    fsync_dir(destination.parent)
    return destination
