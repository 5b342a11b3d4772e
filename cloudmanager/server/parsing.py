"""Numbers the server reads from a request (query parameters, Content-Length, Range): one rule.

A number is ASCII digits only (numbers.whole_number): ``str.isdigit()`` and
``int()`` also take "²", "١٢", "+1" or "1_0", and "²" made ``int()`` raise (a
500).  Anything else is a 400 naming what was wrong.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request

from ..numbers import MAX_INT, whole_number


def number(text: str, what: str, *, low: int = 0, high: int = MAX_INT) -> int:
    """The whole number ``text`` writes, from ``low`` to ``high``; HTTPException 400
    naming ``what`` otherwise."""
    try:
        value = whole_number(text, at_most=high)
    except ValueError:
        value = None
    if value is None or value < low:
        raise HTTPException(400, f"{what} must be a whole number from {low} to {high} in ASCII digits, "
                                 f"not {text[:40]!r}")
    return value


def content_length(request: Request) -> int | None:
    """The request's Content-Length, or None when it has none (400 when it is not a number)."""
    text = request.headers.get("content-length")
    return None if text is None else number(text, "Content-Length")


def check_range(request: Request) -> None:
    """400 unless every number of the request's Range header (if any) is ASCII digits
    (Starlette reads the header itself, with ``int()``)."""
    header = request.headers.get("range")
    if header is None:
        return
    _, _, ranges = header.partition("=")
    for part in ranges.split(","):
        for end in part.strip().split("-", 1):
            if end.strip():
                number(end.strip(), "each position of a Range")
