"""The Map-Server / Map-Resolver core (RFC 9301 §8, RFC 9437) as a sans-IO actor.

`MapServer.handle_control(payload, source, port, now)` takes one received
datagram, `handle_timer(now)` runs what is due, `next_deadline()` says when;
each returns the datagrams to send as `SendControl` effects.  The core never
sends, sleeps or reads a clock.  The only thing it touches outside itself is
the injected store, whose `append` must be durable before the Map-Notify that
acknowledges a change goes out (the glue sends the effects only after the
handler returned, so the order holds by construction).

`MapServer` dispatches and keeps the public API; the work is done by parts
composed around one shared `state.State`, each saying in its docstring the
rules it follows and why:

    registry    Map-Register: sites, authorisation, registrations, expiry
    resolver    Map-Request: answers, negative answers, policy, the fast path
    pubsub      subscriptions, publications, Map-Notify retransmission and Ack
    northbound  rules, RLOC overrides and static mappings stated over REST
    journal     what is made durable, snapshots, restore

Robustness: datagrams over `MAX_DATAGRAM`, undecodable ones and those over a
source's token bucket are dropped and counted; nothing malformed reaches
state.  What a request makes us send to the address it names (Map-Replies,
subscription confirmations) is also charged to that address's byte credit
(`ratelimit.ReflectionLimiter`, `REFLECTION_FACTOR` times the bytes of the
requests naming it plus `REFLECTION_RATE` bytes/s): a spoofed source cannot
aim our answers at a third party.
"""

from __future__ import annotations

import heapq
import ipaddress
import logging
from typing import Callable, Iterator

from lisp_ryu.config import MapServerConfig
from lisp_ryu.effects import SendControl
from lisp_ryu.mapping.policy import Policy, RlocOverride, Rule, StaticMapping
from lisp_ryu.mapserver.answer_cache import DEFAULT_CAPACITY, AnswerCache
from lisp_ryu.mapserver import replica
from lisp_ryu.mapserver.journal import Journal, JournalUnavailable
from lisp_ryu.mapserver.northbound import Northbound
from lisp_ryu.mapserver.pubsub import PubSub
from lisp_ryu.mapserver.registry import Registry
from lisp_ryu.mapserver.resolver import Resolver
from lisp_ryu.mapserver.state import EtrRegistration, IPAddress, IPNetwork, State, Subscription
from lisp_ryu.mapserver.store import Store
from lisp_ryu.ratelimit import RateLimiter, ReflectionLimiter
from lisp_ryu.wire import LispDecodeError, MappingRecord

LOG = logging.getLogger("lisp_ryu.mapserver")

#: Larger datagrams are dropped unread: a jumbo frame, room for a Map-Register of a few
#: hundred single-locator records.
MAX_DATAGRAM = 9216
#: The amplification an address named as ITR-RLOC may get: bytes sent to it per byte of the requests
#: naming it, plus bytes per second and a burst (room for one large answer to an ITR that asks rarely).
REFLECTION_FACTOR = 4.0
REFLECTION_RATE = 256.0
REFLECTION_BURST = 4096.0


class MapServer:
    """Map-Server and Map-Resolver: registrations, resolution, publish/subscribe."""

    def __init__(
        self,
        config: MapServerConfig,
        *,
        nonces: Callable[[], int],
        now: float,
        store: Store | None = None,
        quick_path: bool = True,
        answer_cache_size: int = DEFAULT_CAPACITY,
    ) -> None:
        self.config = config
        self._nonces = nonces
        self._answer_cache_size = answer_cache_size
        self._store = store
        self._limiter = RateLimiter(config.rate_limit_per_source)
        self._reflect = ReflectionLimiter(REFLECTION_FACTOR, REFLECTION_RATE, REFLECTION_BURST)
        self._journal = Journal(State(config, nonces, AnswerCache(answer_cache_size)), store)
        self._assemble(quick_path)
        if store is not None:
            self._journal.restore(store.load(), now, self._registry, self._pubsub)
            self._resolver.refresh_fast_path()  # the restored policy and static mappings
            self._journal.on_failure = self._roll_back

    def _assemble(self, quick_path: bool, state: State | None = None) -> None:
        """The parts around one state (a new one after a rollback: see `_roll_back`)."""
        if state is not None:
            self._journal.attach(state)
        state = self._state = self._journal.state
        self._count = state.count
        self._pubsub = PubSub(state, self._journal, self._reflect)
        self._registry = Registry(state, self._journal, self._pubsub)
        self._resolver = Resolver(state, self._pubsub, self._limiter, quick_path, self._reflect)
        self._northbound = Northbound(state, self._journal, self._resolver, self._pubsub)
        # Handlers bound once: handle_control runs per datagram.
        self._on_map_register = self._registry.on_map_register
        self._on_ecm = self._resolver.on_ecm
        self._on_map_notify_ack = self._pubsub.on_map_notify_ack
        #: The fast path, for a server loop that sends its raw answer itself (see `Resolver.reply_quickly`):
        #: (datagram, destination as 4 or 16 bytes, port), or None: give the datagram to `handle_control`.
        #: Replaced by a rollback: a loop that bound it re-binds it after each `handle_control`.
        self.reply_quickly = self._resolver.reply_quickly

    def _roll_back(self) -> None:
        """After a change could not be journalled: the tables as the store holds them (the acknowledged state).

        Rebuilt like a restart, in a new state (pending Map-Notify retransmissions are lost, as by a
        restart); counters carry over.  Costs a restore, once per outage: while the journal is down
        the registry refuses changes before making them.
        """
        counters = dict(self.counters)
        state = State(self.config, self._nonces, AnswerCache(self._answer_cache_size))
        self._assemble(self._resolver.quick_path, state)
        assert self._store is not None
        self._journal.restore(self._store.load(), self._journal.now, self._registry, self._pubsub)
        self._resolver.refresh_fast_path()
        state.counters.clear()
        state.counters.update(counters)

    # ------------------------------------------------------------------ actor interface

    def handle_control(self, payload: bytes, source: IPAddress, port: int, now: float,
                       flush: bool = True) -> list[SendControl]:
        """One datagram received on the control socket from (source, port).

        With `flush` False what it changed is written by the next `flush_journal` (or the next message
        handled with `flush`), so that a burst of Map-Registers costs one write and one fsync: the
        caller sends what it returned only once `flush_journal` said it is durable."""
        quick = self.reply_quickly(payload, source, now)  # None unless the fast path is open and fits
        if quick is not None:
            datagram, destination, to_port = quick
            if not datagram:
                return []  # rate limited
            what = "Map-Request forwarded to the ETR" if datagram is payload else "Map-Reply"
            return [SendControl(ipaddress.ip_address(destination), to_port, datagram, what)]
        try:
            return self._handle(payload, source, port, now, flush)
        except JournalUnavailable:
            self._pubsub.discard()  # what the message would have published, rolled back with it
            return []  # rolled back: nothing changed, so nothing is acknowledged nor published

    def flush_journal(self, now: float) -> bool:
        """Write what messages handled without `flush` changed.  True: durable, send what they returned;
        False: it could not be written and every one of them was rolled back, send none of it."""
        try:
            self._journal.flush(now)
        except JournalUnavailable:
            return False
        return True

    def _handle(self, payload: bytes, source: IPAddress, port: int, now: float,
                flush: bool = True) -> list[SendControl]:
        self._count("received.datagrams")
        if len(payload) > MAX_DATAGRAM:
            self._count("dropped.oversized")
            return []
        if not self._limiter.allow(source, now):
            self._count("dropped.rate_limited")
            return []
        if not payload:
            self._count("dropped.malformed")
            return []
        kind = payload[0] >> 4
        try:
            if kind == 3:
                return self._on_map_register(payload, source, port, now)
            if kind == 8:
                return self._on_ecm(payload, source, now)
            if kind == 5:
                return self._on_map_notify_ack(payload, source, now)
            if kind == 1:
                self._count("dropped.map_request_not_encapsulated")
                return []
            self._count("dropped.unexpected_type")
            return []
        except LispDecodeError as exc:
            self._count("dropped.malformed")
            self._state.log_throttled("malformed", logging.WARNING, "dropped malformed datagram from %s:%d: %s",
                                      source, port, exc)
            return []
        finally:
            if flush:
                self._journal.flush(now)  # durable before the caller sends any Map-Notify this message caused

    def handle_timer(self, now: float) -> list[SendControl]:
        """Expire registrations and subscriptions, retransmit unacknowledged Map-Notifies."""
        effects: list[SendControl] = []
        state = self._state
        timers = state.timers
        while timers and timers[0][0] <= now:
            when, _, kind, key = heapq.heappop(timers)
            if not state.fired(when, kind, key):
                continue
            if kind == "reg":
                if not self._journal.replicated:  # else the ETR's session lease expires it, on every node
                    effects += self._registry.expire(key, when, now)
            elif kind == "sub":
                self._pubsub.expire(key, when)
            elif kind == "notify":
                retransmission = self._pubsub.retransmit(key, when, now)
                if retransmission is not None:
                    effects.append(retransmission)
        try:
            self._pubsub.flush_journal()  # subscriptions changed since the last time, in one batch
            self._journal.flush(now)
        except JournalUnavailable:
            effects = []
        self._journal.maybe_compact(now)  # errors caught, counted and retried there: never raises OSError
        return effects

    def next_deadline(self) -> float | None:
        """When `handle_timer` next has work (possibly a little early: stale timers are skipped then)."""
        timers = self._state.timers
        return timers[0][0] if timers else None

    # ------------------------------------------------------------------ replicated store (issue 17)

    def apply_replica(self, changes: list[tuple[bytes, bytes | None]], now: float) -> list[tuple[int, IPNetwork]]:
        """What the replicated store changed (other nodes' commits, lease expiries, the full read, a
        rollback to what the store holds): (key, value or None) in order, applied without recording
        or telling anything (`replica.Applier`).  Returns the prefixes whose answer changed, for
        `publish_current` when this node must notify for the change (a lease expiry, by the holder
        of the expiry role)."""
        return replica.Applier(self._state, self._journal, self._registry, self._pubsub,
                               self._northbound).apply(changes, now)

    def publish_current(self, prefixes: list[tuple[int, IPNetwork]], now: float) -> list[SendControl]:
        """Map-Notify the subscribers of each prefix (and its ETRs) with its answer as it is now."""
        effects: list[SendControl] = []
        for iid, net in dict.fromkeys(prefixes):
            entry = self._state.registered.get(iid, net)
            effects += self._pubsub.publish(iid, net, entry.record if entry else None,
                                            list(entry.etrs.values()) if entry else [], now)
        return effects

    def unsend(self, effects: list[SendControl]) -> int:
        """Replicated mode: `effects` will not be sent (their change was not committed): none of their
        Map-Notifies is retransmitted later."""
        return self._pubsub.unsend(effects)

    def set_store_down(self, reason: str) -> None:
        """Replicated mode: while `reason` is not "", Map-Registers are refused before changing anything."""
        self._journal.failure = reason

    # ------------------------------------------------------------------ resolution

    def lookup(self, iid: int, address: IPAddress, source: IPAddress | None = None,
               itr: IPAddress | None = None) -> MappingRecord:
        """The record a Map-Request for `address` from (source EID, ITR-RLOC) would be answered with."""
        return self._resolver.answer(iid, address, source, itr).record

    @property
    def quick_path(self) -> bool:
        """Whether plain Map-Requests take the fast path (False: all decode in full, for tests and benchmarks)."""
        return self._resolver.quick_path

    @quick_path.setter
    def quick_path(self, on: bool) -> None:
        self._resolver.quick_path = on

    @property
    def limiter(self) -> RateLimiter:
        """The per-source token buckets every datagram is charged to."""
        return self._limiter

    @limiter.setter
    def limiter(self, limiter: RateLimiter) -> None:
        self._limiter = self._resolver.limiter = limiter

    @property
    def answer_cache(self) -> dict[str, int]:
        """The fast path's answer cache, for the counters view: size, hits, misses, flushes."""
        return self._resolver.answer_cache_stats()

    # ------------------------------------------------------------------ policy and static mappings (REST)

    @property
    def policy(self) -> Policy:
        return self._state.policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        self._state.policy = policy
        self._resolver.refresh_fast_path()

    def set_rule(self, rule: Rule, now: float) -> list[SendControl]:
        """Add or replace a reachability rule; notify the subscribers whose answer changed."""
        return self._northbound.set_rule(rule, now)

    def remove_rule(self, rule_id: str, now: float) -> list[SendControl]:
        """Remove a rule (KeyError if there is none by that id)."""
        return self._northbound.remove_rule(rule_id, now)

    def set_override(self, override: RlocOverride, now: float) -> list[SendControl]:
        """Add or replace an RLOC override (PolicyError if another one already targets its RLOC/site)."""
        return self._northbound.set_override(override, now)

    def remove_override(self, override_id: str, now: float) -> list[SendControl]:
        return self._northbound.remove_override(override_id, now)

    def set_static(self, mapping: StaticMapping, now: float) -> list[SendControl]:
        """Add or replace a static mapping; notify the subscribers whose answer changed."""
        return self._northbound.set_static(mapping, now)

    def remove_static(self, iid: int, prefix: IPNetwork, now: float) -> list[SendControl]:
        return self._northbound.remove_static(iid, prefix, now)

    def static_mappings(self) -> Iterator[StaticMapping]:
        return self._northbound.static_mappings()

    # ------------------------------------------------------------------ introspection

    def registrations(self, after: tuple[int, IPNetwork] | None = None
                      ) -> Iterator[tuple[int, IPNetwork, str, MappingRecord, tuple[EtrRegistration, ...]]]:
        """(iid, prefix, site, merged record, ETR registrations) in prefix order, from after `after`."""
        return self._registry.registrations(after)

    def subscriptions(self, after: tuple[int, IPNetwork, int] | None = None) -> Iterator[Subscription]:
        """Subscriptions; with `after` (iid, prefix, xTR-ID), those after it in that order."""
        return self._pubsub.subscriptions(after)

    def state_entries(self) -> Iterator[dict]:
        """The whole durable state as journal entries (what a snapshot holds)."""
        return self._journal.state_entries()

    def registrations_by_site(self) -> dict[str, int]:
        """How many prefixes each site has registered: one pass over the table's values, nothing
        decoded and no prefix object made, so even a million is counted between two UDP batches."""
        counts: dict[str, int] = {}
        for entry in self._state.registered.values():
            counts[entry.site] = counts.get(entry.site, 0) + 1
        return counts

    @property
    def registration_count(self) -> int:
        return len(self._state.registered)

    @property
    def subscription_count(self) -> int:
        return self._state.subscription_count

    @property
    def pending_notifications(self) -> int:
        return self._pubsub.pending_count

    @property
    def store_health(self) -> str:
        """"ok", or "degraded: cannot write journal (ENOSPC)" and the like (for the health view)."""
        return self._journal.health()

    @property
    def pending_subscriptions(self) -> int:
        """Subscribing requests whose confirming Map-Notify awaits its Ack."""
        return self._pubsub.candidate_count

    @property
    def reflection_limiter(self) -> ReflectionLimiter:
        """The per-destination byte credits every answer to a requester-named address is charged to."""
        return self._reflect

    @property
    def counters(self) -> dict[str, int]:
        """Events by name (received.*, sent.*, dropped.*, rejected.*, ...), as the views show them."""
        self._resolver.fold_quick_replies()
        return self._state.counters
