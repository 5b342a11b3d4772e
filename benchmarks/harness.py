"""The benchmark machinery: clocks, interleaved best-of runs, scratch folders, the table.

Nothing here knows what is measured; figures.py does.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cloudmanager import CloudManager

MIB = 1 << 20
#: The read buffer of the plain-Python lower bounds (the library's streams use the same).
BUFFER_SIZE = 4 * MIB

#: A trial does its own setup, times only the part in scope and returns those seconds.
Trial = Callable[[], float]


class Stopwatch:
    """``with Stopwatch() as clock: ...`` then ``clock.elapsed`` (seconds, perf_counter)."""

    elapsed: float = math.nan

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.elapsed = time.perf_counter() - self._start


def clocked(work: Callable[[], object]) -> Trial:
    """A trial that times the whole of ``work`` (for work with no setup of its own)."""

    def trial() -> float:
        with Stopwatch() as clock:
            work()
        return clock.elapsed

    return trial


def best_of(rounds: int, trials: Mapping[str, Trial]) -> dict[str, float]:
    """The best time of each trial over ``rounds`` rounds.

    The trials are interleaved, each round running every trial once, in an
    order that alternates from round to round, so that a slow moment of the
    machine (or a cache warming up) does not favour one side.  The spread of
    each trial goes to stderr, to judge how noisy the machine was.
    """
    names = list(trials)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            times[name].append(trials[name]())
    for name, spread in times.items():
        note(f"  {name}: best {min(spread):.4g} s, worst {max(spread):.4g} s of {rounds}")
    return {name: min(spread) for name, spread in times.items()}


@contextmanager
def fresh_dir(root: Path, prefix: str) -> Iterator[Path]:
    """A new empty folder under ``root``, removed with everything in it on exit."""
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def host_url(folder: Path) -> str:
    """The ``file://`` URL of the folder host kept in ``folder/host``."""
    return (folder / "host").as_uri()


def open_node(folder: Path, capacity: int, hosts: Sequence[str]) -> CloudManager:
    """A CloudManager whose catalog and cache live in ``folder`` (made if missing)."""
    folder.mkdir(exist_ok=True)
    return CloudManager(folder / "catalog.sqlite3", folder / "cache", capacity, hosts=list(hosts))


def fsync_path(path: Path) -> None:
    """Flush a written file to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_random_file(path: Path, size: int) -> None:
    """Write ``size`` random bytes to ``path`` and flush them to the disk."""
    with open(path, "wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(BUFFER_SIZE, left))
            out.write(chunk)
            left -= len(chunk)
        out.flush()
        os.fsync(out.fileno())


def note(message: str) -> None:
    """Progress, on stderr, so that stdout holds the table only."""
    print(message, file=sys.stderr, flush=True)


# -- the table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a figure must reach: its text for the table and the test of the value."""

    text: str
    test: Callable[[float], bool]

    @classmethod
    def at_most(cls, limit: float) -> Target:
        """value <= limit."""
        return cls(f"<= {limit:g}", lambda value: value <= limit)

    @classmethod
    def at_least(cls, limit: float) -> Target:
        """value >= limit."""
        return cls(f">= {limit:g}", lambda value: value >= limit)

    @classmethod
    def between(cls, low: float, high: float) -> Target:
        """low <= value <= high."""
        return cls(f"{low:g}..{high:g}", lambda value: low <= value <= high)

    @classmethod
    def none(cls) -> Target:
        """No target: a figure reported for information."""
        return cls("-", lambda value: True)

    @classmethod
    def below(cls, limit: float, unit: str) -> Target:
        """value < limit (shown with its unit)."""
        return cls(f"< {limit:g} {unit}", lambda value: value < limit)


@dataclass(frozen=True)
class Row:
    """One line of the table; ``value`` is what the target is tested on."""

    figure: str
    ours: str
    peer: str
    value: float
    target: Target
    ratio: str = ""

    @property
    def met(self) -> bool:
        """True when the value reaches the target."""
        return self.target.test(self.value)


def ratio_row(figure: str, ours: str, peer: str, ratio: float, target: Target) -> Row:
    """A row whose target is tested on the ratio shown."""
    return Row(figure, ours, peer, ratio, target, ratio=f"{ratio:.2f}")


def seconds(value: float) -> str:
    """A duration for the table."""
    return f"{value:.3f} s"


def per_second(count: int, elapsed: float) -> str:
    """A rate for the table."""
    return f"{count / elapsed:,.0f}/s"


HEADER = ("figure", "ours", "peer/lower bound", "ratio", "target", "met")
#: Which columns are right-aligned (the numbers).
RIGHT = (False, True, True, True, False, False)


def format_table(rows: Sequence[Row]) -> str:
    """The rows as a plain-text table with aligned columns."""
    cells = [HEADER] + [
        (row.figure, row.ours, row.peer, row.ratio or "-", row.target.text,
         "-" if row.target.text == "-" else "yes" if row.met else "no")
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, RIGHT, strict=True)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(cells[0]), rule, *(line(values) for values in cells[1:])])
