"""Who may call: the node's token (``Authorization: Bearer ...``), or a session of the page.

Tokens are compared in constant time.  No token at all is 401 (with
``WWW-Authenticate: Bearer``), a wrong one 403, and a client address that gave
too many wrong ones lately is answered 429 with Retry-After before its token is
looked at (throttle.py).  The page's logins are server-side sessions
(sessions.py) named by a cookie that holds a random id, never the token.
"""

from __future__ import annotations

import hmac

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response

from .sessions import Sessions
from .throttle import Throttle

#: The cookie naming the page's session.
SESSION_COOKIE = "cm_session"


def same_token(given: str, token: str) -> bool:
    """True when ``given`` is the token (constant time)."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


def bearer(connection: HTTPConnection) -> str | None:
    """The token of an ``Authorization: Bearer`` header ("" for another scheme), or None."""
    header = connection.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def client_address(connection: HTTPConnection) -> str:
    """The address the call came from ("-" when unknown)."""
    return connection.client.host if connection.client else "-"


class Access:
    """The node's token, its page's sessions, and the throttle of wrong tokens."""

    def __init__(self, token: str, sessions: Sessions, throttle: Throttle, *, secure_cookie: bool):
        self._token = token
        self.sessions = sessions
        self.throttle = throttle
        self._secure = secure_cookie

    def check(self, connection: HTTPConnection, given: str) -> bool:
        """Whether ``given`` is the token; raises HTTPException 429 while the caller's
        address is throttled, and counts a wrong token against it."""
        address = client_address(connection)
        wait = self.throttle.retry_after(address)
        if wait is not None:
            raise HTTPException(429, f"too many wrong tokens from {address}: try again in {wait} s",
                                headers={"Retry-After": str(wait)})
        if same_token(given, self._token):
            return True
        self.throttle.failed(address)
        return False

    def require(self, connection: HTTPConnection, *, session: bool = False) -> None:
        """Raise HTTPException 401 (no token), 403 (a wrong one) or 429 (throttled) unless
        the call carries the token, or (with ``session``) comes from a logged-in page."""
        given = bearer(connection)
        if given is None:
            if session and self.logged_in(connection):
                return
            raise HTTPException(401, "this node needs its token (Authorization: Bearer ...)",
                                headers={"WWW-Authenticate": 'Bearer realm="cloudmanager"'})
        if not self.check(connection, given):
            raise HTTPException(403, "wrong token")

    def logged_in(self, connection: HTTPConnection) -> bool:
        """True when the call carries the cookie of an open session."""
        return self.sessions.valid(connection.cookies.get(SESSION_COOKIE))

    def log_in(self, response: Response) -> None:
        """Open a session and give ``response`` its cookie (the caller has checked the token)."""
        response.set_cookie(SESSION_COOKIE, self.sessions.open(), max_age=self.sessions.lifetime,
                            path="/", secure=self._secure, httponly=True, samesite="strict")

    def log_out(self, connection: HTTPConnection, response: Response) -> None:
        """End the caller's session on the server, and ask the browser to forget its cookie."""
        self.sessions.end(connection.cookies.get(SESSION_COOKIE))
        response.delete_cookie(SESSION_COOKIE, path="/", secure=self._secure, httponly=True,
                               samesite="strict")
