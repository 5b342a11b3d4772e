"""``cm serve`` on 127.0.0.1 for the tests: a real node server, in a subprocess.

``running_node(root)`` starts one for a fresh node in ``root`` (catalog, cache,
a folder host ``vault``, its own HOME) and stops it on exit; the ``node_server``
fixture is one for the whole session, and ``node_servers`` starts more for one
test (``node_servers(capacity=..., hosts=[...])``).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import resource
import secrets
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomlkit

from cloudmanager.nodeclient import NodeClient

LOOPBACK = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
#: How long a server may take to answer its first request (a wait, not a measure).
START_WITHIN_S = 60.0
_STOP_WITHIN_S = 15.0


@dataclass
class NodeServer:
    """A running ``cm serve``: where it answers, its token and secret, its node's files."""

    root: Path
    config: Path
    port: int
    token: str
    secret: str
    process: subprocess.Popen[bytes]
    log: Path
    ca: Path | None = None  # the certificate to trust, when serving HTTPS

    @property
    def base_url(self) -> str:
        """``http[s]://127.0.0.1:PORT``."""
        return f"{'https' if self.ca else 'http'}://{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """The node as a host: ``cm[s]://127.0.0.1:PORT``."""
        return f"{'cms' if self.ca else 'cm'}://{LOOPBACK}:{self.port}"

    @property
    def cache(self) -> Path:
        """The node's cache directory."""
        return self.root / "cache"

    @property
    def vault(self) -> Path:
        """The node's own folder host."""
        return self.root / "vault"

    def verify(self) -> ssl.SSLContext | bool:
        """What httpx needs to trust this server."""
        return ssl.create_default_context(cafile=str(self.ca)) if self.ca else True

    def output(self) -> str:
        """Everything the server wrote (stdout and stderr)."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def client(self, token: str | None = None) -> NodeClient:
        """A NodeClient of this node (with its token unless another is given); close it."""
        return NodeClient(self.base_url, self.token if token is None else token,
                          verify=str(self.ca) if self.ca else True)

    def http(self, token: str | None = None) -> httpx.Client:
        """A plain HTTP client of this node, with ``token`` as bearer if given; close it."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, verify=self.verify())

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(_STOP_WITHIN_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files in ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudmanager test node")])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "node-cert.pem", folder / "node-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def write_config(root: Path, port: int, *, token: str, secret: str, capacity: int,
                 hosts: list[dict[str, Any]] | None, tls: tuple[Path, Path] | None,
                 serve_options: dict[str, Any] | None = None) -> Path:
    """The node's config.toml: catalog, cache and folder host ``vault`` in ``root``,
    then ``hosts``, and the ``[serve]`` table (with ``serve_options`` added)."""
    (root / "vault").mkdir(parents=True, exist_ok=True)
    serve: dict[str, Any] = {"bind": f"{LOOPBACK}:{port}", "token": token, "secret": secret,
                             **(serve_options or {})}
    if tls is not None:
        serve.update(tls_cert=str(tls[0]), tls_key=str(tls[1]))
    document = {
        "catalog": {"path": str(root / "catalog.sqlite3")},
        "cache": {"path": str(root / "cache"), "capacity": capacity},
        "hosts": [{"url": (root / "vault").as_uri()}, *(hosts or [])],
        "serve": serve,
    }
    path = root / "config.toml"
    path.write_text(tomlkit.dumps(document), encoding="utf-8")
    return path


def _environment(root: Path) -> dict[str, str]:
    home = root / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("XDG_") and k not in ("CM_CONFIG", "PYTHONWARNINGS")}
    env["HOME"] = str(home)
    return env


def _limit_files(count: int) -> None:
    """In the child: at most ``count`` open files (``ulimit -n``)."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


def _wait_ready(server: NodeServer) -> str | None:
    """Wait until the server answers; None, or why it never will."""
    deadline = time.monotonic() + START_WITHIN_S
    with httpx.Client(verify=server.verify(), timeout=5) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                return f"cm serve exited with status {server.process.returncode}"
            try:
                if client.get(f"{server.base_url}/").status_code == 200:
                    return None
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    return f"cm serve did not answer within {START_WITHIN_S:g} s"


def start_node(root: Path, *, port: int | None = None, capacity: int = 1 << 30,
               hosts: list[dict[str, Any]] | None = None, token: str | None = None,
               tls: bool = False, serve: dict[str, Any] | None = None, open_files: int | None = None,
               arguments: tuple[str, ...] = ()) -> NodeServer:
    """Start ``cm serve`` for a fresh node in ``root``; fails the test, with the
    server's output, when it does not come up.  Stop it with ``.stop()``.

    ``serve`` adds keys to the ``[serve]`` table, ``open_files`` sets the server's
    ``ulimit -n``, ``arguments`` are added to ``cm serve``'s command line."""
    root.mkdir(parents=True, exist_ok=True)
    token = token or f"tok-{secrets.token_urlsafe(16)}"
    secret = secrets.token_hex(32)
    pair = self_signed(root) if tls else None
    for _ in range(3):
        chosen = port or free_port()
        config = write_config(root, chosen, token=token, secret=secret, capacity=capacity, hosts=hosts,
                              tls=pair, serve_options=serve)
        log = root / f"serve-{chosen}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "cloudmanager", "--config", str(config), "serve",
                 "--bind", f"{LOOPBACK}:{chosen}", *arguments],
                cwd=REPO, env=_environment(root), stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=None if open_files is None else partial(_limit_files, open_files))
        server = NodeServer(root, config, chosen, token, secret, process, log, pair[0] if pair else None)
        problem = _wait_ready(server)
        if problem is None:
            return server
        server.stop()
        if port is None and "address already in use" in server.output():
            continue  # another process took the free port meanwhile: another one
        pytest.fail(f"{problem}; its output:\n{server.output()}")
    pytest.fail(f"no free port for cm serve; its output:\n{server.output()}")


@contextmanager
def running_node(root: Path, **options: Any) -> Iterator[NodeServer]:
    """:func:`start_node`, stopped on exit."""
    server = start_node(root, **options)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def node_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeServer]:
    """A ``cm serve`` for the session: a fresh node (1 GiB cache, folder host ``vault``)."""
    with running_node(tmp_path_factory.mktemp("node-server")) as server:
        yield server


@pytest.fixture
def node_servers(tmp_path: Path) -> Iterator[Callable[..., NodeServer]]:
    """Start more servers for one test: ``node_servers(name="a", **start_node options)``;
    all are stopped after it."""
    started: list[NodeServer] = []

    def start(name: str = "node", **options: Any) -> NodeServer:
        started.append(start_node(tmp_path / f"served-{name}", **options))
        return started[-1]

    yield start
    for server in started:
        server.stop()
