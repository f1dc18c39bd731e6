"""The encoded answers for the host EIDs asked about most, kept small and together in memory.

A Map-Resolver with a million registrations answers the same few thousand
destinations most of the time.  Finding each one in the full table means
touching a handful of objects spread over gigabytes of heap, and each touch
is likely a cache and TLB miss.  This cache holds the encoded record of a
proxy answer per (instance-ID, host address).  Its dict is small, and the
bytes are copied when they are remembered, so they sit together in recently
allocated memory.  A hit is one dictionary lookup.

A host gets in on its second miss, not its first: most destinations are
asked for once, and copying each of them would cost every cold request
and push hot answers out.  Measured by `bench/bench_mapserver.py`, both ways.

It is never the source of truth, only a copy: the Map-Server drops an entry
(`forget`) whenever the answer for an address could change.  A host
prefix is forgotten alone.  Anything shorter, or a change to static mappings
or policy, empties the whole cache, because a covering prefix decides the
answer for many addresses.  When it is full it is emptied too, which costs
one refill and needs no bookkeeping on hits.
"""

from __future__ import annotations

import ipaddress

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Hosts whose answers are kept: far more than the hot set of a busy resolver, a few MB.
DEFAULT_CAPACITY = 65536
#: Slots of the record of hosts missed once (a power of two).  It is swept after a sixteenth
#: of them were taken, so at most one in 16 hosts seen once is let in by another's slot.
MISSED_SLOTS = 1 << 17


class AnswerCache:
    """(instance-ID, packed host address) -> encoded EID-record of its proxy Map-Reply."""

    __slots__ = ("records", "capacity", "flushes", "misses", "_missed", "_first_misses")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"answer cache capacity must be positive, got {capacity}")
        self.capacity = capacity
        #: Read directly on the hot path: `records.get((iid, packed))`.
        self.records: dict[tuple[int, bytes], bytes] = {}
        self.flushes = 0  # times the whole cache was emptied (a change of a covering prefix, or full)
        self.misses = 0  # answers offered: hosts asked for and not found here
        # Hosts missed once since the last sweep, by hash: a bit of memory that stays in the CPU cache,
        # where a set of keys would hold on to objects scattered over the heap.
        self._missed = bytearray(MISSED_SLOTS)
        self._first_misses = 0

    def __len__(self) -> int:
        return len(self.records)

    def offer(self, key: tuple[int, bytes], record: bytes) -> None:
        """A miss for `key`, (instance-ID, packed host), whose answer is `record`.

        Remembered only when the host was missed before: a host asked for
        once costs a mark in a table, not a copy that would push a hot answer
        out (a resolver sees many destinations once, and few of them often).
        """
        self.misses += 1
        missed, slot = self._missed, hash(key) & (MISSED_SLOTS - 1)
        if not missed[slot]:  # (another host in the same slot only lets this one in early)
            missed[slot] = 1
            self._first_misses += 1
            if self._first_misses >= MISSED_SLOTS // 16:  # forget who was missed long ago
                self._missed = bytearray(MISSED_SLOTS)
                self._first_misses = 0
            return
        if len(self.records) >= self.capacity:
            self.clear()
        self.records[key] = bytes(memoryview(record))  # a copy, allocated beside the other hot ones

    def forget(self, iid: int, net: IPNetwork) -> None:
        """The answer for `net` in `iid` may have changed: drop every cached answer it can decide."""
        if net.prefixlen == net.max_prefixlen:
            self.records.pop((iid, net.network_address.packed), None)
        elif self.records:
            self.clear()

    def clear(self) -> None:
        if self.records:
            self.flushes += 1
            self.records = {}
