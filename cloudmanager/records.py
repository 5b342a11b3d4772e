"""Plain data records passed between the catalog, the payload format and the manager."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Upload:
    """One host's entry for one file: the URL (locator) it got, or the error met."""

    host: str
    url: str | None = None
    error: str | None = None
    encrypted: bool = False  # the host holds sealed bytes (see crypto.py)

    @property
    def ok(self) -> bool:
        """True when the host holds a copy."""
        return self.url is not None


@dataclass(frozen=True)
class Share:
    """One erasure-coded share of a spread file: where it went, and what it is."""

    index: int
    host: str
    url: str | None = None
    error: str | None = None
    digest: str = ""  # SHA-256 of the share's bytes
    size: int = 0
    encrypted: bool = False  # cut from the sealed file (encrypt, then cut)

    @property
    def ok(self) -> bool:
        """True when the host holds the share."""
        return self.url is not None


@dataclass(frozen=True)
class FileRecord:
    """What the catalog knows of one file, as exchanged between nodes."""

    hash: str
    name: str
    size: int
    datetime: int
    uploads: tuple[Upload, ...] = field(default=())
    #: (K, N) when the file is spread as N erasure-coded shares of which K rebuild it.
    spread: tuple[int, int] | None = None
    shares: tuple[Share, ...] = field(default=())


@dataclass(frozen=True)
class CacheEntry:
    """The local cache state of one file."""

    hash: str
    name: str
    size: int
    cached: bool
    pinned: bool
    copies: int
