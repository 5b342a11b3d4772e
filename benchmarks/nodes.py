"""Figures for nodes: `cm serve` as a host for other nodes, and catalog sync over HTTP.

``node-many``
    1,000 files of 64 KiB uploaded to a ``cm://`` node on 127.0.0.1, against
    the same files to a WebDAV host (WsgiDAV) on the same machine.
``node-big``
    256 MiB through ``cm serve`` (PUT, then GET) by our client, against curl to
    and from the same server.
``node-sync``
    A catalog of 100,000 records pulled from one node by another over HTTP
    (paged, validated, merged), and the repeated pull, which must move nothing.

The servers are the tests' own (``tests/servers/node.py`` and
``tests/servers/webdav.py``), started and stopped by each figure.
"""

from __future__ import annotations

import hashlib
import itertools
import subprocess
from collections.abc import Callable
from pathlib import Path

import network  # puts the repository root on sys.path, for tests.servers
from figures import Bench, _expect
from harness import (
    MIB,
    Row,
    Stopwatch,
    Target,
    best_of,
    fresh_dir,
    note,
    ratio_row,
    seconds,
    write_random_file,
)

from cloudmanager import CloudManager, peersync
from cloudmanager.hosts import Host, make_host
from cloudmanager.hosts.webdav import WebdavHost
from cloudmanager.nodeclient import NodeClient
from tests.servers.node import NodeServer, running_node
from tests.servers.webdav import WebdavServer, running_webdav

KIB = 1 << 10


def _files(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir()
    paths = []
    for i in range(count):
        path = folder / f"f{i:05d}.bin"
        write_random_file(path, size)
        paths.append(path)
    return paths


def node_many_figure(bench: Bench) -> list[Row]:
    """upload_many of small files to a cm:// node, against the same to a WebDAV host."""
    count = 1_000 if bench.sizes.records >= 100_000 else 200
    files = _files(bench.root / "node-many-files", count, 64 * KIB)
    with fresh_dir(bench.root, "node-many") as scratch:
        (scratch / "dav").mkdir()
        with running_node(scratch / "served", capacity=4 << 30) as server, \
                running_webdav(scratch / "dav") as dav:
            return _node_many(scratch, server, dav, files)


def _node_many(scratch: Path, server: NodeServer, dav: WebdavServer, files: list[Path]) -> list[Row]:
    """The trials of node-many: the same files, to a fresh client each round."""
    rounds = itertools.count()

    def trial(make: Callable[[int], Host]) -> Callable[[], float]:
        def run() -> float:
            with fresh_dir(scratch, "client") as folder:
                host = make(next(rounds))
                with CloudManager(folder / "c.sqlite3", folder / "cache", 4 << 30, hosts=[host]) as cm, \
                        Stopwatch() as clock:
                    kept = cm.upload_many(files)
                _expect(all(kept), True, "every file was kept")
                return clock.elapsed
        return run

    def webdav_host(number: int) -> Host:
        (scratch / "dav" / f"r{number}").mkdir()
        return WebdavHost(f"{dav.url}/r{number}", user=dav.user, password=dav.password)

    best = best_of(3, {"node": trial(lambda _: make_host(server.url, token=server.token)),
                       "webdav": trial(webdav_host)})
    rate = {name: len(files) / elapsed for name, elapsed in best.items()}
    return [ratio_row(f"upload_many {len(files):,} x 64 KiB, 1 cm:// node", f"{rate['node']:,.0f} files/s",
                      f"{rate['webdav']:,.0f} files/s WebDAV", rate["node"] / rate["webdav"],
                      Target.at_least(1.0))]


def _curl(server: NodeServer, *args: str) -> None:
    subprocess.run(["curl", "-sSf", "-H", f"Authorization: Bearer {server.token}", *args],
                   check=True, stdout=subprocess.DEVNULL)


def node_big_figure(bench: Bench) -> list[Row]:
    """256 MiB PUT then GET through cm serve by NodeClient, against curl."""
    size_mib = min(256, bench.sizes.file_mib)
    source = bench.root / "node-big.bin"
    write_random_file(source, size_mib * MIB)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    with fresh_dir(bench.root, "node-big") as scratch, \
            running_node(scratch / "served", capacity=4 << 30) as server:
        url = f"{server.base_url}/objects/{digest}"
        back = scratch / "back.bin"

        def ours() -> float:
            with NodeClient(server.base_url, server.token) as client, Stopwatch() as clock:
                client.put(digest, "node-big.bin", source)
                with open(back, "wb") as out:
                    client.get(digest, out)
            client_ok = back.stat().st_size == source.stat().st_size
            _expect(client_ok, True, "our GET brought the whole file back")
            with NodeClient(server.base_url, server.token) as client:
                client.delete(digest)
            return clock.elapsed

        def curl() -> float:
            with Stopwatch() as clock:
                _curl(server, "-T", str(source), f"{url}?name=node-big.bin")
                _curl(server, "-o", str(back), url)
            _expect(back.stat().st_size, source.stat().st_size, "curl's GET brought the whole file back")
            _curl(server, "-X", "DELETE", url)
            return clock.elapsed

        best = best_of(bench.sizes.file_rounds, {"ours": ours, "curl": curl})
    throughput = {name: 2 * size_mib / elapsed for name, elapsed in best.items()}
    return [ratio_row(f"{size_mib} MiB PUT + GET through cm serve", f"{throughput['ours']:.0f} MiB/s",
                      f"{throughput['curl']:.0f} MiB/s curl", throughput["ours"] / throughput["curl"],
                      Target.at_least(0.8))]


def node_sync_figure(bench: Bench) -> list[Row]:
    """A pull of 100,000 records over HTTP, and the repeated pull (0 records)."""
    work = bench.workload
    with fresh_dir(bench.root, "node-sync") as scratch, \
            running_node(scratch / "served", capacity=1 << 30) as server:
        served = CloudManager(server.root / "catalog.sqlite3", server.root / "cache", 1 << 30, hosts=[])
        with served:
            note(f"  loading {len(work.hashes):,} records into the served node")
            served.data_load(work.text)
        with fresh_dir(scratch, "puller") as folder, \
                CloudManager(folder / "c.sqlite3", folder / "cache", 1 << 30, hosts=[]) as cm, \
                NodeClient(server.base_url, server.token) as client:
            with Stopwatch() as first:
                pulled = peersync.pull(cm, client, server.base_url)
            with Stopwatch() as again:
                repeated = peersync.pull(cm, client, server.base_url)
            _expect(pulled.added, len(work.hashes), "the pull added every record")
            _expect(cm.catalog.count(), len(work.hashes), "the puller knows every file")
    return [
        Row(f"catalog sync, {len(work.hashes):,} records over HTTP", seconds(first.elapsed),
            f"{len(work.hashes) / first.elapsed:,.0f} records/s", first.elapsed, Target.none()),
        Row("  the same sync repeated", f"{repeated.records} records moved", seconds(again.elapsed),
            float(repeated.records), Target.at_most(0)),
    ]


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "node-many": node_many_figure,
    "node-big": node_big_figure,
    "node-sync": node_sync_figure,
}
_ = network  # imported for its side effect (sys.path)
