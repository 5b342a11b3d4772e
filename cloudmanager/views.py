"""What the faces show: plain data CloudManager reads for them in a few catalog calls.

The node's page (server/page.py) formats a :class:`NodeView`; it never reads
the catalog itself, and what it costs does not grow with the pool.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import HostHealth
from .hosts import Host
from .records import CacheEntry, FileRecord


@dataclass(frozen=True)
class FileState:
    """One file: its record (name, size, time, copies and shares) and its state on this node."""

    record: FileRecord
    entry: CacheEntry

    @property
    def holders(self) -> list[str]:
        """The hosts holding a whole copy, by name, then each share held, by index:
        ``"host (share I/N)"``."""
        record = self.record
        spread = record.spread[1] if record.spread else len(record.shares)
        return sorted(u.host for u in record.uploads if u.ok) + [
            f"{s.host} (share {s.index + 1}/{spread})"
            for s in sorted(record.shares, key=lambda s: s.index) if s.ok]


@dataclass(frozen=True)
class HostState:
    """One configured host and how it has behaved lately."""

    host: Host
    health: HostHealth


@dataclass(frozen=True)
class NodeView:
    """A node at a glance: its cache, its newest files, its hosts."""

    capacity: int  # bytes the cache may hold
    used: int  # bytes it holds
    total: int  # files the catalog knows
    files: list[FileState]  # the newest ones, newest first
    hosts: list[HostState]  # in configuration order


@dataclass(frozen=True)
class HostReport:
    """One configured host as :meth:`CloudManager.host_report` tells it."""

    name: str
    #: The host's kind: its URL scheme (``file``, ``sftp``, ``s3``...).
    kind: str
    url: str
    #: False: the host gets no new uploads (it still serves downloads).
    active: bool
    description: str
    #: Copies older than this many days are removed by `cm expire` (None: kept).
    keep_days: int | None
    #: How many files it holds a copy of.
    files: int
    #: When it last took or gave back a file (Unix time; None: never).
    last_ok: int | None
    last_error: str | None
    #: How many times it failed lately.
    failures: int
