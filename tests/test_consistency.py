"""The catalog and the cache agree: after hand-made damage, on reopen, across versions."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from cloudmanager import CloudManager
from cloudmanager.cache import OWNER_FILE
from cloudmanager.catalog import SCHEMA_VERSION, Catalog, CatalogError
from cloudmanager.hosts import MemoryHost
from tests.conftest import Factory

DATA = Path(__file__).parent / "data"


def reopen(cm: CloudManager, capacity: int | None = None) -> CloudManager:
    cm.close()
    return CloudManager(cm.catalog.path, cm.cache.root, capacity or cm.capacity, hosts=cm.hosts)


def disk_bytes(cm: CloudManager) -> int:
    return sum(p.stat().st_size for p in cm.cache.root.rglob("*") if p.is_file() and p.name != OWNER_FILE)


def test_reopen_removes_leftovers_and_quarantines_strays(node: Factory, write: Callable[..., Path]) -> None:
    cm = node()
    digest = cm.upload(write("keep", b"keep me"))
    assert digest
    (cm.cache.root / ".tmp-deadbeef").write_bytes(b"half a file")
    stray = "f" * 64
    (cm.cache.root / "ff" / "ff").mkdir(parents=True)
    (cm.cache.root / "ff" / "ff" / stray).write_bytes(b"unknown")
    (cm.cache.root / "ab" / "cd").mkdir(parents=True)
    (cm.cache.root / "ab" / "cd" / "junk").write_bytes(b"misplaced")
    cm = reopen(cm)
    try:
        report = cm.last_repair
        assert report.removed_temps == 1 and sorted(report.quarantined) == ["ab/cd/junk", stray]
        assert [p.name for p in cm.cache.root.rglob("*") if p.is_file() and p.name != OWNER_FILE] == [digest]
        assert cm.on_cache(digest)
        kept = {path.name: path.read_bytes() for path, _ in cm.quarantined()}
        assert kept == {"ab_cd_junk": b"misplaced", f"ff_ff_{stray}": b"unknown"}  # nothing deleted
    finally:
        cm.close()


def test_a_temp_file_being_written_is_left_alone(node: Factory) -> None:
    cm = node()
    with cm.cache.temp() as temp:
        temp.file.write(b"in progress")
        assert cm.repair().removed_temps == 0
        assert temp.path.exists()
    assert not temp.path.exists()


def test_a_cached_file_removed_by_hand_is_fetched_again(node: Factory, write: Callable[..., Path]) -> None:
    cm = node()
    digest = cm.upload(write("f", b"will vanish"))
    assert digest
    cm.path(digest).unlink()
    path = cm.warm_up(digest)  # noticed at use: fetched again
    assert path and Path(path).read_bytes() == b"will vanish"
    cm.path(digest).write_bytes(b"short")
    cm = reopen(cm)
    try:
        assert cm.last_repair.uncounted == [digest]
        assert not cm.on_cache(digest) and cm.usage_ratio() == 0
        assert Path(cm.warm_up(digest) or "").read_bytes() == b"will vanish"
    finally:
        cm.close()


def test_drifted_totals_are_recounted(node: Factory, write: Callable[..., Path]) -> None:
    cm = node(capacity=1000)
    assert cm.upload(write("f", b"x" * 100))
    with sqlite3.connect(cm.catalog.path) as db:
        db.execute("UPDATE state SET cached_bytes = 999")
    cm = reopen(cm)
    try:
        assert cm.last_repair.recounted
        assert cm.usage_ratio() == pytest.approx(0.1) and disk_bytes(cm) == 100
    finally:
        cm.close()


def test_a_smaller_capacity_evicts_on_open(node: Factory, write: Callable[..., Path]) -> None:
    cm = node(capacity=1000)
    hashes = [cm.upload(write(f"f{i}", bytes([i]) * 100)) for i in range(5)]
    cm = reopen(cm, capacity=250)
    try:
        assert cm.last_repair.evicted == 3
        assert [cm.on_cache(h) for h in hashes] == [False, False, False, True, True]
        assert disk_bytes(cm) == 200 and cm.usage_ratio() == pytest.approx(0.8)
    finally:
        cm.close()


def test_foreign_files_in_the_cache_root_are_left_alone(node: Factory) -> None:
    cm = node()
    mine = cm.cache.root / "notes.txt"
    mine.write_text("not a cache file")
    assert cm.repair().foreign == [str(mine)]
    assert mine.exists()


def test_an_older_catalog_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript((DATA / "catalog_v1.sql").read_text())
    with CloudManager(path, tmp_path / "cache", 100, hosts=["memory://vault"]) as cm:
        assert cm.catalog.schema_version() == SCHEMA_VERSION
        assert cm.exists("1" * 64) and cm.exists("2" * 64)
        seqs = dict(cm.catalog._db.execute("SELECT hash, seq FROM files"))
        assert sorted(seqs.values()) == [1, 2]
        assert cm.catalog.counts(["vault"]) == {"files": 2, "cached": 0, "pinned": 0, "pending": 1}
        assert cm.data_load('{"version":"0.2","datetime":1,"filename":"n","filesize":3,'
                            f'"filehash":"{"3" * 64}","uploads":[]}}') == 1
        assert cm.catalog._db.execute("SELECT seq FROM files WHERE hash = ?", ("3" * 64,)).fetchone()[0] > 2
    fresh = tmp_path / "fresh.sqlite3"
    Catalog(fresh).close()
    assert schema_of(path) == schema_of(fresh)


def schema_of(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as db:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        shape = {name: sorted(db.execute(f"PRAGMA table_info({name})").fetchall()) for name in names}
        shape["objects"] = sorted(db.execute("SELECT type, name FROM sqlite_master").fetchall())
        return shape


def test_a_catalog_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    Catalog(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(CatalogError, match="upgrade cloudmanager"):
        Catalog(path)


def test_other_sqlite_files_and_garbage_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(CatalogError, match="not a cloudmanager catalog"):
        Catalog(other)
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CatalogError):
        Catalog(garbage)


def test_relocate_records_the_new_place_before_removing_the_old(
        node: Factory, write: Callable[..., Path], tmp_path: Path) -> None:
    host = MemoryHost("m")
    cm = node(hosts=[host])
    kept = cm.upload(write("kept", b"on a host"))
    assert kept
    host.objects.clear()
    cm.catalog.drop_upload(kept, "m")  # now held by no host: the cache holds its only copy
    old = cm.cache.root
    seen: list[bool] = []

    def refuse(new: Path) -> None:
        tail = Path(kept[:2], kept[2:4], kept)
        seen.append((old / tail).exists() and (new / tail).exists())
        raise OSError("the configuration cannot be written")

    with pytest.raises(OSError, match="cannot be written"):
        cm.relocate(tmp_path / "new", on_switch=refuse)
    assert seen == [True]  # both copies existed when the switch was to be recorded
    assert not (tmp_path / "new").exists() and cm.cache.root == old and cm.on_cache(kept)
    report = cm.relocate(tmp_path / "new", on_switch=lambda new: seen.append(old.exists()))
    assert report.switched and seen == [True, True] and not old.exists()
    assert Path(cm.warm_up(kept) or "").read_bytes() == b"on a host"
