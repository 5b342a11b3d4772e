"""Figures for a node on the open internet (issue 14).

``node-hostile``
    256 MiB PUT then GET through ``cm serve`` while 100 idle connections (from
    another loopback address) and 20 stalled uploads are held open, against the
    same transfer with none.  The node is configured with ``uploads = 32`` so that
    the stalled uploads fit beside the real one (with the default 8, the real one
    would be answered 503 until the stalled ones are cut off by their pace).
``metrics-scrape``
    One ``/metrics`` scrape (its text, as the endpoint makes it) of a catalog of
    100,000 files against one of 100.

The catalog-page memory figure is ``catalog-post-rss`` (pages.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import network  # noqa: F401  (puts the repository root on sys.path, for tests.servers)
from figures import Bench, _expect
from harness import MIB, Row, Stopwatch, Target, best_of, fresh_dir, open_node, ratio_row, write_random_file
from workload import make_workload

from cloudmanager.nodeclient import NodeClient
from cloudmanager.server.metrics import Metrics
from tests.servers.node import LOOPBACK, NodeServer, running_node

ATTACKER = "127.0.0.2"


@contextlib.contextmanager
def _held(server: NodeServer, idle: int, stalled: int) -> Iterator[None]:
    """``idle`` connections that send nothing and ``stalled`` uploads that sent one byte, open."""
    opened: list[socket.socket] = []
    try:
        for _ in range(idle):
            opened.append(socket.create_connection((LOOPBACK, server.port), source_address=(ATTACKER, 0)))
        for i in range(stalled):
            sock = socket.create_connection((LOOPBACK, server.port))
            digest = hashlib.sha256(f"stalled {i}".encode()).hexdigest()
            sock.sendall(f"PUT /objects/{digest}?name=s HTTP/1.1\r\nHost: {LOOPBACK}\r\n"
                         f"Authorization: Bearer {server.token}\r\nContent-Length: 1000000\r\n\r\nx".encode())
            opened.append(sock)
        time.sleep(1.0)  # held open: the server has taken them in before the clock starts
        yield
    finally:
        for sock in opened:
            sock.close()


def node_hostile_figure(bench: Bench) -> list[Row]:
    """256 MiB through cm serve under 100 idle connections and 20 stalled uploads, against none."""
    size_mib = min(256, bench.sizes.file_mib)
    source = bench.root / "node-hostile.bin"
    write_random_file(source, size_mib * MIB)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    with fresh_dir(bench.root, "node-hostile") as scratch, \
            running_node(scratch / "served", capacity=4 << 30, serve={"uploads": 32}) as server:
        back = scratch / "back.bin"

        def transfer(idle: int, stalled: int) -> Callable[[], float]:
            def trial() -> float:
                with _held(server, idle, stalled), NodeClient(server.base_url, server.token) as client, \
                        Stopwatch() as clock:
                    client.put(digest, "node-hostile.bin", source)
                    with open(back, "wb") as out:
                        client.get(digest, out)
                _expect(back.stat().st_size, source.stat().st_size, "the GET brought the whole file back")
                with NodeClient(server.base_url, server.token) as client:
                    client.delete(digest)
                return clock.elapsed
            return trial

        best = best_of(bench.sizes.file_rounds, {"held": transfer(100, 20), "quiet": transfer(0, 0)})
    rate = {name: 2 * size_mib / elapsed for name, elapsed in best.items()}
    return [ratio_row(f"{size_mib} MiB PUT + GET, 100 idle + 20 stalled uploads held",
                      f"{rate['held']:.0f} MiB/s", f"{rate['quiet']:.0f} MiB/s with none",
                      rate["held"] / rate["quiet"], Target.at_least(0.8))]


def _scrape_time(folder: Path, files: int, rounds: int) -> float:
    cm = open_node(folder, 1 << 30, [(folder / "vault").as_uri()])
    try:
        work = make_workload(files)
        _expect(cm.data_load(work.text), files, "files loaded")
        metrics = Metrics(cm)
        _expect(b"cloudmanager_files " in metrics.text(), True, "the scrape names the files")

        def scrape() -> float:
            with Stopwatch() as clock:
                for _ in range(20):
                    metrics.text()
            return clock.elapsed / 20

        return best_of(rounds, {"scrape": scrape})["scrape"]
    finally:
        cm.close()


def metrics_scrape_figure(bench: Bench) -> list[Row]:
    """A /metrics scrape at 100,000 files against at 100."""
    many = 100_000 if bench.sizes.records >= 100_000 else 10_000
    with fresh_dir(bench.root, "metrics") as scratch:
        (scratch / "few" / "vault").mkdir(parents=True)
        (scratch / "many" / "vault").mkdir(parents=True)
        few_s = _scrape_time(scratch / "few", 100, 5)
        many_s = _scrape_time(scratch / "many", many, 5)
    return [ratio_row(f"/metrics scrape, {many:,} files vs 100", f"{many_s * 1000:.2f} ms",
                      f"{few_s * 1000:.2f} ms at 100", many_s / few_s, Target.at_most(1.5))]


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "node-hostile": node_hostile_figure,
    "metrics-scrape": metrics_scrape_figure,
}
