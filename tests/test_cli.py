"""The cm command: every subcommand, its errors, and the configuration file."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result

from cloudmanager.cache import OWNER_FILE
from tests.conftest import Run, run_cm


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with two files in it."""
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"alpha")
    (folder / "b.txt").write_bytes(b"bravo" * 100)
    monkeypatch.chdir(folder)
    monkeypatch.delenv("CM_CONFIG", raising=False)
    return folder


@pytest.fixture
def cm(work: Path) -> Run:
    """Run ``cm ARGS`` in-process in the working folder (tests.conftest.run_cm)."""
    return run_cm


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def one_line_error(result: Result, *fragments: str) -> None:
    assert result.stderr.startswith("cm: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_upload_ls_info_exists_get_on_the_embedded_defaults(cm: Run, work: Path) -> None:
    out = cm("upload", "a.txt", "b.txt").stdout.splitlines()
    assert out == [f"{sha(b'alpha')}  a.txt  vault: ok", f"{sha(b'bravo' * 100)}  b.txt  vault: ok"]
    listing = cm("ls").stdout
    assert "a.txt" in listing and "5 B" in listing and "500 B" in listing and "1/1" in listing
    record = json.loads(cm("info", sha(b"alpha")).stdout)
    assert record["filename"] == "a.txt" and record["filesize"] == "5"
    cm("exists", sha(b"alpha"))
    cm("exists", sha(b"missing"), code=1)
    (work / "a.txt").unlink()
    assert cm("get", sha(b"alpha")).stdout.strip() == "a.txt"
    assert (work / "a.txt").read_bytes() == b"alpha"
    assert (Path.home() / ".local/share/cloudmanager/catalog.sqlite3").exists()


def test_get_never_overwrites_without_force(cm: Run, work: Path) -> None:
    cm("upload", "a.txt")
    one_line_error(cm("get", sha(b"alpha"), code=2), "exists", "--force")
    (work / "out").mkdir()
    cm("get", sha(b"alpha"), "-o", "out")
    assert (work / "out" / "a.txt").read_bytes() == b"alpha"
    (work / "a.txt").write_bytes(b"changed")
    cm("get", sha(b"alpha"), "--force")
    assert (work / "a.txt").read_bytes() == b"alpha"
    assert not list(work.glob(".*partial"))


@pytest.mark.parametrize("args, code, fragment", [
    (["get", "nothex"], 2, "not a SHA-256"),
    (["info", "A" * 64], 2, "not a SHA-256"),
    (["info", "0" * 64], 1, "not in the catalog"),
    (["get", "0" * 64], 1, "not in the catalog"),
    (["upload", "missing.txt"], 2, "missing.txt: no such file"),
    (["upload", "."], 2, "is a directory"),
    (["load", "missing.json"], 2, "missing.json"),
    (["evict"], 2, "HASH... or --all"),
    (["pin", "0" * 64], 1, "not in the catalog"),
    (["rm", "0" * 64], 1, "not in the catalog"),
])
def test_errors_are_one_line_with_the_right_status(cm: Run, args: list[str], code: int,
                                                   fragment: str) -> None:
    one_line_error(cm(*args, code=code), fragment)


def test_json_output_for_scripts(cm: Run) -> None:
    uploaded = json.loads(cm("upload", "a.txt", "--json").stdout)
    assert uploaded[0]["hash"] == sha(b"alpha") and uploaded[0]["uploads"][0]["host_name"] == "vault"
    rows = json.loads(cm("ls", "--json").stdout)
    assert [(r["name"], r["cached"], r["held"]) for r in rows] == [("a.txt", True, 1)]
    figures = json.loads(cm("stats", "--json").stdout)
    assert figures["files"] == 1 and figures["used"] == 5 and figures["transfers"]["total"]["sent"] == 5
    hosts = json.loads(cm("hosts", "--json").stdout)
    assert hosts[0]["name"] == "vault" and hosts[0]["files"] == 1
    assert json.loads(cm("hosts", "check", "--json").stdout) == {"vault": {"ok": True, "error": None}}


def test_ls_filters(cm: Run, work: Path) -> None:
    config = write_config(work / "cm.toml", f"""
[cache]
path = "cache"
capacity = "1 KiB"
[[hosts]]
url = "{(work / 'vault').as_uri()}"
[[hosts]]
url = "plowshare://rghost"
""")
    cm("--config", str(config), "upload", "a.txt", "b.txt")  # rghost fails: no plowup on PATH
    cm("--config", str(config), "evict", sha(b"alpha"))
    names = lambda *flags: [r["name"] for r in json.loads(cm("--config", str(config), "ls", "--json",  # noqa: E731
                                                                 *flags).stdout)]
    assert names() == ["a.txt", "b.txt"]
    assert names("--cached") == ["b.txt"]
    assert names("--pending") == ["a.txt", "b.txt"]


def test_dump_and_load_between_nodes(cm: Run, work: Path, tmp_path: Path) -> None:
    shared = (tmp_path / "shared").as_uri()
    one = write_config(work / "one.toml", f'[catalog]\npath = "one.db"\n[cache]\npath = "one"\n'
                                          f'[[hosts]]\nurl = "{shared}"\n')
    two = write_config(work / "two.toml", f'[catalog]\npath = "two.db"\n[cache]\npath = "two"\n'
                                          f'[[hosts]]\nurl = "{shared}"\n')
    cm("--config", str(one), "upload", "a.txt", "b.txt")
    cm("--config", str(one), "dump", "-o", "node.json")
    assert cm("--config", str(two), "load", "node.json").stdout.strip() == "added 2, changed 0, rejected 0"
    cm("--config", str(two), "get", sha(b"alpha"), "-o", "copy.txt")
    assert (work / "copy.txt").read_bytes() == b"alpha"
    dumped = cm("--config", str(one), "dump").stdout
    assert cm("--config", str(two), "load", "-", input=dumped).stdout.startswith("added 0, changed 0")


def test_load_writes_rejected_records_beside_the_dump(cm: Run, work: Path) -> None:
    good = {"version": "0.2", "datetime": "1", "filename": "g", "filesize": "1", "filehash": "1" * 64,
            "uploads": []}
    bad = dict(good, filehash="not a hash")
    (work / "in.json").write_text(json.dumps([good, bad]))
    result = cm("load", "in.json", code=1)
    assert "added 1, changed 0, rejected 1" in result.stdout
    rejected = json.loads((work / "in.rejected.json").read_text())
    assert rejected == [{"index": 1, "field": "filehash",
                         "reason": "must be a SHA-256 as 64 lowercase hex digits",
                         "record": bad}]
    (work / "broken.json").write_text("{ not json")
    one_line_error(cm("load", "broken.json", code=2), "not JSON")


def test_sync_retries_and_makes_copies(cm: Run, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{Path(__file__).parent / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PLOW_STORE", str(work))
    monkeypatch.setenv("PLOW_FAIL", "rghost")
    config = write_config(work / "cm.toml", f"""
[[hosts]]
url = "plowshare://rghost"
[[hosts]]
url = "{(work / 'vault').as_uri()}"
[[hosts]]
url = "{(work / 'spare').as_uri()}"
active = false
""")
    out = cm("--config", str(config), "upload", "a.txt").stdout
    assert "rghost: error (plowup failed" in out and "vault: ok" in out and "spare" not in out
    assert "error (plowup failed" in cm("--config", str(config), "sync", code=1).stdout
    monkeypatch.delenv("PLOW_FAIL")
    assert cm("--config", str(config), "sync").stdout.endswith("1 sent, 0 failed\n")
    assert cm("--config", str(config), "sync", "--copies", "3").stdout.endswith("0 sent, 0 failed\n")


def test_evict_pin_unpin(cm: Run) -> None:
    cm("upload", "a.txt", "b.txt")
    cm("pin", sha(b"alpha"))
    assert cm("evict", "--all").stdout.strip() == "evicted 1 file(s)"
    rows = {r["name"]: r for r in json.loads(cm("ls", "--json").stdout)}
    assert rows["a.txt"]["cached"] and rows["a.txt"]["pinned"] and not rows["b.txt"]["cached"]
    cm("unpin", sha(b"alpha"))
    assert cm("evict", sha(b"alpha")).stdout.strip() == "evicted 1 file(s)"


def test_relocate_moves_the_cache_and_records_it(cm: Run, work: Path, tmp_path: Path) -> None:
    config = write_config(work / "cm.toml", "# my settings\n[cache]\npath = \"old\"  # keep this\n")
    cm("--config", str(config), "upload", "a.txt", "b.txt")
    out = cm("--config", str(config), "relocate", str(tmp_path / "new")).stdout
    assert "moved 2 file(s)" in out and str(config) in out
    text = config.read_text()
    assert "# my settings" in text and str(tmp_path / "new") in text
    assert not (work / "old").exists()
    assert len([p for p in (tmp_path / "new").rglob("*") if p.is_file() and p.name != OWNER_FILE]) == 2
    rows = json.loads(cm("--config", str(config), "ls", "--cached", "--json").stdout)
    assert len(rows) == 2
    one_line_error(cm("--config", str(config), "relocate", str(tmp_path / "new" / "inner"), code=1),
                   "overlaps")


def test_rm_forgets_and_deletes_from_hosts(cm: Run, work: Path) -> None:
    cm("upload", "a.txt", "b.txt")
    vault = Path.home() / ".local/share/cloudmanager/vault"
    assert cm("rm", sha(b"alpha")).stdout.strip() == "vault: copy left there (not asked to delete)"
    assert list(vault.rglob(sha(b"alpha")))
    assert cm("rm", sha(b"bravo" * 100), "--hosts").stdout.strip() == "vault: deleted"
    assert not list(vault.rglob(sha(b"bravo" * 100)))
    assert json.loads(cm("ls", "--json").stdout) == []


def test_expire_keeps_last_copies_unless_forced(cm: Run, work: Path) -> None:
    config = write_config(work / "cm.toml", f"""
[catalog]
path = "c.db"
[[hosts]]
name = "short"
url = "{(work / 'short').as_uri()}"
keep_days = 7
[[hosts]]
name = "long"
url = "{(work / 'long').as_uri()}"
""")
    cm("--config", str(config), "upload", "a.txt", "b.txt")
    cm("--config", str(config), "rm", sha(b"bravo" * 100), "--hosts")
    (work / "c.txt").write_bytes(b"charlie")
    with sqlite3.connect(work / "c.db") as db:  # only short holds c.txt, and everything is 8 days old
        db.execute("UPDATE uploads SET time = time - 8 * 86400")
    cm("--config", str(config), "upload", "c.txt")
    with sqlite3.connect(work / "c.db") as db:
        db.execute("DELETE FROM uploads WHERE host = 'long' AND hash = ?", (sha(b"charlie"),))
        db.execute("UPDATE files SET copies = 1 WHERE hash = ?", (sha(b"charlie"),))
        db.execute("UPDATE uploads SET time = time - 8 * 86400 WHERE hash = ?", (sha(b"charlie"),))
    out = cm("--config", str(config), "expire").stdout
    assert f"{sha(b'alpha')}  short: expired" in out
    assert f"{sha(b'charlie')}  short: kept, its last copy" in out
    assert f"{sha(b'charlie')}  short: expired" in cm("--config", str(config), "expire", "--force").stdout


@pytest.mark.parametrize("text, fragment", [
    ("[cache\n", "not valid TOML"),
    ("[cache]\ncapacity = \"lots\"\n", "cache.capacity: not a size"),
    ("[cache]\nsize = 1\n", "cache.size: unknown key"),
    ("[stuff]\n", "stuff: unknown section"),
    ("[[hosts]]\nurl = \"ftp://x\"\n", "hosts[0].url: unknown host kind 'ftp'"),
    ("[[hosts]]\nurl = \"memory://x\"\nkeep_days = 0\n", "hosts[0].keep_days"),
    ("[[hosts]]\nurl = \"memory://x\"\ntoken_env = \"CM_NO_SUCH_VARIABLE\"\n",
     "CM_NO_SUCH_VARIABLE is not set"),
    ("[[hosts]]\nurl = \"memory://x\"\n[[hosts]]\nurl = \"memory://y\"\nname = \"x\"\n",
     "two hosts are named"),
    ("[[hosts]]\nurl = \"memory://x\"\nactive = \"yes\"\n", "hosts[0].active: must be true or false"),
])
def test_configuration_errors_name_file_key_and_problem(cm: Run, work: Path, text: str,
                                                        fragment: str) -> None:
    config = write_config(work / "bad.toml", text)
    one_line_error(cm("--config", str(config), "stats", code=2), str(config), fragment)


def test_a_named_configuration_must_exist(cm: Run, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one_line_error(cm("--config", "nope.toml", "stats", code=2), "nope.toml", "--config")
    monkeypatch.setenv("CM_CONFIG", str(work / "env.toml"))
    one_line_error(cm("stats", code=2), "env.toml", "$CM_CONFIG")
    write_config(work / "env.toml", '[cache]\ncapacity = "2 KiB"\n')
    assert json.loads(cm("stats", "--json").stdout)["capacity"] == 2048


def test_the_user_configuration_file_is_read(cm: Run) -> None:
    user = Path.home() / ".config" / "cloudmanager" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('[cache]\ncapacity = "3 MiB"\n')
    assert json.loads(cm("stats", "--json").stdout)["capacity"] == 3 * 2**20


def test_secrets_never_appear(cm: Run, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_SECRET", "s3cr3t-from-env")
    config = write_config(work / "cm.toml", f"""
[[hosts]]
url = "{(work / 'vault').as_uri()}"
token_env = "VAULT_SECRET"
description = "the NAS"
""")
    outputs = [cm("--config", str(config), *args).output for args in
               (["upload", "a.txt"], ["hosts"], ["hosts", "--json"], ["dump"], ["stats", "--json"], ["ls"])]
    assert all("s3cr3t" not in out for out in outputs)
    assert "the NAS" in outputs[1]


def test_every_subcommand_has_help(cm: Run) -> None:
    for command in ["init", "upload", "get", "ls", "info", "exists", "stats", "dump", "load", "sync",
                    "hosts", "evict", "pin", "unpin", "relocate", "rm", "expire"]:
        assert "Usage: " in cm(command, "--help").stdout
    assert "Usage: " in cm("hosts", "check", "--help").stdout
    assert "Examples:" in cm("--help").stdout
    assert cm("--version").stdout.startswith("cm, version ")


def test_init_creates_catalog_and_cache(cm: Run, work: Path) -> None:
    out = cm("init").stdout
    assert "catalog" in out and "vault" in out
    assert (Path.home() / ".local/share/cloudmanager/catalog.sqlite3").exists()


def test_the_installed_console_script(work: Path) -> None:
    script = Path(sys.executable).parent / "cm"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cloudmanager"]
    env = dict(os.environ)
    version = subprocess.run([*command, "--version"], capture_output=True, text=True, env=env, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("cm, version")
    upload = subprocess.run([*command, "upload", "a.txt"], capture_output=True, text=True, env=env,
                            timeout=60)
    assert upload.returncode == 0 and upload.stdout.startswith(sha(b"alpha"))
    missing = subprocess.run([*command, "exists", sha(b"nope")], capture_output=True, text=True, env=env,
                             timeout=60)
    assert missing.returncode == 1 and missing.stdout == "" and missing.stderr == ""
    bad = subprocess.run([*command, "info", "xyz"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("cm: not a SHA-256")
    assert "Traceback" not in bad.stderr
