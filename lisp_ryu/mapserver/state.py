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
from lisp_ryu.mapserver.expiry import ExpiryWheel
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
class EtrContext:
    """What one ETR's Map-Register says of every record in it: one object shared by the registrations
    it makes (`share_context`), rather than nine fields in each of a million of them."""

    site: str
    etr: str  # "xtr:<hex>" with the I bit, else "rloc:<address>"
    source: IPAddress  # where the Map-Register came from: Map-Notify and forwarded requests go there
    port: int
    proxy_reply: bool
    key_id: int
    algorithm: int
    xtr_id: int | None = None
    site_id: int | None = None


_CONTEXTS: dict[EtrContext, EtrContext] = {}
#: Distinct contexts shared (forgotten all at once past this: a bound, not an LRU; equal values either way).
CONTEXTS = 1 << 16


def share_context(context: EtrContext) -> EtrContext:
    """The one shared object equal to `context`."""
    same = _CONTEXTS.get(context)
    if same is None:
        if len(_CONTEXTS) >= CONTEXTS:
            _CONTEXTS.clear()
        same = _CONTEXTS[context] = context
    return same


def prefix_key(net: IPNetwork) -> bytes:
    """A prefix as a registration keeps it: its packed address, then its mask length (one byte)."""
    return net.network_address.packed + bytes((net.prefixlen,))


def key_prefix(key: bytes) -> IPNetwork:
    """The network of a `prefix_key`."""
    cls = ipaddress.IPv4Network if len(key) == 5 else ipaddress.IPv6Network
    return cls((int.from_bytes(key[:-1], "big"), key[-1]))


def prefix_text(key: bytes) -> str:
    """str() of the network of a `prefix_key`, without making it for IPv4 (a snapshot writes one per entry)."""
    if len(key) == 5:
        return "%d.%d.%d.%d/%d" % (key[0], key[1], key[2], key[3], key[4])
    return str(key_prefix(key))


@dataclass(slots=True)
class EtrRegistration:
    """One ETR's registration of one EID prefix, as its last Map-Register stated it.

    Compact, as a Map-Server holds a million: the message's fields shared
    (`context`), the prefix as bytes (`prefix_key`), the record as the bytes
    a Map-Reply carries (`rec`, canonical: `record_bytes` of a decoded
    record), decoded only when a view or a merge of several ETRs asks
    (`record`).  Times and nonces are shared by the records of one message.
    A value to all but the registry, which alone moves a live one's times,
    nonce and turn on (not frozen: a restore makes a million, and a frozen
    dataclass's constructor costs three times as much).
    """

    context: EtrContext
    iid: int
    key: bytes  # `prefix_key` of the prefix
    rec: bytes  # the record, encoded
    registered_at: float  # last Map-Register
    expires: float
    nonce: int | None = None  # of the Map-Register that made or last refreshed it (anti-replay: freshness.py)
    #: Kept by the registry alone: the expiry its slot in the expiry wheel was taken for (`expiry.py`;
    #: the registry's refresh moves `registered_at`, `expires`, `nonce` and `turn` on in place, and the
    #: slot re-arms itself when it comes early), and the expiry its journal entry says (`durable`).
    armed: float = field(default=0.0, compare=False, repr=False)
    durable: float = field(default=0.0, compare=False, repr=False)
    #: Orders registrations due at the same moment: drawn from `State.sequence` once per Map-Register that
    #: made or refreshed it (shared by its records), so they expire in the order their ETRs refreshed them.
    turn: int = field(default=0, compare=False, repr=False)
    armed_turn: int = field(default=0, compare=False, repr=False)  # `turn` when its slot was taken

    @property
    def site(self) -> str:
        return self.context.site

    @property
    def etr(self) -> str:
        return self.context.etr

    @property
    def source(self) -> IPAddress:
        return self.context.source

    @property
    def port(self) -> int:
        return self.context.port

    @property
    def proxy_reply(self) -> bool:
        return self.context.proxy_reply

    @property
    def key_id(self) -> int:
        return self.context.key_id

    @property
    def algorithm(self) -> int:
        return self.context.algorithm

    @property
    def xtr_id(self) -> int | None:
        return self.context.xtr_id

    @property
    def site_id(self) -> int | None:
        return self.context.site_id

    @property
    def prefix(self) -> IPNetwork:
        return key_prefix(self.key)

    @property
    def record(self) -> MappingRecord:
        return record_from_bytes(self.rec)


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


class Registered:
    """A registered prefix: its owning site, its ETRs, and the merged record answered for it, encoded.

    One ETR (the usual case) is held as itself, several in a dict: `etrs` is
    a read-only view of either, and the registry changes them through `put`,
    `drop` and `clear`.  The answer is kept as the bytes a Map-Reply carries
    (for one ETR often its registration's own `rec`), decoded on demand.
    """

    __slots__ = ("site", "_etrs", "record_bytes", "proxy")

    def __init__(self, site: str, etrs: EtrRegistration | dict[str, EtrRegistration] | None = None,
                 record_bytes: bytes = b"", proxy: bool = False) -> None:
        self.site = site
        self._etrs = etrs
        self.record_bytes = record_bytes  # `record_bytes(as_answer(...))` of the merged record; b"" until known
        self.proxy = proxy

    def __repr__(self) -> str:
        return f"Registered(site={self.site!r}, etrs={self.etrs!r}, proxy={self.proxy!r})"

    @property
    def record(self) -> MappingRecord | None:
        return record_from_bytes(self.record_bytes) if self.record_bytes else None

    @property
    def etrs(self) -> dict[str, EtrRegistration]:
        """ETR -> its registration (a copy when one ETR registers: read, do not change)."""
        etrs = self._etrs
        if etrs is None:
            return {}
        return {etrs.context.etr: etrs} if type(etrs) is EtrRegistration else etrs  # type: ignore[return-value]

    def regs(self) -> tuple[EtrRegistration, ...] | list[EtrRegistration]:
        etrs = self._etrs
        if etrs is None:
            return ()
        return (etrs,) if type(etrs) is EtrRegistration else list(etrs.values())  # type: ignore[union-attr]

    def __len__(self) -> int:
        etrs = self._etrs
        return 0 if etrs is None else 1 if type(etrs) is EtrRegistration else len(etrs)  # type: ignore[arg-type]

    def etr(self, name: str) -> EtrRegistration | None:
        etrs = self._etrs
        if type(etrs) is EtrRegistration:
            return etrs if etrs.context.etr == name else None
        return None if etrs is None else etrs.get(name)  # type: ignore[union-attr]

    def put(self, reg: EtrRegistration) -> None:
        etrs = self._etrs
        if etrs is None or (type(etrs) is EtrRegistration and etrs.context.etr == reg.context.etr):
            self._etrs = reg
        elif type(etrs) is EtrRegistration:
            self._etrs = {etrs.context.etr: etrs, reg.context.etr: reg}
        else:
            etrs[reg.context.etr] = reg  # type: ignore[index]

    def drop(self, name: str) -> None:
        etrs = self._etrs
        if type(etrs) is EtrRegistration:
            if etrs.context.etr == name:
                self._etrs = None
        elif etrs is not None:
            etrs.pop(name, None)  # type: ignore[union-attr]
            if len(etrs) == 1:  # type: ignore[arg-type]
                [self._etrs] = etrs.values()  # type: ignore[union-attr]

    def clear(self) -> None:
        self._etrs = None


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
        #: (when, sequence, kind, key): "reg" (bucket,) of `expiry`, "sub" (iid, prefix, xTR-ID), "notify" (nonce, to),
        #: "journal" (): at most one live entry per (kind, key), the one `armed` names (see `schedule`).
        self.timers: list[tuple[float, int, str, tuple]] = []
        self.armed: dict[tuple[str, tuple], float] = {}
        self.sequence = itertools.count(1)
        self.expiry = ExpiryWheel(self.schedule)  # the registrations' timers: one "reg" timer per bucket
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
