"""An rclone configuration file naming remotes on the test servers (sshd, WsgiDAV).

``rclone_remotes`` (session scope) writes a temporary ``rclone.conf``; hosts are
given its path with their ``config`` option (``--config``), so ``RCLONE_CONFIG``
stays untouched for every other test.  Working remotes:

* ``sshd``: SFTP on the sshd fixture, with its client key, its known_hosts file
  (an unknown server key is refused), and ``shell_type = none`` (no shell
  probing, no ``md5sum`` over ssh per upload: see TEST-SERVERS.md);
* ``dav``: the WsgiDAV fixture, ``vendor = other``, the password given as
  ``rclone obscure`` prints it.

Remotes that must fail: ``sshd-closed`` and ``dav-closed`` (a port where nothing
listens), ``sshd-silent`` and ``dav-silent`` (a server that accepts and never
answers), ``dav-wrong-password``, ``sshd-wrong-key``, ``sshd-unknown-host-key``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

if TYPE_CHECKING:  # imported for types only: conftest loads these plugins in name order
    from tests.servers.sshd import SilentServer, SshdServer
    from tests.servers.webdav import WebdavServer

WRONG_PASSWORD = "not-the-password-4Qx"


def obscure(password: str) -> str:
    """``rclone obscure`` of ``password`` (read from standard input, not the command line)."""
    result = subprocess.run(["rclone", "obscure", "-"], input=password.encode(), capture_output=True,
                            check=True, timeout=30)
    return result.stdout.decode().strip()


@dataclass(frozen=True)
class RcloneRemotes:
    """The configuration file, its remotes, and where their objects land."""

    config: Path
    sftp_root: Path  #: a folder the ``sshd`` remote can reach (the server runs on this machine)
    webdav_root: Path  #: the folder WsgiDAV serves (``dav:x`` is ``webdav_root/x``)
    secrets: tuple[str, ...]  #: every form of the credentials in the file (for "never shown" tests)

    def url(self, remote: str, path: str | Path = "", **options: object) -> str:
        """``rclone://REMOTE:path?config=...`` (plus ``options`` in the query)."""
        query = {"config": str(self.config), **{key: str(value) for key, value in options.items()}}
        text = "&".join(f"{key}={quote(value, safe='')}" for key, value in query.items())
        return f"rclone://{remote}:{quote(str(path), safe='/')}?{text}"


def _sftp(name: str, port: int, server: SshdServer, key: Path, known_hosts: Path) -> str:
    return (f"[{name}]\ntype = sftp\nhost = {server.host}\nport = {port}\nuser = {server.user}\n"
            f"key_file = {key}\nknown_hosts_file = {known_hosts}\nshell_type = none\n\n")


def _webdav(name: str, port: int, user: str, obscured: str) -> str:
    return (f"[{name}]\ntype = webdav\nurl = http://127.0.0.1:{port}/\nvendor = other\n"
            f"user = {user}\npass = {obscured}\n\n")


@pytest.fixture(scope="session")
def rclone_remotes(sshd_server: SshdServer, webdav_server: WebdavServer, closed_port: int,
                   silent_server: SilentServer, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[RcloneRemotes]:
    """A temporary rclone.conf with remotes on the sshd and WsgiDAV fixtures (session-wide)."""
    folder = tmp_path_factory.mktemp("rclone")
    unknown = folder / "empty_known_hosts"
    unknown.write_text("")
    good, wrong = obscure(webdav_server.password), obscure(WRONG_PASSWORD)
    key, hosts = sshd_server.key_file, sshd_server.known_hosts
    silent_hosts = folder / "silent_known_hosts"
    silent_hosts.write_text(sshd_server.known_hosts_line(silent_server.port))
    closed_hosts = folder / "closed_known_hosts"
    closed_hosts.write_text(sshd_server.known_hosts_line(closed_port))
    config = folder / "rclone.conf"
    config.write_text(
        _sftp("sshd", sshd_server.port, sshd_server, key, hosts)
        + _sftp("sshd-closed", closed_port, sshd_server, key, closed_hosts)
        + _sftp("sshd-silent", silent_server.port, sshd_server, key, silent_hosts)
        + _sftp("sshd-wrong-key", sshd_server.port, sshd_server, sshd_server.wrong_key_file, hosts)
        + _sftp("sshd-unknown-host-key", sshd_server.port, sshd_server, key, unknown)
        + _webdav("dav", webdav_server.port, webdav_server.user, good)
        + _webdav("dav-wrong-password", webdav_server.port, webdav_server.user, wrong)
        + _webdav("dav-closed", closed_port, webdav_server.user, good)
        + _webdav("dav-silent", silent_server.port, webdav_server.user, good)
    )
    config.chmod(0o600)
    sftp_root = folder / "sftp-objects"
    sftp_root.mkdir()
    password = webdav_server.password
    secrets = (password, quote(password, safe=""), quote(password), good, wrong, WRONG_PASSWORD)
    yield RcloneRemotes(config, sftp_root, webdav_server.root, secrets)
