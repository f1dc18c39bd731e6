"""The ETR: register our EIDs, take the Map-Server's Map-Notifies, answer Map-Requests for our EIDs.

Registers the site's EID prefixes (and the host routes of hosts here that
they do not cover) with every map-server on start and every
`register_interval`, retrying with back-off until a Map-Notify answers.
Each Map-Register has a nonce greater than the last (`XtrState.register_nonce`),
so a Map-Server can refuse a captured one resent later.
Other authenticated Map-Notifies are publications (RFC 9437): mappings we
subscribed to, stored and acknowledged, or news that one of our EIDs now
lives elsewhere.  Map-Requests a Map-Server forwards to us are answered
with our own mapping.
"""

from __future__ import annotations

import logging
import math

from lisp_ryu.effects import DataplaneChanged, Effect, SendControl
from lisp_ryu.mapping.sourcedest import record_key
from lisp_ryu.wire import auth
from lisp_ryu.wire.prefix import EidPrefix
from lisp_ryu.wire.errors import LispDecodeError
from lisp_ryu.wire.messages import MapNotify, MapNotifyAck, MapRegister, MapReply, MapRequest
from lisp_ryu.xtr.mobility import Mobility
from lisp_ryu.xtr.probing import Prober
from lisp_ryu.xtr.resolution import Resolver
from lisp_ryu.xtr.state import IP_TYPES, NOTIFY_TIMEOUT, REGISTER_RETRY_MAX, IPAddress, Registration, XtrState

LOG = logging.getLogger("lisp_ryu.xtr")

UNREACHABLE_AFTER = 2  # Map-Registers in a row without a Map-Notify before a map-server is called unreachable


class Registrar:
    """Map-Register timers, Map-Notifies (registrations and publications), answers for our EIDs."""

    def __init__(self, state: XtrState, resolver: Resolver, mobility: Mobility, prober: Prober):
        self.state = state
        self.resolver = resolver
        self.mobility = mobility
        self.prober = prober
        self._index: tuple[tuple, dict, tuple[int, ...]] | None = None  # see `_ours`

    def on_timer(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for reg in self.state.registrations:
            if reg.due <= now:
                effects += self.register(reg, now)
        return effects

    def register_all(self, now: float) -> list[Effect]:
        """Register what changed at once with every map-server (the hosts here changed).

        Only the records the map-server has not confirmed go (RFC 9301 lets a
        Map-Register carry any subset; the periodic one still carries all), and
        one Map-Register is in flight per map-server: while one awaits its
        Map-Notify, further changes wait for it and leave together in the
        next.  A burst of arrivals (an evacuation) costs a few small registers,
        each Map-Notify still matches the nonce it answers, and the Map-Server
        does not re-file every record of the site per arrival (200-record
        registers cost it 15-50 ms each, in the controller's thread)."""
        effects: list[Effect] = []
        for reg in self.state.registrations:
            if reg.nonce is not None and not reg.registered and now - reg.sent < reg.retry:
                reg.pending = True
                continue
            effects += self.register(reg, now, changes_only=True)
        return effects

    def register(self, reg: Registration, now: float, changes_only: bool = False) -> list[Effect]:
        """A Map-Register of every local record (`changes_only`: of those `reg.confirmed` lacks)."""
        state = self.state
        records = state.local_records()
        if not records:
            reg.due = math.inf
            return []
        if changes_only:
            confirmed = reg.confirmed
            changed = tuple(r for r in records if confirmed.get(r.eid_prefix) != _addresses(r))
            if not changed:  # the map-server holds all of it (a departure withdraws nothing: the new
                reg.pending = False  # holder's registration replaces ours there)
                return []
            reg.partial = len(changed) < len(records)
            records = changed
        else:
            reg.partial = False
        if reg.nonce is not None and not reg.registered:
            # No Map-Notify came: back off, but not beyond REGISTER_RETRY_MAX, so a Map-Server that
            # comes back (a restarted cluster node) has our registration within seconds.
            reg.retry = min(reg.retry * 2, state.config.register_interval, REGISTER_RETRY_MAX)
            reg.unanswered += 1
            state.count("map_register_unanswered")
            if reg.reachable and reg.unanswered >= UNREACHABLE_AFTER:
                reg.reachable = False
                reg.since = now
                state.count("map_server_unreachable")
                LOG.warning("%s: Map-Server %s unreachable: no Map-Notify for our Map-Register "
                            "(retrying every %g s at most; registered with %d of %d map-servers)",
                            state.config.name, reg.server.address, min(state.config.register_interval,
                                                                       REGISTER_RETRY_MAX),
                            sum(r.registered for r in state.registrations), len(state.registrations))
        nonce = state.register_nonce(now)  # sequenced: the Map-Server can tell a replay of an older one
        message = MapRegister(
            nonce=nonce, records=records, key_id=0, proxy_map_reply=state.config.proxy_reply,
            want_map_notify=True, xtr_id=state.xtr_id, site_id=state.site_id,
        )
        message = auth.sign(message, reg.server.key, reg.server.algorithm_id)
        reg.nonce = nonce
        reg.registered = False
        reg.pending = False
        reg.sent = now
        reg.due = now + reg.retry
        state.count("map_register_sent")
        what = f"Map-Register of {', '.join(str(r.eid_prefix) for r in records)}"
        return [SendControl(reg.server.address, reg.server.port, message.encode(), what)]

    def _on_register_notify(self, reg: Registration, notify: MapNotify, now: float) -> None:
        state = self.state
        if not reg.reachable:
            state.count("map_server_reachable_again")
            LOG.warning("%s: Map-Server %s answers again (Map-Notify after %d unanswered Map-Registers, "
                        "%.1f s after it was called unreachable)", state.config.name, reg.server.address, reg.unanswered,
                        now - reg.since)
            reg.reachable = True
            reg.since = now
        reg.unanswered = 0
        reg.last_notify = now
        reg.registered = True
        reg.nonce = None
        reg.retry = NOTIFY_TIMEOUT
        if not reg.partial:  # the periodic registration of everything: the next one is due an interval on
            reg.refresh_due = now + self.state.config.register_interval
        reg.due = reg.refresh_due
        self.state.count("map_notify_for_register")
        # Not what left since the Map-Register went: a late Map-Notify confirming a host that has
        # departed meanwhile made us believe the Map-Server still had it from us when it came back,
        # so its return was never registered (a workload flapping between two sites; seen in the lab).
        ours = {r.eid_prefix for r in self.state.local_records()}
        confirmed = {r.eid_prefix: _addresses(r) for r in notify.records if r.eid_prefix in ours}
        for prefix, locators in confirmed.items():
            if reg.confirmed.get(prefix) != locators:
                LOG.info("%s: registered %s -> %s with %s", self.state.config.name, prefix,
                         ", ".join(map(str, locators)), reg.server.address)
        if reg.partial:
            reg.confirmed.update(confirmed)
        else:
            reg.confirmed = confirmed

    def _server_for(self, source: IPAddress) -> Registration | None:
        return next((r for r in self.state.registrations if r.server.address == source), None)

    def on_map_notify(self, payload: bytes, notify: MapNotify, source: IPAddress, port: int,
                      now: float) -> list[Effect]:
        state = self.state
        reg = self._server_for(source)
        if reg is None:
            state.count("map_notify_from_unknown_source")
            return []
        if not auth.verify(payload, reg.server.key):
            state.count("map_notify_bad_auth")
            LOG.warning("%s: Map-Notify from %s failed authentication", state.config.name, source)
            return []
        if notify.nonce == reg.nonce:
            self._on_register_notify(reg, notify, now)
            return self.register(reg, now, changes_only=True) if reg.pending else []
        # A publication (RFC 9437) for EIDs we asked for, or news that one of ours moved away.
        state.count("map_notify_publication")
        resolver = self.resolver
        changed = False
        effects: list[Effect] = []
        if not resolver.confirms_subscription(notify.nonce):
            changed |= resolver.forget_source_specific(notify)
        for record in notify.records:
            sd_key = record_key(record)
            if sd_key is not None:
                if not any(loc.address in state.rlocs for loc in record.locators):
                    changed |= resolver.cache_source_specific(record, sd_key, str(source), now)
                continue
            try:
                prefix = record.eid_prefix
            except LispDecodeError:
                state.count("map_notify_bad_record")
                continue
            if any(loc.address in state.rlocs for loc in record.locators):
                continue  # our own mapping, as the map-server holds it
            if not isinstance(prefix.address, IP_TYPES):
                continue
            key = (prefix.instance_id, prefix.address)
            # Asked per record (no set of every host here per publication: an old site gets one per
            # departure, and rebuilt its hosts after each in an evacuation).
            if prefix.mask_len == prefix.address.max_prefixlen and self.mobility.is_here(key):
                effects += self.mobility.depart(key, record, now)
                changed = True
            elif key in state.solicit_later:
                effects += self.mobility.confirm_departure(key, now)
            changed |= resolver.cache_record(record, prefix, str(source), now)
        ack = MapNotifyAck(nonce=notify.nonce, records=notify.records, key_id=notify.key_id,
                           xtr_id=notify.xtr_id, site_id=notify.site_id)
        algorithm = notify.algorithm_id if notify.algorithm_id in auth.DIGEST_LENGTHS else reg.server.algorithm_id
        ack = auth.sign(ack, reg.server.key, algorithm)
        effects.insert(0, SendControl(source, port, ack.encode(), "Map-Notify-Ack"))
        if changed:
            effects.insert(0, DataplaneChanged("Map-Notify publication"))
            self.prober.sync_for(notify.records, now)
            effects += resolver.release_resolved(now)
        return effects

    def on_map_request(self, request: MapRequest, source: IPAddress, reply_port: int, now: float) -> list[Effect]:
        """A Map-Request forwarded to us: answer for our own prefixes."""
        state = self.state
        records = []
        for rec in request.records:
            try:
                asked = rec.eid_prefix
            except LispDecodeError:
                state.count("map_request_bad_record")
                continue
            mine = self._ours(asked)
            if mine is not None:
                records.append(mine)
        if not records:
            state.count("map_request_not_ours")
            return []
        itr = next((r for r in request.itr_rlocs if isinstance(r, IP_TYPES)
                    and r.version == state.rlocs[0].version), None)
        if itr is None:
            state.count("map_request_no_usable_itr_rloc")
            return []
        reply = MapReply(nonce=request.nonce, records=tuple(records))
        state.count("map_request_answered")
        return [SendControl(itr, reply_port, reply.encode(), f"Map-Reply for {records[0].eid_prefix}")]


    def _ours(self, asked: EidPrefix):
        """The first of our records (in `local_records` order) that covers `asked`, or None.

        Found by the prefix lengths our records have, in a dict of them: a burst of forwarded
        Map-Requests (an evacuation, each ITR asking for every workload) costs a few lookups
        each, not a walk of every host route here."""
        records = self.state.local_records()
        if self._index is None or self._index[0] is not records:
            index: dict = {}
            for position, record in enumerate(records):
                prefix = record.eid_prefix
                if isinstance(prefix.address, IP_TYPES):
                    index.setdefault((prefix.instance_id, prefix.network), position)
            lengths = tuple(sorted({net.prefixlen for _, net in index}, reverse=True))
            self._index = (records, index, lengths)
        _, index, lengths = self._index
        if not isinstance(asked.address, IP_TYPES):
            return next((r for r in records if _covers(r.eid_prefix, asked)), None)
        network = asked.network
        found = [index[key] for length in lengths if length <= network.prefixlen
                 and (key := (asked.instance_id, network.supernet(new_prefix=length))) in index]
        return records[min(found)] if found else None


def _covers(outer: EidPrefix, inner: EidPrefix) -> bool:
    if outer.instance_id != inner.instance_id:
        return False
    if not isinstance(outer.address, IP_TYPES):
        return outer == inner
    if not isinstance(inner.address, IP_TYPES):
        return False
    return outer.network.version == inner.network.version and inner.network.subnet_of(outer.network)


def _addresses(record) -> tuple:
    """What a registration of `record` says: its locators' addresses, in order."""
    return tuple(loc.address for loc in record.locators)
