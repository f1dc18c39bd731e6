"""Publish/subscribe (RFC 9437): subscriptions, publications, Map-Notify retransmission and its Ack.

Rules, and why:

* A Map-Request with the N bit and an xTR-ID (I bit; without it the N bit
  is ignored) subscribes (ITR-RLOC, inner source port, xTR-ID) to the
  requested prefix; the server confirms with a Map-Notify carrying the
  current mapping.  A subscription lives as long as the ITR may cache the
  answer it got (the Record TTL, at least 1 minute, at most 1 day) and each
  new subscribing request renews it; a subscribing request whose only
  ITR-RLOC has AFI 0 withdraws it (the resolver decides which).
* When the RLOC set of a registered prefix changes (new, changed, moved,
  expired or withdrawn), every subscriber whose prefix overlaps it and every
  ETR that held it before gets a Map-Notify with the new record (no locators
  and TTL 0 when it is gone), retransmitted every `notify_retry_interval`
  until a Map-Notify-Ack, at most `notify_retries` times.  Subscription
  notifications use the subscriber's last nonce + 1.
* They are signed with the key of the site whose ETR carries the
  subscriber's xTR-ID, else sent unsigned (a pure ITR shares no key).
* At most `MAX_SUBSCRIPTIONS` are held: subscribing needs no key.
* A subscription remembers the source EIDs its ITR asked for (the last
  `MAX_SOURCES_PER_SUBSCRIPTION` hosts behind it), so publications are
  shaped per subscriber and per host when a policy is set: one Map-Notify
  carries each distinct answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Iterator

from lisp_ryu.config import SiteConfig
from lisp_ryu.effects import SendControl
from lisp_ryu.mapserver.journal import Journal, unsubscription_entry
from lisp_ryu.mapserver.shaping import distinct, shape
from lisp_ryu.mapserver.state import NONCE_MASK, EtrRegistration, IPAddress, IPNetwork, State, Subscription
from lisp_ryu.wire import (
    AuthAlgorithm,
    AuthResult,
    EidPrefix,
    MapNotify,
    MapNotifyAck,
    MappingRecord,
    MapRequest,
    check_authentication,
    sign,
)

LOG = logging.getLogger("lisp_ryu.mapserver")

SUBSCRIPTION_MIN_MINUTES = 1
SUBSCRIPTION_MAX_MINUTES = 24 * 60
#: Subscriptions need no key: bound what unauthenticated requests can make us hold.
MAX_SUBSCRIPTIONS = 100_000
#: Hosts per subscription whose answers publications are shaped for (the most recent ones).
MAX_SOURCES_PER_SUBSCRIPTION = 32


@dataclass(slots=True)
class _Pending:
    """A Map-Notify waiting for its Map-Notify-Ack."""

    destination: IPAddress
    port: int
    nonce: int
    payload: bytes
    what: str
    key: str | None  # the key the Notify was signed with (the Ack must verify under it)
    retries_left: int
    next_at: float


class PubSub:
    """Subscriptions (`state.subscriptions`), publications to them, and Map-Notifies awaiting their Ack."""

    def __init__(self, state: State, journal: Journal) -> None:
        self._state = state
        self._journal = journal
        self._count = state.count
        self._subscriptions = state.subscriptions
        self._pending: dict[tuple[int, IPAddress], _Pending] = {}

    # ------------------------------------------------------------------ publications

    def publish(self, iid: int, net: IPNetwork, record: MappingRecord | None,
                holders: list[EtrRegistration], now: float) -> list[SendControl]:
        """Tell subscribers of overlapping prefixes and former holders that `net` changed."""
        state = self._state
        policy = state.policy
        shaped = record is not None and not policy.empty
        if record is None:
            record = MappingRecord.for_prefix(EidPrefix(net.network_address, net.prefixlen, iid), (), ttl=0,
                                              action=state.negative_action)
        entry = state.registered.get(iid, net) if shaped else None
        effects: list[SendControl] = []
        for sub in self._overlapping_subscriptions(iid, net):
            nonce = (sub.nonce + 1) & NONCE_MASK
            updated = replace(sub, nonce=nonce)
            self.set_subscription(updated)
            told: tuple[MappingRecord, ...] = (record,)
            if shaped:  # what each of this subscriber's hosts may see of the new record
                probe = sub.prefix.network_address if sub.prefix.subnet_of(net) else net.network_address
                told = distinct(shape(iid, net, record, entry.site if entry else None, source, sub.itr_rloc, probe,
                                      policy, state.config.negative_ttl_minutes)
                                for source in sub.source_eids or (None,))
            effects.append(self.notify(sub.itr_rloc, sub.port, nonce, told, self.subscriber_site(sub),
                                       AuthAlgorithm.HMAC_SHA_1_96, None,
                                       f"Map-Notify for {net} iid {iid} to subscriber {sub.itr_rloc}", now))
            self._count("notify.subscribers")
        for reg in holders:
            site = state.sites.get(reg.site)
            effects.append(self.notify(reg.source, reg.port, state.nonces() & NONCE_MASK, record, site,
                                       reg.algorithm or AuthAlgorithm.HMAC_SHA_1_96, reg.key_id,
                                       f"Map-Notify for {net} iid {iid} to former holder {reg.source} "
                                       f"(site {reg.site})", now))
            self._count("notify.former_holders")
        return effects

    def _overlapping_subscriptions(self, iid: int, net: IPNetwork) -> list[Subscription]:
        found: list[Subscription] = []
        for _, subs in self._subscriptions.more_specifics(iid, net):
            found.extend(subs.values())
        hit = self._subscriptions.covering(iid, net, strict=True)
        while hit is not None:
            found.extend(hit[1].values())
            hit = self._subscriptions.covering(iid, hit[0], strict=True)
        return found

    def subscriber_site(self, sub: Subscription) -> SiteConfig | None:
        """The site whose key signs notifications to `sub`: the one its xTR-ID registered with."""
        name = self._state.xtr_sites.get(sub.xtr_id)
        return self._state.sites.get(name) if name is not None else None

    def notify(self, destination: IPAddress, port: int, nonce: int, record: MappingRecord | tuple[MappingRecord, ...],
               site: SiteConfig | None, algorithm: int, key_id: int | None, what: str, now: float) -> SendControl:
        """A Map-Notify (one record, or several in order) that is retransmitted until acknowledged."""
        config = self._state.config
        records = record if isinstance(record, tuple) else (record,)
        notify = MapNotify(nonce=nonce, records=records, key_id=key_id or 0)
        payload = sign(notify, site.key, algorithm).encode() if site is not None else notify.encode()
        key = (nonce, destination)
        pending = _Pending(destination, port, nonce, payload, what, site.key if site else None,
                           config.notify_retries, now + config.notify_retry_interval)
        self._pending[key] = pending
        self._state.schedule(pending.next_at, "notify", key)
        self._count("sent.map_notify")
        return SendControl(destination, port, payload, what)

    def retransmit(self, key: tuple, when: float, now: float) -> SendControl | None:
        """The "notify" timer: send an unacknowledged Map-Notify again, or give up on it."""
        pending = self._pending.get(key)
        if pending is None or pending.next_at != when:
            return None
        config = self._state.config
        if pending.retries_left <= 0:
            del self._pending[key]
            self._count("notify.unacknowledged")
            LOG.warning("%s to %s: no Map-Notify-Ack after %d retransmissions, giving up",
                        pending.what, pending.destination, config.notify_retries)
            return None
        pending.retries_left -= 1
        pending.next_at = now + config.notify_retry_interval
        self._state.schedule(pending.next_at, "notify", key)
        self._count("sent.map_notify_retransmit")
        return SendControl(pending.destination, pending.port, pending.payload, f"{pending.what} (retransmission)")

    def on_map_notify_ack(self, payload: bytes, source: IPAddress) -> list[SendControl]:
        ack = MapNotifyAck.decode(payload)
        self._count("received.map_notify_ack")
        key = (ack.nonce, source)
        pending = self._pending.get(key)
        if pending is None:  # behind a NAT the Ack may come from another address
            key, pending = next(((k, p) for k, p in self._pending.items() if k[0] == ack.nonce), (key, None))
        if pending is None:
            self._count("dropped.map_notify_ack_unmatched")
            return []
        if pending.key is not None:
            result = check_authentication(payload, pending.key)
            if result is not AuthResult.OK:
                self._count(f"rejected.map_notify_ack.auth-{result.value}")
                return []
        del self._pending[key]
        self._count("notify.acknowledged")
        return []

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------ subscriptions

    def subscription(self, iid: int, net: IPNetwork, xtr_id: int) -> Subscription | None:
        subs = self._subscriptions.get(iid, net)
        return subs.get(xtr_id) if subs is not None else None

    def subscriptions(self, after: tuple[int, IPNetwork, int] | None = None) -> Iterator[Subscription]:
        """All subscriptions; with `after` (iid, prefix, xTR-ID), those after it in (iid, prefix, xTR-ID)
        order, a cursor that holds while the table changes."""
        if after is None:
            for _, _, subs in self._subscriptions:
                yield from subs.values()
            return
        iid, net, xtr_id = after
        if (subs := self._subscriptions.get(iid, net)) is not None:
            yield from (subs[x] for x in sorted(x for x in subs if x > xtr_id))
        for _, _, subs in self._subscriptions.items_after(iid, net):
            yield from (subs[x] for x in sorted(subs))

    def subscribe(self, request: MapRequest, iid: int, net: IPNetwork, rloc: IPAddress, port: int,
                  record: MappingRecord, now: float, source_eid: IPAddress | None = None) -> list[SendControl]:
        """Subscribe (or renew) the requester to `net`, confirmed by a Map-Notify carrying `record`."""
        minutes = min(max(record.ttl, SUBSCRIPTION_MIN_MINUTES), SUBSCRIPTION_MAX_MINUTES)
        assert request.xtr_id is not None and request.site_id is not None  # checked by the caller
        known = self.subscription(iid, net, request.xtr_id)
        if known is None and self._state.subscription_count >= MAX_SUBSCRIPTIONS:
            self._count("rejected.subscribe.table-full")
            return []
        sources = known.source_eids if known is not None else ()
        if source_eid is not None:  # the newest last; the oldest forgotten beyond the bound
            sources = (*(s for s in sources if s != source_eid), source_eid)[-MAX_SOURCES_PER_SUBSCRIPTION:]
        sub = Subscription(iid, net, request.xtr_id, request.site_id, rloc, port, request.nonce,
                           known.subscribed_at if known else now, now + minutes * 60.0, sources)
        self.set_subscription(sub)
        if known is None:
            LOG.info("%s (xTR-ID %032x) subscribed to %s iid %d", rloc, request.xtr_id, net, iid)
            self._count("subscriptions.new")
        else:
            self._count("subscriptions.renewed")
        return [self.notify(rloc, port, request.nonce, record, self.subscriber_site(sub),
                            AuthAlgorithm.HMAC_SHA_1_96, None,
                            f"Map-Notify confirming subscription of {rloc} to {net} iid {iid}", now)]

    def set_subscription(self, sub: Subscription) -> None:
        subs = self._subscriptions.get(sub.iid, sub.prefix)
        if subs is None:
            subs = {}
            self._subscriptions.insert(sub.iid, sub.prefix, subs)
        old = subs.get(sub.xtr_id)
        if old is None:
            self._state.subscription_count += 1
        subs[sub.xtr_id] = sub
        self._journal.record_subscription(sub)
        if old is None or old.expires != sub.expires:
            self._state.schedule(sub.expires, "sub", (sub.iid, sub.prefix, sub.xtr_id))

    def drop_subscription(self, sub: Subscription, journal: bool = True) -> None:
        subs = self._subscriptions.get(sub.iid, sub.prefix)
        if subs is None or sub.xtr_id not in subs:
            return
        del subs[sub.xtr_id]
        self._state.subscription_count -= 1
        if not subs:
            self._subscriptions.remove(sub.iid, sub.prefix)
        if journal:
            self._journal.record(unsubscription_entry(sub))

    def expire(self, key: tuple, when: float) -> None:
        """The "sub" timer: drop the subscription if this is still its expiry (not journalled, see journal)."""
        iid, net, xtr_id = key
        sub = self.subscription(iid, net, xtr_id)
        if sub is not None and sub.expires == when:
            LOG.info("subscription of %s (xTR-ID %032x) to %s iid %d expired", sub.itr_rloc, xtr_id, net, iid)
            self._count("subscriptions.expired")
            self.drop_subscription(sub, journal=False)
