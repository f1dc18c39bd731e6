"""Publish/subscribe (RFC 9437): subscriptions, publications, Map-Notify retransmission and its Ack.

Rules, and why:

* A Map-Request with the N bit and an xTR-ID (I bit; without it the N bit
  is ignored) asks to subscribe (ITR-RLOC, inner source port, xTR-ID) to the
  prefix it names, never wider than the prefix it is answered with (a
  request for 0.0.0.0/0 answered with a /5 subscribes to the /5: what the
  ITR caches is all that can change for it).  A subscribing request whose only ITR-RLOC has AFI 0 withdraws it (the
  resolver decides which).
* Subscribing needs no key, and the ITR-RLOC is whatever the request says,
  so a request only makes a *candidate*: the server sends the confirming
  Map-Notify to the ITR-RLOC and the subscription (or its renewal, or its
  move to another ITR-RLOC) takes effect when the Map-Notify-Ack comes back.
  That proves the ITR-RLOC receives our messages and wants them.  The Ack
  must verify under the key the Notify was signed with (the site whose ETR
  registered the subscriber's xTR-ID; the Notify then echoes the request's
  nonce, RFC 9437); a subscriber without a key gets a nonce of ours, which
  only a receiver of the Notify can echo.  A candidate never acknowledged
  is dropped when its retransmissions give up; candidates are bounded
  (`MAX_CANDIDATES`, the oldest evicted first: a live ITR acknowledges
  within a round trip, a spoofed one never), and so is their rate
  (`CANDIDATES_PER_SECOND` new xTR-IDs, beyond which a request is only
  answered: its ITR subscribes with a later request).  The resolver asks
  `admits` before decoding a subscribing request, so a flood of new
  xTR-IDs beyond the budget costs a fixed-offset read each, not a full
  decode.  An xTR-ID with a live subscription, or one an ETR of a site
  registered, is not new: its renewals and new prefixes go through whatever
  the flood (a spoofer must first learn one, and then costs what any
  Map-Request outside the fast path costs).
* A subscription lives as long as the ITR may cache the answer it got (the
  Record TTL, at least 1 minute, at most 1 day).  At most `MAX_SUBSCRIPTIONS`
  are held, `MAX_SUBSCRIPTIONS_PER_RLOC` per ITR-RLOC.  Their journal
  entries are written together at most once per `JOURNAL_DELAY`, not one
  fsync per request: a subscription is soft state its ITR renews, and no
  Ack of ours promised it durable.
* When the RLOC set of a registered prefix changes (new, changed, moved,
  expired or withdrawn), every subscriber whose prefix overlaps it and every
  ETR that held it before gets a Map-Notify with the new record (no locators
  and TTL 0 when it is gone), retransmitted after `notify_retry_interval`,
  then twice as long each time (RFC 9301 §5.7), until a Map-Notify-Ack, at
  most `notify_retries` times.  The changes of one Map-Register go to each
  destination in one Map-Notify (`begin`/`end`), acknowledged as one.  Subscribers at
  the same ITR-RLOC, port and key get one Map-Notify between them (a change
  costs one datagram per ITR, not one per subscription); a lone subscriber's
  uses its last nonce + 1.
* They are signed with the key of the site whose ETR carries the
  subscriber's xTR-ID, else sent unsigned (a pure ITR shares no key).
* What we send to an address a request named (confirmations and their
  retransmissions) is charged to that address's byte credit (`reflect`),
  like the Map-Replies: a spoofed subscribe flood cannot aim them anywhere.
* Map-Notifies awaiting an Ack are bounded (`MAX_PENDING`; beyond it a
  Notify is sent once, untracked) and an Ack finds its Notify by (nonce,
  source), or by nonce alone behind a NAT, in one lookup each.
* A subscription remembers the source EIDs its ITR asked for (the last
  `MAX_SOURCES_PER_SUBSCRIPTION` hosts behind it), so publications are
  shaped per subscriber and per host when a policy is set: one Map-Notify
  carries each distinct answer.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Iterator

from lisp_ryu.config import SiteConfig
from lisp_ryu.effects import SendControl
from lisp_ryu.mapserver.journal import Journal, unsubscription_entry
from lisp_ryu.mapserver.publication import Batch, about, notify_parts
from lisp_ryu.mapserver.shaping import distinct
from lisp_ryu.mapserver.state import NONCE_MASK, EtrRegistration, IPAddress, IPNetwork, State, Subscription
from lisp_ryu.ratelimit import RateLimiter, ReflectionLimiter
from lisp_ryu.wire import (
    AuthAlgorithm,
    AuthResult,
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
#: Confirmed subscriptions held, in all and per ITR-RLOC (an ITR subscribes once per destination it resolves).
MAX_SUBSCRIPTIONS = 100_000
MAX_SUBSCRIPTIONS_PER_RLOC = 4096
#: Subscribing requests awaiting their Ack (a live ITR acknowledges within a round trip).
MAX_CANDIDATES = 10_000
#: Candidates of new xTR-IDs per second, in all: beyond it a subscribing request is only answered (a
#: spoofed subscribe flood then costs the fast path's read, not a decode, a Notify and its timers each).
CANDIDATES_PER_SECOND = 1000
#: Map-Notifies awaiting an Ack that are retransmitted.
MAX_PENDING = 100_000
#: Hosts per subscription whose answers publications are shaped for (the most recent ones).
MAX_SOURCES_PER_SUBSCRIPTION = 32
#: Seconds subscription changes wait to be journalled together.
JOURNAL_DELAY = 1.0

SubKey = tuple[int, IPNetwork, int]  # (iid, prefix, xTR-ID)
PendingKey = tuple[int, IPAddress]  # (nonce, destination)


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
    interval: float  # until the next retransmission: doubled at each one, so a slow peer is not buried
    candidate: Subscription | None = None  # the subscription its Ack confirms
    charged: bool = False  # sent to an address a request named: retransmissions draw on its byte credit


class PubSub:
    """Subscriptions (`state.subscriptions`), publications to them, and Map-Notifies awaiting their Ack."""

    def __init__(self, state: State, journal: Journal, reflect: ReflectionLimiter | None = None) -> None:
        self._state = state
        self._journal = journal
        self._count = state.count
        self._subscriptions = state.subscriptions
        self.reflect = reflect
        self._pending: dict[PendingKey, _Pending] = {}
        self._by_nonce: dict[int, PendingKey] = {}  # the latest Notify of each nonce, for Acks from behind a NAT
        self._candidates: OrderedDict[SubKey, PendingKey] = OrderedDict()  # oldest first
        self._per_rloc: dict[IPAddress, int] = {}
        self._per_xtr: dict[int, int] = {}  # live subscriptions per xTR-ID (known subscribers skip the budget)
        self._dirty: dict[SubKey, tuple[Subscription, bool]] = {}  # to journal: (subscription, still held)
        self._candidate_budget = RateLimiter(CANDIDATES_PER_SECOND, max_sources=1)
        #: Replicated mode, while a change another node committed is applied: the prefixes a publication
        #: would name go here instead (that node told the subscribers; see `replica.Applier`).
        self.held: list[tuple[int, IPNetwork]] | None = None
        #: Between `begin` and `end`: the publications collected, (former holders, subscribers) by destination.
        self._batch: Batch | None = None

    # ------------------------------------------------------------------ publications

    def begin(self) -> None:
        """Collect the publications of one message until `end`: each destination then gets one Map-Notify
        with every record the message changed for it, not one per record (a burst of moves would
        otherwise cost a datagram, a timer and an Ack per record and per peer).  A batch an exception
        left open is dropped with the message it belonged to (rolled back: nothing to tell)."""
        self._batch = Batch()

    def end(self, now: float) -> list[SendControl]:
        """The Map-Notifies of the publications since `begin`, former holders first."""
        batch, self._batch = self._batch, None
        return self._flush(batch, now) if batch is not None else []

    def discard(self) -> None:
        """Forget the open batch: its message was rolled back, nothing it would tell changed."""
        self._batch = None

    def publish(self, iid: int, net: IPNetwork, record: MappingRecord | None,
                holders: list[EtrRegistration], now: float) -> list[SendControl]:
        """Tell subscribers of overlapping prefixes and former holders that `net` changed (at `end`
        when a batch is open)."""
        if self.held is not None:
            self.held.append((iid, net))
            return []
        batch = self._batch if self._batch is not None else Batch()
        batch.add(self._state, iid, net, record, holders, self._overlapping_subscriptions(iid, net))
        return [] if self._batch is not None else self._flush(batch, now)

    def _flush(self, batch: Batch, now: float) -> list[SendControl]:
        state = self._state
        former, subscribers = batch.former, batch.subscribers
        # Former holders first: until it hears, the old site still delivers the workload to a port
        # that is gone (its own hosts' traffic and whatever ITRs still send it is lost there), while a
        # subscriber that hears late only sends to the old site, which redirects once it knows.
        effects: list[SendControl] = []
        for (source, port, name, algorithm, key_id), (records, nets) in former.items():
            site = state.sites.get(name)
            for part in notify_parts(distinct(records)):
                effects.append(self.notify(source, port, state.nonces() & NONCE_MASK, part, site,
                                           algorithm or AuthAlgorithm.HMAC_SHA_1_96, key_id,
                                           f"{about(nets)} to former holder {source} (site {name})", now))
            self._count("notify.former_holders")
        for (rloc, port, _), (members, records, nets) in subscribers.items():
            subs = list(members.values())
            site = self.subscriber_site(subs[0])
            # One subscription: its last nonce + 1 (RFC 9437).  Several share one Notify, so no one
            # sequence can be followed: a fresh nonce, kept by each of them for its next one.
            if len(subs) == 1:
                nonce = (subs[0].nonce + 1) & NONCE_MASK
            else:
                nonce = state.nonces() & NONCE_MASK
                self._count("notify.coalesced", len(subs) - 1)
            for sub in subs:
                self._set_nonce(sub, nonce, now)
            what = f"{about(nets)} to subscriber {rloc}" + (f" ({len(subs)} subscriptions)" if len(subs) > 1 else "")
            for n, part in enumerate(notify_parts(distinct(records))):
                effects.append(self.notify(rloc, port, nonce if n == 0 else state.nonces() & NONCE_MASK, part,
                                           site, AuthAlgorithm.HMAC_SHA_1_96, None, what, now))
            self._count("notify.subscribers")
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

    def _set_nonce(self, sub: Subscription, nonce: int, now: float) -> None:
        """The nonce a publication used, kept for the next one (journalled with the next batch)."""
        subs = self._subscriptions.get(sub.iid, sub.prefix)
        if subs is not None and sub.xtr_id in subs:
            subs[sub.xtr_id] = updated = replace(sub, nonce=nonce)
            self._mark((sub.iid, sub.prefix, sub.xtr_id), updated, True, now)

    def subscriber_site(self, sub: Subscription) -> SiteConfig | None:
        """The site whose key signs notifications to `sub`: the one its xTR-ID registered with."""
        return self._site_of(sub.xtr_id)

    def _site_of(self, xtr_id: int) -> SiteConfig | None:
        name = self._state.xtr_sites.get(xtr_id)
        return self._state.sites.get(name) if name is not None else None

    def notify(self, destination: IPAddress, port: int, nonce: int, record: MappingRecord | tuple[MappingRecord, ...],
               site: SiteConfig | None, algorithm: int, key_id: int | None, what: str, now: float) -> SendControl:
        """A Map-Notify (one record, or several in order) that is retransmitted until acknowledged."""
        effect, _ = self._send(destination, port, nonce, record, site, algorithm, key_id, what, now)
        assert effect is not None  # only a charged Notify can be held back
        return effect

    def _send(self, destination: IPAddress, port: int, nonce: int,
              record: MappingRecord | tuple[MappingRecord, ...], site: SiteConfig | None, algorithm: int,
              key_id: int | None, what: str, now: float, charged: bool = False,
              asked: int = 0) -> tuple[SendControl | None, _Pending | None]:
        """`notify`, and the entry awaiting its Ack (None when untracked); nothing when `charged` and the
        destination's byte credit is spent."""
        state = self._state
        config = state.config
        records = record if isinstance(record, tuple) else (record,)
        notify = MapNotify(nonce=nonce, records=records, key_id=key_id or 0)
        payload = sign(notify, site.key, algorithm).encode() if site is not None else notify.encode()
        if charged and not self._may_send(destination, payload, now, asked):
            return None, None
        key = (nonce, destination)
        old = self._pending.get(key)
        if old is not None:
            self._forget(key, old)
        pending = None
        if len(self._pending) < MAX_PENDING:
            pending = _Pending(destination, port, nonce, payload, what, site.key if site else None,
                               config.notify_retries, now + config.notify_retry_interval,
                               config.notify_retry_interval, charged=charged)
            self._pending[key] = pending
            self._by_nonce[nonce] = key
            state.schedule(pending.next_at, "notify", key)
        else:
            self._count("notify.untracked")
            state.log_throttled("notify-untracked", logging.WARNING,
                                "%d Map-Notifies await an Ack: %s sent once, not retransmitted", MAX_PENDING, what)
        self._count("sent.map_notify")
        return SendControl(destination, port, payload, what), pending

    def _may_send(self, destination: IPAddress, payload: bytes, now: float, asked: int = 0) -> bool:
        """Whether the byte credit of `destination` (earning `asked` bytes' worth) lets `payload` go to it."""
        if self.reflect is None or self.reflect.allow(destination.packed, asked, len(payload), now):
            return True
        self._count("dropped.reflection_limited")
        self._state.log_throttled("reflection", logging.WARNING,
                                  "holding back answers to %s: over its byte credit (reflection limit)", destination)
        return False

    def _forget(self, key: PendingKey, pending: _Pending) -> None:
        del self._pending[key]
        self._state.disarm("notify", key)
        if self._by_nonce.get(key[0]) == key:
            del self._by_nonce[key[0]]
        candidate = pending.candidate
        if candidate is not None:
            ckey = (candidate.iid, candidate.prefix, candidate.xtr_id)
            if self._candidates.get(ckey) == key:
                del self._candidates[ckey]

    def unsend(self, effects: list[SendControl]) -> int:
        """Forget the Map-Notifies among `effects` that were never sent (their change was not committed:
        replicated mode), so none is retransmitted; how many."""
        dropped = 0
        for effect in effects:
            key = (int.from_bytes(effect.payload[4:12], "big"), effect.destination) if len(effect.payload) >= 12 \
                else None
            pending = self._pending.get(key) if key is not None else None
            if pending is not None and pending.payload is effect.payload:
                self._forget(key, pending)
                dropped += 1
        return dropped

    def retransmit(self, key: tuple, when: float, now: float) -> SendControl | None:
        """The "notify" timer: send an unacknowledged Map-Notify again, or give up on it."""
        pending = self._pending.get(key)
        if pending is None:
            return None
        if pending.next_at != when:  # a newer Notify took the key: its own time
            self._state.schedule(pending.next_at, "notify", key)
            return None
        config = self._state.config
        if pending.retries_left <= 0:
            self._forget(key, pending)
            candidate = pending.candidate
            if candidate is not None:
                self._count("subscriptions.unconfirmed")
                self._state.log_throttled("unconfirmed", logging.INFO,
                                          "%s never acknowledged the subscription of xTR-ID %032x to %s iid %d: "
                                          "not subscribed", pending.destination, candidate.xtr_id, candidate.prefix,
                                          candidate.iid)
            else:
                self._count("notify.unacknowledged")
                self._state.log_throttled("unacknowledged", logging.WARNING,
                                          "%s to %s: no Map-Notify-Ack after %d retransmissions, giving up",
                                          pending.what, pending.destination, config.notify_retries)
            return None
        pending.retries_left -= 1
        pending.interval *= 2
        pending.next_at = now + pending.interval
        self._state.schedule(pending.next_at, "notify", key)
        if pending.charged and not self._may_send(pending.destination, pending.payload, now):
            return None
        self._count("sent.map_notify_retransmit")
        return SendControl(pending.destination, pending.port, pending.payload, f"{pending.what} (retransmission)")

    def on_map_notify_ack(self, payload: bytes, source: IPAddress, now: float) -> list[SendControl]:
        ack = MapNotifyAck.decode(payload)
        self._count("received.map_notify_ack")
        key = (ack.nonce, source)
        pending = self._pending.get(key)
        if pending is None:  # behind a NAT the Ack may come from another address
            other = self._by_nonce.get(ack.nonce)
            if other is not None:
                key, pending = other, self._pending.get(other)
        if pending is None:
            self._count("dropped.map_notify_ack_unmatched")
            return []
        if pending.key is not None:
            result = check_authentication(payload, pending.key)
            if result is not AuthResult.OK:
                self._count(f"rejected.map_notify_ack.auth-{result.value}")
                self._state.log_throttled("ack-auth", logging.WARNING, "rejected Map-Notify-Ack from %s: "
                                          "authentication %s", source, result.value)
                return []
        self._forget(key, pending)
        self._count("notify.acknowledged")
        if pending.candidate is not None:
            self._confirm(pending.candidate, now)
        return []

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def candidate_count(self) -> int:
        return len(self._candidates)

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
                  record: MappingRecord, now: float, source_eid: IPAddress | None = None,
                  asked: int = 0) -> list[SendControl]:
        """Ask `rloc` to confirm subscribing (or renewing) to `net`: a Map-Notify carrying `record`."""
        assert request.xtr_id is not None and request.site_id is not None  # checked by the caller
        xtr_id = request.xtr_id
        self._count("subscriptions.requested")
        if self.subscription(iid, net, xtr_id) is None and not self._room_for(rloc, None):
            return []
        if not self._known(xtr_id) and not self._candidate_budget.allow(None, now):
            self._count("dropped.subscribe_over_budget")
            self._state.log_throttled("subscribe-budget", logging.WARNING, "more than %d new subscribers/s: "
                                      "answered without subscribing (%s)", CANDIDATES_PER_SECOND, rloc)
            return []
        minutes = min(max(record.ttl, SUBSCRIPTION_MIN_MINUTES), SUBSCRIPTION_MAX_MINUTES)
        site = self._site_of(xtr_id)
        # Keyed: the Ack is authenticated, and the RFC's echoed nonce lets the ITR match it to its request.
        # Unkeyed: our own nonce, which only a receiver of the Notify can echo.
        nonce = request.nonce if site is not None else self._state.nonces() & NONCE_MASK
        candidate = Subscription(iid, net, xtr_id, request.site_id, rloc, port, nonce, now, now + minutes * 60.0,
                                 (source_eid,) if source_eid is not None else ())
        ckey = (iid, net, xtr_id)
        older = self._candidates.pop(ckey, None)
        if older is not None and older in self._pending:
            self._forget(older, self._pending[older])
        while len(self._candidates) >= MAX_CANDIDATES:
            _, evicted = self._candidates.popitem(last=False)
            if evicted in self._pending:
                self._forget(evicted, self._pending[evicted])
            self._count("subscriptions.candidates_evicted")
        effect, pending = self._send(rloc, port, nonce, record, site, AuthAlgorithm.HMAC_SHA_1_96, None,
                                     f"Map-Notify confirming subscription of {rloc} to {net} iid {iid}", now,
                                     charged=True, asked=asked)
        if effect is None:
            return []
        if pending is not None:
            pending.candidate = candidate
            self._candidates[ckey] = (nonce, rloc)
        return [effect]

    def admits(self, xtr_id: int, now: float) -> bool:
        """Whether a subscribing request of `xtr_id` is worth decoding: a known subscriber always, a
        new one while the budget has room.  Takes no token: `subscribe` takes it, after the decode."""
        return self._known(xtr_id) or self._candidate_budget.ready(None, now)

    def _known(self, xtr_id: int) -> bool:
        """A live subscriber, or the xTR-ID of an ETR that registered with a site's key."""
        return xtr_id in self._per_xtr or xtr_id in self._state.xtr_sites

    def shed(self, whom: IPAddress | bytes, answered: bool) -> None:
        """Count a subscribing request refused by `admits` before its decode: answered by the fast path
        without subscribing, or (when only the full path could answer it) dropped."""
        self._count("subscriptions.requested")
        self._count("dropped.subscribe_over_budget")
        if isinstance(whom, bytes):
            whom = ipaddress.ip_address(whom)
        if answered:
            self._state.log_throttled("subscribe-budget", logging.WARNING, "more than %d new subscribers/s: "
                                      "answered without subscribing (%s)", CANDIDATES_PER_SECOND, whom)
        else:
            self._count("dropped.map_request_shed")
            self._state.log_throttled("subscribe-shed", logging.WARNING, "more than %d new subscribers/s: dropped "
                                      "a subscribing request from %s unread", CANDIDATES_PER_SECOND, whom)

    def _room_for(self, rloc: IPAddress, moving_from: IPAddress | None) -> bool:
        """Whether one more subscription at `rloc` fits (counted and logged when not)."""
        if moving_from is None and self._state.subscription_count >= MAX_SUBSCRIPTIONS:
            reason = "table-full"
        elif moving_from != rloc and self._per_rloc.get(rloc, 0) >= MAX_SUBSCRIPTIONS_PER_RLOC:
            reason = "rloc-full"
        else:
            return True
        self._count(f"rejected.subscribe.{reason}")
        self._state.log_throttled(f"subscribe-{reason}", logging.WARNING, "refused a subscription at %s: %s",
                                  rloc, reason)
        return False

    def _confirm(self, candidate: Subscription, now: float) -> None:
        """The candidate's Ack came: it is the subscription now (new, renewed or moved)."""
        known = self.subscription(candidate.iid, candidate.prefix, candidate.xtr_id)
        if not self._room_for(candidate.itr_rloc, known.itr_rloc if known is not None else None):
            return
        sources = known.source_eids if known is not None else ()
        for source in candidate.source_eids:  # the newest last; the oldest forgotten beyond the bound
            sources = (*(s for s in sources if s != source), source)[-MAX_SOURCES_PER_SUBSCRIPTION:]
        sub = replace(candidate, source_eids=sources, subscribed_at=known.subscribed_at if known else now)
        self.set_subscription(sub, now)
        if known is None:
            LOG.info("%s (xTR-ID %032x) subscribed to %s iid %d", sub.itr_rloc, sub.xtr_id, sub.prefix, sub.iid)
            self._count("subscriptions.new")
        else:
            self._count("subscriptions.renewed")

    def set_subscription(self, sub: Subscription, now: float | None = None) -> None:
        subs = self._subscriptions.get(sub.iid, sub.prefix)
        if subs is None:
            subs = {}
            self._subscriptions.insert(sub.iid, sub.prefix, subs)
        old = subs.get(sub.xtr_id)
        if old is None:
            self._state.subscription_count += 1
            self._per_xtr[sub.xtr_id] = self._per_xtr.get(sub.xtr_id, 0) + 1
        if old is None or old.itr_rloc != sub.itr_rloc:
            self._per_rloc[sub.itr_rloc] = self._per_rloc.get(sub.itr_rloc, 0) + 1
            if old is not None:
                self._uncount_rloc(old.itr_rloc)
        subs[sub.xtr_id] = sub
        key = (sub.iid, sub.prefix, sub.xtr_id)
        self._mark(key, sub, True, now)
        self._state.schedule(sub.expires, "sub", key)

    def _uncount_rloc(self, rloc: IPAddress) -> None:
        left = self._per_rloc[rloc] - 1
        if left:
            self._per_rloc[rloc] = left
        else:
            del self._per_rloc[rloc]

    def _mark(self, key: SubKey, sub: Subscription, held: bool, now: float | None) -> None:
        """Journal this subscription (or its end) with the others of the next `JOURNAL_DELAY`."""
        if self._journal.store is None:  # no store, or a restore rebuilding the tables
            return
        if now is None or self._journal.replicated:
            # A caller outside the message path (REST): journalled with its own batch.  Replicated: with
            # the message's commit, so the node that notifies next continues from this nonce.
            self._dirty.pop(key, None)
            if held:
                self._journal.record_subscription(sub)
            else:
                self._journal.record(unsubscription_entry(sub))
            return
        self._dirty[key] = (sub, held)
        self._state.schedule(now + JOURNAL_DELAY, "journal", ())

    def flush_journal(self) -> None:
        """Hand the subscription changes since the last call to the journal (the caller flushes it)."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        for sub, held in dirty.values():
            if held:
                self._journal.record_subscription(sub)
            else:
                self._journal.record(unsubscription_entry(sub))

    def drop_subscription(self, sub: Subscription, journal: bool = True, now: float | None = None) -> None:
        subs = self._subscriptions.get(sub.iid, sub.prefix)
        if subs is None or sub.xtr_id not in subs:
            return
        held = subs.pop(sub.xtr_id)
        self._state.subscription_count -= 1
        left = self._per_xtr[sub.xtr_id] - 1
        if left:
            self._per_xtr[sub.xtr_id] = left
        else:
            del self._per_xtr[sub.xtr_id]
        self._uncount_rloc(held.itr_rloc)
        if not subs:
            self._subscriptions.remove(sub.iid, sub.prefix)
        key = (sub.iid, sub.prefix, sub.xtr_id)
        if journal:
            self._mark(key, held, False, now)
        else:
            self._dirty.pop(key, None)

    def expire(self, key: tuple, when: float) -> None:
        """The "sub" timer: drop the subscription if this is still its expiry (not journalled, see journal)."""
        iid, net, xtr_id = key
        sub = self.subscription(iid, net, xtr_id)
        if sub is None:
            return
        if sub.expires != when:  # renewed since it was armed: one timer per subscription, armed again
            self._state.schedule(sub.expires, "sub", key)
            return
        LOG.info("subscription of %s (xTR-ID %032x) to %s iid %d expired", sub.itr_rloc, xtr_id, net, iid)
        self._count("subscriptions.expired")
        self.drop_subscription(sub, journal=False)

