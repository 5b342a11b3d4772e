"""The rclone:// host kind, driving the real ``rclone`` command against the sshd and WsgiDAV
fixtures through a temporary rclone.conf (see tests/servers/rclone.py)."""

from __future__ import annotations

import io
import os
import re
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudmanager import CloudManager, build, config
from cloudmanager.errors import ObjectMissing
from cloudmanager.hosts import Host, make_host
from cloudmanager.hosts import rclone as rclone_module
from cloudmanager.hosts.rclone import RcloneHost
from cloudmanager.testing import HostConformance, get_bytes, host_error, put_bytes, sha256_hex
from tests.servers.rclone import WRONG_PASSWORD, RcloneRemotes

FAST = {"retries": 1, "retry_delay": 0.01}






def _host(remotes: RcloneRemotes, remote: str, path: str | Path, **options: Any) -> RcloneHost:
    host = make_host(remotes.url(remote, path, **options))
    assert isinstance(host, RcloneHost)
    return host


def _fresh() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _script(folder: Path, body: str, name: str = "fake-rclone") -> Path:
    """An executable shell script standing in for rclone."""
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def dav_path() -> str:
    """A fresh folder on the WebDAV remote, per test."""
    return _fresh()


@pytest.fixture
def dav_host(rclone_remotes: RcloneRemotes, dav_path: str) -> RcloneHost:
    return _host(rclone_remotes, "dav", dav_path, timeout=10)


class TestRcloneSftp(HostConformance):
    @pytest.fixture
    def host(self, rclone_remotes: RcloneRemotes) -> Host:
        return _host(rclone_remotes, "sshd", rclone_remotes.sftp_root / _fresh(), timeout=10)

    @pytest.fixture
    def broken_hosts(self, rclone_remotes: RcloneRemotes) -> list[Host]:
        folder = rclone_remotes.sftp_root / "broken"
        return [
            _host(rclone_remotes, "sshd-closed", folder, timeout=2, **FAST),
            _host(rclone_remotes, "sshd-silent", folder, timeout=1, retries=0),
            _host(rclone_remotes, "sshd-wrong-key", folder, timeout=5, **FAST),
            _host(rclone_remotes, "sshd-unknown-host-key", folder, timeout=5, **FAST),
            _host(rclone_remotes, "not-in-the-config", folder, timeout=5, **FAST),
        ]


class TestRcloneWebdav(HostConformance):
    @pytest.fixture
    def host(self, dav_host: RcloneHost) -> Host:
        return dav_host

    @pytest.fixture
    def broken_hosts(self, rclone_remotes: RcloneRemotes) -> list[Host]:
        return [
            _host(rclone_remotes, "dav-closed", "x", timeout=2, **FAST),
            _host(rclone_remotes, "dav-wrong-password", "x", timeout=5, **FAST),
            _host(rclone_remotes, "dav-silent", "x", timeout=1, retries=0),
        ]


# -- URLs, names, options ------------------------------------------------------------------


def test_url_parsing_default_name_and_options(rclone_remotes: RcloneRemotes) -> None:
    conf = str(rclone_remotes.config)
    host = make_host(f"rclone://my-remote_1.x:some//./path/?config={conf}&timeout=5&retries=2"
                     "&flags=--bwlimit%204M")
    assert isinstance(host, RcloneHost)
    assert (host.remote, host.root, host.name) == ("my-remote_1.x", "some/path", "my-remote_1.x:some/path")
    assert host.url() == "rclone://my-remote_1.x:some/path"
    assert host.timeout == 5.0 and host.retry.retries == 2 and host.low_level_retries == 3
    assert host.flags == ["--bwlimit", "4M"] and host.config == rclone_remotes.config

    absolute = make_host("rclone://nas:/srv/vault")
    assert isinstance(absolute, RcloneHost)
    assert absolute.root == "/srv/vault" and absolute.name == "nas:/srv/vault"
    assert absolute.timeout == 30.0 and absolute.config is None and absolute.rclone == "rclone"

    whole = make_host("rclone://gdrive:")
    assert isinstance(whole, RcloneHost) and whole.root == "" and whole.name == "gdrive:"
    assert whole._locator("ab" * 32) == f"rclone://gdrive:ab/ab/{'ab' * 32}"

    portlike = make_host("rclone://b2:12345")  # urlsplit would read a port here
    assert isinstance(portlike, RcloneHost) and portlike.root == "12345" and portlike.remote == "b2"

    spaced = make_host("rclone://s3.eu:my%20bucket/ünï?low_level_retries=7")
    assert isinstance(spaced, RcloneHost)
    assert spaced.root == "my bucket/ünï" and spaced.low_level_retries == 7
    assert make_host(spaced.url()).name == spaced.name == "s3.eu:my bucket/ünï"

    assert make_host("rclone://nas:/srv/vault?name=offsite").name == "offsite"
    assert make_host("rclone://nas:/srv/vault", name="other").name == "other"
    typed = make_host("rclone://nas:v", config={"timeout": 3, "retries": 0, "flags": ["--fast-list"]})
    assert isinstance(typed, RcloneHost)
    assert (typed.timeout, typed.retry.retries, typed.low_level_retries, typed.flags) == \
        (3.0, 0, 1, ["--fast-list"])


@pytest.mark.parametrize("url, complaint", [
    ("rclone://nocolon", "rclone://REMOTE:path"),
    ("rclone://-flag:x", "rclone://REMOTE:path"),
    ("rclone://:sftp,host=h,pass=secret:x", "rclone://REMOTE:path"),
    ("rclone://a b:x", "rclone://REMOTE:path"),
    ("rclone://r:a/../b", "'..'"),
    ("rclone://r:a%0Ab", "control characters"),
    ("rclone://r:x?colour=blue", "unknown rclone option 'colour'"),
    ("rclone://r:x?timeout=0", "timeout"),
    ("rclone://r:x?timeout=soon", "timeout"),
    ("rclone://r:x?retries=-1", "retries"),
    ("rclone://r:x?low_level_retries=0", "low_level_retries"),
    ("rclone://r:x?config=/nonexistent/rclone.conf", "does not exist"),
])
def test_bad_urls_are_refused_with_a_reason(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint.replace("(", r"\(")) as caught:
        make_host(url)
    assert "secret" not in str(caught.value)


def test_a_configuration_file_host_with_typed_options(rclone_remotes: RcloneRemotes, dav_path: str,
                                                      files: Path, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "[[hosts]]\n"
        f'url = "rclone://dav:{dav_path}"\n'
        f'config = {{ config = "{rclone_remotes.config}", timeout = 5, retries = 2, '
        'flags = ["--buffer-size", "1M"] }\n'
    )
    (host,) = build.make_hosts(config.parse(path, {}))
    assert isinstance(host, RcloneHost)
    assert (host.name, host.timeout, host.retry.retries, host.flags) == \
        (f"dav:{dav_path}", 5.0, 2, ["--buffer-size", "1M"])
    _, locator = put_bytes(host, files, b"configured")
    assert get_bytes(host, locator) == b"configured"


# -- objects and locators ------------------------------------------------------------------


def test_objects_are_content_addressed_and_locators_name_them(rclone_remotes: RcloneRemotes,
                                                              dav_host: RcloneHost, dav_path: str,
                                                              files: Path) -> None:
    digest, locator = put_bytes(dav_host, files, b"addressed by content", name="any name.txt")
    assert locator == f"rclone://dav:{dav_path}/{digest[:2]}/{digest[2:4]}/{digest}"
    stored = rclone_remotes.webdav_root / dav_path / digest[:2] / digest[2:4] / digest
    assert stored.read_bytes() == b"addressed by content"
    assert dav_host.check(locator) == len(b"addressed by content")
    # Another node whose remote has another name: only the tail of the locator counts.
    assert get_bytes(dav_host, f"rclone://their-dav:elsewhere/{digest[:2]}/{digest[2:4]}/{digest}") == \
        b"addressed by content"


def test_an_object_already_there_is_not_sent_again(rclone_remotes: RcloneRemotes, dav_host: RcloneHost,
                                                   dav_path: str, files: Path) -> None:
    digest, _ = put_bytes(dav_host, files, b"first")
    stored = rclone_remotes.webdav_root / dav_path / digest[:2] / digest[2:4] / digest
    before = stored.stat().st_mtime_ns
    time.sleep(0.02)
    put_bytes(dav_host, files, b"first", name="again")
    assert stored.stat().st_mtime_ns == before


def test_a_locator_outside_the_root_is_refused(rclone_remotes: RcloneRemotes, dav_host: RcloneHost,
                                              dav_path: str, files: Path, tmp_path: Path) -> None:
    secret = b"not this host's business"
    digest = sha256_hex(secret)
    outside = rclone_remotes.webdav_root / f"{dav_path}-outside" / digest[:2] / digest[2:4] / digest
    outside.parent.mkdir(parents=True)
    outside.write_bytes(secret)
    tail = f"{digest[:2]}/{digest[2:4]}/{digest}"
    # A well-formed locator naming another folder is looked up in this host's own folder.
    with pytest.raises(ObjectMissing):
        get_bytes(dav_host, f"rclone://dav:{dav_path}-outside/{tail}")
    # Malformed or hostile locators are refused before rclone runs (here it could not run).
    unable = _host(rclone_remotes, "dav", dav_path, rclone=str(tmp_path / "no-rclone-here"))
    for hostile in [f"rclone://dav:{dav_path}/../{dav_path}-outside/{tail}/..",
                    f"rclone://dav:{dav_path}-outside/{tail}/../../x",
                    f"file://{outside}", f"rclone://dav:{dav_path}/{tail}?x=1", "rclone://dav:../../etc/passwd",
                    f"rclone://dav:{dav_path}/ff/ff/{digest}", f"rclone://dav:{dav_path}/{tail[:-1]}",
                    f"rclone://dav:{dav_path}/{tail}\n", f"sftp://h/{tail}"]:
        for action in (lambda loc=hostile: get_bytes(unable, loc), lambda loc=hostile: unable.check(loc),
                       lambda loc=hostile: unable.delete(loc)):
            with pytest.raises(ObjectMissing, match="not a locator"):
                action()
    assert outside.read_bytes() == secret


def test_missing_objects_and_deleting_twice(dav_host: RcloneHost, files: Path) -> None:
    digest, locator = put_bytes(dav_host, files, b"short-lived")
    dav_host.delete(locator)
    for action in (lambda: get_bytes(dav_host, locator), lambda: dav_host.check(locator)):
        error = host_error(action)
        assert isinstance(error, ObjectMissing) and digest in str(error)
    dav_host.delete(locator)
    never = f"rclone://dav:x/00/00/{'0' * 64}"
    with pytest.raises(ObjectMissing):
        dav_host.check(never)
    dav_host.delete(never)  # not even its folders exist


# -- failures --------------------------------------------------------------------------------


def test_missing_rclone_binary_is_a_clear_host_error(rclone_remotes: RcloneRemotes, files: Path,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locator = f"rclone://dav:x/00/00/{'0' * 64}"
    named = _host(rclone_remotes, "dav", "x", rclone=str(tmp_path / "nowhere" / "rclone"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    on_path = _host(rclone_remotes, "dav", "x")
    for host in (named, on_path):
        for action in (lambda h=host: put_bytes(h, files, b"x"), lambda h=host: get_bytes(h, locator),
                       lambda h=host: h.check(locator), lambda h=host: h.delete(locator)):
            error = host_error(action)
            assert not isinstance(error, ObjectMissing)
            assert "rclone" in str(error) and "apt-get install rclone" in str(error)
            assert error.host == host.name


def test_wrong_password_fails_at_once_with_rclones_reason(rclone_remotes: RcloneRemotes, files: Path
                                                          ) -> None:
    host = _host(rclone_remotes, "dav-wrong-password", "x", retries=3, retry_delay=5)
    started = time.monotonic()
    error = host_error(lambda: put_bytes(host, files, b"x"))
    assert time.monotonic() - started < 5  # not retried
    message = str(error)
    assert "authentication failed" in message and "401" in message and "attempts" not in message
    assert not re.search(r"\d{4}/\d\d/\d\d \d\d:", message)  # rclone's time stamps are dropped
    for secret in rclone_remotes.secrets:
        assert secret not in message
    assert "pass =" not in message and "[dav" not in message  # nothing of the configuration file


def test_refused_connections_are_retried(rclone_remotes: RcloneRemotes, files: Path) -> None:
    host = _host(rclone_remotes, "sshd-closed", "/x", timeout=2, retries=2, retry_delay=0.01)
    error = host_error(lambda: put_bytes(host, files, b"x"))
    assert "connection refused" in str(error) and "after 3 attempts" in str(error)


def test_an_unknown_remote_is_named_in_the_error(rclone_remotes: RcloneRemotes, files: Path) -> None:
    host = _host(rclone_remotes, "not-in-the-config", "x")
    error = host_error(lambda: put_bytes(host, files, b"x"))
    assert "not-in-the-config" in str(error) and "section" in str(error)


def test_no_secret_in_urls_locators_errors_or_dumps(rclone_remotes: RcloneRemotes, dav_path: str,
                                                    tmp_path: Path) -> None:
    good = rclone_remotes.url("dav", dav_path, name="good")
    wrong = rclone_remotes.url("dav-wrong-password", dav_path, name="wrong", retries=0)
    refused = rclone_remotes.url("dav-closed", dav_path, name="refused", retries=0, timeout=2)
    shown: list[str] = []
    (tmp_path / "node").mkdir()
    with CloudManager(tmp_path / "node" / "catalog.sqlite3", tmp_path / "node" / "cache", 1 << 20,
                      hosts=[good, wrong, refused]) as cm:
        source = tmp_path / "report.txt"
        source.write_bytes(b"quarterly numbers")
        digest = cm.upload(source)
        assert digest == sha256_hex(b"quarterly numbers")
        dump = cm.data_dump()
        shown.extend([dump, repr(cm.info(digest)), repr(cm.stats())])
        health = cm.catalog.host_health(["good", "wrong", "refused"])
        errors = {name: str(health[name].last_error) for name in health}
        shown.extend(errors.values())
        for host in cm.hosts:
            shown.extend([host.url(), repr(host), host.name])
        locators = [row for row in dump.split('"') if row.startswith("rclone://")]
        shown.extend(locators)
    assert locators and all(loc.startswith(f"rclone://dav:{dav_path}/") for loc in locators)
    assert "authentication failed" in errors["wrong"] and "connection refused" in errors["refused"]
    for text in shown:
        assert "rclone.conf" not in text
        for secret in rclone_remotes.secrets:
            assert secret not in text, f"a secret shows in {text[:300]!r}"
    for stored in (tmp_path / "node").rglob("*"):  # the catalog, its WAL, the cache
        if stored.is_file():
            for secret in rclone_remotes.secrets:
                assert secret.encode() not in stored.read_bytes(), stored
    assert WRONG_PASSWORD not in dump


# -- the child process, with stand-ins for rclone ------------------------------------------


@pytest.fixture
def quick_watchdog(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(rclone_module, "GRACE_S", 0.5)
    yield


def test_a_hung_rclone_is_stopped_and_reported(rclone_remotes: RcloneRemotes, files: Path, tmp_path: Path,
                                               quick_watchdog: None) -> None:
    pid_file = tmp_path / "pid"
    silent = _script(tmp_path, f"echo $$ > {pid_file}\nexec sleep 120")
    host = _host(rclone_remotes, "dav", "x", rclone=str(silent), timeout=0.2, retries=0)
    started = time.monotonic()
    error = host_error(lambda: put_bytes(host, files, b"x"))
    assert time.monotonic() - started < 10
    assert "no sign of life" in str(error)
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped


def test_a_download_that_stalls_midway_is_stopped_not_rerun(rclone_remotes: RcloneRemotes, tmp_path: Path,
                                                            quick_watchdog: None) -> None:
    runs = tmp_path / "runs"
    stalls = _script(tmp_path, f"echo run >> {runs}\nprintf 'half of it'\nexec sleep 120")
    host = _host(rclone_remotes, "dav", "x", rclone=str(stalls), timeout=0.2, retries=3, retry_delay=0,
                 low_level_retries=1)
    out = io.BytesIO()
    error = host_error(lambda: host.download(f"rclone://dav:x/00/00/{'0' * 64}", out))
    assert "no sign of life" in str(error)
    assert out.getvalue() == b"half of it" and runs.read_text().count("run") == 1


def test_temporary_failures_are_rerun_and_final_ones_are_not(rclone_remotes: RcloneRemotes, files: Path,
                                                             tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    flaky = _script(tmp_path, f"echo run >> {runs}\n"
                              f"if [ $(wc -l < {runs}) -lt 3 ]; then\n"
                              "  echo '2026/01/01 00:00:00 Failed to copyto: connection reset' >&2\n"
                              "  exit 5\nfi\nexit 0", name="flaky")
    host = _host(rclone_remotes, "dav", "x", rclone=str(flaky), retries=3, retry_delay=0)
    put_bytes(host, files, b"eventually")
    assert runs.read_text().count("run") == 3

    runs.unlink()
    refused = _script(tmp_path, f"echo run >> {runs}\n"
                                "echo 'NOTICE: something harmless' >&2\n"
                                "echo 'Failed to copyto: read metadata failed: 403 Forbidden' >&2\n"
                                "echo 'Transferred: 0 / 0 Byte' >&2\nexit 5", name="refused")
    host = _host(rclone_remotes, "dav", "x", rclone=str(refused), retries=3, retry_delay=0)
    error = host_error(lambda: put_bytes(host, files, b"x"))
    assert runs.read_text().count("run") == 1
    assert str(error).endswith("authentication failed: Failed to copyto: read metadata failed: "
                               "403 Forbidden (rclone exit code 5)")


def test_flags_token_and_configuration_reach_rclone_and_stay_hidden(rclone_remotes: RcloneRemotes,
                                                                     files: Path, tmp_path: Path) -> None:
    record = tmp_path / "record"
    token = "config-passphrase-Zq9"
    recorder = _script(tmp_path, f'printf "%s\\n" "$@" > {record}\n'
                                 f'printf "pass=%s\\n" "$RCLONE_CONFIG_PASS" >> {record}\n'
                                 'echo "Failed to copyto: --webdav-pass hunter22 pass=xyz '
                                 f'https://u:pw@h/ $RCLONE_CONFIG_PASS" >&2\nexit 1')
    host = make_host(rclone_remotes.url("dav", "x", rclone=str(recorder), retries=0, timeout=7,
                                        flags="--webdav-pass hunter22 --bwlimit 4M"), token=token)
    error = host_error(lambda: put_bytes(host, files, b"x", name="with space.txt"))
    arguments = record.read_text().splitlines()
    assert arguments[0] == "copyto" and f"pass={token}" in arguments
    assert ["--config", str(rclone_remotes.config)] == arguments[1:3]
    for expected in (["--contimeout", "7.000s"], ["--timeout", "7.000s"], ["--retries", "1"],
                     ["--low-level-retries", "1"], ["--bwlimit", "4M"], ["--ask-password=false"]):
        start = arguments.index(expected[0])
        assert arguments[start:start + len(expected)] == expected
    source, target = arguments[-3:-1]
    assert os.path.isabs(source) and source.endswith("with space.txt")
    assert target == f"dav:x/{sha256_hex(b'x')[:2]}/{sha256_hex(b'x')[2:4]}/{sha256_hex(b'x')}"
    message = str(error)
    for secret in (token, "hunter22", "xyz", "pw@"):
        assert secret not in message, message
    assert token not in host.url() and "hunter22" not in host.url() and "config" not in host.url()
