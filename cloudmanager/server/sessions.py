"""Logins on the node's page, kept by the server so that they can be ended.

A login is a random session id (256 bits) in an HttpOnly, SameSite=Strict
cookie; the server keeps the ids' hashes with their expiry.  Logging out ends
the session on the server: a copied cookie stops working at once.  Sessions
live ``lifetime`` seconds (``serve.session_lifetime``), are kept in memory (a
restart of ``cm serve`` ends them all, as a change of token would) and number at
most ``MAX_SESSIONS`` (the oldest are ended first).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

#: Sessions kept at most.
MAX_SESSIONS = 10_000


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


class Sessions:
    """The open sessions of one server."""

    def __init__(self, lifetime: int, *, clock: Callable[[], float] = time.time):
        self.lifetime = lifetime
        self._clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def open(self) -> str:
        """A new session's id (to put in the cookie)."""
        session_id = secrets.token_urlsafe(32)
        self._expiry[_key(session_id)] = self._clock() + self.lifetime
        while len(self._expiry) > MAX_SESSIONS:
            self._expiry.popitem(last=False)
        return session_id

    def valid(self, session_id: str | None) -> bool:
        """True when ``session_id`` names an open session that has not expired."""
        if not session_id:
            return False
        key = _key(session_id)
        expiry = self._expiry.get(key)
        if expiry is None:
            return False
        if expiry <= self._clock():
            del self._expiry[key]
            return False
        return True

    def end(self, session_id: str | None) -> None:
        """End the session ``session_id`` (nothing when there is none)."""
        if session_id:
            self._expiry.pop(_key(session_id), None)

    def __len__(self) -> int:
        return len(self._expiry)
