"""check() and cm fsck: the catalog tells the truth about the cache and the hosts."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloudmanager.cli import main
from tests.conftest import Factory


def damage(cm_root: Path, tmp_path: Path) -> None:
    """A leftover temp file and a stray file in the cache."""
    (cm_root / ".tmp-0123456789abcdef").write_bytes(b"half")
    (cm_root / "ee" / "ee").mkdir(parents=True, exist_ok=True)
    (cm_root / "ee" / "ee" / ("e" * 64)).write_bytes(b"stray")


def test_a_clean_node_checks_clean(node: Factory, write: Callable[..., Path], tmp_path: Path) -> None:
    cm = node(hosts=[(tmp_path / "vault").as_uri()])
    assert cm.upload(write("f", b"fine"))
    report = cm.check(hosts=True, verify_hash=True)
    assert report.problems == 0 and report.hosts is not None and report.hosts.checked == 1


def test_check_finds_without_changing_then_repair_mends(
        node: Factory, write: Callable[..., Path], tmp_path: Path) -> None:
    cm = node(hosts=[(tmp_path / "vault").as_uri()])
    digest = cm.upload(write("f", b"original bytes"))
    other = cm.upload(write("g", b"other file"))
    assert digest and other
    damage(cm.cache.root, tmp_path)
    cm.path(digest).write_bytes(b"ORIGINAL bytes")  # same size, other bytes
    cm.path(other).unlink()
    with sqlite3.connect(cm.catalog.path) as db:
        db.execute("UPDATE state SET cached_bytes = cached_bytes + 1")
    found = cm.check(verify_hash=True)
    local = found.local
    assert (local.removed_temps, local.quarantined, local.uncounted, local.damaged, local.recounted) == \
        (1, ["e" * 64], [other], [digest], True)
    assert found.problems == 5 and not found.mended
    assert (cm.cache.root / ".tmp-0123456789abcdef").exists()  # nothing changed yet
    assert cm.on_cache(other)
    mended = cm.check(repair=True, verify_hash=True)
    assert mended.problems == 5 and mended.mended
    assert cm.check(verify_hash=True).problems == 0
    assert Path(cm.warm_up(digest) or "").read_bytes() == b"original bytes"


def test_lost_host_copies_are_recorded_and_sent_again(
        node: Factory, write: Callable[..., Path], tmp_path: Path) -> None:
    vault, spare = tmp_path / "vault", tmp_path / "spare"
    cm = node(hosts=[vault.as_uri(), spare.as_uri()])
    digest = cm.upload(write("f", b"kept twice"))
    assert digest
    (next(vault.rglob(digest))).unlink()
    (next(spare.rglob(digest))).write_bytes(b"kept twicE")  # same size: only the hash shows it
    sizes_only = cm.check(hosts=True)
    assert sizes_only.hosts is not None and [h for _, h, _ in sizes_only.hosts.lost] == ["vault"]
    assert {u["host_name"]: "url" in u for u in cm.info(digest)["uploads"]} == {"vault": False, "spare": True}
    report = cm.check(hosts=True, verify_hash=True, repair=True)
    assert report.hosts is not None and [h for _, h, _ in report.hosts.lost] == ["spare"]
    assert report.resent == 2 and report.mended  # both hosts got it again
    assert cm.check(hosts=True, verify_hash=True).problems == 0


def test_cm_fsck_exit_status_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.txt").write_bytes(b"fsck me")
    runner = CliRunner()
    assert runner.invoke(main, ["upload", "f.txt"]).exit_code == 0
    clean = runner.invoke(main, ["fsck", "--hosts", "--hash"])
    assert clean.exit_code == 0 and "no problem found" in clean.stdout
    cache = Path.home() / ".local/share/cloudmanager/cache"
    damage(cache, tmp_path)
    found = runner.invoke(main, ["fsck", "--json"])
    assert found.exit_code == 1  # found (and, since opening a node mends its cache, mended)
    assert json.loads(found.stdout)["problems"] == 2 and json.loads(found.stdout)["mended_at_open"] == 2
    assert runner.invoke(main, ["fsck"]).exit_code == 0
    damage(cache, tmp_path)
    repaired = runner.invoke(main, ["fsck", "--repair"])
    assert repaired.exit_code == 0 and "2 problem(s) mended" in repaired.stdout
    vault = Path.home() / ".local/share/cloudmanager/vault"
    next(p for p in vault.rglob("*") if p.is_file()).unlink()
    lost = runner.invoke(main, ["fsck", "--hosts"])
    assert lost.exit_code == 1 and "lost: " in lost.stdout and "not there any more" in lost.stdout
    assert runner.invoke(main, ["fsck", "--hosts", "--repair"]).exit_code == 0
    assert runner.invoke(main, ["fsck", "--hosts", "--hash"]).exit_code == 0
