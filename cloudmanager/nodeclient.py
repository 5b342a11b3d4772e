"""A client of another node's HTTP server (``cm serve``): its objects and its catalog.

Shared by the ``cm://`` host kind (objects) and catalog sync between nodes
(pages of changes).  One pooled :class:`httpx.Client` per node; the token goes
in an ``Authorization: Bearer`` header and never into a message.  Transient
failures (refused or dropped connections, timeouts, HTTP 5xx other than 507,
429 and 503 with their ``Retry-After``) are retried with a
:class:`~cloudmanager.retry.RetryPolicy`; every failure in the end is a
:class:`~cloudmanager.errors.HostError` (or :class:`~cloudmanager.errors.ObjectMissing`)
naming the node.

The server's side of each call is in cloudmanager/server/app.py.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from . import payload
from .errors import HostError, InvalidDump, ObjectMissing, PageTooLarge
from .httpstatus import HttpStatus
from .names import is_sha256
from .retry import RetryPolicy
from .streams import Sink, write_all

T = TypeVar("T")

#: Default seconds to connect, and between two reads or writes of a request.
DEFAULT_TIMEOUT = 30.0
#: Bytes read from a file, or from the network, at a time.
CHUNK = 1024 * 1024
#: The port of ``cm serve`` when a URL names none.
DEFAULT_PORT = 8976
#: Answers worth another try: throttling, and a server or gateway in trouble (507, a
#: full store, is not: it stays full).
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: URL schemes accepted for a node, and the HTTP scheme each means.
_SCHEMES = {"cm": "http", "http": "http", "cms": "https", "https": "https"}
#: The longest part of an error answer quoted in a message.
_DETAIL = 300
#: The longest answer to a push read (a report of a few numbers).
_ANSWER_BYTES = 64 * 1024
#: Catalog calls take answers as they are: a compressed one could inflate past any cap.
_IDENTITY = {"Accept-Encoding": "identity"}


class _Status(HttpStatus):
    """The node answered with a status the call did not expect (and said why)."""

    def __init__(self, response: httpx.Response, method: str):
        super().__init__(response, method)
        self.detail = _detail(response)


def _detail(response: httpx.Response) -> str:
    """The error the node gave in its answer (``{"error": ...}`` or text), shortened."""
    try:
        if not response.is_stream_consumed:
            body = b""
            for block in response.iter_bytes(1024):
                body += block
                if len(body) >= _DETAIL * 4:
                    break
        else:
            body = response.content
    except httpx.HTTPError:
        return ""
    text = body.decode("utf-8", "replace")
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
        text = decoded["error"]
    text = " ".join(text.split())
    return text[:_DETAIL]


def _origin(base_url: str) -> tuple[str, str]:
    """``(http[s]://host:port/prefix, host:port)`` from a node's URL
    (``cm://``, ``cms://``, ``http://`` or ``https://``)."""
    parts = urlsplit(base_url)
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"a node's URL starts with cm://, cms://, http:// or https://: {base_url[:40]!r}")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise ValueError("a node's URL is written cm://HOST:PORT (the token goes in the configuration)")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError("the port of a node's URL must be a number from 1 to 65535") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{host}:{port}"
    return f"{_SCHEMES[parts.scheme]}://{netloc}{parts.path.rstrip('/')}", netloc


def origin(base_url: str) -> str:
    """The normalized ``http[s]://HOST:PORT[/prefix]`` of a node's URL (ValueError when
    it is not one): the same node always gets the same string (catalog sync keys
    its cursors by it)."""
    return _origin(base_url)[0]


def _tls(verify: bool | str) -> bool | ssl.SSLContext:
    """httpx's ``verify``: True/False, or a context trusting the CA file ``verify``."""
    if isinstance(verify, bool):
        return verify
    try:
        return ssl.create_default_context(cafile=verify)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot read the CA file {verify}: {exc}") from None


class NodeClient:
    """Calls to one node's ``cm serve``: objects by SHA-256, and catalog pages.

    ``base_url`` is ``cm://HOST:PORT`` or ``http://HOST:PORT`` (``cms://`` or
    ``https://`` for TLS; a path prefix is kept, for a node behind a proxy);
    ``token`` the node's token; ``verify`` True (the system's CAs), False, or
    the path of a CA file; ``name`` names the node in errors (default
    ``HOST:PORT``).  Safe to use from several threads.
    """

    def __init__(self, base_url: str, token: str | None, *, name: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, verify: bool | str = True,
                 retry: RetryPolicy | None = None):
        if not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.origin, netloc = _origin(base_url)
        self.name = name or netloc
        self.timeout = float(timeout)
        self.retry = retry or RetryPolicy()
        self._has_token = bool(token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.origin, headers=headers, timeout=httpx.Timeout(self.timeout),
                                  verify=_tls(verify), follow_redirects=False)

    # -- errors -----------------------------------------------------------------------

    def _transient(self, exc: BaseException) -> float | None:
        """Retry classifier: None for a permanent failure, else the delay asked for."""
        if isinstance(exc, _Status):
            return exc.retry_after if exc.status in _TRANSIENT_STATUS else None
        if isinstance(exc, httpx.ConnectError) and "CERTIFICATE" in str(exc).upper():
            return None  # a certificate that does not verify will not verify next time
        if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
            return 0.0
        return None

    def _describe(self, exc: BaseException) -> str:
        """A message for an error; it never holds the token (the node never echoes it)."""
        if isinstance(exc, _Status):
            said = f": {exc.detail}" if exc.detail else ""
            if exc.status == 401:
                return f"the node asks for its token (HTTP 401 to {exc.method}; none is configured)" \
                    if not self._has_token else f"the node refused the token (HTTP 401 to {exc.method})"
            if exc.status == 403:
                return f"the node refused the token (HTTP 403 to {exc.method})"
            if exc.status == 507:
                return f"the node's store is full (HTTP 507 to {exc.method}){said}"
            return f"HTTP {exc.status} {exc.reason} (to {exc.method}){said}"
        if isinstance(exc, httpx.TimeoutException):
            return f"no answer within {self.timeout:g} s ({type(exc).__name__})"
        if isinstance(exc, httpx.ConnectError):
            return f"cannot connect to {self.origin}: {exc}"
        if isinstance(exc, httpx.HTTPError):
            return f"{type(exc).__name__}: {exc}"
        if isinstance(exc, OSError):
            return f"local file error: {exc.strerror or exc}"
        return f"{type(exc).__name__}: {exc}"

    def _call(self, what: str, operation: Callable[[], T]) -> T:
        return self.retry.call(self.name, what, operation, self._transient, self._describe)

    def _object(self, digest: str) -> str:
        if not is_sha256(digest):
            raise HostError(self.name, f"not a SHA-256: {str(digest)[:80]!r}")
        return f"/objects/{digest}"

    # -- objects ----------------------------------------------------------------------

    def put(self, digest: str, name: str, source: Path) -> None:
        """Send the file at ``source`` (streamed) to be kept as ``digest`` under ``name``.

        The node verifies the SHA-256 on arrival and keeps nothing on a mismatch.
        """
        address = self._object(digest)
        try:
            size = source.stat().st_size
        except OSError as exc:
            raise HostError(self.name, f"cannot read {source}: {exc.strerror or exc}") from exc

        def attempt() -> None:
            with open(source, "rb") as handle:
                chunks: Iterator[bytes] = iter(lambda: handle.read(CHUNK), b"")
                response = self._http.put(address, params={"name": name}, content=chunks, headers={
                    "Content-Length": str(size), "Content-Type": "application/octet-stream"})
            if response.status_code == 400:
                raise HostError(self.name, f"the node refused the bytes of {digest}: {_detail(response)}")
            if response.status_code not in (200, 201, 204):
                raise _Status(response, "PUT")

        self._call("upload", attempt)

    def get(self, digest: str, out: Sink, offset: int = 0) -> None:
        """Write the object's bytes from ``offset`` on to ``out`` (streamed); a broken
        transfer resumes where it stopped.  ObjectMissing when the node lacks it."""
        address = self._object(digest)
        if offset < 0:
            raise ValueError("offset must be >= 0")
        written = 0

        def attempt() -> None:
            nonlocal written
            start = offset + written
            headers = {"Accept-Encoding": "identity"}
            if start:
                headers["Range"] = f"bytes={start}-"
            with self._http.stream("GET", address, headers=headers) as response:
                status = response.status_code
                if status == 404:
                    raise ObjectMissing(self.name, f"no such object: {digest}")
                if status == 416:
                    raise HostError(self.name, f"{digest} has no byte at offset {start}")
                if status != (206 if start else 200):
                    raise _Status(response, "GET")
                if start and not response.headers.get("Content-Range", "").startswith(f"bytes {start}-"):
                    raise HostError(self.name, f"asked for {digest} from byte {start}, "
                                               "and the node answered another part")
                for block in response.iter_bytes(CHUNK):
                    write_all(out, block)
                    written += len(block)

        self._call("download", attempt)

    def head(self, digest: str) -> int | None:
        """The object's size in bytes, or None when the node does not know it."""
        address = self._object(digest)

        def attempt() -> int | None:
            response = self._http.head(address)
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise _Status(response, "HEAD")
            try:
                return int(response.headers["Content-Length"])
            except (KeyError, ValueError):
                raise HostError(self.name, "the node's answer to HEAD has no size") from None

        return self._call("check", attempt)

    def delete(self, digest: str) -> None:
        """Make the node forget the object (nothing happens when it does not know it)."""
        address = self._object(digest)

        def attempt() -> None:
            response = self._http.delete(address)
            if response.status_code not in (200, 204, 404):
                raise _Status(response, "DELETE")

        self._call("delete", attempt)

    # -- catalog ----------------------------------------------------------------------

    def _raw(self, response: httpx.Response, method: str) -> Iterator[bytes]:
        """The body of a (streamed) answer to a catalog call as it comes, which must not be
        compressed (it was not asked for, and could inflate past any cap)."""
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            raise HostError(self.name, f"the node's answer to {method} /catalog came "
                                       f"{encoding[:40]}-encoded, which was not asked for")
        return response.iter_raw(CHUNK)

    def _answer(self, response: httpx.Response, method: str) -> dict[str, Any]:
        """The JSON object of a (streamed) answer to a catalog call, read within _ANSWER_BYTES."""
        if response.status_code != 200:
            raise _Status(response, method)
        body = b""
        for block in self._raw(response, method):
            body += block
            if len(body) > _ANSWER_BYTES:
                raise HostError(self.name, f"the node's answer to {method} /catalog is longer than "
                                           f"{_ANSWER_BYTES} bytes")
        try:
            answer = json.loads(body)
        except ValueError:
            raise HostError(self.name, f"the node's answer to {method} /catalog is not JSON") from None
        if not isinstance(answer, dict):
            raise HostError(self.name, f"the node's answer to {method} /catalog is not a JSON object")
        return answer

    def catalog_page(self, since: int, limit: int) -> tuple[payload.Parsed, int, bool]:
        """The node's records changed after its change number ``since``, validated as
        they arrive (payload.read_page): at most ``limit`` of them, the cursor to ask
        from next, and whether more remain.

        A page past the caps (more than ``limit`` records, more than
        payload.PAGE_MAX_BYTES bytes, one that never ends) is a HostError naming the
        cap, as soon as it is passed; so is a page that is not JSON."""

        def attempt() -> tuple[payload.Parsed, int, bool]:
            with self._http.stream("GET", "/catalog", params={"since": since, "limit": limit},
                                   headers=_IDENTITY) as response:
                if response.status_code != 200:
                    raise _Status(response, "GET")
                body = self._raw(response, "GET")
                try:
                    length = response.headers.get("Content-Length")
                    if length is not None and length.isdigit() and int(length) > payload.PAGE_MAX_BYTES:
                        raise payload.too_long()
                    page = payload.read_page(body, max_records=limit)
                except PageTooLarge as exc:
                    raise HostError(self.name, f"refused the node's catalog page: {exc}") from None
                except InvalidDump as exc:
                    raise HostError(self.name, f"the node's answer to GET /catalog is not a catalog page: "
                                               f"{exc}") from None
            cursor, more = page.cursor, page.more
            if isinstance(cursor, bool) or not isinstance(cursor, int) or not isinstance(more, bool):
                raise HostError(self.name, "the node's answer to GET /catalog is not a catalog page")
            return page.parsed, cursor, more

        return self._call("catalog", attempt)

    def push_catalog(self, dump: bytes) -> dict[str, Any]:
        """Send records (a JSON dump, within the caps of a page) for the node to merge;
        its report of the merge (``added``, ``changed``, ``rejected``, ``first_seq``,
        ``last_seq``)."""

        def attempt() -> dict[str, Any]:
            with self._http.stream("POST", "/catalog", content=dump,
                                   headers={"Content-Type": "application/json", **_IDENTITY}) as response:
                if response.status_code in (400, 413):
                    raise HostError(self.name, f"the node refused the dump (HTTP {response.status_code}): "
                                               f"{_detail(response)}")
                return self._answer(response, "POST")

        return self._call("catalog push", attempt)

    def close(self) -> None:
        """Close the connections to the node."""
        self._http.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
