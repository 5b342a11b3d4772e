"""Retrying transient failures with exponential backoff and jitter.

A network host wraps each operation in :meth:`RetryPolicy.call` with a
classifier that tells a transient failure (a dropped connection, a timeout, an
HTTP 5xx, a 429/503 throttling answer) from a permanent one (a wrong password,
a missing bucket, any other 4xx).  Transient failures are retried up to
``retries`` times; the error finally raised says how many attempts were made
and what the first and last failures were, so the catalog records it.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import HostError

T = TypeVar("T")

#: A classifier: None for a permanent failure, else the delay the server asked
#: for (Retry-After, in seconds) or 0.0 to use the backoff.
Classifier = Callable[[BaseException], "float | None"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a host retries (rclone's ``--retries``)."""

    retries: int = 3
    base_delay: float = 0.25
    max_delay: float = 30.0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> RetryPolicy:
        """The policy from a host's options (``retries``, ``retry_delay``)."""
        try:
            retries = int(options.get("retries", cls.retries))
            delay = float(options.get("retry_delay", cls.base_delay))
        except (TypeError, ValueError):
            raise ValueError("retries must be an integer and retry_delay a number of seconds") from None
        if retries < 0 or delay < 0:
            raise ValueError("retries and retry_delay must not be negative")
        return cls(retries=retries, base_delay=delay)

    def delay(self, attempt: int, asked: float = 0.0) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based): full jitter
        over an exponential ceiling, never less than what the server asked for."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return max(min(asked, self.max_delay), random.uniform(0, ceiling))

    def call(self, host: str, what: str, operation: Callable[[], T], transient: Classifier,
             describe: Callable[[BaseException], str] = str) -> T:
        """Run ``operation``; retry transient failures; raise HostError in the end.

        A HostError raised by ``operation`` itself is passed on as it is
        (the host already decided it is final).
        """
        first: str | None = None
        for attempt in range(self.retries + 1):
            try:
                return operation()
            except HostError:
                raise
            except Exception as exc:
                asked = transient(exc)
                message = describe(exc)
                if asked is None or attempt == self.retries:
                    if attempt == 0:
                        raise HostError(host, f"{what}: {message}") from exc
                    raise HostError(host, f"{what}: {message} (after {attempt + 1} attempts; "
                                          f"first failure: {first})") from exc
                first = first or message
                time.sleep(self.delay(attempt + 1, asked))
        raise AssertionError("unreachable")  # pragma: no cover


def retry_after(value: str | None) -> float:
    """Seconds asked for by a Retry-After header (delta-seconds or HTTP date); 0 if none."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - time.time())
