"""The ITR's map-cache: EID prefix -> mapping, with TTLs and negative entries.

Pure state: every call that depends on time takes `now` (seconds, any epoch the
caller sticks to).  Expired entries stay invisible to `lookup` from the moment
they expire, but are only dropped by `expire(now)`, which hands them back so
the caller can withdraw their flows; `next_deadline()` tells the glue when to
call it.  Pending resolutions (held packets, retries) belong to the xTR core,
not here: the cache holds answers only.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass
from typing import Generic, Iterator, TypeVar

from lisp_ryu.wire.records import Action  # the Map-Reply ACT field (RFC 9301 §5.4), re-exported

from .eid import Eid, EidError, IPAddress, IPNetwork, MacAddress, check_iid
from .table import MacTable, PrefixTable

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CacheEntry(Generic[V]):
    """One map-cache entry.  `action` is None for a positive entry (one with locators).

    `value` is opaque to the cache (the decoded mapping record, later); a
    negative entry may carry one too, e.g. the Map-Reply record it came from.
    """

    iid: int
    eid: Eid
    value: V
    inserted_at: float
    expires_at: float
    action: Action | None = None

    @property
    def negative(self) -> bool:
        return self.action is not None

    def expired(self, now: float) -> bool:
        """An entry is dead from its expiry instant on (a TTL of 0 is never visible)."""
        return now >= self.expires_at

    def __str__(self) -> str:
        kind = "positive" if self.action is None else f"negative {self.action.name}"
        return f"[{self.iid}]{self.eid} {kind} expires {self.expires_at:g}"


def _check_time(name: str, value: object, *, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EidError(f"{name} must be a number of seconds, got {value!r}")
    if math.isnan(value) or value < 0 or (math.isinf(value) and not allow_inf):
        raise EidError(f"{name} must be a finite non-negative number of seconds, got {value!r}")
    return float(value)


class MapCache(Generic[V]):
    """EID prefixes (and MAC EIDs) -> CacheEntry, longest match among live entries.

    Built on PrefixTable/MacTable, so a more-specific positive entry inside a
    negative one wins by plain longest-prefix match.  Expiry order comes from a
    heap with lazy deletion: replacing or removing an entry leaves its old heap
    item behind, recognised as stale by a sequence number and skipped.
    """

    def __init__(self) -> None:
        self._prefixes: PrefixTable[CacheEntry[V]] = PrefixTable()
        self._macs: MacTable[CacheEntry[V]] = MacTable()
        # (expires_at, seq, iid, eid): seq breaks ties in insertion order and marks staleness.
        self._heap: list[tuple[float, int, int, Eid]] = []
        self._seq_of: dict[tuple[int, Eid], int] = {}
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._prefixes) + len(self._macs)

    def __iter__(self) -> Iterator[CacheEntry[V]]:
        """All entries, expired or not (prefixes in address order, then MACs)."""
        for _iid, _net, entry in self._prefixes:
            yield entry
        for _iid, _mac, entry in self._macs:
            yield entry

    def _table(self, eid: object) -> PrefixTable[CacheEntry[V]] | MacTable[CacheEntry[V]]:
        return self._macs if isinstance(eid, MacAddress) else self._prefixes

    def insert(
        self,
        iid: int,
        eid: IPNetwork | MacAddress,
        value: V,
        *,
        now: float,
        ttl: float,
        action: Action | None = None,
    ) -> CacheEntry[V]:
        """Add or replace the entry for exactly (iid, eid), live for `ttl` seconds from `now`.

        `ttl` may be math.inf for an entry that never expires.  Map-Reply TTLs
        are in minutes on the wire: the caller converts.
        """
        now = _check_time("now", now)
        ttl = _check_time("ttl", ttl, allow_inf=True)
        if action is not None and not isinstance(action, Action):
            raise EidError(f"action must be an Action or None, got {action!r}")
        entry = CacheEntry(check_iid(iid), eid, value, now, now + ttl, action)
        self._table(eid).insert(iid, eid, entry)  # type: ignore[arg-type]
        seq = next(self._counter)
        self._seq_of[(iid, eid)] = seq
        if not math.isinf(entry.expires_at):
            heapq.heappush(self._heap, (entry.expires_at, seq, iid, eid))
        self._compact_if_stale()
        return entry

    def remove(self, iid: int, eid: IPNetwork | MacAddress) -> CacheEntry[V]:
        """Drop the entry for exactly (iid, eid) and return it; PrefixNotFound if absent."""
        entry = self._table(eid).remove(iid, eid)  # type: ignore[arg-type]
        del self._seq_of[(iid, eid)]
        self._compact_if_stale()
        return entry

    def get(self, iid: int, eid: IPNetwork | MacAddress) -> CacheEntry[V] | None:
        """The entry for exactly (iid, eid), expired or not."""
        return self._table(eid).get(iid, eid)  # type: ignore[arg-type]

    def lookup(self, iid: int, address: IPAddress | MacAddress, now: float) -> CacheEntry[V] | None:
        """The longest-prefix entry containing `address` that is live at `now`.

        If the longest match has expired but `expire` has not run yet, a live
        less-specific entry answers instead, exactly as if the expired one were
        already gone.
        """
        if isinstance(address, MacAddress):
            hit = self._macs.longest_match(iid, address)
            return None if hit is None or hit[1].expired(now) else hit[1]
        hit_p = self._prefixes.longest_match(iid, address)
        while hit_p is not None and hit_p[1].expired(now):
            hit_p = self._prefixes.covering(iid, hit_p[0], strict=True)
        return None if hit_p is None else hit_p[1]

    def within(self, iid: int, network: IPNetwork) -> list[CacheEntry[V]]:
        """Entries whose prefix lies inside `network`, e.g. what an SMR for it refreshes."""
        return [entry for _net, entry in self._prefixes.more_specifics(iid, network)]

    def expire(self, now: float) -> list[CacheEntry[V]]:
        """Remove and return every entry expired at `now`, soonest expiry first."""
        now = _check_time("now", now)
        removed: list[CacheEntry[V]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _expires_at, seq, iid, eid = heapq.heappop(heap)
            if self._seq_of.get((iid, eid)) != seq:
                continue  # replaced or removed since: stale heap item
            removed.append(self._table(eid).remove(iid, eid))  # type: ignore[arg-type]
            del self._seq_of[(iid, eid)]
        return removed

    def next_deadline(self) -> float | None:
        """When the next live entry expires (None if none will): the glue's timer."""
        heap = self._heap
        while heap and self._seq_of.get((heap[0][2], heap[0][3])) != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _compact_if_stale(self) -> None:
        """Rebuild the heap when stale items outnumber live ones, so churn cannot grow it."""
        if len(self._heap) > 2 * len(self._seq_of) + 64:
            self._heap = [item for item in self._heap if self._seq_of.get((item[2], item[3])) == item[1]]
            heapq.heapify(self._heap)
