"""The node's HTTP app (Starlette): its objects, its catalog, share links and its page.

Routes (every one but share links needs the token, see auth.py):

``PUT /objects/<sha256>?name=NAME``
    The body is kept as that file when its SHA-256 matches (streamed to the
    cache, verified on arrival, nothing kept otherwise: 400); 507 when it does
    not fit the node's cache.  201 (new) or 200 (known).
``GET /objects/<sha256>``
    The bytes (fetched from the node's hosts first when not cached), with
    ``Range`` (206, 416).  The page's session cookie is accepted here too.
``HEAD /objects/<sha256>``
    The recorded size as ``Content-Length``, nothing fetched.
``DELETE /objects/<sha256>``
    The node forgets the file and deletes its copies on its own hosts where they
    can delete (204; 404 when unknown).
``GET /catalog?since=N&limit=M``
    Records changed after change number N: ``{"version", "records", "cursor", "more"}``,
    at most M (PAGE_MAX) and payload.PAGE_MAX_BYTES of JSON (fewer records then).
``POST /catalog``
    A JSON dump to merge, parsed as it arrives: at most payload.PAGE_MAX_RECORDS
    records and payload.PAGE_MAX_BYTES bytes, else 413 and nothing merged.
``GET /s/<sha256>?e=EXPIRY&sig=SIGNATURE``
    A share link (links.py): the file under its recorded name, without the token;
    refused when it expires later than the node's hosts keep copies.
``GET /metrics``
    The node's figures in the Prometheus text format (metrics.py).
``GET /``, ``POST /login``, ``POST /logout``
    The page (page.py).

A malformed hash is 400, an unknown file 404; errors are ``{"error": "..."}``.
The manager's calls block (SQLite, disk, hosts), so each runs in a worker thread;
uploads have their own few threads (``serve.uploads``, 503 past them), so that
stalled uploads can never take the threads reads need.  Around the routes:
the access line and figures of each request (observe.py) and the pace of
request bodies (pacing.py); below them, the connections' caps and deadlines
(connections.py).
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .. import links, payload
from ..errors import CacheFull, HashMismatch, InvalidDump, PageTooLarge, Unavailable
from ..manager import CloudManager
from ..names import is_sha256
from . import parsing
from .auth import Access
from .connections import Connections
from .metrics import CONTENT_TYPE, Metrics
from .observe import Observe
from .pacing import Pacing
from .page import Page
from .sessions import Sessions
from .settings import Settings
from .streaming import BodyTooLarge, ClientGone, feed
from .throttle import Throttle

#: Records per catalog page: by default, and at most (the cap of every page, both ways).
PAGE_DEFAULT, PAGE_MAX = 1000, payload.PAGE_MAX_RECORDS
#: The headers of an answer sent before the end of the body: the connection closes
#: (else the server would read the rest of the body, only to drop it).
_UNREAD = {"Connection": "close"}
#: Seconds a client is asked to wait when the uploads are full.
BUSY_RETRY = 5


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error answer: ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


#: What a served file is never allowed to do in a browser on the node's origin: be
#: sniffed into another type, or run script (a shared page.html stays inert).
FILE_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
#: The types a file may be announced as (none can run script); any other is sent as
#: application/octet-stream.
SAFE_TYPES = frozenset({"text/plain", "image/png", "image/jpeg", "image/gif", "image/webp",
                        "audio/mpeg", "audio/ogg", "audio/flac", "video/mp4", "video/webm"})


def served_type(name: str | None) -> str:
    """The Content-Type a file named ``name`` is sent as: its guessed type when that
    is on SAFE_TYPES, else application/octet-stream (so is a file without a name)."""
    guessed = mimetypes.guess_type(name)[0] if name else None
    return guessed if guessed in SAFE_TYPES else "application/octet-stream"


def content_disposition(name: str) -> str:
    """``attachment`` with the name for every browser: RFC 6266's ``filename*`` (UTF-8)
    and a plain ASCII ``filename`` for old clients."""
    fallback = "".join(ch if ch.isascii() and ch.isprintable() and ch not in '"\\;' else "_" for ch in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _hold(manager: CloudManager, digest: str, stack: ExitStack) -> Path | None:
    """Warm the file up and hold it until ``stack`` closes (CloudManager.hold)."""
    return stack.enter_context(manager.hold(digest))


class _HeldFileResponse(FileResponse):
    """A FileResponse (Range, HEAD, If-Range) of a held file, released when sent or
    abandoned; counted as a download in flight meanwhile."""

    def __init__(self, stack: ExitStack, path: Path, metrics: Metrics, **kwargs: Any):
        super().__init__(path, **kwargs)
        self._stack = stack
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._metrics.downloads.inc()
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._metrics.downloads.dec()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._stack.close)


def _busy(what: str) -> JSONResponse:
    return error(503, f"this node is receiving as many {what} as it takes at once: try again",
                 {"Retry-After": str(BUSY_RETRY)})


class NodeApp:
    """The endpoints over one node's CloudManager."""

    def __init__(self, manager: CloudManager, settings: Settings, access: Access, metrics: Metrics):
        self.manager = manager
        self.settings = settings
        self.access = access
        self.metrics = metrics
        limits = settings.limits
        # Admission (503 past it) and the threads the admitted run in, apart from the
        # default ones every other call uses.
        self._upload_slots = anyio.CapacityLimiter(limits.uploads)
        self._upload_threads = anyio.CapacityLimiter(limits.uploads)
        self._push_slots = anyio.CapacityLimiter(limits.catalog_pushes)
        self._push_threads = anyio.CapacityLimiter(limits.catalog_pushes)

    def _require(self, request: Request, *, session: bool = False) -> None:
        self.access.require(request, session=session)

    @staticmethod
    def _digest(request: Request) -> str:
        digest = str(request.path_params["digest"])
        if not is_sha256(digest):
            raise HTTPException(400, f"not a SHA-256 (64 lowercase hex digits): {digest[:80]!r}")
        return digest

    async def _send_file(self, request: Request, digest: str, *, filename: str | None) -> Response:
        parsing.check_range(request)  # before anything is fetched
        stack = ExitStack()
        try:
            path = await anyio.to_thread.run_sync(_hold, self.manager, digest, stack)
        except Unavailable as exc:
            stack.close()
            return error(503, str(exc))
        except BaseException:
            stack.close()
            raise
        if path is None:
            stack.close()
            return error(404, f"no such file: {digest}")
        headers = {"Cache-Control": "private, no-store", **FILE_HEADERS}
        if filename is not None:
            headers["Content-Disposition"] = content_disposition(filename)
        return _HeldFileResponse(stack, path, self.metrics, headers=headers, filename=filename,
                                 media_type=served_type(filename))

    # -- objects ----------------------------------------------------------------------

    async def get_object(self, request: Request) -> Response:
        """GET: the bytes, with Range.  HEAD: the recorded size."""
        self._require(request, session=True)
        digest = self._digest(request)
        if request.method == "HEAD":
            record = await anyio.to_thread.run_sync(self.manager.info, digest)
            if record is None:
                return Response(status_code=404)
            return Response(headers={"Content-Length": str(record["filesize"]), "Accept-Ranges": "bytes",
                                     "Content-Type": "application/octet-stream"})
        return await self._send_file(request, digest, filename=None)

    async def put_object(self, request: Request) -> Response:
        """Keep the body as the file ``digest`` when its SHA-256 is that."""
        self._require(request)
        digest = self._digest(request)
        name = request.query_params.get("name") or digest
        capacity = self.manager.capacity
        length = parsing.content_length(request)
        if length is not None and length > capacity:
            return error(507, f"{length} bytes are more than this node's cache holds ({capacity})")
        try:
            self._upload_slots.acquire_nowait()
        except anyio.WouldBlock:
            return _busy("uploads")
        self.metrics.uploads.inc()
        try:
            known = await anyio.to_thread.run_sync(self.manager.exists, digest)
            await feed(request.stream(), lambda source: self.manager.accept(source, name, digest),
                       limit=capacity, threads=self._upload_threads)
        except HashMismatch as exc:
            return error(400, str(exc))
        except (CacheFull, BodyTooLarge) as exc:
            return error(507, str(exc))
        except ClientGone as exc:
            return error(400, str(exc))
        finally:
            self.metrics.uploads.dec()
            self._upload_slots.release()
        return JSONResponse({"hash": digest}, status_code=200 if known else 201)

    async def delete_object(self, request: Request) -> Response:
        """Forget the file, and delete its copies from the node's own hosts where they
        can delete (what another node takes back must not stay on disk for good)."""
        self._require(request)
        digest = self._digest(request)
        report = await anyio.to_thread.run_sync(partial(self.manager.forget, digest, from_hosts=True))
        if report is None:
            return error(404, f"no such file: {digest}")
        return Response(status_code=204)

    # -- catalog ----------------------------------------------------------------------

    async def get_catalog(self, request: Request) -> Response:
        """A page of the records changed after ``since``, within payload.PAGE_MAX_BYTES
        (fewer than ``limit`` records when they would pass it)."""
        self._require(request)
        query = request.query_params
        since = parsing.number(query.get("since", "0"), "since")
        limit = parsing.number(query.get("limit", str(PAGE_DEFAULT)), "limit", low=1, high=PAGE_MAX)
        outgoing = await anyio.to_thread.run_sync(self.manager.change_page, since, limit)
        self.metrics.pulls.inc()
        self.metrics.records_sent.inc(len(outgoing.texts))
        return Response(outgoing.page(), media_type="application/json")

    async def push_catalog(self, request: Request) -> Response:
        """POST /catalog: admitted when fewer than ``serve.catalog_pushes`` run (503 else)."""
        self._require(request)
        try:
            self._push_slots.acquire_nowait()
        except anyio.WouldBlock:
            return _busy("catalog pages")
        try:
            response = await self.post_catalog(request)
        finally:
            self._push_slots.release()
        if response.status_code == 200:
            self.metrics.pushes.inc()
        return response

    async def post_catalog(self, request: Request) -> Response:
        """Merge a dump, parsed as it arrives within the caps of a page (413 past them,
        nothing merged); what is invalid in it is counted, not merged (push_catalog has
        checked the token)."""
        length = parsing.content_length(request)
        if length is not None and length > payload.PAGE_MAX_BYTES:
            return error(413, str(payload.too_long()), _UNREAD)
        try:
            parsed = await feed(request.stream(), payload.read_dump, threads=self._push_threads)
            report = await anyio.to_thread.run_sync(self.manager.import_dump, parsed,
                                                    limiter=self._push_threads)
            self.metrics.records_received.inc(len(parsed.records) + len(parsed.rejected))
        except PageTooLarge as exc:
            return error(413, str(exc), _UNREAD)
        except (InvalidDump, ClientGone) as exc:
            return error(400, str(exc))
        return JSONResponse({"added": report.added, "changed": report.changed,
                             "rejected": len(report.rejected),
                             "first_seq": report.first_seq, "last_seq": report.last_seq})

    # -- figures ----------------------------------------------------------------------

    async def metrics_page(self, request: Request) -> Response:
        """The node's figures for a Prometheus scraper (behind the token)."""
        self._require(request)
        text = await anyio.to_thread.run_sync(self.metrics.text)
        return Response(text, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    # -- share links ------------------------------------------------------------------

    async def shared(self, request: Request) -> Response:
        """A share link: the file under its recorded name, to anyone holding the link."""
        digest = str(request.path_params["digest"])
        query = request.query_params
        if not links.verify(self.settings.secret, digest, query.get("e"), query.get("sig"), time.time(),
                            self.manager.longest_link()):
            return error(403, "this link is invalid, has expired, or outlives what this node's hosts keep")
        record = await anyio.to_thread.run_sync(self.manager.info, digest)
        if record is None:
            return error(404, "this file is no longer kept here")
        return await self._send_file(request, digest, filename=str(record["filename"]))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, exc.detail, dict(exc.headers or {}))


def make_app(manager: CloudManager, settings: Settings, connections: Connections | None = None) -> Starlette:
    """The Starlette app serving ``manager``'s node with ``settings``; ``connections``
    is the connection layer it runs over (run.py; a fresh one when not given)."""
    limits = settings.limits
    if connections is None:
        total, per_client = limits.connections(1024)
        connections = Connections(limit=total, per_client=per_client, header_timeout=limits.header_timeout)
    throttle = Throttle(limits.auth_failures_per_second, limits.auth_failures_burst)
    access = Access(settings.token, Sessions(settings.session_lifetime), throttle, secure_cookie=settings.tls)
    metrics = Metrics(manager)
    node = NodeApp(manager, settings, access, metrics)
    page = Page(manager, settings, access)
    watched: list[tuple[str, str, Callable[[], int], bool]] = [
        ("connections_open", "Connections open now.", lambda: connections.count, False),
        ("connections_refused", "Connections refused at the caps (503).", lambda: connections.refused, True),
        ("connections_timed_out", "Connections closed for a late request head.",
         lambda: connections.timed_out, True),
        ("auth_throttled", "Answers 429 to addresses that gave too many wrong tokens.",
         lambda: throttle.refused, True),
        ("sessions_open", "Sessions of the page open now.", lambda: len(access.sessions), False),
    ]
    for name, text, read, counter in watched:
        metrics.watch(name, text, read, counter=counter)
    endpoint = Callable[[Request], Awaitable[Response]]
    table: list[tuple[str, endpoint, list[str]]] = [
        ("/", page.show, ["GET"]),
        ("/login", page.login, ["POST"]),
        ("/logout", page.logout, ["POST"]),
        ("/objects/{digest}", node.get_object, ["GET", "HEAD"]),
        ("/objects/{digest}", node.put_object, ["PUT"]),
        ("/objects/{digest}", node.delete_object, ["DELETE"]),
        ("/catalog", node.get_catalog, ["GET"]),
        ("/catalog", node.push_catalog, ["POST"]),
        ("/s/{digest}", node.shared, ["GET", "HEAD"]),
        ("/metrics", node.metrics_page, ["GET"]),
    ]
    routes = [Route(path, handler, methods=methods) for path, handler, methods in table]

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(Observe, metrics=metrics, routes=routes),
            Middleware(Pacing, connections=connections, limits=limits, on_late=metrics.late.inc),
        ],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.metrics = metrics
    return app
