"""A throwaway PostgreSQL server on 127.0.0.1 for the catalog tests and the benchmarks.

``running_postgres()`` (a context manager, usable outside pytest: the
benchmarks use it) does what TEST-SERVERS.md describes: ``initdb`` in a
``tempfile.mkdtemp()`` folder owned by the ``postgres`` user (initdb refuses to
run as root: as root, every server command runs as that user through
``runuser``), ``pg_ctl start`` on a free port of 127.0.0.1 with its socket in
that folder and ``fsync=off``, then ``pg_ctl stop`` and the folder removed.

``postgres_server`` (session scope) is that server for the tests;
``postgres_url`` (function scope) is the URL of a fresh database, dropped after
the test.  Missing binaries fail the tests with the package to install: the
tests need the real server (Debian ``postgresql``), never a stand-in.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

#: Where Debian puts the server's binaries (one folder per major version); $CM_PG_BIN wins.
BIN_GLOB = "/usr/lib/postgresql/*/bin"
SERVER_USER = "postgres"
#: Start attempts (another process may take the free port first).
STARTS = 3


def server_bin() -> Path:
    """The folder of initdb/pg_ctl: $CM_PG_BIN, else the newest Debian one.
    Raises RuntimeError naming the package when there is none."""
    named = os.environ.get("CM_PG_BIN")
    candidates = [Path(named)] if named else sorted(
        Path("/").glob(BIN_GLOB.lstrip("/")),
        key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)] or [0])
    for folder in reversed(candidates):
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise RuntimeError("PostgreSQL's server is not installed (no initdb/pg_ctl in "
                       f"{named or BIN_GLOB}): apt-get install postgresql, or set CM_PG_BIN")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """A running PostgreSQL server: where it listens and how to make databases on it."""

    host: str
    port: int
    user: str
    root: Path  #: the data folder's parent (log, socket)
    counter: itertools.count[int]

    def url(self, database: str = "postgres") -> str:
        """``postgresql://USER@127.0.0.1:PORT/DATABASE`` (trust authentication: no password)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; returns its URL."""
        name = f"{prefix}_{next(self.counter)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url`` (closing its connections first)."""
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _as_server_user(command: list[str]) -> list[str]:
    """The command run as the postgres user when we are root (initdb refuses root)."""
    return ["runuser", "-u", SERVER_USER, "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def running_postgres(settings: tuple[str, ...] = ("fsync=off",)) -> Iterator[PostgresServer]:
    """Start a fresh PostgreSQL server on 127.0.0.1 (``settings``: extra ``-c`` options);
    stop it and remove its folder on exit."""
    binaries = server_bin()
    root = Path(tempfile.mkdtemp(prefix="cm-postgres-"))
    try:
        if os.geteuid() == 0:
            owner = pwd.getpwnam(SERVER_USER)
            os.chown(root, owner.pw_uid, owner.pw_gid)
        data, log = root / "data", root / "server.log"
        subprocess.run(_as_server_user([str(binaries / "initdb"), "-D", str(data), "-U", SERVER_USER,
                                        "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        options = " ".join(f"-c {setting}" for setting in settings)
        for attempt in range(1, STARTS + 1):
            port = _free_port()
            started = subprocess.run(
                _as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-w",
                                 "-o", f"-h 127.0.0.1 -p {port} -k {root} {options}", "start"]),
                check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if started.returncode == 0:
                break
            if attempt == STARTS:
                raise RuntimeError(f"PostgreSQL did not start: {log.read_text(errors='replace')[-2000:]}")
        try:
            yield PostgresServer("127.0.0.1", port, SERVER_USER, root, itertools.count(1))
        finally:
            subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                                            "stop"]), check=False, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole run (fails, naming the package, without one)."""
    try:
        server_bin()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database of its own, dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)
