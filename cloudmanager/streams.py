"""Streaming helpers: copy bytes while hashing them, in one pass, with a reused buffer."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import BinaryIO, Protocol

#: Size of the reused read buffer: large enough for full disk speed, small
#: enough that memory stays flat whatever the file size.
BUFFER_SIZE = 4 * 1024 * 1024


class Sink(Protocol):
    """Where a host writes a download: anything with a binary ``write``."""

    def write(self, data: bytes | bytearray | memoryview, /) -> object:
        """Write ``data``."""


def copy_hashing(source: BinaryIO, target: BinaryIO | None = None,
                 progress: Callable[[int], object] | None = None) -> tuple[str, int]:
    """Read ``source`` to its end, writing to ``target`` (if any) and hashing.

    Returns the SHA-256 hex digest and the number of bytes read; ``progress``
    is called with the count of each chunk read.  One buffer of BUFFER_SIZE
    bytes is reused, so memory does not grow with the file.
    """
    digest = hashlib.sha256()
    buffer = bytearray(BUFFER_SIZE)
    view = memoryview(buffer)
    total = 0
    while True:
        count = source.readinto(view)  # type: ignore[attr-defined]
        if not count:
            break
        chunk = view[:count]
        digest.update(chunk)
        if target is not None:
            target.write(chunk)
        if progress is not None:
            progress(count)
        total += count
    return digest.hexdigest(), total


class HashingWriter:
    """A write-only binary file that hashes and counts what passes through it.

    Hosts write a download into it; the manager reads ``hexdigest()`` and
    ``size`` afterwards to verify the bytes before trusting them.
    """

    def __init__(self, target: Sink):
        self._target = target
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        """Write ``data`` to the target and add it to the hash."""
        self._digest.update(data)
        self._target.write(data)
        self.size += len(data)
        return len(data)

    def hexdigest(self) -> str:
        """The SHA-256 of everything written so far."""
        return self._digest.hexdigest()


def copy_stream(source: BinaryIO, target: Sink) -> int:
    """Copy ``source`` to its end into ``target`` with one reused buffer; returns the bytes."""
    buffer = bytearray(BUFFER_SIZE)
    view = memoryview(buffer)
    total = 0
    while count := source.readinto(view):  # type: ignore[attr-defined]
        target.write(view[:count])
        total += count
    return total
