"""Numbers and dates that come from outside, and dates as people read them.

Pure functions, no I/O.  A number written by someone else is ASCII digits only
(``str.isdigit`` and ``int`` also take "²", "١٢", "+1" or "1_0"); every integer a
catalog keeps fits 64 bits (SQLite's INTEGER, PostgreSQL's bigint); a date is a
Unix time from 1970-01-01 to 9999-12-31 (UTC), the years a calendar shows.
"""

from __future__ import annotations

import re
import time

#: The largest integer a catalog column holds (SQLite INTEGER, PostgreSQL bigint).
MAX_INT = 2**63 - 1
#: The first and the last second a record's date may name: 1970-01-01 00:00:00 and
#: 9999-12-31 23:59:59 UTC.
FIRST_DATE, LAST_DATE = 0, 253_402_300_799
#: Why a date is refused.
DATE_RANGE = "must be a Unix time from 1970-01-01 to 9999-12-31 UTC (0 to 253402300799)"
#: What a stored date outside that range is shown as.
INVALID_DATE = "invalid date"
_DIGITS = re.compile(r"[0-9]+")


def whole_number(text: str, *, at_most: int = MAX_INT) -> int:
    """The number ``text`` writes in ASCII digits only (no sign, space or underscore);
    ValueError when it is anything else, or larger than ``at_most``."""
    if not isinstance(text, str) or not _DIGITS.fullmatch(text) \
            or len(text.lstrip("0")) > len(str(at_most)) or int(text) > at_most:
        raise ValueError(f"not a whole number from 0 to {at_most} in ASCII digits: {str(text)[:40]!r}")
    return int(text)


def is_date(value: object) -> bool:
    """True when ``value`` is an integer (not a boolean) from FIRST_DATE to LAST_DATE."""
    return type(value) is int and FIRST_DATE <= value <= LAST_DATE


def when(timestamp: int | None) -> str:
    """A Unix time as people read it (UTC): "-" for none, INVALID_DATE for one no
    calendar shows (stored before dates were checked); never an exception."""
    if not timestamp:
        return "-"
    if not is_date(timestamp):
        return INVALID_DATE
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(timestamp))
