"""Hosts you don't trust: client-side encryption and spread (erasure-coded) files,
end to end through CloudManager and `cm`, on folder hosts and on real SFTP, WebDAV
and S3 servers."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloudmanager import CloudManager
from cloudmanager.cli import main
from cloudmanager.crypto import Key
from cloudmanager.hosts import FolderHost, Host, make_host
from cloudmanager.hosts.encrypted import encrypting
from cloudmanager.hosts.webdav import WebdavHost
from tests.servers.s3 import S3Server
from tests.servers.sshd import SshdServer
from tests.servers.webdav import WebdavServer

DATA = os.urandom(700_000)  # several chunks, several zfec segments


@pytest.fixture
def folders(tmp_path: Path) -> list[Path]:
    """Six empty folders to serve as hosts."""
    made = [tmp_path / f"host{i}" for i in range(6)]
    for folder in made:
        folder.mkdir()
    return made


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "secret plans.pdf"
    path.write_bytes(DATA)
    return path


Opener = Callable[..., CloudManager]


@pytest.fixture
def open_node(tmp_path: Path) -> Iterator[Opener]:
    """Open nodes on one catalog and cache (hosts and options as given); closed after."""
    made: list[CloudManager] = []

    def make(hosts: list[str | Host], name: str = "a", **options: object) -> CloudManager:
        folder = tmp_path / f"node-{name}"
        folder.mkdir(exist_ok=True)
        made.append(CloudManager(folder / "catalog.sqlite3", folder / "cache", 16 << 20, hosts=hosts,
                                 **options))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for cm in made:
        cm.close()


def stored_files(folders: list[Path]) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if p.is_file()]


def stop(folder: Path) -> None:
    """A stopped folder host: its folder is gone (its objects cannot be read)."""
    folder.rename(folder.with_name(folder.name + ".stopped"))


def restart(folder: Path) -> None:
    folder.with_name(folder.name + ".stopped").rename(folder)


def uris(folders: list[Path]) -> list[str | Host]:
    return [f.as_uri() for f in folders]


def assert_nothing_wrong_cached(cm: CloudManager, digest: str) -> None:
    assert not cm.on_cache(digest)
    assert cm.check(verify_hash=True).local.clean


# -- encryption -----------------------------------------------------------------------


def test_an_encrypted_host_sees_neither_bytes_nor_name_nor_hash(open_node: Opener, folders: list[Path],
                                                                source: Path) -> None:
    key = Key.generate()
    cm = open_node(uris(folders[:2]), key=key, encrypt=True)
    digest = cm.upload(source)
    assert digest
    for path in stored_files(folders[:2]):
        body = path.read_bytes()
        assert DATA[:4096] not in body and DATA[-4096:] not in body
        assert digest not in str(path) and "secret" not in str(path)
    record = cm.info(digest)
    assert record is not None and all(u["encrypted"] is True for u in record["uploads"])
    cm.evict([digest])
    path = cm.warm_up(digest)
    assert path and Path(path).read_bytes() == DATA


def test_tampered_ciphertext_is_a_host_error_and_the_next_host_serves(
        open_node: Opener, folders: list[Path], source: Path) -> None:
    cm = open_node(uris(folders[:2]), key=Key.generate(), encrypt=True)
    digest = cm.upload(source)
    assert digest
    cm.evict([digest])
    for folder in folders[:2]:  # flip one bit in the first host's copy, truncate the second's
        (stored,) = stored_files([folder])
        body = bytearray(stored.read_bytes())
        if folder == folders[0]:
            body[len(body) // 2] ^= 0x10
        else:
            del body[-1000:]
        stored.write_bytes(bytes(body))
        if folder == folders[0]:
            restored = cm.warm_up(digest)  # the second host is still intact
            assert restored and Path(restored).read_bytes() == DATA
            cm.evict([digest])
    assert cm.warm_up(digest) is False
    assert_nothing_wrong_cached(cm, digest)
    health = cm.catalog.host_health([f.name for f in folders[:2]])
    assert all("not authentic" in (health[f.name].last_error or "") for f in folders[:2])


def test_a_wrong_key_is_refused_and_a_keyless_node_reports_copies_unreadable(
        open_node: Opener, folders: list[Path], source: Path) -> None:
    key = Key.generate()
    a = open_node(uris(folders[:1]), key=key, encrypt=True)
    digest = a.upload(source)
    assert digest
    dump = a.data_dump()
    assert json.loads(dump)[0]["uploads"][0]["encrypted"] is True

    # A node that has the key reads sealed copies, even with encryption off for its uploads.
    shared = open_node(uris(folders[:1]), name="shared", key=key)
    shared.data_load(dump)
    path = shared.warm_up(digest)
    assert path and Path(path).read_bytes() == DATA

    wrong = open_node(uris(folders[:1]), name="wrong", key=Key.generate(), encrypt=True)
    wrong.data_load(dump)
    assert wrong.warm_up(digest) is False
    assert "another key" in (wrong.catalog.host_health([folders[0].name])[folders[0].name].last_error or "")
    assert_nothing_wrong_cached(wrong, digest)

    keyless = open_node(uris(folders[:1]), name="keyless")  # the same host, no key, no encryption
    keyless.data_load(dump)
    assert keyless.warm_up(digest) is False  # unreadable here, not an error...
    record = keyless.info(digest)
    assert record is not None and record["uploads"][0]["url"]  # ...and the copy is not called lost
    assert_nothing_wrong_cached(keyless, digest)


def test_encrypt_needs_a_key() -> None:
    with pytest.raises(ValueError, match="needs a key"):
        CloudManager("/nonexistent/c.db", "/nonexistent/cache", 1, hosts=[], encrypt=True)


# -- spread files -----------------------------------------------------------------------


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_any_n_minus_k_hosts_may_stop_and_one_more_is_a_clear_failure(
        open_node: Opener, folders: list[Path], source: Path, encrypt: bool) -> None:
    key = Key.generate() if encrypt else None
    cm = open_node(uris(folders[:5]), key=key, encrypt=encrypt, spread="3/5")
    digest = cm.upload(source)
    assert digest
    shares = stored_files(folders[:5])
    assert len(shares) == 5
    stored = sum(p.stat().st_size for p in shares)
    assert stored < 5 * len(DATA) / 3 * 1.01  # 5/3 of the file, not 5 copies
    if encrypt:
        assert all(DATA[:4096] not in p.read_bytes() for p in shares)
    for down in itertools.combinations(folders[:5], 2):
        cm.evict([digest])
        for folder in down:
            stop(folder)
        try:
            path = cm.warm_up(digest)
            assert path and Path(path).read_bytes() == DATA
        finally:
            for folder in down:
                restart(folder)
    cm.evict([digest])
    for folder in folders[:3]:
        stop(folder)
    assert cm.warm_up(digest) is False
    with pytest.raises(Exception, match="no host gave the file back"):
        cm.open(digest)
    assert_nothing_wrong_cached(cm, digest)


def share_files(folders: list[Path]) -> list[Path]:
    return sorted(stored_files(folders), key=lambda p: p.parent.parent.parent.name)


@pytest.mark.parametrize("damage", ["flipped bit", "truncated", "another file's share"])
def test_a_damaged_share_is_refused_and_another_share_is_used(
        open_node: Opener, folders: list[Path], source: Path, tmp_path: Path, damage: str) -> None:
    cm = open_node(uris(folders[:5]), spread="3/5")
    digest = cm.upload(source)
    other = tmp_path / "other.bin"
    other.write_bytes(os.urandom(len(DATA)))
    assert digest and cm.upload(other)
    cm.evict()
    mine = stored_files([folders[0]])
    victim = next(p for p in mine if p.read_bytes().find(bytes.fromhex(digest)) >= 0)
    body = victim.read_bytes()
    if damage == "flipped bit":
        victim.write_bytes(body[:-10] + bytes([body[-10] ^ 1]) + body[-9:])
    elif damage == "truncated":
        victim.write_bytes(body[:-10])
    else:
        (theirs,) = [p for p in mine if p != victim]
        victim.write_bytes(theirs.read_bytes())
    path = cm.warm_up(digest)
    assert path and Path(path).read_bytes() == DATA
    record = cm.catalog.record(digest)
    assert record is not None
    lost = [s for s in record.shares if not s.ok]
    assert len(lost) == 1 and lost[0].host == folders[0].name and "other bytes" in (lost[0].error or "")


def test_too_few_hosts_for_a_spread_is_refused_before_anything_is_kept(
        open_node: Opener, folders: list[Path], source: Path) -> None:
    cm = open_node(uris(folders[:2]))
    with pytest.raises(ValueError, match="needs 5 active hosts"):
        cm.upload(source, spread="3/5")
    keyless = open_node([encrypting(FolderHost(f), None) for f in folders[:3]], name="keyless")
    with pytest.raises(ValueError, match="no key"):
        keyless.upload(source, spread="2/3")
    assert cm.catalog.count() == keyless.catalog.count() == 0 and not stored_files(folders)


def test_fsck_finds_shares_lost_with_a_host_and_sync_repair_rebuilds_them(
        open_node: Opener, folders: list[Path], source: Path) -> None:
    for encrypt in (False, True):
        cm = open_node(uris(folders), name=f"repair-{encrypt}", key=Key.generate(), encrypt=encrypt)
        for folder in folders:
            shutil.rmtree(folder)
            folder.mkdir()
        hosts5 = [h for h in cm.hosts if h.name != folders[5].name]
        digest = cm.upload(source, spread="3/5")
        assert digest
        record = cm.catalog.record(digest)
        assert record is not None
        holders = {s.host for s in record.shares}
        assert len(holders) == 5 and len(hosts5) == 5
        lost_host = next(f for f in folders if f.name in holders)
        shutil.rmtree(lost_host)
        lost_host.mkdir()
        report = cm.check(hosts=True)
        assert [(d, host.split(" ")[0]) for d, host, _ in report.hosts.lost] == [(digest, lost_host.name)]
        assert cm.catalog.incomplete_spreads() == [digest]
        changes = cm.sync(repair=True)
        assert len(changes[digest]) == 1 and changes[digest][0].ok  # the lost share, and only it
        after = cm.catalog.record(digest)
        assert after is not None and sum(s.ok for s in after.shares) == 5
        assert cm.catalog.incomplete_spreads() == []
        kept = {s.index: s for s in record.shares if s.host != lost_host.name}
        assert all(after.shares[i] == share for i, share in kept.items())  # held shares untouched
        assert [s.digest for s in after.shares] == [s.digest for s in record.shares]  # the same share again
        assert len(stored_files(folders)) == 5  # no orphan share left on any host
        cm.evict([digest])
        for folder in folders:
            if folder.name in {s.host for s in after.shares if s.index < 2}:
                stop(folder)
        path = cm.warm_up(digest)
        assert path and Path(path).read_bytes() == DATA
        for folder in folders:
            if not folder.exists():
                restart(folder)


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_a_spread_most_hosts_refused_is_completed_by_sync_repair_from_the_cache(
        open_node: Opener, folders: list[Path], source: Path, encrypt: bool) -> None:
    blocked = folders[1:3]
    for folder in blocked:  # a file where the host's folder should be: uploads fail
        folder.rmdir()
        folder.write_text("in the way")
    cm = open_node(uris(folders[:3]), key=Key.generate(), encrypt=encrypt, spread="2/3")
    digest = cm.upload(source)
    assert digest and cm.on_cache(digest)
    record = cm.catalog.record(digest)
    assert record is not None and sum(s.ok for s in record.shares) == 1
    assert cm.evict([digest]) == []  # fewer than K shares: never evicted
    for folder in blocked:
        folder.unlink()
        folder.mkdir()
    assert cm.catalog.incomplete_spreads() == [digest]
    changes = cm.sync(repair=True)
    assert changes[digest] and all(u.ok for u in changes[digest])
    assert cm.catalog.incomplete_spreads() == [] and len(stored_files(folders[:3])) == 3
    assert cm.evict([digest]) == [digest]
    path = cm.warm_up(digest)
    assert path and Path(path).read_bytes() == DATA


def test_spread_records_travel_in_dumps_and_old_readers_ignore_them(
        open_node: Opener, folders: list[Path], source: Path) -> None:
    a = open_node(uris(folders[:5]), spread="2/5")
    digest = a.upload(source)
    assert digest
    dump = json.loads(a.data_dump())
    assert dump[0]["shares"]["k"] == 2 and len(dump[0]["shares"]["items"]) == 5
    b = open_node(uris(folders[:5]), name="b")
    b.data_load(json.dumps(dump))
    path = b.warm_up(digest)
    assert path and Path(path).read_bytes() == DATA
    assert json.loads(b.data_dump()) == dump
    del dump[0]["shares"]  # what a reader that does not know shares keeps
    c = open_node(uris(folders[:5]), name="c")
    c.data_load(json.dumps(dump))
    assert c.exists(digest) and c.warm_up(digest) is False


# -- real network hosts ---------------------------------------------------------------------


def test_encrypted_spread_over_sftp_webdav_and_s3(
        open_node: Opener, source: Path, sshd_server: SshdServer, webdav_server: WebdavServer,
        s3_server: S3Server, s3_bucket: str, dead_port: int) -> None:
    folder = f"/t-{secrets.token_hex(4)}"
    (webdav_server.root / folder.strip("/")).mkdir()

    def hosts(webdav_port: int) -> list[str | Host]:
        return [
            make_host(sshd_server.url(sshd_server.root / folder.strip("/")), name="sftp",
                      config=sshd_server.options()),
            WebdavHost(f"webdav://127.0.0.1:{webdav_port}{folder}", user=webdav_server.user,
                       password=webdav_server.password, name="webdav", timeout=2),
            make_host(f"s3://{s3_bucket}/vault?endpoint_url={s3_server.endpoint_url}", name="s3"),
        ]

    key = Key.generate()
    cm = open_node(hosts(webdav_server.port), key=key, encrypt=True, spread="2/3")
    digest = cm.upload(source)
    assert digest
    record = cm.catalog.record(digest)
    assert record is not None and sorted(s.host for s in record.shares if s.ok) == ["s3", "sftp", "webdav"]
    cm.close()
    # The same catalog, the WebDAV server now unreachable (N - K = 1 host stopped).
    again = open_node(hosts(dead_port), key=key, encrypt=True)
    again.evict([digest])
    path = again.warm_up(digest)
    assert path and Path(path).read_bytes() == DATA


# -- the key never leaks, and the cm command ---------------------------------------------------


def test_the_key_never_appears_in_catalog_dump_or_output(tmp_path: Path, folders: list[Path],
                                                         source: Path) -> None:
    conf = tmp_path / "config.toml"
    hosts = "".join(f'[[hosts]]\nurl = "{f.as_uri()}"\n' for f in folders[:5])
    conf.write_text(f'[catalog]\npath = "catalog.sqlite3"\n[cache]\npath = "cache"\n'
                    f'[upload]\nencrypt = true\n[encryption]\nkey_file = "node.key"\n{hosts}')
    runner = CliRunner()

    def cm(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, ["--config", str(conf), *args])
        return result.exit_code, result.output

    code, out = cm("upload", str(source))
    assert code == 2 and "cm key init" in out  # no key yet: refused, nothing kept
    code, out = cm("key", "init")
    assert code == 0
    key_file = tmp_path / "node.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert cm("key", "init")[0] != 0  # never replaced
    key = Key.load(key_file)
    assert cm("key", "show-public") == (0, key.fingerprint + "\n")
    code, exported = cm("key", "export")
    assert code == 0 and key.export() in exported

    outputs = [cm("upload", str(source)), cm("upload", "--spread", "3/5", str(folders[0].parent / "x")),
               cm("ls"), cm("stats"), cm("dump"), cm("hosts")]
    digest = outputs[0][1].split()[0]
    spread_file = tmp_path / "spread.bin"
    spread_file.write_bytes(os.urandom(50_000))
    code, out = cm("upload", "--spread", "3/5", str(spread_file))
    assert code == 0 and "(share 4): ok" in out
    spread_digest = out.split()[0]
    code, listing = cm("ls")
    assert "5 of 5 shares, needs 3" in listing
    code, info = cm("info", spread_digest)
    assert code == 0 and "5 of 5 shares, needs 3" in info
    assert cm("upload", "--spread", "3/9", str(spread_file))[0] == 1  # too few hosts
    assert cm("upload", "--spread", "9/3", str(spread_file))[0] == 2  # not a spread
    outputs += [(code, listing), (code, info), cm("get", digest, "-o", str(tmp_path / "back.pdf"))]
    assert (tmp_path / "back.pdf").read_bytes() == DATA

    secrets_ = [key.export(), key.export().split(":", 1)[1], key._secret.hex()]
    catalog = (tmp_path / "catalog.sqlite3").read_bytes()
    with sqlite3.connect(tmp_path / "catalog.sqlite3") as db:
        text = "\n".join(str(row) for table in ("files", "uploads", "shares", "hosts")
                         for row in db.execute(f"SELECT * FROM {table}"))
    for secret in secrets_:
        assert secret.encode() not in catalog and key._secret not in catalog
        assert secret not in text
        assert all(secret not in out for _, out in outputs)
        assert all(secret.encode() not in p.read_bytes() for p in stored_files(folders))


def test_a_host_record_can_encrypt_alone(tmp_path: Path, folders: list[Path], source: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text(f'[catalog]\npath = "c.sqlite3"\n[cache]\npath = "cache"\n'
                    f'[encryption]\nkey_file = "k"\n'
                    f'[[hosts]]\nurl = "{folders[0].as_uri()}"\nencrypt = true\n'
                    f'[[hosts]]\nurl = "{folders[1].as_uri()}"\n')
    runner = CliRunner()
    assert runner.invoke(main, ["--config", str(conf), "key", "init"]).exit_code == 0
    result = runner.invoke(main, ["--config", str(conf), "--json" if False else "upload", str(source)])
    assert result.exit_code == 0, result.output
    (sealed,), (plain,) = stored_files([folders[0]]), stored_files([folders[1]])
    assert plain.read_bytes() == DATA and DATA[:4096] not in sealed.read_bytes()


def test_encrypting_a_folder_host_keeps_its_abilities(tmp_path: Path) -> None:
    host = encrypting(FolderHost(tmp_path / "v"), Key.generate())
    from cloudmanager.hosts import Checker, Deleter

    assert isinstance(host, Checker) and isinstance(host, Deleter) and host.name == "v"


def test_a_damaged_key_file_stops_only_what_needs_the_key(tmp_path: Path, folders: list[Path],
                                                         source: Path) -> None:
    (tmp_path / "k").write_text("not a key")
    plain = tmp_path / "plain.toml"
    plain.write_text(f'[catalog]\npath = "c.sqlite3"\n[cache]\npath = "cache"\n[encryption]\nkey_file = "k"\n'
                     f'[[hosts]]\nurl = "{folders[0].as_uri()}"\n')
    sealed = tmp_path / "sealed.toml"
    sealed.write_text(plain.read_text() + "[upload]\nencrypt = true\n")
    runner = CliRunner()
    assert runner.invoke(main, ["--config", str(plain), "upload", str(source)]).exit_code == 0
    refused = runner.invoke(main, ["--config", str(sealed), "upload", str(source)])
    assert refused.exit_code != 0 and "not a cloudmanager key" in refused.output
