"""OpenSSH's sshd on 127.0.0.1 for the SFTP tests, plus two ways for a server to be absent.

``running_sshd(folder)`` (a context manager, usable outside pytest: the
benchmarks use it) starts ``/usr/sbin/sshd`` as TEST-SERVERS.md describes: a
host key, a client key and an authorized_keys file of its own, its own
configuration (``StrictModes no``, ``UsePAM no``, ``internal-sftp``),
``/run/sshd`` created, and it is stopped by PID at the end.  Password
authentication is enabled but no password can succeed (the test user logs in
with keys only), so a wrong password is refused by the real server.
``sshd_server`` (session scope) is that server for the tests.

``closed_port`` is a port where nothing listens (a socket bound and never
listening, so no other process takes the port meanwhile); ``silent_server`` is
a port where a thread accepts connections and never sends a byte.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
#: How long sshd may take to start answering.
START_WITHIN_S = 15.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cloudmanager-test",
                    "-f", str(path)], check=True, stdin=subprocess.DEVNULL)


def _descendants(pid: int) -> list[int]:
    """The PIDs of every process below ``pid`` (from /proc), deepest last."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            for child in map(int, children):
                found.append(child)
                pending.append(child)
    return found


@dataclass
class SshdServer:
    """A running sshd: where it listens, who may log in and with which files."""

    host: str
    port: int
    user: str
    key_file: Path  #: the client's private key (its public half is authorized)
    wrong_key_file: Path  #: a private key the server does not know
    known_hosts: Path  #: a known_hosts file holding this server's host key
    host_public_key: str  #: "ssh-ed25519 AAAA..." (to write other known_hosts lines)
    root: Path  #: a folder for the tests' objects (the server runs on this machine)
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def known_hosts_line(self, port: int | None = None) -> str:
        """The known_hosts line for this server reached at ``port`` (default: its own)."""
        port = self.port if port is None else port
        where = self.host if port == 22 else f"[{self.host}]:{port}"
        return f"{where} {self.host_public_key}\n"

    def options(self, **extra: object) -> dict[str, object]:
        """Host options that log in with the right key and trust the host key."""
        return {"key_file": str(self.key_file), "known_hosts": str(self.known_hosts), **extra}

    def url(self, folder: Path | str) -> str:
        """``sftp://user@127.0.0.1:PORT/folder`` (no options)."""
        return f"sftp://{self.user}@{self.host}:{self.port}{folder}"

    def drop_connections(self) -> int:
        """Kill (SIGKILL) every per-connection sshd process: clients see their
        connections dropped, the listener keeps accepting.  Returns how many."""
        victims = _descendants(self.process.pid)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(victims)

    def connections(self) -> int:
        """How many sshd processes serve connections now."""
        return len(_descendants(self.process.pid))


def _wait_for_banner(host: str, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_WITHIN_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}: {log.read_text(errors='replace')}")
        try:
            with socket.create_connection((host, port), timeout=1) as probe:
                if probe.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer within {START_WITHIN_S} s: {log.read_text(errors='replace')}")


@contextlib.contextmanager
def running_sshd(folder: Path) -> Iterator[SshdServer]:
    """OpenSSH's sshd on 127.0.0.1 on a free port, its keys, configuration and log in
    ``folder`` (an existing, empty folder); stopped, with every connection it still
    serves, on exit.  The objects folder is ``folder / "objects"``."""
    host_key, client_key, wrong_key = folder / "host_ed25519", folder / "client_ed25519", folder / "wrong"
    for key in (host_key, client_key, wrong_key):
        _keygen(key)
    authorized = folder / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    host_public = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    root = folder / "objects"
    root.mkdir()
    log = folder / "sshd.log"
    config = folder / "sshd_config"
    process: subprocess.Popen[bytes] | None = None
    for _ in range(3):  # the free port may be taken between the probe and sshd's bind
        port = _free_port()
        config.write_text(
            f"Port {port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {host_key}\n"
            f"PidFile {folder / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {authorized}\n"
            "PubkeyAuthentication yes\n"
            # Password authentication is on so a wrong password meets the real check;
            # root has no usable password here and keys only (prohibit-password).
            "PasswordAuthentication yes\n"
            "PermitEmptyPasswords no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "UseDNS no\n"
            "MaxStartups 64\n"
            "MaxAuthTries 10\n"
            "LogLevel INFO\n"
            "Subsystem sftp internal-sftp\n"
        )
        with open(log, "wb") as log_file:
            process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                       stdout=log_file, stderr=subprocess.STDOUT)
        try:
            _wait_for_banner("127.0.0.1", port, process, log)
            break
        except RuntimeError:
            if process.poll() is None:
                process.kill()
            process.wait()
            process = None
    if process is None:
        raise RuntimeError(f"sshd could not start: {log.read_text(errors='replace')}")
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_public}\n")
    server = SshdServer(host="127.0.0.1", port=port, user=getpass.getuser(), key_file=client_key,
                        wrong_key_file=wrong_key, known_hosts=known_hosts, host_public_key=host_public,
                        root=root, log=log, process=process)
    try:
        yield server
    finally:
        children = _descendants(process.pid)
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for pid in children:  # connections a test left open end with the server
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    """OpenSSH's sshd on 127.0.0.1 on a free port, for the whole session."""
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, never listening: refused, and reserved
        yield holder.getsockname()[1]


class SilentServer:
    """A TCP server thread that accepts connections and never sends anything."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)

    def close(self) -> None:
        """Stop accepting and close every connection held."""
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        for conn in self._held:
            conn.close()


@pytest.fixture(scope="session")
def silent_server() -> Iterator[SilentServer]:
    """A port on 127.0.0.1 that accepts connections and never answers."""
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()
