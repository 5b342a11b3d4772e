"""A node on the open internet: bounded resources under hostile clients, sessions, metrics, logs.

Every test runs against a real ``cm serve`` started by a fixture on 127.0.0.1;
the attacks are bounded loops of raw sockets.  Attackers come from 127.0.0.2
(all of 127.0.0.0/8 is this machine's loopback), so that what is kept per client
address can be told from the node's own calls from 127.0.0.1.  Waits have
generous bounds; nothing here times the server.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cloudmanager import links
from cloudmanager.testing import sha256_hex
from tests.servers.node import LOOPBACK, NodeServer

ATTACKER = "127.0.0.2"
#: The longest a test waits for the server to do what it should (a bound, not a measure).
WAIT_S = 20.0


def _connect(server: NodeServer, source: str = ATTACKER) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, server.port), timeout=WAIT_S, source_address=(source, 0))
    return sock


def _closed_or_answered(sock: socket.socket) -> bytes:
    """What the server sends before closing ``sock`` (b"" when it just closes it); fails
    the test when it keeps the socket open longer than WAIT_S."""
    sock.settimeout(WAIT_S)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the server kept a connection open for {WAIT_S:g} s; it sent {received[:80]!r}")
    return received


@contextlib.contextmanager
def _sockets(count: int, make: Callable[[], socket.socket]) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            opened.append(make())
        yield opened
    finally:
        for sock in opened:
            sock.close()


def _head(server: NodeServer, method: str, path: str, *, token: str | None = None,
          length: int | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {LOOPBACK}:{server.port}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _put(server: NodeServer, data: bytes, name: str = "f.bin") -> str:
    digest = sha256_hex(data)
    with server.http(server.token) as http:
        assert http.put(f"/objects/{digest}", params={"name": name}, content=data).status_code in (200, 201)
    return digest


def _from(source: str) -> httpx.HTTPTransport:
    return httpx.HTTPTransport(local_address=source)


# -- 1. connections: caps and the request-head deadline ------------------------------------------


def test_idle_and_half_sent_connections_never_starve_a_node(node_servers: Callable[..., NodeServer]) -> None:
    """150 sockets sending nothing or half a request head, on a node with ``ulimit -n 128``,
    used to make a genuine GET / time out while the log filled with EMFILE."""
    server = node_servers(open_files=128, serve={"header_timeout": 2})
    half = _head(server, "GET", "/")[:20]

    def attacker() -> socket.socket:
        sock = _connect(server)
        if len(opened) % 2:
            sock.sendall(half)
        opened.append(sock)
        return sock

    opened: list[socket.socket] = []
    with _sockets(150, attacker) as sockets:
        with httpx.Client(timeout=WAIT_S) as genuine:
            assert genuine.get(f"{server.base_url}/").status_code == 200  # at once: not the attacker's slots
        for sock in sockets:  # each one is closed: refused at the cap (503) or past its deadline
            answer = _closed_or_answered(sock)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 503"), answer[:80]
    assert "Too many open files" not in server.output()


def test_a_connection_past_the_cap_is_answered_503_at_once(node_servers: Callable[..., NodeServer]) -> None:
    server = node_servers(serve={"max_connections": 4, "max_connections_per_client": 4, "header_timeout": 30})
    with _sockets(4, lambda: _connect(server)):
        sock = _connect(server)
        answer = _closed_or_answered(sock)
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer
        sock.close()
    with httpx.Client(timeout=WAIT_S) as client:  # the slots are free again
        assert client.get(f"{server.base_url}/").status_code == 200


def test_a_silent_connection_is_closed_after_the_header_timeout(
        node_servers: Callable[..., NodeServer]) -> None:
    server = node_servers(serve={"header_timeout": 1})
    for sent in (b"", _head(server, "GET", "/")[:10]):
        sock = _connect(server)
        sock.sendall(sent)
        assert _closed_or_answered(sock) == b""
        sock.close()
    with _connect(server) as sock:  # a whole request is answered, and the deadline starts again after it
        sock.sendall(_head(server, "GET", "/"))
        assert _closed_or_answered(sock).startswith(b"HTTP/1.1 200")


# -- 2. bodies keep pace, uploads never starve reads ----------------------------------------------


def test_stalled_uploads_never_freeze_the_node(node_servers: Callable[..., NodeServer]) -> None:
    """41 PUTs that send one byte and stop used to park every worker thread: the catalog,
    HEAD, share links and the page all timed out."""
    server = node_servers(serve={"uploads": 4, "body_timeout": 3})
    digest = _put(server, b"a file to read while uploads stall")
    stalled = sha256_hex(b"never sent whole")

    def staller() -> socket.socket:
        sock = _connect(server, LOOPBACK)
        head = _head(server, "PUT", f"/objects/{stalled}?name=s", token=server.token, length=1000)
        sock.sendall(head + b"x")
        return sock

    with _sockets(41, staller) as sockets:
        time.sleep(0.5)  # let the server take them in
        with server.http(server.token) as http:
            assert http.get("/catalog").status_code == 200
            assert http.head(f"/objects/{digest}").status_code == 200
            assert http.get(f"/objects/{digest}").content == b"a file to read while uploads stall"
            assert http.get("/").status_code == 200
            link = links.make_link(server.base_url, server.secret, digest, int(time.time()) + 3600)
            assert http.get(link).status_code == 200
            assert http.put(f"/objects/{stalled}", content=b"never sent whole").status_code == 503
        answers = [_closed_or_answered(sock) for sock in sockets]
    busy = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
    late = [a for a in answers if a.startswith(b"HTTP/1.1 408")]
    assert len(busy) >= 37 and b"retry-after" in busy[0].lower()
    assert len(busy) + len(late) == 41, [a[:40] for a in answers]
    with server.http(server.token) as http:
        assert http.head(f"/objects/{stalled}").status_code == 404  # nothing of them was kept


def test_a_body_dripped_slower_than_the_minimum_pace_is_cut_off(
        node_servers: Callable[..., NodeServer]) -> None:
    server = node_servers(serve={"body_timeout": 1, "body_min_rate": 1000})
    digest = sha256_hex(b"x" * 100_000)
    with _connect(server, LOOPBACK) as sock:
        sock.sendall(_head(server, "PUT", f"/objects/{digest}?name=d", token=server.token, length=100_000))
        sock.settimeout(0.3)
        answer = b""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not answer:  # one byte every 0.3 s, each in time
            with contextlib.suppress(OSError):
                sock.sendall(b"x")
            with contextlib.suppress(TimeoutError):
                answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]


# -- 4. guessing tokens ---------------------------------------------------------------------------


def test_wrong_tokens_are_slowed_per_address_and_right_ones_never(
        node_servers: Callable[..., NodeServer]) -> None:
    server = node_servers(serve={"auth_failures_per_second": 1, "auth_failures_burst": 3})
    with httpx.Client(base_url=server.base_url, transport=_from(ATTACKER), timeout=WAIT_S) as guesser, \
            server.http(server.token) as node:
        statuses = [guesser.get("/catalog", headers={"Authorization": f"Bearer guess-{i}"}).status_code
                    for i in range(30)]
        assert statuses[:3] == [403, 403, 403] and set(statuses[3:]) == {429}, statuses
        refused = guesser.get("/catalog", headers={"Authorization": "Bearer another-guess"})
        assert 1 <= int(refused.headers["Retry-After"]) <= 2
        assert node.get("/catalog").status_code == 200  # the node's own calls, from another address
        login = guesser.post("/login", data={"token": "a-guess-on-the-form"})
        assert login.status_code == 429 and "Retry-After" in login.headers
        time.sleep(2.2)  # one try came back
        assert guesser.get("/catalog", headers={"Authorization": "Bearer late-guess"}).status_code == 403


# -- 5. sessions the server can end ---------------------------------------------------------------


@contextlib.contextmanager
def _log_in(server: NodeServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=WAIT_S) as browser:
        _login(server, browser)
        yield browser


def _login(server: NodeServer, browser: httpx.Client) -> None:
    answer = browser.post("/login", data={"token": server.token})
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and server.token not in cookie


def test_logging_out_ends_the_session_everywhere(node_servers: Callable[..., NodeServer]) -> None:
    server = node_servers()
    digest = _put(server, b"seen by a logged-in page")
    with _log_in(server) as browser, httpx.Client(base_url=server.base_url, timeout=WAIT_S) as thief:
        thief.cookies.update(browser.cookies)  # a copied session cookie
        assert "Log out" in thief.get("/").text and thief.get(f"/objects/{digest}").status_code == 200
        assert browser.post("/logout").status_code == 303
        assert 'name="token"' in thief.get("/").text  # the login form again
        assert thief.get(f"/objects/{digest}").status_code == 401


def test_a_session_lasts_the_configured_lifetime(node_servers: Callable[..., NodeServer]) -> None:
    server = node_servers(serve={"session_lifetime": "2s"})
    with _log_in(server) as browser:
        assert "Log out" in browser.get("/").text
        time.sleep(2.5)
        assert 'name="token"' in browser.get("/").text


# -- 7. the server caps share links by what its hosts keep ---------------------------------------


def test_the_server_refuses_a_link_that_outlives_the_hosts(node_servers: Callable[..., NodeServer],
                                                           tmp_path: Path) -> None:
    (tmp_path / "short").mkdir()
    server = node_servers(hosts=[{"url": (tmp_path / "short").as_uri(), "keep_days": 1}])
    digest = _put(server, b"kept a day on one host")
    now = int(time.time())
    with httpx.Client(timeout=WAIT_S) as client:
        within = links.make_link(server.base_url, server.secret, digest, now + 3600)
        assert client.get(within).status_code == 200
        signed_too_long = links.make_link(server.base_url, server.secret, digest, now + 3 * 86_400)
        refused = client.get(signed_too_long)
        assert refused.status_code == 403 and "outlives" in refused.json()["error"]


# -- 8. metrics -----------------------------------------------------------------------------------


def _scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_tell_an_operator_what_the_node_does(node_servers: Callable[..., NodeServer]) -> None:
    server = node_servers(capacity=1 << 20, serve={"uploads": 2, "body_timeout": 30})
    with server.http() as anonymous:
        assert anonymous.get("/metrics").status_code == 401
    digest = _put(server, b"x" * 1000, "counted.bin")
    with server.http(server.token) as http:
        assert http.get(f"/objects/{digest}").status_code == 200
        assert http.get("/catalog").status_code == 200
        assert http.get("/objects/" + "0" * 64).status_code == 404
        with _connect(server, LOOPBACK) as stalled:
            stalled.sendall(_head(server, "PUT", f"/objects/{'1' * 64}?name=s", token=server.token,
                                  length=10) + b"x")
            time.sleep(0.5)
            during = _scrape(http.get("/metrics").text)
        deadline = time.monotonic() + WAIT_S  # the server notices the stalled client left
        while (answer := http.get("/metrics")) and time.monotonic() < deadline:
            if _scrape(answer.text)[("cloudmanager_uploads_in_flight", ())] == 0:
                break
            time.sleep(0.1)
    assert answer.headers["content-type"].startswith("text/plain")
    figures = _scrape(answer.text)
    assert during[("cloudmanager_uploads_in_flight", ())] == 1
    assert figures[("cloudmanager_uploads_in_flight", ())] == 0
    assert figures[("cloudmanager_files", ())] == 1
    assert figures[("cloudmanager_files_cached", ())] == 1
    assert figures[("cloudmanager_files_pending", ())] == 0
    assert figures[("cloudmanager_cache_used_bytes", ())] == 1000
    assert figures[("cloudmanager_cache_capacity_bytes", ())] == 1 << 20
    assert figures[("cloudmanager_http_requests_total",
                    (("method", "PUT"), ("route", "/objects/{digest}"), ("status", "201")))] == 1
    assert figures[("cloudmanager_http_requests_total",
                    (("method", "GET"), ("route", "/objects/{digest}"), ("status", "404")))] == 1
    assert figures[("cloudmanager_http_received_bytes_total", ())] >= 1000
    assert figures[("cloudmanager_http_sent_bytes_total", ())] >= 1000
    assert figures[("cloudmanager_catalog_pulls_total", ())] == 1
    assert figures[("cloudmanager_host_failures", (("host", "vault"),))] == 0
    assert figures[("cloudmanager_connections_open", ())] >= 1


def test_metrics_on_their_own_address_need_no_token(node_servers: Callable[..., NodeServer]) -> None:
    from tests.servers.node import free_port

    port = free_port()
    node_servers(serve={"metrics_bind": f"{LOOPBACK}:{port}"})
    with httpx.Client(timeout=WAIT_S) as client:
        figures = _scrape(client.get(f"http://{LOOPBACK}:{port}/metrics").text)
    assert ("cloudmanager_files", ()) in figures


# -- 9. access logs -------------------------------------------------------------------------------


def test_json_access_logs_hold_one_object_a_line_and_no_secret(
        node_servers: Callable[..., NodeServer]) -> None:
    server = node_servers(arguments=("--log-format", "json"))
    digest = _put(server, b"logged as json")
    link = links.make_link(server.base_url, server.secret, digest, int(time.time()) + 600)
    with httpx.Client(timeout=WAIT_S) as client:
        assert client.get(link).status_code == 200
        assert client.get(f"{server.base_url}/catalog", headers={"Authorization": "Bearer wrong-guess"}
                          ).status_code == 403
        assert client.post(f"{server.base_url}/login", data={"token": server.token}).status_code == 303
    server.stop()
    lines = [json.loads(line) for line in server.output().splitlines() if line.strip()]
    access = [line for line in lines if line.get("logger") == "cloudmanager.access"]
    shared = next(line for line in access if line["path"] == f"/s/{digest}")
    assert shared["method"] == "GET" and shared["status"] == 200 and shared["bytes"] == len(b"logged as json")
    assert isinstance(shared["duration_ms"], float) and shared["client"] == LOOPBACK
    assert {line["status"] for line in access} >= {200, 201, 303, 403}
    text = server.output()
    for secret in (server.token, server.secret, links.signature(server.secret, digest, 0)[:10], "wrong-guess",
                   link.partition("sig=")[2]):
        assert secret not in text
