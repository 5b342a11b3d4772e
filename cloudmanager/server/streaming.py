"""A request body, arriving chunk by chunk on the event loop, read by blocking code in a thread.

The manager's ``accept`` is blocking and reads a file-like object; a request
body is an async iterator.  :func:`feed` runs the blocking consumer in a worker
thread and hands it the chunks through a small bounded buffer, so a large body
never sits in memory: while the consumer is behind, the body is not read on,
and the server stops reading from the socket.  When the client goes away, the
consumer's next read raises :class:`ClientGone` (an OSError), so whatever it
was writing is abandoned.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO, TypeVar, cast

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from starlette.requests import ClientDisconnect

T = TypeVar("T")

#: Chunks waiting for the consumer, at most (each is what the server read at once).
DEPTH = 8


class ClientGone(OSError):
    """The body ended before its end: the client went away."""


class BodyTooLarge(OSError):
    """The body is longer than the limit it was given."""


class _Pipe(io.RawIOBase):
    """The reading end, in the worker thread: a binary file over the chunks."""

    def __init__(self, chunks: ObjectReceiveStream[bytes], limit: int | None):
        self._chunks = chunks
        self._limit = limit
        self._pending = memoryview(b"")
        self._ended = False
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if not self._pending:
            if self._ended:
                return 0
            try:
                chunk = anyio.from_thread.run(self._chunks.receive)
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                raise ClientGone("the client went away before the end of the body") from None
            if not chunk:  # the end marker
                self._ended = True
                return 0
            self.size += len(chunk)
            if self._limit is not None and self.size > self._limit:
                raise BodyTooLarge(f"the body is longer than {self._limit} bytes")
            self._pending = memoryview(chunk)
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


async def _pump(body: AsyncIterator[bytes], chunks: ObjectSendStream[bytes]) -> None:
    """Pass the body's chunks on, then the end marker (b""); on a disconnect, close
    without it.  Stops quietly when the consumer stopped reading."""
    async with chunks:
        try:
            async for chunk in body:
                if chunk:
                    await chunks.send(chunk)
            await chunks.send(b"")
        except (ClientDisconnect, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return


async def feed(body: AsyncIterator[bytes], consume: Callable[[BinaryIO], T], *,
               limit: int | None = None, threads: anyio.CapacityLimiter | None = None) -> T:
    """Run ``consume(source)`` in a worker thread, ``source`` reading ``body`` to its end.

    Returns what ``consume`` returns and raises what it raises; its reads raise
    ClientGone when the client went away, BodyTooLarge past ``limit`` bytes.
    ``threads`` bounds the worker threads of such calls (default: anyio's, shared
    with every other call).
    """
    sender, receiver = anyio.create_memory_object_stream[bytes](DEPTH)
    pipe = _Pipe(receiver, limit)
    outcome: list[T] = []
    failure: list[BaseException] = []
    async with anyio.create_task_group() as group:
        group.start_soon(_pump, body, sender)
        try:
            outcome.append(await anyio.to_thread.run_sync(consume, cast(BinaryIO, pipe), limiter=threads))
        except Exception as exc:  # raised again below, outside the task group
            failure.append(exc)
        finally:
            receiver.close()
            group.cancel_scope.cancel()  # the rest of the body is not wanted
    if failure:
        raise failure[0]
    return outcome[0]
