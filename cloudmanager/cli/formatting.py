"""How commands print: JSON for scripts, plain tables when piped, a progress bar on
a terminal, and the few phrases several commands share."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from ..config import human_size
from ..numbers import when

__all__ = ["console", "emit_json", "human_size", "progress_bar", "shares_text", "table", "when"]


def emit_json(value: Any) -> None:
    """Print one JSON document (for scripts)."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def console() -> Console:
    """Where tables go: when stdout is not a terminal, plain and never wrapped."""
    tty = sys.stdout.isatty()
    return Console(highlight=False, width=None if tty else 100_000, no_color=not tty)


def table(*columns: str) -> Table:
    """A table that stays plain when piped."""
    boxed = sys.stdout.isatty()
    return Table(*columns, box=None if not boxed else Table().box, show_edge=boxed, pad_edge=False)


@contextmanager
def progress_bar(total: int | None, enabled: bool, unit: str = "bytes") -> Iterator[Callable[[int], object]]:
    """A progress bar on stderr when it is a terminal (of bytes, or of ``unit``s
    when counting something else); a no-op otherwise."""
    if not enabled or not sys.stderr.isatty():
        yield lambda count: None
        return
    counts = [DownloadColumn(), TransferSpeedColumn()] if unit == "bytes" else [MofNCompleteColumn()]
    bar = Progress(TextColumn("{task.description}"), BarColumn(), *counts, console=Console(stderr=True),
                   transient=True)
    with bar:
        task = bar.add_task("hashing" if unit == "bytes" else unit, total=total)
        yield lambda count: bar.advance(task, count)


def shares_text(held: int, k: int, n: int) -> str:
    """``3 of 5 shares, needs 3``: how a spread file stands."""
    return f"{held} of {n} shares, needs {k}"
