"""Hostile input: oversized dumps and fields, binary files, names and URLs that try to escape."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloudmanager import CloudManager, InvalidDump, payload
from cloudmanager.cli import main
from tests.conftest import Factory

H = "a" * 64


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")}


def test_a_dump_over_the_bound_is_refused_before_parsing(node: Factory,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cm = node()
    monkeypatch.setattr(payload, "MAX_DUMP_BYTES", 1000)
    with pytest.raises(InvalidDump, match="larger than 0 MiB: load it in parts"):
        cm.data_load("[" + " " * 2000 + "]")


def test_a_100_mb_field_is_a_clear_error(node: Factory) -> None:
    cm = node()
    record = {"version": "0.2", "datetime": "1", "filename": "x" * 100_000_000, "filesize": "1",
              "filehash": H, "uploads": []}
    with pytest.raises(InvalidDump, match=r"filename.*longer than 255 bytes"):
        cm.data_load(json.dumps(record))
    assert cm.catalog.count() == 0


@pytest.mark.parametrize("name, kept", [
    ("../../../../etc/cron.d/evil", "evil"),
    ("/etc/passwd", "passwd"),
    ("C:\\Windows\\System32\\drivers\\etc\\hosts", "hosts"),
    ("nul\x00byte.txt", "nulbyte.txt"),
    ("line\nbreak\r.txt", "linebreak.txt"),
    ("LPT1.txt", "_LPT1.txt"),
    ("..\u2028..evil", "evil"),
])
def test_names_never_escape_and_are_cleaned(node: Factory, tmp_path: Path, name: str, kept: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cm = node()
    before = files_under(tmp_path)
    cm.data_load(json.dumps({"version": "0.2", "datetime": 1, "filename": name, "filesize": 1, "filehash": H,
                             "uploads": [{"host_name": "m", "url": f"memory://m/{H}"}]}))
    assert cm.info(H)["filename"] == kept
    assert files_under(tmp_path) - before <= {p for p in tmp_path.rglob("*") if "node-a" in p.parts}
    # cm get writes under the cleaned name, in the current directory, never elsewhere
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["get", H])
    assert out.exit_code == 1  # the memory host holds no such bytes in this process: not fetched
    assert not (tmp_path / kept).exists() and not Path("/etc/cron.d/evil").exists()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "memory://m/../../x", "http://127.0.0.1:1/x",
                                 "file://" + "/a" * 500])
def test_hostile_locators_from_a_dump_are_refused_by_the_hosts(node: Factory, tmp_path: Path,
                                                                url: str) -> None:
    vault = tmp_path / "vault"
    cm = node(hosts=[vault.as_uri(), "memory://m"])
    dump = json.dumps({"version": "0.2", "datetime": 1, "filename": "x", "filesize": 4,
                       "filehash": H, "uploads": [{"host_name": "vault", "url": url},
                                                  {"host_name": "m", "url": url}]})
    with pytest.raises(InvalidDump, match=r"record 0, field 'uploads'.*cannot be this file's copy"):
        cm.data_load(dump)  # refused by the merge: nothing of it is stored
    assert cm.catalog.count() == 0
    # Entries stored before locators were checked are refused again at download time.
    cm.catalog.merge(payload.parse(dump).records)
    assert cm.warm_up(H) is False
    assert all("url" not in u for u in cm.info(H)["uploads"])  # both recorded as lost copies


def test_sql_in_hashes_reaches_no_sql(node: Factory) -> None:
    cm = node()
    for bad in ["' OR 1=1; --", "a" * 63 + "'", "a" * 64 + "' OR '1'='1", "%", "_" * 64]:
        assert not cm.exists(bad) and not cm.on_cache(bad) and cm.warm_up(bad) is None
        assert cm.info(bad) is None and cm.forget(bad) is None and not cm.pin(bad)
    assert cm.catalog.count() == 0


def test_cm_load_refuses_binary_and_oversized_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "binary.json").write_bytes(os.urandom(4096))
    out = CliRunner().invoke(main, ["load", "binary.json"])
    assert out.exit_code == 2 and "not UTF-8" in out.stderr
    monkeypatch.setattr(payload, "MAX_DUMP_BYTES", 100)
    (tmp_path / "big.json").write_text("[" + " " * 200 + "]")
    out = CliRunner().invoke(main, ["load", "big.json"])
    assert out.exit_code == 2 and "load it in parts" in out.stderr


@pytest.mark.parametrize("url, message", [
    ("sftp://user:hunter2@127.0.0.1:1/x", "hunter2"),
    ("webdav://user:hunter2@127.0.0.1:1/x", "hunter2"),
])
def test_credentials_in_host_urls_are_never_echoed(tmp_path: Path, url: str, message: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "f").write_bytes(b"secret-free")
    with CloudManager(tmp_path / "c.sqlite3", tmp_path / "cache", 1000,
                      hosts=[url + "?timeout=1&retries=0", "memory://m"]) as cm:
        digest = cm.upload(tmp_path / "f")
        assert digest
        texts = [repr(cm.hosts), cm.hosts[0].url(), cm.data_dump(), json.dumps(cm.stats()),
                 str(cm.catalog.host_health([cm.hosts[0].name])), caplog.text]
    assert not any(message in text for text in texts)
    assert message.encode() not in (tmp_path / "c.sqlite3").read_bytes()
