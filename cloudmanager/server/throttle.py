"""Slowing down guesses: wrong tokens are answered only so often per client address.

Each address has a bucket of ``burst`` tries that refills at ``rate`` a second;
each wrong token (bearer or login form) takes one.  An address whose bucket is
empty is answered 429 with the seconds until its next try, before its token is
even compared, so guessing goes at ``rate`` a second at most whatever the
client sends.  Right tokens take nothing: a node's own calls, from addresses
that do not guess, are never slowed.  At most ``MAX_CLIENTS`` addresses are
remembered (the ones whose buckets refilled longest ago are forgotten first),
so an attacker with many addresses cannot grow the table without bound.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

#: Addresses remembered at most.
MAX_CLIENTS = 10_000


class Throttle:
    """Per-address buckets of failed tries."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (tries, when)
        #: Requests answered 429.
        self.refused = 0

    def _tries(self, address: str, now: float) -> float:
        tries, when = self._buckets.get(address, (float(self.burst), now))
        return min(float(self.burst), tries + (now - when) * self.rate)

    def retry_after(self, address: str) -> int | None:
        """None when ``address`` may try now; else the whole seconds until it may."""
        if address not in self._buckets:
            return None
        tries = self._tries(address, self._clock())
        if tries >= 1:
            return None
        self.refused += 1
        return max(1, math.ceil((1 - tries) / self.rate))

    def failed(self, address: str) -> None:
        """``address`` gave a wrong token: one try fewer."""
        now = self._clock()
        tries = self._tries(address, now)
        self._buckets[address] = (max(0.0, tries - 1), now)
        self._buckets.move_to_end(address)
        while len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)
