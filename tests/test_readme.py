"""The README's usage example works as written (paths put in a temporary folder)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
from psycopg import sql

from tests.servers.postgres import SERVER_USER, PostgresServer, server_bin

ROOT = Path(__file__).parent.parent


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_original_usage_example_runs(tmp_path: Path) -> None:
    (example,) = [b for b in python_blocks() if "cloudmanager.CloudManager(" in b]
    base = tmp_path / "path" / "to"
    base.mkdir(parents=True)
    (base / "file").write_bytes(b"an example file")
    code = example.replace("/path/to/", f"{base}/")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    cm = namespace["cm"]
    assert (base / "database.sqlite3").exists()
    assert cm.catalog._closed  # close() ran


def test_the_quick_start_uploads_on_the_defaults() -> None:
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block is not None
    first, second = block.group(1).strip().splitlines()
    assert second == "pip install tox && tox"
    install, _, command = first.partition(" && ")
    assert install == "pip install ." and command == "cm upload README.md"
    home = Path.home()  # a fresh one per test (conftest)
    done = subprocess.run([sys.executable, "-m", "cloudmanager", *command.split()[1:]], cwd=ROOT,
                          capture_output=True, text=True, env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"[0-9a-f]{64}  README.md  vault: ok\n", done.stdout)
    assert (home / ".local" / "share" / "cloudmanager" / "vault").is_dir()


def test_the_fleet_starts_from_a_bare_postgresql_server(postgres_server: PostgresServer) -> None:
    """The fleet section's shell commands, run as written by bash against a fresh server:
    ``sudo -u postgres`` is runuser (the tests run as root) or nothing (the tests' user
    is the server's), and ``db.lan`` is the test server's address."""
    section = (ROOT / "README.md").read_text().split("## A fleet on PostgreSQL\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None and "db.lan" in block.group(1), "the fleet section has no shell commands"
    script = block.group(1).replace("db.lan", f"{postgres_server.host}:{postgres_server.port}")
    run_as = f"runuser -u {SERVER_USER} --" if os.geteuid() == 0 else ""
    prelude = (f'sudo() {{ [ "$1 $2" = "-u {SERVER_USER}" ] || exit 97; shift 2; '
               f'command="{server_bin()}/$1"; shift; {run_as} "$command" "$@"; }}\n'
               f'cm_setup_db() {{ "{sys.executable}" "{ROOT / "bin" / "cm_setup_db"}" "$@"; }}\n'
               "set -e\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(Path.home()), "PGHOST": postgres_server.host,
           "PGPORT": str(postgres_server.port), "PGUSER": SERVER_USER}
    try:
        done = subprocess.run(["bash", "-c", prelude + script], input="a password\na password\n",
                              capture_output=True, text=True, env=env, cwd="/", timeout=120,
                              start_new_session=True)  # no terminal: createuser reads the password
        assert done.returncode == 0, done.stderr
        assert "catalog ready" in done.stdout
        with psycopg.connect(postgres_server.url(), autocommit=True) as db:
            owner = db.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                               ("cloud",)).fetchone()
        assert owner == ("cm",)
    finally:
        with psycopg.connect(postgres_server.url(), autocommit=True) as db:
            db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier("cloud")))
            db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier("cm")))
