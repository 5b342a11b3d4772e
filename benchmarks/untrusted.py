"""Figures for hosts you don't trust: encrypted uploads and spread (erasure-coded) files.

Each is measured side by side with the same work done without encryption or
spreading, in the same run, on folder hosts (so the figures show our cost, not a
network's).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from figures import Bench
from harness import MIB, Row, Stopwatch, Target, best_of, fresh_dir, ratio_row, seconds, write_random_file

from cloudmanager import CloudManager
from cloudmanager.crypto import Key

HOSTS = 5


def _size_mib(bench: Bench) -> int:
    """256 MiB in a full run (the issue's size), less in a quick one."""
    return min(256, bench.sizes.file_mib)


def _source(bench: Bench) -> Path:
    path = bench.root / "untrusted-source.bin"
    if not path.exists():
        write_random_file(path, _size_mib(bench) * MIB)
    return path


def _node(folder: Path, hosts: int, **options: object) -> CloudManager:
    folder.mkdir(exist_ok=True)
    urls = [(folder / f"host{i}").as_uri() for i in range(hosts)]
    return CloudManager(folder / "catalog.sqlite3", folder / "cache", 4 << 30, hosts=urls,
                        **options)  # type: ignore[arg-type]


def _stored(folder: Path) -> int:
    return sum(p.stat().st_size for host in folder.glob("host*") for p in host.rglob("*") if p.is_file())


def _timed_upload(bench: Bench, prefix: str, hosts: int, stored: list[int], **options: object) -> float:
    with fresh_dir(bench.root, prefix) as folder, _node(folder, hosts, **options) as cm:
        with Stopwatch() as clock:
            if not cm.upload(_source(bench)):
                raise RuntimeError(f"{prefix}: the upload kept nothing")
        stored.append(_stored(folder))
    os.sync()
    return clock.elapsed


def encrypt_figure(bench: Bench) -> list[Row]:
    """Encrypt + upload to one folder host, against a plain upload."""
    key = Key.generate()
    stored: list[int] = []
    best = best_of(bench.sizes.file_rounds, {
        "sealed": lambda: _timed_upload(bench, "enc", 1, stored, key=key, encrypt=True),
        "plain": lambda: _timed_upload(bench, "plain", 1, stored),
    })
    return [ratio_row(f"encrypt + upload {_size_mib(bench)} MiB, 1 folder host", seconds(best["sealed"]),
                      f"{seconds(best['plain'])} plain upload", best["sealed"] / best["plain"],
                      Target.at_most(1.5))]


def spread_figure(bench: Bench) -> list[Row]:
    """Spread 3/5 to five folder hosts, against a whole copy on each of five."""
    spread_bytes: list[int] = []
    whole_bytes: list[int] = []
    best = best_of(bench.sizes.file_rounds, {
        "spread": lambda: _timed_upload(bench, "spread", HOSTS, spread_bytes, spread="3/5"),
        "whole": lambda: _timed_upload(bench, "whole", HOSTS, whole_bytes),
    })
    size = _size_mib(bench) * MIB
    return [
        ratio_row(f"spread 3/5 of {_size_mib(bench)} MiB, 5 folder hosts", seconds(best["spread"]),
                  f"{seconds(best['whole'])} 5 whole copies", best["spread"] / best["whole"],
                  Target.at_most(1.0)),
        ratio_row("  bytes stored, per byte of the file", f"{spread_bytes[0] / size:.3f}",
                  f"{whole_bytes[0] / size:.3f} 5 whole copies", spread_bytes[0] / whole_bytes[0],
                  Target.at_most(0.34)),
    ]


def _warm_trial(cm: CloudManager, digest: str) -> Callable[[], float]:
    def trial() -> float:
        cm.evict([digest])
        os.sync()
        with Stopwatch() as clock:
            if not cm.warm_up(digest):
                raise RuntimeError("warm_up brought nothing back")
        return clock.elapsed

    return trial


def spread_warm_figure(bench: Bench) -> list[Row]:
    """warm_up of a 3/5 file with two of its five hosts stopped, against a whole copy."""
    with fresh_dir(bench.root, "warm") as folder:
        spread = _node(folder / "spread", HOSTS, spread="3/5")
        whole = _node(folder / "whole", 1)
        with spread, whole:
            digest = spread.upload(_source(bench))
            if not digest or whole.upload(_source(bench)) != digest:
                raise RuntimeError("the uploads did not keep the file")
            for i in (0, 1):  # two hosts stopped: their folders are gone
                host = folder / "spread" / f"host{i}"
                host.rename(host.with_name(f"stopped{i}"))
            best = best_of(bench.sizes.file_rounds, {"spread": _warm_trial(spread, digest),
                                                     "whole": _warm_trial(whole, digest)})
    return [ratio_row(f"warm_up {_size_mib(bench)} MiB spread 3/5, 2 hosts stopped", seconds(best["spread"]),
                      f"{seconds(best['whole'])} whole copy", best["spread"] / best["whole"],
                      Target.at_most(1.5))]


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "encrypt": encrypt_figure,
    "spread": spread_figure,
    "spread-warm": spread_warm_figure,
}
