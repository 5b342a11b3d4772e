"""WsgiDAV on 127.0.0.1 for the WebDAV tests; a port where nothing listens; an HTTP relay
that fails on purpose (in front of WsgiDAV or moto) to test retries.

``running_webdav(root)`` starts the server outside pytest too (the benchmarks use
it); the ``webdav_server`` fixture is that server for the tests' session."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cheroot import wsgi
from wsgidav.wsgidav_app import WsgiDAVApp  # type: ignore[import-untyped]

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class WebdavServer:
    """A running WsgiDAV: ``url`` (``webdav://127.0.0.1:PORT``, no credentials in it),
    the one account it accepts, and the folder it serves."""

    url: str
    user: str
    password: str
    root: Path
    port: int


#: The account of the test server.  The password has characters that need quoting in a
#: URL, so the tests see that it is handled (and never shown) properly.
USER, PASSWORD = "alice", "pä ss:w@rd/9q7Zk"


@contextmanager
def running_webdav(root: Path, user: str = USER, password: str = PASSWORD) -> Iterator[WebdavServer]:
    """WsgiDAV serving ``root`` to one account, in a cheroot thread on 127.0.0.1 on a
    free port; stopped on exit.

    The configuration is complete and explicit, so no ``wsgidav.yaml`` lying
    around is read.
    """
    config: dict[str, Any] = {
        "host": LOOPBACK,
        "port": 0,
        "provider_mapping": {"/": str(root)},
        "simple_dc": {"user_mapping": {"*": {user: {"password": password}}}},
        "http_authenticator": {"domain_controller": None, "accept_basic": True,
                               "accept_digest": False, "default_to_digest": False},
        "dir_browser": {"enable": False},
        "property_manager": None,
        "lock_storage": True,
        "block_size": 256 * 1024,
        "verbose": 1,
        "logging": {"enable": False},
    }
    server = wsgi.Server((LOOPBACK, 0), WsgiDAVApp(config), numthreads=16)
    server.prepare()  # binds: the real port is known from here on
    port = server.bind_addr[1]
    thread = threading.Thread(target=server.serve, name="wsgidav", daemon=True)
    thread.start()
    try:
        yield WebdavServer(f"webdav://{LOOPBACK}:{port}", user, password, root, port)
    finally:
        server.stop()
        thread.join(10)


@pytest.fixture(scope="session")
def webdav_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebdavServer]:
    """WsgiDAV serving a temporary folder, in a cheroot thread on 127.0.0.1 (session-wide),
    to the account USER / PASSWORD (see :func:`running_webdav`)."""
    with running_webdav(tmp_path_factory.mktemp("webdav-root")) as server:
        yield server


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port on 127.0.0.1 where nothing listens: bound (so nothing else takes it) but
    not listening, so every connection is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        yield sock.getsockname()[1]


# -- a relay that fails on purpose -----------------------------------------------------

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-connection", "proxy-authorization", "expect", "content-length"}


class Relay:
    """An HTTP relay on 127.0.0.1 in front of a test server (WsgiDAV, moto).

    Requests are passed on as they are, one connection each; ``fail_next``
    queues answers to give instead (a 503 with Retry-After...), one per
    request, in order.  ``seen`` lists ``(method, path, status)`` of every
    request answered, ``headers`` their headers.  Bodies are held in memory: small files only.
    """

    def __init__(self, backend_port: int):
        self.backend_port = backend_port
        self.seen: list[tuple[str, str, int]] = []
        self.headers: list[dict[str, str]] = []  # of each request, as received
        self._failures: list[tuple[int, dict[str, str], bytes]] = []  # status 0: cut the answer short
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((LOOPBACK, 0), _RelayHandler)
        self._server.daemon_threads = True
        self._server.relay = self  # type: ignore[attr-defined]
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="relay",
                                        daemon=True)
        self._thread.start()

    def fail_next(self, status: int, headers: dict[str, str] | None = None, times: int = 1,
                  body: bytes = b"") -> None:
        """Answer the next ``times`` requests with ``status`` (and ``headers``, ``body``),
        relaying nothing."""
        with self._lock:
            self._failures.extend([(status, dict(headers or {}), body)] * times)

    def cut_next(self, after: int) -> None:
        """Relay the next request, but drop the connection after ``after`` bytes of the answer's body."""
        with self._lock:
            self._failures.append((0, {"after": str(after)}, b""))

    def take_failure(self) -> tuple[int, dict[str, str], bytes] | None:
        """The next queued failure, if any (used by the handler)."""
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def record(self, method: str, path: str, status: int, headers: dict[str, str]) -> None:
        """Note an answered request."""
        with self._lock:
            self.seen.append((method, path, status))
            self.headers.append(headers)

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


class _RelayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle pause per answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read ``Relay.seen``."""

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _relay(self) -> None:
        relay: Relay = self.server.relay  # type: ignore[attr-defined]
        body = self._body()
        failure = relay.take_failure()
        cut: int | None = None
        if failure is not None and failure[0] == 0:
            cut, failure = int(failure[1]["after"]), None
        if failure is not None:
            status, extra, content = failure
            relay.record(self.command, self.path, status, dict(self.headers.items()))
            self.send_response(status)
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        backend = http.client.HTTPConnection(LOOPBACK, relay.backend_port, timeout=30)
        try:
            backend.request(self.command, self.path, body=body, headers=headers)
            answer = backend.getresponse()
            data = answer.read()
        finally:
            backend.close()
        relay.record(self.command, self.path, answer.status, dict(self.headers.items()))
        self.send_response_only(answer.status, answer.reason)
        for key, value in answer.getheaders():
            if key.lower() not in _HOP_BY_HOP:
                self.send_header(key, value)
        length = answer.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data if cut is None else data[:cut])
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True  # the client sees the body end early

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = _relay
    do_PROPFIND = do_PROPPATCH = do_MKCOL = do_MOVE = do_COPY = _relay


@pytest.fixture
def relay() -> Iterator[Callable[[int], Relay]]:
    """Make relays: ``relay(backend_port)``; all are stopped after the test."""
    made: list[Relay] = []

    def make(backend_port: int) -> Relay:
        made.append(Relay(backend_port))
        return made[-1]

    yield make
    for each in made:
        each.close()
