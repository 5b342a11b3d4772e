"""Streaming helpers: copy bytes while hashing them, in one pass, with a reused buffer."""

from __future__ import annotations

import errno
import hashlib
import queue
import threading
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
    ``size`` afterwards to verify the bytes before trusting them (``hashing``
    False: it only counts, for bytes verified some other way).  With
    ``limit``, writing past that many bytes raises TooManyBytes (a host that
    floods cannot fill the disk).  An error of the target itself (a full
    disk) is kept in ``target_error`` so the caller does not blame the host.
    """

    def __init__(self, target: Sink, limit: int | None = None, *, hashing: bool = True):
        self._target = target
        self._digest = hashlib.sha256() if hashing else None
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
        if self._digest is not None:
            self._digest.update(data)
        try:
            write_all(self._target, data)
        except OSError as exc:
            self.target_error = exc
            raise
        self.size += count
        return count

    def hexdigest(self) -> str:
        """The SHA-256 of everything written so far (ValueError when not hashing)."""
        if self._digest is None:
            raise ValueError("this writer does not hash")
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


class Pipe:
    """Bytes handed from one thread (``write``, then ``close``) to another (``read``),
    through a bounded queue: memory stays at ``depth`` chunks whatever the size.

    The writer's ``close(error)`` makes the reader's next read raise ``error``
    (an OSError, or anything given); the reader's ``abandon()`` makes the
    writer's next write raise OSError, so neither side waits for the other
    forever.
    """

    _END = object()

    def __init__(self, depth: int = 4):
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._pending = memoryview(b"")
        self._ended = False
        self._abandoned = threading.Event()

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        """Hand ``data`` to the reader (waits while the queue is full)."""
        chunk = bytes(data)
        while not self._abandoned.is_set():
            try:
                self._queue.put(chunk, timeout=0.05)
                return len(chunk)
            except queue.Full:
                continue
        raise OSError(errno.EPIPE, "the reader gave up")

    def close(self, error: BaseException | None = None) -> None:
        """The end of the bytes (or the writer's failure, raised to the reader)."""
        item = self._END if error is None else error
        while not self._abandoned.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    @property
    def abandoned(self) -> bool:
        """True once the reader gave up."""
        return self._abandoned.is_set()

    def abandon(self) -> None:
        """The reader stops: the writer's next write fails, queued bytes are dropped."""
        self._abandoned.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (fewer only at the end); raises the writer's error."""
        parts: list[bytes] = []
        wanted = size if size >= 0 else 1 << 62
        while wanted > 0:
            if not self._pending:
                if self._ended:
                    break
                item = self._queue.get()
                if item is self._END:
                    self._ended = True
                    break
                if isinstance(item, BaseException):
                    self._ended = True
                    raise item
                assert isinstance(item, bytes)
                self._pending = memoryview(item)
            piece = self._pending[:wanted]
            parts.append(bytes(piece))
            self._pending = self._pending[len(piece):]
            wanted -= len(piece)
        return b"".join(parts)


class Handoff:
    """A sink that hands what it is given to a worker thread, which writes it to
    ``target``: the caller's next step (decoding the next segment) overlaps with
    the target's work (hashing, decrypting, writing to disk).

    ``close()`` waits until everything is written and raises the target's error,
    if it had one; a write after such an error raises it at once.
    """

    BATCH = 1 << 20  # small writes are gathered up to this...
    ALONE = 128 << 10  # ...while a write of this much goes on its own

    def __init__(self, target: Sink, depth: int = 4):
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._batch = bytearray()
        self._target = target
        self._error: BaseException | None = None
        self._worker = threading.Thread(target=self._drain, name="cloudmanager-handoff", daemon=True)
        self._worker.start()

    def _drain(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    write_all(self._target, chunk)
                except BaseException as exc:  # raised to the caller on its next call
                    self._error = exc

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        """Queue ``data`` for the target (small writes are gathered into batches of
        BATCH bytes; waits while the queue is full)."""
        if self._error is not None:
            raise self._error
        if not self._batch and len(data) >= self.ALONE:  # big enough alone: no gathering
            self._queue.put(data if isinstance(data, bytes) else bytes(data))
            return len(data)
        self._batch += data
        if len(self._batch) >= self.BATCH:
            self._queue.put(bytes(self._batch))
            self._batch.clear()
        return len(data)

    def close(self) -> None:
        """Wait for the target to take everything; raise its error if it had one."""
        if self._worker.is_alive():
            if self._batch and self._error is None:
                self._queue.put(bytes(self._batch))
                self._batch.clear()
            self._queue.put(None)
            self._worker.join()
        if self._error is not None:
            raise self._error


class Discard:
    """A sink that keeps nothing (bytes that only pass through a hash)."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        """Drop ``data``."""
        return len(data)


class Tee:
    """A sink that writes everything to two sinks, in order."""

    def __init__(self, first: Sink, second: Sink):
        self._first = first
        self._second = second

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        """Write ``data`` to both."""
        write_all(self._first, data)
        write_all(self._second, data)
        return len(data)
