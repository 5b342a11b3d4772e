"""``rclone://REMOTE:path``: any storage rclone reaches, through the ``rclone`` command.

``REMOTE`` is a remote named in an rclone configuration file (``rclone
config`` writes one): an SFTP server, a WebDAV share, a bucket, a cloud
drive...  Every operation runs the ``rclone`` command (Debian package
``rclone``) in a child process; nothing of rclone is reimplemented here, and
credentials stay in rclone's configuration, never in the host's URL.

Objects are stored by content as ``REMOTE:path/ab/cd/<sha256>``:

* upload: ``rclone copyto --size-only FILE REMOTE:path/ab/cd/<sha256>`` (rclone
  streams the file; an object of the same size already there is not sent
  again, and folders are created as needed);
* download: ``rclone cat REMOTE:path/ab/cd/<sha256>``, whose output is copied
  to the caller's file in chunks as it arrives, never held whole;
* delete: ``rclone deletefile``; check: ``rclone lsjson`` on the object.

The locator is ``rclone://REMOTE:path/ab/cd/<sha256>``.  Only its last three
parts are used when fetching, so another node whose remote has another name
still finds the object, and a locator that does not end in ``ab/cd/<sha256>``
is refused without running rclone.  rclone's exit codes 3 and 4 ("directory
not found", "file not found") mean the host does not hold the object
(:class:`~cloudmanager.errors.ObjectMissing`).

Options (URL query or the host's ``config`` table):

``config``
    The rclone configuration file (``--config``).  Default: rclone's own
    lookup (``$RCLONE_CONFIG``, then ``~/.config/rclone/rclone.conf``).  The
    configuration's ``token``, if any, is given to rclone as
    ``RCLONE_CONFIG_PASS`` (the password of an encrypted configuration file).
``rclone``
    The command to run (default ``rclone``, found on PATH).
``timeout``
    Seconds (default 30) for rclone's ``--contimeout`` (connecting) and
    ``--timeout`` (a transfer idle for that long fails).  The child process is
    also watched: when it shows no sign of life far beyond what those limits
    allow (see :meth:`RcloneHost.patience`), it is killed and the operation
    fails with a HostError, so a wedged rclone cannot hang the caller.
``retries``, ``retry_delay``
    Retries happen at two levels, each once only:

    * inside one rclone run, each low-level request (an HTTP request, an SFTP
      connection, one chunk) is tried up to ``low_level_retries`` times
      (default ``retries + 1``), by rclone's own pacer, which knows each
      backend's rate limits (``--low-level-retries``);
    * rclone never reruns a whole command itself (``--retries 1``): this host
      does, with :class:`~.retry.RetryPolicy` (``retries`` more runs, backoff
      from ``retry_delay``), when the run failed in a way that may pass: rclone's
      exit code 5 ("temporary error"), a refused, reset or dropped connection,
      an HTTP 429 or 5xx.  A wrong password, an unknown remote or host key, a
      missing object, a timeout (rclone already spent its low-level attempts
      waiting) and a download that had begun writing are not rerun.

    ``retries=0`` therefore means one attempt of everything.
``low_level_retries``
    See above.
``flags``
    More rclone arguments, a list (or, in a URL, one string split as a shell
    would), e.g. ``["--bwlimit", "4M"]``.  They are never shown.

Errors carry rclone's own last meaningful line of complaint (its standard
error, read from a temporary file, never the configuration) with anything
that looks like a credential masked.  The default ``name`` is ``REMOTE:path``,
the same on every node that has that remote.  POSIX only (the child process
is watched with ``select`` and stopped with its process group).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote, unquote

from ..errors import HostError, ObjectMissing
from ..layout import sharded
from ..retry import RetryPolicy
from ..streams import Sink
from .base import Checker, Deleter, Host
from .kit import Sharded, check_digest, unreadable
from .registry import RETRY_OPTIONS, HostSpec, Option, file_path, read_options, seconds

T = TypeVar("T")

#: The options this kind understands.
DEFAULT_TIMEOUT = 30.0
#: Seconds added to every watchdog limit (rclone's start, reading its configuration).
GRACE_S = 10.0
#: The slowest upload rate (bytes/s) the watchdog allows for before it stops rclone.
SLOWEST_RATE = 64 * 1024
#: Bytes read from rclone's output at a time (a pipe gives at most 64 KiB per read anyway).
CHUNK = 256 * 1024
#: How much of ``rclone lsjson``'s output is read at most (one object's listing is tiny).
LISTING_LIMIT = 1024 * 1024
#: How much of rclone's standard error is read for the message (its end).
STDERR_TAIL = 16 * 1024

#: A remote's name as this host accepts it: no leading '-' (it would read as a flag),
#: no ':' (on-the-fly ``:backend,option=...:`` remotes could carry secrets in the URL).
_REMOTE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: rclone's exit codes: directory not found, file not found; temporary error; "no retry", fatal.
_NOT_FOUND = frozenset({3, 4})
_TEMPORARY = 5
_FINAL = frozenset({6, 7})
_STAMP = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d(?:\.\d+)? +")
_LEVEL = re.compile(r"^(?:EMERGENCY|ALERT|CRITICAL|ERROR|WARNING|NOTICE|INFO|DEBUG) *: *")
_BOILERPLATE = re.compile(r"^(?:Use \"rclone|Transferred:|Errors:|Checks:|Deleted:|Renamed:|Elapsed time:"
                          r"|Transferring:|\*)")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
_SECRET_SETTING = re.compile(r"(?i)\b(\w*(?:pass|secret|token)\w*)=\S+")
_AUTH = re.compile(r"(?i)\b(?:401|403) |unauthori[sz]ed|forbidden|unable to authenticate"
                   r"|authentication fail|access denied|invalid credentials")
_PERMANENT = re.compile(r"(?i)knownhosts|host key|didn't find section|not found in config|decrypt"
                        r"|config file|unknown flag|unknown command|usage:|invalid argument"
                        r"|permission denied")
_TIMEOUT = re.compile(r"(?i)timeout|timed out|deadline exceeded")
_TRANSIENT = re.compile(r"(?i)connection refused|connection reset|broken pipe|\beof\b|no route to host"
                        r"|network is unreachable|connection closed|try again|temporar|too many requests"
                        r"|\b(?:429|5\d\d) [A-Za-z]"
                        # two rclone processes making one folder at once: the loser's
                        # sftp mkdir fails; run again, the folder is there then
                        r"|mkParentDir failed")


class _Failed(Exception):
    """rclone ended with an error (turned into a HostError by the retry policy)."""

    def __init__(self, code: int, summary: str):
        super().__init__(f"{summary} (rclone exit code {code})")
        self.code = code
        self.summary = summary


class _Hung(Exception):
    """rclone gave no sign of life for too long and was stopped."""

    def __init__(self, seconds: float):
        super().__init__(f"rclone gave no sign of life for {seconds:.0f} s and was stopped")


class _Capped:
    """A sink that keeps what it is given, up to ``limit`` bytes (an lsjson listing)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.data = bytearray()

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        if len(self.data) + len(data) > self.limit:
            raise _Failed(0, f"rclone printed more than {self.limit} bytes for one object")
        self.data += data
        return len(data)


class _Counting:
    """Passes writes to ``target``, counting the bytes (a download that began is not rerun)."""

    def __init__(self, target: Sink):
        self.target = target
        self.count = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self.target.write(data)
        self.count += len(data)
        return len(data)


def parse_target(url: str) -> tuple[str, str]:
    """``(remote, path)`` of ``rclone://REMOTE:path[?query]``, the path percent-decoded and cleaned.

    ``urlsplit`` reads ``REMOTE:path`` as a host and a port, so the URL is
    taken apart here.  Raises ValueError naming the problem.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() != "rclone":
        raise ValueError(f"not an rclone URL: {url[:100]!r} (expected rclone://REMOTE:path)")
    rest = rest.split("#", 1)[0].split("?", 1)[0]
    remote, colon, path = rest.partition(":")
    if not colon or not _REMOTE.fullmatch(remote):
        raise ValueError("an rclone host is written rclone://REMOTE:path, REMOTE being a remote of the "
                         "rclone configuration (letters, digits, '-', '_', '.')")
    return remote, clean_path(unquote(path))


def clean_path(path: str) -> str:
    """``path`` without empty or ``.`` parts or a trailing ``/`` (a leading ``/`` is kept:
    on some remotes it means the server's root).  ``..`` and control characters are refused."""
    if _CONTROL.search(path):
        raise ValueError("the path of an rclone host must not contain control characters")
    parts = path.split("/")
    if ".." in parts:
        raise ValueError("the path of an rclone host must not contain '..'")
    kept = "/".join(part for part in parts if part not in ("", "."))
    return f"/{kept}" if path.startswith("/") else kept


class RcloneHost(Sharded, Deleter, Checker):
    """A folder on an rclone remote, reached by running the ``rclone`` command."""

    scheme = "rclone"
    kind = "rclone"
    locator_schemes = frozenset({"rclone"})
    layout_lead = ":/"

    def __init__(self, remote: str, path: str = "", *, name: str | None = None,
                 config: str | os.PathLike[str] | None = None, rclone: str = "rclone",
                 timeout: float = DEFAULT_TIMEOUT, retry: RetryPolicy | None = None,
                 low_level_retries: int | None = None, flags: Sequence[str] = (),
                 token: str | None = None):
        if not _REMOTE.fullmatch(remote):
            raise ValueError(f"not an rclone remote name: {remote[:100]!r}")
        path = clean_path(path)
        super().__init__(name or f"{remote}:{path}")
        if not math.isfinite(timeout) or timeout <= 0:
            raise ValueError("the rclone timeout must be a positive number of seconds")
        if not rclone:
            raise ValueError("the rclone option names the rclone command")
        if isinstance(flags, str) or not all(isinstance(flag, str) for flag in flags):
            raise ValueError("the rclone flags are a list of strings")
        self.remote = remote
        self.root = path
        self.config = None if config is None else Path(config).expanduser()
        if self.config is not None and not self.config.is_file():
            raise ValueError(f"the rclone configuration file {str(self.config)!r} does not exist")
        self.rclone = rclone
        self.timeout = float(timeout)
        self.retry = retry or RetryPolicy()
        self.low_level_retries = self.retry.retries + 1 if low_level_retries is None else low_level_retries
        if self.low_level_retries < 1:
            raise ValueError("low_level_retries must be at least 1 (it counts attempts)")
        self.flags = list(flags)
        self._token = token

    # -- names ------------------------------------------------------------------------

    def url(self) -> str:
        """``rclone://REMOTE:path`` (options, the configuration and flags are not shown)."""
        return f"rclone://{self.remote}:{quote(self.root, safe='/')}"

    def _key(self, digest: str) -> str:
        tail = sharded(digest)
        if not self.root or self.root.endswith("/"):
            return f"{self.root}{tail}"
        return f"{self.root}/{tail}"

    def _target(self, digest: str) -> str:
        """The object as rclone names it: ``REMOTE:path/ab/cd/<sha256>``."""
        return f"{self.remote}:{self._key(digest)}"

    def _locator(self, digest: str) -> str:
        return f"rclone://{self.remote}:{quote(self._key(digest), safe='/')}"

    def _locator_path(self, locator: str) -> str | None:
        """``REMOTE:path/ab/cd/<hash>`` of an ``rclone://`` URL with no query (not
        split as a URL: a remote's name is no host name)."""
        if locator[:9].lower() != "rclone://" or "?" in locator or "#" in locator:
            return None
        return unquote(locator)

    # -- running rclone ---------------------------------------------------------------

    def patience(self, size: int = 0) -> float:
        """Seconds the watchdog lets rclone go without a sign of life (no output, not ended).

        Far beyond rclone's own limits: every low-level attempt of a few
        requests may wait for the connection and an idle transfer
        (``timeout`` each); an upload of ``size`` bytes may also go as slowly
        as SLOWEST_RATE.  A healthy rclone fails by itself long before.
        """
        return GRACE_S + 4 * self.low_level_retries * self.timeout + size / SLOWEST_RATE

    def _command(self, subcommand: str, *args: str) -> list[str]:
        duration = f"{self.timeout:.3f}s"
        command = [self._binary(), subcommand]
        if self.config is not None:
            command += ["--config", str(self.config)]
        command += ["--ask-password=false", "--contimeout", duration, "--timeout", duration,
                    "--retries", "1", "--low-level-retries", str(self.low_level_retries)]
        return [*command, *self.flags, *args]

    def _binary(self) -> str:
        found = shutil.which(self.rclone)
        if found is None:
            raise HostError(self.name, f"the rclone command ({self.rclone!r}) is not installed or not "
                                       "executable: install rclone (Debian: apt-get install rclone)")
        return found

    def _environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        if self._token:
            environment["RCLONE_CONFIG_PASS"] = self._token
        return environment

    def _run(self, command: list[str], patience: float, sink: Sink | None = None) -> None:
        """Run rclone; its output goes to ``sink`` as it comes.  Raises _Failed, _Hung or HostError."""
        with tempfile.TemporaryFile(prefix="cm-rclone-") as errors:
            try:
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL if sink is None else subprocess.PIPE,
                                           stderr=errors, env=self._environment(), bufsize=0,
                                           start_new_session=True)
            except OSError as exc:
                raise HostError(self.name, f"cannot run the rclone command ({self.rclone!r}): "
                                           f"{exc.strerror or exc}: install rclone (Debian: apt-get "
                                           "install rclone)") from exc
            try:
                if process.stdout is not None and sink is not None:
                    _pump(process.stdout, sink, patience)
                try:
                    code = process.wait(patience)
                except subprocess.TimeoutExpired:
                    raise _Hung(patience) from None
            finally:
                if process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                if process.stdout is not None:
                    process.stdout.close()
            if code != 0:
                raise _Failed(code, self._summary(errors))

    def _summary(self, errors: IO[bytes]) -> str:
        """rclone's last meaningful line of complaint, with anything like a secret masked."""
        size = errors.seek(0, os.SEEK_END)
        errors.seek(max(0, size - STDERR_TAIL))
        lines = errors.read().decode("utf-8", "replace").splitlines()
        chosen = "no message"
        for line in reversed(lines):
            line = _LEVEL.sub("", _STAMP.sub("", line.strip()))
            if line and not _BOILERPLATE.match(line):
                chosen = line
                break
        return self._scrub(chosen)[:400]

    def _scrub(self, text: str) -> str:
        text = _SECRET_SETTING.sub(r"\1=***", _USERINFO.sub(r"\1", text))
        secrets = [self._token or ""]
        for flag, value in zip(self.flags, self.flags[1:], strict=False):
            if re.search(r"(?i)pass|secret|token|key", flag):
                secrets.append(value)
        for flag in self.flags:
            name, equals, value = flag.partition("=")
            if equals and re.search(r"(?i)pass|secret|token|key", name):
                secrets.append(value)
        for secret in secrets:
            if len(secret) >= 3:
                text = text.replace(secret, "***")
        return text

    # -- errors -----------------------------------------------------------------------

    def _transient(self, exc: BaseException) -> float | None:
        """Retry classifier: 0.0 to run the command again, None for a final failure."""
        if not isinstance(exc, _Failed):
            return None  # a stopped rclone (it already waited far too long) or a local error
        text = exc.summary
        if exc.code in _FINAL or _AUTH.search(text) or _PERMANENT.search(text) or _TIMEOUT.search(text):
            return None
        if exc.code == _TEMPORARY or _TRANSIENT.search(text):
            return 0.0
        return None

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, _Failed) and _AUTH.search(exc.summary):
            return self._scrub(f"authentication failed: {exc}")
        if isinstance(exc, _Failed | _Hung):
            return self._scrub(str(exc))
        if isinstance(exc, OSError):
            return f"local error: {exc.strerror or exc}"
        return self._scrub(f"{type(exc).__name__}: {exc}")

    def _call(self, what: str, operation: Callable[[], T],
              transient: Callable[[BaseException], float | None] | None = None) -> T:
        return self.retry.call(self.name, what, operation, transient or self._transient, self._describe)

    def _missing_or(self, operation: Callable[[], T], digest: str) -> T:
        """Run ``operation``; rclone's "not found" exit codes become ObjectMissing."""
        try:
            return operation()
        except _Failed as exc:
            if exc.code in _NOT_FOUND:
                raise ObjectMissing(self.name, f"no such object: {digest}") from None
            raise

    # -- the contract -----------------------------------------------------------------

    def upload(self, source: Path, name: str, digest: str) -> str:
        """``rclone copyto --size-only FILE REMOTE:path/ab/cd/<sha256>`` (streamed by rclone)."""
        check_digest(self, digest)
        try:
            # The real path: rclone skips symbolic links; absolute, so never read as REMOTE:path.
            real = os.path.realpath(source)
            size = os.stat(real).st_size
        except OSError as exc:
            raise unreadable(self, source, exc) from exc
        command = self._command("copyto", "--size-only", real, self._target(digest))
        self._call("cannot upload", lambda: self._run(command, self.patience(size)))
        return self._locator(digest)

    def download(self, locator: str, out: Sink) -> None:
        """``rclone cat REMOTE:path/ab/cd/<sha256>``, copied to ``out`` chunk by chunk."""
        digest = self._digest_of(locator)
        command = self._command("cat", self._target(digest))
        counting = _Counting(out)

        def transient(exc: BaseException) -> float | None:
            return None if counting.count else self._transient(exc)  # bytes went out: no rerun

        self._call("cannot download",
                   lambda: self._missing_or(lambda: self._run(command, self.patience(), counting), digest),
                   transient)

    def delete(self, locator: str) -> None:
        """``rclone deletefile``; an object already gone is not an error."""
        digest = self._digest_of(locator)
        command = self._command("deletefile", self._target(digest))
        try:
            self._call("cannot delete",
                       lambda: self._missing_or(lambda: self._run(command, self.patience()), digest))
        except ObjectMissing:
            return
        except HostError as failure:
            # rclone says "is a directory or doesn't exist" (exit code 1) for an object
            # already gone: ask the remote rather than read rclone's wording.
            try:
                self.check(locator)
            except ObjectMissing:
                return
            except HostError:
                pass
            raise failure from None

    def check(self, locator: str) -> int | None:
        """The object's size from ``rclone lsjson`` (None when the remote cannot tell)."""
        digest = self._digest_of(locator)
        command = self._command("lsjson", "--files-only", "--no-modtime", "--no-mimetype",
                                self._target(digest))

        def listing() -> bytes:
            sink = _Capped(LISTING_LIMIT)
            self._missing_or(lambda: self._run(command, self.patience(), sink), digest)
            return bytes(sink.data)

        text = self._call("cannot check", listing)
        try:
            entries = json.loads(text)
        except ValueError:
            raise HostError(self.name, "cannot check: rclone lsjson printed no JSON") from None
        if isinstance(entries, list):
            for entry in entries:
                if isinstance(entry, dict) and entry.get("Name") == digest and not entry.get("IsDir"):
                    size = entry.get("Size")
                    return size if isinstance(size, int) and size >= 0 else None
        raise ObjectMissing(self.name, f"no such object: {digest}")


def _pump(stdout: IO[bytes], sink: Sink, patience: float) -> None:
    """Copy ``stdout`` (a raw pipe) to ``sink`` until its end, one reused buffer at a time;
    raises _Hung when no byte comes for ``patience`` seconds."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        while True:
            if not selector.select(patience):
                raise _Hung(patience)
            count = stdout.readinto(view)  # type: ignore[attr-defined]
            if not count:
                return
            sink.write(view[:count])



def _attempts(value: Any) -> int:
    if isinstance(value, bool) or int(value) < 1:
        raise ValueError("not a count of attempts")
    return int(value)


def _flags(value: Any) -> list[str]:
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list | tuple) and all(isinstance(flag, str) for flag in value):
        return list(value)
    raise ValueError("not a list of strings")


#: Options this kind understands.
OPTIONS = (
    Option("config", file_path, None, "the rclone.conf to use (default: rclone's own)"),
    Option("rclone", str, "rclone", "the rclone command"),
    Option("timeout", seconds, DEFAULT_TIMEOUT, "seconds rclone may wait on the remote"),
    Option("low_level_retries", _attempts, None, "rclone's --low-level-retries"),
    Option("flags", _flags, (), "more rclone flags: a list, or one string split as a shell does"),
    *RETRY_OPTIONS,
)


def from_spec(spec: HostSpec) -> Host:
    """``rclone://REMOTE:path``: a folder on an rclone remote."""
    remote, path = parse_target(spec.url)
    options = read_options(spec.options, OPTIONS, "rclone")
    return RcloneHost(remote, path, name=spec.name, config=options["config"], rclone=options["rclone"],
                      timeout=options["timeout"], retry=RetryPolicy.from_options(options),
                      low_level_retries=options["low_level_retries"], flags=options["flags"],
                      token=spec.token)
