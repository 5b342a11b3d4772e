"""``s3://bucket/prefix``: objects in an S3 bucket (AWS, or any S3-compatible store), with boto3.

Objects are stored by content under ``prefix/ab/cd/<sha256>``.  An upload
first asks for the object's size (HEAD) and sends nothing when an object of
the same size is there; otherwise boto3's ``upload_file`` sends the file from
disk, in parts (multipart upload, :data:`UPLOAD_THREADS` at a time) when it is
large, never holding it whole in memory.  A download goes through
``download_fileobj`` into ``out``, on one thread, part after part, so the
bytes reach ``out`` in order and memory stays flat; when an attempt breaks
off, the next one skips the bytes ``out`` already has rather than writing
them twice.

The locator is ``s3://bucket/prefix/ab/cd/<sha256>``, with no endpoint and no
secret; only its last three parts are used when fetching (always from this
host's own bucket and prefix), and anything else is refused.

Credentials, first found wins: the ``access_key_id`` option with the
configuration's ``token`` or the ``secret_access_key`` option as its secret;
the ``profile`` option (a profile of the AWS configuration files); else
boto3's own chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, the
``AWS_PROFILE``, the configuration files, instance metadata...).  Keys never
appear in :meth:`S3Host.url`, locators or error messages.

Retries: botocore's own retries are turned off (one attempt per request) and
every operation is wrapped in a :class:`~.retry.RetryPolicy` instead, so all
host kinds share one ``retries``/``retry_delay`` setting, one backoff, one
way of honouring ``Retry-After``, and error messages that say how many
attempts were made.  The price: a transient failure in one part of a large
multipart upload sends the whole file again (the failed multipart upload is
aborted by boto3).  Throttling (``SlowDown``, 429, 503), other 5xx answers
and connection errors or timeouts are transient; a missing bucket, denied
access, a wrong key or signature, or any other 4xx is final.

Options (URL query or the host's ``config`` table): ``endpoint_url`` (an
S3-compatible store, e.g. ``http://127.0.0.1:9000``), ``region``,
``access_key_id``, ``secret_access_key``, ``profile``, ``addressing_style``
(``auto``, ``path`` or ``virtual``), ``timeout`` (seconds to connect and
between reads, default 30), ``retries`` and ``retry_delay``.

The default ``name`` is ``s3:BUCKET/PREFIX``, preceded by the endpoint's
host and port when ``endpoint_url`` is set (``s3:minio.lan:9000/BUCKET/PREFIX``):
the same on every node that uses that bucket.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote, unquote, urlsplit

import boto3
import boto3.exceptions
import botocore.exceptions
import s3transfer.exceptions
import urllib3.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from ..errors import HostError, ObjectMissing
from ..layout import sharded
from ..retry import RetryPolicy, retry_after
from ..streams import Sink
from .base import Checker, Deleter, Host
from .kit import Sharded, upload_size
from .registry import RETRY_OPTIONS, HostSpec, Option, read_options, seconds

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

T = TypeVar("T")

#: Default seconds to connect and between two reads.
DEFAULT_TIMEOUT = 30.0
#: Parts of a multipart upload sent at once.
UPLOAD_THREADS = 4
#: Options this kind understands.
OPTIONS = (
    Option("endpoint_url", str, None, "an S3-compatible store, e.g. http://127.0.0.1:9000"),
    Option("region", str, None, "the bucket's region"),
    Option("access_key_id", str, None, "the access key (its secret: the token, or secret_access_key)"),
    Option("secret_access_key", str, None, "the access key's secret, when no token is given"),
    Option("profile", str, None, "a profile of the AWS configuration files"),
    Option("addressing_style", str, None, "auto, path or virtual"),
    Option("timeout", seconds, DEFAULT_TIMEOUT, "seconds to connect, and between two reads"),
    *RETRY_OPTIONS,
)

_STYLES: dict[str, Literal["auto", "path", "virtual"]] = {"auto": "auto", "path": "path",
                                                          "virtual": "virtual"}
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_AUTH = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                   "TokenRefreshRequired", "AuthorizationHeaderMalformed", "InvalidSecurity",
                   "MissingSecurityHeader", "RequestExpired", "UnrecognizedClientException"})
_DENIED = frozenset({"AccessDenied", "403", "AllAccessDisabled", "AccountProblem"})
_THROTTLED = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                        "TooManyRequests", "TooManyRequestsException", "RequestThrottled",
                        "ServiceUnavailable", "InternalError", "RequestTimeout", "OperationAborted"})
#: Failures of the connection itself: worth another try.
_NETWORK = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError,
            botocore.exceptions.IncompleteReadError, urllib3.exceptions.HTTPError, socket.timeout,
            ConnectionError, s3transfer.exceptions.RetriesExceededError,
            boto3.exceptions.RetriesExceededError)


def _client_error(exc: BaseException) -> botocore.exceptions.ClientError | None:
    """The ClientError behind ``exc`` (boto3 wraps some in S3UploadFailedError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, botocore.exceptions.ClientError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _answer(error: botocore.exceptions.ClientError) -> tuple[str, int, str, float]:
    """(code, HTTP status, message, Retry-After seconds) of a ClientError."""
    response: Mapping[str, Any] = error.response
    details = response.get("Error") or {}
    meta = response.get("ResponseMetadata") or {}
    status = int(meta.get("HTTPStatusCode") or 0)
    code = str(details.get("Code") or status)
    headers = {str(k).lower(): str(v) for k, v in (meta.get("HTTPHeaders") or {}).items()}
    return code, status, str(details.get("Message") or ""), retry_after(headers.get("retry-after"))




class _Resume:
    """Writes to ``out``, dropping the first ``skip`` bytes (an earlier attempt wrote them)."""

    def __init__(self, out: Sink, skip: int):
        self.out = out
        self.skip = skip
        self.position = 0

    def write(self, data: bytes, /) -> int:
        """Pass on what ``out`` does not have yet."""
        size = len(data)
        if self.position + size > self.skip:
            self.out.write(data[max(0, self.skip - self.position):])
        self.position += size
        return size


class S3Host(Sharded, Deleter, Checker):
    """A bucket (and a prefix in it) on S3 or an S3-compatible store."""

    scheme = "s3"
    kind = "S3"
    locator_schemes = frozenset({"s3"})

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, access_key_id: str | None = None,
                 secret_access_key: str | None = None, profile: str | None = None,
                 addressing_style: str | None = None, name: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, retry: RetryPolicy | None = None):
        if not _BUCKET.fullmatch(bucket):
            raise ValueError(f"not an S3 bucket name: {bucket[:100]!r}")
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("give both access_key_id and its secret (secret_access_key or token), "
                             "or neither")
        if addressing_style not in (None, *_STYLES):
            raise ValueError("addressing_style must be auto, path or virtual")
        if not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        endpoint_netloc = ""
        if endpoint_url:
            endpoint = urlsplit(endpoint_url)
            if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
                raise ValueError("endpoint_url must be an http:// or https:// URL")
            endpoint_netloc = endpoint.netloc.rpartition("@")[2]
            endpoint_url = endpoint._replace(netloc=endpoint_netloc).geturl()
        self.bucket = bucket
        self.prefix = "/".join(part for part in prefix.split("/") if part)
        self.endpoint_url = endpoint_url or None
        self.region = region
        self.timeout = float(timeout)
        self.retry = retry or RetryPolicy()
        where = f"{endpoint_netloc}/" if endpoint_netloc else ""
        super().__init__(name or f"s3:{where}{bucket}{'/' if self.prefix else ''}{self.prefix}")
        self._secrets = tuple(s for s in (access_key_id, secret_access_key) if s)
        try:
            session = boto3.session.Session(aws_access_key_id=access_key_id,
                                            aws_secret_access_key=secret_access_key,
                                            region_name=region, profile_name=profile)
        except botocore.exceptions.ProfileNotFound:
            raise ValueError(f"no AWS profile named {profile!r}") from None
        config = Config(connect_timeout=self.timeout, read_timeout=self.timeout,
                        retries={"total_max_attempts": 1, "mode": "standard"},
                        s3={"addressing_style": _STYLES[addressing_style or "auto"]},
                        max_pool_connections=2 * UPLOAD_THREADS + 8)
        self._client: S3Client = session.client("s3", endpoint_url=self.endpoint_url, config=config)
        self._upload_config = TransferConfig(max_concurrency=UPLOAD_THREADS, num_download_attempts=1)
        self._download_config = TransferConfig(use_threads=False, num_download_attempts=1)

    # -- naming -----------------------------------------------------------------------

    def url(self) -> str:
        """``s3://bucket/prefix``, with the endpoint and region when set; never a key."""
        options = []
        if self.endpoint_url:
            options.append(f"endpoint_url={quote(self.endpoint_url, safe=':/')}")
        if self.region:
            options.append(f"region={quote(self.region)}")
        query = f"?{'&'.join(options)}" if options else ""
        return f"s3://{self.bucket}/{quote(self.prefix)}{query}"

    def _key(self, digest: str) -> str:
        tail = sharded(digest)
        return f"{self.prefix}/{tail}" if self.prefix else tail

    def _locator(self, digest: str) -> str:
        return f"s3://{self.bucket}/{quote(self._key(digest))}"

    # -- errors -----------------------------------------------------------------------

    def _transient(self, exc: BaseException) -> float | None:
        """Retry classifier: None for a permanent failure, else the delay asked for."""
        error = _client_error(exc)
        if error is not None:
            code, status, _, asked = _answer(error)
            if code in _THROTTLED or status == 429 or (status >= 500 and status not in (501, 505)):
                return asked
            return None
        if isinstance(exc, botocore.exceptions.SSLError):
            return None  # a certificate that does not verify will not verify next time
        if isinstance(exc, _NETWORK):
            return 0.0
        return None

    def _describe(self, exc: BaseException) -> str:
        """A message for an error, without any key."""
        error = _client_error(exc)
        if error is not None:
            code, status, message, _ = _answer(error)
            named = f"{code}, " if code != str(status) else ""  # HEAD answers carry no code
            if code == "NoSuchBucket":
                text = f"no such bucket: {self.bucket}"
            elif code in _AUTH:
                text = f"authentication failed ({named}HTTP {status})"
            elif code in _DENIED:
                text = f"access denied ({named}HTTP {status})"
            elif named:
                text = f"{code} (HTTP {status}){': ' + message[:200] if message else ''}"
            else:
                text = f"HTTP {status}{': ' + message[:200] if message else ''}"
        elif isinstance(exc, (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectTimeoutError,
                              socket.timeout)):
            text = f"no answer within {self.timeout:g} s ({type(exc).__name__})"
        elif isinstance(exc, botocore.exceptions.EndpointConnectionError):
            reason = str(exc.kwargs.get("error", exc)).rpartition("): ")[2]  # drop urllib3's repr
            text = f"cannot connect to {self.endpoint_url or 'S3'}: {reason}"
        elif isinstance(exc, (botocore.exceptions.NoCredentialsError,
                              botocore.exceptions.PartialCredentialsError)):
            text = (f"no AWS credentials ({exc}): set access_key_id and a secret, a profile, "
                    "or AWS_* variables")
        elif isinstance(exc, (s3transfer.exceptions.RetriesExceededError,
                              boto3.exceptions.RetriesExceededError)):
            last = getattr(exc, "last_exception", None)
            text = f"transfer broke off: {type(last).__name__}: {last}"
        elif isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
            text = f"local file error: {exc.strerror or exc}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _call(self, what: str, operation: Callable[[], T]) -> T:
        return self.retry.call(self.name, what, operation, self._transient, self._describe)

    def _missing(self, digest: str, error: botocore.exceptions.ClientError) -> HostError:
        """The error for a 404: ObjectMissing, unless the bucket is what is missing
        (HEAD answers carry no error code, so the bucket is asked)."""
        code = _answer(error)[0]
        if code == "NoSuchBucket":
            return HostError(self.name, f"no such bucket: {self.bucket}")
        if code != "NoSuchKey":
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except botocore.exceptions.ClientError as bucket_error:
                if _answer(bucket_error)[1] == 404:
                    return HostError(self.name, f"no such bucket: {self.bucket}")
            except Exception:  # only a hint: the object is missing either way
                pass
        return ObjectMissing(self.name, f"no such object: {digest}")

    def _size(self, digest: str) -> int | None:
        """The object's size, None when there is no such object."""
        try:
            answer = self._client.head_object(Bucket=self.bucket, Key=self._key(digest))
        except botocore.exceptions.ClientError as error:
            if _answer(error)[0] in _MISSING:
                return None
            raise
        return int(answer["ContentLength"])

    # -- the contract -----------------------------------------------------------------

    def upload(self, source: Path, name: str, digest: str) -> str:
        """Send the file with ``upload_file`` (multipart when large), unless an object
        of the same size is there already."""
        size = upload_size(self, source, digest)

        def attempt() -> None:
            if self._size(digest) == size:
                return
            self._client.upload_file(str(source), self.bucket, self._key(digest), Config=self._upload_config)

        self._call("upload", attempt)
        return self._locator(digest)

    def download(self, locator: str, out: Sink) -> None:
        """Stream the object to ``out`` with ``download_fileobj``."""
        digest = self._digest_of(locator)
        delivered = 0

        def attempt() -> None:
            nonlocal delivered
            writer = _Resume(out, delivered)
            try:
                self._client.download_fileobj(self.bucket, self._key(digest), writer,  # type: ignore[arg-type]
                                              Config=self._download_config)
            except botocore.exceptions.ClientError as error:
                if _answer(error)[1] == 404:
                    raise self._missing(digest, error) from None
                raise
            finally:
                delivered = max(delivered, writer.position)

        self._call("download", attempt)

    def delete(self, locator: str) -> None:
        """Remove the object (S3 says yes for an object already gone, too)."""
        key = self._key(self._digest_of(locator))
        self._call("delete", lambda: self._client.delete_object(Bucket=self.bucket, Key=key))

    def check(self, locator: str) -> int | None:
        """The object's size, from a HEAD request."""
        digest = self._digest_of(locator)

        def attempt() -> int:
            try:
                answer = self._client.head_object(Bucket=self.bucket, Key=self._key(digest))
            except botocore.exceptions.ClientError as error:
                if _answer(error)[1] == 404:
                    raise self._missing(digest, error) from None
                raise
            return int(answer["ContentLength"])

        return self._call("check", attempt)

    def close(self) -> None:
        """Close the connections to the store."""
        self._client.close()


def from_spec(spec: HostSpec) -> Host:
    """``s3://bucket/prefix``: a bucket on S3 or an S3-compatible store."""
    options = read_options(spec.options, OPTIONS, "S3")
    parts = spec.parts
    if "@" in parts.netloc:
        raise ValueError("an S3 URL carries no keys: give them as access_key_id and token "
                         "(or secret_access_key) in the host's configuration")
    if not parts.netloc:
        raise ValueError("an S3 host is written s3://bucket/prefix")
    secret = spec.token if spec.token is not None else options["secret_access_key"]
    return S3Host(unquote(parts.netloc), spec.path, endpoint_url=options["endpoint_url"],
                  region=options["region"], access_key_id=options["access_key_id"],
                  secret_access_key=str(secret) if secret else None, profile=options["profile"],
                  addressing_style=options["addressing_style"], name=spec.name, timeout=options["timeout"],
                  retry=RetryPolicy.from_options(options))
