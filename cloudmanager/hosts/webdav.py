"""``webdav://host:port/path`` (HTTP) and ``webdavs://...`` (HTTPS): a WebDAV collection.

Built on webdav4's :class:`~webdav4.client.Client`, whose httpx client (with
the WebDAV verbs) sends every request and whose multistatus parser reads
PROPFIND answers.  Objects are stored by content as ``PATH/ab/cd/<sha256>``,
like the folder host.  The collections are created as needed (MKCOL, from the
deepest missing one upwards, never above ``PATH``'s first missing ancestor)
and remembered, so later uploads into them cost no extra request.  An upload
first asks for the object's size (PROPFIND) and sends nothing when an object
of the same size is already there; otherwise the file is streamed (PUT, with
its Content-Length, read in chunks of :data:`CHUNK` bytes).  A download is
streamed to ``out`` chunk by chunk; when the connection breaks in the middle,
the retry resumes where it stopped (a ``Range`` request) instead of writing
the first bytes twice.

The locator is the object's URL without any secret,
``webdav://host:port/PATH/ab/cd/<sha256>``; only its last three parts are
used when fetching (always from this host's own server and ``PATH``), so
another node that reaches the same server by another name still finds the
object, and a locator that points anywhere else is refused.

Credentials, first found wins: the configuration's ``token`` (the password),
the environment variable named by the ``password_env`` option, a password in
the URL (accepted, never shown again: not by :meth:`WebdavHost.url`, nor in
locators or error messages).  The user comes from the URL
(``webdavs://alice@dav.example.org/files``); both are sent with HTTP Basic
authentication, so use ``webdavs://`` beyond a trusted network.

Options (URL query or the host's ``config`` table):

``timeout``
    Seconds (default 30) to connect, and between two reads or writes of a
    request, so a server that stops answering fails within it (per attempt).
    An answer must also bring :data:`MIN_PACE` bytes (or all of it) within
    each ``timeout`` seconds, so a server that dribbles a byte now and then
    fails within it too.
``retries``, ``retry_delay``
    Transient failures (refused or dropped connections, timeouts, HTTP 5xx,
    429 and 503 throttling, whose ``Retry-After`` is honoured) are retried
    (see :class:`~.retry.RetryPolicy`); a wrong password (401, 403) is not.
``verify``
    TLS server certificate check for ``webdavs://``: ``true`` (default, the
    system's CAs), ``false`` (no check), or the path of a CA bundle file or
    folder.
``password_env``
    The environment variable holding the password.

The default ``name`` is ``webdav:HOST[:PORT]/PATH`` (the port only when it is
not the scheme's default), the same for ``webdav://`` and ``webdavs://`` and
on every node that uses that collection.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import httpcore
import httpx
from webdav4.client import Client  # type: ignore[import-untyped]
from webdav4.multistatus import parse_multistatus_response  # type: ignore[import-untyped]

from ..errors import HostError, ObjectMissing
from ..httpstatus import HttpStatus
from ..layout import sharded
from ..retry import RetryPolicy
from ..streams import Sink
from .base import Checker, Deleter, Host
from .kit import Sharded, unreadable, upload_size
from .registry import (
    RETRY_OPTIONS,
    BadOption,
    HostSpec,
    Option,
    option,
    read_options,
    seconds,
    secret_from_env,
)

T = TypeVar("T")

#: Default seconds to connect and between two reads or writes.
DEFAULT_TIMEOUT = 30.0
#: Bytes read from the file, or from the network, at a time.
CHUNK = 1024 * 1024
#: Bytes an answer must bring within each ``timeout`` seconds (or end before), else it is
#: too slow: per-read timeouts alone never expire for a server that dribbles.
MIN_PACE = 64 * 1024
_TOO_SLOW = "answer too slow"
#: Whether certificates are checked when the verify option is not given.
_DEFAULT_VERIFY: bool | ssl.SSLContext = True
#: Options this kind understands.
OPTIONS = (
    Option("timeout", seconds, DEFAULT_TIMEOUT, "seconds to connect, and between two reads or writes"),
    Option("verify", lambda value: _verify(value), True, "true, false, or a CA bundle file or folder"),
    Option("password_env", str, None, "an environment variable holding the password"),
    *RETRY_OPTIONS,
)

_SCHEMES = {"webdav": ("http", 80), "webdavs": ("https", 443),
            "http": ("http", 80), "https": ("https", 443)}
#: Answers worth another try: throttling and a server or gateway in trouble.
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504, 509})
_PROPFIND = ('<?xml version="1.0" encoding="utf-8"?>'
             '<propfind xmlns="DAV:"><prop><getcontentlength/><resourcetype/></prop></propfind>')


class _PacedStream(httpcore.NetworkStream):
    """A connection whose answers keep pace: from the first read after a request was
    written, each ``window`` seconds bring MIN_PACE bytes, or the read times out."""

    def __init__(self, inner: httpcore.NetworkStream, window: float):
        self._inner = inner
        self._window = window
        self._since: float | None = None  # when the current window started
        self._got = 0  # bytes read in it

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        now = time.monotonic()
        if self._since is None:
            self._since, self._got = now, 0
        left = self._since + self._window - now
        if left <= 0:
            raise httpcore.ReadTimeout(_TOO_SLOW)
        try:
            data = self._inner.read(max_bytes, left if timeout is None else min(timeout, left))
        except httpcore.ReadTimeout:
            if self._got:
                raise httpcore.ReadTimeout(_TOO_SLOW) from None
            raise
        self._got += len(data)
        if self._got >= MIN_PACE:
            self._since = None
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._since = None  # a new request: its answer starts a new window
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _PacedStream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._window)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _PacedBackend(httpcore.NetworkBackend):
    """Opens :class:`_PacedStream` connections."""

    def __init__(self, inner: httpcore.NetworkBackend, window: float):
        self._inner = inner
        self._window = window

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _PacedStream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options),
                            self._window)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _PacedStream(self._inner.connect_unix_socket(path, timeout, socket_options), self._window)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


#: httpcore's exceptions and the httpx ones callers catch, most specific first.
_HTTPX_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout), (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout), (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException), (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError), (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError), (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError), (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """Raise httpcore's errors as the httpx ones (what ``httpx.HTTPTransport`` does)."""
    try:
        yield
    except Exception as exc:
        for core, mapped in _HTTPX_ERRORS:
            if isinstance(exc, core):
                raise mapped(str(exc)) from exc
        raise


class _Answer(httpx.SyncByteStream):
    """An answer's body from httpcore, its errors as httpx's."""

    def __init__(self, inner: Iterable[bytes]):
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._inner

    def close(self) -> None:
        closer = getattr(self._inner, "close", None)
        if closer is not None:
            closer()


class _PacedTransport(httpx.BaseTransport):
    """An httpx transport on httpcore's public connection pool, whose connections are
    :class:`_PacedStream` ones (what ``httpx.HTTPTransport`` does, with our backend)."""

    def __init__(self, verify: bool | ssl.SSLContext, window: float):
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PacedBackend(httpcore.SyncBackend(), window))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the pool; httpcore's errors become httpx's."""
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host,
                             port=request.url.port, target=request.url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=request.extensions)
        with _httpx_errors():
            answer = self._pool.handle_request(core)
        assert isinstance(answer.stream, Iterable)
        return httpx.Response(status_code=answer.status, headers=answer.headers,
                              stream=_Answer(answer.stream), extensions=answer.extensions)

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.close()


def _verify(value: Any) -> bool | ssl.SSLContext:
    """The ``verify`` option: a boolean, or a CA bundle file or folder."""
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    if os.path.isdir(text):
        return ssl.create_default_context(capath=text)
    if os.path.isfile(text):
        return ssl.create_default_context(cafile=text)
    raise BadOption(f"must be true, false or a CA bundle file or folder (no such path: {text!r})")


def _netloc(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port is not None else shown


class WebdavHost(Sharded, Deleter, Checker):
    """A collection on a WebDAV server (Nextcloud, Apache mod_dav, rclone serve...)."""

    scheme = "webdav"
    kind = "WebDAV"
    locator_schemes = frozenset({"webdav", "webdavs"})

    def __init__(self, url: str, *, user: str | None = None, password: str | None = None,
                 name: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 retry: RetryPolicy | None = None, verify: bool | str | ssl.SSLContext = True):
        """``url`` is ``webdav[s]://[user[:password]@]host[:port]/path`` (``http[s]://`` too);
        ``user`` and ``password`` given here win over the URL's."""
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ValueError(f"a WebDAV host URL starts with webdav:// or webdavs://, not {parts.scheme}://")
        if not parts.hostname:
            raise ValueError("a WebDAV host is written webdav://host:port/path")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the port of a WebDAV host must be a number from 1 to 65535") from None
        if not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        http_scheme, default_port = _SCHEMES[parts.scheme]
        self.tls = http_scheme == "https"
        #: ``webdavs`` for HTTPS, else ``webdav``: the scheme of url() and of locators.
        self.url_scheme = "webdavs" if self.tls else "webdav"
        self.hostname = parts.hostname
        self.port = None if port == default_port else port
        self.root = posixpath.normpath("/" + unquote(parts.path)).rstrip("/")
        if self.root.startswith("//"):
            self.root = self.root[1:]
        self.user = user if user is not None else (unquote(parts.username) if parts.username else None)
        if password is None and parts.password is not None:
            password = unquote(parts.password)
        self._password = password
        self.timeout = float(timeout)
        self.retry = retry or RetryPolicy()
        super().__init__(name or f"webdav:{_netloc(self.hostname, self.port)}{self.root}")
        self._origin = f"{http_scheme}://{_netloc(self.hostname, port)}"
        auth = None
        if self.user is not None or password is not None:
            auth = httpx.BasicAuth(self.user or "", password or "")
        if isinstance(verify, str):
            verify = option({"verify": verify}, "verify", _verify, _DEFAULT_VERIFY, "WebDAV")
        self._client = Client(self._origin, auth=auth, retry=False, chunk_size=CHUNK,
                              timeout=httpx.Timeout(self.timeout), verify=verify,
                              transport=_PacedTransport(verify, self.timeout))
        self._http: httpx.Client = self._client.http
        self._made: set[str] = set()  # collections known to exist
        self._guard = threading.Lock()

    # -- naming -----------------------------------------------------------------------

    def url(self) -> str:
        """``webdav[s]://[user@]host[:port]/path``: never the password."""
        user = f"{quote(self.user, safe='')}@" if self.user else ""
        return f"{self.url_scheme}://{user}{_netloc(self.hostname, self.port)}{quote(self.root) or '/'}"

    def _key(self, digest: str) -> str:
        return f"{self.root}/{sharded(digest)}"

    def _locator(self, digest: str) -> str:
        return f"{self.url_scheme}://{_netloc(self.hostname, self.port)}{quote(self._key(digest))}"

    def _address(self, path: str) -> str:
        return self._origin + quote(path)

    # -- errors -----------------------------------------------------------------------

    def _transient(self, exc: BaseException) -> float | None:
        """Retry classifier: None for a permanent failure, else the delay asked for."""
        if isinstance(exc, HttpStatus):
            return exc.retry_after if exc.status in _TRANSIENT_STATUS else None
        if isinstance(exc, httpx.ConnectError) and "CERTIFICATE" in str(exc).upper():
            return None  # a certificate that does not verify will not verify next time
        if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError,
                            httpx.ProxyError)):
            return 0.0
        return None

    def _describe(self, exc: BaseException) -> str:
        """A message for an error, without the password."""
        if isinstance(exc, HttpStatus):
            if exc.status in (401, 403):
                message = f"authentication failed (HTTP {exc.status} {exc.reason} to {exc.method})"
            else:
                message = f"HTTP {exc.status} {exc.reason} (to {exc.method})"
        elif isinstance(exc, httpx.TimeoutException) and str(exc) == _TOO_SLOW:
            message = f"answer too slow: less than {MIN_PACE // 1024} KiB within {self.timeout:g} s"
        elif isinstance(exc, httpx.TimeoutException):
            message = f"no answer within {self.timeout:g} s ({type(exc).__name__})"
        elif isinstance(exc, httpx.ConnectError):
            message = f"cannot connect to {_netloc(self.hostname, self.port)}: {exc}"
        elif isinstance(exc, httpx.HTTPError):
            message = f"{type(exc).__name__}: {exc}"
        elif isinstance(exc, OSError):
            message = f"local file error: {exc.strerror or exc}"
        elif isinstance(exc, ValueError):
            message = f"not a WebDAV answer: {exc}"
        else:
            message = f"{type(exc).__name__}: {exc}"
        if self._password:
            for secret in {self._password, quote(self._password, safe="")}:
                message = message.replace(secret, "***")
        return message

    def _call(self, what: str, operation: Callable[[], T]) -> T:
        return self.retry.call(self.name, what, operation, self._transient, self._describe)

    # -- requests ---------------------------------------------------------------------

    def _request(self, method: str, path: str, ok: tuple[int, ...], **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, self._address(path), **kwargs)
        if response.status_code not in ok:
            raise HttpStatus(response, method)
        return response

    def _size(self, path: str) -> int | None:
        """The size of the object at ``path``: None when there is none (or a collection)."""
        response = self._request("PROPFIND", path, (207, 404), content=_PROPFIND.encode(),
                                 headers={"Depth": "0", "Content-Type": "application/xml; charset=utf-8"})
        if response.status_code == 404:
            return None
        found = list(parse_multistatus_response(response).responses.values())
        if len(found) != 1:
            raise ValueError(f"PROPFIND gave {len(found)} answers for one object")
        properties = found[0].properties
        if properties.collection:
            return None
        size = properties.content_length
        return int(size) if size is not None else None

    def _make_collections(self, folder: str) -> None:
        """Create ``folder`` and its missing parents (deepest first, then upwards)."""
        with self._guard:
            if folder in self._made or folder in ("", "/"):
                return
        # 201 made, 405 already there (RFC 4918), 409 parent missing.
        status = self._request("MKCOL", folder + "/", (200, 201, 405, 409)).status_code
        if status == 409:
            parent = posixpath.dirname(folder)
            if parent in ("", "/"):
                raise HostError(self.name, f"cannot create the collection {folder}: HTTP 409 Conflict")
            self._make_collections(parent)
            self._request("MKCOL", folder + "/", (200, 201, 405))
        with self._guard:
            self._made.add(folder)

    def _forget(self, folder: str) -> None:
        with self._guard:
            self._made.difference_update({folder, posixpath.dirname(folder),
                                          posixpath.dirname(posixpath.dirname(folder))})

    def _put(self, source: Path, path: str, size: int) -> int:
        """PUT the file, read in chunks as it is sent; returns the status (404/409: no parent)."""
        try:
            with open(source, "rb") as handle:
                response = self._http.request(
                    "PUT", self._address(path), content=iter(lambda: handle.read(CHUNK), b""),
                    headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
        except OSError as exc:
            raise unreadable(self, source, exc) from exc
        if response.status_code not in (200, 201, 204, 404, 409):
            raise HttpStatus(response, "PUT")
        return response.status_code

    # -- the contract -----------------------------------------------------------------

    def upload(self, source: Path, name: str, digest: str) -> str:
        """Send the file (streamed), unless an object of the same size is there already."""
        size = upload_size(self, source, digest)
        path = self._key(digest)
        folder = posixpath.dirname(path)

        def attempt() -> None:
            if self._size(path) == size:
                return
            try:
                self._make_collections(folder)
                status = self._put(source, path, size)
                if status in (404, 409):  # a collection vanished since we made it
                    self._forget(folder)
                    self._make_collections(folder)
                    status = self._put(source, path, size)
                    if status in (404, 409):
                        raise HostError(self.name, f"cannot store {digest}: HTTP {status} to PUT "
                                                   "(a parent collection is missing)")
            except BaseException:
                self._forget(folder)  # check them again next time
                raise

        self._call("upload", attempt)
        return self._locator(digest)

    def download(self, locator: str, out: Sink) -> None:
        """Stream the object to ``out``; a broken transfer resumes where it stopped."""
        digest = self._digest_of(locator)
        address = self._address(self._key(digest))
        written = 0

        def attempt() -> None:
            nonlocal written
            headers = {"Accept-Encoding": "identity"}
            if written:
                headers["Range"] = f"bytes={written}-"
            with self._http.stream("GET", address, headers=headers, follow_redirects=True) as response:
                if response.status_code == 404:
                    raise ObjectMissing(self.name, f"no such object: {digest}")
                if written and response.status_code != 206:
                    raise HostError(self.name, f"download of {digest} broke off after {written} bytes and "
                                               f"the server cannot resume it (HTTP {response.status_code})")
                if response.status_code not in (200, 206):
                    raise HttpStatus(response, "GET")
                if written and not response.headers.get("Content-Range", "").startswith(f"bytes {written}-"):
                    raise HostError(self.name, f"download of {digest} broke off after {written} bytes "
                                               "and the server resumed it at another place")
                for block in response.iter_bytes(CHUNK):
                    out.write(block)
                    written += len(block)

        self._call("download", attempt)

    def delete(self, locator: str) -> None:
        """Remove the object (nothing happens when it is gone already)."""
        path = self._key(self._digest_of(locator))
        self._call("delete", lambda: self._request("DELETE", path, (200, 202, 204, 404)).status_code)

    def check(self, locator: str) -> int | None:
        """The object's size, from a PROPFIND (nothing is downloaded)."""
        digest = self._digest_of(locator)
        size = self._call("check", lambda: self._size(self._key(digest)))
        if size is None:
            raise ObjectMissing(self.name, f"no such object: {digest}")
        return size

    def close(self) -> None:
        """Close the connections to the server."""
        self._http.close()


def from_spec(spec: HostSpec) -> Host:
    """``webdav://[user@]host[:port]/path`` (HTTP) or ``webdavs://...`` (HTTPS)."""
    options = read_options(spec.options, OPTIONS, "WebDAV")
    password = spec.token
    if password is None:
        password = secret_from_env(options["password_env"], "password_env")
    parts = spec.parts
    # The URL goes on without its query (options are read here) and keeps any password in it.
    url = parts._replace(query="", fragment="").geturl()
    return WebdavHost(url, password=password, name=spec.name,
                      timeout=options["timeout"], retry=RetryPolicy.from_options(options),
                      verify=options["verify"])
