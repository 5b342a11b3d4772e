"""``sftp://user@host:port/path``: a folder on an SSH server, through SFTP (paramiko).

Objects are stored by content as ``PATH/ab/cd/<sha256>``, like the folder host:
each is written to a temporary name in PATH and renamed into place (with the
``posix-rename@openssh.com`` extension where the server has it), so a reader
never sees half an object, and an upload of content already there (same size)
sends nothing.  ``PATH`` is absolute; ``/~/dir`` means ``dir`` under the login
folder.  Folders are created as needed.

The locator is the object's URL without any secret,
``sftp://user@host:port/PATH/ab/cd/<sha256>``; only its last three parts are
used when fetching, so another node that reaches the same server by another
name still finds the object, and a locator pointing anywhere else is refused.

Credentials, first found wins: the configuration's ``token`` (a password, or a
private key in OpenSSH/PEM text), a password in the URL (accepted, never shown
again), the environment variable named by ``password_env``; the ``key_file``
option names a private key (a password, if any, then unlocks it).  With none
of these, the SSH agent and the usual ``~/.ssh/id_*`` keys are tried.

Options (URL query or the host's ``config`` table):

``key_file``
    A private key file.
``known_hosts``
    The known_hosts file checked (default: ``~/.ssh/known_hosts`` and
    ``/etc/ssh/ssh_known_hosts``, as OpenSSH does).
``host_key_policy``
    ``reject`` (default): an unknown server key is refused.  ``accept-new``:
    a server never seen before is trusted on first use and its key appended
    to the known_hosts file (the option's, else ``~/.ssh/known_hosts``).  A
    key that differs from a known one is refused either way.
``password_env``
    The environment variable holding the password.
``timeout``
    Seconds (default 30) each step may wait: connecting, the server's banner,
    authentication, opening the SFTP channel, and every SFTP request, so a
    server that accepts and never answers fails within it (per attempt).
``retries``, ``retry_delay``
    Transient failures (refused, reset, dropped connections, timeouts) are
    retried with a new connection (see :class:`~.retry.RetryPolicy`); a wrong
    password or key, or an unknown host key, is not.  A download is retried
    only before its first byte was written (the sink cannot be rewound).
``connections``
    How many connections to the server at most (default 4); idle ones are
    kept for the next operation, and all are closed by :meth:`SftpHost.close`.

Files are streamed both ways: an upload is written in pipelined 32 KiB
requests, a download keeps a few MiB of read requests ahead of the reader, and
neither holds more than the SSH channel's window in memory.

The default ``name`` is ``sftp:HOST[:PORT]/PATH`` (the user too when PATH is
under the login folder): the same on every node that uses that folder.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import math
import os
import posixpath
import secrets
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar
from urllib.parse import quote, unquote

import paramiko
from paramiko.ssh_exception import NoValidConnectionsError

from ..errors import HostError, ObjectMissing
from ..layout import sharded
from ..retry import RetryPolicy
from ..streams import Sink
from .base import Checker, Deleter, Host
from .kit import Sharded, check_digest, unreadable
from .registry import RETRY_OPTIONS, HostSpec, Option, file_path, read_options, seconds, secret_from_env
from .sftp_reads import Reader

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PORT = 22
DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECTIONS = 4
HOST_KEY_POLICIES = ("reject", "accept-new")
#: Bytes of a download requested ahead of the reader, so the server streams
#: without waiting for each request (in pieces of REQUEST_SIZE).  The answers
#: wait in the SSH channel's window (2 MiB), so memory stays flat whatever the
#: file size.
READ_AHEAD = 4 * 1024 * 1024
#: The size of one SFTP read request (paramiko's and OpenSSH's usual 32 KiB).
REQUEST_SIZE = 32 * 1024
#: Options this kind understands.
OPTIONS = (
    Option("key_file", file_path, None, "a private key file to log in with"),
    Option("known_hosts", file_path, None, "the known_hosts file that holds the server's key"),
    Option("host_key_policy", str, "reject", "reject or accept-new: what to do with an unknown server key"),
    Option("password_env", str, None, "an environment variable holding the password or key passphrase"),
    Option("timeout", seconds, DEFAULT_TIMEOUT, "seconds to connect, and between two reads or writes"),
    Option("connections", int, DEFAULT_CONNECTIONS, "SSH connections at most, one operation each"),
    *RETRY_OPTIONS,
)
_MAX_NAME = 128  # the longest host name a dump carries

_NETWORK_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE,
                             errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN,
                             errno.EHOSTDOWN})


#: Failures after which a connection is not trusted again, even if it looks alive.
_BROKEN = (TimeoutError, ConnectionError, EOFError, paramiko.SSHException, paramiko.SFTPError)


class _ConnectionLost(Exception):
    """The connection broke during an operation (a transient failure)."""


class _UnknownHostKey(paramiko.SSHException):
    """The server's key is not known and the policy refuses new keys."""


def _transient(exc: BaseException) -> float | None:
    """RetryPolicy classifier: 0.0 (retry with backoff) for network trouble, None otherwise."""
    if isinstance(exc, _ConnectionLost | NoValidConnectionsError | TimeoutError | ConnectionError | EOFError):
        return 0.0
    if isinstance(exc, socket.gaierror):
        return 0.0 if exc.errno == socket.EAI_AGAIN else None
    if isinstance(exc, paramiko.AuthenticationException | paramiko.BadHostKeyException | _UnknownHostKey):
        return None
    if isinstance(exc, paramiko.SSHException):  # banner, key exchange, channel: the connection failed
        return 0.0
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        return 0.0
    return None


@dataclass
class _Session:
    """One SSH connection with its SFTP channel, used by one thread at a time."""

    client: paramiko.SSHClient
    sftp: paramiko.SFTPClient
    generation: int

    def alive(self) -> bool:
        transport = self.client.get_transport()
        channel = self.sftp.get_channel()
        return (transport is not None and transport.is_active()
                and channel is not None and not channel.closed)

    def close(self) -> None:
        for closer in (self.sftp.close, self.client.close):
            with contextlib.suppress(Exception):
                closer()


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Asks the host what to do with a server key that known_hosts lacks."""

    def __init__(self, owner: SftpHost):
        self._owner = owner

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        """Accept the key (accept-new, first sight) or raise."""
        self._owner._new_host_key(hostname, key)


def _load_key_text(text: str, password: str | None) -> paramiko.PKey:
    """A private key from its OpenSSH or PEM text."""
    failure: Exception | None = None
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(text), password=password)
        except paramiko.PasswordRequiredException:
            raise ValueError("the private key given as token is encrypted: give its passphrase "
                             "with password_env") from None
        except (paramiko.SSHException, ValueError) as exc:
            failure = exc
    raise ValueError(f"the token looks like a private key but cannot be read ({type(failure).__name__})")


def _load_key_file(path: Path, password: str | None) -> paramiko.PKey:
    """A private key from a file; ValueError naming the file otherwise."""
    try:
        try:
            return paramiko.PKey.from_path(path)
        except (TypeError, paramiko.PasswordRequiredException):  # encrypted
            if password is None:
                raise
            return paramiko.PKey.from_path(path, password=password)
    except FileNotFoundError:
        raise ValueError(f"key_file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ValueError(f"cannot read key_file {str(path)!r}: {exc.strerror or exc}") from None
    except (TypeError, paramiko.PasswordRequiredException):
        raise ValueError(f"key_file {str(path)!r} is encrypted: give its passphrase as the password "
                         "(token or password_env)") from None
    except (ValueError, paramiko.SSHException) as exc:
        raise ValueError(f"key_file {str(path)!r} is not a private key paramiko can use "
                         f"({type(exc).__name__})") from None


class SftpHost(Sharded, Deleter, Checker):
    """A folder on an SSH server, reached through SFTP."""

    scheme = "sftp"
    kind = "sftp"
    locator_schemes = frozenset({"sftp"})
    locator_query = True

    def __init__(self, host: str, path: str, *, user: str | None = None, port: int = DEFAULT_PORT,
                 password: str | None = None, key: paramiko.PKey | None = None,
                 key_file: str | os.PathLike[str] | None = None,
                 known_hosts: str | os.PathLike[str] | None = None, host_key_policy: str = "reject",
                 timeout: float = DEFAULT_TIMEOUT, retry: RetryPolicy | None = None,
                 connections: int = DEFAULT_CONNECTIONS, name: str | None = None):
        """``path`` is the folder as the URL writes it (``/srv/vault`` or ``/~/vault``).

        ``key`` (a loaded private key) and ``key_file`` are alternatives; a
        ``password`` logs in, or unlocks the key file.  Raises ValueError for
        a bad argument (the message never shows the password).
        """
        if not host or any(ch.isspace() or ch in "/@?#" for ch in host):
            raise ValueError(f"not a server name: {host!r}")
        if not 0 < port < 65536:
            raise ValueError(f"not a port number: {port}")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError("timeout must be a positive number of seconds")
        if connections < 1:
            raise ValueError("connections must be 1 or more")
        if host_key_policy not in HOST_KEY_POLICIES:
            raise ValueError(f"host_key_policy must be one of {', '.join(HOST_KEY_POLICIES)}, "
                             f"not {host_key_policy!r}")
        self.host = host
        self.port = port
        self.user = user or None
        self.url_path, self.root = self._root(path)
        self.timeout = float(timeout)
        self.retry = retry or RetryPolicy()
        self.host_key_policy = host_key_policy
        self.known_hosts = Path(known_hosts).expanduser() if known_hosts is not None else None
        self._password = password or None
        if key is not None and key_file is not None:
            raise ValueError("give a key or a key_file, not both")
        self.key_file = Path(key_file).expanduser() if key_file is not None else None
        self._key = key if key is not None else (
            _load_key_file(self.key_file, self._password) if self.key_file is not None else None)
        super().__init__(name or self._default_name())
        if len(self.name) > _MAX_NAME:
            raise ValueError(f"the host name {self.name[:40]!r}... is longer than {_MAX_NAME} "
                             "characters: give a shorter one with name=")
        self.connections = connections
        self._slots = threading.BoundedSemaphore(connections)
        self._lock = threading.Lock()
        self._idle: list[_Session] = []
        self._generation = 0
        self._folders: set[str] = set()  # folders known to exist on the server
        self._accepted: list[tuple[str, paramiko.PKey]] = []  # keys trusted on first use
        self._orphans: list[str] = []  # temporary files a broken connection left behind

    # -- names, paths, locators ---------------------------------------------------------

    @staticmethod
    def _root(path: str) -> tuple[str, str]:
        """(the path as URLs write it, the path given to the server)."""
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
            raise ValueError("the folder of an sftp host contains control characters")
        parts = [part for part in path.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise ValueError("the folder of an sftp host cannot contain '..'")
        if parts[:1] == ["~"]:
            inner = parts[1:]
            if "~" in inner:
                raise ValueError("'~' may only start the folder of an sftp host")
            return "/" + "/".join(["~", *inner]), "/".join(inner) or "."
        if not parts:
            raise ValueError("an sftp host needs a folder: sftp://user@host/srv/vault "
                             "(or /~/vault under the login folder)")
        return "/" + "/".join(parts), "/" + "/".join(parts)

    def _server(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORT else f"{host}:{self.port}"

    def _default_name(self) -> str:
        # Under the login folder the user matters: another user's ~ is another folder.
        user = f"{self.user}@" if self.user and self.url_path.startswith("/~") else ""
        return f"sftp:{user}{self._server()}{self.url_path}"

    def _who(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self._server()}"

    def _methods(self) -> str:
        """The login methods tried, for error messages (never the secrets)."""
        methods = []
        if self._key is not None:
            methods.append(f"the key {self.key_file}" if self.key_file else "the key given as token")
        if self._password is not None:
            methods.append("a password")
        return " and ".join(methods) or "the SSH agent and ~/.ssh keys"

    def url(self) -> str:
        """``sftp://user@host:port/path``, never with a password."""
        user = f"{quote(self.user, safe='')}@" if self.user else ""
        return f"sftp://{user}{self._server()}{quote(self.url_path)}"

    def _object(self, digest: str) -> str:
        return posixpath.join(self.root, sharded(digest))

    def _locator(self, digest: str) -> str:
        return f"{self.url()}/{sharded(digest)}"

    def _shown(self, locator: object) -> str:
        """The locator shortened, never with the password."""
        return self._scrub(repr(locator[:200] if isinstance(locator, str) else type(locator).__name__))

    def _path(self, locator: str) -> str:
        """The server path of the object a locator names; ObjectMissing if it names none."""
        return self._object(self._digest_of(locator))

    def _scrub(self, text: str) -> str:
        """``text`` with the password, if any, blanked out (belt and braces)."""
        if self._password:
            for form in {self._password, quote(self._password, safe="")}:
                text = text.replace(form, "***")
        return text

    def _describe(self, exc: BaseException) -> str:
        """A short message for an error, naming the server and never a secret."""
        if isinstance(exc, NoValidConnectionsError):
            text = f"connection refused by {self._server()}"
        elif isinstance(exc, TimeoutError):
            text = f"no answer from {self._server()} within {self.timeout:g} s"
        elif isinstance(exc, paramiko.SSHException) and "banner" in str(exc):
            text = f"{self._server()} sent no SSH greeting within {self.timeout:g} s ({exc})"
        elif isinstance(exc, paramiko.SSHException) and str(exc) in ("No existing session",
                                                                     "Negotiation failed."):
            text = f"{self._server()} did not complete the SSH handshake within {self.timeout:g} s"
        elif isinstance(exc, OSError) and exc.strerror:
            text = f"{exc.strerror} ({self._server()})"
        else:
            text = str(exc) or type(exc).__name__
        return self._scrub(text)

    # -- connections ----------------------------------------------------------------------

    def _known_hosts_files(self) -> list[Path]:
        if self.known_hosts is not None:
            return [self.known_hosts]
        return [Path("~/.ssh/known_hosts").expanduser(), Path("/etc/ssh/ssh_known_hosts")]

    def _new_host_key(self, hostname: str, key: paramiko.PKey) -> None:
        """Called for a server key known_hosts lacks: trust it (accept-new) or refuse."""
        where = self._known_hosts_files()[0]
        if self.host_key_policy != "accept-new":
            raise _UnknownHostKey(f"the server's host key ({key.get_name()} {key.fingerprint}) is not in "
                                  f"{where}: add it there, or set host_key_policy=accept-new")
        with self._lock:
            for known_name, known_key in self._accepted:
                if known_name == hostname:
                    if known_key == key:
                        return
                    raise paramiko.BadHostKeyException(hostname, key, known_key)
            self._accepted.append((hostname, key))
            try:
                where.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                with open(where, "a", encoding="ascii") as handle:
                    handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            except OSError as exc:
                log.warning("%s: trusted the new host key of %s for now, but cannot record it in %s: %s",
                            self.name, hostname, where, exc.strerror or exc)
        log.info("%s: trusted the new host key of %s (%s %s)", self.name, hostname, key.get_name(),
                 key.fingerprint)

    def _load_host_keys(self, client: paramiko.SSHClient) -> None:
        keys = client.get_host_keys()
        for path in self._known_hosts_files():
            if path.is_file():
                try:
                    keys.load(str(path))
                except (OSError, paramiko.SSHException) as exc:
                    raise HostError(self.name, f"cannot read the known_hosts file {path}: {exc}") from None
        with self._lock:
            for hostname, key in self._accepted:
                keys.add(hostname, key.get_name(), key)

    def _connect(self) -> _Session:
        """A new authenticated connection with an SFTP channel."""
        client = paramiko.SSHClient()
        try:
            self._load_host_keys(client)
            client.set_missing_host_key_policy(_HostKeyPolicy(self))
            explicit = self._key is not None or self._password is not None
            client.connect(self.host, port=self.port, username=self.user, password=self._password,
                           pkey=self._key, timeout=self.timeout, banner_timeout=self.timeout,
                           auth_timeout=self.timeout, channel_timeout=self.timeout,
                           allow_agent=not explicit, look_for_keys=not explicit)
            transport = client.get_transport()
            if transport is None:  # pragma: no cover - connect either succeeds or raises
                raise _ConnectionLost("no transport after connecting")
            sftp = self._open_sftp(transport)
            with self._lock:
                generation = self._generation
            return _Session(client, sftp, generation)
        except paramiko.AuthenticationException:
            client.close()
            raise HostError(self.name, f"authentication failed for {self._who()} "
                            f"(tried {self._methods()})") from None
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostError(self.name, f"the host key of {self._server()} ({exc.key.get_name()} "
                            f"{exc.key.fingerprint}) differs from the one known: refusing to connect "
                            "(a changed server, or someone in between)") from None
        except _UnknownHostKey as exc:
            client.close()
            raise HostError(self.name, str(exc)) from None
        except paramiko.SSHException as exc:
            client.close()
            if "No authentication methods available" in str(exc):
                raise HostError(self.name, f"no credentials to log in to {self._who()} with: give "
                                "key_file, a token, or password_env") from None
            raise
        except BaseException:
            client.close()
            raise

    def _open_sftp(self, transport: paramiko.Transport) -> paramiko.SFTPClient:
        channel = transport.open_session(timeout=self.timeout)
        channel.settimeout(self.timeout)  # every SFTP request, the version exchange included
        # paramiko waits for the subsystem's answer without a time limit: close
        # the connection if the server never gives it.
        watchdog = threading.Timer(self.timeout, transport.close)
        watchdog.daemon = True
        watchdog.start()
        try:
            channel.invoke_subsystem("sftp")
            return paramiko.SFTPClient(channel)
        finally:
            watchdog.cancel()

    def _take(self) -> _Session | None:
        dead: list[_Session] = []
        found = None
        with self._lock:
            while self._idle:
                session = self._idle.pop()
                if session.generation == self._generation and session.alive():
                    found = session
                    break
                dead.append(session)
        for session in dead:
            session.close()
        return found

    def _give(self, session: _Session) -> None:
        with self._lock:
            if (session.generation == self._generation and len(self._idle) < self.connections
                    and session.alive()):
                self._idle.append(session)
                return
        session.close()

    def _drop_idle(self) -> None:
        """Close the idle connections (after one broke, the others likely did too)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for session in idle:
            session.close()

    @contextlib.contextmanager
    def _session(self) -> Iterator[paramiko.SFTPClient]:
        """An SFTP session for one operation: from the pool, or a new connection.

        A failure that leaves the connection broken closes it and becomes
        _ConnectionLost (transient); an error the server answered with (no
        such file, permission denied) leaves the session in the pool.
        """
        with self._slots:
            session = self._take() or self._connect()
            try:
                yield session.sftp
            except HostError:
                self._give(session)
                raise
            except Exception as exc:
                if session.alive() and not isinstance(exc, _BROKEN):
                    self._give(session)  # the server answered with an error status (no such file...)
                    raise
                session.close()
                self._drop_idle()
                raise _ConnectionLost(f"connection to {self._server()} lost: {self._describe(exc)}") from exc
            except BaseException:
                session.close()
                raise
            self._give(session)

    def _run(self, what: str, operation: Callable[[], T],
             transient: Callable[[BaseException], float | None] = _transient) -> T:
        return self.retry.call(self.name, what, operation, transient, self._describe)

    def close(self) -> None:
        """Close every idle connection; connections in use close when their operation ends."""
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
        for session in idle:
            session.close()

    # -- operations -----------------------------------------------------------------------

    def _make_folders(self, sftp: paramiko.SFTPClient, folder: str) -> None:
        """Create ``folder`` and its missing parents (a folder made meanwhile is fine)."""
        with self._lock:
            if folder in self._folders:
                return
        missing: list[str] = []
        current = folder
        while current not in ("", "/", "."):
            with self._lock:
                if current in self._folders:
                    break
            try:
                attributes = sftp.stat(current)
            except FileNotFoundError:
                missing.append(current)
                current = posixpath.dirname(current)
                continue
            if attributes.st_mode is not None and not stat.S_ISDIR(attributes.st_mode):
                raise HostError(self.name, f"{current} on {self._server()} is not a folder")
            break
        for path in reversed(missing):
            try:
                sftp.mkdir(path)
            except OSError:
                try:
                    made = sftp.stat(path).st_mode  # made by another writer meanwhile?
                except FileNotFoundError:
                    made = None
                if made is None or not stat.S_ISDIR(made):
                    raise
        with self._lock:
            path = folder
            while path not in ("", "/", "."):
                self._folders.add(path)
                path = posixpath.dirname(path)

    def _size(self, sftp: paramiko.SFTPClient, path: str) -> int | None:
        """The size of ``path`` on the server, None when there is no such file."""
        try:
            return sftp.stat(path).st_size
        except FileNotFoundError:
            return None

    def _rename(self, sftp: paramiko.SFTPClient, temp: str, target: str, size: int) -> None:
        try:
            sftp.posix_rename(temp, target)  # atomic, replaces: OpenSSH's extension
            return
        except FileNotFoundError:
            raise
        except OSError:
            pass  # no posix-rename@openssh.com here: a plain rename, which never replaces
        try:
            sftp.rename(temp, target)
        except OSError:
            present = self._size(sftp, target)
            if present is None:
                raise
            if present != size:  # a damaged copy: replace it
                sftp.remove(target)
                sftp.rename(temp, target)
            else:  # another writer stored the same content meanwhile
                sftp.remove(temp)

    def _store(self, sftp: paramiko.SFTPClient, source: IO[bytes], size: int, digest: str) -> None:
        target = self._object(digest)
        if self._size(sftp, target) == size:
            return
        for again in (False, True):
            self._make_folders(sftp, posixpath.dirname(target))
            temp = posixpath.join(self.root, f".tmp-{secrets.token_hex(8)}")
            try:
                source.seek(0)
                sftp.putfo(source, temp, file_size=size, confirm=False)  # write errors surface on close
                self._rename(sftp, temp, target, size)
            except FileNotFoundError:
                self._discard(sftp, temp)
                if again:
                    raise
                with self._lock:  # folders removed behind our back: make them again, once
                    self._folders.clear()
                continue
            except BaseException as exc:
                if isinstance(exc, TimeoutError) or not self._discard(sftp, temp):
                    with self._lock:  # removed after the next success
                        self._orphans.append(temp)
                raise
            self._sweep(sftp)
            return

    def _discard(self, sftp: paramiko.SFTPClient, temp: str) -> bool:
        """Remove a temporary file if the connection still allows it; False if it does not."""
        channel = sftp.get_channel()
        if channel is None or channel.closed:
            return False
        try:
            sftp.remove(temp)
        except FileNotFoundError:
            pass
        except Exception:
            return False
        return True

    def _sweep(self, sftp: paramiko.SFTPClient) -> None:
        """Remove the temporary files failed uploads left (best effort, once)."""
        with self._lock:
            orphans, self._orphans = self._orphans, []
        for temp in orphans:
            with contextlib.suppress(OSError):
                sftp.remove(temp)

    def upload(self, source: Path, name: str, digest: str) -> str:
        """Store ``source`` as ``PATH/ab/cd/<digest>`` (atomic; skipped when already there)."""
        check_digest(self, digest)
        try:
            with open(source, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                self._run(f"cannot store in {self.url()}",
                          lambda: self._upload_once(handle, size, digest))
        except OSError as exc:  # the local file, not the server (those are HostErrors)
            raise unreadable(self, source, exc) from exc
        return self._locator(digest)

    def _upload_once(self, handle: IO[bytes], size: int, digest: str) -> None:
        with self._session() as sftp:
            self._store(sftp, handle, size, digest)

    def download(self, locator: str, out: Sink) -> None:
        """Stream the object to ``out``, a few requests ahead (retried only before
        any byte was written to ``out``)."""
        path = self._path(locator)
        counted: list[int] = []  # bytes written to ``out``: no retry once there are some

        def once() -> None:
            with self._session() as sftp:
                try:
                    size = sftp.stat(path).st_size or 0
                    self._stream(sftp, path, size, out, lambda count: counted.append(count))
                except FileNotFoundError:
                    raise ObjectMissing(self.name, f"no such object: {posixpath.basename(path)}") from None

        def transient(exc: BaseException) -> float | None:
            return None if counted else _transient(exc)

        self._run(f"cannot fetch from {self.url()}", once, transient)

    def _stream(self, sftp: paramiko.SFTPClient, path: str, size: int, out: Sink,
                wrote: Callable[[int], object]) -> None:
        """Copy the file at ``path`` to ``out``, keeping up to READ_AHEAD bytes requested
        ahead, on an SFTP channel of its own on the session's connection (sftp_reads.py)."""
        channel = sftp.get_channel()
        transport = channel.get_transport() if channel is not None else None
        if transport is None or not transport.is_active():
            raise _ConnectionLost("the connection closed")
        with contextlib.closing(Reader(transport, self.timeout)) as reader:
            for chunk in reader.pieces(path, size, REQUEST_SIZE, READ_AHEAD):
                try:
                    out.write(chunk)
                except Exception as exc:  # the caller's file, not the server
                    raise HostError(self.name, f"cannot write the download: {exc}") from exc
                wrote(len(chunk))

    def delete(self, locator: str) -> None:
        """Remove the object (nothing happens when it is gone already)."""
        path = self._path(locator)

        def once() -> None:
            with self._session() as sftp, contextlib.suppress(FileNotFoundError):
                sftp.remove(path)

        self._run(f"cannot delete from {self.url()}", once)

    def check(self, locator: str) -> int | None:
        """The object's size, asked of the server."""
        path = self._path(locator)

        def once() -> int | None:
            with self._session() as sftp:
                try:
                    return sftp.stat(path).st_size
                except FileNotFoundError:
                    raise ObjectMissing(self.name, "no such object") from None

        return self._run(f"cannot check on {self.url()}", once)



def from_spec(spec: HostSpec) -> Host:
    """``sftp://user@host:port/path``: a folder on an SSH server."""
    parts = spec.parts
    if not parts.hostname:
        raise ValueError("an sftp host is written sftp://user@host:port/path")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError("the port of an sftp host must be a number from 1 to 65535") from None
    options = read_options(spec.options, OPTIONS, "sftp")
    user = unquote(parts.username) if parts.username else None
    key_text = password = None
    if spec.token and spec.token.lstrip().startswith("-----BEGIN"):
        key_text = spec.token  # a private key given in the configuration
    elif spec.token:
        password = spec.token
    if password is None and parts.password:
        password = unquote(parts.password)
    if password is None:
        password = secret_from_env(options["password_env"], "password_env")
    key = None
    if key_text is not None:
        if options["key_file"]:
            raise ValueError("give the private key as token or as key_file, not both")
        key = _load_key_text(key_text, password)  # a password, if any, unlocks it
    return SftpHost(parts.hostname, spec.path, user=user, port=port, password=password, key=key,
                    key_file=options["key_file"], known_hosts=options["known_hosts"],
                    host_key_policy=options["host_key_policy"], timeout=options["timeout"],
                    retry=RetryPolicy.from_options(options), connections=options["connections"],
                    name=spec.name)
