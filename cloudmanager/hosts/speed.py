"""How fast each host has moved bytes lately: the "fastest recently" of host ranking.

Kept in memory by each process (a node learns it from its own transfers): an
exponentially weighted average of bytes per second per host, fed by uploads and
downloads large enough to say something (small ones measure latency, not speed).
"""

from __future__ import annotations

import threading

#: Transfers smaller than this are not counted: their time is mostly round trips.
SMALLEST = 256 * 1024
#: The weight of the newest measure in the average.
WEIGHT = 0.3


class Speeds:
    """Bytes per second per host name, lately.  Safe to use from several threads."""

    def __init__(self) -> None:
        self._rates: dict[str, float] = {}
        self._guard = threading.Lock()

    def note(self, host: str, size: int, seconds: float) -> None:
        """A transfer of ``size`` bytes to or from ``host`` took ``seconds``."""
        if size < SMALLEST or seconds <= 0:
            return
        rate = size / seconds
        with self._guard:
            old = self._rates.get(host)
            self._rates[host] = rate if old is None else (1 - WEIGHT) * old + WEIGHT * rate

    def rate(self, host: str) -> float:
        """Bytes per second lately (0.0: not measured yet)."""
        return self._rates.get(host, 0.0)
