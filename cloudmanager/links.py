"""Share links: signed, expiring URLs to one file that anyone can open without the token.

A link is ``BASE/s/<sha256>?e=<unix expiry>&sig=<signature>``, the signature
being the URL-safe base64 (no padding) of HMAC-SHA256(secret, ``<sha256>:<expiry>``).
Changing the hash, the expiry or the signature makes it invalid; so does the
time passing the expiry.  Pure functions: no I/O, no web framework (``cm link``
signs links with no server running).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from urllib.parse import urlencode

from .names import is_sha256
from .numbers import LAST_DATE, whole_number

DAY = 86_400
#: The longest a link may live when no host bounds it (by its keep_days).
DEFAULT_MAX_DAYS = 365
#: How long the links on the node's page live.
PAGE_LINK_SECONDS = DAY
_DURATION = re.compile(r"\s*([0-9]{1,9})\s*([smhdw]?)\s*")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": DAY, "w": 7 * DAY}


def parse_duration(text: str) -> int:
    """Seconds from ``"7d"``, ``"12h"``, ``"30m"``, ``"2w"``, ``"45s"`` or ``"3600"``;
    ValueError for anything else, or for zero."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a duration: {str(text)[:40]!r} (write e.g. 7d, 12h, 30m or 3600)")
    seconds = int(match.group(1)) * _UNIT[match.group(2)]
    if seconds <= 0:
        raise ValueError("a link must live at least one second")
    return seconds


def longest_expiry(keep_days: Iterable[int | None]) -> int:
    """The longest a link may live, in seconds: the smallest ``keep_days`` of the
    node's hosts (its copies may be gone after that), never more than
    DEFAULT_MAX_DAYS."""
    bounds = [days for days in keep_days if days is not None]
    return min([*bounds, DEFAULT_MAX_DAYS]) * DAY


def describe_seconds(seconds: int) -> str:
    """``604800`` -> ``"7 days"``: a duration as people read it."""
    for unit, size in (("day", DAY), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def signature(secret: str, digest: str, expires: int) -> str:
    """The signature of a link to ``digest`` valid until the Unix time ``expires``."""
    mac = hmac.new(secret.encode("utf-8"), f"{digest}:{expires}".encode("ascii"), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def link_path(secret: str, digest: str, expires: int) -> str:
    """``/s/<sha256>?e=...&sig=...``: a link relative to the node's base URL."""
    if not is_sha256(digest):
        raise ValueError(f"not a SHA-256: {str(digest)[:80]!r}")
    return f"/s/{digest}?{urlencode({'e': expires, 'sig': signature(secret, digest, expires)})}"


def make_link(base_url: str, secret: str, digest: str, expires: int) -> str:
    """The full share link on the node at ``base_url`` (e.g. ``https://files.example.org``)."""
    return base_url.rstrip("/") + link_path(secret, digest, expires)


#: How far a link's expiry may pass the longest allowed (clocks of the nodes
#: making links and serving them may differ a little).
CLOCK_SKEW = 60


def verify(secret: str, digest: str, expires: str | None, sig: str | None, now: float,
           longest: int | None = None) -> bool:
    """True when the link's parts are the ones signed, it has not expired at ``now``,
    and (given ``longest``) it does not outlive ``now + longest`` seconds: the server
    caps links by what its hosts keep, whoever made them.

    The signature is compared in constant time; malformed parts are simply invalid.
    """
    if not is_sha256(digest) or expires is None or sig is None:
        return False
    try:
        until = whole_number(expires, at_most=LAST_DATE)
    except ValueError:
        return False
    expected = signature(secret, digest, until).encode("ascii")
    valid = hmac.compare_digest(expected, sig.encode("utf-8", "replace"))
    return valid and until > now and (longest is None or until <= now + longest + CLOCK_SKEW)
