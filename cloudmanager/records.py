"""Plain data records passed between the catalog, the payload format and the manager."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Upload:
    """One host's entry for one file: the URL (locator) it got, or the error met."""

    host: str
    url: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the host holds a copy."""
        return self.url is not None


@dataclass(frozen=True)
class FileRecord:
    """What the catalog knows of one file, as exchanged between nodes."""

    hash: str
    name: str
    size: int
    datetime: int
    uploads: tuple[Upload, ...] = field(default=())


@dataclass(frozen=True)
class CacheEntry:
    """The local cache state of one file."""

    hash: str
    name: str
    size: int
    cached: bool
    pinned: bool
    copies: int
