"""Workloads that move: dynamic EIDs arriving here, departing elsewhere, and mappings adopted after a restart.

A packet from an unknown source inside a dynamic-EID prefix means a
workload arrived: it is learned and registered.  A publication placing one
of our EIDs at another RLOC means it left: we stop serving it, tunnel what
still arrives for it to its new site for a while, and solicit the ITRs we
talk to.  After a controller restart, the mappings the switch still forwards
with are taken over as they are and re-resolved.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import replace
from enum import Enum

from lisp_ryu.config import XtrConfig
from lisp_ryu.effects import DataplaneChanged, Effect, PacketOut, SendControl
from lisp_ryu.wire import LISP_CONTROL_PORT
from lisp_ryu.plan import LocalHost, RemoteEntry, served_before_learning
from lisp_ryu.wire.locator_lists import ReplicationList, RleEntry
from lisp_ryu.wire.prefix import EidPrefix
from lisp_ryu.wire.messages import MapRequest
from lisp_ryu.wire.records import Action, Locator, MappingRecord, MapRequestRecord
from lisp_ryu.xtr import asking
from lisp_ryu.xtr.asking import ASK_FIRST
from lisp_ryu.xtr.probing import Prober
from lisp_ryu.xtr.resolution import Resolver
from lisp_ryu.xtr.state import IP_TYPES, CachedMapping, Departure, IPAddress, PlannedMove, XtrState

LOG = logging.getLogger("lisp_ryu.xtr")

ADOPTED_TTL = 60.0  # how long a mapping read back from the switch lives unless re-resolved
# How long a departed EID's traffic is tunnelled on from its old site by default (xtrs[].redirect_seconds).
REDIRECT_LIFETIME = XtrConfig.redirect_seconds
# A departure told directly (glue.moves) solicits our ITRs once the mapping system has the move
# (its Map-Notify to us, the former holder), or after this long if it never says (seconds).
SOLICIT_FALLBACK = 3.0
PLANNED_MOVE_TIMEOUT = 10.0  # a planned move's window ends then if the workload was not seen at its new site
PLANNED_MOVE_MAX_TIMEOUT = 3600.0  # the longest window an orchestrator may ask for (POST /lisp/v1/moves)
HOLD_AGE = 0.1  # held packets older than this when the workload arrives are not delivered (the old site did)
HOLD_MAX = 512  # packets held per expected workload
ROUTER_MAC = "02:00:00:00:00:fe"  # as XtrPlan.router_mac: eth_src for hosts outside any gateway's subnet


def _ranked_rlocs(record: MappingRecord) -> tuple[IPAddress, ...]:
    """The RLOCs of a mapping traffic may be tunnelled to (reachable, not priority 255), best first."""
    return tuple(loc.address for loc in sorted(record.locators, key=lambda loc: loc.priority)
                 if loc.reachable and loc.priority != 255 and isinstance(loc.address, IP_TYPES))


class Learned(Enum):
    """What a packet from an unknown source inside the dynamic-EID space told us."""

    OUTSIDE = "outside"  # not in any dynamic-EID prefix: nothing to learn
    KNOWN = "known"  # the host is already here, as seen
    ARRIVED = "arrived"  # new here (or back, or moved port): register it


class Mobility:
    """Dynamic EIDs, departures and their redirects, and adoption of the switch's mappings."""

    def __init__(self, state: XtrState, resolver: Resolver, prober: Prober):
        self.state = state
        self.resolver = resolver
        self.prober = prober

    def learn(self, in_port: int, source: IPAddress, mac: str) -> tuple[Learned, tuple[int, IPAddress] | None]:
        """Learn the host (IP, MAC, port) behind a packet from an unknown source; the core registers it.
        Returns what was learned and the host's (iid, address)."""
        state = self.state
        dyn = self._dynamic_prefix(in_port, source)
        if dyn is None:
            return Learned.OUTSIDE, None
        key = (dyn.iid, source)
        host = LocalHost(dyn.iid, source, mac, in_port)
        if state.dynamic_hosts.get(key) == host and key not in state.departed:
            state.count("learn_already_known")
            return Learned.KNOWN, key
        state.departed.pop(key, None)
        state.away.pop(key, None)
        state.solicit_later.pop(key, None)
        state.dynamic_hosts[key] = host
        if state.replicating.pop(key, None) is not None:
            state.count("planned_move_replication_ended")
        host_route = ipaddress.ip_network(source)
        if state.cache.get(dyn.iid, host_route) is not None:
            state.cache.remove(dyn.iid, host_route)  # what we knew of it while it was away
            self.prober.targets_changed()
        state.count("dynamic_eid_learned")
        LOG.info("%s: dynamic EID [%d]%s (%s) arrived on port %d", state.config.name, dyn.iid, source, mac, in_port)
        return Learned.ARRIVED, key

    def arrival_record(self, key: tuple[int, IPAddress]) -> MappingRecord | None:
        """The mapping a host that just arrived is registered with (its host route), as others cache it."""
        iid, ip = key
        state = self.state
        if key in state.dynamic_hosts and key not in state.departed:
            record = state.host_record(iid, ip)  # a learned host is always a host route of its own
        else:
            record = next((r for r in state.local_records() if r.eid_prefix.instance_id == iid
                           and r.eid_prefix.address == ip and r.eid_prefix.mask_len == ip.max_prefixlen), None)
        if record is None:
            return None
        return replace(record, locators=tuple(replace(loc, local=False) for loc in record.locators))

    def is_here(self, key: tuple[int, IPAddress]) -> bool:
        """The host (iid, address) is here now: learned or configured, and not departed or away."""
        state = self.state
        if key in state.departed or key in state.away:
            return False
        return key in state.dynamic_hosts or key in state.configured_hosts()

    def moved_elsewhere(self, record: MappingRecord, where: str, now: float) -> list[Effect]:
        """Another xTR of the same controller learned a workload (`record`, its new mapping) before
        the mapping system could tell us.  If it was here, it departed: redirect what still
        arrives for it and solicit our ITRs, as a publication would have made us do.  If we
        send to it, follow it now, on a copy that lives only a minute unless the mapping
        system's publication or answer (the truth) replaces it."""
        state = self.state
        prefix = record.eid_prefix
        if not isinstance(prefix.address, IP_TYPES):
            return []
        key = (prefix.instance_id, prefix.address)
        if self.is_here(key):
            effects: list[Effect] = [DataplaneChanged(f"{prefix.address} moved to {where}")]
            effects += self.depart(key, record, now, told_directly=True)
            self.resolver.cache_record(replace(record, ttl=1), prefix, where, now)
            state.count("moves_told_directly")
        else:
            effects = self._follow(record, where, now)
            if not effects and key not in state.replicating:
                return []
            move = state.replicating.get(key)
            if move is not None and move.new_rloc in {loc.address for loc in record.locators}:
                # The workload is at the new site: a planned move's replication is over even where
                # no mapping follows it (an ITR that never sent to this EID: a dual-stack workload's
                # other address), or it would last until its timeout.
                self._end_replication(key, f"it arrived at {where}")
                effects.append(DataplaneChanged("1 planned-move replications ended"))
        self.prober.sync_for((record,), now)
        return effects

    def _follow(self, record: MappingRecord, where: str, now: float) -> list[Effect]:
        """If we send to the workload, our map-cache follows it (a short-lived copy)."""
        prefix = record.eid_prefix
        redirected = self._redirect_follows((prefix.instance_id, prefix.address), record)
        entry = self.resolver.lookup(prefix.instance_id, None, prefix.address, now)
        if entry is None or entry.negative:
            return redirected  # we do not send to it: nothing to follow
        new = {loc.address for loc in record.locators}
        if {loc.address for loc in entry.value.record.locators} == new:
            return redirected
        if not self.resolver.cache_record(replace(record, ttl=1), prefix, where, now):
            return redirected
        self.state.count("moves_followed_directly")
        effects: list[Effect] = [DataplaneChanged(f"{prefix.address} moved to {where}")]
        if self.state.replicating:
            effects += self.end_replications(self.resolver.lookup, now)
        return effects

    def _redirect_follows(self, key: tuple[int, IPAddress], record: MappingRecord) -> list[Effect]:
        """A workload that left us moved on again: what still arrives for it here goes to where it is
        now, not to the site it left meanwhile (its redirect keeps its end)."""
        departure = self.state.departed.get(key)
        rlocs = _ranked_rlocs(record)
        if departure is None or not rlocs or rlocs[0] == departure.rloc:
            return []
        self.state.departed[key] = Departure(rlocs[0], departure.until, site=rlocs)
        self.state.count("redirect_followed")
        return [DataplaneChanged(f"the redirect for {key[1]} follows it to {rlocs[0]}")]

    def seed(self, entries, where: str, now: float, owned: tuple[MappingRecord, ...] = ()) -> list[Effect]:
        """A workload arrived from `where`: copy what its old site's map-cache holds (`entries`) and
        the old site's own mappings (`owned`: its EID prefixes and hosts, as others cache them),
        where we lack them, so its first replies find mappings, its old neighbours included; and
        ask the mapping system for each at once (its answers replace the copies; a copy nobody
        confirms lives ADOPTED_TTL)."""
        state = self.state
        local = None  # our hosts, once an entry is missing here (a burst's later arrivals find none)
        effects: list[Effect] = []
        copied: list = []
        records = [(e.iid, e.value.record) for e in entries if not e.negative and not e.expired(now)]
        records += [(r.eid_prefix.instance_id, r) for r in owned]
        for iid, record in records:
            network = record.eid_prefix.network
            if state.cache.get(iid, network) is not None:
                continue
            if local is None:
                local = {(h.iid, h.ip) for h in state.local_hosts()}
            if self.ours(iid, network, local):
                continue
            state.cache.insert(iid, network, CachedMapping(record, f"copied from {where}"), now=now,
                               ttl=ADOPTED_TTL)
            copied.append(record)
            effects += self.resolver.resolve(iid, network.network_address, now, mask_len=network.prefixlen)
        if copied:
            state.count("map_cache_seeded", len(copied))
            self.prober.sync_for(copied, now)
            effects.insert(0, DataplaneChanged(f"{len(copied)} mappings copied from {where}"))
        return effects

    def ours(self, iid: int, network, local: set | None = None) -> bool:
        """A mapping for `network` would cover what is ours, so it never goes into our map-cache
        from a copy or a prefetch: one of our hosts' host routes, our own EID space, or a prefix
        over a host configured here.  A prefix over a workload that arrived from it is not ours:
        the workload's own flows outrank it, and its replies to its old neighbours need it."""
        state = self.state
        if local is None:
            local = {(h.iid, h.ip) for h in state.local_hosts()}
        if network.prefixlen == network.max_prefixlen:
            return (iid, network.network_address) in local
        if any(p.iid == iid and p.prefix.version == network.version and p.prefix.overlaps(network)
               for p in state.config.eid_prefixes):
            return True
        return any(i == iid and ip in network and (i, ip) not in state.dynamic_hosts for i, ip in local)

    def owned(self) -> tuple[MappingRecord, ...]:
        """Our own mappings as another xTR caches them (not `local`): what a site a workload of
        ours moves to copies, so the workload's replies to our hosts find a mapping there."""
        return tuple(replace(r, locators=tuple(replace(loc, local=False) for loc in r.locators))
                     for r in self.state.local_records())

    def tenant_of(self, in_port: int, source: IPAddress) -> int | None:
        """The instance-ID a host on `in_port` with address `source` would be learned in, or None
        (nothing counted: a question, not a packet that was refused)."""
        iids = {d.iid for d in self._covering(in_port, source)}
        return next(iter(iids)) if len(iids) == 1 else None

    def _covering(self, in_port: int, source: IPAddress) -> list:
        """The dynamic-EID prefixes holding `source` that an arrival on `in_port` may be learned in.

        A configured host port names its tenant: only its instance-ID's
        prefixes count.  On another port the source must fall in one
        instance-ID's prefixes only (the flows learn nowhere else).
        """
        cfg = self.state.config
        port_iid = next((hp.iid for hp in cfg.host_ports if hp.port == in_port), None)
        return [d for d in cfg.dynamic_eid_prefixes if d.prefix.version == source.version and source in d.prefix
                and port_iid in (None, d.iid)]

    def _dynamic_prefix(self, in_port: int, source: IPAddress):
        """The dynamic-EID prefix (so the instance-ID) an arrival on `in_port` from `source` belongs
        to (`_covering`); none, counted, outside them or where instance-IDs are ambiguous."""
        state = self.state
        covering = self._covering(in_port, source)
        if not covering:
            state.count("learn_outside_dynamic_prefixes")
            return None
        if len({d.iid for d in covering}) > 1:
            state.count("learn_instance_ambiguous")
            LOG.warning("%s: %s on port %d is in dynamic-EID prefixes of instance-IDs %s and the port names "
                        "none: not learned (give the port an iid in host_ports)", state.config.name, source, in_port,
                        ", ".join(str(i) for i in sorted({d.iid for d in covering})))
            return None
        return max(covering, key=lambda d: d.prefix.prefixlen)

    def depart(self, key: tuple[int, IPAddress], record: MappingRecord, now: float,
               told_directly: bool = False) -> list[Effect]:
        """The mapping system moved one of our EIDs elsewhere: stop serving it, redirect, solicit.

        `told_directly`: the controller saw the workload arrive elsewhere before the mapping
        system could know.  The SMRs then wait for it (`confirm_departure`): an ITR solicited
        now would ask a Map-Server that still names us, get our non-answer or the old
        mapping, and retry a second later (a capture showed exactly that)."""
        state = self.state
        rlocs = _ranked_rlocs(record)
        if not rlocs:
            return []
        iid, ip = key
        state.leaving.pop(key, None)  # a planned move's window at the old site: the redirect takes over
        state.departed[key] = Departure(rlocs[0], now + state.config.redirect_seconds, site=rlocs)
        state.dynamic_hosts.pop(key, None)
        host_route = EidPrefix(ip, ip.max_prefixlen, iid)
        for reg in state.registrations:  # the map-server has it elsewhere now: if it comes back, register it
            reg.confirmed.pop(host_route, None)
        state.count("dynamic_eid_departed")
        LOG.info("%s: EID [%d]%s moved to %s: redirecting for %.0f s", state.config.name, iid, ip, rlocs[0],
                 state.config.redirect_seconds)
        if told_directly:
            state.solicit_later[key] = (now + SOLICIT_FALLBACK, rlocs)
            return []
        state.solicit_later.pop(key, None)
        return self._solicit_host(key, rlocs)

    def confirm_departure(self, key: tuple[int, IPAddress], now: float) -> list[Effect]:
        """The mapping system places a departed EID elsewhere too: the SMRs that waited for it go."""
        waiting = self.state.solicit_later.pop(key, None)
        return [] if waiting is None else self._solicit_host(key, waiting[1])

    def _solicit_host(self, key: tuple[int, IPAddress], holders) -> list[Effect]:
        iid, ip = key
        return self._solicit(EidPrefix(ip, ip.max_prefixlen, iid), holders=holders)

    def _cache_rlocs(self) -> frozenset:
        """Every IP locator of the positive map-cache (counted by the cache as entries come and go)."""
        return self.state.cache.locators()

    def _solicit(self, eid: EidPrefix, holders=()) -> list[Effect]:
        """Solicit-Map-Requests to every ITR we talk to, so those without a subscription re-resolve.

        The ITRs sending to a workload are, for two-way traffic, the RLOCs our
        own map-cache holds (RFC 9301 §6.1: SMRs go to the locators in the map-cache).
        Not to the new `holders` of the EID: they serve it now and send it nothing.
        """
        state = self.state
        skip = {*state.rlocs, *holders}
        targets = sorted(self._cache_rlocs() - skip, key=str)
        effects: list[Effect] = []
        for rloc in targets:
            smr = MapRequest(nonce=state.nonce(), smr=True, records=(MapRequestRecord.for_prefix(eid),),
                             itr_rlocs=state.rlocs, source_eid=eid.to_wire()[1])
            effects.append(SendControl(rloc, LISP_CONTROL_PORT, smr.encode(), f"SMR for {eid}"))
        state.count("smr_sent", len(effects))
        return effects

    def on_timer(self, now: float) -> list[Effect]:
        """End the redirects and planned-move windows whose time is up."""
        state = self.state
        ended = [key for key, d in state.departed.items() if d.until <= now]
        configured = state.configured_hosts()
        for key in ended:
            del state.departed[key]
            if key in configured:  # still elsewhere: the configuration does not bring it back
                state.away[key] = None
            LOG.info("%s: redirect for [%d]%s ended", state.config.name, *key)
        effects: list[Effect] = [DataplaneChanged(f"{len(ended)} redirects ended")] if ended else []
        effects += self._ask_expected(now)
        unconfirmed = [key for key, (at, _) in state.solicit_later.items() if at <= now]
        for key in unconfirmed:  # the mapping system never told us: solicit anyway
            state.count("smr_without_confirmation")
            effects += self._solicit_host(key, state.solicit_later.pop(key)[1])
        timed_out = [key for table, _ in self._roles() for key, m in table.items() if m.until <= now]
        for key in timed_out:
            state.replicating.pop(key, None)
            state.leaving.pop(key, None)
            if state.expected.pop(key, None) is not None:
                state.count("planned_move_expect_timeouts")
            LOG.info("%s: planned move of [%d]%s: window ended (timeout)", state.config.name, *key)
        if timed_out:
            effects.append(DataplaneChanged(f"{len(timed_out)} planned-move windows ended"))
        return effects

    # ---- planned moves (draft-ietf-lisp-predictive-rlocs)

    def replicate(self, iid: int, ip: IPAddress, old_rloc: IPAddress, new_rloc: IPAddress, now: float,
                  timeout: float = PLANNED_MOVE_TIMEOUT, sites: tuple = ()) -> list[Effect]:
        """As an ITR: send traffic for the EID to both RLOCs until the mapping places it at `new_rloc`
        (`sites`: the old and the new site's RLOCs, best first, for when one is down)."""
        self._take_role((iid, ip), self.state.replicating)
        self.state.replicating[(iid, ip)] = PlannedMove(new_rloc, now + timeout, rlocs=(old_rloc, new_rloc),
                                                        sites=tuple(sites))
        self.state.count("planned_move_replications")
        LOG.info("%s: planned move of [%d]%s: replicating to %s and %s", self.state.config.name, iid, ip,
                 old_rloc, new_rloc)
        return [DataplaneChanged(f"planned move of {ip}: replicate")]

    def expect(self, iid: int, ip: IPAddress, now: float, timeout: float = PLANNED_MOVE_TIMEOUT,
               old_rloc: IPAddress | None = None, at: LocalHost | None = None,
               replicated_by: tuple = (), old_site: tuple = ()) -> list[Effect]:
        """As the destination: deliver the EID's traffic to `at` (its new port, plugged already), or
        hold it if the port is not known, until the workload is learned here.  What ITRs tunnel to
        it here goes on to `old_rloc` too (where it still is until the switchover), but from
        `replicated_by`: those send the old site their own copy."""
        key = (iid, ip)
        self._take_role(key, self.state.expected)
        self.state.expected[key] = PlannedMove(None, now + timeout, rlocs=(old_rloc,) if old_rloc else (), at=at,
                                               replicated_by=tuple(replicated_by),
                                               sites=(tuple(old_site),) if old_rloc and old_site else (),
                                               ask_at=None if at is None else now + ASK_FIRST)
        self.state.count("planned_move_expected")
        if at is None:
            LOG.info("%s: planned move of [%d]%s towards us: holding its traffic until it arrives",
                     self.state.config.name, iid, ip)
        else:
            LOG.info("%s: planned move of [%d]%s towards us: its traffic goes to port %d (%s) from now on",
                     self.state.config.name, iid, ip, at.port, at.mac)
        return [DataplaneChanged(f"planned move of {ip}: expect")]

    def leave(self, iid: int, ip: IPAddress, new_rloc: IPAddress, now: float,
              timeout: float = PLANNED_MOVE_TIMEOUT, replicated_by: tuple = (), new_site: tuple = ()) -> list[Effect]:
        """As the old site: what our own hosts send the EID, and what ITRs tunnel to it here
        (but those at `replicated_by`, which send the new site a copy themselves), is delivered
        here and tunnelled to `new_rloc` too, until the workload has left (its departure) or the
        timeout.  An ITR that knows nothing of the move (another implementation's, another
        controller's) then loses nothing at the switchover either."""
        self._take_role((iid, ip), self.state.leaving)
        self.state.leaving[(iid, ip)] = PlannedMove(new_rloc, now + timeout, replicated_by=tuple(replicated_by),
                                                    sites=(tuple(new_site),) if new_site else ())
        self.state.count("planned_move_leaving")
        LOG.info("%s: planned move of [%d]%s away to %s: our hosts' traffic to it goes there too",
                 self.state.config.name, iid, ip, new_rloc)
        return [DataplaneChanged(f"planned move of {ip}: leaving")]

    def cancel(self, key: tuple[int, IPAddress]) -> list[Effect]:
        """The orchestrator called the move off (its migration failed or was aborted): this xTR's role
        in it ends now, as at the window's end; what the destination held for the workload, which
        stays where it was, is dropped (counted)."""
        state = self.state
        held = state.expected[key].held if key in state.expected else []
        ended = [name for table, name in self._roles() if table.pop(key, None) is not None]
        if not ended:
            return []
        state.count("planned_move_cancelled")
        if held:
            state.count("planned_move_held_dropped", len(held))
        LOG.info("%s: planned move of [%d]%s called off: no longer %s here (%d held packets dropped)",
                 state.config.name, *key, ended[0], len(held))
        return [DataplaneChanged(f"planned move of {key[1]}: called off")]

    def _roles(self) -> tuple[tuple[dict, str], ...]:
        """The tables of this xTR's parts in planned moves, each with its name."""
        state = self.state
        return (state.replicating, "replicating"), (state.expected, "expected"), (state.leaving, "leaving")

    def _take_role(self, key: tuple[int, IPAddress], role: dict) -> None:
        """An xTR has one role in a move of an EID.  A move announced again to another destination
        (the orchestrator retargets a migration) may give it another: the old one ends here, with
        what it held (copies: the workload has not left), and the caller sets the new one."""
        state = self.state
        for other, name in self._roles():
            if other is not role and other.pop(key, None) is not None:
                state.count("planned_move_superseded")
                LOG.info("%s: planned move of [%d]%s announced again: no longer %s here",
                         state.config.name, *key, name)

    def hold(self, iid: int, ip: IPAddress, packet: bytes, now: float) -> list[Effect]:
        """A decapsulated packet the switch sent us for a workload a planned move brings here: held
        until it arrives; if it has arrived (its flows are on their way), delivered now."""
        move = self.state.expected.get((iid, ip))
        if move is None:  # the switch may not report the tunnel_id: the address alone, if unambiguous
            found = [m for (i, a), m in self.state.expected.items() if a == ip]
            move = found[0] if len(found) == 1 else None
        if move is None:
            host = self.state.dynamic_hosts.get((iid, ip))
            if host is None:
                found = [h for (i, a), h in self.state.dynamic_hosts.items() if a == ip]
                host = found[0] if len(found) == 1 else None
            if host is not None and self.is_here((host.iid, host.ip)) and len(packet) >= 14:
                self.state.count("planned_move_delivered_late")
                return [self._deliver(host, packet)]
            self.state.count("planned_move_not_expected")
            return []
        if len(move.held) >= HOLD_MAX:
            del move.held[0]
        move.held.append((now, packet))
        self.state.count("planned_move_held")
        return []

    def _ask_expected(self, now: float) -> list[Effect]:
        """Ask the workloads announced with their port and not seen there yet to answer (xtr/asking.py)."""
        effects = asking.ask_due(self.state.expected, now, self._gateway, ROUTER_MAC)
        if effects:
            self.state.count("planned_move_asked", len(effects))
        return effects

    def next_ask(self) -> float | None:
        """When the next announced workload is asked to answer (`_ask_expected`)."""
        return min((m.ask_at for m in self.state.expected.values() if m.ask_at is not None), default=None)

    def _gateway(self, iid: int, ip: IPAddress):
        """The configured gateway of the subnet `ip` is in (None: outside every gateway's subnet)."""
        return next((g for g in self.state.config.gateways if g.iid == iid and ip in g.subnet), None)

    def _deliver(self, host: LocalHost, packet: bytes) -> PacketOut:
        """A decapsulated packet (its Ethernet addresses of no use) sent out of the host's port."""
        gateway = self._gateway(host.iid, host.ip)
        mac = gateway.mac if gateway else ROUTER_MAC
        header = bytes.fromhex(host.mac.replace(":", "")) + bytes.fromhex(mac.replace(":", ""))
        return PacketOut(0, header + packet[12:], out_port=host.port)

    def arrived(self, key: tuple[int, IPAddress], host: LocalHost, now: float) -> list[Effect]:
        """The expected workload is here: its window ends; the recent held packets are delivered to it."""
        move = self.state.expected.pop(key, None)
        if move is None:
            return []
        fresh = [p for at, p in move.held if now - at <= HOLD_AGE and len(p) >= 14]
        self.state.count("planned_move_delivered", len(fresh))
        LOG.info("%s: planned move of [%d]%s: arrived; %d held packets delivered (%d older dropped)",
                 self.state.config.name, *key, len(fresh), len(move.held) - len(fresh))
        # A workload the switch served at the port announced for it answered through the switch
        # from the switchover on: its push may join a burst's (a planned evacuation's).  Else its
        # replies wait for this push, behind a backlog of held packets: it goes at once.
        served = move.at is not None and host.port == move.at.port and served_before_learning(key[1]) and not fresh
        return [DataplaneChanged(f"planned move of {key[1]}: arrived", at_once=not served),
                *(self._deliver(host, p) for p in fresh)]

    def end_replications(self, lookup, now: float) -> list[Effect]:
        """ITR: a replication ends once the map-cache places the EID at the new RLOC."""
        state = self.state
        done = []
        for key, move in state.replicating.items():
            entry = lookup(key[0], None, key[1], now)
            if entry is None or entry.negative:
                continue
            rlocs = {loc.address for loc in entry.value.record.locators if loc.reachable and loc.priority != 255}
            if move.new_rloc in rlocs and not (set(move.rlocs) - {move.new_rloc}) & rlocs:
                done.append(key)
        for key in done:
            self._end_replication(key, "the mapping moved")
        return [DataplaneChanged(f"{len(done)} planned-move replications ended")] if done else []

    def _end_replication(self, key: tuple[int, IPAddress], why: str) -> None:
        del self.state.replicating[key]
        self.state.count("planned_move_replication_ended")
        LOG.info("%s: planned move of [%d]%s: %s, replication ended", self.state.config.name, *key, why)

    def adopt_hosts(self, hosts: list[LocalHost], remotes: list[RemoteEntry],
                    now: float) -> tuple[list[tuple[int, IPAddress]], list[tuple[int, IPAddress]]]:
        """Take back where the workloads are from a switch that still holds our flows (after a
        controller restart), before its first push would delete what the configuration does not
        say; returns the keys (iid, address) taken back as learned and those found departed.

        Learned: a host the switch delivers to (`hosts`) inside a dynamic-EID prefix of its port,
        that the configuration does not place there as it is.  Departed: a configured host the
        switch no longer delivers to while it tunnels its host route elsewhere (`remotes`): it
        moved away before the restart; what still arrives for it is redirected there."""
        state = self.state
        configured = {(h.iid, h.ip): (h.mac.lower(), h.port) for h in state.config.hosts}
        learned = []
        for host in hosts:
            key = (host.iid, host.ip)
            if configured.get(key) == (host.mac, host.port) or key in state.dynamic_hosts:
                continue
            dyn = self._dynamic_prefix(host.port, host.ip)
            if dyn is None or dyn.iid != host.iid:
                state.count("adopt_host_outside_dynamic_prefixes")  # its flows go with the first push
                continue
            state.departed.pop(key, None)
            state.away.pop(key, None)
            state.dynamic_hosts[key] = host
            learned.append(key)
            state.count("dynamic_eid_adopted")
            LOG.info("%s: dynamic EID [%d]%s (%s) on port %d taken back from the switch", state.config.name,
                     host.iid, host.ip, host.mac, host.port)
        delivered = {(h.iid, h.ip) for h in hosts}
        elsewhere = {(e.iid, e.prefix.network_address): e.rlocs for e in remotes
                     if e.rlocs and e.prefix.prefixlen == e.prefix.max_prefixlen}
        departed = []
        for key in configured:
            rlocs = elsewhere.get(key)
            if rlocs is None or key in delivered or key in state.dynamic_hosts or key in state.departed \
                    or key in state.away:
                continue
            ranked = tuple(r.address for r in sorted(rlocs, key=lambda r: r.priority))
            state.departed[key] = Departure(ranked[0], now + state.config.redirect_seconds, site=ranked)
            departed.append(key)
            state.count("configured_host_found_departed")
            LOG.info("%s: configured EID [%d]%s is at %s, says the switch: not claimed here", state.config.name,
                     *key, ranked[0])
        return learned, departed

    def adopt(self, entries: list[RemoteEntry], now: float) -> list[Effect]:
        """Take over mappings the switch still forwards with (after a controller restart).

        They go into the map-cache as they are, so the data plane stays
        untouched, and each is re-resolved at once; the answer replaces it.
        """
        state = self.state
        effects: list[Effect] = []
        for entry in entries:
            if state.cache.get(entry.iid, entry.prefix) is not None:
                continue
            locators = tuple(Locator(r.address, r.priority, r.weight) for r in entry.rlocs)
            if entry.replicate:  # a Replication List Entry's copies, as the switch makes them
                locators = (Locator(ReplicationList(tuple(RleEntry(a) for a in entry.replicate))),)
            action = Action.NO_ACTION if locators else Action.DROP_NO_REASON
            record = MappingRecord.for_prefix(EidPrefix.from_network(entry.prefix, entry.iid), locators,
                                              ttl=1, action=action)
            state.cache.insert(entry.iid, entry.prefix, CachedMapping(record, "adopted from the switch"),
                               now=now, ttl=ADOPTED_TTL, action=None if locators else Action.DROP_NO_REASON)
            state.count("map_cache_adopted")
            # Ask for (and subscribe to) the whole prefix, so news about any host route inside
            # it reaches us, as it would have through the subscriptions lost with the restart.
            effects += self.resolver.resolve(entry.iid, entry.prefix.network_address, now,
                                             mask_len=entry.prefix.prefixlen)
        self.prober.targets_changed()
        self.prober.sync(now)
        return effects
