"""The webdav:// host kind against a real WsgiDAV server on 127.0.0.1."""

from __future__ import annotations

import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from cloudmanager import CloudManager
from cloudmanager.errors import HostError
from cloudmanager.hosts import Host, make_host
from cloudmanager.hosts.webdav import CHUNK, WebdavHost, _verify
from cloudmanager.retry import RetryPolicy
from cloudmanager.testing import HostConformance, assert_refuses_locators, get_bytes, put_bytes, sha256_hex
from tests.servers.webdav import Relay, WebdavServer
from tests.test_planted import check_a_planted_locator_on

QUICK = RetryPolicy(retries=2, base_delay=0.0)



def _fresh() -> str:
    """A folder of its own for a test: a URL path that does not exist yet (two levels)."""
    return f"t-{secrets.token_hex(6)}/vault"


@pytest.fixture
def hosts() -> Iterator[Callable[..., WebdavHost]]:
    """Make WebDAV hosts (keyword arguments of WebdavHost); all are closed after the test."""
    made: list[WebdavHost] = []

    def make(url: str, **kwargs: object) -> WebdavHost:
        kwargs.setdefault("retry", QUICK)
        made.append(WebdavHost(url, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for host in made:
        host.close()




class TestWebdav(HostConformance):
    @pytest.fixture
    def host(self, webdav_server: WebdavServer, hosts: Callable[..., WebdavHost]) -> Host:
        return hosts(f"{webdav_server.url}/{_fresh()}", user=webdav_server.user,
                     password=webdav_server.password)

    @pytest.fixture
    def broken_hosts(self, webdav_server: WebdavServer, dead_port: int,
                     hosts: Callable[..., WebdavHost]) -> list[Host]:
        return [
            hosts(f"webdav://127.0.0.1:{dead_port}/vault", user="alice", password="x", name="refused"),
            hosts(f"{webdav_server.url}/vault", user=webdav_server.user, password="wrong", name="wrong"),
        ]


# -- URLs, names, options --------------------------------------------------------------


def test_url_parsing_and_default_name() -> None:
    host = make_host("webdav://bob@dav.example.org:8080/remote.php/dav/files/bob/?timeout=5&retries=1",
                     token="tok")
    try:
        assert isinstance(host, WebdavHost)
        assert host.name == "webdav:dav.example.org:8080/remote.php/dav/files/bob"
        assert host.url() == "webdav://bob@dav.example.org:8080/remote.php/dav/files/bob"
        assert (host.timeout, host.retry.retries, host.tls) == (5.0, 1, False)
    finally:
        host.close()
    secure = make_host("webdavs://dav.example.org:443/My%20Files")
    plain = make_host("webdav://dav.example.org/My%20Files/")
    named = make_host("webdav://dav.example.org/x?name=nas")
    try:
        assert isinstance(secure, WebdavHost) and secure.tls
        # The same collection has the same name whatever the scheme, port spelling or node.
        assert secure.name == plain.name == "webdav:dav.example.org/My Files"
        assert secure.url() == "webdavs://dav.example.org/My%20Files"
        assert named.name == "nas"
    finally:
        for each in (secure, plain, named):
            each.close()


def test_server_root_and_ipv6() -> None:
    host = make_host("webdav://[::1]:8080")
    try:
        assert host.name == "webdav:[::1]:8080"
        assert host.url() == "webdav://[::1]:8080/"
    finally:
        host.close()


@pytest.mark.parametrize(("url", "problem"), [
    ("webdav://dav.example.org/x?colour=red", "unknown WebDAV option 'colour'"),
    ("webdav://dav.example.org/x?timeout=soon", "timeout must be a number"),
    ("webdav://dav.example.org/x?timeout=0", "timeout must be positive"),
    ("webdav://dav.example.org/x?retries=-1", "must not be negative"),
    ("webdav://dav.example.org/x?verify=/no/such/ca.pem", "CA bundle"),
    ("webdav://alice:sekrit@dav.example.org:99999/x", "port"),
    ("webdav:///x", "webdav://host:port/path"),
])
def test_bad_urls_are_refused_without_showing_secrets(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        make_host(url)
    assert "sekrit" not in str(caught.value)


def test_password_env_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CM_TEST_DAV_PASSWORD", raising=False)
    with pytest.raises(ValueError, match="CM_TEST_DAV_PASSWORD"):
        make_host("webdav://alice@dav.example.org/x?password_env=CM_TEST_DAV_PASSWORD")


def test_verify_option(tmp_path: Path) -> None:
    assert [_verify(v) for v in (True, False, "false", "true", "0", "yes")] == [True, False, False, True,
                                                                              False, True]
    assert isinstance(_verify(str(tmp_path)), ssl.SSLContext)  # a folder of CA certificates
    with pytest.raises(ValueError, match="CA bundle"):
        _verify(str(tmp_path / "missing.pem"))


def test_password_sources_token_then_env_then_url(webdav_server: WebdavServer, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = _fresh()
    good, bad = quote(webdav_server.password, safe=""), "wrong"
    monkeypatch.setenv("CM_TEST_DAV_GOOD", webdav_server.password)
    monkeypatch.setenv("CM_TEST_DAV_BAD", "wrong")
    cases = [  # (URL, token, works?)
        (f"webdav://alice:{good}@127.0.0.1:{webdav_server.port}/{root}", None, True),
        (f"webdav://alice:{bad}@127.0.0.1:{webdav_server.port}/{root}", webdav_server.password, True),
        (f"webdav://alice:{good}@127.0.0.1:{webdav_server.port}/{root}", "wrong", False),
        (f"webdav://alice:{bad}@127.0.0.1:{webdav_server.port}/{root}?password_env=CM_TEST_DAV_GOOD",
         None, True),
        (f"webdav://alice:{good}@127.0.0.1:{webdav_server.port}/{root}?password_env=CM_TEST_DAV_BAD",
         None, False),
        (f"webdav://alice@127.0.0.1:{webdav_server.port}/{root}?password_env=CM_TEST_DAV_BAD",
         webdav_server.password, True),
    ]
    for number, (url, token, works) in enumerate(cases):
        host = make_host(url, token=token)
        try:
            data = f"case {number}".encode()
            if works:
                _, locator = put_bytes(host, tmp_path, data)
                assert get_bytes(host, locator) == data
            else:
                with pytest.raises(HostError, match="authentication failed"):
                    put_bytes(host, tmp_path, data)
        finally:
            host.close()


# -- secrets -----------------------------------------------------------------------------


def test_no_secret_in_url_locators_errors_or_dumps(webdav_server: WebdavServer, dead_port: int,
                                                    tmp_path: Path) -> None:
    password = webdav_server.password
    secret_forms = {password, quote(password, safe=""), quote(password)}
    in_url = quote(password, safe="")
    good = f"webdav://alice:{in_url}@127.0.0.1:{webdav_server.port}/{_fresh()}?name=good"
    refused = f"webdav://alice:{in_url}@127.0.0.1:{dead_port}/x?name=refused&retries=0"
    wrong = f"webdav://alice:{in_url}x@127.0.0.1:{webdav_server.port}/x?name=wrong"
    shown: list[str] = []
    with CloudManager(tmp_path / "catalog.sqlite3", tmp_path / "cache", 1 << 20,
                      hosts=[good, refused, wrong]) as cm:
        source = tmp_path / "report.txt"
        source.write_bytes(b"quarterly numbers")
        digest = cm.upload(source)
        assert digest == sha256_hex(b"quarterly numbers")
        dump = cm.data_dump()
        shown.append(dump)
        shown.extend([repr(cm.info(digest)), repr(cm.stats())])
        health = cm.catalog.host_health(["good", "refused", "wrong"])
        errors = {name: str(health[name].last_error) for name in health}
        shown.extend(errors.values())
        for host in cm.hosts:
            shown.extend([host.url(), repr(host), host.name])
    assert "good" in dump and "refused" in dump and "wrong" in dump
    # The errors recorded say what went wrong.
    assert "authentication failed" in errors["wrong"] and "cannot connect" in errors["refused"]
    for text in shown:
        for secret in secret_forms:
            assert secret not in text, f"a secret shows in {text[:300]!r}"


def test_error_messages_never_show_the_password(webdav_server: WebdavServer, dead_port: int,
                                                hosts: Callable[..., WebdavHost], tmp_path: Path) -> None:
    password = webdav_server.password
    in_url = quote(password, safe="")
    broken = [
        hosts(f"webdav://alice:{in_url}@127.0.0.1:{dead_port}/x"),
        hosts(f"webdav://alice:{in_url}@127.0.0.1:{webdav_server.port}/x", password=password + "!"),
    ]
    for host in broken:
        assert password not in host.url() and in_url not in host.url()
        for action in (lambda h=host: put_bytes(h, tmp_path, b"x"),
                       lambda h=host: get_bytes(h, f"webdav://h/x/ab/cd/abcd{'0' * 60}"),
                       lambda h=host: h.check(f"webdav://h/x/ab/cd/abcd{'0' * 60}")):
            with pytest.raises(HostError) as caught:
                action()
            assert password not in str(caught.value) and in_url not in str(caught.value)
            assert password not in repr(caught.value.__cause__)


# -- retries -----------------------------------------------------------------------------


def test_throttling_is_retried_honouring_retry_after(
        webdav_server: WebdavServer, relay: Callable[[int], Relay], hosts: Callable[..., WebdavHost],
        tmp_path: Path) -> None:
    front = relay(webdav_server.port)
    host = hosts(f"webdav://127.0.0.1:{front.port}/{_fresh()}", user=webdav_server.user,
                 password=webdav_server.password, retry=RetryPolicy(retries=2, base_delay=0.0))
    front.fail_next(503, {"Retry-After": "1"})
    started = time.monotonic()
    _, locator = put_bytes(host, tmp_path, b"patience")
    waited = time.monotonic() - started
    assert waited >= 0.9, "the Retry-After of the 503 was not honoured"
    assert front.seen[0][2] == 503 and front.seen[1][0] == "PROPFIND"  # the same step, again
    assert [m for m, _, s in front.seen].count("PUT") == 1
    front.fail_next(429, {"Retry-After": "0"})
    front.fail_next(502)
    assert get_bytes(host, locator) == b"patience"
    assert [s for m, _, s in front.seen if m == "GET"] == [429, 502, 200]


def test_a_failure_that_lasts_gives_up_saying_how_often(
        webdav_server: WebdavServer, relay: Callable[[int], Relay], hosts: Callable[..., WebdavHost],
        tmp_path: Path) -> None:
    front = relay(webdav_server.port)
    host = hosts(f"webdav://127.0.0.1:{front.port}/x", user="alice", password=webdav_server.password,
                 retry=RetryPolicy(retries=2, base_delay=0.0))
    front.fail_next(500, times=3)
    with pytest.raises(HostError, match=r"HTTP 500 .*after 3 attempts"):
        put_bytes(host, tmp_path, b"never")
    assert len(front.seen) == 3


def test_a_wrong_password_is_not_retried(webdav_server: WebdavServer, relay: Callable[[int], Relay],
                                         hosts: Callable[..., WebdavHost], tmp_path: Path) -> None:
    front = relay(webdav_server.port)
    host = hosts(f"webdav://127.0.0.1:{front.port}/x", user="alice", password="wrong",
                 retry=RetryPolicy(retries=5, base_delay=0.0))
    with pytest.raises(HostError, match="authentication failed") as caught:
        put_bytes(host, tmp_path, b"nope")
    assert caught.value.host == host.name and "401" in str(caught.value)
    assert len(front.seen) == 1, front.seen
    front.fail_next(403)
    with pytest.raises(HostError, match="authentication failed"):
        get_bytes(host, f"webdav://127.0.0.1/x/ab/cd/abcd{'0' * 60}")
    assert len(front.seen) == 2


def test_refused_connections_are_retried_then_reported(
        dead_port: int, hosts: Callable[..., WebdavHost], tmp_path: Path) -> None:
    host = hosts(f"webdav://127.0.0.1:{dead_port}/x", retry=RetryPolicy(retries=2, base_delay=0.0))
    with pytest.raises(HostError, match=r"cannot connect to 127\.0\.0\.1.*after 3 attempts") as caught:
        put_bytes(host, tmp_path, b"nowhere")
    assert caught.value.host == host.name


def test_a_server_that_never_answers_times_out(hosts: Callable[..., WebdavHost], tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete, and nobody ever reads or answers
        port = silent.getsockname()[1]
        host = hosts(f"webdav://127.0.0.1:{port}/x", timeout=0.3,
                     retry=RetryPolicy(retries=1, base_delay=0.0))
        started = time.monotonic()
        with pytest.raises(HostError, match=r"no answer within 0\.3 s.*after 2 attempts"):
            put_bytes(host, tmp_path, b"hello?")
        assert time.monotonic() - started < 5


def test_a_download_that_breaks_off_resumes(webdav_server: WebdavServer, relay: Callable[[int], Relay],
                                            hosts: Callable[..., WebdavHost], tmp_path: Path) -> None:
    front = relay(webdav_server.port)
    host = hosts(f"webdav://127.0.0.1:{front.port}/{_fresh()}", user=webdav_server.user,
                 password=webdav_server.password)
    data = secrets.token_bytes(3 * CHUNK)
    _, locator = put_bytes(host, tmp_path, data)
    front.cut_next(CHUNK + CHUNK // 2)  # after the first chunk was written out
    assert get_bytes(host, locator) == data
    gets = [(path, status) for method, path, status in front.seen if method == "GET"]
    assert [status for _, status in gets] == [200, 206]


# -- layout and locators -------------------------------------------------------------------


def test_layout_collections_and_skipped_uploads(webdav_server: WebdavServer, relay: Callable[[int], Relay],
                                                hosts: Callable[..., WebdavHost], tmp_path: Path) -> None:
    root = f"t-{secrets.token_hex(6)}/deep/er"
    front = relay(webdav_server.port)
    host = hosts(f"webdav://127.0.0.1:{front.port}/{root}", user=webdav_server.user,
                 password=webdav_server.password)
    digest, locator = put_bytes(host, tmp_path, b"layout")
    stored = webdav_server.root / root / digest[:2] / digest[2:4] / digest
    assert stored.read_bytes() == b"layout"
    assert locator == f"webdav://127.0.0.1:{front.port}/{root}/{digest[:2]}/{digest[2:4]}/{digest}"
    assert host.check(locator) == 6
    # Same content again: asked for, not sent.
    front.seen.clear()
    assert put_bytes(host, tmp_path, b"layout", name="again")[1] == locator
    assert [method for method, _, _ in front.seen] == ["PROPFIND"]
    # A partial object (another size) is replaced.
    stored.write_bytes(b"lay")
    put_bytes(host, tmp_path, b"layout")
    assert stored.read_bytes() == b"layout"
    # Collections removed behind the host's back are made again.
    for path in sorted((webdav_server.root / root).rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (webdav_server.root / root).rmdir()
    _, again = put_bytes(host, tmp_path, b"layout")
    assert get_bytes(host, again) == b"layout"


def test_locators_outside_the_root_are_refused(webdav_server: WebdavServer,
                                               hosts: Callable[..., WebdavHost], tmp_path: Path) -> None:
    root = _fresh()
    host = hosts(f"{webdav_server.url}/{root}", user=webdav_server.user, password=webdav_server.password)
    digest, locator = put_bytes(host, tmp_path, b"inside")
    secret = webdav_server.root / "secret.txt"
    secret.write_text("outside the host's root")
    hostile = [
        f"{webdav_server.url}/secret.txt",
        f"{webdav_server.url}/{root}/../../secret.txt",
        f"{webdav_server.url}/{root}/ab/cd/../../../../secret.txt",
        f"{webdav_server.url}/{root}/{digest[:2]}/{digest[2:4]}/{digest}/../../../../secret.txt",
        f"{webdav_server.url}/{root}/{digest[:2]}/{digest[2:4]}/{digest}%2F..%2F..%2Fsecret.txt",
        f"{webdav_server.url}/{root}/{digest[:2]}/{digest[2:4]}/{digest}?x=../../secret.txt",
        f"http://127.0.0.1:{webdav_server.port}/secret.txt",
        "file:///etc/passwd",
        f"{webdav_server.url}/{root}/zz/zz/zzzz{'0' * 60}",
        "",
    ]
    assert_refuses_locators(host, hostile)
    assert secret.read_text() == "outside the host's root"
    # Only the ab/cd/<hash> tail is trusted: the same tail elsewhere is read from this
    # host's own server and root (the other address is never contacted).
    elsewhere = f"webdavs://evil.example:1/other/{digest[:2]}/{digest[2:4]}/{digest}"
    assert get_bytes(host, elsewhere) == b"inside"
    assert get_bytes(host, locator) == b"inside"


def test_concurrent_uploads_into_new_collections(webdav_server: WebdavServer,
                                                 hosts: Callable[..., WebdavHost], tmp_path: Path) -> None:
    host = hosts(f"{webdav_server.url}/{_fresh()}", user=webdav_server.user,
                 password=webdav_server.password)
    payloads = [b"same"] * 4 + [f"other {i}".encode() for i in range(8)]
    results: list[str | BaseException] = []

    def one(number: int, data: bytes) -> None:
        folder = tmp_path / f"w{number}"
        folder.mkdir()
        try:
            results.append(put_bytes(host, folder, data)[1])
        except BaseException as exc:
            results.append(exc)

    workers = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(payloads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert all(isinstance(r, str) for r in results), results
    assert len(set(results)) == 9


def test_a_planted_locator_deletes_nothing_of_another_file(webdav_server: WebdavServer,
                                                         hosts: Callable[..., WebdavHost],
                                                         tmp_path: Path) -> None:
    check_a_planted_locator_on(hosts(f"{webdav_server.url}/{_fresh()}", user=webdav_server.user,
                                     password=webdav_server.password), tmp_path)
