"""The JSON exchange format between nodes (format "0.2", and "0.1" on input).

Pure functions: text in, validated records out, and back.  A dump from another
node is hostile until validated: every field is type-checked and bounded, every
hash must be 64 lowercase hex, every name is cleaned to a bare file name.

A record, as the original cloud-manager README shows it::

    {"version": "0.2", "datetime": "1391212800", "filename": "README.md",
     "filesize": "23124", "filehash": "6e16...",
     "uploads": [{"host_name": "mediafire", "url": "http://..."},
                 {"host_name": "anonfiles", "error": true}]}

Numbers may be integers or strings of digits; a dump is a list of such records
(a single record object is accepted too).  Unknown fields are ignored, so later
versions can add fields without breaking older readers.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .errors import InvalidDump
from .names import clean_name, is_sha256
from .numbers import DATE_RANGE, MAX_INT, is_date
from .records import FileRecord, Share, Upload

FORMAT_VERSION = "0.2"
ACCEPTED_VERSIONS = frozenset({"0.1", "0.2"})
#: What an error entry from another node is recorded as when it gives no text.
PEER_ERROR = "error reported by another node"

#: The largest dump accepted at once (parsing JSON takes several times its size in
#: memory): a larger catalog is exchanged in parts (or, between nodes, paged).
MAX_DUMP_BYTES = 256 * 1024 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_HOST_NAME = 128
_MAX_URL = 4096
_MAX_ERROR = 1024
_MAX_SHARES = 256


@dataclass(frozen=True)
class Rejected:
    """A record that failed validation: where, which field, and why."""

    index: int
    field: str | None
    reason: str
    record: object

    def error(self) -> InvalidDump:
        """The InvalidDump exception describing this rejection."""
        return InvalidDump(self.reason, self.index, self.field)


class _Bad(Exception):
    def __init__(self, field: str | None, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _integer(record: dict[str, Any], key: str) -> int:
    value = record.get(key)
    if type(value) is str and value.isdigit() and value.isascii() and len(value) <= 19:
        return int(value)  # the common case, as the original format writes numbers
    if isinstance(value, bool):
        raise _Bad(key, "must be an integer, not a boolean")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if not isinstance(value, int):
        raise _Bad(key, "must be a non-negative integer or a string of digits")
    if not 0 <= value <= MAX_INT:
        raise _Bad(key, "out of range")
    return value


def _date(record: dict[str, Any]) -> int:
    """The record's date: a Unix time a calendar shows (a larger one passes as a number,
    then breaks every display of every node it spreads to)."""
    try:
        value = _integer(record, "datetime")
    except _Bad:
        value = None
    if not is_date(value):
        raise _Bad("datetime", DATE_RANGE)
    assert isinstance(value, int)
    return value


def _text(value: object, key: str, limit: int) -> str:
    if not isinstance(value, str) or not value:
        raise _Bad(key, "must be a non-empty string")
    if len(value) > limit:
        raise _Bad(key, f"longer than {limit} characters")
    if _CONTROL.search(value):
        raise _Bad(key, "contains control characters")
    return value


def _upload(entry: object, position: int) -> Upload:
    where = f"uploads[{position}]"
    if not isinstance(entry, dict):
        raise _Bad(where, "must be an object")
    host = _text(entry.get("host_name"), f"{where}.host_name", _MAX_HOST_NAME)
    url = entry.get("url")
    error = entry.get("error")
    if url is not None and error not in (None, False):
        raise _Bad(where, "has both a url and an error")
    if url is not None:
        return Upload(host, url=_text(url, f"{where}.url", _MAX_URL),
                      encrypted="encrypted" in entry and _flag(entry, "encrypted", where))
    if error is True:
        return Upload(host, error=PEER_ERROR)
    if isinstance(error, str) and error:
        return Upload(host, error=_text(error, f"{where}.error", _MAX_ERROR))
    raise _Bad(where, "needs a url, or an error (true or a message)")


def _flag(entry: dict[str, Any], key: str, where: str) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise _Bad(f"{where}.{key}", "must be true or false")
    return value


def _shares(raw: object) -> tuple[tuple[int, int], tuple[Share, ...]]:
    """The additive "shares" field: {"k": 3, "n": 5, "items": [{"index", "host_name",
    "url" or "error", "sha256", "size", "encrypted"}]}."""
    if not isinstance(raw, dict):
        raise _Bad("shares", "must be an object")
    k, n = _integer(raw, "k"), _integer(raw, "n")
    if not 1 <= k <= n <= _MAX_SHARES:
        raise _Bad("shares", f"needs 1 <= k <= n <= {_MAX_SHARES}")
    items = raw.get("items")
    if not isinstance(items, list) or len(items) > n:
        raise _Bad("shares.items", "must be a list of at most n shares")
    shares: dict[int, Share] = {}
    for position, item in enumerate(items):
        where = f"shares.items[{position}]"
        if not isinstance(item, dict):
            raise _Bad(where, "must be an object")
        index = _integer(item, "index")
        if index >= n or index in shares:
            raise _Bad(f"{where}.index", "out of range or repeated")
        digest = item.get("sha256")
        if not is_sha256(digest):
            raise _Bad(f"{where}.sha256", "must be a SHA-256 as 64 lowercase hex digits")
        assert isinstance(digest, str)
        upload = _upload(item, position)
        shares[index] = Share(index, upload.host, upload.url, upload.error, digest,
                              _integer(item, "size"), upload.encrypted)
    return (k, n), tuple(shares[i] for i in sorted(shares))


def _record(raw: object) -> FileRecord:
    if not isinstance(raw, dict):
        raise _Bad(None, "a record must be a JSON object")
    version = raw.get("version")
    if version not in ACCEPTED_VERSIONS:
        raise _Bad("version", f"unsupported version {str(version)[:20]!r} (accepted: 0.1, 0.2)")
    digest = raw.get("filehash")
    if not is_sha256(digest):
        raise _Bad("filehash", "must be a SHA-256 as 64 lowercase hex digits")
    assert isinstance(digest, str)
    if version == "0.1" and "filename" not in raw:
        name = digest
    else:
        filename = raw.get("filename")
        if not isinstance(filename, str):
            raise _Bad("filename", "must be a string")
        try:
            name = clean_name(filename)
        except ValueError as exc:
            raise _Bad("filename", str(exc)) from None
    uploads = raw.get("uploads", [])
    if not isinstance(uploads, list):
        raise _Bad("uploads", "must be a list")
    spread, shares = _shares(raw["shares"]) if "shares" in raw else (None, ())
    return FileRecord(
        hash=digest,
        name=name,
        size=_integer(raw, "filesize"),
        datetime=_date(raw),
        uploads=tuple(_upload(entry, i) for i, entry in enumerate(uploads)),
        spread=spread,
        shares=shares,
    )


@dataclass
class Parsed:
    """A validated dump: the valid records (with their positions) and the rejected ones."""

    records: list[FileRecord]
    positions: list[int]
    rejected: list[Rejected]

    def position_of(self, digest: str) -> int:
        """The position in the dump of the (first) valid record of ``digest``."""
        return next(p for p, r in zip(self.positions, self.records, strict=True) if r.hash == digest)


def parse(text: str | bytes) -> Parsed:
    """Parse and validate a dump: the valid records, and the rejected ones with reasons.

    Raises InvalidDump when the document itself is not a dump (not JSON, not a
    list of objects).  Two records for one hash must agree on its size.
    """
    if len(text) > MAX_DUMP_BYTES:
        raise InvalidDump(f"larger than {MAX_DUMP_BYTES >> 20} MiB: load it in parts")
    try:
        with _collector_paused():
            document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidDump(f"not JSON: {exc}") from None
    return validate(document)


def validate(document: object) -> Parsed:
    """Validate a dump already decoded from JSON (a list of records, or one record).

    Raises InvalidDump when it is not a dump at all."""
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list):
        raise InvalidDump("a dump must be a JSON list of records")
    with _collector_paused():
        return _validate(document)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: validation makes many objects and no
    cycles, and the collector's passes over them cost a third of the time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _validate(document: list[Any]) -> Parsed:
    parsed = Parsed([], [], [])
    sizes: dict[str, int] = {}
    for index, raw in enumerate(document):
        try:
            record = _record(raw)
            if sizes.setdefault(record.hash, record.size) != record.size:
                raise _Bad("filesize", "disagrees with another record of the same file")
        except _Bad as bad:
            parsed.rejected.append(Rejected(index, bad.field, bad.reason, raw))
            continue
        parsed.records.append(record)
        parsed.positions.append(index)
    return parsed


def to_dict(record: FileRecord) -> dict[str, Any]:
    """One record in format "0.2" (numbers as strings, as the original README shows)."""
    uploads = [_upload_dict(u) for u in record.uploads]
    result: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "datetime": str(record.datetime),
        "filename": record.name,
        "filesize": str(record.size),
        "filehash": record.hash,
        "uploads": uploads,
    }
    if record.spread is not None:
        result["shares"] = {
            "k": record.spread[0], "n": record.spread[1],
            "items": [{"index": s.index, **_upload_dict(Upload(s.host, s.url, s.error, s.encrypted)),
                       "sha256": s.digest, "size": s.size} for s in record.shares],
        }
    return result


def _upload_dict(upload: Upload) -> dict[str, Any]:
    """One host entry: its URL ("encrypted" beside it for sealed copies), or an error."""
    if not upload.ok:
        return {"host_name": upload.host, "error": True}
    if upload.encrypted:
        return {"host_name": upload.host, "url": upload.url, "encrypted": True}
    return {"host_name": upload.host, "url": upload.url}


def dump_chunks(records: Iterable[FileRecord]) -> Iterator[str]:
    """Serialize records as a JSON list, piece by piece (for large catalogs)."""
    yield "["
    for i, record in enumerate(records):
        yield ("\n" if i == 0 else ",\n") + json.dumps(to_dict(record), ensure_ascii=False)
    yield "\n]\n"


def dumps(records: Iterable[FileRecord]) -> str:
    """Serialize records as one JSON text."""
    return "".join(dump_chunks(records))
