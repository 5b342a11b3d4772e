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


def write_all(target: Sink, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of ``data``: an unbuffered file may write only part of
    it (a disk filling up), and the next write then raises the error."""
    view = memoryview(data)
    while view:
        count = target.write(view)
        if not isinstance(count, int):  # a buffered or text-free sink took it all
            return
        if count <= 0:
            raise OSError(5, "write made no progress")
        view = view[count:]


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
            write_all(target, chunk)
        if progress is not None:
            progress(count)
        total += count
    return digest.hexdigest(), total


class TooManyBytes(ValueError):
    """A download brought more bytes than the file it should be has."""


class HashingWriter:
    """A write-only binary file that hashes and counts what passes through it.

    Hosts write a download into it; the manager reads ``hexdigest()`` and
    ``size`` afterwards to verify the bytes before trusting them.  With
    ``limit``, writing past that many bytes raises TooManyBytes (a host that
    floods cannot fill the disk).  An error of the target itself (a full
    disk) is kept in ``target_error`` so the caller does not blame the host.
    """

    def __init__(self, target: Sink, limit: int | None = None):
        self._target = target
        self._digest = hashlib.sha256()
        self._limit = limit
        self.size = 0
        self.overflow = False
        self.target_error: OSError | None = None

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        """Write ``data`` to the target and add it to the hash."""
        count = len(data)
        if self._limit is not None and self.size + count > self._limit:
            self.overflow = True
            raise TooManyBytes(f"more than the {self._limit} bytes expected")
        self._digest.update(data)
        try:
            write_all(self._target, data)
        except OSError as exc:
            self.target_error = exc
            raise
        self.size += count
        return count

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
