"""An HTTP answer that an operation did not expect, as the HTTP host kinds raise it
internally (their retry classifiers read ``status`` and ``retry_after``)."""

from __future__ import annotations

import httpx

from .retry import retry_after


class HttpStatus(Exception):
    """The server answered with a status the operation did not expect."""

    def __init__(self, response: httpx.Response, method: str):
        super().__init__(f"{method}: HTTP {response.status_code}")
        self.status = response.status_code
        self.method = method
        self.reason = response.reason_phrase
        self.retry_after = retry_after(response.headers.get("Retry-After"))
