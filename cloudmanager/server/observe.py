"""Watching each request: its access line and its figures, measured once.

ASGI middleware around the whole app: it notes the status of the answer, the
bytes of the request's and the answer's bodies and the time taken, then writes
the access line (logs.py) and counts the request in the metrics (metrics.py)
under its route's template (``/objects/{digest}``, never the path itself, so
that the figures stay few whatever clients ask for).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import logs
from .metrics import Metrics

#: The methods counted by name (any other is ``other``: a client cannot make new figures).
METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"})


class Observe:
    """ASGI middleware: the access line and the request figures of every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute]):
        self.app = app
        self.metrics = metrics
        self.routes = [route for route in routes if isinstance(route, Route)]

    def route_of(self, scope: Scope) -> str:
        """The template of the route ``scope`` asks for, or ``other``."""
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return route.path
        return "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, received, sent = 0, 0, 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            seconds = time.perf_counter() - started
            route, method = self.route_of(scope), str(scope["method"])
            metrics = self.metrics
            metrics.requests.labels(route, method if method in METHODS else "other",
                                    str(status) if status else "none").inc()
            metrics.duration.labels(route).observe(seconds)
            metrics.received.inc(received)
            metrics.sent.inc(sent)
            client = scope.get("client")
            logs.access(str(client[0]) if client else "-", method, str(scope["path"]), status, sent, seconds)
