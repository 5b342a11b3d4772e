"""Share links: signing and checking them, their longest life, `cm link`, and opening them
on a real `cm serve` without the token."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from click.testing import CliRunner

from cloudmanager import build, config, links
from cloudmanager.cli import main
from cloudmanager.testing import sha256_hex
from tests.servers.node import NodeServer

SECRET = "a secret of the node, long enough to sign links"
DIGEST = sha256_hex(b"linked")
NOW = 1_700_000_000


# -- signing, pure ---------------------------------------------------------------------


def _parts(path: str) -> tuple[str, str, str]:
    parts = urlsplit(path)
    query = parse_qs(parts.query)
    return parts.path.rsplit("/", 1)[1], query["e"][0], query["sig"][0]


def test_a_signed_link_verifies_and_any_change_breaks_it() -> None:
    digest, expires, sig = _parts(links.link_path(SECRET, DIGEST, NOW + 60))
    assert (digest, expires) == (DIGEST, str(NOW + 60))
    assert links.verify(SECRET, digest, expires, sig, NOW)
    other = sha256_hex(b"another file")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    for bad in [(other, expires, sig), (digest, str(NOW + 61), sig), (digest, expires, flipped),
                (digest, expires, sig[:-1]), (digest, expires, ""), (digest, expires, None),
                (digest, None, sig), (digest, f"{expires}.0", sig), (digest, f"-{expires}", sig),
                (digest.upper(), expires, sig), (digest, expires, sig + "é")]:
        assert not links.verify(SECRET, *bad, NOW), bad
    assert not links.verify("another secret", digest, expires, sig, NOW)
    assert not links.verify(SECRET, digest, expires, sig, NOW + 60)  # expired: the same second on
    with pytest.raises(ValueError, match="not a SHA-256"):
        links.link_path(SECRET, "../etc/passwd", NOW)


@pytest.mark.parametrize("text, seconds", [("7d", 7 * 86400), ("12h", 43200), ("30m", 1800),
                                           ("45s", 45), ("2w", 14 * 86400), ("3600", 3600), (" 1d ", 86400)])
def test_durations(text: str, seconds: int) -> None:
    assert links.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0d", "7 days", "1.5d", "-1d", "d", "7y"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        links.parse_duration(text)


def test_the_longest_life_is_the_smallest_keep_days() -> None:
    assert links.longest_expiry([None, 30, 7, None]) == 7 * 86400
    assert links.longest_expiry([None]) == links.longest_expiry([]) == 365 * 86400
    assert links.longest_expiry([1000]) == 365 * 86400
    assert links.describe_seconds(7 * 86400) == "7 days" and links.describe_seconds(3600) == "1 hour"


def test_the_default_secret_is_made_once_and_private(tmp_path: Path) -> None:
    serve = config.ServeConfig()
    first = build.serve_secret(serve)
    kept = config.user_config_path().with_name(config.SECRET_FILE)
    assert kept.is_file() and stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert len(first) >= 32 and build.serve_secret(serve) == first
    assert str(Path.home()) in str(kept)  # in this test's own HOME
    assert build.serve_secret(config.ServeConfig(secret="given")) == "given"
    with pytest.raises(config.ConfigError, match="CM_NO_SUCH_SECRET is not set"):
        build.serve_secret(config.ServeConfig(secret_env="CM_NO_SUCH_SECRET"))


# -- through a real server -------------------------------------------------------------


def _upload(server: NodeServer, files: Path, name: str, data: bytes) -> str:
    path = files / "upload.bin"
    path.write_bytes(data)
    digest = sha256_hex(data)
    with server.client() as client:
        client.put(digest, name, path)
    return digest


def _link(server: NodeServer, *args: str) -> str:
    done = CliRunner().invoke(main, ["--config", str(server.config), "link", *args])
    assert done.exit_code == 0, done.output
    return done.output.strip()


def test_cm_link_prints_a_url_that_downloads_the_file(node_server: NodeServer, files: Path) -> None:
    data = os.urandom(5000)
    name = "résumé 2024 (final).pdf"
    digest = _upload(node_server, files, name, data)
    url = _link(node_server, digest, "--expires", "2h")
    assert url.startswith(f"{node_server.base_url}/s/{digest}?")
    assert node_server.token not in url
    answer = httpx.get(url)  # no token
    assert answer.status_code == 200 and answer.content == data
    disposition = answer.headers["Content-Disposition"]
    assert disposition.startswith("attachment;") and f"filename*=UTF-8''{quote(name, safe='')}" in disposition
    assert 'filename="r_sum_ 2024 (final).pdf"' in disposition
    part = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    as_json = json.loads(_link(node_server, digest, "--json", "--expires", "30m"))
    assert as_json["name"] == name and as_json["hash"] == digest
    assert 0 < as_json["expires"] - time.time() <= 1800


def test_a_tampered_or_expired_link_is_403(node_server: NodeServer, files: Path) -> None:
    digest = _upload(node_server, files, "private.txt", b"private bytes")
    other = _upload(node_server, files, "other.txt", b"other bytes")
    url = _link(node_server, digest)
    base, query = url.split("?")
    _, expires, sig = _parts(url)
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    tampered = [base.replace(digest, other) + "?" + query,
                url.replace(f"e={expires}", f"e={int(expires) + 1}"),
                url.replace(f"sig={sig}", f"sig={flipped}"),
                f"{base}?e={expires}", base]
    past = int(time.time()) - 5
    tampered.append(node_server.base_url + links.link_path(node_server.secret, digest, past))
    for bad in tampered:
        answer = httpx.get(bad)
        assert answer.status_code == 403, bad
        assert b"private bytes" not in answer.content
    assert httpx.get(url).content == b"private bytes"


def test_a_link_to_an_evicted_file_fetches_it_from_its_host_first(node_server: NodeServer,
                                                                   files: Path) -> None:
    data = b"evicted, then linked " * 500
    digest = _upload(node_server, files, "evicted.txt", data)
    runner = CliRunner()
    settings = ["--config", str(node_server.config)]

    def held_by_vault() -> bool:
        shown = runner.invoke(main, [*settings, "info", digest])
        return any(u.get("host_name") == "vault" and "url" in u for u in json.loads(shown.output)["uploads"])

    deadline = time.monotonic() + 30
    while not held_by_vault() and time.monotonic() < deadline:
        time.sleep(0.05)  # the node sends what it accepted to its hosts in the background
    assert held_by_vault()
    assert runner.invoke(main, [*settings, "evict", digest]).output.strip() == "evicted 1 file(s)"
    assert not node_server.cache.joinpath(digest[:2], digest[2:4], digest).exists()
    answer = httpx.get(_link(node_server, digest))
    assert answer.status_code == 200 and answer.content == data
    assert node_server.cache.joinpath(digest[:2], digest[2:4], digest).read_bytes() == data


def _config_with_hosts(tmp_path: Path, keep_days: list[int | None]) -> Path:
    records = "".join(
        f'[[hosts]]\nurl = "{(tmp_path / f"vault-{i}").as_uri()}"\n'
        + (f"keep_days = {days}\n" if days is not None else "")
        for i, days in enumerate(keep_days))
    path = tmp_path / "config.toml"
    path.write_text(f'[catalog]\npath = "catalog.sqlite3"\n[cache]\npath = "cache"\n{records}'
                    f'[serve]\nsecret = "{SECRET}"\npublic_url = "https://files.example.org/"\n')
    return path


def test_keep_days_bounds_the_expiry(tmp_path: Path, write: Callable[..., Path]) -> None:
    runner = CliRunner()
    conf = str(_config_with_hosts(tmp_path, [10, None, 3]))
    uploaded = runner.invoke(main, ["--config", conf, "upload", "--json", str(write("f.txt", b"bounded"))])
    digest = json.loads(uploaded.output)[0]["hash"]
    refused = runner.invoke(main, ["--config", conf, "link", digest, "--expires", "4d"])
    assert refused.exit_code == 2
    assert refused.output.startswith("cm: --expires 4d:") and "3 days" in refused.output
    assert "keep_days" in refused.output
    allowed = runner.invoke(main, ["--config", conf, "link", digest, "--expires", "3d"])
    assert allowed.exit_code == 0, allowed.output
    url = allowed.output.strip()
    assert url.startswith(f"https://files.example.org/s/{digest}?e=")
    assert links.verify(SECRET, *_parts(url), time.time())
    (tmp_path / "unbounded").mkdir()
    unbounded = str(_config_with_hosts(tmp_path / "unbounded", [None]))
    refused = runner.invoke(main, ["--config", unbounded, "link", digest, "--expires", "366d"])
    assert refused.exit_code == 2 and "365 days (the longest allowed)" in refused.output
    assert runner.invoke(main, ["--config", conf, "link", digest, "--expires", "soon"]).exit_code == 2
    assert runner.invoke(main, ["--config", conf, "link", "not-a-hash"]).exit_code == 2
    unknown = runner.invoke(main, ["--config", conf, "link", "0" * 64, "--expires", "1d"])
    assert unknown.exit_code == 1 and "not in the catalog" in unknown.output


def test_the_server_never_logs_the_token_or_a_signature(node_servers: Callable[..., NodeServer],
                                                         files: Path) -> None:
    server = node_servers()
    digest = _upload(server, files, "logged.txt", b"watch the log")
    url = _link(server, digest)
    _, _, sig = _parts(url)
    assert httpx.get(url).status_code == 200
    with server.http("a-wrong-token") as wrong, server.http(server.token) as right:
        assert wrong.get("/catalog").status_code == 403
        assert right.get("/catalog").status_code == 200
        assert right.post("/login", data={"token": server.token}).status_code in (200, 303)
    server.stop()
    output = server.output()
    assert f'"GET /s/{digest}" 200' in output  # the requests are logged...
    for secret in (server.token, sig, server.secret, "a-wrong-token"):
        assert secret not in output  # ...their secrets are not


@pytest.mark.parametrize(("name", "served"), [
    ("page.html", "application/octet-stream"), ("icon.svg", "application/octet-stream"),
    ("script.js", "application/octet-stream"), ("report.pdf", "application/octet-stream"),
    ("photo.png", "image/png"), ("notes.txt", "text/plain; charset=utf-8"),
    ("no-extension", "application/octet-stream"),
])
def test_a_shared_file_is_a_download_the_browser_may_not_run(node_server: NodeServer, files: Path,
                                                               name: str, served: str) -> None:
    """A shared page.html must not run on the node's origin: every file is an attachment,
    of a type on a short safe list or application/octet-stream, never sniffed, sandboxed."""
    digest = _upload(node_server, files, name, b"<script>alert(document.cookie)</script>" + os.urandom(8))
    answer = httpx.get(_link(node_server, digest, "--expires", "1h"))
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == served
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Content-Security-Policy"] == "sandbox"
    assert answer.headers["Content-Disposition"].startswith("attachment;")
