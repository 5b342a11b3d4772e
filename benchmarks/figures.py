"""The figures of the benchmark table, each measured side by side with a peer or a lower bound.

Every figure is a function ``(Bench) -> list[Row]``, listed in FIGURES under the
name ``--only`` takes.  Times are the best of several interleaved rounds; what
is inside the clock is said in each trial.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import diskcache
from harness import (
    BUFFER_SIZE,
    MIB,
    Row,
    Stopwatch,
    Target,
    Trial,
    best_of,
    clocked,
    fresh_dir,
    fsync_path,
    host_url,
    note,
    open_node,
    per_second,
    ratio_row,
    seconds,
    write_random_file,
)
from workload import HOSTS, Workload, lookup_mix, make_workload

from cloudmanager import CloudManager
from cloudmanager.hosts import MemoryHost

#: Capacity of the caches that only hold catalog rows or tiny files (never reached).
ROOMY = 1 << 40


@dataclass(frozen=True)
class Sizes:
    """How big each figure's work is, and how many rounds it is timed over."""

    file_mib: int  # the large file of the upload and memory figures
    records: int  # catalog size of the lookup and data_load figures
    lookups: int  # hashes looked up per round (half present, half absent)
    cached_many: int  # usage_ratio: the large cache...
    cached_few: int  # ...and the small one
    usage_calls: int  # usage_ratio calls per round
    rounds: int  # rounds of the quick figures
    file_rounds: int  # rounds of the upload figure
    counts_calls: int  # counts() and stats() calls per round (100 vs 100,000 files, at every size)


FULL = Sizes(file_mib=512, records=100_000, lookups=20_000, cached_many=10_000, cached_few=100,
             usage_calls=50_000, rounds=5, file_rounds=5, counts_calls=10_000)
QUICK = Sizes(file_mib=64, records=10_000, lookups=5_000, cached_many=1_000, cached_few=100,
              usage_calls=10_000, rounds=3, file_rounds=3, counts_calls=2_000)


class Bench:
    """What the figures share: the scratch folder, the sizes, and inputs made once."""

    def __init__(self, root: Path, sizes: Sizes):
        self.root = root
        self.sizes = sizes

    @property
    def file_size(self) -> int:
        """Size in bytes of the large file."""
        return self.sizes.file_mib * MIB

    @cached_property
    def big_file(self) -> Path:
        """The large random file (written once, on first use)."""
        path = self.root / "source.bin"
        note(f"  writing a {self.sizes.file_mib} MiB random file")
        write_random_file(path, self.file_size)
        return path

    @cached_property
    def workload(self) -> Workload:
        """The generated catalog records (made once, on first use)."""
        return make_workload(self.sizes.records)


def _expect(actual: object, expected: object, what: str) -> None:
    """Stop the benchmark when a measured call did not do what it was meant to."""
    if actual != expected:
        raise RuntimeError(f"{what}: expected {expected!r}, got {actual!r}")


# -- 1. upload of a large file to one folder host ---------------------------------------


def _plain_copy_hashing(source: Path, target: Path) -> str:
    """The least an upload must do first: read once through a reused buffer, hash,
    write the cache copy and flush it to the disk.  Returns the SHA-256."""
    digest = hashlib.sha256()
    view = memoryview(bytearray(BUFFER_SIZE))
    with open(source, "rb", buffering=0) as src, open(target, "wb", buffering=0) as out:
        while count := src.readinto(view):
            chunk = view[:count]
            digest.update(chunk)
            out.write(chunk)
        os.fsync(out.fileno())
    return digest.hexdigest()


def upload_figure(bench: Bench) -> list[Row]:
    """``upload`` of the large file, against hash + cache copy + host copy written plainly."""
    source, size = bench.big_file, bench.file_size
    digests: set[object] = set()

    def ours() -> float:
        with fresh_dir(bench.root, "upload-ours") as folder, \
                open_node(folder, 2 * size, [host_url(folder)]) as cm, Stopwatch() as clock:
            digests.add(cm.upload(source))
        os.sync()  # the next trial starts with nothing left to write back
        return clock.elapsed

    def bound() -> float:
        with fresh_dir(bench.root, "upload-bound") as folder:
            cache_copy, host_copy = folder / "cache-copy", folder / "host-copy"
            with Stopwatch() as clock:
                digests.add(_plain_copy_hashing(source, cache_copy))
                shutil.copyfile(cache_copy, host_copy)
                fsync_path(host_copy)
        os.sync()
        return clock.elapsed

    best = best_of(bench.sizes.file_rounds, {"ours": ours, "bound": bound})
    _expect(len(digests), 1, "upload and the lower bound found one and the same SHA-256")
    rate = f"{size / MIB / best['ours']:.0f} MiB/s"
    return [ratio_row(f"upload {bench.sizes.file_mib} MiB, 1 folder host",
                      f"{seconds(best['ours'])} ({rate})", f"{seconds(best['bound'])} plain",
                      best["ours"] / best["bound"], Target.at_most(1.1))]


# -- 2. exists / on_cache lookups -----------------------------------------------------------


def lookup_figure(bench: Bench) -> list[Row]:
    """``exists`` and ``on_cache`` per second, against ``key in diskcache.Cache``."""
    work = bench.workload
    mix = lookup_mix(work.hashes, bench.sizes.lookups)
    present = len(set(mix) & set(work.hashes))

    def lookups(check: Callable[[str], bool], expected: int, what: str) -> Trial:
        return clocked(lambda: _expect(sum(map(check, mix)), expected, f"hits of {what}"))

    with fresh_dir(bench.root, "lookup") as folder, \
            open_node(folder, ROOMY, ["memory://bench"]) as cm, \
            diskcache.Cache(str(folder / "diskcache")) as peer:
        _expect(cm.data_load(work.text), len(work.hashes), "files added by data_load")
        with peer.transact():
            for key, _, size, _ in work.files:
                peer[key] = size
        best = best_of(bench.sizes.rounds, {
            "exists": lookups(cm.exists, present, "exists"),
            "on_cache": lookups(cm.on_cache, 0, "on_cache"),  # nothing is cached
            "diskcache": lookups(peer.__contains__, present, "diskcache"),
        })
    count = len(mix)
    peer_text = f"{per_second(count, best['diskcache'])} diskcache"
    return [
        ratio_row(f"{name}(), {len(work.hashes):,} files", per_second(count, best[name]), peer_text,
                  best["diskcache"] / best[name], Target.at_least(1.5))
        for name in ("exists", "on_cache")
    ]


# -- 3. usage_ratio with many and with few cached files ----------------------------------------


def _fill_cache(cm: CloudManager, count: int, scratch: Path) -> None:
    """Upload ``count`` tiny distinct files, so that ``count`` files are cached."""
    source = scratch / "tiny.bin"
    for index in range(count):
        source.write_bytes(f"{scratch.name} {index}".encode())
        cm.upload(source)
    _expect(cm.catalog.usage()[1], count, "files cached")


def _repeat(call: Callable[[], object], times: int) -> None:
    for _ in itertools.repeat(None, times):
        call()


def usage_figure(bench: Bench) -> list[Row]:
    """``usage_ratio`` per second with many cached files against with few (same: O(1))."""
    sizes = bench.sizes
    many, few = (f"{count:,} cached" for count in (sizes.cached_many, sizes.cached_few))
    trials: dict[str, Trial] = {}
    with fresh_dir(bench.root, "usage") as folder, ExitStack() as stack:
        for label, count in ((many, sizes.cached_many), (few, sizes.cached_few)):
            node, host = folder / f"node-{count}", f"bench-{count}"
            stack.callback(MemoryHost.reset, host)
            cm = stack.enter_context(open_node(node, ROOMY, [f"memory://{host}"]))
            note(f"  caching {count:,} tiny files")
            _fill_cache(cm, count, node)
            trials[label] = clocked(partial(_repeat, cm.usage_ratio, sizes.usage_calls))
        best = best_of(sizes.rounds, trials)
    return [ratio_row(f"usage_ratio(), {sizes.cached_many:,} vs {sizes.cached_few:,} cached",
                      per_second(sizes.usage_calls, best[many]),
                      f"{per_second(sizes.usage_calls, best[few])} ({few})",
                      best[few] / best[many], Target.between(0.8, 1.25))]


# -- 4. data_load into a fresh catalog ---------------------------------------------------------

#: The lower bound's tables: the catalog's columns and keys, no checks, indexes or triggers.
RAW_SCHEMA = (
    """CREATE TABLE files (hash TEXT PRIMARY KEY, name TEXT NOT NULL, size INTEGER NOT NULL,
           datetime INTEGER NOT NULL, cached INTEGER NOT NULL DEFAULT 0,
           pinned INTEGER NOT NULL DEFAULT 0, access INTEGER NOT NULL DEFAULT 0,
           copies INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID""",
    """CREATE TABLE uploads (hash TEXT NOT NULL, host TEXT NOT NULL, url TEXT, error TEXT,
           time INTEGER NOT NULL, PRIMARY KEY (hash, host)) WITHOUT ROWID""",
)


def load_figure(bench: Bench) -> list[Row]:
    """``data_load`` of the JSON records, against executemany of the parsed rows."""
    work = bench.workload

    def ours() -> float:
        with fresh_dir(bench.root, "load-ours") as folder, \
                open_node(folder, ROOMY, ["memory://bench"]) as cm, Stopwatch() as clock:
            changed = cm.data_load(work.text)
        _expect(changed, len(work.hashes), "files added by data_load")
        return clock.elapsed

    def bound() -> float:
        with fresh_dir(bench.root, "load-bound") as folder, \
                closing(sqlite3.connect(folder / "raw.sqlite3", isolation_level=None)) as db:
            for statement in ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL", *RAW_SCHEMA):
                db.execute(statement)
            with Stopwatch() as clock:
                db.execute("BEGIN")
                db.executemany("INSERT INTO files (hash, name, size, datetime) VALUES (?, ?, ?, ?)",
                               work.files)
                db.executemany("INSERT INTO uploads VALUES (?, ?, ?, ?, ?)", work.uploads)
                db.execute("COMMIT")
        return clock.elapsed

    best = best_of(bench.sizes.rounds, {"ours": ours, "bound": bound})
    return [ratio_row(f"data_load, {len(work.hashes):,} records", seconds(best["ours"]),
                      f"{seconds(best['bound'])} executemany", best["ours"] / best["bound"],
                      Target.at_most(2))]


# -- 5. the node's file counts with few and with many files --------------------------------------

#: The counts figures' catalog sizes: what a scrape of the node's figures costs at 100,000
#: files, against at 100 (the same: running counts).
COUNTS_FILES = (100, 100_000)
#: The nodes' hosts: those of the generated records (one holds every file, the other half).
COUNTS_HOSTS = [f"memory://{host}" for host in HOSTS]


@contextmanager
def counted_nodes(open_node_of: Callable[[int], CloudManager]) -> Iterator[dict[int, CloudManager]]:
    """A node per size of COUNTS_FILES (``open_node_of(size)`` opens an empty one), its
    catalog loaded with that many generated records (and their hosts emptied at the end)."""
    with ExitStack() as stack:
        for host in HOSTS:
            stack.callback(MemoryHost.reset, host)
        nodes: dict[int, CloudManager] = {}
        for count in COUNTS_FILES:
            nodes[count] = stack.enter_context(open_node_of(count))
            note(f"  loading {count:,} records")
            records = make_workload(count, locator=lambda host, key: f"memory://{host}/{key}").text
            _expect(nodes[count].data_load(records), count, "files added by data_load")
            _expect(nodes[count].counts()["pending"], count // 2, "files pending")
        yield nodes


def counts_rows(bench: Bench, nodes: Mapping[int, CloudManager], where: str = "") -> list[Row]:
    """``counts()`` and ``stats()`` per second at the largest catalog against at the smallest,
    side by side; the ratio is time at many files over time at few (target: at most 1.5)."""
    few, many = min(nodes), max(nodes)
    calls = bench.sizes.counts_calls
    rows: list[Row] = []
    for call in ("counts", "stats"):
        trials = {f"{call}(), {count:,} files": clocked(partial(_repeat, getattr(nodes[count], call), calls))
                  for count in (many, few)}
        best = best_of(bench.sizes.rounds, trials)
        slow, fast = best[f"{call}(), {many:,} files"], best[f"{call}(), {few:,} files"]
        rows.append(ratio_row(f"{call}(){where}, {many:,} vs {few:,} files", per_second(calls, slow),
                              f"{per_second(calls, fast)} ({few:,} files)", slow / fast, Target.at_most(1.5)))
    return rows


def counts_figure(bench: Bench) -> list[Row]:
    """``counts()`` and ``stats()`` on an SQLite catalog of 100,000 files against one of 100."""
    with fresh_dir(bench.root, "counts") as folder, \
            counted_nodes(lambda count: open_node(folder / f"node-{count}", ROOMY, COUNTS_HOSTS)) as nodes:
        return counts_rows(bench, nodes)


# -- 6. peak memory of upload and warm_up ------------------------------------------------------

PROBE = Path(__file__).with_name("memprobe.py")
#: Runs its arguments as a process of its own.  Linux carries a process's peak RSS
#: across exec into the new program's ru_maxrss, so the probe is not started
#: from this (large) process directly but from this small one.
TRAMPOLINE = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"
MEMORY_LIMIT_MIB = 64


def _probe(call: str, folder: Path, argument: str, capacity: int) -> dict[str, Any]:
    """Run memprobe.py in a fresh process; its report (see memprobe.py)."""
    command = [sys.executable, "-c", TRAMPOLINE,
               sys.executable, str(PROBE), call, str(folder), argument, str(capacity)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"memprobe.py {call} failed:\n{done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout)
    if report["before_kib"] > report["rest_kib"] + BUFFER_SIZE // 1024:
        note(f"  {call}: the peak RSS before the call was already {report['before_kib']} KiB "
             f"(rest {report['rest_kib']} KiB): the figure is an upper bound")
    return report


def _memory_row(call: str, size_mib: int, report: dict[str, Any]) -> Row:
    above = (report["peak_kib"] - report["rest_kib"]) / 1024
    return Row(f"peak RSS of {call}, {size_mib} MiB", f"+{above:.1f} MiB",
               f"rest {report['rest_kib'] / 1024:.1f} MiB", above,
               Target.below(MEMORY_LIMIT_MIB, "MiB"))


def memory_figure(bench: Bench) -> list[Row]:
    """Peak RSS above rest of ``upload`` and of ``warm_up`` (from the folder host)."""
    source, capacity = bench.big_file, 2 * bench.file_size
    with fresh_dir(bench.root, "memory") as folder:
        uploaded = _probe("upload", folder, str(source), capacity)
        digest = uploaded["result"]
        with open_node(folder, capacity, [host_url(folder)]) as cm:
            _expect(cm.evict(), [digest], "files evicted")
            cached = str(cm.path(digest))
        warmed = _probe("warm_up", folder, digest, capacity)
        _expect(warmed["result"], cached, "path returned by warm_up")
    return [_memory_row("upload", bench.sizes.file_mib, uploaded),
            _memory_row("warm_up", bench.sizes.file_mib, warmed)]


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "upload": upload_figure,
    "lookup": lookup_figure,
    "usage": usage_figure,
    "load": load_figure,
    "memory": memory_figure,
    "counts": counts_figure,
}
