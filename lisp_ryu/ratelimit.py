"""Per-source token buckets, so one flooding source cannot starve the others.

Each source address gets a bucket of `rate` tokens per second holding at most
`burst`; a datagram costs one token.  The table of sources is itself bounded
(`max_sources`, least recently seen evicted first) so a spoofed-source flood
costs memory proportional to the bound, not to the number of addresses sent.
Time is a parameter (`now`), like everywhere in the core.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable


class RateLimiter:
    def __init__(self, rate: float, burst: float | None = None, max_sources: int = 65536) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate, 1.0))
        self.max_sources = max_sources
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()  # source -> [tokens, last refill]

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: Hashable, now: float) -> bool:
        """Take one token from `source`'s bucket; False when it is empty (drop the datagram)."""
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self._buckets.popitem(last=False)
            bucket = self._buckets[source] = [self.burst, now]
        else:
            self._buckets.move_to_end(source)
            elapsed = now - bucket[1]
            if elapsed > 0:  # a clock stepping back refills nothing rather than draining
                bucket[0] = min(self.burst, bucket[0] + elapsed * self.rate)
                bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        return False
