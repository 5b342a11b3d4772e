"""Figures of the PostgreSQL catalog.

``pg-exists``
    ``CloudManager.exists`` with its catalog on PostgreSQL (as many files as the
    ``lookup`` figure, half the hashes looked up present), against the same
    query, ``SELECT 1 FROM files WHERE hash = %s``, issued by psycopg directly on
    one connection as a prepared statement: what the catalog layer costs above
    the driver and the server.  Both talk to the same server on 127.0.0.1 (the
    tests' throwaway one, ``tests/servers/postgres.py``), started and stopped
    by the figure.

``pg-counts``
    ``CloudManager.counts`` and ``stats`` with their catalog on PostgreSQL at
    100,000 files against at 100 (two databases on the one server), as the
    ``counts`` figure does with SQLite.
"""

from __future__ import annotations

from collections.abc import Callable

import network  # noqa: F401  (puts the repository root on sys.path, for tests.servers)
import psycopg
from figures import COUNTS_HOSTS, ROOMY, Bench, _expect, counted_nodes, counts_rows
from harness import Row, Target, Trial, best_of, clocked, fresh_dir, note, per_second, ratio_row
from workload import lookup_mix

from cloudmanager import CloudManager
from tests.servers.postgres import running_postgres

EXISTS = "SELECT 1 FROM files WHERE hash = %s"


def pg_exists_figure(bench: Bench) -> list[Row]:
    """``exists`` per second on a PostgreSQL catalog, against psycopg's prepared query."""
    work = bench.workload
    mix = lookup_mix(work.hashes, bench.sizes.lookups)
    present = len(set(mix) & set(work.hashes))

    def lookups(check: Callable[[str], bool], what: str) -> Trial:
        return clocked(lambda: _expect(sum(map(check, mix)), present, f"hits of {what}"))

    with running_postgres() as server, fresh_dir(bench.root, "pg-exists") as folder:
        url = server.create_database("bench")
        with CloudManager(url, folder / "cache", ROOMY, hosts=["memory://bench"]) as cm, \
                psycopg.connect(url, autocommit=True) as bare:
            note(f"  loading {len(work.hashes):,} records")
            _expect(cm.data_load(work.text), len(work.hashes), "files added by data_load")
            cursor = bare.cursor()

            def direct(digest: str) -> bool:
                return cursor.execute(EXISTS, (digest,), prepare=True).fetchone() is not None

            best = best_of(bench.sizes.rounds, {"exists": lookups(cm.exists, "exists"),
                                                "psycopg": lookups(direct, "psycopg")})
    count = len(mix)
    return [ratio_row(f"exists(), PostgreSQL, {len(work.hashes):,} files", per_second(count, best["exists"]),
                      f"{per_second(count, best['psycopg'])} psycopg prepared",
                      best["psycopg"] / best["exists"], Target.at_least(0.8))]


def pg_counts_figure(bench: Bench) -> list[Row]:
    """``counts()`` and ``stats()`` on a PostgreSQL catalog of 100,000 files against one of 100."""
    with running_postgres() as server, fresh_dir(bench.root, "pg-counts") as folder:

        def node(count: int) -> CloudManager:
            return CloudManager(server.create_database("bench"), folder / f"cache-{count}", ROOMY,
                                hosts=COUNTS_HOSTS)

        with counted_nodes(node) as nodes:
            return counts_rows(bench, nodes, ", PostgreSQL")


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {"pg-exists": pg_exists_figure,
                                                     "pg-counts": pg_counts_figure}
