"""A small WebDAV server on 127.0.0.1 that misbehaves on purpose, for fault-injection tests.

``misbehaving(mode)`` (a fixture) starts a :class:`MisbehavingServer`: an
in-memory store that speaks enough WebDAV for ``webdav://`` hosts (PROPFIND
207/404, MKCOL 201/405, PUT, GET with ``Range: bytes=N-``, DELETE), one thread
per connection, HTTP/1.1 keep-alive.  Its ``mode`` can be changed at any time
and applies to the next request, on new and kept-alive connections alike:

``ok``
    A correct server.
``hang``
    Reads the request and never answers (until the server stops).
``half``
    GET: announces the full Content-Length, sends half the body and closes the
    connection.  PUT: reads half the body and closes without answering.
``liar``
    GET: answers 200 with other bytes of the right length.  Everything else
    (PUT included: it keeps the real bytes) behaves.
``slow``
    Every answer, status line and headers included, is dribbled one byte per
    ``drip`` seconds (0.5 by default): a client whose timeouts only bound each
    read never sees one expire.
``flood``
    GET: sends the object and then endless bytes (no Content-Length, until the
    client hangs up, ``flood_limit`` bytes have gone, or the server stops).

Everything is bounded: a hanging or dribbling answer ends when the server
stops (at the fixture's teardown, which closes every connection and joins
every thread), and a flood at ``flood_limit`` bytes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import pytest

LOOPBACK = "127.0.0.1"
MODES = ("ok", "hang", "half", "liar", "slow", "flood")
#: The longest a hanging answer waits for the server to stop, whatever happens.
HANG_AT_MOST_S = 120.0
#: How many bytes a flood sends at most by default (far more than any test object).
FLOOD_LIMIT = 200 * 1024 * 1024
_BLOCK = 64 * 1024
_REASONS = {200: "OK", 201: "Created", 204: "No Content", 206: "Partial Content", 207: "Multi-Status",
            404: "Not Found", 405: "Method Not Allowed", 416: "Range Not Satisfiable"}


class MisbehavingServer:
    """An in-memory WebDAV server whose ``mode`` says how it misbehaves (see the module)."""

    def __init__(self, mode: str = "ok", *, drip: float = 0.5, flood_limit: int = FLOOD_LIMIT):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")
        self.mode = mode
        self.drip = drip
        self.flood_limit = flood_limit
        #: Stored objects by path, and the collections made.
        self.objects: dict[str, bytes] = {}
        self.collections: set[str] = set()
        #: (method, path, mode) of every request read, in order.
        self.seen: list[tuple[str, str, str]] = []
        #: Bytes of flood (past the object's own) pushed into the connection before the client
        #: hung up: what it read, plus what the socket buffers held.
        self.flood_sent = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._server = _Server((LOOPBACK, 0), _Handler)
        self._server.owner = self
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name=f"misbehaving-{self.port}", daemon=True)
        self._thread.start()

    def url(self, path: str = "/store", **options: object) -> str:
        """``webdav://127.0.0.1:PORT/path?options`` for a host on this server."""
        query = f"?{urlencode(options)}" if options else ""
        return f"webdav://{LOOPBACK}:{self.port}{path}{query}"

    def requests(self, method: str, mode: str | None = None) -> list[str]:
        """The paths of the requests of ``method`` received (in ``mode``, if given)."""
        with self._lock:
            return [p for m, p, md in self.seen if m == method and (mode is None or md == mode)]

    def close(self) -> None:
        """Stop: end every hanging or dribbling answer, close every connection, join the threads."""
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections, threads = list(self._connections), list(self._threads)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in [*threads, self._thread]:
            thread.join(10)

    # -- used by the handler --------------------------------------------------------------

    def _note(self, method: str, path: str, mode: str) -> None:
        with self._lock:
            self.seen.append((method, path, mode))

    def _opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)
            self._threads.append(threading.current_thread())

    def _closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: MisbehavingServer


def _multistatus(path: str, size: int | None) -> bytes:
    prop = ("<d:resourcetype><d:collection/></d:resourcetype>" if size is None
            else f"<d:getcontentlength>{size}</d:getcontentlength><d:resourcetype/>")
    return ('<?xml version="1.0" encoding="utf-8"?><d:multistatus xmlns:d="DAV:"><d:response>'
            f"<d:href>{path}</d:href><d:propstat><d:prop>{prop}</d:prop>"
            "<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>").encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._opened(self.request)

    def finish(self) -> None:
        self.server.owner._closed(self.request)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read ``MisbehavingServer.seen``."""

    # -- reading ------------------------------------------------------------------------------

    def _body(self, keep: float = 1.0) -> bytes | None:
        """The request body (only its first ``keep`` part is read); None if the client broke off."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                line = self.rfile.readline()
                if not line:
                    return None
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        wanted = int(length * keep)
        data = self.rfile.read(wanted) if wanted else b""
        return data if len(data) == wanted else None

    # -- writing ------------------------------------------------------------------------------

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Whatever')}"]
        lines += [f"{key}: {value}" for key, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, data: bytes, mode: str) -> bool:
        """Send ``data`` (dribbled in ``slow`` mode); False when the client hung up or we stop."""
        owner = self.server.owner
        try:
            if mode != "slow":
                self.wfile.write(data)
                return True
            for index in range(len(data)):
                if owner.stopping.wait(owner.drip):
                    return False
                self.wfile.write(data[index:index + 1])
        except OSError:
            return False
        return True

    def _hang_up(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.request.shutdown(socket.SHUT_RDWR)

    # -- the one entry point ---------------------------------------------------------------

    def _handle(self) -> None:
        owner = self.server.owner
        mode = owner.mode
        path = unquote(urlsplit(self.path).path)
        owner._note(self.command, path, mode)
        if mode == "hang":
            owner.stopping.wait(HANG_AT_MOST_S)
            self._hang_up()
            return
        body = self._body(0.5 if mode == "half" and self.command == "PUT" else 1.0)
        if body is None or (mode == "half" and self.command == "PUT"):
            self._hang_up()  # half the body read: close without a word
            return
        status, headers, content = self._answer(path, body)
        if self.command == "GET" and status == 200 and mode in ("half", "liar", "flood"):
            getattr(self, f"_get_{mode}")(headers, content)
            return
        if self.command == "HEAD":
            content = b""
        if not self._send(self._head(status, headers) + content, mode):
            self._hang_up()

    do_GET = do_HEAD = do_PUT = do_DELETE = do_PROPFIND = do_MKCOL = _handle

    def _answer(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """What a correct server answers: (status, headers, body)."""
        owner = self.server.owner
        content = b""
        headers: dict[str, str] = {}
        with owner._lock:
            stored = owner.objects.get(path)
            folder = path.rstrip("/")
            if self.command == "PROPFIND":
                if stored is not None:
                    status, content = 207, _multistatus(path, len(stored))
                elif folder in owner.collections:
                    status, content = 207, _multistatus(path, None)
                else:
                    status = 404
            elif self.command == "MKCOL":
                status = 405 if folder in owner.collections else 201
                owner.collections.add(folder)
            elif self.command == "PUT":
                status = 204 if stored is not None else 201
                owner.objects[path] = body
            elif self.command == "DELETE":
                status = 204 if owner.objects.pop(path, None) is not None else 404
            elif stored is None:  # GET, HEAD
                status = 404
            else:
                status, content = 200, stored
                wanted = self.headers.get("Range", "")
                if wanted.startswith("bytes=") and wanted.endswith("-"):
                    start = int(wanted[6:-1])
                    if start >= len(stored):
                        status, content = 416, b""
                    else:
                        headers["Content-Range"] = f"bytes {start}-{len(stored) - 1}/{len(stored)}"
                        status, content = 206, stored[start:]
        if status == 207:
            headers["Content-Type"] = 'application/xml; charset="utf-8"'
        elif status in (200, 206):
            headers["Content-Type"] = "application/octet-stream"
        headers["Content-Length"] = str(len(content))
        return status, headers, content

    # -- the misbehaving GETs ------------------------------------------------------------------

    def _get_half(self, headers: dict[str, str], content: bytes) -> None:
        self._send(self._head(200, headers) + content[: len(content) // 2], "half")
        self._hang_up()

    def _get_liar(self, headers: dict[str, str], content: bytes) -> None:
        other = bytes(byte ^ 0x5A for byte in content)  # the right length, other bytes
        if not self._send(self._head(200, headers) + other, "liar"):
            self._hang_up()

    def _get_flood(self, headers: dict[str, str], content: bytes) -> None:
        owner = self.server.owner
        del headers["Content-Length"]  # the body ends when the connection does
        headers["Connection"] = "close"
        self.close_connection = True
        if not self._send(self._head(200, headers) + content, "flood"):
            return
        block = (content or b"\0") * (_BLOCK // max(1, len(content)) + 1)
        block = block[:_BLOCK]
        sent = 0
        while sent < owner.flood_limit and not owner.stopping.is_set():
            try:
                self.wfile.write(block)
            except OSError:
                break  # the client hung up
            sent += len(block)
            with owner._lock:
                owner.flood_sent += len(block)
        self._hang_up()


@pytest.fixture
def misbehaving() -> Iterator[Callable[..., MisbehavingServer]]:
    """Make misbehaving WebDAV servers: ``misbehaving(mode, drip=0.5, flood_limit=...)``;
    all are stopped (connections closed, threads joined) after the test."""
    made: list[MisbehavingServer] = []

    def make(mode: str = "ok", **kwargs: Any) -> MisbehavingServer:
        made.append(MisbehavingServer(mode, **kwargs))
        return made[-1]

    yield make
    for server in made:
        server.close()
