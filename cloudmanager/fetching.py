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
from contextlib import AbstractContextManager
from pathlib import Path

from .cache import TempFile, fsync_dir, new_file

#: How the temporary file beside a destination ``NAME`` ends: ``.NAME.<random>.cm-partial``.
PARTIAL_SUFFIX = ".cm-partial"


def partial_beside(destination: Path) -> AbstractContextManager[TempFile]:
    """A new temporary file beside ``destination``; removed on exit unless
    :func:`publish` moved it there."""
    return new_file(destination.with_name(f".{destination.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}"),
                    0o644)


def publish(temp: TempFile, destination: Path) -> Path:
    """Make ``temp`` durable and rename it to ``destination`` (replacing it, atomically)."""
    temp.file.flush()
    os.fsync(temp.file.fileno())
    os.replace(temp.path, destination)
    temp.placed = True
    fsync_dir(destination.parent)
    return destination
