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
``catalog-post-rss``
    The peak RSS of ``cm serve`` above its rest while 4 clients POST 200 MiB
    catalog bodies (chunked, valid-looking records) at once: each is refused
    (413) at the caps of a page, within a bound whatever the body; then one
    body of the valid records that take the most memory per byte.

The servers are the tests' own (``tests/servers/node.py`` and
``tests/servers/webdav.py``), started and stopped by each figure.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx
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
from memprobe import reset_peak, rss_kib

from cloudmanager import CloudManager, payload, peersync
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


#: Clients POSTing at once, the size of each body, and the targets above rest (all of
#: them; one body of the densest shape).
POSTERS, POST_MIB, POST_RSS_LIMIT_MIB, ONE_POST_LIMIT_MIB = 4, 200, 128, 64
Shape = Callable[[int], dict[str, Any]]


def _common(number: int) -> dict[str, Any]:
    """A valid-looking record of about 1.2 KB (four hosts): 8 MiB of them is about 7,000
    records, so the byte cap is reached before the count cap."""
    uploads = [{"host_name": f"host{j}", "url": f"https://host{j}.example/{number:064x}/" + "p" * 150}
               for j in range(4)]
    return {"version": "0.2", "datetime": "1391212800", "filename": f"file-{number}.txt", "filesize": "4096",
            "filehash": f"{number:064x}", "uploads": uploads}


def _dense(number: int) -> dict[str, Any]:
    """The valid record that takes the most memory per byte of JSON: every upload it may
    have, each on a host of its own with a one-letter URL."""
    return {"version": "0.2", "datetime": "1", "filename": "f", "filesize": "1", "filehash": f"{number:064x}",
            "uploads": [{"host_name": f"{number}-{j}", "url": "u"} for j in range(payload._MAX_UPLOADS)]}


def _catalog_body(shape: Shape, total: int, first: int) -> Iterator[bytes]:
    """About ``total`` bytes of a dump of ``shape`` records numbered from ``first``, 64 a chunk."""
    yield b"["
    sent, number = 1, first
    while sent < total:
        chunk = b",".join(json.dumps(shape(number + j)).encode() for j in range(64))
        chunk = chunk if number == first else b"," + chunk
        number += 64
        sent += len(chunk)
        yield chunk
    yield b"]"


def _post(server: NodeServer, body: Iterator[bytes]) -> int:
    with httpx.Client(base_url=server.base_url, timeout=300,
                      headers={"Authorization": f"Bearer {server.token}"}) as http:
        return http.post("/catalog", content=body, headers={"Content-Type": "application/json"}).status_code


def _post_rss(bench: Bench, figure: str, shape: Shape, posters: int, limit_mib: float) -> Row:
    """Peak RSS of a fresh cm serve above its rest while ``posters`` clients POST 200 MiB
    bodies of ``shape`` records at once; each must be refused, nothing merged.  The node
    admits ``posters`` pushes at once (``serve.catalog_pushes``, default 2), so that all
    of them are parsed together rather than some answered 503."""
    with fresh_dir(bench.root, "catalog-post") as scratch, \
            running_node(scratch / "served", capacity=1 << 30,
                         serve={"catalog_pushes": posters}) as server:
        warm = [_common(n) for n in range(10)]
        auth = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=server.base_url, headers=auth) as http:
            _expect(http.post("/catalog", json=warm).status_code, 200, "the warm-up POST")
            _expect(http.get("/catalog").status_code, 200, "the warm-up GET")
        pid = server.process.pid
        rest = rss_kib(pid)
        if not reset_peak(pid):
            note("  cannot reset the server's peak RSS: the figure is an upper bound")
        bodies = [_catalog_body(shape, POST_MIB * MIB, (n + 1) << 32) for n in range(posters)]
        with Stopwatch() as clock, ThreadPoolExecutor(posters) as pool:
            statuses = list(pool.map(partial(_post, server), bodies))
        peak = rss_kib(pid, "VmHWM")
        _expect(statuses, [413] * posters, "every body past the caps refused")
        with CloudManager(server.root / "catalog.sqlite3", server.root / "cache", 1 << 30, hosts=[]) as node:
            _expect(node.catalog.count(), len(warm), "nothing of the refused bodies merged")
    above = (peak - rest) / 1024
    return Row(figure, f"+{above:.1f} MiB", f"rest {rest / 1024:.1f} MiB, {clock.elapsed:.1f} s", above,
               Target.below(limit_mib, "MiB"))


def catalog_post_rss_figure(bench: Bench) -> list[Row]:
    """Peak RSS of cm serve above rest while 4 clients POST 200 MiB catalog bodies at once
    (valid-looking records), and while one POSTs 200 MiB of the densest valid records."""
    return [_post_rss(bench, f"peak RSS of cm serve, {POSTERS} x POST /catalog of {POST_MIB} MiB at once",
                      _common, POSTERS, POST_RSS_LIMIT_MIB),
            _post_rss(bench, f"  1 x POST of {POST_MIB} MiB of the densest valid records", _dense, 1,
                      ONE_POST_LIMIT_MIB)]


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "node-many": node_many_figure,
    "node-big": node_big_figure,
    "node-sync": node_sync_figure,
    "catalog-post-rss": catalog_post_rss_figure,
}
_ = network  # imported for its side effect (sys.path)
