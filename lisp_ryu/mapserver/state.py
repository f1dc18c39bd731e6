"""The Map-Server's state, shared by its parts: the values it holds and the tables that hold them.

The parts (registry, resolver, pubsub, northbound, journal) are behaviour;
this module is what they act on.  Keeping every table in one `State` that
each part references lets a part read another's table without holding the
other part (so no part needs the dispatcher, and none needs a part above
it), and lets the journal snapshot and restore all of it in one place.
The record helpers here are the ones several parts need: how a registered
record is answered, and its bytes in a Map-Reply.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import logging
from dataclasses import dataclass, field, replace
from typing import Callable

from lisp_ryu.config import MapServerConfig, SiteConfig
from lisp_ryu.mapping import PrefixTable
from lisp_ryu.mapping.policy import Policy, StaticMapping
from lisp_ryu.mapserver.answer_cache import AnswerCache
from lisp_ryu.wire import Action, EidPrefix, Locator, MappingRecord, MapReply

LOG = logging.getLogger("lisp_ryu.mapserver")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NONCE_MASK = (1 << 64) - 1

NEGATIVE_ACTIONS = {
    "no-action": Action.NO_ACTION,
    "native-forward": Action.NATIVELY_FORWARD,
    "send-map-request": Action.SEND_MAP_REQUEST,
    "drop": Action.DROP_NO_REASON,
}

_REPLY_HEAD = ((2 << 28) | 1).to_bytes(4, "big")  # Map-Reply, one record


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class EtrRegistration:
    """One ETR's registration of one EID prefix, as its last Map-Register stated it."""

    site: str
    etr: str  # "xtr:<hex>" with the I bit, else "rloc:<address>"
    iid: int
    prefix: IPNetwork
    record: MappingRecord
    source: IPAddress  # where the Map-Register came from: Map-Notify and forwarded requests go there
    port: int
    proxy_reply: bool
    key_id: int
    algorithm: int
    registered_at: float  # last Map-Register
    expires: float
    xtr_id: int | None = None
    site_id: int | None = None
    nonce: int | None = None  # of the Map-Register that made or last refreshed it (anti-replay: freshness.py)
    #: This registration as its journal entry, msgpack-encoded once when its Map-Register came:
    #: a snapshot of many of them is then a join, not as many encodings (time answering nothing).
    #: Empty when restored (encoding them would slow every restart); by the first compaction
    #: after a restart the ETRs have mostly registered again.
    stored: bytes = field(default=b"", compare=False, repr=False)
    #: Kept by the registry alone (`Registry.refresh`), which moves `registered_at`, `expires` and `nonce`
    #: of a live registration on in place when an identical Map-Register refreshes it: the sequence
    #: number its timer at `expires` takes (`turn`: drawn when the Map-Register came, so that
    #: registrations expiring together go in the order they were refreshed), and the expiry its journal
    #: entry `stored` says (`durable`).  Its timer is armed once and re-arms itself when it fires early.
    turn: int = field(default=0, compare=False, repr=False)
    durable: float = field(default=0.0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Subscription:
    """An ITR that asked to be told when the mapping of `prefix` changes (RFC 9437)."""

    iid: int
    prefix: IPNetwork
    xtr_id: int
    site_id: int
    itr_rloc: IPAddress
    port: int
    nonce: int  # last nonce used with this subscriber; the next notification uses nonce + 1
    subscribed_at: float
    expires: float
    #: The hosts behind the ITR that asked, oldest first, for policies on source EID groups.
    source_eids: tuple[IPAddress, ...] = ()


@dataclass(slots=True)
class Registered:
    """A registered prefix: its owning site, its ETRs, and the merged record answered for it."""

    site: str
    etrs: dict[str, EtrRegistration] = field(default_factory=dict)
    record: MappingRecord | None = None
    record_bytes: bytes = b""  # encoded `record`, made by the first Map-Reply and reused by the next
    proxy: bool = False


# --------------------------------------------------------------------------- the shared state


class State:
    """Configuration, tables, counters and timers of one Map-Server, shared by its parts.

    Each table has one part that changes it (the registry `registered`, the
    pubsub part `subscriptions`, the northbound part `static` and `policy`)
    and the journal, which restores them all; the others only read.
    """

    def __init__(self, config: MapServerConfig, nonces: Callable[[], int], answers: AnswerCache) -> None:
        self.config = config
        self.nonces = nonces
        self.sites: dict[str, SiteConfig] = {site.name: site for site in config.sites}
        self.negative_action = NEGATIVE_ACTIONS[config.negative_action]
        # (iid, configured prefix) -> [(site, accept_more_specifics)], and the configured
        # prefixes strictly inside each one (for negative answers inside a site's space).
        self.configured: PrefixTable[list[tuple[SiteConfig, bool]]] = PrefixTable()
        for site in config.sites:
            for eid in site.eid_prefixes:
                owners = self.configured.get(eid.iid, eid.prefix)
                if owners is None:
                    owners = []
                    self.configured.insert(eid.iid, eid.prefix, owners)
                owners.append((site, eid.accept_more_specifics))
        self.inner_configured: dict[tuple[int, IPNetwork], tuple[IPNetwork, ...]] = {
            (iid, net): tuple(inner for inner, _ in self.configured.more_specifics(iid, net, strict=True))
            for iid, net, _ in self.configured
        }
        self.registered: PrefixTable[Registered] = PrefixTable()
        self.static: PrefixTable[tuple[StaticMapping, MappingRecord]] = PrefixTable()
        self.policy = Policy()
        self.subscriptions: PrefixTable[dict[int, Subscription]] = PrefixTable()
        self.subscription_count = 0
        self.xtr_sites: dict[int, str] = {}  # xTR-ID -> site, for signing notifications to subscribers
        for site in config.sites:  # configured bindings (a PxTR subscribes but never registers)
            self.xtr_sites.update(dict.fromkeys(site.xtr_ids, site.name))
        self.answers = answers  # the fast path's copies of hot answers; whoever changes an answer forgets it
        self.counters: dict[str, int] = {}
        #: (when, sequence, kind, key): "reg" (iid, prefix, etr), "sub" (iid, prefix, xTR-ID), "notify" (nonce, to),
        #: "journal" (): at most one live entry per (kind, key), the one `armed` names (see `schedule`).
        self.timers: list[tuple[float, int, str, tuple]] = []
        self.armed: dict[tuple[str, tuple], float] = {}
        self.sequence = itertools.count()
        self._log_budget: dict[str, int] = {}

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    def schedule(self, when: float, kind: str, key: tuple, turn: int | None = None) -> int:
        """Have (kind, key)'s handler run at `when`, or earlier; returns its turn.

        Timers due together run in the order of their `turn` (by default the
        order they were scheduled in).

        One live heap entry per (kind, key): a later time (a renewal, a
        refresh) leaves the armed entry alone, and its handler, finding the
        object's time moved, arms again for it (`fired` returns True only for
        the live entry).  Only an earlier time pushes a new entry; the heap is
        rebuilt when such superseded entries outnumber the live ones, so it
        stays within twice the live timers however often anything renews.
        """
        if turn is None:
            turn = next(self.sequence)
        slot = (kind, key)
        armed = self.armed.get(slot)
        if armed is not None and armed <= when:
            return turn
        self.armed[slot] = when
        heapq.heappush(self.timers, (when, turn, kind, key))
        if len(self.timers) > 2 * len(self.armed) + 64:
            self.timers[:] = [t for t in self.timers if self.armed.get((t[2], t[3])) == t[0]]
            heapq.heapify(self.timers)
        return turn

    def disarm(self, kind: str, key: tuple) -> None:
        """(kind, key) needs its timer no more: its heap entry is superseded (and goes with the next rebuild)."""
        self.armed.pop((kind, key), None)

    def fired(self, when: float, kind: str, key: tuple) -> bool:
        """Whether a popped timer is its key's live one (then no longer armed); False for a superseded one."""
        slot = (kind, key)
        if self.armed.get(slot) != when:
            return False
        del self.armed[slot]
        return True

    def log_throttled(self, topic: str, level: int, message: str, *args: object) -> None:
        """Log the 1st, 2nd, 4th, 8th ... occurrence of a topic: a flood must not flood the log."""
        seen = self._log_budget.get(topic, 0) + 1
        self._log_budget[topic] = seen
        if seen & (seen - 1) == 0:
            LOG.log(level, message + (f" ({seen} so far)" if seen > 1 else ""), *args)


# --------------------------------------------------------------------------- records as answered


def struct_reply(nonce: bytes, record_bytes: bytes) -> bytes:
    """A one-record Map-Reply from the request's nonce (8 bytes) and an already encoded record:
    the hot path of a proxy reply."""
    return _REPLY_HEAD + nonce + record_bytes


def record_bytes(record: MappingRecord) -> bytes:
    """`record` encoded as a Map-Reply carries it."""
    return MapReply(nonce=0, records=(record,)).encode()[12:]


def record_from_bytes(data: bytes) -> MappingRecord:
    return MapReply.decode(struct_reply(bytes(8), data)).records[0]


def plain_locator(locator: Locator) -> Locator:
    """A locator as a Map-Server hands it on: the ETR's own L and p bits mean nothing to others."""
    return replace(locator, local=False, probed=False) if locator.local or locator.probed else locator


def as_answer(record: MappingRecord, iid: int, net: IPNetwork) -> MappingRecord:
    """The registered record as a Map-Reply carries it (reused as is when it already is one)."""
    locators = tuple(plain_locator(loc) for loc in record.locators)
    if (record.action is Action.NO_ACTION and not record.authoritative and record.eid_mask_len == net.prefixlen
            and all(a is b for a, b in zip(locators, record.locators)) and record.eid == _wire_eid(iid, net)):
        return record
    return MappingRecord.for_prefix(EidPrefix(net.network_address, net.prefixlen, iid), locators, ttl=record.ttl,
                                    action=Action.NO_ACTION, map_version=record.map_version)


def _wire_eid(iid: int, net: IPNetwork) -> object:
    return EidPrefix(net.network_address, net.prefixlen, iid).to_wire()[1]


def static_record(mapping: StaticMapping) -> MappingRecord:
    """The record a static mapping is answered with."""
    prefix = EidPrefix(mapping.prefix.network_address, mapping.prefix.prefixlen, mapping.iid)
    return MappingRecord.for_prefix(prefix, mapping.locators(), ttl=mapping.ttl_minutes)


def rlocs_text(record: MappingRecord) -> str:
    """The record's RLOCs for a log line."""
    return ", ".join(str(locator.address) for locator in record.locators) or "no RLOC"
