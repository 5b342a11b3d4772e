"""The sftp:// host kind against a real OpenSSH sshd on 127.0.0.1 (see tests/servers/sshd.py)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import paramiko
import pytest

from cloudmanager import CloudManager, build, config
from cloudmanager.errors import HostError, ObjectMissing
from cloudmanager.hosts import Host, make_host
from cloudmanager.hosts.sftp import SftpHost
from cloudmanager.retry import RetryPolicy
from cloudmanager.testing import HostConformance, get_bytes, host_error, put_bytes, sha256_hex
from tests.servers.sshd import SilentServer, SshdServer
from tests.test_planted import check_a_planted_locator_on

PASSWORD = "Sup3r-s3cret_pw"
FAST_RETRY = RetryPolicy(retries=1, base_delay=0.01)



def _make(server: SshdServer, folder: Path, **kwargs: Any) -> SftpHost:
    """An SftpHost on the test server, logging in with its key unless told otherwise."""
    settings: dict[str, Any] = {"user": server.user, "port": server.port, "key_file": server.key_file,
                                "known_hosts": server.known_hosts, "timeout": 10}
    settings.update(kwargs)
    host = settings.pop("host", server.host)
    return SftpHost(host, str(folder), **settings)





@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """The folder a test's host stores in (the server runs on this machine)."""
    return tmp_path / "remote" / "vault"


@pytest.fixture
def sftp_host(sshd_server: SshdServer, remote: Path) -> Iterator[SftpHost]:
    host = _make(sshd_server, remote)
    yield host
    host.close()


class TestSftp(HostConformance):
    @pytest.fixture
    def host(self, sftp_host: SftpHost) -> Host:
        return sftp_host

    @pytest.fixture
    def broken_hosts(self, sshd_server: SshdServer, closed_port: int, silent_server: SilentServer,
                     tmp_path: Path) -> Iterator[list[Host]]:
        empty = tmp_path / "empty_known_hosts"
        empty.write_text("")
        folder = tmp_path / "broken"
        hosts: list[SftpHost] = [
            _make(sshd_server, folder, port=closed_port, retry=FAST_RETRY, name="nothing-listens"),
            _make(sshd_server, folder, key_file=sshd_server.wrong_key_file, name="wrong-key"),
            _make(sshd_server, folder, key_file=None, password="wrong", name="wrong-password"),
            _make(sshd_server, folder, port=silent_server.port, timeout=2, retry=RetryPolicy(retries=0),
                  name="never-answers"),
            _make(sshd_server, folder, known_hosts=empty, name="unknown-host-key"),
        ]
        yield list(hosts)
        for host in hosts:
            host.close()


# -- URLs, names, options ------------------------------------------------------------------


def test_url_parsing_name_and_defaults(sshd_server: SshdServer) -> None:
    key = quote(str(sshd_server.key_file))
    host = make_host(f"sftp://alice@Nas.Example:2222/srv/vault/?key_file={key}&timeout=5&retries=7")
    assert isinstance(host, SftpHost)
    assert (host.host, host.port, host.user, host.root) == ("nas.example", 2222, "alice", "/srv/vault")
    assert host.url() == "sftp://alice@nas.example:2222/srv/vault"
    assert host.name == "sftp:nas.example:2222/srv/vault"  # the same for every user of that folder
    assert host.timeout == 5.0 and host.retry.retries == 7
    assert host.key_file == sshd_server.key_file

    default = make_host("sftp://bob@nas/backup")
    assert isinstance(default, SftpHost)
    assert default.port == 22 and default.url() == "sftp://bob@nas/backup"
    assert default.name == "sftp:nas/backup" and default.timeout == 30.0
    assert default.host_key_policy == "reject"

    home = make_host("sftp://bob@nas:2200/~/vault")
    assert isinstance(home, SftpHost)
    assert home.root == "vault" and home.name == "sftp:bob@nas:2200/~/vault"  # another user: another ~
    assert home.url() == "sftp://bob@nas:2200/~/vault"

    named = make_host("sftp://bob@nas/backup?name=offsite")
    assert named.name == "offsite"
    assert make_host("sftp://bob@nas/backup", name="other").name == "other"

    spaced = make_host("sftp://u@[::1]:2022/my%20files")
    assert isinstance(spaced, SftpHost)
    assert spaced.root == "/my files" and spaced.url() == "sftp://u@[::1]:2022/my%20files"
    for host in (default, home, named, spaced):
        host.close()  # made without connecting: nothing to close, and no error


@pytest.mark.parametrize("url, complaint", [
    ("sftp://u@nas", "needs a folder"),
    ("sftp://u@nas/", "needs a folder"),
    ("sftp://u@nas/a/../b", "'..'"),
    ("sftp://u@nas:99999/x", "port"),
    ("sftp://u@nas/x?colour=blue", "unknown sftp option 'colour'"),
    ("sftp://u@nas/x?host_key_policy=yolo", "host_key_policy"),
    ("sftp://u@nas/x?timeout=soon", "timeout"),
    ("sftp://u@nas/x?timeout=0", "timeout"),
    ("sftp://u@nas/x?retries=-1", "retries"),
    ("sftp://u@nas/x?connections=0", "connections"),
    ("sftp://u@nas/x?key_file=/nonexistent/key", "does not exist"),
    ("sftp://u@nas/x?password_env=CM_TEST_NO_SUCH_VARIABLE", "CM_TEST_NO_SUCH_VARIABLE"),
    ("sftp:///x", "sftp://user@host"),
])
def test_bad_urls_are_refused_with_a_reason(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint.replace("(", r"\(")):
        make_host(url)


def test_credentials_from_token_password_env_and_key_text(sshd_server: SshdServer, remote: Path,
                                                          files: Path, monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    base = f"{sshd_server.url(remote)}?known_hosts={quote(str(sshd_server.known_hosts))}"
    # A private key given as the configuration's token logs in.
    with_key = make_host(base, token=sshd_server.key_file.read_text())
    try:
        _, locator = put_bytes(with_key, files, b"by key text")
        assert get_bytes(with_key, locator) == b"by key text"
    finally:
        with_key.close()
    # A password from password_env is used (and is wrong: root logs in with keys only).
    monkeypatch.setenv("CM_TEST_SFTP_PASSWORD", PASSWORD)
    by_env = make_host(f"{base}&password_env=CM_TEST_SFTP_PASSWORD&retries=0")
    error = host_error(lambda: put_bytes(by_env, files, b"x"))
    assert "authentication failed" in str(error) and PASSWORD not in str(error)
    by_env.close()


def test_a_configuration_file_host_with_typed_options(sshd_server: SshdServer, remote: Path, files: Path,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "[[hosts]]\n"
        f'url = "{sshd_server.url(remote)}"\n'
        f'token = "{PASSWORD}"\n'  # a password the server refuses; the key logs in first
        f'config = {{ key_file = "{sshd_server.key_file}", known_hosts = "{sshd_server.known_hosts}", '
        "timeout = 5, retries = 2, connections = 2 }\n"
    )
    (host,) = build.make_hosts(config.parse(path, {}))
    assert isinstance(host, SftpHost)
    assert (host.timeout, host.retry.retries, host.connections) == (5.0, 2, 2)
    _, locator = put_bytes(host, files, b"configured")
    assert get_bytes(host, locator) == b"configured"
    host.close()

    path.write_text(f'[[hosts]]\nurl = "{sshd_server.url(remote)}"\ntoken = "{PASSWORD}"\n'
                    'config = { timeout = "soon" }\n')
    with pytest.raises(config.ConfigError, match="timeout") as caught:
        config.parse(path, {})
    assert PASSWORD not in str(caught.value)


# -- secrets -------------------------------------------------------------------------------


def test_no_secret_in_urls_locators_errors_logs_or_dumps(sshd_server: SshdServer, remote: Path, files: Path,
                                                         node: Callable[..., CloudManager], tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    good_query = urlencode({"key_file": sshd_server.key_file, "known_hosts": sshd_server.known_hosts})
    bad_query = urlencode({"key_file": sshd_server.wrong_key_file, "known_hosts": sshd_server.known_hosts,
                           "name": "broken", "retries": 0})
    netloc = f"{sshd_server.user}:{PASSWORD}@{sshd_server.host}:{sshd_server.port}"
    good_url = f"sftp://{netloc}{remote}?{good_query}"
    bad_url = f"sftp://{netloc}{remote}?{bad_query}"

    cm = node(hosts=[good_url, bad_url])
    good, bad = cm.hosts
    for host in (good, bad):
        assert PASSWORD not in host.url() and PASSWORD not in repr(host) and PASSWORD not in host.name
    path = files / "secret-free.txt"
    path.write_bytes(b"nothing to hide" * 100)
    digest = cm.upload(path)
    assert digest == sha256_hex(b"nothing to hide" * 100)
    info = cm.info(digest)
    assert info is not None
    urls = [entry.get("url") for entry in info["uploads"] if entry["host_name"] == good.name]
    assert urls and urls[0] == f"{good.url()}/{digest[:2]}/{digest[2:4]}/{digest}"
    assert any(entry.get("error") for entry in info["uploads"] if entry["host_name"] == "broken")
    assert PASSWORD not in cm.data_dump() and PASSWORD not in repr(info)

    error = host_error(lambda: bad.upload(path, "x", digest))
    assert "authentication failed" in str(error)
    assert PASSWORD not in str(error) and PASSWORD not in repr(error)
    cm.close()
    for stored in (tmp_path / "node-a").rglob("*"):  # the catalog, its WAL, the cache
        if stored.is_file():
            assert PASSWORD.encode() not in stored.read_bytes(), stored
    assert PASSWORD not in caplog.text


def test_a_password_with_special_characters_is_never_shown(sshd_server: SshdServer, remote: Path,
                                                           files: Path) -> None:
    password = "p@ss:w/rd%?#"
    host = make_host(f"sftp://{sshd_server.user}:{quote(password, safe='')}@{sshd_server.host}:"
                     f"{sshd_server.port}{remote}?known_hosts={quote(str(sshd_server.known_hosts))}"
                     "&retries=0")
    assert isinstance(host, SftpHost)
    shown = [host.url(), repr(host), host.name, str(host_error(lambda: put_bytes(host, files, b"x")))]
    for text in shown:
        assert password not in text and quote(password, safe="") not in text
    host.close()


# -- layout and locators -------------------------------------------------------------------


def test_objects_are_stored_by_content_and_sent_once(sftp_host: SftpHost, remote: Path, files: Path) -> None:
    data = b"content addressed" * 1000
    digest, locator = put_bytes(sftp_host, files, data)
    stored = remote / digest[:2] / digest[2:4] / digest
    assert stored.read_bytes() == data
    assert locator == f"{sftp_host.url()}/{digest[:2]}/{digest[2:4]}/{digest}"
    assert sftp_host.check(locator) == len(data)
    before = stored.stat().st_mtime_ns
    time.sleep(0.01)
    _, again = put_bytes(sftp_host, files, data, name="other name")
    assert again == locator and stored.stat().st_mtime_ns == before  # not sent again
    assert [p.name for p in remote.iterdir() if p.name.startswith(".tmp")] == []


def test_locators_are_validated(sftp_host: SftpHost, files: Path) -> None:
    data = b"only through a valid locator"
    digest, locator = put_bytes(sftp_host, files, data)
    # Another node may reach the same folder by another name: only ab/cd/<hash> counts.
    elsewhere = f"sftp://someone@nas.example:2222/mnt/other/{digest[:2]}/{digest[2:4]}/{digest}"
    assert get_bytes(sftp_host, elsewhere) == data
    hostile = [
        "sftp://root@127.0.0.1/etc/passwd",
        f"sftp://h/x/{digest[:2]}/{digest[2:4]}/{digest}/../../../../etc/passwd",
        f"sftp://h/x/{digest[:2]}/{digest[2:4]}/{digest}%2F..%2F..%2Fetc%2Fpasswd",
        f"sftp://h/x/{digest[2:4]}/{digest[:2]}/{digest}",  # folders that do not match the hash
        f"sftp://h/x/{digest[:2]}/{digest[2:4]}/{digest.upper()}",
        f"file:///x/{digest[:2]}/{digest[2:4]}/{digest}",
        f"sftp://h/x/{digest[:2]}/{digest[2:4]}/{digest[:-1]}",
        "",
        "../../etc/shadow",
    ]
    for locator_ in hostile:
        with pytest.raises(ObjectMissing):
            get_bytes(sftp_host, locator_)
        with pytest.raises(ObjectMissing):
            sftp_host.check(locator_)
        with pytest.raises(ObjectMissing):
            sftp_host.delete(locator_)
    assert get_bytes(sftp_host, locator) == data  # nothing was deleted


def test_servers_without_posix_rename_get_a_plain_rename(sftp_host: SftpHost, remote: Path, files: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(self: paramiko.SFTPClient, old: str, new: str) -> None:
        raise OSError("Operation unsupported")

    monkeypatch.setattr(paramiko.SFTPClient, "posix_rename", unsupported)
    data = b"renamed the old way" * 100
    digest, locator = put_bytes(sftp_host, files, data)
    stored = remote / digest[:2] / digest[2:4] / digest
    assert stored.read_bytes() == data
    stored.write_bytes(b"damaged")  # a plain rename never replaces: the damaged copy is removed first
    assert put_bytes(sftp_host, files, data)[1] == locator
    assert stored.read_bytes() == data
    with ThreadPoolExecutor(max_workers=4) as pool:  # the same new content from several threads
        locators = pool.map(lambda i: put_bytes(sftp_host, files, b"same", f"same{i}")[1], range(8))
        assert len(set(locators)) == 1
    assert [p.name for p in remote.iterdir() if p.name.startswith(".tmp")] == []


def test_a_failing_sink_is_a_host_error_and_not_retried(sftp_host: SftpHost, files: Path) -> None:
    _, locator = put_bytes(sftp_host, files, b"to nowhere")
    calls = []

    class Full:
        def write(self, data: bytes, /) -> int:
            calls.append(len(data))
            raise OSError(28, "No space left on device")

    error = host_error(lambda: sftp_host.download(locator, Full()))
    assert "cannot write the download" in error.reason and len(calls) == 1
    assert get_bytes(sftp_host, locator) == b"to nowhere"  # the connection is still good


# -- failures: permanent, transient, timeouts -----------------------------------------------


def test_wrong_credentials_fail_at_once_without_retries(sshd_server: SshdServer, remote: Path,
                                                        files: Path) -> None:
    patient = RetryPolicy(retries=5, base_delay=5.0)
    for host in (_make(sshd_server, remote, key_file=sshd_server.wrong_key_file, retry=patient),
                 _make(sshd_server, remote, key_file=None, password=PASSWORD, retry=patient)):
        started = time.monotonic()
        error = host_error(lambda h=host: put_bytes(h, files, b"denied"))
        assert time.monotonic() - started < 5, "an authentication failure was retried"
        assert error.host == host.name and "authentication failed" in error.reason
        assert PASSWORD not in str(error)
        host.close()


def test_nothing_listening_is_retried_then_reported(sshd_server: SshdServer, closed_port: int, remote: Path,
                                                    files: Path) -> None:
    host = _make(sshd_server, remote, port=closed_port, retry=RetryPolicy(retries=2, base_delay=0.01))
    error = host_error(lambda: put_bytes(host, files, b"x"))
    assert "connection refused" in error.reason and "after 3 attempts" in error.reason


def test_a_server_that_never_answers_times_out(sshd_server: SshdServer, silent_server: SilentServer,
                                               remote: Path, files: Path) -> None:
    host = _make(sshd_server, remote, port=silent_server.port, timeout=1, retry=RetryPolicy(retries=0))
    accepted = silent_server.accepted
    started = time.monotonic()
    error = host_error(lambda: put_bytes(host, files, b"x"))
    assert time.monotonic() - started < 4
    assert "no SSH greeting" in error.reason or "did not complete the SSH handshake" in error.reason
    assert silent_server.accepted > accepted  # it did connect, and then heard nothing
    assert error.host == host.name
    host.close()


def test_host_keys_unknown_accepted_when_new_and_refused_when_changed(sshd_server: SshdServer, remote: Path,
                                                                      files: Path, tmp_path: Path) -> None:
    known = tmp_path / "ssh" / "known_hosts"  # does not exist yet
    strict = _make(sshd_server, remote, known_hosts=known)
    error = host_error(lambda: put_bytes(strict, files, b"x"))
    assert "host_key_policy=accept-new" in error.reason

    trusting = _make(sshd_server, remote, known_hosts=known, host_key_policy="accept-new")
    _, locator = put_bytes(trusting, files, b"trusted on first use")
    assert known.read_text() == sshd_server.known_hosts_line()
    trusting.close()
    assert get_bytes(strict, locator) == b"trusted on first use"  # now known: the strict host connects
    strict.close()

    impostor = tmp_path / "impostor_known_hosts"
    other_key = Path(f"{sshd_server.wrong_key_file}.pub").read_text().split()[:2]
    impostor.write_text(f"[{sshd_server.host}]:{sshd_server.port} {' '.join(other_key)}\n")
    fooled = _make(sshd_server, remote, known_hosts=impostor, host_key_policy="accept-new")
    error = host_error(lambda: put_bytes(fooled, files, b"x"))
    assert "differs" in error.reason


class CuttingProxy:
    """Forwards TCP connections to a server; cuts chosen connections after some bytes."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.cut: dict[int, int] = {}  #: connection number -> bytes sent upstream before the cut
        self.accepted = 0
        self.live = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, daemon=True)]
        self._threads[0].start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                number = self.accepted
                self.accepted += 1
                self.live += 1
                self._sockets += [client, upstream]
            done = threading.Barrier(2, action=lambda c=client, u=upstream: self._closed(c, u))
            for source, target, limit in ((client, upstream, self.cut.get(number)), (upstream, client, None)):
                thread = threading.Thread(target=self._pump, daemon=True,
                                          args=(source, target, limit, client, upstream, done))
                self._threads.append(thread)
                thread.start()

    def _closed(self, client: socket.socket, upstream: socket.socket) -> None:
        client.close()
        upstream.close()
        with self._lock:
            self.live -= 1

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket, limit: int | None, client: socket.socket,
              upstream: socket.socket, done: threading.Barrier) -> None:
        sent = 0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    target.shutdown(socket.SHUT_WR)
                    break
                if limit is not None and sent + len(data) > limit:  # the cut: both ends lose it
                    for end in (client, upstream):
                        end.shutdown(socket.SHUT_RDWR)
                    break
                target.sendall(data)
                sent += len(data)
        except OSError:
            for end in (client, upstream):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
        finally:
            done.wait()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            for end in self._sockets:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)
        self._listener.close()


@pytest.fixture
def proxy(sshd_server: SshdServer) -> Iterator[CuttingProxy]:
    relay = CuttingProxy((sshd_server.host, sshd_server.port))
    yield relay
    relay.close()


def _through(proxy: CuttingProxy, sshd_server: SshdServer, remote: Path, tmp_path: Path,
             **kwargs: Any) -> SftpHost:
    known = tmp_path / "proxy_known_hosts"
    known.write_text(sshd_server.known_hosts_line(proxy.port))
    return _make(sshd_server, remote, port=proxy.port, known_hosts=known, **kwargs)


def test_a_connection_cut_mid_upload_is_retried_on_a_new_one(
        sshd_server: SshdServer, proxy: CuttingProxy, remote: Path, files: Path, tmp_path: Path) -> None:
    proxy.cut[0] = 300_000  # the first connection dies in the middle of the file
    host = _through(proxy, sshd_server, remote, tmp_path, retry=RetryPolicy(retries=2, base_delay=0.01))
    data = os.urandom(2_000_000)
    _, locator = put_bytes(host, files, data)
    assert proxy.accepted == 2
    assert get_bytes(host, locator) == data
    assert [p.name for p in remote.iterdir() if p.name.startswith(".tmp")] == []  # the torn copy is gone
    host.close()


def test_a_cut_without_retries_is_a_host_error(sshd_server: SshdServer, proxy: CuttingProxy, remote: Path,
                                               files: Path, tmp_path: Path) -> None:
    proxy.cut[0] = 300_000
    host = _through(proxy, sshd_server, remote, tmp_path, retry=RetryPolicy(retries=0))
    error = host_error(lambda: put_bytes(host, files, os.urandom(2_000_000)))
    assert error.host == host.name and "lost" in error.reason
    _, locator = put_bytes(host, files, b"the next upload connects again")
    assert get_bytes(host, locator) == b"the next upload connects again"
    host.close()


def test_dropped_connections_are_replaced(sshd_server: SshdServer, sftp_host: SftpHost, files: Path) -> None:
    _, first = put_bytes(sftp_host, files, b"before the drop", "a")
    assert sshd_server.drop_connections() > 0
    _, second = put_bytes(sftp_host, files, b"after the drop", "b")
    assert get_bytes(sftp_host, first) == b"before the drop"
    assert get_bytes(sftp_host, second) == b"after the drop"


def test_a_download_cut_midway_is_not_retried_into_the_same_sink(sshd_server: SshdServer, proxy: CuttingProxy,
                                                                 remote: Path, files: Path,
                                                                 tmp_path: Path) -> None:
    writer = _make(sshd_server, remote)
    data = os.urandom(8_000_000)
    _, locator = put_bytes(writer, files, data)
    writer.close()

    class Cutting(io.BytesIO):
        cut = False

        def write(self, chunk: Any, /) -> int:
            if self.tell() > 1_000_000 and not self.cut:
                self.cut = True
                sshd_server.drop_connections()
            return super().write(chunk)

    host = _through(proxy, sshd_server, remote, tmp_path, retry=RetryPolicy(retries=3, base_delay=0.01))
    out = Cutting()
    with pytest.raises(HostError):
        host.download(locator, out)
    assert len(out.getvalue()) < len(data)  # what came is a prefix, never a repeat
    assert data.startswith(out.getvalue())
    assert get_bytes(host, locator) == data
    host.close()


# -- connections ------------------------------------------------------------------------------


def test_connections_are_pooled_bounded_and_closed(sshd_server: SshdServer, proxy: CuttingProxy,
                                                   remote: Path, files: Path, tmp_path: Path) -> None:
    host = _through(proxy, sshd_server, remote, tmp_path, connections=3)
    for i in range(10):
        put_bytes(host, files, f"sequential {i}".encode(), f"s{i}")
    assert proxy.accepted == 1  # one connection, reused

    payloads = [os.urandom(50_000) for _ in range(24)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        locators = list(pool.map(lambda i: put_bytes(host, files, payloads[i], f"c{i}")[1], range(24)))
    assert proxy.accepted <= 3
    for data, locator in zip(payloads, locators, strict=True):
        assert get_bytes(host, locator) == data

    host.close()
    deadline = time.monotonic() + 5
    while proxy.live and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proxy.live == 0
    _, locator = put_bytes(host, files, b"usable after close")  # a closed host connects again
    assert get_bytes(host, locator) == b"usable after close"
    host.close()


def test_a_planted_locator_deletes_nothing_of_another_file(sftp_host: SftpHost, tmp_path: Path) -> None:
    check_a_planted_locator_on(sftp_host, tmp_path)
