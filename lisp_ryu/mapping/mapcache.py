"""The ITR's map-cache: EID -> mapping, with TTLs and negative entries, plain and source-specific.

One `MapCache` holds both kinds of entry, so one lookup applies the data
plane's rule (longest destination, then longest source) and one expiry and
one deadline cover them all.  Pure state: every call that depends on time
takes `now`.  Expired entries are invisible to lookups from their expiry on
but only dropped by `expire(now)`, which hands them back so the caller can
withdraw their flows.  Pending resolutions belong to the xTR, not here: the
cache holds answers only.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Generic, Hashable, Iterable, Iterator, TypeVar

from lisp_ryu.wire.records import Action  # the Map-Reply ACT field (RFC 9301 §5.4), re-exported

from .eid import Eid, EidError, IPAddress, IPNetwork, MacAddress, check_iid
from .sourcedest import SourceDestKey
from .mactable import MacTable
from .table import PrefixTable

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CacheEntry(Generic[V]):
    """One map-cache entry.  `action` is None for a positive entry (one with locators).

    `value` is opaque to the cache (for the xTR, the record and who sent it).
    A source-specific entry has its destination prefix in `dest` and its
    source prefix in `eid`; a plain one has `dest` None.
    """

    iid: int
    eid: Eid
    value: V
    inserted_at: float
    expires_at: float
    action: Action | None = None
    dest: IPNetwork | None = None

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


class EidCache(Generic[V]):
    """EID prefixes (and MAC EIDs) -> CacheEntry, longest match among live entries.

    Built on PrefixTable/MacTable, so a more-specific positive entry inside a
    negative one wins by plain longest-prefix match.  Expiry order comes from a
    heap with lazy deletion: replacing or removing an entry leaves its old heap
    item behind, recognised as stale by a sequence number and skipped.  The
    MapCache's plain entries are one; each destination of its source-specific
    entries has one of source prefixes (`dest` set).
    """

    def __init__(self, dest: IPNetwork | None = None) -> None:
        self._dest = dest
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

    def values(self) -> Iterator[CacheEntry[V]]:
        """All entries, expired or not, in no particular order (cheaper than iterating)."""
        yield from self._prefixes.values()
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
        entry = CacheEntry(check_iid(iid), eid, value, now, now + ttl, action, self._dest)
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


class SourceDestCache(Generic[V]):
    """Source-specific entries: destination prefix -> (source prefix -> CacheEntry)."""

    def __init__(self) -> None:
        self._dests: PrefixTable[EidCache[V]] = PrefixTable()

    def __len__(self) -> int:
        return sum(len(sources) for _, _, sources in self._dests)

    def __bool__(self) -> bool:
        return len(self._dests) > 0

    def __iter__(self) -> Iterator[tuple[IPNetwork, CacheEntry[V]]]:
        """(destination prefix, entry) for every entry, expired or not; `entry.eid` is the source prefix."""
        for _, dest, sources in self._dests:
            for entry in sources:
                yield dest, entry

    def destinations(self) -> Iterator[tuple[int, IPNetwork]]:
        for iid, dest, _ in self._dests:
            yield iid, dest

    def insert(self, key: SourceDestKey, value: V, *, now: float, ttl: float,
               action: Action | None = None) -> CacheEntry[V]:
        sources = self._dests.get(key.iid, key.dest)
        if sources is None:
            sources = EidCache(key.dest)
            self._dests.insert(key.iid, key.dest, sources)
        return sources.insert(key.iid, key.source, value, now=now, ttl=ttl, action=action)

    def get(self, key: SourceDestKey) -> CacheEntry[V] | None:
        sources = self._dests.get(key.iid, key.dest)
        return sources.get(key.iid, key.source) if sources is not None else None

    def remove(self, key: SourceDestKey) -> CacheEntry[V] | None:
        """Drop exactly `key`; None if absent."""
        sources = self._dests.get(key.iid, key.dest)
        if sources is None or sources.get(key.iid, key.source) is None:
            return None
        entry = sources.remove(key.iid, key.source)
        if not len(sources):
            self._dests.remove(key.iid, key.dest)
        return entry

    def remove_within(self, iid: int, network: IPNetwork) -> list[tuple[IPNetwork, CacheEntry[V]]]:
        """Drop every entry whose destination lies inside `network` (a newer answer supersedes them)."""
        removed = []
        for dest, sources in list(self._dests.more_specifics(iid, network)):
            removed += [(dest, entry) for entry in sources]
            self._dests.remove(iid, dest)
        return removed

    def lookup(self, iid: int, source: IPAddress, destination: IPAddress,
               now: float) -> tuple[IPNetwork, CacheEntry[V] | None] | None:
        """The longest destination prefix with a live entry, and its longest live source match.

        (dest, None) means "this destination is source-specific but nothing
        here covers `source`": the caller must ask, not fall back to a
        shorter destination.  None means no live source-specific entry covers
        `destination` at all.
        """
        hit = self._dests.longest_match(iid, destination)
        while hit is not None:
            dest, sources = hit
            if any(not entry.expired(now) for entry in sources):
                if source.version != destination.version:
                    return dest, None
                return dest, sources.lookup(iid, source, now)
            hit = self._dests.covering(iid, dest, strict=True)
        return None

    def expire(self, now: float) -> list[tuple[IPNetwork, CacheEntry[V]]]:
        removed = []
        for iid, dest, sources in list(self._dests):
            removed += [(dest, entry) for entry in sources.expire(now)]
            if not len(sources):
                self._dests.remove(iid, dest)
        return removed

    def next_deadline(self) -> float | None:
        """The earliest expiry of any entry (a scan over destinations: source-specific ones are few)."""
        deadlines = [d for _, _, sources in self._dests if (d := sources.next_deadline()) is not None]
        return min(deadlines) if deadlines else None


class MapCache(Generic[V]):
    """The ITR's map-cache: plain entries by (instance-ID, EID), source-specific ones by SourceDestKey.

    `len()` and iteration cover the plain entries; `source_specific` holds the
    others, read as (destination, entry) pairs.  `lookup`, `expire` and
    `next_deadline` cover both kinds.
    """

    def __init__(self, locators: Callable[[V], Iterable[Hashable]] | None = None) -> None:
        self._plain: EidCache[V] = EidCache()
        self._sd: SourceDestCache[V] = SourceDestCache()
        # Bumped by every change (entries are never changed in place): lets a reader keep
        # what it derived from the whole cache until the cache changes.
        self.changes = 0
        # How many positive plain entries name each locator (`locators(value)`), kept as entries
        # come and go: an old site's SMRs go to every locator of its cache, once per departure,
        # and a sweep of the whole cache each time made an evacuation of N workloads O(N^2).
        self._locators_of = locators
        self._locator_uses: Counter = Counter()
        self._locators_made: tuple[int, frozenset] | None = None

    def locators(self) -> frozenset:
        """Every locator some positive plain entry names (`locators` given to the constructor)."""
        if self._locators_of is None:
            raise TypeError("this map-cache counts no locators: give MapCache(locators=...)")
        made = self._locators_made
        if made is None or made[0] != self.changes:
            made = self._locators_made = (self.changes, frozenset(self._locator_uses))
        return made[1]

    def _count(self, entry: CacheEntry[V] | None, step: int) -> None:
        if entry is None or entry.negative or self._locators_of is None:
            return
        uses = self._locator_uses
        for locator in set(self._locators_of(entry.value)):
            uses[locator] += step
            if uses[locator] <= 0:
                del uses[locator]

    def __len__(self) -> int:
        return len(self._plain)

    def __iter__(self) -> Iterator[CacheEntry[V]]:
        """All plain entries, expired or not (prefixes in address order, then MACs)."""
        return iter(self._plain)

    def values(self) -> Iterator[CacheEntry[V]]:
        """All plain entries, expired or not, in no particular order: for sweeps that need no order."""
        return self._plain.values()

    @property
    def source_specific(self) -> SourceDestCache[V]:
        """The source-specific entries, to read; change them through the MapCache's methods."""
        return self._sd

    # ---- plain entries

    def insert(self, iid: int, eid: IPNetwork | MacAddress, value: V, *, now: float, ttl: float,
               action: Action | None = None) -> CacheEntry[V]:
        """Add or replace the entry for exactly (iid, eid), live for `ttl` seconds from `now`.

        `ttl` may be math.inf for an entry that never expires.  Map-Reply TTLs
        are in minutes on the wire: the caller converts.
        """
        self.changes += 1
        old = self._plain.get(iid, eid) if self._locators_of is not None else None
        entry = self._plain.insert(iid, eid, value, now=now, ttl=ttl, action=action)
        self._count(old, -1)
        self._count(entry, +1)
        return entry

    def remove(self, iid: int, eid: IPNetwork | MacAddress) -> CacheEntry[V]:
        """Drop the entry for exactly (iid, eid) and return it; PrefixNotFound if absent."""
        self.changes += 1
        entry = self._plain.remove(iid, eid)
        self._count(entry, -1)
        return entry

    def get(self, iid: int, eid: IPNetwork | MacAddress) -> CacheEntry[V] | None:
        """The entry for exactly (iid, eid), expired or not."""
        return self._plain.get(iid, eid)

    def within(self, iid: int, network: IPNetwork) -> list[CacheEntry[V]]:
        """Plain entries whose prefix lies inside `network`, e.g. what an SMR for it refreshes."""
        return self._plain.within(iid, network)

    # ---- source-specific entries

    def insert_source_specific(self, key: SourceDestKey, value: V, *, now: float, ttl: float,
                               action: Action | None = None) -> CacheEntry[V]:
        self.changes += 1
        return self._sd.insert(key, value, now=now, ttl=ttl, action=action)

    def get_source_specific(self, key: SourceDestKey) -> CacheEntry[V] | None:
        return self._sd.get(key)

    def remove_source_specific(self, key: SourceDestKey) -> CacheEntry[V] | None:
        """Drop exactly `key`; None if absent."""
        self.changes += 1
        return self._sd.remove(key)

    def remove_source_specific_within(self, iid: int, network: IPNetwork) -> list[CacheEntry[V]]:
        """Drop every source-specific entry whose destination lies inside `network`."""
        if not self._sd:
            return []
        self.changes += 1
        return [entry for _dest, entry in self._sd.remove_within(iid, network)]

    # ---- both kinds

    def lookup(self, iid: int, address: IPAddress | MacAddress, now: float,
               source: IPAddress | None = None) -> CacheEntry[V] | None:
        """The live entry that applies to a packet for `address` (from `source`), as the flows decide.

        Without `source`, the longest live plain prefix containing `address`:
        if the longest match has expired but `expire` has not run yet, a live
        less-specific entry answers instead.  With `source`, the longest
        destination prefix first, then the longest source prefix; a
        destination known only source-specifically answers None for a source
        outside every cached source prefix (that host must ask for itself).
        """
        plain = self._plain.lookup(iid, address, now)
        if source is None or not self._sd:
            return plain
        found = self._sd.lookup(iid, source, address, now)  # type: ignore[arg-type]
        if found is None:
            return plain
        dest, entry = found
        if plain is not None and plain.eid.prefixlen > dest.prefixlen:  # type: ignore[union-attr]
            return plain
        if entry is not None:
            return entry
        return plain if plain is not None and plain.eid == dest else None

    def expire(self, now: float) -> list[CacheEntry[V]]:
        """Remove and return every entry expired at `now`: plain ones soonest first, then source-specific."""
        plain = self._plain.expire(now)
        for entry in plain:
            self._count(entry, -1)
        gone = plain + [entry for _dest, entry in self._sd.expire(now)]
        if gone:
            self.changes += 1
        return gone

    def next_deadline(self) -> float | None:
        """When the next live entry expires (None if none will): the glue's timer."""
        deadlines = [d for d in (self._plain.next_deadline(), self._sd.next_deadline()) if d is not None]
        return min(deadlines) if deadlines else None
