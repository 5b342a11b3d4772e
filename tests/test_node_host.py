"""The cm:// host kind against a real `cm serve` on 127.0.0.1, and the server's object
and catalog calls as other nodes and scripts use them."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloudmanager import payload
from cloudmanager.cache import OWNER_FILE
from cloudmanager.cli import main
from cloudmanager.errors import HostError, ObjectMissing
from cloudmanager.hosts import Host, make_host
from cloudmanager.hosts.node import NodeHost
from cloudmanager.retry import RetryPolicy
from cloudmanager.testing import (
    HostConformance,
    assert_refuses_locators,
    get_bytes,
    host_error,
    put_bytes,
    sha256_hex,
)
from tests.servers.node import LOOPBACK, NodeServer, free_port, running_node

QUICK = RetryPolicy(retries=1, base_delay=0.0)
#: The capacity of the small node (files larger than this cannot be kept there).
SMALL = 64 * 1024


@pytest.fixture
def hosts() -> Iterator[Callable[..., NodeHost]]:
    """Make cm:// hosts: ``hosts(url, token, **options)``; all are closed after the test."""
    made: list[NodeHost] = []

    def make(url: str, token: str, **options: object) -> NodeHost:
        options.setdefault("retry", QUICK)
        made.append(NodeHost(url, token, **options))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for host in made:
        host.close()


@pytest.fixture(scope="module")
def small_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeServer]:
    """A node whose cache holds 64 KiB; nothing is ever kept on it in these tests."""
    with running_node(tmp_path_factory.mktemp("small-node"), capacity=SMALL) as server:
        yield server


class TestNodeHost(HostConformance):
    @pytest.fixture
    def host(self, node_server: NodeServer, hosts: Callable[..., NodeHost]) -> Host:
        return hosts(node_server.url, node_server.token)

    @pytest.fixture
    def broken_hosts(self, node_server: NodeServer, dead_port: int,
                     hosts: Callable[..., NodeHost]) -> list[Host]:
        return [hosts(f"cm://{LOOPBACK}:{dead_port}", "any", name="refused"),
                hosts(node_server.url, "not-the-token", name="wrong-token")]


def _nothing_kept(server: NodeServer) -> None:
    """No file and no temporary file in the node's cache; nothing in its catalog."""
    left = [p for p in server.cache.rglob("*") if p.is_file() and p.name != OWNER_FILE]
    assert left == [], f"left in the cache: {left}"
    with server.client() as client:
        assert client.catalog_page(0, 10) == (payload.Parsed([], [], []), 0, False)


# -- URLs, names, locators -------------------------------------------------------------


def test_url_name_and_options() -> None:
    host = make_host("cm://Node.Example:9000?timeout=5&retries=1", token="secret-token")
    try:
        assert isinstance(host, NodeHost)
        assert host.name == "node.example:9000" and host.url() == "cm://node.example:9000"
        assert host.client.timeout == 5.0 and host.client.retry.retries == 1
        assert "secret-token" not in repr(host) + host.url()
    finally:
        host.close()
    secure = make_host("cms://node.example", token="t", name="peer")
    try:
        assert (secure.name, secure.url()) == ("peer", "cms://node.example:8976")
    finally:
        secure.close()
    for url, problem in [("cm://node.example:9000", "needs the other node's token"),
                         ("cm://node.example/some/path", "cm://HOST:PORT"),
                         ("cm://node.example?colour=red", "unknown cm:// option 'colour'"),
                         ("cm://node.example?timeout=-1", "timeout"),
                         ("cm://node.example?ca=/etc/hostname", "for cms://"),
                         ("cms://node.example?ca=/no/such/ca.pem", "names no file")]:
        with pytest.raises(ValueError, match=problem):
            make_host(url, token=None if "9000" in url else "t")


def test_locators_of_other_places_are_refused(node_server: NodeServer,
                                              hosts: Callable[..., NodeHost]) -> None:
    host = hosts(node_server.url, node_server.token)
    digest = "ab" * 32
    port = node_server.port
    assert_refuses_locators(host, [
        f"cm://{LOOPBACK}:{port + 1}/objects/{digest}",  # another node
        f"cm://localhost:{port}/objects/{digest}",
        f"cm://{LOOPBACK}:{port}/objects/{digest[:-1]}",
        f"cm://{LOOPBACK}:{port}/objects/{digest}?x=1",
        f"cm://{LOOPBACK}:{port}/catalog",
        f"cm://{LOOPBACK}:{port}/s/{digest}",
        f"cm://user@{LOOPBACK}:{port}/objects/{digest}",
        f"http://{LOOPBACK}:{port}/objects/{digest}",
        f"file:///objects/{digest}",
        "",
    ])


# -- objects ---------------------------------------------------------------------------


def test_a_wrong_hash_is_refused_and_nothing_kept(small_node: NodeServer, files: Path) -> None:
    source = files / "f.bin"
    source.write_bytes(b"these bytes are not the ones named" * 100)
    with small_node.client() as client, pytest.raises(HostError, match="refused the bytes") as caught:
        client.put("0" * 64, "f.bin", source)
    assert "0" * 64 in str(caught.value) and small_node.token not in str(caught.value)
    with small_node.http(small_node.token) as http:
        answer = http.put(f"/objects/{'1' * 64}", content=b"other bytes")
        assert answer.status_code == 400 and "SHA-256" in answer.json()["error"]
        assert http.put("/objects/not-a-hash", content=b"x").status_code == 400
    _nothing_kept(small_node)


def test_calls_need_the_token(node_server: NodeServer) -> None:
    digest = sha256_hex(b"guarded")
    calls = [("PUT", f"/objects/{digest}", b"guarded"), ("DELETE", f"/objects/{digest}", b""),
             ("GET", f"/objects/{digest}", b""), ("HEAD", f"/objects/{digest}", b""),
             ("GET", "/catalog", b""), ("POST", "/catalog", b"[]")]
    with node_server.http() as anonymous, node_server.http("wrong") as wrong:
        for method, path, body in calls:
            refused = anonymous.request(method, path, content=body)
            assert refused.status_code == 401, (method, path)
            assert refused.headers["WWW-Authenticate"].startswith("Bearer")
            assert wrong.request(method, path, content=body).status_code == 403, (method, path)
        basic = anonymous.get("/catalog", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert basic.status_code == 403
    with node_server.client() as client:
        assert client.head(digest) is None  # the PUT without the token kept nothing


def test_a_refused_token_is_a_clear_host_error(node_server: NodeServer, files: Path,
                                               hosts: Callable[..., NodeHost]) -> None:
    host = hosts(node_server.url, "not-the-token")
    error = host_error(lambda: put_bytes(host, files, b"data"))
    assert "the node refused the token" in error.reason and "not-the-token" not in str(error)


def test_507_when_the_store_is_too_small(small_node: NodeServer, files: Path,
                                         hosts: Callable[..., NodeHost]) -> None:
    host = hosts(small_node.url, small_node.token)
    big = os.urandom(SMALL + 1)
    error = host_error(lambda: put_bytes(host, files, big, "big.bin"))
    assert "the node's store is full" in error.reason
    with small_node.http(small_node.token) as http:
        # with a Content-Length: refused before a byte is read
        assert http.put(f"/objects/{sha256_hex(big)}", content=big).status_code == 507
        # without one (chunked): refused when the bytes pass the capacity
        chunked = http.put(f"/objects/{sha256_hex(big)}", content=iter([big[:40_000], big[40_000:]]))
        assert chunked.status_code == 507 and "longer than" in chunked.json()["error"]
    _nothing_kept(small_node)


def test_a_client_that_goes_away_mid_body_leaves_nothing(small_node: NodeServer) -> None:
    digest = sha256_hex(b"x" * 50_000)
    with socket.create_connection((LOOPBACK, small_node.port)) as sock:
        sock.sendall(f"PUT /objects/{digest} HTTP/1.1\r\nHost: {LOOPBACK}\r\n"
                     f"Authorization: Bearer {small_node.token}\r\nContent-Length: 50000\r\n\r\n".encode())
        sock.sendall(b"x" * 20_000)
    deadline = time.monotonic() + 30
    while f"PUT /objects/{digest}" not in small_node.output() and time.monotonic() < deadline:
        time.sleep(0.05)  # the server logs the request when it is done with it
    assert f'"PUT /objects/{digest}" 400' in small_node.output()
    _nothing_kept(small_node)


def test_range_requests(node_server: NodeServer, files: Path, hosts: Callable[..., NodeHost]) -> None:
    data = os.urandom(1000)
    digest, _ = put_bytes(hosts(node_server.url, node_server.token), files, data)
    with node_server.http(node_server.token) as http:
        part = http.get(f"/objects/{digest}", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == data[100:200]
        assert part.headers["Content-Range"] == "bytes 100-199/1000"
        tail = http.get(f"/objects/{digest}", headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == data[-10:]
        beyond = http.get(f"/objects/{digest}", headers={"Range": "bytes=1000-"})
        assert beyond.status_code == 416 and beyond.headers["Content-Range"] == "bytes */1000"
        whole = http.get(f"/objects/{digest}")
        assert whole.status_code == 200 and whole.content == data
        assert http.head(f"/objects/{digest}").headers["Content-Length"] == "1000"
    with node_server.client() as client:
        out = _Collect()
        client.get(digest, out, offset=600)
        assert out.data == data[600:]
        with pytest.raises(HostError, match="no byte at offset 1000"):
            client.get(digest, _Collect(), offset=1000)


class _Collect:
    def __init__(self) -> None:
        self.data = b""

    def write(self, block: bytes) -> int:
        self.data += block
        return len(block)


def test_delete_then_get_is_404(node_server: NodeServer, files: Path, hosts: Callable[..., NodeHost]) -> None:
    digest, _ = put_bytes(hosts(node_server.url, node_server.token), files, b"short-lived")
    vault_copy = node_server.vault / digest[:2] / digest[2:4] / digest
    with node_server.http(node_server.token) as http:
        assert http.delete(f"/objects/{digest}").status_code == 204
        deadline = time.monotonic() + 30  # the node sends what it takes in the background
        while vault_copy.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not vault_copy.exists()  # deleted from the node's own host too
        assert http.get(f"/objects/{digest}").status_code == 404
        assert http.head(f"/objects/{digest}").status_code == 404
        assert http.delete(f"/objects/{digest}").status_code == 404
    with node_server.client() as client, pytest.raises(ObjectMissing, match="no such object"):
        client.get(digest, _Collect())


def test_the_catalog_in_pages(node_servers: Callable[..., NodeServer], files: Path) -> None:
    server = node_servers()
    with server.client() as client:
        for i in range(3):
            path = files / f"page-{i}.txt"
            path.write_bytes(f"record {i}".encode())
            client.put(sha256_hex(path.read_bytes()), path.name, path)
        first, cursor, more = client.catalog_page(0, 2)
        assert len(first.records) == 2 and more
        rest, end, more = client.catalog_page(cursor, 2)
        assert len(rest.records) >= 1 and end > cursor
        assert {r.name for r in first.records + rest.records} >= {"page-0.txt", "page-1.txt", "page-2.txt"}
        record = {"version": "0.2", "datetime": "1391212800", "filename": "from-a-peer.md",
                  "filesize": "10", "filehash": "6" * 64, "uploads": []}
        report = client.push_catalog(json.dumps([record, {"version": "9"}]).encode())
        assert (report["added"], report["changed"], report["rejected"]) == (1, 0, 1)
        assert report["last_seq"] > report["first_seq"]
        with pytest.raises(HostError, match="refused the dump"):
            client.push_catalog(b"not json")
    with server.http(server.token) as http:
        for query in ("since=-1", "since=x", "limit=0", "limit=10001"):
            assert http.get(f"/catalog?{query}").status_code == 400, query
        page = http.get("/catalog").json()
        assert page["version"] == "0.2" and not page["more"]
        assert "6" * 64 in {r["filehash"] for r in page["records"]}


def test_two_nodes_store_files_on_each_other(node_servers: Callable[..., NodeServer], tmp_path: Path,
                                             files: Path) -> None:
    port_a = free_port()
    port_b = free_port()
    while port_b == port_a:
        port_b = free_port()
    token_a, token_b = "token-of-node-a-0123", "token-of-node-b-4567"
    a = node_servers("a", port=port_a, token=token_a,
                     hosts=[{"url": f"cm://{LOOPBACK}:{port_b}", "token": token_b}])
    b = node_servers("b", port=port_b, token=token_b,
                     hosts=[{"url": f"cm://{LOOPBACK}:{port_a}", "token": token_a}])
    runner = CliRunner()
    for sender, receiver in ((a, b), (b, a)):
        path = files / f"from-{sender.port}.txt"
        path.write_bytes(f"kept by {sender.port} on {receiver.port}".encode())
        done = runner.invoke(main, ["--config", str(sender.config), "upload", "--json", str(path)])
        assert done.exit_code == 0, done.output
        result = json.loads(done.output)[0]
        digest = result["hash"]
        assert {"host_name": f"{LOOPBACK}:{receiver.port}",
                "url": f"cm://{LOOPBACK}:{receiver.port}/objects/{digest}"} in result["uploads"]
        with receiver.http(receiver.token) as http:
            assert http.get(f"/objects/{digest}").content == path.read_bytes()
            names = {r["filehash"]: r["filename"] for r in http.get("/catalog").json()["records"]}
            assert names[digest] == path.name


def test_tls_with_the_node_s_own_certificate(node_servers: Callable[..., NodeServer], files: Path,
                                             hosts: Callable[..., NodeHost]) -> None:
    server = node_servers(tls=True)
    assert server.ca is not None and server.url.startswith("cms://")
    host = hosts(server.url, server.token, ca=str(server.ca))
    digest, locator = put_bytes(host, files, b"over TLS")
    assert locator == f"{server.url}/objects/{digest}" and get_bytes(host, locator) == b"over TLS"
    untrusting = hosts(server.url, server.token, name="untrusting")
    error = host_error(lambda: untrusting.check(locator))
    assert "CERTIFICATE" in error.reason.upper() and "attempts" not in error.reason  # not retried


# -- serving: the command and its configuration ----------------------------------------


def _config(tmp_path: Path, serve: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[catalog]\npath = "catalog.sqlite3"\n[cache]\npath = "cache"\n'
                    f'[[hosts]]\nurl = "{(tmp_path / "vault").as_uri()}"\n[serve]\n{serve}\n')
    return path


@pytest.mark.parametrize("serve, args, problem", [
    ("", [], "no token: a node serves only with a token"),
    ('token_env = "CM_TEST_UNSET_TOKEN"', [], "CM_TEST_UNSET_TOKEN is not set"),
    ('token = "t"', ["--bind", "nowhere"], "not an ADDRESS:PORT"),
    ('token = "t"', ["--tls-cert", "cert.pem"], "both --tls-cert and --tls-key"),
    ('token = "t"\nbind = "127.0.0.1:99999"', [], "serve.bind"),
    ('token = "t"\ntoken_env = "X"', [], "give token or token_env, not both"),
    ('token = "t"\npublic_url = "ftp://x"', [], "serve.public_url"),
    ('token = "t"\ntls_cert = "c.pem"', [], "both tls_cert and tls_key"),
    ('token = "t"\ncolour = "red"', [], "serve.colour: unknown key"),
    ('token = "fifteen-chars-x"', [], "the token has 15 characters, fewer than 16"),
    ('token = "t"\nuploads = 0', [], "serve.uploads: must be a whole number above 0"),
    ('token = "t"\nheader_timeout = "soon"', [], "serve.header_timeout: must be a number"),
    ('token = "t"\nbody_min_rate = "fast"', [], "serve.body_min_rate: not a size"),
    ('token = "t"\nsession_lifetime = "forever"', [], "serve.session_lifetime: not a duration"),
    ('token = "t"\nmetrics_bind = "nowhere"', [], "serve.metrics_bind"),
])
def test_cm_serve_refuses_a_bad_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              serve: str, args: list[str], problem: str) -> None:
    monkeypatch.delenv("CM_TEST_UNSET_TOKEN", raising=False)
    done = CliRunner().invoke(main, ["--config", str(_config(tmp_path, serve)), "serve", *args])
    assert done.exit_code == 2, done.output
    assert problem in done.output and done.output.startswith("cm: ")
    assert not (tmp_path / "catalog.sqlite3").exists()  # refused before anything was opened


def test_a_missing_extra_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("cloudmanager.hosts.node", "cloudmanager.nodeclient", "cloudmanager.server.run",
                   "cloudmanager.server.app"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, "httpx", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(ValueError, match=r"pip install 'cloudmanager\[node\]'"):
        make_host("cm://node.example:8976", token="t")
    done = CliRunner().invoke(main, ["--config", str(_config(tmp_path, 'token = "t"')), "serve"])
    assert done.exit_code == 1 and "pip install 'cloudmanager[serve]'" in done.output


def test_the_serve_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudmanager import config

    monkeypatch.setenv("CM_TEST_TOKEN", "from-the-environment")
    (tmp_path / "c.pem").write_text("x")
    (tmp_path / "k.pem").write_text("x")
    conf = config.load(_config(tmp_path, 'token_env = "CM_TEST_TOKEN"\nbind = "[::1]:9000"\n'
                                         'tls_cert = "c.pem"\ntls_key = "k.pem"'))
    serve = conf.serve
    assert serve.token == "from-the-environment" and "from-the-environment" not in repr(serve)
    assert config.parse_bind(serve.bind) == ("::1", 9000)
    assert serve.tls_cert == (tmp_path / "c.pem").resolve() and serve.base_url() == "https://[::1]:9000"
    assert config.load(_config(tmp_path, 'public_url = "https://files.example.org/"')).serve.base_url() \
        == "https://files.example.org"
    default = config.load(_config(tmp_path, "")).serve
    assert default.bind == "127.0.0.1:8976" and default.token is None


def test_a_large_body_streams_through_without_growing_the_server(node_server: NodeServer,
                                                                 files: Path) -> None:
    """64 MiB up and down; the server's resident memory stays far below that."""
    path = files / "large.bin"
    block = os.urandom(1 << 20)
    with open(path, "wb") as out:
        for i in range(64):
            out.write(block[i:] + block[:i])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    before = _resident(node_server)
    with node_server.client() as client:
        client.put(digest, "large.bin", path)
        out = hashlib.sha256()

        class Hasher:
            def write(self, data: bytes) -> int:
                out.update(data)
                return len(data)

        client.get(digest, Hasher())
    assert out.hexdigest() == digest
    assert _peak(node_server) - before < 48 << 20


def _status(server: NodeServer, field: str) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{server.process.pid}/status")


def _resident(server: NodeServer) -> int:
    return _status(server, "VmRSS")


def _peak(server: NodeServer) -> int:
    return _status(server, "VmHWM")
