"""The node's connections: how many it holds, from whom, and how long each may stay silent.

uvicorn closes a connection that idles after an answer (its keep-alive
timeout), but not one that never sends a request, or stops in the middle of a
request's head: 150 such sockets used up a node's file descriptors.  This layer
sits between the event loop and uvicorn's HTTP protocol (uvicorn takes the
protocol class to use, ``uvicorn.Config(http=...)``):

- past ``max_connections`` open connections, or ``max_connections_per_client``
  from one address, a new connection is answered 503 at once and closed, so
  that what the node holds stays bounded whatever clients open;
- a connection has ``header_timeout`` seconds to send a whole request head, from
  when it opened or when its last answer ended; then it is closed.

The app tells this layer when a request's head has arrived (its app was called)
and when its answer ended, through :meth:`Connections.begin` and
:meth:`Connections.end` with the request's ``client`` address, which names one
connection.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

#: The whole answer to a connection past the caps.
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
           b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 46\r\n\r\n"
           b'{"error": "too many connections: try again"}\r\n')

#: A connection's key: the client's address and port (as the ASGI scope's ``client``).
Peer = tuple[str, int]


def peer_of(transport: asyncio.BaseTransport) -> Peer | None:
    """The (address, port) of the far end of ``transport``, as uvicorn puts it in the scope."""
    info = transport.get_extra_info("peername")
    if isinstance(info, (list, tuple)) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return None


class Connections:
    """The open connections of one server, their caps, and their head deadlines."""

    def __init__(self, *, limit: int, per_client: int, header_timeout: float):
        self.limit = limit
        self.per_client = per_client
        self.header_timeout = header_timeout
        self._open: dict[Peer, GuardedProtocol] = {}
        self._from: Counter[str] = Counter()
        #: Connections refused at the caps, and closed for a late request head.
        self.refused = 0
        self.timed_out = 0

    @property
    def count(self) -> int:
        """Connections open now."""
        return len(self._open)

    def admit(self, peer: Peer | None, connection: GuardedProtocol) -> bool:
        """Count a new connection in, or False when it is past a cap."""
        if peer is None:
            return True
        if len(self._open) >= self.limit or self._from[peer[0]] >= self.per_client:
            self.refused += 1
            return False
        self._open[peer] = connection
        self._from[peer[0]] += 1
        return True

    def leave(self, peer: Peer | None) -> None:
        """Count a closed connection out."""
        if peer is not None and self._open.pop(peer, None) is not None:
            self._from[peer[0]] -= 1
            if not self._from[peer[0]]:
                del self._from[peer[0]]

    def begin(self, peer: Peer | None) -> None:
        """A request's head has arrived on the connection of ``peer``."""
        connection = self._open.get(peer) if peer is not None else None
        if connection is not None:
            connection.busy(True)

    def end(self, peer: Peer | None) -> None:
        """The answer to a request on the connection of ``peer`` has ended."""
        connection = self._open.get(peer) if peer is not None else None
        if connection is not None:
            connection.busy(False)

    def close(self, peer: Peer | None) -> None:
        """Close the connection of ``peer`` now (a body that did not keep pace)."""
        connection = self._open.get(peer) if peer is not None else None
        if connection is not None:
            connection.close()

    def protocol(self) -> type[asyncio.Protocol]:
        """The protocol class to give uvicorn (``http=``): its HTTP/1.1 protocol, guarded here."""
        connections = self

        class Guarded(GuardedProtocol):
            def __init__(self, **options: Any):
                super().__init__(connections, **options)

        return Guarded


class GuardedProtocol(asyncio.Protocol):
    """One connection: uvicorn's HTTP/1.1 protocol behind the caps and the head deadline."""

    def __init__(self, connections: Connections, **options: Any):
        self._connections = connections
        self._inner = H11Protocol(**options)
        self._transport: asyncio.Transport | None = None
        self._peer: Peer | None = None
        self._admitted = False
        self._requests = 0
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._peer = peer_of(transport)
        if not self._connections.admit(self._peer, self):
            transport.write(REFUSAL)
            transport.close()
            return
        self._admitted = True
        self._inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            self._inner.data_received(data)

    def eof_received(self) -> None:
        if self._admitted:
            self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._admitted:
            self._admitted = False
            self._connections.leave(self._peer)
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()

    def busy(self, started: bool) -> None:
        """A request began (its head is in) or its answer ended."""
        self._requests += 1 if started else -1
        if self._requests > 0:
            self._disarm()
        else:
            self._requests = 0
            self._arm()

    def close(self) -> None:
        """Close the connection."""
        if self._transport is not None:
            self._transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = asyncio.get_running_loop().call_later(self._connections.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self._requests == 0 and self._transport is not None and not self._transport.is_closing():
            self._connections.timed_out += 1
            self._transport.close()
