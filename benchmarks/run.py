"""The benchmark table of cloudmanager.

    python benchmarks/run.py [--quick] [--only NAME ...]

Measures each figure side by side with a peer (diskcache, rclone) or with the
least any implementation must do, and prints one table: figure, ours,
peer/lower bound, ratio, target, met.  The network figures (network.py) start
the tests' sshd and WsgiDAV servers from tests/servers/: run from a source
checkout, from the repository root.  Progress goes to stderr, the table to stdout.
Scratch files live in a temporary folder (``TMPDIR``), removed at the end.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from pathlib import Path

import diskcache
import exposed
import network
import nodes
import pgcatalog
import untrusted
from figures import FIGURES, FULL, QUICK, Bench
from harness import Row, Stopwatch, format_table, note

import cloudmanager

#: Every figure's name, in the order of a plain run.
NAMES = [*FIGURES, *network.FIGURES, *nodes.FIGURES, *untrusted.FIGURES, *pgcatalog.FIGURES,
         *exposed.FIGURES]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description="Print the benchmark table of cloudmanager.")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, for a smoke test (well under a minute)")
    parser.add_argument("--only", action="append", choices=NAMES, metavar="NAME",
                        help=f"run only this figure (repeatable): {', '.join(NAMES)}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen figures and print the table."""
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    chosen = {**FIGURES, **network.figures(args.quick), **nodes.FIGURES, **untrusted.FIGURES,
              **pgcatalog.FIGURES, **exposed.FIGURES}
    names = list(dict.fromkeys(args.only or NAMES))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="cm-bench-") as root, Stopwatch() as total:
        bench = Bench(Path(root), sizes)
        for name in names:
            note(f"{name}...")
            with Stopwatch() as clock:
                rows.extend(chosen[name](bench))
            note(f"{name}: {clock.elapsed:.1f} s")
    print(f"cloudmanager {cloudmanager.__version__}, {'quick' if args.quick else 'full'} run "
          f"in {total.elapsed:.0f} s (Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, "
          f"diskcache {diskcache.__version__}); times are the best of several interleaved rounds")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
