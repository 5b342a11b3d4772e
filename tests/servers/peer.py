"""A node on 127.0.0.1 whose ``GET /catalog`` answers whatever a test says, for catalog sync.

``lying_peer`` (a fixture) starts a :class:`LyingPeer`; set its ``answer`` to a
function of ``(since, limit)`` returning the page's JSON object (a correct
node answers ``{"version", "records", "cursor", "more"}``), or the body itself:
``bytes`` (sent with its Content-Length) or an iterator of ``bytes`` (sent
chunked, as long as it goes on and the client reads: a page that never ends).
Everything is bounded: after ``MAX_PAGES`` pages it answers 410 Gone, so a client
that would ask forever stops with an error instead of hanging the suite.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

LOOPBACK = "127.0.0.1"
#: Pages answered before the peer refuses to go on (far more than any test asks for).
MAX_PAGES = 50
Answer = Callable[[int, int], object]


class LyingPeer:
    """An HTTP server answering ``GET /catalog?since=N&limit=M`` with ``answer(N, M)``."""

    def __init__(self) -> None:
        self.answer: Answer = lambda since, limit: {"version": "0.2", "records": [], "cursor": since,
                                                     "more": False}
        #: Headers added to every answer.
        self.headers: dict[str, str] = {}
        #: The ``since`` of every page asked for, in order.
        self.asked: list[int] = []
        self._lock = threading.Lock()
        self._server = _Server((LOOPBACK, 0), _Handler)
        self._server.owner = self
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name=f"lying-peer-{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """``cm://127.0.0.1:PORT``."""
        return f"cm://{LOOPBACK}:{self.port}"

    def page(self, since: int, limit: int) -> tuple[int, object]:
        """The status and JSON answer to a page request (410 past MAX_PAGES)."""
        with self._lock:
            self.asked.append(since)
            if len(self.asked) > MAX_PAGES:
                return 410, {"error": f"more than {MAX_PAGES} pages asked for: the client loops"}
        return 200, self.answer(since, limit)

    def close(self) -> None:
        """Stop serving and join the server's thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: LyingPeer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read ``LyingPeer.asked``."""

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if parts.path != "/catalog":
            self._send(404, {"error": "no such page"})
            return
        try:
            since, limit = int(query["since"][0]), int(query["limit"][0])
        except (KeyError, ValueError):
            self._send(400, {"error": "GET /catalog?since=N&limit=M"})
            return
        self._send(*self.server.owner.page(since, limit))

    def _send(self, status: int, answer: object) -> None:
        if isinstance(answer, Iterator):
            self._send_chunked(status, answer)
            return
        body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        self.send_response(status)
        self._headers()
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:  # the client stopped reading (a page it refused)
            self.close_connection = True

    def _headers(self) -> None:
        self.send_header("Content-Type", "application/json")
        for name, value in self.server.owner.headers.items():
            self.send_header(name, value)

    def _send_chunked(self, status: int, chunks: Iterable[bytes]) -> None:
        """The body in chunks, until they end or the client stops reading."""
        self.send_response(status)
        self._headers()
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in chunks:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away: what a never-ending page waits for
            self.close_connection = True


@pytest.fixture
def lying_peer() -> Iterator[LyingPeer]:
    """A catalog peer that answers what the test sets as its ``answer``."""
    peer = LyingPeer()
    try:
        yield peer
    finally:
        peer.close()
