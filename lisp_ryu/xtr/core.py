"""The xTR control plane as a pure, sans-IO state machine.

One `XtrCore` per OVS switch.  It is driven by three calls, each taking
`now` (seconds on the glue's monotonic clock) and returning effects:

* `handle_miss`    a packet for an unknown destination reached the controller
* `handle_control` a LISP control datagram arrived on the xTR's RLOC, UDP 4342
* `handle_timer`   a deadline from `next_deadline()` has passed

and `plan()` describes the data plane it wants, for the flow compiler.

ITR: a miss starts a resolution (Map-Request in an ECM to the map-resolver),
holds a bounded number of packets, retries on silence, and on the Map-Reply
fills the map-cache and re-injects what it held.  Map-Requests carry our
xTR-ID so that a Map-Server that implements RFC 9437 can publish changes to
us with Map-Notify, which we apply and acknowledge; a Solicit-Map-Request
makes us re-resolve.

ETR: registers the site's EID prefixes with every map-server on start and
every `register_interval` (retrying with back-off until a Map-Notify
answers), and answers Map-Requests forwarded to it and RLOC probes with
its own mapping.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import random
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

from lisp_ryu.config import MapServerRef, XtrConfig
from lisp_ryu.effects import DataplaneChanged, Effect, PacketOut, SendControl
from lisp_ryu.flows.compiler import (
    DynamicPrefix,
    Gateway,
    HostPort,
    Proxy,
    LocalHost,
    Redirect,
    RemoteAction,
    RemoteEntry,
    Rloc,
    XtrPlan,
)
from lisp_ryu.mapping.mapcache import CacheEntry, MapCache
from lisp_ryu.mapping.sourcedest import SourceDestCache, SourceDestKey, record_key
from lisp_ryu.ratelimit import RateLimiter
from lisp_ryu.wire import LISP_CONTROL_PORT, auth
from lisp_ryu.wire.address import NO_ADDRESS
from lisp_ryu.wire.control import decode_message
from lisp_ryu.wire.ecm import EncapsulatedControlMessage
from lisp_ryu.wire.errors import LispDecodeError
from lisp_ryu.wire.messages import MapNotify, MapNotifyAck, MapRegister, MapReply, MapRequest
from lisp_ryu.wire.prefix import EidPrefix
from lisp_ryu.wire.records import Action, Locator, MappingRecord, MapRequestRecord
from lisp_ryu.xtr.probing import ProbeSettings, RlocTracker

LOG = logging.getLogger("lisp_ryu.xtr")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IP_TYPES = (ipaddress.IPv4Address, ipaddress.IPv6Address)  # EIDs and RLOCs the data plane can use

REQUEST_TIMEOUT = 1.0  # seconds before a Map-Request is sent again
REQUEST_ATTEMPTS = 3
FAILED_HOLD_DOWN = 5.0  # after a resolution gave up, misses for it are dropped this long
HELD_PACKETS_PER_EID = 16
MAX_PENDING = 4096  # resolutions in flight; beyond this, misses are dropped and counted
NOTIFY_TIMEOUT = 1.0  # first wait for a Map-Notify after a Map-Register; doubles per retry
SMR_HOLD_DOWN = 1.0  # at most one re-resolution per entry per second, however many SMRs arrive
ADOPTED_TTL = 60.0  # how long a mapping read back from the switch lives unless re-resolved
REDIRECT_LIFETIME = 60.0  # how long a departed EID's traffic is tunnelled on from its old site


def _action_of(action: Action) -> RemoteAction:
    if action == Action.NATIVELY_FORWARD:
        return RemoteAction.NATIVE_FORWARD
    if action == Action.SEND_MAP_REQUEST:
        return RemoteAction.SEND_MAP_REQUEST
    if action in (Action.DROP_NO_REASON, Action.DROP_POLICY_DENIED, Action.DROP_AUTH_FAILURE):
        return RemoteAction.DROP
    return RemoteAction.NATIVE_FORWARD  # No-Action on a negative entry: RFC 9301 says forward natively


def stable_id(name: str, bits: int) -> int:
    """A deterministic xTR-ID / site-ID from a name, so restarts keep their identity."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest(), "big") >> (256 - bits)


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


@dataclass(frozen=True)
class Departure:
    """A local EID that the mapping system now places elsewhere (the workload moved)."""

    rloc: IPAddress
    until: float  # the redirect flow for it lives until then


@dataclass(frozen=True)
class CachedMapping:
    """What the map-cache holds for a prefix: the record as received and who sent it."""

    record: MappingRecord
    source: str


class XtrCore:
    def __init__(self, config: XtrConfig, *, nonces: Callable[[], int], rng: random.Random | None = None):
        self.config = config
        self._nonces = nonces
        self.xtr_id = stable_id(f"xtr:{config.name}", 128)
        self.site_id = stable_id(f"site:{config.name}", 64)
        self.cache: MapCache[CachedMapping] = MapCache()
        # Source-specific mappings (Source/Dest-key records), by destination then source prefix.
        self.sd_cache: SourceDestCache[CachedMapping] = SourceDestCache()
        # Nonces of our recent Map-Requests: a Map-Notify with one of them confirms a subscription
        # (RFC 9437) rather than publishing a change.
        self._request_nonces: OrderedDict[int, None] = OrderedDict()
        self.resolutions: dict[tuple[int, IPAddress], Resolution] = {}
        self._by_nonce: dict[int, tuple[int, IPAddress]] = {}
        self._failed: dict[tuple[int, IPAddress], float] = {}
        self._smr_seen: dict[tuple[int, str], float] = {}
        self.registrations = [Registration(ms, due=0.0) for ms in config.map_servers]
        self.counters: dict[str, int] = {}
        self._rlocs = tuple(r.address for r in config.rlocs)
        self.dynamic_hosts: dict[tuple[int, IPAddress], LocalHost] = {}
        self.departed: dict[tuple[int, IPAddress], Departure] = {}
        self._local_records_cache: tuple[tuple, tuple[MappingRecord, ...]] | None = None
        probing = config.rloc_probing
        self.health = RlocTracker(
            ProbeSettings(probing.interval, probing.jitter, probing.misses, probing.timeout),
            rng if rng is not None else random.Random(self.xtr_id))  # jitter only: need not be secret
        self._probe_targets_stale = True
        self._probe_answers = RateLimiter(probing.answer_rate, probing.answer_burst, max_sources=4096)
        self._probe_answers_total = RateLimiter(probing.answer_rate_total, probing.answer_rate_total)

    # ---- bookkeeping -----------------------------------------------------------

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def _nonce(self) -> int:
        nonce = self._nonces()
        while (nonce in self._by_nonce or any(r.nonce == nonce for r in self.registrations)
               or nonce in self.health.outstanding()):
            nonce = self._nonces()
        return nonce

    # ---- the desired data plane ------------------------------------------------------

    def plan(self) -> XtrPlan:
        cfg = self.config
        remotes = []
        for entry in self.cache:
            prefix = entry.value.record.eid_prefix
            if not isinstance(prefix.address, IP_TYPES):
                continue  # MAC EIDs have no L3 flows yet
            remotes.append(self._remote_entry(entry, prefix.network))
        for dest, entry in self.sd_cache:
            remotes.append(self._remote_entry(entry, dest, source=entry.eid))  # type: ignore[arg-type]
        return XtrPlan(
            tunnel_port=cfg.tunnel_port,
            host_ports=tuple(HostPort(p.port, p.iid) for p in cfg.host_ports),
            hosts=self.local_hosts(),
            gateways=tuple(Gateway(g.iid, g.subnet, g.ip, g.mac) for g in cfg.gateways),
            remotes=tuple(remotes),
            dynamic_prefixes=tuple(DynamicPrefix(d.iid, d.prefix) for d in cfg.dynamic_eid_prefixes),
            redirects=tuple(Redirect(iid, ip, d.rloc) for (iid, ip), d in sorted(self.departed.items(), key=str)),
            tunnel_source=self._rlocs[0],
            petr=cfg.petr,
            native_port=cfg.native_port,
            proxy=None if cfg.proxy is None else Proxy(cfg.proxy.iid, cfg.proxy.prefixes, cfg.proxy.next_hop_mac,
                                                        cfg.proxy.address),
        )

    def _remote_entry(self, entry: CacheEntry[CachedMapping], prefix: ipaddress.IPv4Network | ipaddress.IPv6Network,
                      source: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None) -> RemoteEntry:
        record = entry.value.record
        if entry.negative:
            return RemoteEntry(entry.iid, prefix, _action_of(record.action), source=source)
        rlocs = tuple(
            Rloc(loc.address, loc.priority, loc.weight)
            for loc in record.locators
            if loc.reachable and isinstance(loc.address, IP_TYPES)
        )
        # Probed-down RLOCs leave the entry, so the compiler's best-priority choice moves on
        # to the next priority (or renormalises the weights of the rest).  When every one is
        # down we keep them all: nothing better exists, and a peer that never answers
        # probes must not lose its traffic.
        live = tuple(r for r in rlocs if self.health.is_up(r.address))
        return RemoteEntry(entry.iid, prefix, RemoteAction.ENCAP, live or rlocs, source=source)

    def lookup(self, iid: int, source: IPAddress | None, destination: IPAddress,
               now: float) -> CacheEntry[CachedMapping] | None:
        """The live map-cache entry the data plane applies to (source, destination), as the flows do.

        Longest destination prefix first, then longest source prefix; a
        destination known only source-specifically answers None for a source
        outside every cached source prefix (that host must ask for itself).
        """
        plain = self.cache.lookup(iid, destination, now)
        found = self.sd_cache.lookup(iid, source, destination, now) if source is not None and self.sd_cache else None
        if found is None:
            return plain
        dest, entry = found
        if plain is not None and plain.eid.prefixlen > dest.prefixlen:  # type: ignore[union-attr]
            return plain
        if entry is not None:
            return entry
        return plain if plain is not None and plain.eid == dest else None

    def local_hosts(self) -> tuple[LocalHost, ...]:
        """Configured and learned hosts that are here now (not departed)."""
        hosts = {(h.iid, h.ip): LocalHost(h.iid, h.ip, h.mac, h.port) for h in self.config.hosts}
        hosts.update(self.dynamic_hosts)
        return tuple(h for key, h in sorted(hosts.items(), key=str) if key not in self.departed)

    # ---- timers ------------------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        """Register at once and install the local data plane."""
        effects: list[Effect] = [DataplaneChanged("local EIDs and gateways")]
        effects += self.handle_timer(now)
        return effects

    def next_deadline(self) -> float | None:
        deadlines = [r.due for r in self.registrations]
        deadlines += [r.retry_at for r in self.resolutions.values()]
        deadlines += [d.until for d in self.departed.values()]
        probe_deadline = self.health.next_deadline()
        if probe_deadline is not None:
            deadlines.append(probe_deadline)
        cache_deadline = self.cache.next_deadline()
        if cache_deadline is not None:
            deadlines.append(cache_deadline)
        sd_deadline = self.sd_cache.next_deadline()
        if sd_deadline is not None:
            deadlines.append(sd_deadline)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for reg in self.registrations:
            if reg.due <= now:
                effects += self._register(reg, now)
        for key, res in list(self.resolutions.items()):
            if res.retry_at <= now:
                effects += self._retry(key, res, now)
        expired = self.cache.expire(now)
        for entry in expired:
            LOG.info("%s: map-cache entry [%d]%s expired", self.config.name, entry.iid, entry.eid)
        for dest, sd_entry in self.sd_cache.expire(now):
            LOG.info("%s: map-cache entry [%d](%s -> %s) expired", self.config.name, sd_entry.iid, sd_entry.eid, dest)
            expired.append(sd_entry)
        if expired:
            self.count("map_cache_expired", len(expired))
            effects.append(DataplaneChanged(f"{len(expired)} map-cache entries expired"))
        for key, until in list(self._failed.items()):
            if until <= now:
                del self._failed[key]
        ended = [key for key, d in self.departed.items() if d.until <= now]
        for key in ended:
            del self.departed[key]
            LOG.info("%s: redirect for [%d]%s ended", self.config.name, *key)
        if ended:
            effects.append(DataplaneChanged(f"{len(ended)} redirects ended"))
        if expired:
            self._probe_targets_stale = True
        effects += self._probe(now)
        return effects

    # ---- RLOC probing (RFC 9301 §7.1) ---------------------------------------------------

    def _sync_probe_targets(self, now: float) -> None:
        """Watch the remote RLOCs the map-cache uses, each with a prefix it serves."""
        if not self._probe_targets_stale:
            return
        self._probe_targets_stale = False
        if not self.config.rloc_probing.enabled:
            return
        targets: dict[IPAddress, EidPrefix] = {}
        for entry in self.cache:
            if entry.negative:
                continue
            record = entry.value.record
            for loc in record.locators:
                if (loc.reachable and loc.priority != 255 and loc.address not in self._rlocs
                        and isinstance(loc.address, IP_TYPES)):
                    old = self.health.get(loc.address)
                    if loc.address not in targets or (old is not None and old.eid == record.eid_prefix):
                        targets[loc.address] = record.eid_prefix  # keep the prefix a tracked RLOC had
        for dest, sd_entry in self.sd_cache:  # RLOCs only source-specific entries use: probe for the destination
            for loc in sd_entry.value.record.locators if not sd_entry.negative else ():
                if (loc.reachable and loc.priority != 255 and loc.address not in self._rlocs
                        and isinstance(loc.address, IP_TYPES)
                        and loc.address not in targets):
                    targets[loc.address] = EidPrefix.from_network(dest, sd_entry.iid)
        self.health.track(targets, now)

    def _probe(self, now: float) -> list[Effect]:
        """Send the probes that are due; recompile when an RLOC went down or came back."""
        self._sync_probe_targets(now)
        if not self.config.rloc_probing.enabled:
            return []
        transitions, probes = self.health.poll(now, self._nonce)
        effects: list[Effect] = []
        for probe in probes:
            request = MapRequest(nonce=probe.nonce, probe=True, records=(MapRequestRecord.for_prefix(probe.eid),),
                                 itr_rlocs=self._rlocs)
            effects.append(SendControl(probe.rloc, LISP_CONTROL_PORT, request.encode(),
                                       f"RLOC-probe of {probe.rloc} for {probe.eid}"))
        self.count("rloc_probe_sent", len(probes))
        for t in transitions:
            LOG.warning("%s: RLOC %s is down (%s)", self.config.name, t.rloc, t.reason)
        if transitions:
            effects.insert(0, DataplaneChanged(", ".join(f"RLOC {t.rloc} down" for t in transitions)))
        return effects

    def _on_probe_reply(self, reply: MapReply, source: IPAddress, now: float) -> list[Effect]:
        """Only the RLOC's liveness is taken from a probe reply, never its records."""
        self.count("probe_reply_received")
        transition = self.health.on_reply(reply.nonce, now)
        if transition is None:
            return []
        LOG.info("%s: RLOC %s is up again (%s, reply from %s)", self.config.name, transition.rloc,
                 transition.reason, source)
        return [DataplaneChanged(f"RLOC {transition.rloc} up")]

    # ---- ETR: registration ----------------------------------------------------------------

    def local_records(self) -> tuple[MappingRecord, ...]:
        """The site's EID prefixes, plus a host route for every host here now that they do not
        cover: learned (dynamic) EIDs, and configured hosts that moved in from elsewhere.

        Every forwarded Map-Request and probe asks for these, so they are rebuilt only
        when the hosts here change (keyed on a snapshot of them, which cannot go stale).
        """
        snapshot = (frozenset(self.dynamic_hosts.items()), frozenset(self.departed))
        cached = self._local_records_cache
        if cached is not None and cached[0] == snapshot:
            return cached[1]
        records = self._build_local_records()
        self._local_records_cache = (snapshot, records)
        return records

    def _build_local_records(self) -> tuple[MappingRecord, ...]:
        cfg = self.config
        locators = tuple(Locator(r.address, r.priority, r.weight, local=True, reachable=True) for r in cfg.rlocs)
        prefixes = [EidPrefix.from_network(p.prefix, p.iid) for p in cfg.eid_prefixes]
        dynamic = set(self.dynamic_hosts)
        host_routes = {(h.iid, h.ip) for h in self.local_hosts()
                       if (h.iid, h.ip) in dynamic
                       or not any(h.iid == p.iid and h.ip in p.prefix for p in cfg.eid_prefixes)}
        prefixes += [EidPrefix(ip, ip.max_prefixlen, iid) for (iid, ip) in sorted(host_routes, key=str)]
        return tuple(MappingRecord.for_prefix(p, locators, ttl=cfg.record_ttl_minutes, authoritative=True)
                     for p in prefixes)

    def _register(self, reg: Registration, now: float) -> list[Effect]:
        records = self.local_records()
        if not records:
            reg.due = math.inf
            return []
        if reg.nonce is not None and not reg.registered:
            reg.retry = min(reg.retry * 2, self.config.register_interval)  # no Map-Notify came: back off
        nonce = self._nonce()
        message = MapRegister(
            nonce=nonce, records=records, key_id=0, proxy_map_reply=self.config.proxy_reply,
            want_map_notify=True, xtr_id=self.xtr_id, site_id=self.site_id,
        )
        message = auth.sign(message, reg.server.key, reg.server.algorithm_id)
        reg.nonce = nonce
        reg.registered = False
        reg.due = now + reg.retry
        self.count("map_register_sent")
        what = f"Map-Register of {', '.join(str(r.eid_prefix) for r in records)}"
        return [SendControl(reg.server.address, reg.server.port, message.encode(), what)]

    def _on_register_notify(self, reg: Registration, notify: MapNotify, now: float) -> None:
        reg.registered = True
        reg.nonce = None
        reg.retry = NOTIFY_TIMEOUT
        reg.due = now + self.config.register_interval
        self.count("map_notify_for_register")
        for record in notify.records:
            LOG.info("%s: registered %s -> %s with %s", self.config.name, record.eid_prefix,
                     ", ".join(str(loc.address) for loc in record.locators), reg.server.address)

    # ---- mobility: dynamic EIDs ------------------------------------------------------------

    def handle_host_seen(self, in_port: int, source: IPAddress, mac: str, packet: bytes,
                         now: float) -> list[Effect]:
        """A packet from an unknown source inside a dynamic-EID prefix: a workload arrived.

        Learn it (IP, MAC, port), install its local flows, register it as a
        host route with every map-server at once, and re-inject the packet.
        """
        dyn = next((d for d in self.config.dynamic_eid_prefixes
                    if d.prefix.version == source.version and source in d.prefix), None)
        if dyn is None:
            self.count("learn_outside_dynamic_prefixes")
            return []
        key = (dyn.iid, source)
        host = LocalHost(dyn.iid, source, mac, in_port)
        if self.dynamic_hosts.get(key) == host and key not in self.departed:
            self.count("learn_already_known")
            return [PacketOut(in_port, packet)]
        self.departed.pop(key, None)
        self.dynamic_hosts[key] = host
        host_route = ipaddress.ip_network(source)
        if self.cache.get(dyn.iid, host_route) is not None:
            self.cache.remove(dyn.iid, host_route)  # what we knew of it while it was away
            self._probe_targets_stale = True
        self.count("dynamic_eid_learned")
        LOG.info("%s: dynamic EID [%d]%s (%s) arrived on port %d", self.config.name, dyn.iid, source, mac, in_port)
        effects: list[Effect] = [DataplaneChanged(f"dynamic EID {source} arrived")]
        for reg in self.registrations:
            effects += self._register(reg, now)
        effects.append(PacketOut(in_port, packet))
        return effects

    def _depart(self, key: tuple[int, IPAddress], record: MappingRecord, now: float) -> list[Effect]:
        """The mapping system moved one of our EIDs elsewhere: stop serving it, redirect, solicit."""
        rlocs = [loc.address for loc in record.locators if loc.reachable and loc.priority != 255
                 and isinstance(loc.address, IP_TYPES)]
        if not rlocs:
            return []
        iid, ip = key
        self.departed[key] = Departure(rlocs[0], now + REDIRECT_LIFETIME)
        self.dynamic_hosts.pop(key, None)
        self.count("dynamic_eid_departed")
        LOG.info("%s: EID [%d]%s moved to %s: redirecting for %.0f s", self.config.name, iid, ip, rlocs[0],
                 REDIRECT_LIFETIME)
        return self._solicit(EidPrefix(ip, ip.max_prefixlen, iid))

    def _solicit(self, eid: EidPrefix) -> list[Effect]:
        """Solicit-Map-Requests to every ITR we talk to, so those without a subscription re-resolve.

        The ITRs sending to a workload are, for two-way traffic, the RLOCs our
        own map-cache holds (RFC 9301 §6.1: SMRs go to the locators in the map-cache).
        """
        targets = sorted({loc.address for entry in self.cache if not entry.negative
                          for loc in entry.value.record.locators
                          if isinstance(loc.address, IP_TYPES)
                          and loc.address not in self._rlocs}, key=str)
        effects: list[Effect] = []
        for rloc in targets:
            smr = MapRequest(nonce=self._nonce(), smr=True, records=(MapRequestRecord.for_prefix(eid),),
                             itr_rlocs=self._rlocs, source_eid=eid.to_wire()[1])
            effects.append(SendControl(rloc, LISP_CONTROL_PORT, smr.encode(), f"SMR for {eid}"))
        self.count("smr_sent", len(effects))
        return effects

    # ---- restarts -------------------------------------------------------------------------

    def adopt(self, entries: list[RemoteEntry], now: float) -> list[Effect]:
        """Take over mappings the switch still forwards with (after a controller restart).

        They go into the map-cache as they are, so the data plane stays
        untouched, and each is re-resolved at once; the answer replaces it.
        """
        effects: list[Effect] = []
        for entry in entries:
            if self.cache.get(entry.iid, entry.prefix) is not None:
                continue
            locators = tuple(Locator(r.address, r.priority, r.weight) for r in entry.rlocs)
            action = Action.NO_ACTION if locators else Action.DROP_NO_REASON
            record = MappingRecord.for_prefix(EidPrefix.from_network(entry.prefix, entry.iid), locators,
                                              ttl=1, action=action)
            self.cache.insert(entry.iid, entry.prefix, CachedMapping(record, "adopted from the switch"),
                              now=now, ttl=ADOPTED_TTL, action=None if locators else Action.DROP_NO_REASON)
            self.count("map_cache_adopted")
            # Ask for (and subscribe to) the whole prefix, so news about any host route inside
            # it reaches us, as it would have through the subscriptions lost with the restart.
            effects += self.resolve(entry.iid, entry.prefix.network_address, now, mask_len=entry.prefix.prefixlen)
        self._probe_targets_stale = True
        self._sync_probe_targets(now)
        return effects

    # ---- ITR: resolution ----------------------------------------------------------------------

    def handle_miss(self, in_port: int, iid: int, source: IPAddress, destination: IPAddress, packet: bytes,
                    now: float) -> list[Effect]:
        """A packet missed every encap flow: resolve its destination, hold the packet."""
        self.count("miss")
        key = (iid, destination)
        entry = self.lookup(iid, source, destination, now)
        if entry is not None:
            # The flow is there or on its way (a race with a just-answered reply): just re-inject.
            self.count("miss_already_resolved")
            return [PacketOut(in_port, packet)]
        res = self.resolutions.get(key)
        if res is not None:
            res.held.append((in_port, packet))
            self.count("miss_held")
            return []
        if self._failed.get(key, -math.inf) > now:
            self.count("miss_dropped_hold_down")
            return []
        if len(self.resolutions) >= MAX_PENDING:
            self.count("miss_dropped_too_many_pending")
            return []
        res = Resolution(iid, destination, self._nonce(), attempts=0, retry_at=now, source=source)
        res.held.append((in_port, packet))
        self.resolutions[key] = res
        self._by_nonce[res.nonce] = key
        return self._send_request(res, now)

    def resolve(self, iid: int, destination: IPAddress, now: float, smr_invoked: bool = False,
                mask_len: int | None = None) -> list[Effect]:
        """Ask for a mapping without a packet (SMR, refresh); `mask_len` asks for a whole prefix."""
        key = (iid, destination)
        if key in self.resolutions:
            return []
        res = Resolution(iid, destination, self._nonce(), attempts=0, retry_at=now, smr_invoked=smr_invoked,
                         mask_len=mask_len)
        self.resolutions[key] = res
        self._by_nonce[res.nonce] = key
        return self._send_request(res, now)

    def _send_request(self, res: Resolution, now: float) -> list[Effect]:
        if not self.config.map_resolvers:
            return []
        res.attempts += 1
        res.retry_at = now + REQUEST_TIMEOUT
        host_len = 32 if res.destination.version == 4 else 128
        eid = EidPrefix(res.destination, host_len if res.mask_len is None else res.mask_len, res.iid)
        source_eid = NO_ADDRESS
        if res.source is not None and res.source.version == res.destination.version:
            source_eid = EidPrefix(res.source, host_len, res.iid).to_wire()[1]
        # The ECM's inner header goes from us to the EID asked for (RFC 9301 §5.8): from
        # an RLOC of the EID's family, else from the asking host.
        inner_source = next((r for r in self._rlocs if r.version == res.destination.version), res.source)
        if inner_source is None:
            self.count("map_request_no_inner_source")
            return []
        request = MapRequest(
            nonce=res.nonce,
            records=(MapRequestRecord.for_prefix(eid, notify_requested=True),),  # subscribe (RFC 9437)
            itr_rlocs=self._rlocs,
            source_eid=source_eid,
            smr_invoked=res.smr_invoked,
            pitr=self.config.proxy is not None,  # RFC 9301: a proxy-ITR says so
            xtr_id=self.xtr_id,
            site_id=self.site_id,
        )
        self._request_nonces[res.nonce] = None
        while len(self._request_nonces) > MAX_PENDING:
            self._request_nonces.popitem(last=False)
        resolver = self.config.map_resolvers[(res.attempts - 1) % len(self.config.map_resolvers)]
        ecm = EncapsulatedControlMessage(
            message=request, inner_source=inner_source, inner_destination=res.destination,
            inner_source_port=LISP_CONTROL_PORT,
        )
        self.count("map_request_sent")
        return [SendControl(resolver, LISP_CONTROL_PORT, ecm.encode(), f"Map-Request for {eid}")]

    def _retry(self, key: tuple[int, IPAddress], res: Resolution, now: float) -> list[Effect]:
        if res.satisfied:  # a publication answered it; its Map-Reply did not come, nothing is missing
            del self.resolutions[key]
            self._by_nonce.pop(res.nonce, None)
            return []
        if res.attempts >= REQUEST_ATTEMPTS:
            del self.resolutions[key]
            self._by_nonce.pop(res.nonce, None)
            self._failed[key] = now + FAILED_HOLD_DOWN
            self.count("resolution_failed")
            self.count("held_packets_dropped", len(res.held))
            LOG.warning("%s: no Map-Reply for [%d]%s after %d attempts", self.config.name, res.iid,
                        res.destination, res.attempts)
            return []
        self.count("map_request_retry")
        return self._send_request(res, now)

    def _on_map_reply(self, reply: MapReply, source: IPAddress, now: float) -> list[Effect]:
        key = self._by_nonce.pop(reply.nonce, None)
        if key is None:
            self.count("map_reply_unknown_nonce")
            return []
        res = self.resolutions.pop(key)
        effects: list[Effect] = []
        changed = False
        for record in reply.records:
            sd_key = record_key(record)
            if sd_key is not None:
                changed |= self._cache_source_specific(record, sd_key, str(source), now)
                continue
            try:
                prefix = record.eid_prefix
            except LispDecodeError:
                self.count("map_reply_bad_record")
                continue
            changed |= self._cache_record(record, prefix, str(source), now)
        if changed:
            effects.append(DataplaneChanged(f"Map-Reply for [{res.iid}]{res.destination}"))
            self._probe_targets_stale = True
            self._sync_probe_targets(now)
        self.count("map_reply_received")
        # Held packets go back after the flows (the glue applies DataplaneChanged first).
        effects += [PacketOut(port, packet) for port, packet in res.held]
        self.count("held_packets_reinjected", len(res.held))
        return effects + self._release_resolved(now)

    def _release_resolved(self, now: float) -> list[Effect]:
        """Re-inject what pending resolutions hold once the map-cache covers their destination.

        A Map-Reply may cover other pending destinations, and the Map-Server's
        subscription Map-Notify often arrives before the Map-Reply itself.  A
        resolution answered that way stays (marked satisfied) until its own
        Map-Reply, so that reply is still recognised by its nonce.
        """
        effects: list[Effect] = []
        for res in self.resolutions.values():
            if res.held and self.lookup(res.iid, res.source, res.destination, now) is not None:
                effects += [PacketOut(port, packet) for port, packet in res.held]
                self.count("held_packets_reinjected", len(res.held))
                res.held.clear()
                res.satisfied = True
        return effects

    def _cache_record(self, record: MappingRecord, prefix: EidPrefix, source: str, now: float) -> bool:
        """Store one record; True when the data plane must change."""
        if not isinstance(prefix.address, IP_TYPES):
            self.count("record_not_ip")
            return False
        network, iid = prefix.network, prefix.instance_id
        old = self.cache.get(iid, network)
        # A plain answer says no source-specific entry at or inside it holds any more.
        superseded = bool(self.sd_cache) and bool(self.sd_cache.remove_within(iid, network))
        if record.ttl == 0:
            if old is not None:
                self.cache.remove(iid, network)
                return True
            return superseded
        ttl = math.inf if record.ttl == 0xFFFFFFFF else record.ttl * 60.0
        action = None if record.locators else record.action
        self.cache.insert(iid, network, CachedMapping(record, source), now=now, ttl=ttl, action=action)
        if old is None or old.value.record != record:
            LOG.info("%s: map-cache %s -> %s", self.config.name, prefix,
                     ", ".join(f"{l.address} p{l.priority} w{l.weight}" for l in record.locators)
                     or f"negative ({record.action.name})")
            return True
        return superseded

    def _forget_source_specific(self, notify: MapNotify) -> bool:
        """Before a publication's Source/Dest-key records are stored: drop every source-specific
        entry at or inside their destinations; True if there was any.

        The Map-Server shapes a publication for the hosts it knows asked from
        behind us (its last few), so entries of other hosts for the same
        destination may be stale: they go, and those hosts ask again on their
        next packet.  The records of the publication are then stored as they
        come, all of them (withdrawals stay withdrawn).
        """
        dests = {(key.iid, key.dest) for key in map(record_key, notify.records) if key is not None}
        return any([self.sd_cache.remove_within(iid, dest) for iid, dest in dests])

    def _cache_source_specific(self, record: MappingRecord, key: SourceDestKey, source: str, now: float) -> bool:
        """Store one Source/Dest-key record; True when the data plane must change.

        The destination is now source-specific for us, so plain entries at or
        inside it would answer for every host: they go.
        """
        changed = False
        for stale in self.cache.within(key.iid, key.dest):
            self.cache.remove(stale.iid, stale.eid)
            changed = True
        old = self.sd_cache.get(key)
        if record.ttl == 0:
            return self.sd_cache.remove(key) is not None or changed
        ttl = math.inf if record.ttl == 0xFFFFFFFF else record.ttl * 60.0
        action = None if record.locators else record.action
        self.sd_cache.insert(key, CachedMapping(record, source), now=now, ttl=ttl, action=action)
        if old is None or old.value.record != record:
            LOG.info("%s: map-cache %s -> %s", self.config.name, key,
                     ", ".join(f"{l.address} p{l.priority} w{l.weight}" for l in record.locators)
                     or f"negative ({record.action.name})")
            changed = True
        return changed

    # ---- incoming control messages -------------------------------------------------------------

    def handle_control(self, payload: bytes, source: IPAddress, port: int, now: float,
                       destination: IPAddress | None = None) -> list[Effect]:
        """A datagram from `source`:`port`; `destination` is the local address it was sent to."""
        try:
            message = decode_message(payload)
        except LispDecodeError as exc:
            self.count("decode_errors")
            LOG.warning("%s: dropped bad datagram from %s:%d: %s", self.config.name, source, port, exc)
            return []
        reply_port = port
        if isinstance(message, EncapsulatedControlMessage):
            reply_port = message.inner_source_port
            message = message.message
        if isinstance(message, MapReply):
            if message.probe:
                return self._on_probe_reply(message, source, now)
            return self._on_map_reply(message, source, now)
        if isinstance(message, MapNotifyAck):
            self.count("unexpected_map_notify_ack")
            return []
        if isinstance(message, MapNotify):
            return self._on_map_notify(payload, message, source, port, now)
        if isinstance(message, MapRequest):
            if message.probe and not message.smr:
                return self._on_probe(message, source, reply_port, destination, now)
            return self._on_map_request(message, source, reply_port, now)
        self.count(f"unexpected_{type(message).__name__}")
        return []

    def _server_for(self, source: IPAddress) -> Registration | None:
        return next((r for r in self.registrations if r.server.address == source), None)

    def _on_map_notify(self, payload: bytes, notify: MapNotify, source: IPAddress, port: int,
                       now: float) -> list[Effect]:
        reg = self._server_for(source)
        if reg is None:
            self.count("map_notify_from_unknown_source")
            return []
        if not auth.verify(payload, reg.server.key):
            self.count("map_notify_bad_auth")
            LOG.warning("%s: Map-Notify from %s failed authentication", self.config.name, source)
            return []
        if notify.nonce == reg.nonce:
            self._on_register_notify(reg, notify, now)
            return []
        # A publication (RFC 9437) for EIDs we asked for, or news that one of ours moved away.
        self.count("map_notify_publication")
        changed = False
        effects: list[Effect] = []
        local = {(h.iid, h.ip) for h in self.local_hosts()}
        confirmation = notify.nonce in self._request_nonces or notify.nonce in self._by_nonce
        if not confirmation:
            changed |= self._forget_source_specific(notify)
        for record in notify.records:
            sd_key = record_key(record)
            if sd_key is not None:
                if not any(loc.address in self._rlocs for loc in record.locators):
                    changed |= self._cache_source_specific(record, sd_key, str(source), now)
                continue
            try:
                prefix = record.eid_prefix
            except LispDecodeError:
                self.count("map_notify_bad_record")
                continue
            if any(loc.address in self._rlocs for loc in record.locators):
                continue  # our own mapping, as the map-server holds it
            if not isinstance(prefix.address, IP_TYPES):
                continue
            key = (prefix.instance_id, prefix.address)
            if prefix.mask_len == prefix.address.max_prefixlen and key in local:
                effects += self._depart(key, record, now)
                changed = True
            changed |= self._cache_record(record, prefix, str(source), now)
        ack = MapNotifyAck(nonce=notify.nonce, records=notify.records, key_id=notify.key_id,
                           xtr_id=notify.xtr_id, site_id=notify.site_id)
        algorithm = notify.algorithm_id if notify.algorithm_id in auth.DIGEST_LENGTHS else reg.server.algorithm_id
        ack = auth.sign(ack, reg.server.key, algorithm)
        effects.insert(0, SendControl(source, port, ack.encode(), "Map-Notify-Ack"))
        if changed:
            effects.insert(0, DataplaneChanged("Map-Notify publication"))
            self._probe_targets_stale = True
            self._sync_probe_targets(now)
            effects += self._release_resolved(now)
        return effects

    def _on_map_request(self, request: MapRequest, source: IPAddress, reply_port: int,
                        now: float) -> list[Effect]:
        if request.smr:
            return self._on_smr(request, now)
        # We are the ETR: answer for our own prefixes (forwarded requests; probes: `_on_probe`).
        records = []
        for rec in request.records:
            try:
                asked = rec.eid_prefix
            except LispDecodeError:
                self.count("map_request_bad_record")
                continue
            mine = next((r for r in self.local_records() if _covers(r.eid_prefix, asked)), None)
            if mine is not None:
                records.append(mine)
        if not records:
            self.count("map_request_not_ours")
            return []
        itr = next((r for r in request.itr_rlocs if isinstance(r, IP_TYPES)
                    and r.version == self._rlocs[0].version), None)
        if itr is None:
            self.count("map_request_no_usable_itr_rloc")
            return []
        reply = MapReply(nonce=request.nonce, records=tuple(records))
        self.count("map_request_answered")
        return [SendControl(itr, reply_port, reply.encode(), f"Map-Reply for {records[0].eid_prefix}")]

    def _on_probe(self, request: MapRequest, source: IPAddress, reply_port: int, destination: IPAddress | None,
                  now: float) -> list[Effect]:
        """Answer an RLOC-probe, and only when that gives nothing away.

        * It must be addressed to one of our RLOCs (`destination`, from the
          socket it arrived on; None only where the caller cannot tell).
        * The reply goes back to the probe's source, which must be one of its
          ITR-RLOCs: we never send a reply to a third party (no reflection).
        * Rate-limited per requester and in total.
        * It names exactly a prefix we register: a prober learns that the
          mapping it already holds is alive, never a more-specific, a
          covering prefix, another instance-ID or another EID we serve.
        """
        if destination is not None and destination not in self._rlocs:
            self.count("probe_not_for_local_rloc")
            return []
        if source not in request.itr_rlocs:
            self.count("probe_source_not_an_itr_rloc")
            return []
        if not self._probe_answers.allow(source, now) or not self._probe_answers_total.allow("all", now):
            self.count("probe_rate_limited")
            return []
        probed = destination if destination is not None else self._rlocs[0]
        ours = {r.eid_prefix: r for r in self.local_records()}
        records = []
        for rec in request.records:
            try:
                mine = ours.get(rec.eid_prefix)
            except LispDecodeError:
                self.count("probe_bad_record")
                continue
            if mine is None:
                self.count("probe_not_our_prefix")
                continue
            records.append(MappingRecord(mine.eid, mine.eid_mask_len, tuple(
                Locator(l.address, l.priority, l.weight, l.multicast_priority, l.multicast_weight,
                        local=True, probed=l.address == probed, reachable=True)
                for l in mine.locators), mine.ttl, mine.action, True, mine.map_version))
        if not records:
            return []
        reply = MapReply(nonce=request.nonce, records=tuple(records), probe=True)
        self.count("probe_answered")
        return [SendControl(source, reply_port, reply.encode(), f"RLOC-probe reply for {records[0].eid_prefix}")]

    def _on_smr(self, request: MapRequest, now: float) -> list[Effect]:
        """A Solicit-Map-Request: the sender's mapping changed; re-resolve what we cache of it."""
        self.count("smr_received")
        effects: list[Effect] = []
        for rec in request.records:
            try:
                prefix = rec.eid_prefix
            except LispDecodeError:
                continue
            if not isinstance(prefix.address, IP_TYPES):
                continue
            key = (prefix.instance_id, str(prefix))
            if self._smr_seen.get(key, -math.inf) > now:
                self.count("smr_rate_limited")
                continue
            self._smr_seen[key] = now + SMR_HOLD_DOWN
            # Source-specific entries are re-resolved per host: drop them, each host's next packet asks.
            if self.sd_cache and self.sd_cache.remove_within(prefix.instance_id, prefix.network):
                effects.append(DataplaneChanged(f"SMR for {prefix}: source-specific entries dropped"))
            entry = self.cache.lookup(prefix.instance_id, prefix.network.network_address, now)
            if entry is None:
                continue
            effects += self.resolve(prefix.instance_id, prefix.network.network_address, now, smr_invoked=True)
        return effects


def _covers(outer: EidPrefix, inner: EidPrefix) -> bool:
    if outer.instance_id != inner.instance_id:
        return False
    if not isinstance(outer.address, IP_TYPES):
        return outer == inner
    if not isinstance(inner.address, IP_TYPES):
        return False
    return outer.network.version == inner.network.version and inner.network.subnet_of(outer.network)

