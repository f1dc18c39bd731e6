"""Source-specific mappings: the Source/Dest key (RFC 8060 LCAF type 12) and the ITR's cache of them.

A Map-Server whose answer for a destination depends on the requesting host
answers with an EID-record keyed by (source prefix, destination prefix)
(RFC 9301 allows any LCAF as EID; RFC 8060 §4.10 defines this one).  On the
wire the key is a `SourceDestAddress`, inside an Instance-ID LCAF when the
instance-ID is not 0; the record's EID mask-len carries the destination's.

`SourceDestCache` holds such entries by (instance-ID, destination prefix),
each destination with its own `MapCache` of source prefixes, so a lookup is
"longest destination prefix first, then longest source prefix", with the
map-cache's TTL semantics (an expired entry is invisible from its expiry on,
and dropped by `expire`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Generic, Iterator, TypeVar

from lisp_ryu.wire import Action, InstanceIdAddress, SourceDestAddress

from .eid import EidError, IPAddress, IPNetwork, check_iid
from .mapcache import CacheEntry, MapCache
from .table import PrefixTable

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class SourceDestKey:
    """(instance-ID, source prefix, destination prefix) of one source-specific mapping."""

    iid: int
    source: IPNetwork
    dest: IPNetwork

    def __post_init__(self) -> None:
        check_iid(self.iid)
        if self.source.version != self.dest.version:
            raise EidError(f"source {self.source} and destination {self.dest} are of different families")

    def to_wire(self) -> tuple[int, object]:
        """(EID mask-len, EID address) for an EID-record."""
        sd = SourceDestAddress(self.source.network_address, self.source.prefixlen,
                               self.dest.network_address, self.dest.prefixlen)
        return self.dest.prefixlen, (sd if self.iid == 0 else InstanceIdAddress(self.iid, sd))

    @classmethod
    def from_wire(cls, address: object) -> SourceDestKey | None:
        """The key an EID-record's address names, or None when it is no (IID-wrapped) IP Source/Dest key."""
        iid = 0
        if isinstance(address, InstanceIdAddress):
            if address.iid_mask_len not in (0, 32):
                return None
            iid, address = address.instance_id, address.address
        if not isinstance(address, SourceDestAddress):
            return None
        ip = (ipaddress.IPv4Address, ipaddress.IPv6Address)
        if not isinstance(address.source, ip) or not isinstance(address.dest, ip):
            return None
        if address.source.version != address.dest.version:
            return None
        source = ipaddress.ip_network((address.source, address.source_mask_len), strict=False)
        dest = ipaddress.ip_network((address.dest, address.dest_mask_len), strict=False)
        return cls(iid, source, dest)

    def __str__(self) -> str:
        prefix = f"[{self.iid}]" if self.iid else ""
        return f"{prefix}({self.source} -> {self.dest})"


def record_key(record: object) -> SourceDestKey | None:
    """The Source/Dest key of a MappingRecord, or None for an ordinary EID-record."""
    return SourceDestKey.from_wire(getattr(record, "eid", None))


class SourceDestCache(Generic[V]):
    """Source-specific map-cache entries: destination prefix -> (source prefix -> CacheEntry)."""

    def __init__(self) -> None:
        self._dests: PrefixTable[MapCache[V]] = PrefixTable()

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
            sources = MapCache()
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
