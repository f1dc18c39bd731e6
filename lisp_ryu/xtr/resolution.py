"""The ITR: resolve destinations the map-cache misses, and keep the map-cache.

A miss starts a resolution (a Map-Request in an ECM to a map-resolver),
holds a bounded number of packets, retries on silence, and on the Map-Reply
fills the map-cache and re-injects what it held.  Map-Requests carry our
xTR-ID and ask for a subscription (RFC 9437), so a Map-Server can publish
changes to us; a Solicit-Map-Request makes us re-resolve.  Negative entries
carry the action the data plane applies (drop, native forwarding through
the PETR or native port, or ask again).
"""

from __future__ import annotations

import ipaddress

import logging
import math
from collections import OrderedDict

from lisp_ryu.effects import DataplaneChanged, Effect, PacketOut, SendControl
from lisp_ryu.wire import LISP_CONTROL_PORT
from lisp_ryu.mapping.mapcache import CacheEntry
from lisp_ryu.mapping.sourcedest import SourceDestKey, record_key
from lisp_ryu.wire.address import NO_ADDRESS
from lisp_ryu.wire.locator_lists import ReplicationList
from lisp_ryu.wire.prefix import EidPrefix
from lisp_ryu.wire.ecm import EncapsulatedControlMessage
from lisp_ryu.wire.errors import LispDecodeError, LispEncodeError
from lisp_ryu.wire.messages import MapNotify, MapReply, MapRequest
from lisp_ryu.wire.records import MappingRecord, MapRequestRecord
from lisp_ryu.xtr.probing import Prober
from lisp_ryu.xtr.state import IP_TYPES, CachedMapping, IPAddress, Resolution, ResolverState, XtrState

LOG = logging.getLogger("lisp_ryu.xtr")

REQUEST_TIMEOUT = 1.0  # seconds before a Map-Request is sent again
REQUEST_ATTEMPTS = 3
FAILED_HOLD_DOWN = 5.0  # after a resolution gave up, misses for it are dropped this long
MAX_PENDING = 4096  # resolutions in flight; beyond this, misses are dropped and counted
SMR_HOLD_DOWN = 1.0  # at most one re-resolution per entry per second, however many SMRs arrive
#: Map-Resolver failover: Map-Requests go to one map-resolver at a time, the first of the list
#: that is up.  One whose Map-Request went unanswered for REQUEST_TIMEOUT is down: the retry and
#: every later request go to the next one at once, and the silent one gets a probe (a Map-Request
#: for our own EID, answered by it or through it by us) every RESOLVER_PROBE_INTERVAL.  It is up
#: again at its first answered probe if no probe had failed (the silence was an ETR's, not its),
#: else after answering probes for RESOLVER_HOLD_DOWN (a restarted node is used again only once
#: the ETRs have re-registered with it: longer than state.REGISTER_RETRY_MAX).
#: With another map-resolver up to move to, the request moves after the time this one's answers
#: take (smoothed, plus four deviations, as TCP's RTO) rather than after REQUEST_TIMEOUT: a dead
#: node costs a client a fraction of a second, not the 1 s retransmission interval of RFC 9301
#: (which stays the pace of retries to the same resolver).  Never below FAILOVER_MIN: a busy
#: resolver that answers late is not taken down for jitter (and one that is comes back at its
#: first answered probe).
FAILOVER_MIN = 0.25
RESOLVER_PROBE_INTERVAL = 1.0
RESOLVER_PROBE_TIMEOUT = 1.0
RESOLVER_HOLD_DOWN = 5.0


class Resolver:
    """Map-Requests, Map-Replies, held packets and the map-cache they fill."""

    def __init__(self, state: XtrState, prober: Prober):
        self.state = state
        self.prober = prober
        # Nonces of our recent Map-Requests: a Map-Notify with one of them confirms a subscription
        # (RFC 9437) rather than publishing a change.
        self._request_nonces: OrderedDict[int, None] = OrderedDict()
        self._failed: dict[tuple[int, IPAddress], float] = {}
        self._smr_seen: dict[tuple[int, str], float] = {}
        self._probes: dict[int, ResolverState] = {}  # liveness probes of map-resolvers in flight, by nonce

    def lookup(self, iid: int, source: IPAddress | None, destination: IPAddress,
               now: float) -> CacheEntry[CachedMapping] | None:
        return self.state.cache.lookup(iid, destination, now, source=source)

    def confirms_subscription(self, nonce: int) -> bool:
        """A Map-Notify with this nonce answers one of our Map-Requests rather than publishing a change."""
        return nonce in self._request_nonces or nonce in self.state.by_nonce

    # ---- misses and Map-Requests

    def handle_miss(self, in_port: int, iid: int, source: IPAddress, destination: IPAddress, packet: bytes,
                    now: float) -> list[Effect]:
        """A packet missed every encap flow: resolve its destination, hold the packet."""
        state = self.state
        state.count("miss")
        key = (iid, destination)
        entry = self.lookup(iid, source, destination, now)
        if entry is not None:
            # The flow is there or on its way (a race with a just-answered reply): just re-inject.
            state.count("miss_already_resolved")
            return [PacketOut(in_port, packet)]
        res = state.resolutions.get(key)
        if res is not None:
            res.held.append((in_port, packet))
            state.count("miss_held")
            return []
        if self._failed.get(key, -math.inf) > now:
            state.count("miss_dropped_hold_down")
            return []
        if len(state.resolutions) >= MAX_PENDING:
            state.count("miss_dropped_too_many_pending")
            return []
        res = Resolution(iid, destination, state.nonce(), attempts=0, retry_at=now, source=source)
        res.held.append((in_port, packet))
        state.resolutions[key] = res
        state.by_nonce[res.nonce] = key
        return self._send_request(res, now)

    def resolve(self, iid: int, destination: IPAddress, now: float, smr_invoked: bool = False,
                mask_len: int | None = None) -> list[Effect]:
        """Ask for a mapping without a packet (SMR, refresh); `mask_len` asks for a whole prefix."""
        state = self.state
        key = (iid, destination)
        if key in state.resolutions:
            return []
        res = Resolution(iid, destination, state.nonce(), attempts=0, retry_at=now, smr_invoked=smr_invoked,
                         mask_len=mask_len)
        state.resolutions[key] = res
        state.by_nonce[res.nonce] = key
        return self._send_request(res, now)

    def _send_request(self, res: Resolution, now: float) -> list[Effect]:
        state = self.state
        config = state.config
        if not config.map_resolvers:
            return []
        res.attempts += 1
        host_len = 32 if res.destination.version == 4 else 128
        eid = EidPrefix(res.destination, host_len if res.mask_len is None else res.mask_len, res.iid)
        source_eid = NO_ADDRESS
        if res.source is not None and res.source.version == res.destination.version:
            source_eid = EidPrefix(res.source, host_len, res.iid).to_wire()[1]
        inner_source = self._inner_source(res)
        request = MapRequest(
            nonce=res.nonce,
            records=(MapRequestRecord.for_prefix(eid, notify_requested=True),),  # subscribe (RFC 9437)
            itr_rlocs=state.rlocs,
            source_eid=source_eid,
            smr_invoked=res.smr_invoked,
            pitr=config.proxy is not None,  # RFC 9301: a proxy-ITR says so
            xtr_id=state.xtr_id,
            site_id=state.site_id,
        )
        self._request_nonces[res.nonce] = None
        while len(self._request_nonces) > MAX_PENDING:
            self._request_nonces.popitem(last=False)
        resolver = self._pick_resolver(res)
        res.resolver = resolver
        res.sent_at = now
        res.retry_at = now + self._wait_for(resolver)
        ecm = EncapsulatedControlMessage(
            message=request, inner_source=inner_source, inner_destination=res.destination,
            inner_source_port=LISP_CONTROL_PORT,
        )
        state.count("map_request_sent")
        return [SendControl(resolver, LISP_CONTROL_PORT, ecm.encode(), f"Map-Request for {eid}")]

    # ---- map-resolvers: one at a time, failover on silence, back after a hold-down

    def _pick_resolver(self, res: Resolution) -> IPAddress:
        """The active map-resolver; when every one is down, each attempt tries the next in turn."""
        state = self.state
        resolvers = state.resolvers
        active = resolvers[state.active_resolver]
        if active.up:
            return active.address
        return resolvers[(state.active_resolver + res.attempts - 1) % len(resolvers)].address

    def _wait_for(self, address: IPAddress) -> float:
        """How long a Map-Request to `address` waits for its answer (see FAILOVER_MIN)."""
        rs = self._resolver(address)
        if rs is None or rs.srtt is None or not any(r.up and r is not rs for r in self.state.resolvers):
            return REQUEST_TIMEOUT
        return min(REQUEST_TIMEOUT, max(FAILOVER_MIN, rs.srtt + 4 * rs.rttvar))

    def _answer_time(self, rs: ResolverState, res: Resolution, now: float) -> None:
        """A sample of `rs`'s answer time, from a request answered at its first attempt (a
        retried one could be answering either send: Karn's rule)."""
        if res.attempts != 1:
            return
        sample = max(0.0, now - res.sent_at)
        if rs.srtt is None:
            rs.srtt, rs.rttvar = sample, sample / 2
        else:
            rs.rttvar = 0.75 * rs.rttvar + 0.25 * abs(rs.srtt - sample)
            rs.srtt = 0.875 * rs.srtt + 0.125 * sample

    def _resolver(self, address: IPAddress | None) -> ResolverState | None:
        return next((r for r in self.state.resolvers if r.address == address), None)

    def _choose_active(self, now: float) -> None:
        """Make the first map-resolver that is up the active one (log when that changes)."""
        state = self.state
        up = [i for i, r in enumerate(state.resolvers) if r.up]
        if not up:
            LOG.error("%s: no map-resolver answers (%s): Map-Requests try each in turn",
                      state.config.name, ", ".join(str(r.address) for r in state.resolvers))
            state.count("map_resolver_none_up")
            return
        chosen = up[0]
        if chosen != state.active_resolver:
            previous = state.resolvers[state.active_resolver]
            state.active_resolver = chosen
            state.count("map_resolver_switch")
            LOG.warning("%s: Map-Requests now go to Map-Resolver %s (was %s, %s)", state.config.name,
                        state.resolvers[chosen].address, previous.address, previous.state)

    def _resolver_timed_out(self, address: IPAddress | None, now: float, waited: float = REQUEST_TIMEOUT) -> None:
        """A Map-Request to `address` went unanswered: it is down, the next one takes over at once."""
        rs = self._resolver(address)
        if rs is None:
            return
        rs.timeouts += 1
        self.state.count("map_resolver_timeout")
        if not rs.up:
            return
        rs.up = False
        rs.since = now
        rs.probe_failed = False
        rs.answering_since = None
        rs.probe_due = now  # probe it at once: was it the resolver, or the ETR it forwarded to?
        self.state.count("map_resolver_down")
        LOG.warning("%s: Map-Resolver %s unreachable: no answer to a Map-Request in %.2f s",
                    self.state.config.name, rs.address, waited)
        self._choose_active(now)

    def _resolver_answered(self, rs: ResolverState, now: float) -> None:
        """`rs` answered (a probe, or a Map-Request sent before it went down)."""
        if rs.up:
            return
        if rs.answering_since is None:
            rs.answering_since = now
        if rs.probe_failed and now - rs.answering_since < RESOLVER_HOLD_DOWN:
            return
        LOG.warning("%s: Map-Resolver %s answers again (down %.1f s)", self.state.config.name, rs.address,
                    now - rs.since)
        rs.up = True
        rs.since = now
        rs.answering_since = None
        rs.probe_due = math.inf
        if rs.probe_nonce is not None:
            self._probes.pop(rs.probe_nonce, None)
            rs.probe_nonce = None
        self.state.count("map_resolver_up")
        self._choose_active(now)

    def _probe_resolvers(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for rs in self.state.resolvers:
            if rs.up:
                continue
            if rs.probe_nonce is not None and now >= rs.probe_sent_at + RESOLVER_PROBE_TIMEOUT:
                self._probes.pop(rs.probe_nonce, None)
                rs.probe_nonce = None
                rs.probe_failed = True
                rs.answering_since = None
                self.state.count("map_resolver_probe_unanswered")
            if rs.probe_nonce is None and rs.probe_due <= now:
                effects += self._send_probe(rs, now)
        return effects

    def _send_probe(self, rs: ResolverState, now: float) -> list[Effect]:
        """A Map-Request for our own EID (or what we proxy): the resolver answers it itself, or
        forwards it to the ETR that registered it, us; either way the answer carries this nonce."""
        state = self.state
        prefixes = [EidPrefix.from_network(p.prefix, p.iid) for p in state.config.eid_prefixes]
        if not prefixes and state.config.proxy is not None:
            prefixes = [EidPrefix.from_network(p, state.config.proxy.iid) for p in state.config.proxy.prefixes]
        if prefixes:
            asked = prefixes[0]
            eid = EidPrefix(asked.address, asked.address.max_prefixlen, asked.instance_id)
        else:
            eid = EidPrefix(ipaddress.IPv4Address(0), 32, 0)
        inner_source = next((r for r in state.rlocs if r.version == eid.address.version), state.rlocs[0])
        rs.probe_nonce = state.nonce()
        rs.probe_sent_at = now
        rs.probe_due = now + RESOLVER_PROBE_INTERVAL
        self._probes[rs.probe_nonce] = rs
        request = MapRequest(nonce=rs.probe_nonce, records=(MapRequestRecord.for_prefix(eid),),
                             itr_rlocs=state.rlocs, xtr_id=state.xtr_id, site_id=state.site_id)
        ecm = EncapsulatedControlMessage(message=request, inner_source=inner_source, inner_destination=eid.address,
                                         inner_source_port=LISP_CONTROL_PORT)
        state.count("map_resolver_probe_sent")
        return [SendControl(rs.address, LISP_CONTROL_PORT, ecm.encode(), f"Map-Resolver probe for {eid}")]

    def resolver_deadline(self) -> float | None:
        """When the map-resolver probes next need the timer."""
        times = [min(rs.probe_due, rs.probe_sent_at + RESOLVER_PROBE_TIMEOUT if rs.probe_nonce is not None
                     else math.inf) for rs in self.state.resolvers if not rs.up]
        times = [t for t in times if t != math.inf]
        return min(times) if times else None

    def _inner_source(self, res: Resolution) -> IPAddress:
        """The ECM's inner source: the inner header goes from us to the EID asked for (RFC 9301 §5.8).

        An RLOC of the EID's family, else the asking host, else (a request no
        packet started, such as an SMR-invoked one, for an IPv6 EID over IPv4
        RLOCs) our own gateway address in that instance and family, else the
        unspecified address: nothing answers to the inner source, the Map-Reply
        goes to the ITR-RLOCs, so the family is all that must be right.
        """
        family = res.destination.version
        rloc = next((r for r in self.state.rlocs if r.version == family), None)
        if rloc is not None:
            return rloc
        if res.source is not None and res.source.version == family:
            return res.source
        gateway = next((gw.ip for gw in self.state.config.gateways if gw.iid == res.iid and gw.ip.version == family),
                       None)
        if gateway is not None:
            return gateway
        self.state.count("map_request_unspecified_inner_source")
        return ipaddress.IPv4Address(0) if family == 4 else ipaddress.IPv6Address(0)

    def _retry(self, key: tuple[int, IPAddress], res: Resolution, now: float) -> list[Effect]:
        state = self.state
        if res.satisfied:  # a publication answered it; its Map-Reply did not come, nothing is missing
            del state.resolutions[key]
            state.by_nonce.pop(res.nonce, None)
            return []
        self._resolver_timed_out(res.resolver, now, now - res.sent_at)
        if res.attempts >= REQUEST_ATTEMPTS:
            del state.resolutions[key]
            state.by_nonce.pop(res.nonce, None)
            self._failed[key] = now + FAILED_HOLD_DOWN
            state.count("resolution_failed")
            state.count("held_packets_dropped", len(res.held))
            LOG.warning("%s: no Map-Reply for [%d]%s after %d attempts", state.config.name, res.iid,
                        res.destination, res.attempts)
            return []
        state.count("map_request_retry")
        return self._send_request(res, now)

    def on_timer(self, now: float) -> list[Effect]:
        """Retry silent Map-Requests, drop expired map-cache entries, end hold-downs."""
        state = self.state
        effects: list[Effect] = []
        for key, res in list(state.resolutions.items()):
            if res.retry_at <= now:
                effects += self._retry(key, res, now)
        effects += self._probe_resolvers(now)
        expired = state.cache.expire(now)
        for entry in expired:
            if entry.dest is None:
                LOG.info("%s: map-cache entry [%d]%s expired", state.config.name, entry.iid, entry.eid)
            else:
                LOG.info("%s: map-cache entry [%d](%s -> %s) expired", state.config.name, entry.iid, entry.eid,
                         entry.dest)
        if expired:
            state.count("map_cache_expired", len(expired))
            effects.append(DataplaneChanged(f"{len(expired)} map-cache entries expired"))
            self.prober.targets_changed()
        for key, until in list(self._failed.items()):
            if until <= now:
                del self._failed[key]
        return effects

    # ---- answers

    def on_map_reply(self, reply: MapReply, source: IPAddress, now: float) -> list[Effect]:
        """A Map-Reply: taken only from where the request went, and only for what it asked.

        The request went in an ECM to a Map-Resolver, which answers itself (a
        negative answer, a proxy reply) or has the Map-Server forward it to an
        ETR, which answers from its own RLOC with its own mapping (RFC 9301
        §8.1, §8.3).  So a record is taken from a configured Map-Resolver, or
        from an address among that record's own locators; and only when its
        EID-prefix covers the EID asked (RFC 9301 §5.4: the reply is for the
        EID in the request; a more-specific or another prefix would let whoever
        learnt the nonce steer traffic for EIDs never asked about).  A reply
        with nothing acceptable leaves the request pending, so the real answer
        still lands; what is refused is counted and logged (throttled).
        """
        state = self.state
        probed = self._probes.pop(reply.nonce, None)
        if probed is not None:
            probed.probe_nonce = None
            state.count("map_resolver_probe_answered")
            self._resolver_answered(probed, now)
            return []
        key = state.by_nonce.get(reply.nonce)
        if key is None:
            state.count("map_reply_unknown_nonce")
            return []
        res = state.resolutions[key]
        accepted = self._acceptable(reply, res, source)
        if not accepted:
            return []
        del state.by_nonce[reply.nonce]
        del state.resolutions[key]
        answered_by = self._resolver(res.resolver)
        if answered_by is not None:
            self._answer_time(answered_by, res, now)
            if not answered_by.up:
                self._resolver_answered(answered_by, now)
        effects: list[Effect] = []
        changed = False
        for record, sd_key, prefix in accepted:
            if sd_key is not None:
                changed |= self.cache_source_specific(record, sd_key, str(source), now)
            else:
                changed |= self.cache_record(record, prefix, str(source), now)
        if changed:
            effects.append(DataplaneChanged(f"Map-Reply for [{res.iid}]{res.destination}"))
            self.prober.sync_for((record for record, _, _ in accepted), now)
        state.count("map_reply_received")
        # Held packets go back after the flows (the glue applies DataplaneChanged first).
        effects += [PacketOut(port, packet) for port, packet in res.held]
        state.count("held_packets_reinjected", len(res.held))
        return effects + self.release_resolved(now)

    def _acceptable(self, reply: MapReply, res: Resolution,
                    source: IPAddress) -> list[tuple[MappingRecord, SourceDestKey | None, EidPrefix | None]]:
        """The records of `reply` that `on_map_reply` may take, with their keys; counts the others."""
        state = self.state
        from_resolver = source in state.config.map_resolvers
        accepted = []
        for record in reply.records:
            sd_key = record_key(record)
            prefix = None
            if sd_key is not None:
                iid, covered = sd_key.iid, sd_key.dest
            else:
                try:
                    prefix = record.eid_prefix
                    iid, covered = prefix.instance_id, prefix.network
                except (LispDecodeError, LispEncodeError):  # not an IP EID-prefix: nothing asked for it
                    state.count("map_reply_bad_record")
                    continue
            if not from_resolver and source not in _named_rlocs(record):
                state.count("map_reply_refused_source")
                state.log_throttled("map-reply-source", logging.WARNING,
                                    "%s: refused a Map-Reply record for %s from %s: neither a Map-Resolver "
                                    "nor one of its RLOCs", state.config.name, covered, source)
                continue
            if iid != res.iid or covered.version != res.destination.version or res.destination not in covered:
                state.count("map_reply_refused_prefix")
                state.log_throttled("map-reply-prefix", logging.WARNING,
                                    "%s: refused a Map-Reply record for [%d]%s from %s: the request was for "
                                    "[%d]%s", state.config.name, iid, covered, source, res.iid, res.destination)
                continue
            accepted.append((record, sd_key, prefix))
        return accepted

    def release_resolved(self, now: float) -> list[Effect]:
        """Re-inject what pending resolutions hold once the map-cache covers their destination.

        A Map-Reply may cover other pending destinations, and the Map-Server's
        subscription Map-Notify often arrives before the Map-Reply itself.  A
        resolution answered that way stays (marked satisfied) until its own
        Map-Reply, so that reply is still recognised by its nonce.
        """
        effects: list[Effect] = []
        for res in self.state.resolutions.values():
            if res.held and self.lookup(res.iid, res.source, res.destination, now) is not None:
                effects += [PacketOut(port, packet) for port, packet in res.held]
                self.state.count("held_packets_reinjected", len(res.held))
                res.held.clear()
                res.satisfied = True
        return effects

    def cache_record(self, record: MappingRecord, prefix: EidPrefix, source: str, now: float) -> bool:
        """Store one record; True when the data plane must change."""
        state = self.state
        if not isinstance(prefix.address, IP_TYPES):
            state.count("record_not_ip")
            return False
        cache = state.cache
        network, iid = prefix.network, prefix.instance_id
        old = cache.get(iid, network)
        # A plain answer says no source-specific entry at or inside it holds any more.
        superseded = bool(cache.remove_source_specific_within(iid, network))
        if record.ttl == 0:
            if old is not None:
                cache.remove(iid, network)
                return True
            return superseded
        ttl = math.inf if record.ttl == 0xFFFFFFFF else record.ttl * 60.0
        action = None if record.locators else record.action
        cache.insert(iid, network, CachedMapping(record, source), now=now, ttl=ttl, action=action)
        if (old is None or old.expired(now) or old.negative != (action is not None)
                or not _same_forwarding(old.value.record, record)):
            LOG.info("%s: map-cache %s -> %s", state.config.name, prefix,
                     ", ".join(f"{l.address} p{l.priority} w{l.weight}" for l in record.locators)
                     or f"negative ({record.action.name})")
            return True
        return superseded

    def forget_source_specific(self, notify: MapNotify) -> bool:
        """Before a publication's Source/Dest-key records are stored: drop every source-specific
        entry at or inside their destinations; True if there was any.

        The Map-Server shapes a publication for the hosts it knows asked from
        behind us (its last few), so entries of other hosts for the same
        destination may be stale: they go, and those hosts ask again on their
        next packet.  The records of the publication are then stored as they
        come, all of them (withdrawals stay withdrawn).
        """
        dests = {(key.iid, key.dest) for key in map(record_key, notify.records) if key is not None}
        return any([self.state.cache.remove_source_specific_within(iid, dest) for iid, dest in dests])

    def cache_source_specific(self, record: MappingRecord, key: SourceDestKey, source: str, now: float) -> bool:
        """Store one Source/Dest-key record; True when the data plane must change.

        The destination is now source-specific for us, so plain entries at or
        inside it would answer for every host: they go.
        """
        cache = self.state.cache
        changed = False
        for stale in cache.within(key.iid, key.dest):
            cache.remove(stale.iid, stale.eid)
            changed = True
        old = cache.get_source_specific(key)
        if record.ttl == 0:
            return cache.remove_source_specific(key) is not None or changed
        ttl = math.inf if record.ttl == 0xFFFFFFFF else record.ttl * 60.0
        action = None if record.locators else record.action
        cache.insert_source_specific(key, CachedMapping(record, source), now=now, ttl=ttl, action=action)
        if old is None or old.value.record != record:
            LOG.info("%s: map-cache %s -> %s", self.state.config.name, key,
                     ", ".join(f"{l.address} p{l.priority} w{l.weight}" for l in record.locators)
                     or f"negative ({record.action.name})")
            changed = True
        return changed

    def on_smr(self, request: MapRequest, now: float) -> list[Effect]:
        """A Solicit-Map-Request: the sender's mapping changed; re-resolve what we cache of it."""
        state = self.state
        state.count("smr_received")
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
                state.count("smr_rate_limited")
                continue
            self._smr_seen[key] = now + SMR_HOLD_DOWN
            # Source-specific entries are re-resolved per host: drop them, each host's next packet asks.
            if state.cache.remove_source_specific_within(prefix.instance_id, prefix.network):
                effects.append(DataplaneChanged(f"SMR for {prefix}: source-specific entries dropped"))
            address = prefix.network.network_address
            if prefix.network.prefixlen == address.max_prefixlen and any(
                    h.iid == prefix.instance_id and h.ip == address for h in state.local_hosts()):
                # One of our own hosts (a workload that just arrived, solicited by its old site):
                # we deliver it locally, a mapping of it would only point back at us.
                state.count("smr_for_local_host")
                continue
            entry = state.cache.lookup(prefix.instance_id, address, now)
            if entry is None:
                continue
            effects += self.resolve(prefix.instance_id, address, now, smr_invoked=True)
        return effects


def _same_forwarding(a: MappingRecord, b: MappingRecord) -> bool:
    """Whether the flows of `a` and `b` are the same: a renewed TTL (the mapping system confirming
    a copy a controller made, a burst of publications repeating what a direct move did) changes
    no flow, and a push per record would cost a compile and diff each."""
    return a.locators == b.locators and (bool(a.locators) or a.action == b.action)


def _named_rlocs(record: MappingRecord) -> set:
    """The RLOCs a record names: its locators' addresses and the entries of a Replication List Entry
    (an ETR answering with its predictive RLOCs is among them)."""
    named = set()
    for loc in record.locators:
        named.add(loc.address)
        if isinstance(loc.address, ReplicationList):
            named.update(entry.address for entry in loc.address.entries)
    return named
