"""Validation of the two kinds of names that come from outside: hashes and file names.

Pure functions, no I/O.  A hash is a SHA-256 written as 64 lowercase hex digits;
a file name is reduced to a bare, harmless file name before any use.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import InvalidHash

_SHA256 = re.compile(r"[0-9a-f]{64}")
#: The longest file name kept, in UTF-8 bytes (the usual file system limit).
MAX_NAME_BYTES = 255
_UNPRINTABLE = frozenset({"Zl", "Zp"})  # line and paragraph separators (controls are "C*")
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)


def is_sha256(value: object) -> bool:
    """True when ``value`` is a string of exactly 64 lowercase hex digits."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def check_sha256(value: object) -> str:
    """Return ``value`` if it is a valid SHA-256 hex string, else raise InvalidHash."""
    if not is_sha256(value):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise InvalidHash(f"not a SHA-256 (64 lowercase hex digits): {shown}")
    return value  # type: ignore[return-value]


def _is_plain(name: str) -> bool:
    """True for a short printable ASCII name with no separator, no dot or space at its ends."""
    return (0 < len(name) <= MAX_NAME_BYTES and name.isascii() and name.isprintable()
            and "/" not in name and "\\" not in name
            and name[0] not in " ." and name[-1] not in " ."
            and name.split(".")[0].upper() not in _WINDOWS_RESERVED)


def clean_name(name: str) -> str:
    """Reduce ``name`` to a bare file name that is safe on any file system.

    Directory parts (``/`` or ``\\``) are dropped, control characters, NUL and
    line separators removed, leading/trailing dots and spaces stripped, a Windows reserved stem
    (``CON``, ``NUL``, ``COM1``...) prefixed with ``_``.  Raises ValueError when
    nothing usable is left or the result is longer than 255 UTF-8 bytes.
    """
    if not isinstance(name, str):
        raise ValueError("a file name must be a string")
    if _is_plain(name):
        return name  # the common case: nothing to clean
    base = re.split(r"[/\\]", name)[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch) not in _UNPRINTABLE
                   and unicodedata.category(ch)[0] != "C")
    base = unicodedata.normalize("NFC", base).strip(" .")
    if not base:
        raise ValueError(f"no usable file name in {name[:40]!r}")
    if base.split(".")[0].upper() in _WINDOWS_RESERVED:
        base = "_" + base
    if len(base.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(f"file name longer than {MAX_NAME_BYTES} bytes")
    return base
