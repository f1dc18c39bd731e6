"""Per-source token buckets, so one flooding source cannot starve the others.

Each source address gets a bucket of `rate` tokens per second holding at most
`burst`; a datagram costs one token.  The table of sources is itself bounded
(`max_sources`; when full, the least recently seen quarter is forgotten in
one pass) so a spoofed-source flood costs memory proportional to the bound,
not to the number of addresses sent.  A datagram costs one dictionary
lookup: the limiter sits in front of every request a Map-Resolver answers.
Time is a parameter (`now`), like everywhere in the core.
"""

from __future__ import annotations

import heapq
from typing import Hashable


class RateLimiter:
    def __init__(self, rate: float, burst: float | None = None, max_sources: int = 65536) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate, 1.0))
        self.max_sources = max_sources
        self._buckets: dict[Hashable, list[float]] = {}  # source -> [tokens, last refill = last seen]

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: Hashable, now: float) -> bool:
        """Take one token from `source`'s bucket; False when it is empty (drop the datagram)."""
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self._forget_oldest()
            bucket = self._buckets[source] = [self.burst, now]
        else:
            elapsed = now - bucket[1]
            if elapsed > 0:  # a clock stepping back refills nothing rather than draining
                tokens = bucket[0] + elapsed * self.rate
                bucket[0] = tokens if tokens < self.burst else self.burst
                bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        return False

    def _forget_oldest(self) -> None:
        """Drop the least recently seen quarter of the sources: one pass pays for many new ones."""
        oldest = heapq.nsmallest(max(1, len(self._buckets) // 4), self._buckets.items(), key=lambda kv: kv[1][1])
        for source, _ in oldest:
            del self._buckets[source]
