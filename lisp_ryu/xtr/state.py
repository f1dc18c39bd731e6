"""What the parts of one xTR share: its configuration and identity, the map-cache, the work in flight, its hosts.

`core.XtrCore` composes the parts (resolution, registration, mobility,
probing); each holds this one object, so none of them imports another's
internals or the core.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from itertools import chain
from typing import Callable

from lisp_ryu.config import MapServerRef, XtrConfig
from lisp_ryu.mapping.mapcache import MapCache
from lisp_ryu.plan import LocalHost
from lisp_ryu.wire.prefix import EidPrefix
from lisp_ryu.wire.records import Locator, MappingRecord

LOG = logging.getLogger("lisp_ryu.xtr")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IP_TYPES = (ipaddress.IPv4Address, ipaddress.IPv6Address)  # EIDs and RLOCs the data plane can use

HELD_PACKETS_PER_EID = 16
#: Map-Register nonces: this tag in the top 12 bits, then a count of 1/1024 ms that only grows
#: (`XtrState.register_nonce`).  The Map-Server refuses one not after the last it accepted from
#: us (lisp_ryu.mapserver.freshness): a captured Map-Register cannot be replayed.
SEQUENCE_TAG = 0x4C5
SEQUENCE_SHIFT = 52
NOTIFY_TIMEOUT = 1.0  # first wait for a Map-Notify after a Map-Register; doubles per retry
#: The longest wait between Map-Registers to a map-server that does not answer (the back-off stops
#: here, or at `register_interval` if shorter): a restarted Map-Server hears from us within this.
REGISTER_RETRY_MAX = 4.0


def stable_id(name: str, bits: int) -> int:
    """A deterministic xTR-ID / site-ID from a name, so restarts keep their identity."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest(), "big") >> (256 - bits)


@dataclass(frozen=True)
class CachedMapping:
    """What the map-cache holds for a prefix: the record as received and who sent it."""

    record: MappingRecord
    source: str


@dataclass
class Resolution:
    """A Map-Request in flight for one destination, and the packets waiting for it."""

    iid: int
    destination: IPAddress
    nonce: int
    attempts: int
    retry_at: float
    source: IPAddress | None = None  # the host that asked, sent as the Map-Request's source EID
    smr_invoked: bool = False
    resolver: IPAddress | None = None  # where the last Map-Request for it went
    sent_at: float = 0.0  # when
    satisfied: bool = False  # answered by a publication before its Map-Reply came
    mask_len: int | None = None  # ask for this prefix of `destination` rather than the host alone
    held: deque = field(default_factory=lambda: deque(maxlen=HELD_PACKETS_PER_EID))


@dataclass
class Registration:
    """Our registration state with one map-server."""

    server: MapServerRef
    due: float  # next Map-Register
    nonce: int | None = None  # outstanding Map-Register awaiting its Map-Notify
    retry: float = NOTIFY_TIMEOUT
    registered: bool = False
    reachable: bool = True  # False from the first Map-Register left unanswered until a Map-Notify comes
    unanswered: int = 0  # Map-Registers in a row without a Map-Notify
    last_notify: float | None = None  # when the last Map-Notify for a registration came (the core's clock)
    since: float = 0.0  # when `reachable` last changed
    sent: float = 0.0  # when the outstanding Map-Register left
    pending: bool = False  # hosts changed while a Map-Register was outstanding: register again on its Map-Notify
    # What the map-server confirmed, EID-prefix -> locator addresses: a Map-Notify logs only what
    # differs, and a change of hosts registers only what it lacks (a departure takes its host out).
    confirmed: dict = field(default_factory=dict)
    partial: bool = False  # the outstanding Map-Register carries only changes (its Map-Notify adds to `confirmed`)
    refresh_due: float = 0.0  # the next periodic Map-Register of every record


@dataclass
class ResolverState:
    """What we know of one map-resolver: whether it answers, and its liveness probes while it does not.

    A resolver is down from the first Map-Request it left unanswered; it is
    then probed (`lisp_ryu.xtr.resolution`) and is up again when a probe is
    answered: at once if no probe ever failed (the silence was a forwarded
    request's ETR, not the resolver), else after answering for a hold-down.
    """

    address: IPAddress
    up: bool = True
    since: float = 0.0  # when `up` last changed
    timeouts: int = 0  # Map-Requests to it that went unanswered, in all
    probe_failed: bool = False  # a probe went unanswered since it went down
    answering_since: float | None = None  # first answered probe of the current run of answers
    probe_nonce: int | None = None  # the probe in flight
    probe_sent_at: float = 0.0
    probe_due: float = math.inf
    srtt: float | None = None  # smoothed time its answers took (RFC 6298's estimator); None: no sample yet
    rttvar: float = 0.0

    @property
    def state(self) -> str:
        if self.up:
            return "up"
        return "recovering" if self.answering_since is not None else "down"


@dataclass(frozen=True)
class Departure:
    """A local EID that the mapping system now places elsewhere (the workload moved)."""

    rloc: IPAddress
    until: float  # the redirect flow for it lives until then
    site: tuple = ()  # the RLOCs of the site it moved to, best first (`rloc` the first): the redirect fails over


@dataclass
class PlannedMove:
    """A planned move as one xTR takes part in it (draft-ietf-lisp-predictive-rlocs).

    As an ITR (`rlocs` set): send to the old and the new RLOC until the map-cache places the
    EID at `new_rloc` or `until`.  As the destination (`rlocs`: the old RLOC, if known): deliver
    the EID's traffic to `at` (the workload's port here, when the orchestrator named it) or else
    hold it (`held`: (arrival, packet)) until the workload is learned here or `until`.
    """

    new_rloc: IPAddress | None
    until: float
    rlocs: tuple = ()
    held: list = field(default_factory=list)
    at: LocalHost | None = None
    replicated_by: tuple = ()  # as the old site or the destination: the RLOCs of ITRs that replicate themselves
    # Per RLOC the move sends to (`rlocs`; `new_rloc` as the old site), its site's RLOCs best first:
    # the plan takes the first that probing does not call down, the switch the first BFD sees alive.
    sites: tuple = ()
    ask_at: float | None = None  # as the destination, with `at`: when the workload is next asked to answer
    asked: int = 0  # how often it was


class CountedDict(dict):
    """A dict that counts its changes (`version`), so what is built from it (the hosts here,
    the earliest deadline) is rebuilt when it changed, without an O(n) snapshot per question:
    a burst of 200 arrivals asks a few of them per arrival."""

    __slots__ = ("version",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.version = 0

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.version += 1

    def __delitem__(self, key) -> None:
        super().__delitem__(key)
        self.version += 1

    def pop(self, *args):
        self.version += 1
        return super().pop(*args)

    def popitem(self):
        self.version += 1
        return super().popitem()

    def setdefault(self, key, default=None):
        self.version += 1
        return super().setdefault(key, default)

    def update(self, *args, **kwargs) -> None:
        super().update(*args, **kwargs)
        self.version += 1

    def clear(self) -> None:
        super().clear()
        self.version += 1

    def __ior__(self, other):
        self.update(other)
        return self


def key_order(key: tuple) -> tuple:
    """(iid, address) -> a sort key: by instance-ID, family, then address, without formatting."""
    iid, ip = key
    return (iid, ip.version, int(ip))


def by_address(item: tuple) -> tuple:
    """((iid, address), value) -> `key_order` of its key."""
    return key_order(item[0])


def ip_locators(mapping: CachedMapping) -> tuple:
    """A cached mapping's IP locators, whatever their state: where its ETRs are (the map-cache counts them)."""
    return tuple(loc.address for loc in mapping.record.locators if isinstance(loc.address, IP_TYPES))


class XtrState:
    """The state every part reads; `nonce` is the core's, unique among everything awaiting an answer."""

    def __init__(self, config: XtrConfig, nonce: Callable[[], int], clock_offset: float = 0.0):
        self.config = config
        self.nonce = nonce
        #: Added to the core's `now` to get wall-clock time, so register nonces keep growing across
        #: restarts (the glue's monotonic clock restarts with the host).
        self.clock_offset = clock_offset
        self._last_register_nonce = 0
        self._log_budget: dict[str, int] = {}
        self.xtr_id = stable_id(f"xtr:{config.name}", 128)
        self.site_id = stable_id(f"site:{config.name}", 64)
        self.rlocs = tuple(r.address for r in config.rlocs)
        self.cache: MapCache[CachedMapping] = MapCache(locators=ip_locators)
        self.counters: dict[str, int] = {}
        self.resolutions: dict[tuple[int, IPAddress], Resolution] = {}
        self.by_nonce: dict[int, tuple[int, IPAddress]] = {}
        self.registrations = [Registration(ms, due=0.0) for ms in config.map_servers]
        #: The map-resolvers in order of preference; Map-Requests go to `resolvers[active_resolver]`.
        self.resolvers = [ResolverState(address) for address in config.map_resolvers]
        self.active_resolver = 0
        self.dynamic_hosts: CountedDict[tuple[int, IPAddress], LocalHost] = CountedDict()
        self._config_macs: tuple | None = None  # (config, MAC -> its hosts' keys): hosts_with_mac
        self.departed: CountedDict[tuple[int, IPAddress], Departure] = CountedDict()
        #: Configured hosts that left and whose redirect ended: not here until seen here again (learned).
        self.away: CountedDict[tuple[int, IPAddress], None] = CountedDict()
        #: Departures told directly (a controller driving both sites) whose SMRs wait for the mapping
        #: system to have the move: (when they go regardless, the new holders not to solicit).
        self.solicit_later: CountedDict[tuple[int, IPAddress], tuple[float, tuple[IPAddress, ...]]] = CountedDict()
        self._earliest_departure: tuple[tuple[int, int], float | None] | None = None  # see its method
        self.replicating: dict[tuple[int, IPAddress], PlannedMove] = {}  # planned moves, as an ITR
        self.expected: dict[tuple[int, IPAddress], PlannedMove] = {}  # planned moves towards us
        self.leaving: dict[tuple[int, IPAddress], PlannedMove] = {}  # planned moves of our hosts away
        self._local_records_cache: tuple[tuple, tuple[MappingRecord, ...]] | None = None
        self._local_hosts_cache: tuple[tuple, tuple[LocalHost, ...]] | None = None
        self._configured_cache: tuple | None = None
        self._host_records: tuple[XtrConfig | None, dict] = (None, {})  # see `host_record`

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def register_nonce(self, now: float) -> int:
        """The nonce of our next Map-Register: tagged, and greater than any before it (1/1024 ms
        steps of the wall clock; one step more than the last when the clock has not moved on)."""
        stamp = max(int((now + self.clock_offset) * 1000) << 10, 0) & ((1 << SEQUENCE_SHIFT) - 1)
        nonce = (SEQUENCE_TAG << SEQUENCE_SHIFT) | stamp
        nonce = max(nonce, self._last_register_nonce + 1)
        self._last_register_nonce = nonce
        return nonce

    def log_throttled(self, topic: str, level: int, message: str, *args: object) -> None:
        """Log the 1st, 2nd, 4th, 8th ... occurrence of a topic: a flood must not flood the log."""
        seen = self._log_budget.get(topic, 0) + 1
        self._log_budget[topic] = seen
        if seen & (seen - 1) == 0:
            LOG.log(level, message + (f" ({seen} so far)" if seen > 1 else ""), *args, stacklevel=2)

    def configured_hosts(self) -> frozenset[tuple[int, IPAddress]]:
        """(iid, address) of the configuration's hosts, here or departed; made once per configuration."""
        cached = self._configured_cache
        if cached is None or cached[0] is not self.config:
            cached = self._configured_cache = (self.config, frozenset((h.iid, h.ip) for h in self.config.hosts))
        return cached[1]

    def _hosts_here(self) -> tuple:
        """What decides the hosts here (the configuration, the learned and departed tables' versions):
        the key under which `local_hosts` and `local_records` keep what they built.  The key holds
        the configuration itself, so a new one cannot reuse the old one's id."""
        return (self.config, self.dynamic_hosts.version, self.departed.version, self.away.version)

    def earliest_departure_deadline(self) -> float | None:
        """The first of the redirects' ends and the waiting SMRs' fallbacks (None: none), kept
        until either table changes: the timer loop asks after every event."""
        departed, waiting = self.departed, self.solicit_later
        version = (departed.version, waiting.version)
        cached = self._earliest_departure
        if cached is None or cached[0] != version:
            cached = self._earliest_departure = (version, min(
                chain((d.until for d in departed.values()), (at for at, _ in waiting.values())), default=None))
        return cached[1]

    def local_hosts(self) -> tuple[LocalHost, ...]:
        """Configured and learned hosts that are here now (not departed or away), in address order.

        Rebuilt only when the hosts here change (`_hosts_here` is the key, as for
        `local_records`): a burst of arrivals asks for them once per arrival."""
        snapshot = self._hosts_here()
        cached = self._local_hosts_cache
        if cached is not None and cached[0] == snapshot:
            return cached[1]
        hosts = {(h.iid, h.ip): LocalHost(h.iid, h.ip, h.mac, h.port) for h in self.config.hosts}
        hosts.update(self.dynamic_hosts)
        gone = self.departed, self.away
        result = tuple(h for key, h in sorted(hosts.items(), key=by_address) if not any(key in g for g in gone))
        self._local_hosts_cache = (snapshot, result)
        return result

    def hosts_with_mac(self, mac: str) -> tuple[tuple[int, IPAddress], ...]:
        """(iid, address) of the hosts here now with this MAC (as `local_hosts` has them), in
        address order.  A scan of the tables, not `local_hosts`: that is rebuilt and sorted after
        every arrival or departure, and an evacuation asks this once per arrival of every xTR."""
        mac = mac.lower()
        macs = self._config_macs
        if macs is None or macs[0] is not self.config:
            by_mac: dict[str, list] = {}
            for h in self.config.hosts:
                by_mac.setdefault(h.mac.lower(), []).append((h.iid, h.ip))
            macs = self._config_macs = (self.config, by_mac)
        dynamic = self.dynamic_hosts
        found = [key for key in macs[1].get(mac, ()) if key not in dynamic]
        found += [key for key, h in dynamic.items() if h.mac.lower() == mac]
        departed, away = self.departed, self.away
        here = [key for key in found if key not in departed and key not in away]
        return tuple(sorted(here, key=key_order))

    def local_records(self) -> tuple[MappingRecord, ...]:
        """The site's EID prefixes, plus a host route for every host here now that they do not
        cover: learned (dynamic) EIDs, and configured hosts that moved in from elsewhere.

        Every forwarded Map-Request and probe asks for these, so they are rebuilt only
        when the hosts here change (keyed on `_hosts_here`).
        """
        snapshot = self._hosts_here()
        cached = self._local_records_cache
        if cached is not None and cached[0] == snapshot:
            return cached[1]
        records = self._build_local_records()
        self._local_records_cache = (snapshot, records)
        return records

    def host_record(self, iid: int, ip: IPAddress) -> MappingRecord:
        """The host route a learned host is registered with, as `local_records` holds it: made
        once per host and configuration, so a burst of arrivals does not rebuild every record
        once per arrival."""
        config, made = self._host_records
        if config is not self.config:
            made = {}
            self._host_records = (self.config, made)
        record = made.get((iid, ip))
        if record is None:
            record = made[(iid, ip)] = MappingRecord.for_prefix(
                EidPrefix(ip, ip.max_prefixlen, iid), self._local_locators(), ttl=self.config.record_ttl_minutes,
                authoritative=True)
        return record

    def _local_locators(self) -> tuple[Locator, ...]:
        return tuple(Locator(r.address, r.priority, r.weight, local=True, reachable=True) for r in self.config.rlocs)

    def _build_local_records(self) -> tuple[MappingRecord, ...]:
        cfg = self.config
        locators = self._local_locators()
        records = [MappingRecord.for_prefix(EidPrefix.from_network(p.prefix, p.iid), locators,
                                            ttl=cfg.record_ttl_minutes, authoritative=True) for p in cfg.eid_prefixes]
        dynamic = self.dynamic_hosts
        host_routes = [(h.iid, h.ip) for h in self.local_hosts()  # (in address order)
                       if (h.iid, h.ip) in dynamic
                       or not any(h.iid == p.iid and h.ip in p.prefix for p in cfg.eid_prefixes)]
        records += [self.host_record(iid, ip) for iid, ip in host_routes]
        config, made = self._host_records
        if len(made) > 2 * len(host_routes) + 64:  # hosts long gone: keep what is here
            kept = set(host_routes)
            self._host_records = (config, {k: r for k, r in made.items() if k in kept})
        return tuple(records)
