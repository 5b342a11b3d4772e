"""Nothing lost where two caches or two nodes meet (issue "Nothing lost, nothing planted", part 1).

A catalog keeps the cache state of the caches it knows: an SQLite catalog of one
cache (a second one is refused, naming both), a PostgreSQL catalog of one cache
per node id; a cache folder belongs to one node.  Recovery never deletes bytes
that may be the only copy: it adopts or quarantines them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from cloudmanager import CloudManager
from cloudmanager.cache import OWNER_FILE
from cloudmanager.errors import CacheOwned
from tests.conftest import Run, run_cm


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """Run ``cm ARGS`` in-process in a working folder; stdout and stderr apart."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("CM_CONFIG", raising=False)
    return run_cm


def refusing_host(tmp_path: Path) -> str:
    """A folder host that refuses every upload (its folder is a plain file)."""
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    return f'[[hosts]]\nname = "vault"\nurl = "{(blocked / "vault").as_uri()}"\n'


def configuration(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(body)
    return str(path)


def test_a_second_cache_on_one_sqlite_catalog_is_refused_and_nothing_is_lost(
        cm: Run, tmp_path: Path) -> None:
    """Two configurations with their own cache and the default catalog: the second is
    refused with one line naming both caches; the first keeps its only copy."""
    host = refusing_host(tmp_path)
    a = configuration(tmp_path, "a", f'[cache]\npath = "{tmp_path / "cache-a"}"\n{host}')
    b = configuration(tmp_path, "b", f'[cache]\npath = "{tmp_path / "cache-b"}"\n{host}')
    (tmp_path / "work" / "p.bin").write_bytes(b"only here" * 100)
    digest = sha(b"only here" * 100)
    sent = cm("--config", a, "upload", "p.bin", code=1)  # no host took it: kept, exit 1
    assert digest in sent.stdout
    refused = cm("--config", b, "ls", code=2)
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert str(tmp_path / "cache-a") in refused.stderr and str(tmp_path / "cache-b") in refused.stderr
    assert not (tmp_path / "cache-b").exists()  # no trace of the refused node
    listed = json.loads(cm("--config", a, "ls", "--json").stdout)
    assert [(row["hash"], row["cached"]) for row in listed] == [(digest, True)]
    cm("--config", a, "get", digest, "-o", "back.bin")
    assert (tmp_path / "work" / "back.bin").read_bytes() == b"only here" * 100
    checked = json.loads(cm("--config", a, "fsck", "--json").stdout)
    assert checked["only_here"] == [digest] and checked["lost_files"] == []


def test_two_caches_on_one_postgres_catalog_each_keep_their_files(
        postgres_url: str, tmp_path: Path, write: Callable[..., Path]) -> None:
    """On PostgreSQL each node keeps its own cache state: opening B never drops A's files."""
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    host = (blocked / "vault").as_uri()
    with CloudManager(postgres_url, tmp_path / "cache-a", 10_000, hosts=[host]) as a:
        digest = a.upload(write("p.bin", b"only in a"))
        assert digest and a.on_cache(digest)
    with CloudManager(postgres_url, tmp_path / "cache-b", 10_000, hosts=[host]) as b:
        assert b.exists(digest) and not b.on_cache(digest)
        assert b.check().lost == [digest]  # B cannot get it: lost from where B stands
    with CloudManager(postgres_url, tmp_path / "cache-a", 10_000, hosts=[host]) as a:
        assert a.last_repair.clean and a.on_cache(digest)
        assert Path(a.warm_up(digest) or "").read_bytes() == b"only in a"
        assert a.check().only_here == [digest]


def test_one_cache_folder_for_two_node_ids_is_refused(postgres_url: str, tmp_path: Path,
                                                      write: Callable[..., Path]) -> None:
    """The README's fleet block taken literally: two node ids, one cache folder."""
    cache = tmp_path / "cache"
    with CloudManager(postgres_url, cache, 10_000, hosts=["memory://m"], node="nas") as nas:
        digest = nas.upload(write("f", b"cached by nas"))
        assert digest
    with pytest.raises(CacheOwned, match="belongs to node 'nas'"):
        CloudManager(postgres_url, cache, 10_000, hosts=["memory://m"], node="laptop")
    with CloudManager(postgres_url, cache, 10_000, hosts=["memory://m"], node="nas") as nas:
        assert nas.last_repair.clean and nas.on_cache(digest)


def test_a_cache_folder_of_another_sqlite_catalog_is_refused(tmp_path: Path,
                                                             write: Callable[..., Path]) -> None:
    cache = tmp_path / "cache"
    with CloudManager(tmp_path / "one.sqlite3", cache, 10_000, hosts=["memory://m"]) as one:
        digest = one.upload(write("f", b"kept by one"))
    with pytest.raises(CacheOwned, match=r"one\.sqlite3"):
        CloudManager(tmp_path / "two.sqlite3", cache, 10_000, hosts=["memory://m"])
    with CloudManager(tmp_path / "one.sqlite3", cache, 10_000, hosts=["memory://m"]) as one:
        assert digest and one.on_cache(digest)


def test_a_cache_whose_old_folder_is_gone_is_let_in(tmp_path: Path, write: Callable[..., Path]) -> None:
    """A catalog whose recorded cache folder is no longer a cache of it takes the new one."""
    catalog = tmp_path / "catalog.sqlite3"
    with CloudManager(catalog, tmp_path / "old", 10_000, hosts=["memory://m"]) as cm:
        digest = cm.upload(write("f", b"on a host"))
    (tmp_path / "old" / OWNER_FILE).unlink()
    with CloudManager(catalog, tmp_path / "new", 10_000, hosts=["memory://m"]) as cm:
        assert digest and cm.exists(digest) and cm.warm_up(digest)
        assert cm.catalog.cache_owner() == str((tmp_path / "new").resolve())


def uncount(cm: CloudManager, digest: str) -> None:
    """Make the catalog forget that a file is cached, behind the manager's back."""
    with sqlite3.connect(cm.catalog.path) as db:
        db.execute("UPDATE files SET cached = 0 WHERE hash = ?", (digest,))


def test_an_uncounted_cache_file_that_verifies_is_adopted_not_removed(
        tmp_path: Path, write: Callable[..., Path]) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    catalog, cache = tmp_path / "catalog.sqlite3", tmp_path / "cache"
    with CloudManager(catalog, cache, 10_000, hosts=[(blocked / "v").as_uri()]) as cm:
        digest = cm.upload(write("f", b"the only copy"))
        assert digest
        uncount(cm, digest)
    with CloudManager(catalog, cache, 10_000, hosts=[(blocked / "v").as_uri()]) as cm:
        assert cm.last_repair.adopted == [digest] and cm.on_cache(digest)
        assert cm.usage_ratio() == len(b"the only copy") / 10_000
        assert Path(cm.warm_up(digest) or "").read_bytes() == b"the only copy"
        assert cm.last_repair.describe() == "1 file found in the cache and counted again"


def test_bytes_that_do_not_verify_are_quarantined_listed_and_purged_only_on_request(
        cm: Run, tmp_path: Path) -> None:
    vault = (tmp_path / "vault").as_uri()
    conf = configuration(tmp_path, "a", f'[catalog]\npath = "{tmp_path / "catalog.sqlite3"}"\n'
                                         f'[cache]\npath = "{tmp_path / "cache"}"\n'
                                         f'[[hosts]]\nname = "vault"\nurl = "{vault}"\n')
    (tmp_path / "work" / "f").write_bytes(b"right bytes")
    digest = sha(b"right bytes")
    cm("--config", conf, "upload", "f")
    cached = tmp_path / "cache" / digest[:2] / digest[2:4] / digest
    with sqlite3.connect(tmp_path / "catalog.sqlite3") as db:
        db.execute("UPDATE files SET cached = 0 WHERE hash = ?", (digest,))
    cached.write_bytes(b"wrong bytes")  # same size, other bytes: not the file
    unknown = "0" * 64
    (tmp_path / "cache" / "00" / "00").mkdir(parents=True)
    (tmp_path / "cache" / "00" / "00" / unknown).write_bytes(b"a file no catalog knows")
    first = cm("--config", conf, "fsck", code=1)  # opening quarantined both: mended at open
    assert first.stdout.count("quarantined: ") == 2
    assert "2 of them mended when the node was opened" in first.stdout
    quarantine = tmp_path / "catalog.sqlite3.quarantine"
    kept = sorted(p.read_bytes() for p in quarantine.iterdir())
    assert kept == [b"a file no catalog knows", b"wrong bytes"]
    again = cm("--config", conf, "fsck")  # still listed, nothing new found
    assert again.stdout.count("quarantined: ") == 2
    assert "with --repair" in cm("--config", conf, "fsck", "--purge", code=2).stderr
    cm("--config", conf, "fsck", "--repair")
    assert len(list(quarantine.iterdir())) == 2  # a repair alone keeps them
    purged = json.loads(cm("--config", conf, "fsck", "--repair", "--purge", "--json").stdout)
    assert purged["figures"]["quarantine entries deleted"] == 2 and list(quarantine.iterdir()) == []
    cm("--config", conf, "get", digest, "-o", "back")  # the right bytes come back from the host
    assert (tmp_path / "work" / "back").read_bytes() == b"right bytes"


def test_fsck_names_lost_files_and_exits_1(cm: Run, tmp_path: Path) -> None:
    """A known file that no host holds and no cache here holds is lost: fsck says so."""
    conf = configuration(tmp_path, "a", f'[catalog]\npath = "{tmp_path / "catalog.sqlite3"}"\n'
                                         f'[cache]\npath = "{tmp_path / "cache"}"\n{refusing_host(tmp_path)}')
    (tmp_path / "work" / "f").write_bytes(b"soon lost")
    digest = sha(b"soon lost")
    cm("--config", conf, "upload", "f", code=1)
    assert "only in this cache: " + digest in cm("--config", conf, "fsck").stdout
    cache_file = tmp_path / "cache" / digest[:2] / digest[2:4] / digest
    cache_file.unlink()  # the only copy, removed by hand
    checked = cm("--config", conf, "fsck", code=1)
    assert f"lost file: {digest}" in checked.stdout
    assert json.loads(cm("--config", conf, "fsck", "--json", code=1).stdout)["lost_files"] == [digest]


def test_the_mended_at_open_report_is_one_plain_line(tmp_path: Path, write: Callable[..., Path],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    catalog, cache = tmp_path / "catalog.sqlite3", tmp_path / "cache"
    with CloudManager(catalog, cache, 10_000, hosts=["memory://m"]):
        pass
    with caplog.at_level("WARNING"), CloudManager(catalog, cache, 10_000, hosts=["memory://m"]):
        pass
    assert caplog.records == []  # nothing mended: nothing said
    (cache / ".tmp-0123456789abcdef").write_bytes(b"half")
    (cache / "ab" / "cd").mkdir(parents=True)
    (cache / "ab" / "cd" / "junk").write_bytes(b"?")
    with caplog.at_level("WARNING"), CloudManager(catalog, cache, 10_000, hosts=["memory://m"]):
        pass
    (said,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "\n" not in said and "RepairReport" not in said and "[" not in said
    assert said.endswith("1 file unknown moved to the quarantine (cm fsck lists it); "
                         "1 file left half-written removed")


def test_upload_again_retries_the_hosts_that_failed_instead_of_reprinting_old_errors(
        cm: Run, tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    conf = configuration(tmp_path, "a", f'[catalog]\npath = "{tmp_path / "catalog.sqlite3"}"\n'
                                         f'[cache]\npath = "{tmp_path / "cache"}"\n'
                                         f'[[hosts]]\nname = "vault"\nurl = "{(blocked / "v").as_uri()}"\n')
    (tmp_path / "work" / "p.bin").write_bytes(b"retry me")
    first = cm("--config", conf, "upload", "p.bin", code=1)
    assert "vault: error (cannot store" in first.stdout
    assert first.stderr.startswith("cm: p.bin reached no host, kept in the cache (cm sync sends it): vault: ")
    blocked.unlink()  # the host works again
    blocked.mkdir()
    again = cm("--config", conf, "upload", "p.bin")
    assert again.stdout.strip().endswith("p.bin  vault: ok") and again.stderr == ""
    assert list((blocked / "v").rglob(sha(b"retry me")))
    third = cm("--config", conf, "upload", "p.bin")  # nothing to retry: the recorded state
    assert third.stdout.strip().endswith("vault: ok")


def test_the_fleet_block_taken_literally_refuses_the_second_node_id_on_one_cache(
        cm: Run, tmp_path: Path, postgres_url: str) -> None:
    """Two configurations from the README's fleet block, node ids web-1 and web-2, and no
    [cache]: both name the default cache folder; the second node is refused, exit 2."""
    host = f'[[hosts]]\nname = "vault"\nurl = "{(tmp_path / "vault").as_uri()}"\n'
    one = configuration(tmp_path, "web-1", f'[catalog]\nurl = "{postgres_url}"\nnode = "web-1"\n{host}')
    two = configuration(tmp_path, "web-2", f'[catalog]\nurl = "{postgres_url}"\nnode = "web-2"\n{host}')
    (tmp_path / "work" / "f").write_bytes(b"cached on web-1")
    cm("--config", one, "upload", "f")
    refused = cm("--config", two, "ls", code=2)
    assert refused.stderr.count("\n") == 1 and "belongs to node 'web-1'" in refused.stderr
    listed = json.loads(cm("--config", one, "ls", "--cached", "--json").stdout)
    assert [row["hash"] for row in listed] == [sha(b"cached on web-1")]


def test_adoption_keeps_to_the_capacity_but_never_drops_an_only_copy(
        tmp_path: Path, write: Callable[..., Path]) -> None:
    """An uncounted file that verifies is counted within the capacity; when it cannot
    fit, a copy some host holds goes, a file no host holds is counted over capacity."""
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    for hosts, only_copy in ((["memory://m"], False), ([(blocked / "v").as_uri()], True)):
        catalog, cache = tmp_path / f"{only_copy}.sqlite3", tmp_path / f"cache-{only_copy}"
        with CloudManager(catalog, cache, 100, hosts=hosts) as cm:
            pinned = cm.upload(write(f"pinned-{only_copy}", b"p" * 60))
            found = cm.upload(write(f"found-{only_copy}", b"f" * 30))
            assert pinned and found and cm.pin(pinned)
            uncount(cm, found)
        with CloudManager(catalog, cache, 70, hosts=hosts) as cm:  # 60 pinned: 30 more cannot fit
            assert cm.last_repair.adopted == [found]
            assert cm.on_cache(found) is only_copy and cm.path(found).exists() is only_copy
            assert cm.usage_ratio() == (90 / 70 if only_copy else 60 / 70)
