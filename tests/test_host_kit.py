"""The host kit: the pieces every host kind shares, and the imports that keep it apart."""

from __future__ import annotations

import ast
import importlib
import os
import struct
from pathlib import Path

import pytest

import cloudmanager
from cloudmanager import layout
from cloudmanager.hosts.registry import RETRY_OPTIONS, Option, read_options, seconds, secret_from_env
from cloudmanager.hosts.sftp_reads import Reader

PACKAGE = Path(cloudmanager.__file__).parent


def _imports(module: Path) -> set[str]:
    """The cloudmanager modules a source file imports (relative imports resolved)."""
    name = ".".join(module.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = name if module.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
            target = ".".join([*base, node.module] if node.module else base) if node.level else node.module
            if target:
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
    return {item for item in found if item.startswith("cloudmanager")}


def test_the_node_client_and_the_cache_import_nothing_of_the_hosts() -> None:
    for module in ("nodeclient.py", "cache.py"):
        hosts = {name for name in _imports(PACKAGE / module) if name.startswith("cloudmanager.hosts")}
        assert not hosts, f"{module} imports {sorted(hosts)}"


DIGEST = "ab" + "cd" + "e" * 60


def test_the_layout_places_and_reads_back_a_digest() -> None:
    assert layout.sharded(DIGEST) == f"ab/cd/{DIGEST}"
    assert layout.digest_at_end(f"/vault/{layout.sharded(DIGEST)}") == DIGEST
    assert layout.digest_at_end(f"remote:{layout.sharded(DIGEST)}", lead=":/") == DIGEST
    assert layout.placed("ab", "cd", DIGEST) and not layout.placed("ab", "ce", DIGEST)


def test_the_layout_refuses_what_is_not_a_digest_in_its_own_place() -> None:
    for bad in (f"/00/00/{DIGEST}", f"/vault/ab/cd/{DIGEST}\n", f"/vault/{DIGEST}",
                f"remote:{layout.sharded(DIGEST)}", f"/ab/cd/{DIGEST.upper()}",
                f"/ab/cd/{DIGEST}/x", "/ab/cd/abcd"):
        assert layout.digest_at_end(bad) is None, bad


def test_options_are_declared_as_data_and_read_once() -> None:
    declared = (Option("timeout", seconds, 30.0, "seconds"), Option("name_of", str, None, "text"),
                *RETRY_OPTIONS)
    assert read_options({}, declared, "demo") == {"timeout": 30.0, "name_of": None}
    assert read_options({"timeout": "5", "retries": "2"}, declared, "demo") == \
        {"timeout": 5.0, "name_of": None, "retries": "2"}
    with pytest.raises(ValueError, match=r"unknown demo option 'colour' \(known: name_of, retries"):
        read_options({"colour": "red"}, declared, "demo")
    with pytest.raises(ValueError, match="the demo option timeout must be positive"):
        read_options({"timeout": "0"}, declared, "demo")


@pytest.mark.parametrize("module", ["sftp", "webdav", "s3", "rclone", "node"])
def test_every_kind_with_options_declares_them_with_help(module: str) -> None:
    declared = importlib.import_module(f"cloudmanager.hosts.{module}").OPTIONS
    assert declared and all(isinstance(item, Option) and item.help for item in declared)
    assert {"retries", "retry_delay"} <= {item.name for item in declared}


def test_a_secret_is_read_from_the_environment_variable_an_option_names(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CM_TEST_KIT_SECRET", "s3cret")
    monkeypatch.delenv("CM_TEST_KIT_UNSET", raising=False)
    assert secret_from_env("CM_TEST_KIT_SECRET", "password_env") == "s3cret"
    assert secret_from_env(None, "password_env") is None
    with pytest.raises(ValueError, match=r"CM_TEST_KIT_UNSET \(password_env\) is not set"):
        secret_from_env("CM_TEST_KIT_UNSET", "password_env")


class _ShortServer:
    """An in-memory SFTP v3 server behind a fake channel: its READ answers hold at most
    ``most`` bytes, as servers with a smaller read limit than OpenSSH's answer."""

    def __init__(self, data: bytes, most: int):
        self.data, self.most = data, most
        self.outgoing = bytearray()
        self.closed = False

    # the paramiko.Transport and paramiko.Channel methods the reader uses
    def open_session(self, timeout: float | None = None) -> _ShortServer:
        return self

    def settimeout(self, timeout: float) -> None:
        pass

    def invoke_subsystem(self, name: str) -> None:
        assert name == "sftp"

    def close(self) -> None:
        self.closed = True

    def recv(self, size: int) -> bytes:
        taken = bytes(self.outgoing[:min(size, 7)])  # in small pieces, to test reassembly
        del self.outgoing[:len(taken)]
        return taken

    def sendall(self, packet: bytes) -> None:
        kind, body = packet[4], packet[5:]
        if kind == 1:  # INIT
            self._answer(2, struct.pack(">I", 3))
            return
        ident = body[:4]
        if kind == 3:  # OPEN
            self._answer(102, ident + struct.pack(">I", 1) + b"h")
        elif kind == 5:  # READ: handle (4 + 1 bytes), offset, length
            offset, length = struct.unpack(">QI", body[9:21])
            piece = self.data[offset:offset + min(length, self.most)]
            if piece:
                self._answer(103, ident + struct.pack(">I", len(piece)) + piece)
            else:
                self._answer(101, ident + struct.pack(">I", 1) + struct.pack(">I", 3) + b"EOF" + b"\0" * 4)
        elif kind == 4:  # CLOSE
            self._answer(101, ident + b"\0" * 12)

    def _answer(self, kind: int, payload: bytes) -> None:
        self.outgoing += struct.pack(">IB", len(payload) + 1, kind) + payload


def test_sftp_reads_ask_again_after_a_short_answer() -> None:
    data = os.urandom(300_000)
    server = _ShortServer(data, most=10_000)
    reader = Reader(server, 5.0)  # type: ignore[arg-type]
    got = b"".join(reader.pieces("/x", len(data), 32 * 1024, 128 * 1024))
    reader.close()
    assert got == data and server.closed
