"""A fleet: 2 nodes x 2 processes each, uploading and warming up against one PostgreSQL
catalog at once (tests/worker.py does the work).  No error, no lost row, each node's
usage exact and within its capacity."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from cloudmanager import CloudManager
from cloudmanager.catalog import node_id, open_catalog

ROOT = Path(__file__).parent.parent
#: Nodes, processes per node and operations per process (the long run sets more).
NODES = int(os.environ.get("CM_FLEET_NODES", "2"))
PROCESSES = int(os.environ.get("CM_FLEET_PROCESSES", "2"))
OPS = int(os.environ.get("CM_FLEET_OPS", "60"))
CAPACITY = 160 * 1024


def on_disk(cache: Path) -> dict[str, int]:
    """The cached files in a cache directory (name -> size), temporary files left out."""
    return {p.name: p.stat().st_size for p in cache.rglob("*") if p.is_file() and not p.name.startswith(".")}


def test_two_nodes_of_two_processes_share_one_catalog(postgres_url: str, tmp_path: Path) -> None:
    vault = tmp_path / "vault"  # the host every node sends to
    caches = [tmp_path / f"node-{n}" / "cache" for n in range(NODES)]
    procs, journals = [], []
    for n, cache in enumerate(caches):
        cache.parent.mkdir()
        for p in range(PROCESSES):
            journal = cache.parent / f"journal-{p}"
            journals.append(journal)
            args = [postgres_url, str(cache), str(CAPACITY), str(vault), str(journal),
                    str(100 * (n + 1) + p), str(OPS), "fleet"]
            procs.append(subprocess.Popen([sys.executable, "-m", "tests.worker", *args], cwd=ROOT,
                                          stderr=subprocess.PIPE))
    for proc in procs:
        _, err = proc.communicate()
        assert proc.returncode == 0, err.decode()

    # Each node's totals are exactly its cached rows, and exactly the bytes on its disk.
    for cache in caches:
        catalog = open_catalog(postgres_url, node=node_id(cache))
        try:
            counted = catalog.cached_sizes()
            used, files = catalog.usage()
            assert (used, files) == (sum(counted.values()), len(counted))
            assert used <= CAPACITY
            assert on_disk(cache) == counted
            assert not catalog.recount(fix=False)
        finally:
            catalog.close()

    # No lost row: every upload that returned is in the catalog and comes back, on each node.
    uploaded = {digest for journal in journals for digest in journal.read_text().split()}
    assert len(uploaded) >= PROCESSES * NODES
    for cache in caches:
        with CloudManager(postgres_url, cache, CAPACITY, hosts=[vault.as_uri()]) as cm:
            assert cm.last_repair.clean, cm.last_repair
            for digest in sorted(uploaded):
                assert cm.exists(digest), digest
                path = cm.warm_up(digest)
                assert path, f"{digest} was uploaded and is lost"
                assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
            assert cm.check().problems == 0
        print(f"{NODES} nodes x {PROCESSES} processes x {OPS} operations: {len(uploaded)} uploads, "
              "all retrievable, usage exact")
