"""Advisory file locks (``flock``) shared by the processes that use one cache.

Placing a file into the cache holds the lock shared; the consistency check that
removes stray files holds it exclusive, so it never sees a placement half-done.
A lock held by a killed process is released by the kernel.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path


class FileLock:
    """A reader/writer lock on one lock file; each use opens its own descriptor,
    so threads of one process exclude each other as processes do."""

    def __init__(self, path: Path):
        self.path = path

    @contextmanager
    def _held(self, mode: int) -> Iterator[None]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def shared(self) -> AbstractContextManager[None]:
        """Hold the lock shared (many holders at once)."""
        return self._held(fcntl.LOCK_SH)

    def exclusive(self) -> AbstractContextManager[None]:
        """Hold the lock alone."""
        return self._held(fcntl.LOCK_EX)
