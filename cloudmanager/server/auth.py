"""Who may call: the node's token (``Authorization: Bearer ...``), or the page's session.

Tokens are compared in constant time.  No token at all is 401 (with
``WWW-Authenticate: Bearer``), a wrong one 403.  The page keeps a login in
Starlette's signed session cookie, as a MAC of the token (so changing the token
ends every session) and never the token itself.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

#: The key of the login in the session.
SESSION_KEY = "node"


def same_token(given: str, token: str) -> bool:
    """True when ``given`` is the token (constant time)."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


def _session_mark(secret: str, token: str) -> str:
    """What a logged-in session holds: a MAC of the token under the node's secret."""
    return hmac.new(secret.encode("utf-8"), b"session:" + token.encode("utf-8"), hashlib.sha256).hexdigest()


def bearer(connection: HTTPConnection) -> str | None:
    """The token of an ``Authorization: Bearer`` header ("" for another scheme), or None."""
    header = connection.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def logged_in(connection: HTTPConnection, token: str, secret: str) -> bool:
    """True when the session cookie holds a login with the current token."""
    mark = connection.session.get(SESSION_KEY)
    return isinstance(mark, str) and hmac.compare_digest(mark.encode("ascii", "replace"),
                                                         _session_mark(secret, token).encode("ascii"))


def log_in(connection: HTTPConnection, token: str, secret: str) -> None:
    """Record a login in the session (the caller has checked the token)."""
    connection.session.clear()
    connection.session[SESSION_KEY] = _session_mark(secret, token)


def log_out(connection: HTTPConnection) -> None:
    """Forget the login."""
    connection.session.clear()


def require(connection: HTTPConnection, token: str, secret: str, *, session: bool = False) -> None:
    """Raise HTTPException 401 (no token) or 403 (a wrong one) unless the call carries
    the token, or (with ``session``) comes from a logged-in page."""
    given = bearer(connection)
    if given is None:
        if session and logged_in(connection, token, secret):
            return
        raise HTTPException(401, "this node needs its token (Authorization: Bearer ...)",
                            headers={"WWW-Authenticate": 'Bearer realm="cloudmanager"'})
    if not same_token(given, token):
        raise HTTPException(403, "wrong token")
