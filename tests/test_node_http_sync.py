"""Catalog sync between nodes over HTTP: `cm sync --from/--to` against real `cm serve`s."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cloudmanager import CloudManager
from tests.servers.node import NodeServer

Run = Callable[..., Result]


@pytest.fixture
def cm(monkeypatch: pytest.MonkeyPatch) -> Run:
    """``cm(config, *args, token=None)``: the `cm` command in process, with
    CM_PEER_TOKEN set to ``token`` when given."""
    from cloudmanager.cli import main

    def run(config: Path, *args: str, token: str | None = None) -> Result:
        if token is None:
            monkeypatch.delenv("CM_PEER_TOKEN", raising=False)
        else:
            monkeypatch.setenv("CM_PEER_TOKEN", token)
        return CliRunner().invoke(main, ["--config", str(config), *args])

    return run


def upload(cm: Run, server: NodeServer, folder: Path, prefix: str, count: int) -> set[str]:
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{prefix}-{i}.txt"
        path.write_bytes(f"{prefix} {i} {os.urandom(8).hex()}".encode())
        paths.append(str(path))
    result = cm(server.config, "upload", *paths)
    assert result.exit_code == 0, result.output
    return {line.split()[0] for line in result.output.splitlines()}


def catalog(server: NodeServer) -> list[dict[str, object]]:
    with CloudManager(server.root / "catalog.sqlite3", server.root / "cache", 1 << 30, hosts=[]) as node:
        return sorted(json.loads(node.data_dump()), key=lambda r: str(r["filehash"]))


def exchange(cm: Run, config: Path, peer: NodeServer, direction: str) -> dict[str, int]:
    result = cm(config, "sync", f"--{direction}", peer.url, "--json", token=peer.token)
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.output)
    return report  # type: ignore[no-any-return]


def test_two_nodes_converge_both_ways_and_a_third_learns_all_from_one(
        cm: Run, node_servers: Callable[..., NodeServer], tmp_path: Path) -> None:
    a, b, c = node_servers("a"), node_servers("b"), node_servers("c")
    from_a = upload(cm, a, tmp_path / "files", "a", 30)
    from_b = upload(cm, b, tmp_path / "files", "b", 20)

    assert exchange(cm, a.config, b, "from")["added"] == 20
    assert exchange(cm, a.config, b, "to")["added"] == 30
    assert {r["filehash"] for r in catalog(a)} == from_a | from_b
    assert catalog(a) == catalog(b)

    # A repeated exchange moves nothing, either way.
    assert exchange(cm, a.config, b, "from")["records"] == 0
    assert exchange(cm, a.config, b, "to")["records"] == 0

    # A third node learns everything by pulling from one of them.
    assert exchange(cm, c.config, a, "from")["added"] == 50
    assert {r["filehash"] for r in catalog(c)} == from_a | from_b

    # The cm command on b lists every file it learned (the records say where each copy is).
    text = cm(b.config, "ls", "--json")
    assert text.exit_code == 0 and len(json.loads(text.output)) == 50


def test_new_uploads_after_a_sync_are_all_that_moves(
        cm: Run, node_servers: Callable[..., NodeServer], tmp_path: Path) -> None:
    a, b = node_servers("a"), node_servers("b")
    upload(cm, a, tmp_path / "files", "old", 5)
    exchange(cm, a.config, b, "to")
    upload(cm, a, tmp_path / "files", "new", 3)
    moved = exchange(cm, a.config, b, "to")
    assert (moved["records"], moved["added"]) == (3, 3)


def test_a_wrong_token_is_refused_and_never_shown(
        cm: Run, node_servers: Callable[..., NodeServer], tmp_path: Path) -> None:
    a, b = node_servers("a"), node_servers("b")
    upload(cm, a, tmp_path / "files", "a", 2)
    wrong = "not-the-token-1234567890"
    result = cm(a.config, "sync", "--from", b.url, token=wrong)
    assert result.exit_code == 1 and "token" in result.output
    assert wrong not in result.output and b.token not in result.output
    result = cm(a.config, "sync", "--to", b.url)  # no token at all
    assert result.exit_code == 1 and "token" in result.output
    assert catalog(b) == []
    assert cm(a.config, "sync", "--from", "ftp://127.0.0.1:1").exit_code == 2


def test_the_token_of_a_configured_cm_host_is_used(
        cm: Run, node_servers: Callable[..., NodeServer], tmp_path: Path) -> None:
    b = node_servers("b")
    a = node_servers("a", hosts=[{"url": b.url, "token": b.token}])
    upload(cm, b, tmp_path / "files", "b", 4)
    result = cm(a.config, "sync", "--from", b.url)
    assert result.exit_code == 0, result.output
    assert "4 new files" in result.output
