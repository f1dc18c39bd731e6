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

    def ready(self, source: Hashable, now: float) -> bool:
        """Whether `allow` would let a datagram of `source` through now, taking nothing: a cheap
        question before costly work, whose token the work's own `allow` then takes."""
        bucket = self._buckets.get(source)
        if bucket is None:
            return self.burst >= 1.0
        elapsed = now - bucket[1]
        return bucket[0] + (elapsed * self.rate if elapsed > 0 else 0.0) >= 1.0

    def _forget_oldest(self) -> None:
        """Drop the least recently seen quarter of the sources: one pass pays for many new ones."""
        oldest = heapq.nsmallest(max(1, len(self._buckets) // 4), self._buckets.items(), key=lambda kv: kv[1][1])
        for source, _ in oldest:
            del self._buckets[source]


class ReflectionLimiter:
    """Per-destination byte credit, so a spoofed requester cannot aim our answers at a third party.

    A Map-Request names where its answer goes (the ITR-RLOC); the per-source
    limit charges whoever sent it, not whoever receives the answer.  Each
    destination therefore holds a credit in bytes: every request naming it
    earns `factor` times its own size, time adds `rate` bytes per second, up
    to `burst`; an answer goes out while the credit is positive and costs its
    size (the credit may go below zero by one answer, so one large answer is
    never refused outright).  Against one destination, the bytes sent are at
    most `factor` times the bytes of the requests naming it, plus `rate` per
    second, plus `burst` and one answer, however many sources send them.
    The table is bounded like `RateLimiter`'s.
    """

    def __init__(self, factor: float = 4.0, rate: float = 256.0, burst: float = 4096.0,
                 max_destinations: int = 65536) -> None:
        if not (factor >= 0 and rate >= 0 and burst > 0):
            raise ValueError("factor and rate must be non-negative, burst positive")
        self.factor = float(factor)
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_destinations = max_destinations
        self._buckets: dict[Hashable, list[float]] = {}  # destination -> [credit, last seen]

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, destination: Hashable, asked: int, answer: int, now: float) -> bool:
        """Whether `answer` bytes may go to `destination`, for a request of `asked` bytes naming it (0: none)."""
        bucket = self._buckets.get(destination)
        if bucket is None:
            if len(self._buckets) >= self.max_destinations:
                oldest = heapq.nsmallest(max(1, len(self._buckets) // 4), self._buckets.items(),
                                         key=lambda kv: kv[1][1])
                for key, _ in oldest:
                    del self._buckets[key]
            bucket = self._buckets[destination] = [0.0, now]
        credit = bucket[0] + self.factor * asked
        elapsed = now - bucket[1]
        if elapsed > 0:
            credit += elapsed * self.rate
            bucket[1] = now
        if credit > self.burst:
            credit = self.burst
        if credit <= 0:
            bucket[0] = credit
            return False
        bucket[0] = credit - answer
        return True
