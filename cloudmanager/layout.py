"""The sharded layout of content-addressed storage, written once.

An object whose SHA-256 is ``abcd...`` lives at ``ab/cd/abcd...`` below a root:
two levels of two hex digits, so no directory holds more than a few hundred
entries even with millions of files.  The local cache (cache.py) and every host
kind that stores by hash (folders, SFTP, WebDAV, S3, rclone) use this layout;
this module knows nothing of either (it imports neither the cache nor the hosts).
"""

from __future__ import annotations

import re
from functools import cache

from .names import is_sha256

__all__ = ["digest_at_end", "is_sha256", "is_shard", "placed", "sharded", "shards"]

_SHARD = re.compile(r"[0-9a-f]{2}")


def shards(digest: str) -> tuple[str, str, str]:
    """The three parts of ``digest``'s place: ``("ab", "cd", "abcd...")``."""
    return digest[:2], digest[2:4], digest


def sharded(digest: str) -> str:
    """``digest``'s place below a root, ``ab/cd/<sha256>`` (no leading slash)."""
    return "/".join(shards(digest))


def is_shard(name: str) -> bool:
    """True for a directory name of the layout: two lowercase hex digits."""
    return _SHARD.fullmatch(name) is not None


def placed(top: str, sub: str, name: str) -> bool:
    """True when a file ``name`` found at ``top/sub/name`` is a SHA-256 in its own place."""
    return is_sha256(name) and name[:2] == top and name[2:4] == sub


@cache
def _tail(lead: str) -> re.Pattern[str]:
    return re.compile(f"[{re.escape(lead)}]" + r"([0-9a-f]{2})/([0-9a-f]{2})/(\1\2[0-9a-f]{60})\Z")


def digest_at_end(path: str, lead: str = "/") -> str | None:
    """The SHA-256 that ``path`` ends in as ``<lead>ab/cd/<sha256>``, or None.

    ``lead`` is the characters that may stand before the first shard (``/``, or
    ``:/`` where a path may start right after a remote's name).  The shards must
    be the digest's own first digits: ``/00/00/<ab...>`` names nothing.
    """
    match = _tail(lead).search(path)
    return match.group(3) if match is not None else None
