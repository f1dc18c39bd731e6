"""What the controller's network surfaces refused, counted, and logged once per source per interval.

A refusal an attacker can repeat at will (a wrong bearer token, a connection
evicted from a full pool, a datapath nobody configured, a failed TLS
handshake) must not turn into one log line each: the log would become the
denial of service.  Each kind is counted (the REST API's /counters shows
them under "controller"), and a (kind, source) pair is logged at WARNING at
most once per `interval`, saying how many were refused since its last line.
The table of pairs is bounded like the rate limiter's table of sources.
"""

from __future__ import annotations

import heapq
import logging
import time
from typing import Callable, Hashable

LOG = logging.getLogger("lisp_ryu")
INTERVAL = 60.0
MAX_SOURCES = 4096


class Refusals:
    def __init__(self, logger: logging.Logger = LOG, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic, max_sources: int = MAX_SOURCES) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.max_sources = max_sources
        self.counters: dict[str, int] = {}
        self._last: dict[tuple[str, Hashable], list] = {}  # (kind, source) -> [last logged, refused since]

    def refuse(self, kind: str, source: Hashable, message: str, *args: object) -> bool:
        """Count one refusal of `kind` from `source`; log it unless this pair was logged lately.

        True if it was logged (tests and callers that add detail use it)."""
        self.counters[kind] = self.counters.get(kind, 0) + 1
        now = self.clock()
        key = (kind, source)
        entry = self._last.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return False
        if entry is None and len(self._last) >= self.max_sources:
            self._forget_oldest()
        since = entry[1] if entry is not None else 0
        suffix = f" ({since} more from this source since its last report; counter {kind}: {self.counters[kind]})" \
            if since else f" (counter {kind}: {self.counters[kind]}; repeats are logged once per {self.interval:.0f} s)"
        self.logger.warning(message + suffix, *args)
        self._last[key] = [now, 0]
        return True

    def _forget_oldest(self) -> None:
        oldest = heapq.nsmallest(max(1, len(self._last) // 4), self._last.items(), key=lambda kv: kv[1][0])
        for key, _ in oldest:
            del self._last[key]


#: The process's one table: the REST API, the WSGI server and the OpenFlow listener all report here.
REFUSALS = Refusals()
