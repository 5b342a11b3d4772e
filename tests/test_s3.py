"""The s3:// host kind against a real (moto) S3 server on 127.0.0.1."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cloudmanager import CloudManager
from cloudmanager.errors import HostError, ObjectMissing
from cloudmanager.hosts import Host, make_host
from cloudmanager.hosts.s3 import S3Host
from cloudmanager.retry import RetryPolicy
from cloudmanager.testing import HostConformance, assert_refuses_locators, get_bytes, put_bytes, sha256_hex
from tests.servers.s3 import S3Server
from tests.servers.webdav import Relay
from tests.test_planted import check_a_planted_locator_on

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

QUICK = RetryPolicy(retries=2, base_delay=0.0)
KEY_ID, SECRET = "AKIACMTEST0123456789", "s3cr3t/Key+with=odd~chars"


def _error(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>1</RequestId></Error>").encode()





@pytest.fixture(autouse=True)
def _aws(s3_server: S3Server) -> None:
    """Every test here runs with the session's AWS environment (no real AWS reachable)."""


@pytest.fixture
def hosts() -> Iterator[Callable[..., S3Host]]:
    """Make S3 hosts (arguments of S3Host); all are closed after the test."""
    made: list[S3Host] = []

    def make(bucket: str, prefix: str = "", **kwargs: object) -> S3Host:
        kwargs.setdefault("retry", QUICK)
        made.append(S3Host(bucket, prefix, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for host in made:
        host.close()


class TestS3(HostConformance):
    @pytest.fixture
    def host(self, s3_server: S3Server, s3_bucket: str, hosts: Callable[..., S3Host]) -> Host:
        return hosts(s3_bucket, f"vault/{secrets.token_hex(4)}", endpoint_url=s3_server.endpoint_url)

    @pytest.fixture
    def broken_hosts(self, s3_server: S3Server, dead_port: int,
                     hosts: Callable[..., S3Host]) -> list[Host]:
        return [
            hosts("cm-test-refused", endpoint_url=f"http://127.0.0.1:{dead_port}", name="refused"),
            hosts(f"cm-missing-{secrets.token_hex(6)}", endpoint_url=s3_server.endpoint_url, name="missing"),
        ]


# -- URLs, names, options --------------------------------------------------------------


def test_url_parsing_and_default_name() -> None:
    host = make_host("s3://my-bucket/some/prefix/?region=eu-west-1&timeout=5&retries=1")
    assert isinstance(host, S3Host)
    try:
        assert (host.bucket, host.prefix, host.region, host.timeout) == ("my-bucket", "some/prefix",
                                                                         "eu-west-1", 5.0)
        assert host.retry.retries == 1
        assert host.name == "s3:my-bucket/some/prefix"
        assert host.url() == "s3://my-bucket/some/prefix?region=eu-west-1"
    finally:
        host.close()
    compatible = make_host("s3://Legacy_Bucket?endpoint_url=http://minio.lan:9000&addressing_style=path")
    named = make_host("s3://my-bucket/x?name=archive")
    try:
        assert compatible.name == "s3:minio.lan:9000/Legacy_Bucket"
        assert compatible.url() == "s3://Legacy_Bucket/?endpoint_url=http://minio.lan:9000"
        assert named.name == "archive"
    finally:
        compatible.close()
        named.close()


@pytest.mark.parametrize(("url", "problem"), [
    ("s3://my-bucket/x?colour=red", "unknown S3 option 'colour'"),
    ("s3://my-bucket/x?timeout=soon", "timeout must be a number"),
    ("s3://my-bucket/x?retries=many", "retries must be an integer"),
    ("s3://my-bucket/x?access_key_id=AKIAONLY", "give both access_key_id"),
    (f"s3://{KEY_ID}:{SECRET.replace('/', '%2F')}@my-bucket/x", "carries no keys"),
    ("s3://my-bucket/x?addressing_style=sideways", "addressing_style"),
    ("s3://my-bucket/x?endpoint_url=ftp://minio.lan", "endpoint_url"),
    ("s3://my-bucket/x?profile=no-such-profile", "no AWS profile"),
    ("s3://a/x", "not an S3 bucket name"),
    ("s3:///x", "s3://bucket/prefix"),
])
def test_bad_urls_are_refused_without_showing_secrets(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        make_host(url)
    assert SECRET not in str(caught.value) and KEY_ID not in str(caught.value)


def test_keys_from_options_and_token_are_used(s3_server: S3Server, s3_bucket: str,
                                              relay: Callable[[int], Relay], tmp_path: Path) -> None:
    front = relay(s3_server.port)
    host = make_host(f"s3://{s3_bucket}/p?endpoint_url=http://127.0.0.1:{front.port}&access_key_id={KEY_ID}",
                     token=SECRET)
    try:
        _, locator = put_bytes(host, tmp_path, b"signed")
        assert get_bytes(host, locator) == b"signed"
    finally:
        host.close()
    signatures = [headers.get("Authorization", "") for headers in front.headers]
    assert signatures and all(f"Credential={KEY_ID}/" in signature for signature in signatures)
    # Without keys of its own, the host uses boto3's chain (the session's AWS_* variables).
    plain = make_host(f"s3://{s3_bucket}/p?endpoint_url=http://127.0.0.1:{front.port}")
    try:
        front.headers.clear()
        put_bytes(plain, tmp_path, b"chained")
    finally:
        plain.close()
    assert all("Credential=testing-key-id/" in h.get("Authorization", "") for h in front.headers)


# -- secrets -----------------------------------------------------------------------------


def test_no_secret_in_url_locators_errors_or_dumps(s3_server: S3Server, s3_bucket: str, dead_port: int,
                                                    relay: Callable[[int], Relay], tmp_path: Path) -> None:
    front = relay(s3_server.port)
    keys = f"access_key_id={KEY_ID}&secret_access_key={SECRET.replace('+', '%2B').replace('/', '%2F')}"
    good = f"s3://{s3_bucket}/p?name=good&endpoint_url={s3_server.endpoint_url}&{keys}"
    refused = f"s3://{s3_bucket}/p?name=refused&endpoint_url=http://127.0.0.1:{dead_port}&retries=0&{keys}"
    missing = f"s3://cm-missing-{secrets.token_hex(4)}/p?name=missing&endpoint_url={s3_server.endpoint_url}&{keys}"
    denied = f"s3://{s3_bucket}/p?name=denied&endpoint_url=http://127.0.0.1:{front.port}&{keys}"
    front.fail_next(403, body=_error("InvalidAccessKeyId", f"The key {KEY_ID} does not exist"), times=9)
    shown: list[str] = []
    with CloudManager(tmp_path / "catalog.sqlite3", tmp_path / "cache", 1 << 20,
                      hosts=[good, refused, missing, denied]) as cm:
        source = tmp_path / "ledger.txt"
        source.write_bytes(b"the books")
        digest = cm.upload(source)
        assert digest == sha256_hex(b"the books")
        dump = cm.data_dump()
        shown.extend([dump, repr(cm.info(digest)), repr(cm.stats())])
        health = cm.catalog.host_health(["good", "refused", "missing", "denied"])
        errors = {name: str(health[name].last_error) for name in health}
        shown.extend(errors.values())
        for host in cm.hosts:
            shown.extend([host.url(), repr(host), host.name])
            for action in (host.check, host.delete):  # type: ignore[attr-defined]
                try:
                    action(f"s3://x/ab/cd/abcd{'0' * 60}")
                except HostError as exc:
                    shown.append(str(exc))  # (its __cause__ is boto3's, with the server's own words)
                    errors[f"{host.name} {action.__name__}"] = str(exc)
    assert f"s3://{s3_bucket}/p/" in dump
    assert "cannot connect" in errors["refused"] and "no such bucket" in errors["missing"]
    assert "access denied (HTTP 403)" in errors["denied"]  # a HEAD: no body, so no code
    assert "authentication failed (InvalidAccessKeyId" in errors["denied delete"]
    for text in shown:
        for secret in (SECRET, KEY_ID, SECRET.replace("/", "%2F")):
            assert secret not in text, f"a key shows in {text[:300]!r}"


# -- retries -----------------------------------------------------------------------------


def test_throttling_is_retried_honouring_retry_after(s3_server: S3Server, s3_bucket: str,
                                                     relay: Callable[[int], Relay],
                                                     hosts: Callable[..., S3Host], tmp_path: Path) -> None:
    front = relay(s3_server.port)
    host = hosts(s3_bucket, "p", endpoint_url=f"http://127.0.0.1:{front.port}")
    front.fail_next(503, {"Retry-After": "1"})
    started = time.monotonic()
    _, locator = put_bytes(host, tmp_path, b"patience")
    assert time.monotonic() - started >= 0.9, "the Retry-After of the 503 was not honoured"
    assert front.seen[0][0] == "HEAD" and front.seen[0][2] == 503
    assert [method for method, _, _ in front.seen].count("PUT") == 1
    front.fail_next(500)
    front.fail_next(503, body=_error("SlowDown", "Please reduce your request rate."))
    assert get_bytes(host, locator) == b"patience"
    front.fail_next(429, {"Retry-After": "0"})
    host.delete(locator)
    with pytest.raises(ObjectMissing):
        host.check(locator)


def test_a_failure_that_lasts_gives_up_saying_how_often(s3_server: S3Server, s3_bucket: str,
                                                        relay: Callable[[int], Relay],
                                                        hosts: Callable[..., S3Host], tmp_path: Path) -> None:
    front = relay(s3_server.port)
    host = hosts(s3_bucket, "p", endpoint_url=f"http://127.0.0.1:{front.port}",
                 retry=RetryPolicy(retries=2, base_delay=0.0))
    front.fail_next(500, times=3)
    with pytest.raises(HostError, match=r"upload: HTTP 500: Internal Server Error \(after 3 attempts"):
        put_bytes(host, tmp_path, b"never")
    assert len(front.seen) == 3
    front.fail_next(500, body=_error("InternalError", "We encountered an internal error."), times=3)
    with pytest.raises(HostError, match=r"delete: InternalError \(HTTP 500\): We encount.*after 3 attempts"):
        host.delete(f"s3://{s3_bucket}/p/ab/cd/abcd{'0' * 60}")


@pytest.mark.parametrize(("status", "code", "expected"), [
    (403, "InvalidAccessKeyId", "authentication failed (InvalidAccessKeyId"),
    (403, "SignatureDoesNotMatch", "authentication failed (SignatureDoesNotMatch"),
    (403, "AccessDenied", "access denied (AccessDenied"),
    (404, "NoSuchBucket", "no such bucket"),
])
def test_final_answers_are_not_retried(s3_server: S3Server, s3_bucket: str, relay: Callable[[int], Relay],
                                       hosts: Callable[..., S3Host], tmp_path: Path,
                                       status: int, code: str, expected: str) -> None:
    front = relay(s3_server.port)
    host = hosts(s3_bucket, "p", endpoint_url=f"http://127.0.0.1:{front.port}",
                 retry=RetryPolicy(retries=5, base_delay=0.0))
    front.fail_next(status, body=_error(code, "no"))
    with pytest.raises(HostError) as caught:
        host.delete(f"s3://{s3_bucket}/p/ab/cd/abcd{'0' * 60}")
    assert expected in str(caught.value) and caught.value.host == host.name
    assert not isinstance(caught.value, ObjectMissing)
    assert len(front.seen) == 1, front.seen
    # A HEAD answer has no body: a bare 403 is "access denied", still final.
    front.fail_next(403)
    with pytest.raises(HostError, match="access denied"):
        put_bytes(host, tmp_path, b"x")
    assert len(front.seen) == 2


def test_a_missing_bucket_is_a_host_error_not_a_missing_object(s3_server: S3Server,
                                                               hosts: Callable[..., S3Host],
                                                               tmp_path: Path) -> None:
    host = hosts(f"cm-missing-{secrets.token_hex(4)}", "p", endpoint_url=s3_server.endpoint_url,
                 retry=RetryPolicy(retries=5, base_delay=0.5))
    locator = f"s3://{host.bucket}/p/ab/cd/abcd{'0' * 60}"
    started = time.monotonic()
    for action in (lambda: put_bytes(host, tmp_path, b"x"), lambda: host.check(locator),
                   lambda: get_bytes(host, locator), lambda: host.delete(locator)):
        with pytest.raises(HostError, match="no such bucket") as caught:
            action()
        assert not isinstance(caught.value, ObjectMissing)
    assert time.monotonic() - started < 2, "a missing bucket was retried"


def test_refused_connections_are_retried_then_reported(
        dead_port: int, hosts: Callable[..., S3Host], tmp_path: Path) -> None:
    host = hosts("cm-test-refused", endpoint_url=f"http://127.0.0.1:{dead_port}")
    with pytest.raises(HostError, match=r"cannot connect to http://127\.0\.0\.1.*after 3 attempts"):
        put_bytes(host, tmp_path, b"nowhere")


def test_a_store_that_never_answers_times_out(hosts: Callable[..., S3Host], tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete, and nobody ever reads or answers
        host = hosts("cm-test-silent", endpoint_url=f"http://127.0.0.1:{silent.getsockname()[1]}",
                     timeout=0.3, retry=RetryPolicy(retries=1, base_delay=0.0))
        started = time.monotonic()
        with pytest.raises(HostError, match=r"no answer within 0\.3 s.*after 2 attempts"):
            put_bytes(host, tmp_path, b"hello?")
        assert time.monotonic() - started < 5


def test_a_download_that_breaks_off_is_not_written_twice(
        s3_server: S3Server, s3_bucket: str, relay: Callable[[int], Relay], hosts: Callable[..., S3Host],
        tmp_path: Path) -> None:
    front = relay(s3_server.port)
    host = hosts(s3_bucket, "p", endpoint_url=f"http://127.0.0.1:{front.port}")
    data = secrets.token_bytes(3 << 20)
    _, locator = put_bytes(host, tmp_path, data)
    front.seen.clear()
    front.cut_next(0)  # the HEAD that download_fileobj starts with has no body to cut...
    front.cut_next(1 << 20)  # ... and the GET breaks off after 1 MiB, written out already
    # Exactly the stored bytes: had the retry written the first MiB again, they would differ.
    # (The relay's request log is written by its own thread, so its order is not asserted.)
    assert get_bytes(host, locator) == data


# -- layout and locators -------------------------------------------------------------------


def test_layout_and_skipped_uploads(s3_server: S3Server, s3_bucket: str, s3_client: S3Client,
                                    relay: Callable[[int], Relay], hosts: Callable[..., S3Host],
                                    tmp_path: Path) -> None:
    front = relay(s3_server.port)
    host = hosts(s3_bucket, "/deep//prefix/", endpoint_url=f"http://127.0.0.1:{front.port}")
    digest, locator = put_bytes(host, tmp_path, b"layout")
    key = f"deep/prefix/{digest[:2]}/{digest[2:4]}/{digest}"
    assert locator == f"s3://{s3_bucket}/{key}"
    assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == b"layout"
    assert host.check(locator) == 6
    front.seen.clear()
    assert put_bytes(host, tmp_path, b"layout", name="again")[1] == locator
    assert [method for method, _, _ in front.seen] == ["HEAD"]
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"lay")  # a different size: replaced
    put_bytes(host, tmp_path, b"layout")
    assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == b"layout"


def test_a_large_file_goes_up_in_parts(s3_server: S3Server, s3_bucket: str, s3_client: S3Client,
                                       hosts: Callable[..., S3Host], tmp_path: Path) -> None:
    host = hosts(s3_bucket, "big", endpoint_url=s3_server.endpoint_url)
    data = os.urandom(20 << 20)
    digest, locator = put_bytes(host, tmp_path, data)
    etag = s3_client.head_object(Bucket=s3_bucket, Key=f"big/{digest[:2]}/{digest[2:4]}/{digest}")["ETag"]
    assert etag.strip('"').endswith("-3"), etag  # 8 MiB parts: a multipart upload of 3
    assert get_bytes(host, locator) == data


def test_locators_outside_the_prefix_are_refused(s3_server: S3Server, s3_bucket: str, s3_client: S3Client,
                                                 hosts: Callable[..., S3Host], tmp_path: Path) -> None:
    host = hosts(s3_bucket, "vault", endpoint_url=s3_server.endpoint_url)
    digest, locator = put_bytes(host, tmp_path, b"inside")
    s3_client.put_object(Bucket=s3_bucket, Key="secret.txt", Body=b"outside the prefix")
    tail = f"{digest[:2]}/{digest[2:4]}/{digest}"
    hostile = [
        f"s3://{s3_bucket}/secret.txt",
        f"s3://{s3_bucket}/vault/../secret.txt",
        f"s3://{s3_bucket}/vault/ab/cd/../../../secret.txt",
        f"s3://{s3_bucket}/vault/{tail}/../../../../secret.txt",
        f"s3://{s3_bucket}/vault/{tail}%2F..%2F..%2Fsecret.txt",
        f"s3://{s3_bucket}/vault/{tail}?versionId=1",
        f"http://127.0.0.1:{s3_server.port}/{s3_bucket}/secret.txt",
        "file:///etc/passwd",
        f"s3://{s3_bucket}/vault/zz/zz/zzzz{'0' * 60}",
        "",
    ]
    assert_refuses_locators(host, hostile)
    assert s3_client.get_object(Bucket=s3_bucket, Key="secret.txt")["Body"].read() == b"outside the prefix"
    # Only the ab/cd/<hash> tail is trusted: this host's own bucket and prefix are read.
    assert get_bytes(host, f"s3://another-bucket/elsewhere/{tail}") == b"inside"
    assert get_bytes(host, locator) == b"inside"


def test_a_planted_locator_deletes_nothing_of_another_file(s3_server: S3Server, s3_bucket: str,
                                                         hosts: Callable[..., S3Host],
                                                         tmp_path: Path) -> None:
    check_a_planted_locator_on(hosts(s3_bucket, "vault", endpoint_url=s3_server.endpoint_url), tmp_path)
