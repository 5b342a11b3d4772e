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

Between nodes, records travel in pages: a pushed dump (``POST /catalog``) or a
pulled page (``{"version", "records", "cursor", "more"}``, ``GET /catalog``).
:func:`read_dump` and :func:`read_page` parse one as it arrives (ijson), each
record validated as it completes and its raw JSON then dropped, within the caps
of a page: PAGE_MAX_RECORDS records, PAGE_MAX_BYTES bytes (past them,
PageTooLarge), and _MAX_VALUES JSON values in one record (past them, that record
is rejected unbuilt).  :class:`Outgoing` is the sending side: a page of records
that fits the same caps.
"""

from __future__ import annotations

import decimal
import gc
import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import ijson

from .errors import InvalidDump, PageTooLarge
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
#: The caps of one page of records between nodes, pushed or pulled, on both sides:
#: records (valid or not), and bytes of its JSON text.  The largest valid record
#: (every list full, every text at its longest) is about 6.5 MB as this module
#: writes it, so it always fits; a page of 2,000 common records is about 1 MB.
PAGE_MAX_RECORDS = 10_000
PAGE_MAX_BYTES = 8 * 1024 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_HOST_NAME = 128
_MAX_URL = 4096
_MAX_ERROR = 1024
_MAX_SHARES = 256
_MAX_UPLOADS = 128
#: JSON values (nested ones included) one record read from a stream may hold: the
#: largest valid record holds about 2,600; a larger one is rejected, not built.
_MAX_VALUES = 10_000
#: Rejected records read from a stream are kept whole (for ``cm load``'s file of
#: rejections) while their weight (about their size as JSON text) adds up to this,
#: per page; past it a rejection keeps its reason only.
_KEPT_RAW = 1 << 20
#: Room kept in a page's byte cap for its envelope (version, cursor, more).
_ENVELOPE = 128


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
    if len(uploads) > _MAX_UPLOADS:
        raise _Bad("uploads", f"more than {_MAX_UPLOADS} host entries")
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

    @property
    def count(self) -> int:
        """How many records the dump held, valid or not."""
        return len(self.records) + len(self.rejected)

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
    collector = _Collector(room=None)
    for index, raw in enumerate(document):
        collector.add(index, raw, 0)
    return collector.parsed


class _Collector:
    """Validates records one at a time into a Parsed; two records of one file must
    agree on its size.  A rejection keeps its raw record while ``room`` (a weight,
    None: no limit) lasts."""

    def __init__(self, room: int | None):
        self.parsed = Parsed([], [], [])
        self._sizes: dict[str, int] = {}
        self._room = room

    def add(self, index: int, raw: object, weight: int | None) -> None:
        """Validate the record at ``index``; ``weight`` is None when ``raw`` only stands
        for a record that was not built (it is then not kept)."""
        try:
            record = _record(raw)
            if self._sizes.setdefault(record.hash, record.size) != record.size:
                raise _Bad("filesize", "disagrees with another record of the same file")
        except _Bad as bad:
            self.reject(index, bad.field, bad.reason, raw, weight)
            return
        self.parsed.records.append(record)
        self.parsed.positions.append(index)

    def reject(self, index: int, field: str | None, reason: str, raw: object, weight: int | None) -> None:
        """Count the record at ``index`` as rejected, kept whole when there is room."""
        kept = raw
        if weight is None:
            kept = None
        elif self._room is not None:
            if weight <= self._room:
                self._room -= weight
            else:
                kept = None
        self.parsed.rejected.append(Rejected(index, field, reason, kept))


# -- reading a page as it arrives ------------------------------------------------------

#: Where a page is read from: a binary file-like object, or its chunks of bytes.
Source = BinaryIO | Iterable[bytes]
#: The most digits in a row a page may hold (a valid record's longest number has 19):
#: Python's own limit for a number written in digits (``int``, json.loads), at most 4300.
_MAX_DIGITS = min(4300, getattr(sys, "get_int_max_str_digits", lambda: 4300)() or 4300)
_LEADING_DIGITS = re.compile(rb"[0-9]*")
_LONG_DIGITS = re.compile(rb"[0-9]{%d}" % (_MAX_DIGITS + 1))
_Event = tuple[str, Any]
_STARTS = frozenset({"start_map", "start_array"})
_ENDS = frozenset({"end_map", "end_array"})


def too_long(limit: int | None = None) -> PageTooLarge:
    """The error of a page longer than ``limit`` bytes (default PAGE_MAX_BYTES)."""
    limit = PAGE_MAX_BYTES if limit is None else limit
    size = f"{limit >> 20} MiB ({limit} bytes)" if limit >= 1 << 20 and not limit % (1 << 20) else \
        f"{limit} bytes"
    return PageTooLarge(f"a page is at most {size} of JSON: send smaller pages")


def too_many(limit: int) -> PageTooLarge:
    """The error of a page holding more than ``limit`` records."""
    return PageTooLarge(f"more than {limit} records in one page: send fewer at a time")


class _Capped:
    """A binary reader over a source (a file-like, or chunks) that raises PageTooLarge
    past ``limit`` bytes, and InvalidDump at a run of more than _MAX_DIGITS digits."""

    def __init__(self, source: Source, limit: int):
        self._file = source if hasattr(source, "read") else None
        self._chunks = None if self._file is not None else iter(source)
        self._pending = b""
        self._limit = limit
        self._size = 0
        self._digits = 0  # the digits in a row at the end of what was read so far

    def read(self, size: int = -1) -> bytes:
        """At most ``size`` bytes (b"" at the end)."""
        data = bytes(self._file.read(size) if self._file is not None else self._next(size))
        self._size += len(data)
        if self._size > self._limit:
            raise too_long(self._limit)
        self._count_digits(data)
        return data

    def _count_digits(self, data: bytes) -> None:
        """Refuse a run of digits longer than _MAX_DIGITS, across reads too: ijson turns
        a longer number into an int past Python's limit and fails inside its C code."""
        leading = _LEADING_DIGITS.match(data)
        assert leading is not None
        longest = self._digits + leading.end()
        if leading.end() == len(data):
            self._digits = longest
        else:
            if _LONG_DIGITS.search(data) is not None:
                longest = _MAX_DIGITS + 1
            self._digits = len(data) - len(data.rstrip(b"0123456789"))
        if max(longest, self._digits) > _MAX_DIGITS:
            raise InvalidDump(f"more than {_MAX_DIGITS} digits in a row (no number is that long)")

    def _next(self, size: int) -> bytes:
        assert self._chunks is not None
        while not self._pending and size:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._pending = chunk
        if size < 0 or size >= len(self._pending):
            data, self._pending = self._pending, b""
            return data
        data, self._pending = self._pending[:size], self._pending[size:]
        return data


@contextmanager
def _events(source: Source, max_bytes: int | None) -> Iterator[Iterator[_Event]]:
    """The JSON events of ``source`` (ijson), read within ``max_bytes``; a JSON error
    is InvalidDump."""
    reader = _Capped(source, PAGE_MAX_BYTES if max_bytes is None else max_bytes)
    try:
        yield iter(ijson.basic_parse(reader))
    except ijson.JSONError as exc:
        raise InvalidDump(f"not JSON: {_said(exc)}") from None
    except decimal.DecimalException:  # an exponent no Decimal holds (json.loads: infinity)
        raise InvalidDump("not JSON: a number out of range") from None


def _said(exc: Exception) -> str:
    """The first line of a JSON error of ijson (its message may be bytes, and goes on
    with the text around the error)."""
    said = exc.args[0] if exc.args else ""
    text = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said)
    lines = text.strip().splitlines()
    return lines[0] if lines else "cut short"


def _first(events: Iterator[_Event]) -> _Event:
    event = next(events, None)
    if event is None:
        raise InvalidDump("not JSON: no document")
    return event


def _finish(events: Iterator[_Event]) -> None:
    """Read on to the end: nothing but white space may follow the document."""
    for _ in events:
        raise InvalidDump("not JSON: more after the end of the document")


def _skip(events: Iterator[_Event], depth: int = 1) -> None:
    """Consume the rest of ``depth`` open containers, building nothing."""
    for event, _ in events:
        if event in _STARTS:
            depth += 1
        elif event in _ENDS:
            depth -= 1
            if not depth:
                return


class _Swollen(Exception):
    """A value holding more JSON values than its budget (the rest of it was consumed)."""


def _scalar(event: str, value: Any) -> Any:
    """A scalar as json.loads makes it: ijson gives a number with a fraction or an
    exponent as a Decimal (so that integers of any size stay exact), json a float."""
    return float(value) if event == "number" and type(value) is not int else value


def _weight(value: object) -> int:
    """About the size of a scalar as JSON text."""
    return len(value) + 2 if isinstance(value, str) else 8


def _build(events: Iterator[_Event], event: str, value: Any, budget: int) -> tuple[Any, int]:
    """The JSON value whose first event is ``(event, value)``, and its weight (about its
    size as JSON text).  Raises _Swollen, the rest of the value consumed, past
    ``budget`` values."""
    if event not in _STARTS:
        value = _scalar(event, value)
        return value, _weight(value)
    root: Any = {} if event == "start_map" else []
    top, key = root, None  # the container being filled, and its pending key (None: a list)
    parents: list[tuple[Any, str | None]] = []
    count, weight = 1, 2
    for event, value in events:
        if event == "map_key":
            key = value
            weight += len(value) + 4
            continue
        if event in _ENDS:
            if not parents:
                return root, weight
            top, key = parents.pop()
            continue
        count += 1
        opens = event in _STARTS
        if count > budget:
            _skip(events, len(parents) + 1 + opens)
            raise _Swollen
        if event == "string":
            item = value
            weight += len(value) + 2
        elif opens:
            item = {} if event == "start_map" else []
            weight += 2
        else:
            item = _scalar(event, value)
            weight += 8
        if key is None:
            top.append(item)
        else:
            top[key] = item
        if opens:
            parents.append((top, key))
            top, key = item, None
    raise InvalidDump("not JSON: cut short")  # pragma: no cover (ijson raises first)


def _read_record(events: Iterator[_Event], event: str, value: Any, index: int,
                 collector: _Collector) -> None:
    """Read the record at ``index`` from its first event, validate it, drop its JSON."""
    try:
        raw, weight = _build(events, event, value, _MAX_VALUES)
    except _Swollen:
        if event == "start_array":  # not a record, whatever it holds: the same rejection
            collector.add(index, [], None)
        else:
            collector.reject(index, None, f"holds more than {_MAX_VALUES} JSON values", None, None)
        return
    collector.add(index, raw, weight)


def _read_records(events: Iterator[_Event], collector: _Collector, max_records: int) -> None:
    """Read the records of a list whose start was just read, up to its end."""
    for index, (event, value) in enumerate(events):
        if event == "end_array":
            return
        if index == max_records:
            raise too_many(max_records)
        _read_record(events, event, value, index, collector)


def read_dump(source: Source, *, max_records: int | None = None, max_bytes: int | None = None) -> Parsed:
    """Parse and validate a dump as it arrives from ``source`` (a list of records, or
    one record): what :func:`parse` returns, with at most ``max_records`` records
    (default PAGE_MAX_RECORDS) and ``max_bytes`` bytes (default PAGE_MAX_BYTES).

    Raises PageTooLarge past a cap, InvalidDump when it is not JSON or not a dump;
    errors of ``source`` itself pass through.  A rejected record keeps its raw
    record while it is small (see _KEPT_RAW), else None.
    """
    collector = _Collector(_KEPT_RAW)
    with _events(source, max_bytes) as events:
        event, value = _first(events)
        if event == "start_array":
            _read_records(events, collector, PAGE_MAX_RECORDS if max_records is None else max_records)
        elif event == "start_map":
            _read_record(events, event, value, 0, collector)
        else:
            raise InvalidDump("a dump must be a JSON list of records")
        _finish(events)
    return collector.parsed


@dataclass
class Page:
    """A catalog page read from another node: its records, validated, and its
    ``cursor`` and ``more`` as the node wrote them (None when missing or not a
    scalar): the caller checks them."""

    parsed: Parsed
    cursor: object = None
    more: object = None


def read_page(source: Source, *, max_records: int | None = None, max_bytes: int | None = None) -> Page:
    """Parse a catalog page (``{"version", "records", "cursor", "more"}``) as it arrives,
    its records validated as :func:`read_dump` does, within the same caps
    (``max_records``: the ``limit`` the page was asked with).  Other keys are skipped."""
    collector = _Collector(_KEPT_RAW)
    page = Page(collector.parsed)
    seen = False
    with _events(source, max_bytes) as events:
        if _first(events)[0] != "start_map":
            raise InvalidDump("a catalog page must be a JSON object")
        for event, key in events:
            if event == "end_map":
                break
            event, value = next(events)
            if key == "records":
                if seen or event != "start_array":
                    raise InvalidDump("a catalog page has one list of records")
                seen = True
                _read_records(events, collector, PAGE_MAX_RECORDS if max_records is None else max_records)
                continue
            if event in _STARTS:
                _skip(events)
                value = None
            if key in ("cursor", "more"):
                setattr(page, key, _scalar(event, value))
        _finish(events)
    if not seen:
        raise InvalidDump("a catalog page has one list of records")
    return page


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


# -- writing a page within the caps ------------------------------------------------------


def record_text(record: FileRecord) -> bytes:
    """One record as compact JSON text (UTF-8), as a page carries it."""
    return json.dumps(to_dict(record), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def fitting(texts: Sequence[bytes], max_bytes: int | None = None) -> int:
    """How many of ``texts`` (records' JSON), from the first, one page holds within
    ``max_bytes`` (default PAGE_MAX_BYTES), its envelope included."""
    room = (PAGE_MAX_BYTES if max_bytes is None else max_bytes) - _ENVELOPE
    for count, text in enumerate(texts):
        room -= len(text) + 1
        if room < 0:
            return count
    return len(texts)


@dataclass
class Outgoing:
    """Records to send as one page: each one's JSON text (:func:`record_text`), the
    change cursor after them, whether more remain, and the hashes of the records
    left out because no page could hold them."""

    texts: list[bytes]
    cursor: int
    more: bool
    skipped: list[str]

    def dump(self) -> bytes:
        """The records as a dump (what ``POST /catalog`` takes)."""
        return b"[" + b",".join(self.texts) + b"]"

    def page(self) -> bytes:
        """The records as a catalog page (what ``GET /catalog`` answers)."""
        return b'{"version":"%s","records":%s,"cursor":%d,"more":%s}' % (
            FORMAT_VERSION.encode(), self.dump(), self.cursor, b"true" if self.more else b"false")
