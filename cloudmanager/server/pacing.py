"""Requests keep pace: each one tells the connection layer it began and ended, and its
body must arrive in time.

A body whose next bytes take longer than ``body_timeout`` to come, or that
arrives slower than ``body_min_rate`` bytes a second on average once its first
``body_timeout`` seconds are over, is cut off: 408 when no answer has started,
then the connection is closed, and the app reads the end of the request
(``http.disconnect``), so an upload stalled on purpose holds nothing for long.
Only the body is timed: once it has arrived, what the app waits for (a client
that goes away during a download) is not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import ServeLimits
from .connections import Connections, Peer

_LATE = json.dumps({"error": "the request's body came too slowly"}).encode()


class Pacing:
    """ASGI middleware: begin/end of each request for the connection layer, and a body's pace."""

    def __init__(self, app: ASGIApp, connections: Connections, limits: ServeLimits,
                 on_late: Callable[[], object] = lambda: None):
        self.app = app
        self.connections = connections
        self.limits = limits
        self.on_late = on_late  # called for each request cut off

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        peer: Peer | None = (str(client[0]), int(client[1])) if client else None
        self.connections.begin(peer)
        try:
            await _Request(self, peer, receive, send).run(scope)
        finally:
            self.connections.end(peer)


class _Request:
    """One request's body clock and answer state."""

    def __init__(self, pacing: Pacing, peer: Peer | None, receive: Receive, send: Send):
        self.pacing = pacing
        self.peer = peer
        self._receive = receive
        self._send = send
        self.started = time.monotonic()
        self.received = 0
        self.body_done = False
        self.answered = False
        self.cut = False

    async def run(self, scope: Scope) -> None:
        await self.pacing.app(scope, self.receive, self.send)

    def _wait(self) -> float:
        """How long the next piece of the body may take to come, at most."""
        limits = self.pacing.limits
        now = time.monotonic()
        by_rate = self.started + limits.body_timeout + self.received / limits.body_min_rate
        return max(0.0, min(now + limits.body_timeout, by_rate) - now)

    async def receive(self) -> Message:
        if self.cut:
            return {"type": "http.disconnect"}
        if self.body_done:
            return await self._receive()
        with anyio.move_on_after(self._wait()):
            message = await self._receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                self.body_done = not message.get("more_body", False)
            return message
        await self._cut_off()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.cut:
            return
        if message["type"] == "http.response.start":
            self.answered = True
        await self._send(message)

    async def _cut_off(self) -> None:
        self.cut = True
        self.pacing.on_late()
        if not self.answered:
            self.answered = True
            await self._send({"type": "http.response.start", "status": 408,
                              "headers": [(b"content-type", b"application/json"),
                                          (b"content-length", str(len(_LATE)).encode()),
                                          (b"connection", b"close")]})
            await self._send({"type": "http.response.body", "body": _LATE})
        self.pacing.connections.close(self.peer)
