"""The xTR control plane as a pure, sans-IO state machine: one `XtrCore` per OVS switch.

It is driven by calls that each take `now` (seconds on the glue's monotonic
clock) and return effects:

* `handle_miss`      a packet for an unknown destination reached the controller
* `handle_host_seen` a packet from an unknown source inside a dynamic-EID prefix
* `handle_control`   a LISP control datagram arrived on the xTR's RLOC, UDP 4342
* `handle_timer`     a deadline from `next_deadline()` has passed

and `plan()` describes the data plane it wants, for the flow compiler.  The
core dispatches to its parts, which share one `XtrState`: the ITR
(`resolution`), the ETR (`registration`), `mobility` and RLOC `probing`.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from typing import Callable, Iterable

from lisp_ryu.config import XtrConfig
from lisp_ryu.effects import DataplaneChanged, Effect, HostArrived, PacketOut, RegisterChanges
from lisp_ryu.mapping.mapcache import CacheEntry, MapCache, SourceDestCache
from lisp_ryu.plan import (
    DynamicPrefix,
    Gateway,
    HostPort,
    Expected,
    Leaving,
    LocalHost,
    Proxy,
    Redirect,
    Replicate,
    RemoteAction,
    RemoteEntry,
    Rloc,
    XtrPlan,
)
from lisp_ryu.wire.ecm import EncapsulatedControlMessage
from lisp_ryu.wire.locator_lists import ReplicationList
from lisp_ryu.wire.errors import LispDecodeError
from lisp_ryu.wire.control import decode_message
from lisp_ryu.wire.messages import MapNotify, MapNotifyAck, MapReply, MapRequest
from lisp_ryu.wire.records import Action, MappingRecord
from lisp_ryu.xtr.mobility import Learned, Mobility
from lisp_ryu.xtr.probing import Prober, RlocTracker
from lisp_ryu.xtr.registration import Registrar
from lisp_ryu.xtr.resolution import Resolver
from lisp_ryu.xtr.state import (
    IP_TYPES,
    CachedMapping,
    Departure,
    IPAddress,
    Registration,
    Resolution,
    XtrState,
    by_address,
)

LOG = logging.getLogger("lisp_ryu.xtr")


def replication_targets(locators) -> tuple:
    """The RLOCs every packet goes to when the best usable locator (reachable, priority below 255)
    is a Replication List Entry (RFC 8060 LCAF 13: predictive RLOCs, draft-ietf-lisp-predictive-rlocs),
    in the list's order, each once; () otherwise.  Plain locators of the same priority lose to it:
    a mapping that asks for every copy is not load-split.  Only IP entries count (an entry of
    another kind cannot be tunnelled to), and an RLE without one is no usable locator."""
    best, targets = None, []
    for loc in locators:
        if not loc.reachable or loc.priority == 255:
            continue
        if isinstance(loc.address, ReplicationList):
            ips = [e.address for e in loc.address.entries if isinstance(e.address, IP_TYPES)]
            if not ips:
                continue
            if best is None or loc.priority < best[0] or (loc.priority == best[0] and not best[1]):
                best, targets = (loc.priority, True), []
            if loc.priority == best[0]:
                targets += ips
        elif isinstance(loc.address, IP_TYPES) and (best is None or loc.priority < best[0]):
            best, targets = (loc.priority, False), []
    return tuple(dict.fromkeys(targets)) if best is not None and best[1] else ()


def _action_of(action: Action) -> RemoteAction:
    if action == Action.NATIVELY_FORWARD:
        return RemoteAction.NATIVE_FORWARD
    if action == Action.SEND_MAP_REQUEST:
        return RemoteAction.SEND_MAP_REQUEST
    if action in (Action.DROP_NO_REASON, Action.DROP_POLICY_DENIED, Action.DROP_AUTH_FAILURE):
        return RemoteAction.DROP
    return RemoteAction.NATIVE_FORWARD  # No-Action on a negative entry: RFC 9301 says forward natively


class XtrCore:
    def __init__(self, config: XtrConfig, *, nonces: Callable[[], int], rng: random.Random | None = None,
                 clock_offset: float = 0.0):
        """`clock_offset`: wall-clock time minus the `now` the core is given (for register nonces)."""
        self._nonces = nonces
        self.state = state = XtrState(config, self._nonce, clock_offset)
        self.prober = Prober(state, rng)
        self.resolver = Resolver(state, self.prober)
        self.mobility = Mobility(state, self.resolver, self.prober)
        self.registrar = Registrar(state, self.resolver, self.mobility, self.prober)
        self._redirects_made: tuple[int, frozenset, tuple[Redirect, ...]] | None = None  # see `_redirects`
        self._remotes_made: tuple | None = None  # see `_remotes`
        self._remote_of: dict[int, tuple] = {}  # id(cache entry) -> (it, its plan entry, its RLOCs)
        self._rloc_uses: dict = {}  # RLOC -> how many of `_remote_of`'s entries tunnel to it

    # ---- the state callers read

    @property
    def config(self) -> XtrConfig:
        return self.state.config

    @config.setter
    def config(self, config: XtrConfig) -> None:
        """REST replaces the config when it changes what may change at run time (dynamic-EID prefixes)."""
        self.state.config = config

    @property
    def xtr_id(self) -> int:
        return self.state.xtr_id

    @property
    def site_id(self) -> int:
        return self.state.site_id

    @property
    def cache(self) -> MapCache[CachedMapping]:
        return self.state.cache

    @property
    def sd_cache(self) -> SourceDestCache[CachedMapping]:
        """The map-cache's source-specific entries, as (destination, entry)."""
        return self.state.cache.source_specific

    @property
    def counters(self) -> dict[str, int]:
        return self.state.counters

    @property
    def resolutions(self) -> dict[tuple[int, IPAddress], Resolution]:
        return self.state.resolutions

    @property
    def registrations(self) -> list[Registration]:
        return self.state.registrations

    @property
    def dynamic_hosts(self) -> dict[tuple[int, IPAddress], LocalHost]:
        return self.state.dynamic_hosts

    @property
    def departed(self) -> dict[tuple[int, IPAddress], Departure]:
        return self.state.departed

    @property
    def health(self) -> RlocTracker:
        return self.prober.health

    def count(self, name: str, n: int = 1) -> None:
        self.state.count(name, n)

    def _nonce(self) -> int:
        """A nonce no Map-Request, Map-Register or RLOC-probe of ours is awaiting an answer for."""
        state = self.state
        nonce = self._nonces()
        while (nonce in state.by_nonce or any(r.nonce == nonce for r in state.registrations)
               or any(r.probe_nonce == nonce for r in state.resolvers)
               or nonce in self.prober.health.outstanding()):
            nonce = self._nonces()
        return nonce

    # ---- the desired data plane

    def plan(self) -> XtrPlan:
        cfg = self.state.config
        down = self.prober.health.down()  # read once: the map-cache entries and the redirects both follow it
        remotes, peers = self._remotes(down)
        return XtrPlan(
            tunnel_port=cfg.tunnel_port,
            host_ports=tuple(HostPort(p.port, p.iid) for p in cfg.host_ports),
            hosts=self.local_hosts(),
            gateways=tuple(Gateway(g.iid, g.subnet, g.ip, g.mac) for g in cfg.gateways),
            remotes=remotes,
            dynamic_prefixes=tuple(DynamicPrefix(d.iid, d.prefix) for d in cfg.dynamic_eid_prefixes),
            redirects=self._redirects(down),
            tunnel_source=self.state.rlocs[0],
            petr=cfg.petr,
            native_port=cfg.native_port,
            proxy=None if cfg.proxy is None else Proxy(cfg.proxy.iid, cfg.proxy.prefixes, cfg.proxy.next_hop_mac,
                                                        cfg.proxy.address),
            peers=tuple(sorted((peers | self.prober.probed_by.keys()) - set(self.state.rlocs),
                               key=lambda a: (a.version, int(a)))),
            probers=tuple(sorted(self.prober.probed_by.keys() - peers - set(self.state.rlocs),
                                 key=lambda a: (a.version, int(a)))),
            replicates=tuple(Replicate(iid, ip, self._alive(m.rlocs, m.sites), m.sites)
                             for (iid, ip), m in sorted(self.state.replicating.items(), key=str)),
            expected=tuple(Expected(iid, ip, self._alive(m.rlocs, m.sites)[0] if m.rlocs else None, m.at,
                                    m.replicated_by, old_site=m.sites[0] if m.sites else ())
                           for (iid, ip), m in sorted(self.state.expected.items(), key=lambda kv: str(kv[0]))),
            leaving=tuple(Leaving(iid, ip, self._alive((m.new_rloc,), m.sites)[0], m.replicated_by,
                                  site=m.sites[0] if m.sites else ())
                          for (iid, ip), m in sorted(self.state.leaving.items(), key=lambda kv: str(kv[0]))),
        )

    def _remotes(self, down: frozenset) -> tuple[tuple[RemoteEntry, ...], frozenset]:
        """The map-cache as the plan's entries, and the RLOCs they may tunnel to; made again only
        when the cache or an RLOC's health changed (every push asks; a burst of moves pushes a
        switch of hundreds of entries several times a second)."""
        cache = self.state.cache
        made = self._remotes_made
        if made is not None and made[0] == cache.changes and made[1] == down:
            return made[2], made[3]
        # An entry the cache still holds (the same object: entries are replaced, never changed)
        # keeps its plan entry while RLOC health stands: a move changes one entry of an ITR's
        # map-cache, and remaking 10,000 took ~0.5 s of the thread per move.
        before = self._remote_of if made is not None and made[1] == down else {}
        uses = dict(self._rloc_uses) if before else {}  # RLOC -> how many plain entries tunnel to it
        remote_of: dict[int, tuple] = {}
        remotes = []
        reused = 0
        for entry in cache.values():  # the compiler orders what it must (group ids)
            kept = before.get(id(entry))
            if kept is not None and kept[0] is entry:
                reused += 1
            else:
                prefix = entry.value.record.eid_prefix
                if not isinstance(prefix.address, IP_TYPES):
                    continue  # MAC EIDs have no L3 flows yet
                kept = (entry, self._remote_entry(entry, prefix.network), self._peer_rlocs(entry))
                for rloc in kept[2]:
                    uses[rloc] = uses.get(rloc, 0) + 1
            remote_of[id(entry)] = kept
            remotes.append(kept[1])
        if reused < len(before):  # entries gone or replaced: their RLOCs lose a use
            for key, (entry, _, rlocs) in before.items():
                if remote_of.get(key, (None,))[0] is not entry:
                    for rloc in rlocs:
                        uses[rloc] -= 1
        peers = {rloc for rloc, n in uses.items() if n > 0}
        for dest, entry in cache.source_specific:
            remotes.append(self._remote_entry(entry, dest, source=entry.eid))  # type: ignore[arg-type]
            peers.update(self._peer_rlocs(entry))
        self._remote_of, self._rloc_uses = remote_of, {rloc: n for rloc, n in uses.items() if n > 0}
        self._remotes_made = (cache.changes, down, tuple(remotes), frozenset(peers))
        return self._remotes_made[2], self._remotes_made[3]

    def _alive(self, rlocs: tuple, sites: tuple) -> tuple:
        """A planned move's RLOCs (`rlocs`), each replaced by the first of its site's (`sites`, best
        first) that probing does not call down when it is; kept when none is up."""
        is_up = self.prober.health.is_up
        return tuple(rloc if is_up(rloc) else next((a for a in site if is_up(a)), rloc)
                     for rloc, site in zip(rlocs, (*sites, *((),) * len(rlocs))))

    def _redirects(self, down: frozenset) -> tuple[Redirect, ...]:
        """The departures as the plan's redirects, in address order, each to its new site's live
        RLOC; made again only when they or the RLOCs' health changed (every push of an old site
        asks, 200 of them after an evacuation)."""
        departed = self.state.departed
        made = self._redirects_made
        if made is None or made[0] != departed.version or made[1] != down:
            made = self._redirects_made = (departed.version, down, tuple(
                Redirect(iid, ip, self._alive((d.rloc,), (d.site,))[0], d.site)
                for (iid, ip), d in sorted(departed.items(), key=by_address)))
        return made[2]

    @staticmethod
    def _peer_rlocs(entry: CacheEntry[CachedMapping]) -> tuple[IPAddress, ...]:
        """The RLOCs a positive entry may tunnel to, whatever probing says of them (BFD watches them too)."""
        if entry.negative:
            return ()
        return tuple(loc.address for loc in entry.value.record.locators
                     if loc.reachable and loc.priority != 255 and isinstance(loc.address, IP_TYPES))

    def _remote_entry(self, entry: CacheEntry[CachedMapping], prefix: ipaddress.IPv4Network | ipaddress.IPv6Network,
                      source: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None) -> RemoteEntry:
        record = entry.value.record
        if entry.negative:
            return RemoteEntry(entry.iid, prefix, _action_of(record.action), source=source)
        replicas = replication_targets(record.locators)
        if replicas:  # not to ourselves: an EID here is delivered by its own flows, above this one
            mine = self.state.rlocs
            return RemoteEntry(entry.iid, prefix, RemoteAction.ENCAP, source=source,
                               replicate=tuple(a for a in replicas if a not in mine))
        rlocs = tuple(
            Rloc(loc.address, loc.priority, loc.weight)
            for loc in record.locators
            if loc.reachable and isinstance(loc.address, IP_TYPES)
        )
        # Probed-down RLOCs leave the entry, so the compiler's best-priority choice moves on
        # to the next priority (or renormalises the weights of the rest).  When every one is
        # down we keep them all: nothing better exists, and a peer that never answers
        # probes must not lose its traffic.
        live = tuple(r for r in rlocs if self.prober.health.is_up(r.address))
        return RemoteEntry(entry.iid, prefix, RemoteAction.ENCAP, live or rlocs, source=source)

    def lookup(self, iid: int, source: IPAddress | None, destination: IPAddress,
               now: float) -> CacheEntry[CachedMapping] | None:
        """The live map-cache entry the data plane applies to (source, destination), as the flows do."""
        return self.resolver.lookup(iid, source, destination, now)

    def local_hosts(self) -> tuple[LocalHost, ...]:
        """Configured and learned hosts that are here now (not departed or away)."""
        return self.state.local_hosts()

    def hosts_with_mac(self, mac: str) -> tuple[tuple[int, IPAddress], ...]:
        """(iid, address) of the hosts here now with this MAC: a workload's addresses."""
        return self.state.hosts_with_mac(mac)

    def local_records(self) -> tuple[MappingRecord, ...]:
        """Our own mapping: the site's EID prefixes and the host routes of hosts here they do not cover."""
        return self.state.local_records()

    # ---- timers

    def start(self, now: float) -> list[Effect]:
        """Register at once and install the local data plane."""
        effects: list[Effect] = [DataplaneChanged("local EIDs and gateways")]
        effects += self.handle_timer(now)
        return effects

    def next_deadline(self) -> float | None:
        state = self.state
        deadlines = [r.due for r in state.registrations]
        deadlines += [r.retry_at for r in state.resolutions.values()]
        departures = state.earliest_departure_deadline()
        if departures is not None:
            deadlines.append(departures)
        deadlines += [m.until for table in (state.replicating, state.expected, state.leaving) for m in table.values()]
        ask = self.mobility.next_ask()
        if ask is not None:
            deadlines.append(ask)
        resolver_deadline = self.resolver.resolver_deadline()
        if resolver_deadline is not None:
            deadlines.append(resolver_deadline)
        probe_deadline = self.prober.health.next_deadline()
        if probe_deadline is not None:
            deadlines.append(probe_deadline)
        cache_deadline = state.cache.next_deadline()
        if cache_deadline is not None:
            deadlines.append(cache_deadline)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> list[Effect]:
        effects = self.registrar.on_timer(now)
        effects += self.resolver.on_timer(now)
        effects += self.mobility.on_timer(now)
        effects += self.prober.poll(now)
        return effects

    # ---- events from the data plane

    def handle_miss(self, in_port: int, iid: int, source: IPAddress, destination: IPAddress, packet: bytes,
                    now: float) -> list[Effect]:
        """A packet missed every encap flow: resolve its destination, hold the packet."""
        return self.resolver.handle_miss(in_port, iid, source, destination, packet, now)

    def resolve(self, iid: int, destination: IPAddress, now: float, smr_invoked: bool = False,
                mask_len: int | None = None) -> list[Effect]:
        """Ask for a mapping without a packet (SMR, refresh); `mask_len` asks for a whole prefix."""
        return self.resolver.resolve(iid, destination, now, smr_invoked, mask_len)

    def handle_host_seen(self, in_port: int, source: IPAddress, mac: str, packet: bytes,
                         now: float, with_addresses: Callable[[], Iterable[tuple[int, IPAddress]]] = tuple
                         ) -> list[Effect]:
        """A packet from an unknown source inside a dynamic-EID prefix: a workload arrived.

        Learn it (IP, MAC, port), install its local flows, register it as a host route with
        every map-server (`RegisterChanges`: right after the flows), and re-inject the packet.
        `with_addresses`: gives the workload's other (iid, address) pairs, where a glue
        that drives its old site knows them (same MAC there), asked only when the
        workload arrived (not for a known host's packets): learned with it, in
        the same push and Map-Register, each in its own tenant only if that is the
        port's.  A dual-stack workload announces its IPv4 address first (a gratuitous
        ARP); its IPv6 one no longer waits for its own packet and a second round of pushes.
        """
        learned, key = self.mobility.learn(in_port, source, mac)
        if learned is Learned.OUTSIDE:
            return []
        if learned is Learned.KNOWN:
            return [PacketOut(in_port, packet)]
        keys = [key]
        for iid, address in with_addresses():
            if address != source and self.mobility.tenant_of(in_port, address) == key[0] == iid:
                also, also_key = self.mobility.learn(in_port, address, mac)
                if also is Learned.ARRIVED:
                    keys.append(also_key)
                    self.state.count("dynamic_eid_learned_with_its_workload")
        effects: list[Effect] = [DataplaneChanged(f"dynamic EID {source} arrived"
                                                  + "".join(f", with {k[1]}" for k in keys[1:]))]
        effects.append(RegisterChanges())
        for k in keys:
            record = self.mobility.arrival_record(k)
            if record is not None:
                effects.append(HostArrived(record, workload=mac))
        effects.append(PacketOut(in_port, packet))
        for k in keys:
            for exp in [e for e in self.state.expected if e[1] == k[1] and e in self.state.dynamic_hosts]:
                effects += self.mobility.arrived(exp, self.state.dynamic_hosts[exp], now)  # a planned move's end
        return effects

    def register_changes(self, now: float) -> list[Effect]:
        """The Map-Registers `RegisterChanges` asked for: what changed, to every map-server."""
        return self.registrar.register_all(now)

    def handle_announcement(self, in_port: int, packet: bytes, now: float) -> list[Effect]:
        """A frame with no IP sender from a host port.  A RARP from the port announced for a planned
        move is that workload arriving (QEMU announces a migrated VM so, when the guest does not
        announce itself), told by its MAC: each of its announced EIDs is learned as if it had sent
        a packet.  Anything else teaches nothing."""
        mac = ":".join(f"{b:02x}" for b in packet[6:12])
        if len(packet) < 14 or packet[12:14] != b"\x80\x35":
            self.state.count("learn_not_ip_or_arp")
            return []
        keys = [key for key, move in self.state.expected.items()
                if move.at is not None and move.at.port == in_port and move.at.mac.lower() == mac]
        if not keys:
            self.state.count("rarp_unexpected")
            return []
        self.state.count("planned_move_announced_by_rarp")
        effects: list[Effect] = []
        for _, ip in keys:  # the RARP itself is not re-injected: nothing past here wants it
            effects += [e for e in self.handle_host_seen(in_port, ip, mac, packet, now)
                        if not (isinstance(e, PacketOut) and e.data == packet)]
        return effects

    # ---- planned moves (draft-ietf-lisp-predictive-rlocs; lisp_ryu/flows/replicate.py)

    def replicate(self, iid: int, ip: IPAddress, old_rloc: IPAddress, new_rloc: IPAddress, now: float,
                  timeout: float | None = None, sites: tuple = ()) -> list[Effect]:
        """As an ITR: traffic for `ip` goes to both RLOCs until the mapping moves it (or the timeout);
        `sites`: the old and the new site's RLOCs, best first (each copy fails over among its site's)."""
        extra = {} if timeout is None else {"timeout": timeout}
        return self.mobility.replicate(iid, ip, old_rloc, new_rloc, now, sites=sites, **extra)

    def expect(self, iid: int, ip: IPAddress, now: float, timeout: float | None = None,
               prefetch: tuple = (), old_rloc: IPAddress | None = None, port: int | None = None,
               mac: str | None = None, replicated_by: tuple = (), old_site: tuple = ()) -> list[Effect]:
        """As the destination: deliver `ip`'s traffic to `port` (with `mac`: the workload's new
        port here, plugged already), or hold it without one, until it is learned here (our own
        hosts' traffic to it goes to `old_rloc` as well meanwhile); resolve beforehand the
        prefixes (`prefetch`: (iid, network)) its old site talks to, so its replies find mappings."""
        extra = {} if timeout is None else {"timeout": timeout}
        at = None if port is None or mac is None else LocalHost(iid, ip, mac, port)
        effects = self.mobility.expect(iid, ip, now, old_rloc=old_rloc, at=at, replicated_by=replicated_by,
                                       old_site=old_site, **extra)
        for p_iid, network in dict.fromkeys(prefetch):
            if self.state.cache.get(p_iid, network) is None and not self.mobility.ours(p_iid, network):
                effects += self.resolver.resolve(p_iid, network.network_address, now, mask_len=network.prefixlen)
        return effects

    def resolving(self, prefixes: tuple) -> bool:
        """Whether the resolution of any of these (iid, network) (`expect`'s prefetch) still
        waits for its answer."""
        return any((iid, network.network_address) in self.state.resolutions for iid, network in prefixes)

    def leave(self, iid: int, ip: IPAddress, new_rloc: IPAddress, now: float,
              timeout: float | None = None, replicated_by: tuple = (), new_site: tuple = ()) -> list[Effect]:
        """As the old site: what our hosts send `ip`, and other ITRs tunnel to it here, also goes to
        `new_rloc` (or the next of `new_site` while it is down) until it has left (not what comes
        from `replicated_by`: those replicate)."""
        extra = {} if timeout is None else {"timeout": timeout}
        return self.mobility.leave(iid, ip, new_rloc, now, replicated_by=replicated_by, new_site=new_site, **extra)

    def cancel_move(self, iid: int, ip: IPAddress) -> list[Effect]:
        """The planned move of `ip` is called off: whatever part this xTR has in it ends now."""
        return self.mobility.cancel((iid, ip))

    def hold(self, iid: int, ip: IPAddress, packet: bytes, now: float) -> list[Effect]:
        """A decapsulated packet for a workload expected here: held, or delivered if it just arrived."""
        return self.mobility.hold(iid, ip, packet, now)

    def is_here(self, iid: int, ip: IPAddress) -> bool:
        """The host is here now (learned or configured, not departed or away)."""
        return self.mobility.is_here((iid, ip))

    def moved_elsewhere(self, record: MappingRecord, where: str, now: float) -> list[Effect]:
        """Another xTR this glue drives learned the workload of `record`: depart or follow it now."""
        return self.mobility.moved_elsewhere(record, where, now)

    def seed(self, entries, where: str, now: float, owned: tuple = ()) -> list[Effect]:
        """A workload arrived from `where`: copy (and re-resolve) the mappings its old site held
        (`entries`: its map-cache; `owned`: its own, `owned_mappings`)."""
        return self.mobility.seed(entries, where, now, owned)

    def owned_mappings(self) -> tuple:
        """Our own mappings (EID prefixes, hosts here) as another xTR would cache them."""
        return self.mobility.owned()

    def adopt(self, entries: list[RemoteEntry], now: float, hosts: list[LocalHost] | None = None) -> list[Effect]:
        """Take over mappings the switch still forwards with (after a controller restart) and, given
        the `hosts` it delivers to, where the workloads are (`adopt_hosts`)."""
        effects = self.mobility.adopt(entries, now)
        return effects if hosts is None else effects + self.adopt_hosts(hosts, entries, now)

    def adopt_hosts(self, hosts: list[LocalHost], remotes: list[RemoteEntry], now: float) -> list[Effect]:
        """Take back where the workloads are from the switch's flows (after a controller restart,
        `Mobility.adopt_hosts`): the learned ones are registered again and told to the other
        xTRs, as at their arrival; the configured ones that left are not claimed."""
        learned, departed = self.mobility.adopt_hosts(hosts, remotes, now)
        if not learned and not departed:
            return []
        effects: list[Effect] = [DataplaneChanged(f"{len(learned)} workloads taken back from the switch, "
                                                  f"{len(departed)} configured ones found elsewhere"),
                                 RegisterChanges()]
        for key in learned:
            record = self.mobility.arrival_record(key)
            if record is not None:
                effects.append(HostArrived(record, workload=self.state.dynamic_hosts[key].mac))
        return effects

    # ---- control messages

    def handle_control(self, payload: bytes, source: IPAddress, port: int, now: float,
                       destination: IPAddress | None = None) -> list[Effect]:
        """A datagram from `source`:`port`; `destination` is the local address it was sent to."""
        effects = self._handle_control(payload, source, port, now, destination)
        if self.state.replicating:  # a mapping that moved ends a planned move's replication
            effects = effects + self.mobility.end_replications(self.lookup, now)
        return effects

    def _handle_control(self, payload: bytes, source: IPAddress, port: int, now: float,
                        destination: IPAddress | None = None) -> list[Effect]:
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
                return self.prober.on_reply(message, source, now)
            return self.resolver.on_map_reply(message, source, now)
        if isinstance(message, MapNotifyAck):
            self.count("unexpected_map_notify_ack")
            return []
        if isinstance(message, MapNotify):
            return self.registrar.on_map_notify(payload, message, source, port, now)
        if isinstance(message, MapRequest):
            if message.probe and not message.smr:
                return self.prober.answer(message, source, reply_port, destination, now)
            if message.smr:
                return self.resolver.on_smr(message, now)
            return self.registrar.on_map_request(message, source, reply_port, now)
        self.count(f"unexpected_{type(message).__name__}")
        return []
