"""The exceptions cloudmanager raises at its boundaries."""

from __future__ import annotations


class CloudManagerError(Exception):
    """Base class of every error cloudmanager raises on purpose."""


class InvalidDump(CloudManagerError, ValueError):
    """A JSON dump (from ``data_load``) that is not valid format "0.1"/"0.2".

    ``record`` is the index of the offending record (``None`` when the document
    as a whole is bad) and ``field`` the name of the offending field.
    """

    #: What the message starts with.
    what = "invalid dump"

    def __init__(self, message: str, record: int | None = None, field: str | None = None):
        where = []
        if record is not None:
            where.append(f"record {record}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(f"{self.what}: {prefix}{message}")
        self.record = record
        self.field = field
        self.reason = message


class PageTooLarge(InvalidDump):
    """A dump or catalog page past one of the caps of a page (payload.PAGE_MAX_RECORDS
    records, payload.PAGE_MAX_BYTES bytes): refused whole, nothing of it merged.
    The message names the cap."""

    what = "page too large"


class InvalidHash(CloudManagerError, ValueError):
    """A string that is not a SHA-256 written as 64 lowercase hex digits."""


class Unavailable(CloudManagerError):
    """A known file that cannot be brought back now (no host gave the right bytes,
    or it does not fit the cache)."""


class HostError(CloudManagerError):
    """A host could not store, return, check or delete an object.

    The message says which host and what went wrong; it never carries a secret.
    """

    def __init__(self, host: str, message: str):
        super().__init__(f"{host}: {message}")
        self.host = host
        self.reason = message


class ObjectMissing(HostError):
    """The host answered, and does not hold the object asked for."""


class HostUnsupported(HostError):
    """The host cannot do what was asked (delete, check) by its nature."""


class HashMismatch(CloudManagerError, ValueError):
    """Bytes received under a SHA-256 that is not theirs (nothing was kept)."""


class CacheFull(CloudManagerError):
    """A file that cannot fit the cache, even after evicting every evictable file."""


class CacheOwned(CloudManagerError):
    """A cache folder that belongs to another node or catalog, or a catalog that keeps
    another cache folder: opening it would make one node drop the other's files."""
