"""The Map-Server / Map-Resolver core (RFC 9301 §8, RFC 9437) as a sans-IO actor.

`MapServer.handle_control(payload, source, port, now)` takes one received
datagram, `handle_timer(now)` runs what is due, `next_deadline()` says when;
each returns the datagrams to send as `SendControl` effects.  The core never
sends, sleeps or reads a clock.  The only thing it touches outside itself is
the injected store, whose `append` must be durable before the Map-Notify that
acknowledges a change goes out (the glue sends the effects only after the
handler returned, so the order holds by construction).

Rules this server follows, and why:

* **Site of a Map-Register**: the configured site whose EID prefixes contain
  the registered prefixes and whose key verifies the HMAC (SHA-1 or SHA-256,
  full digests on the wire).  Each record must then be one of the site's
  prefixes, or a more-specific of one that has `accept_more_specifics`.
  A register that fails any check changes nothing and is counted by reason.
* **Several ETRs of one site** register the same prefix (keyed by xTR-ID, or
  by source RLOC without the I bit): the mapping answered is the union of
  their locators.  A *different* site registering the prefix takes it over
  (the workload moved): the old site's registrations are dropped and its
  ETRs get a Map-Notify with the new mapping.  So do the ETRs of a covering
  prefix of another site when a more-specific (a host route) appears inside
  it: the workload left the site that announced the covering prefix.
* **Expiry**: `registration_ttl` seconds after the ETR's last Map-Register
  (OOR's 180 s), or the Record TTL when the register sets the T bit.  A
  record with Record TTL 0 withdraws that ETR's registration at once.
* **Map-Request** (inside an ECM): proxy Map-Reply when any registered ETR of
  the prefix set the P bit, else the ECM is forwarded unchanged to the ETR
  that registered last, at the address and port its Map-Register came from.
  Replies go to the first ITR-RLOC of the requester's family, at the inner
  UDP source port.  Only the first EID-Record is answered.
* **Negative Map-Reply**: for an EID inside no configured prefix, the widest
  prefix around it that overlaps no configured prefix, with
  `negative_ttl_minutes` and `negative_action`.  For an EID inside a
  configured prefix that nobody registered, RFC 9301 §8.2 asks for
  Natively-Forward with a 1-minute TTL; the prefix is the configured one,
  narrowed so it overlaps no registered prefix and no more-specific
  configured prefix.
* **Publish/subscribe** (RFC 9437): a Map-Request with the N bit and an
  xTR-ID (I bit; without it the N bit is ignored) subscribes (ITR-RLOC, inner source port, xTR-ID) to the requested
  prefix; the server confirms with a Map-Notify carrying the current mapping.
  A subscription lives as long as the ITR may cache the answer it got (the
  Record TTL, at least 1 minute, at most 1 day) and each new subscribing
  request renews it; a subscribing request whose only ITR-RLOC has AFI 0
  withdraws it.  When the RLOC set of a registered prefix changes (new,
  changed, moved, expired or withdrawn), every subscriber whose prefix
  overlaps it and every ETR that held it before gets a Map-Notify with the
  new record (no locators and TTL 0 when it is gone), retransmitted every
  `notify_retry_interval` until a Map-Notify-Ack, at most `notify_retries`
  times.  Subscription notifications use the subscriber's last nonce + 1.
  They are signed with the key of the site whose ETR carries the
  subscriber's xTR-ID, else sent unsigned (a pure ITR shares no key).
  At most `MAX_SUBSCRIPTIONS` are held (subscribing needs no key).
* **Policy** (`lisp_ryu.mapping.policy`): every answer -- Map-Reply,
  subscription confirmation, publication -- is computed for its requester
  (source EID, ITR-RLOC): a denied pair gets a negative record with action
  Drop/Policy-Denied and `negative_ttl_minutes`; an allowed one gets the
  mapping with RLOC overrides applied; either is narrowed to the region the
  policy treats uniformly.  When policy shapes an answer, the Map-Server
  answers itself instead of forwarding the request (the ETR knows no
  policy).  A subscription remembers the source EIDs its ITR asked for
  (the last `MAX_SOURCES_PER_SUBSCRIPTION` hosts behind it), so
  publications are computed per subscriber and per host: one Map-Notify
  carries each distinct answer.  A policy or static-mapping change notifies
  exactly the subscribers whose answer changed for any of their hosts (with
  TTL-0 records withdrawing, first, the prefixes or source/destination keys
  no answer uses any more).
* **Static mappings** (stated over REST) live in their own table beside the
  registrations.  Precedence: the longer prefix wins; for the same prefix a
  registration beats the static mapping (a live, authenticated ETR knows
  better; static entries serve destinations that do not register).
* **Persistence**: every change one message causes is journalled as one
  batch (one fsync) before the handler returns.  Expiries are not
  journalled: the stored expiry times already say when an entry ends, so a
  restart drops what expired meanwhile and a mass expiry costs no writes.
  Pending Map-Notify retransmissions are not persisted.  When the journal
  outgrows twice the live state it is compacted into a snapshot, which joins
  each registration's entry as it was encoded on arrival (at a million
  registrations: under 1 s of not answering, against 11 s encoding them all).
* **Fast path**: a plain Map-Request (`lisp_ryu.wire.quick`) for a
  registered EID, while no policy is set and no static mapping is more
  specific, is answered from fixed-offset reads and the record encoded once
  per change, without decoding it in full.  Its answers and counters are
  those of the full path, byte for byte (tests/unit/mapserver/test_ms_quick_path.py);
  everything else takes the full path.
* **Robustness**: datagrams over `MAX_DATAGRAM`, undecodable ones and those
  over a source's token bucket are dropped and counted; nothing malformed
  reaches state.
"""

from __future__ import annotations

import gc
import heapq
import ipaddress
import itertools
import logging
import struct
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator

import msgpack

from lisp_ryu.config import MapServerConfig, SiteConfig
from lisp_ryu.effects import SendControl
from lisp_ryu.mapping import EidError, PrefixTable
from lisp_ryu.mapping.policy import Policy, PolicyError, RlocOverride, Rule, StaticMapping
from lisp_ryu.mapping.sourcedest import SourceDestKey, record_key
from lisp_ryu.ratelimit import RateLimiter
from lisp_ryu.mapserver.answer_cache import DEFAULT_CAPACITY, AnswerCache
from lisp_ryu.mapserver.store import Store
from lisp_ryu.wire import (
    Action,
    Afi,
    AuthAlgorithm,
    AuthResult,
    EidPrefix,
    EncapsulatedControlMessage,
    InstanceIdAddress,
    LcafType,
    LispDecodeError,
    LispEncodeError,
    Locator,
    MapNotify,
    MapNotifyAck,
    MappingRecord,
    MapRegister,
    MapReply,
    MapRequest,
    TTL_INFINITE,
    check_authentication,
    sign,
)
from lisp_ryu.wire.checks import trusted
from lisp_ryu.wire.quick import IID_LCAF_BODY, read_plain_request

LOG = logging.getLogger("lisp_ryu.mapserver")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Larger datagrams are dropped unread: a jumbo frame, and room for a
#: Map-Register of ~200 single-locator records.
MAX_DATAGRAM = 9216
#: RFC 9301 §8.2: a configured EID prefix with no registration answers
#: Natively-Forward for one minute.
UNREGISTERED_TTL_MINUTES = 1
SUBSCRIPTION_MIN_MINUTES = 1
SUBSCRIPTION_MAX_MINUTES = 24 * 60
#: Compact the journal into a snapshot when it holds this many entries and
#: more than twice as many as the live state.
COMPACT_MIN_ENTRIES = 10_000
#: Subscriptions need no key: bound what unauthenticated requests can make us hold.
MAX_SUBSCRIPTIONS = 100_000
#: Hosts per subscription whose answers publications are shaped for (the most recent ones).
MAX_SOURCES_PER_SUBSCRIPTION = 32
NONCE_MASK = (1 << 64) - 1

NEGATIVE_ACTIONS = {
    "no-action": Action.NO_ACTION,
    "native-forward": Action.NATIVELY_FORWARD,
    "send-map-request": Action.SEND_MAP_REQUEST,
    "drop": Action.DROP_NO_REASON,
}

#: What reading a damaged stored entry raises (a float where an int belongs, inf
#: included): the entry is counted as `restore.bad_entries` and skipped.
BAD_STORED_ENTRY = (KeyError, TypeError, ValueError, OverflowError, LispDecodeError, LispEncodeError)

_REPLY_HEAD = ((2 << 28) | 1).to_bytes(4, "big")  # Map-Reply, one record


# --------------------------------------------------------------------------- state values


@dataclass(frozen=True, slots=True)
class EtrRegistration:
    """One ETR's registration of one EID prefix, as its last Map-Register stated it."""

    site: str
    etr: str  # "xtr:<hex>" with the I bit, else "rloc:<address>"
    iid: int
    prefix: IPNetwork
    record: MappingRecord
    source: IPAddress  # where the Map-Register came from: Map-Notify and forwarded requests go there
    port: int
    proxy_reply: bool
    key_id: int
    algorithm: int
    registered_at: float  # last Map-Register
    expires: float
    xtr_id: int | None = None
    site_id: int | None = None
    #: This registration as its journal entry, msgpack-encoded once when its Map-Register came:
    #: a snapshot of a million of them is then a join, not a million encodings (seconds of
    #: answering nothing).  Empty when restored (encoding them would slow every restart); by the
    #: first compaction after a restart the ETRs have mostly registered again.
    stored: bytes = field(default=b"", compare=False, repr=False)


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


@dataclass(slots=True)
class _Registered:
    """A registered prefix: its owning site, its ETRs, and the merged record answered for it."""

    site: str
    etrs: dict[str, EtrRegistration] = field(default_factory=dict)
    record: MappingRecord | None = None
    record_bytes: bytes = b""  # encoded `record`, made by the first Map-Reply and reused by the next
    proxy: bool = False


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


@dataclass(frozen=True, slots=True)
class _Answer:
    """What a requester is told; `entry` is set only when it is the plain registration (forwardable)."""

    record: MappingRecord
    entry: _Registered | None


class _Reject(Exception):
    """A message we decline: counted under `reason`, state untouched."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------- the core


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
        self._quick_path = quick_path
        self._answers = AnswerCache(answer_cache_size)  # the fast path's copies of hot answers
        self._nonces = nonces
        self._store = store
        self._counters: dict[str, int] = {}
        self._quick_replies = 0  # fast-path Map-Replies not yet added to the counters (one add, not three)
        self._fast_replies = 0  # fast-path Map-Replies counted so far
        self._sites: dict[str, SiteConfig] = {site.name: site for site in config.sites}
        self._negative_action = NEGATIVE_ACTIONS[config.negative_action]
        # (iid, configured prefix) -> [(site, accept_more_specifics)], and the configured
        # prefixes strictly inside each one (for negative answers inside a site's space).
        self._configured: PrefixTable[list[tuple[SiteConfig, bool]]] = PrefixTable()
        for site in config.sites:
            for eid in site.eid_prefixes:
                owners = self._configured.get(eid.iid, eid.prefix)
                if owners is None:
                    owners = []
                    self._configured.insert(eid.iid, eid.prefix, owners)
                owners.append((site, eid.accept_more_specifics))
        self._inner_configured: dict[tuple[int, IPNetwork], tuple[IPNetwork, ...]] = {
            (iid, net): tuple(inner for inner, _ in self._configured.more_specifics(iid, net, strict=True))
            for iid, net, _ in self._configured
        }
        self._registered: PrefixTable[_Registered] = PrefixTable()
        self._static: PrefixTable[tuple[StaticMapping, MappingRecord]] = PrefixTable()
        self._fast_path_open = self._static_in_use = False  # see _refresh_fast_path
        self.policy = Policy()
        self._subscriptions: PrefixTable[dict[int, Subscription]] = PrefixTable()
        self._subscription_count = 0
        self._pending: dict[tuple[int, IPAddress], _Pending] = {}
        self._xtr_sites: dict[int, str] = {}  # xTR-ID -> site, for signing notifications to subscribers
        for site in config.sites:  # configured bindings (a PxTR subscribes but never registers)
            self._xtr_sites.update(dict.fromkeys(site.xtr_ids, site.name))
        self._timers: list[tuple[float, int, str, tuple]] = []
        self._sequence = itertools.count()
        self._limiter = RateLimiter(config.rate_limit_per_source)
        self._log_budget: dict[str, int] = {}
        self._restoring = False
        self._batch: list[dict] = []  # journal entries of the message being handled, written in one fsync
        if store is not None:
            self._restore(store.load(), now)

    # ------------------------------------------------------------------ actor interface

    def handle_control(self, payload: bytes, source: IPAddress, port: int, now: float) -> list[SendControl]:
        """One datagram received on the control socket from (source, port)."""
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
                effects = self._quick_answer(payload)  # None unless the fast path is open and fits
                if effects is not None:
                    return effects
                return self._on_ecm(payload, source, now)
            if kind == 5:
                return self._on_map_notify_ack(payload, source)
            if kind == 1:
                self._count("dropped.map_request_not_encapsulated")
                return []
            self._count("dropped.unexpected_type")
            return []
        except LispDecodeError as exc:
            self._count("dropped.malformed")
            self._log_throttled("malformed", logging.WARNING, "dropped malformed datagram from %s:%d: %s",
                                source, port, exc)
            return []
        finally:
            self._flush()  # durable before the caller sends any Map-Notify this message caused

    def handle_timer(self, now: float) -> list[SendControl]:
        """Expire registrations and subscriptions, retransmit unacknowledged Map-Notifies."""
        effects: list[SendControl] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, _, kind, key = heapq.heappop(timers)
            if kind == "reg":
                iid, net, etr = key
                entry = self._registered.get(iid, net)
                reg = entry.etrs.get(etr) if entry is not None else None
                if reg is not None and reg.expires == when:
                    LOG.info("registration of %s iid %d by %s (site %s) expired", net, iid, _etr_name(reg), reg.site)
                    self._count("registrations.expired")
                    # Not journalled: the stored expiry already says it, and a mass expiry must not cost an fsync each.
                    effects += self._remove_etr(iid, net, etr, now, journal=False)
            elif kind == "sub":
                iid, net, xtr_id = key
                subs = self._subscriptions.get(iid, net)
                sub = subs.get(xtr_id) if subs is not None else None
                if sub is not None and sub.expires == when:
                    LOG.info("subscription of %s (xTR-ID %032x) to %s iid %d expired", sub.itr_rloc, xtr_id, net, iid)
                    self._count("subscriptions.expired")
                    self._drop_subscription(sub, journal=False)
            elif kind == "notify":
                pending = self._pending.get(key)
                if pending is None or pending.next_at != when:
                    continue
                if pending.retries_left <= 0:
                    del self._pending[key]
                    self._count("notify.unacknowledged")
                    LOG.warning("%s to %s: no Map-Notify-Ack after %d retransmissions, giving up",
                                pending.what, pending.destination, self.config.notify_retries)
                    continue
                pending.retries_left -= 1
                pending.next_at = now + self.config.notify_retry_interval
                self._schedule(pending.next_at, "notify", key)
                self._count("sent.map_notify_retransmit")
                effects.append(SendControl(pending.destination, pending.port, pending.payload,
                                           f"{pending.what} (retransmission)"))
        self._flush()
        self._maybe_compact()
        return effects

    def next_deadline(self) -> float | None:
        """When `handle_timer` next has work (possibly a little early: stale timers are skipped then)."""
        return self._timers[0][0] if self._timers else None

    # ------------------------------------------------------------------ Map-Register

    def _on_map_register(self, payload: bytes, source: IPAddress, port: int, now: float) -> list[SendControl]:
        message = MapRegister.decode(payload)
        self._count("received.map_register")
        try:
            site, prefixes = self._authorise(payload, message)
        except _Reject as reject:
            self._count(f"rejected.map_register.{reject.reason}")
            self._log_throttled(f"register-{reject.reason}", logging.WARNING,
                                "rejected Map-Register from %s: %s", source, reject.detail)
            return []
        etr = f"xtr:{message.xtr_id:032x}" if message.xtr_id is not None else f"rloc:{source}"
        if message.xtr_id is not None:
            self._xtr_sites[message.xtr_id] = site.name
        effects: list[SendControl] = []
        for record, (iid, net) in zip(message.records, prefixes):
            if record.ttl == 0:
                entry = self._registered.get(iid, net)
                if entry is not None and etr in entry.etrs and entry.site == site.name:
                    LOG.info("%s withdrew %s iid %d (site %s)", etr, net, iid, site.name)
                    self._count("registrations.withdrawn")
                    effects += self._remove_etr(iid, net, etr, now)
                continue
            if message.use_ttl_for_timeout and record.ttl != TTL_INFINITE:
                lifetime = record.ttl * 60.0
            else:
                lifetime = self.config.registration_ttl
            reg = EtrRegistration(
                site=site.name,
                etr=etr,
                iid=iid,
                prefix=net,
                record=record,
                source=source,
                port=port,
                proxy_reply=message.proxy_map_reply,
                key_id=message.key_id,
                algorithm=int(message.algorithm_id),
                registered_at=now,
                expires=now + lifetime,
                xtr_id=message.xtr_id,
                site_id=message.site_id,
            )
            effects += self._upsert(reg, now)
        self._count("accepted.map_register")
        if message.want_map_notify:
            notify = MapNotify(
                nonce=message.nonce,
                records=message.records,
                key_id=message.key_id,
                xtr_id=message.xtr_id,
                site_id=message.site_id,
            )
            signed = sign(notify, site.key, message.algorithm_id)
            self._count("sent.map_notify")
            # Acknowledges the register: it goes first, the changes it caused after.
            effects.insert(0, SendControl(source, port, signed.encode(),
                                          f"Map-Notify for {len(message.records)} record(s) of site {site.name}"))
        return effects

    def _authorise(self, payload: bytes, message: MapRegister) -> tuple[SiteConfig, list[tuple[int, IPNetwork]]]:
        """The site this register belongs to and its (iid, prefix) list, or `_Reject`."""
        if not message.records:
            raise _Reject("no-records", "no EID-records")
        prefixes: list[tuple[int, IPNetwork]] = []
        for record in message.records:
            try:
                eid = record.eid_prefix
                net = eid.network
            except (LispDecodeError, LispEncodeError):
                raise _Reject("unsupported-eid", f"EID {record.eid}/{record.eid_mask_len} is not an IP prefix") from None
            prefixes.append((eid.instance_id, net))
        candidates: list[SiteConfig] = []
        for iid, net in prefixes:
            for site, _ in self._configured_owners(iid, net):
                if site not in candidates:
                    candidates.append(site)
        if not candidates:
            iid, net = prefixes[0]
            raise _Reject("unknown-site", f"no configured site covers {net} iid {iid}")
        result = AuthResult.NO_AUTHENTICATION
        chosen = None
        for site in candidates:
            result = check_authentication(payload, site.key)
            if result is AuthResult.OK:
                chosen = site
                break
            if result is not AuthResult.MISMATCH:
                break  # no authentication / unknown algorithm / bad length: no key can fix that
        if chosen is None:
            names = ", ".join(site.name for site in candidates)
            raise _Reject(f"auth-{result.value}", f"authentication {result.value} for site(s) {names}")
        for iid, net in prefixes:
            allowed, reason = self._site_allows(chosen, iid, net)
            if not allowed:
                raise _Reject(reason, f"{net} iid {iid} is not a registrable prefix of site {chosen.name}")
        return chosen, prefixes

    def _configured_owners(self, iid: int, net: IPNetwork) -> Iterator[tuple[SiteConfig, bool]]:
        """(site, accept_more_specifics) of every configured prefix containing `net`, longest first."""
        try:
            hit = self._configured.covering(iid, net)
        except EidError:
            return
        while hit is not None:
            configured, owners = hit
            for site, more in owners:
                yield site, more if configured.prefixlen < net.prefixlen else True
            hit = self._configured.covering(iid, configured, strict=True)

    def _site_allows(self, site: SiteConfig, iid: int, net: IPNetwork) -> tuple[bool, str]:
        inside = False
        for owner, allowed in self._configured_owners(iid, net):
            if owner is site:
                if allowed:
                    return True, ""
                inside = True
        return False, "more-specific-denied" if inside else "prefix-outside"

    def _upsert(self, reg: EtrRegistration, now: float) -> list[SendControl]:
        iid, net = reg.iid, reg.prefix
        entry = self._registered.get(iid, net)
        previous = entry.record if entry is not None else None
        holders: list[EtrRegistration] = []
        if entry is None:
            entry = _Registered(reg.site)
            # A host route from another site inside a registered prefix: the workload left
            # the site that registered the covering prefix, whose ETRs must hear it (they
            # still serve it locally and would keep attracting its traffic).
            covering = self._registered.covering(iid, net, strict=True)
            if covering is not None and covering[1].site != reg.site and not self._restoring:
                holders = list(covering[1].etrs.values())
                LOG.info("%s iid %d moved from site %s (inside %s) to site %s", net, iid, covering[1].site,
                         covering[0], reg.site)
                self._count("registrations.moved_out_of_covering")
            self._registered.insert(iid, net, entry)
        elif entry.site != reg.site:
            holders = list(entry.etrs.values())
            LOG.info("%s iid %d moved from site %s to site %s", net, iid, entry.site, reg.site)
            self._count("registrations.moved")
            for old in holders:
                self._journal({"t": "unreg", "iid": iid, "net": str(net), "etr": old.etr})
            entry.etrs.clear()
            entry.site = reg.site
        else:
            holders = [other for other in entry.etrs.values() if other.etr != reg.etr]
        is_new = reg.etr not in entry.etrs
        if self._store is not None:  # journalled, and kept encoded for the next snapshot
            reg = replace(reg, stored=_pack(_registration_entry(reg)))
            self._batch.append(reg.stored)
        entry.etrs[reg.etr] = reg
        self._schedule(reg.expires, "reg", (iid, net, reg.etr))
        changed = self._rebuild(iid, net, entry, previous)
        if self._restoring:
            return []
        if is_new:
            LOG.info("registered %s iid %d -> %s (site %s, %s)", net, iid, _rlocs(reg.record), reg.site, _etr_name(reg))
            self._count("registrations.new")
        else:
            LOG.debug("refreshed %s iid %d -> %s (site %s)", net, iid, _rlocs(reg.record), reg.site)
        if not changed:
            return []
        return self._publish(iid, net, entry.record, holders, now)

    def _remove_etr(self, iid: int, net: IPNetwork, etr: str, now: float, journal: bool = True) -> list[SendControl]:
        entry = self._registered.get(iid, net)
        if entry is None or etr not in entry.etrs:
            return []
        previous = entry.record
        del entry.etrs[etr]
        if journal:
            self._journal({"t": "unreg", "iid": iid, "net": str(net), "etr": etr})
        if entry.etrs:
            changed = self._rebuild(iid, net, entry, previous)
            record = entry.record
        else:
            self._registered.remove(iid, net)
            self._answers.forget(iid, net)
            changed, record = True, None
            LOG.info("%s iid %d has no registration left (site %s)", net, iid, entry.site)
        if not changed:
            return []
        return self._publish(iid, net, record, list(entry.etrs.values()), now)

    def _rebuild(self, iid: int, net: IPNetwork, entry: _Registered, previous: MappingRecord | None) -> bool:
        """Recompute the merged record of a prefix; True if its locator set changed."""
        was_proxy = entry.proxy
        if len(entry.etrs) == 1:
            [reg] = entry.etrs.values()
            record = _as_answer(reg.record, iid, net)
            entry.proxy = reg.proxy_reply
        else:
            etrs = sorted(entry.etrs.values(), key=lambda r: (-r.registered_at, r.etr))  # freshest first
            seen: dict[object, Locator] = {}
            for reg in etrs:
                for locator in reg.record.locators:
                    if locator.address not in seen:
                        seen[locator.address] = _plain_locator(locator)
            versions = {reg.record.map_version for reg in etrs}
            record = MappingRecord.for_prefix(
                EidPrefix(net.network_address, net.prefixlen, iid),
                tuple(seen.values()),
                ttl=min(reg.record.ttl for reg in etrs),
                action=Action.NO_ACTION,
                map_version=versions.pop() if len(versions) == 1 else 0,
            )
            entry.proxy = any(reg.proxy_reply for reg in etrs)
        # A refresh that changes nothing keeps the bytes and the cached answers.  Anything else,
        # a new prefix included (its record was None), drops the answers it may decide.
        if record != entry.record:
            entry.record = record
            entry.record_bytes = b""
            self._answers.forget(iid, net)
        elif entry.proxy != was_proxy:
            self._answers.forget(iid, net)
        return previous is None or frozenset(previous.locators) != frozenset(record.locators)

    # ------------------------------------------------------------------ publish / subscribe

    def _publish(self, iid: int, net: IPNetwork, record: MappingRecord | None,
                 holders: list[EtrRegistration], now: float) -> list[SendControl]:
        """Tell subscribers of overlapping prefixes and former holders that `net` changed."""
        shape = record is not None and not self.policy.empty
        if record is None:
            record = MappingRecord.for_prefix(EidPrefix(net.network_address, net.prefixlen, iid), (), ttl=0,
                                              action=self._negative_action)
        entry = self._registered.get(iid, net) if shape else None
        effects: list[SendControl] = []
        for sub in self._overlapping_subscriptions(iid, net):
            nonce = (sub.nonce + 1) & NONCE_MASK
            updated = replace(sub, nonce=nonce)
            self._set_subscription(updated)
            told: tuple[MappingRecord, ...] = (record,)
            if shape:  # what each of this subscriber's hosts may see of the new record
                probe = sub.prefix.network_address if sub.prefix.subnet_of(net) else net.network_address
                told = _distinct(self._shape(iid, net, record, entry.site if entry else None, source, sub.itr_rloc,
                                             probe, self.policy) for source in sub.source_eids or (None,))
            effects.append(self._notify(sub.itr_rloc, sub.port, nonce, told, self._subscriber_site(sub),
                                        AuthAlgorithm.HMAC_SHA_1_96, None,
                                        f"Map-Notify for {net} iid {iid} to subscriber {sub.itr_rloc}", now))
            self._count("notify.subscribers")
        for reg in holders:
            site = self._sites.get(reg.site)
            effects.append(self._notify(reg.source, reg.port, self._nonces() & NONCE_MASK, record, site,
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

    def _subscriber_site(self, sub: Subscription) -> SiteConfig | None:
        name = self._xtr_sites.get(sub.xtr_id)
        return self._sites.get(name) if name is not None else None

    def _notify(self, destination: IPAddress, port: int, nonce: int, record: MappingRecord | tuple[MappingRecord, ...],
                site: SiteConfig | None, algorithm: int, key_id: int | None, what: str,
                now: float) -> SendControl:
        """A Map-Notify (one record, or several in order) that is retransmitted until acknowledged."""
        records = record if isinstance(record, tuple) else (record,)
        notify = MapNotify(nonce=nonce, records=records, key_id=key_id or 0)
        payload = sign(notify, site.key, algorithm).encode() if site is not None else notify.encode()
        key = (nonce, destination)
        pending = _Pending(destination, port, nonce, payload, what, site.key if site else None,
                           self.config.notify_retries, now + self.config.notify_retry_interval)
        self._pending[key] = pending
        self._schedule(pending.next_at, "notify", key)
        self._count("sent.map_notify")
        return SendControl(destination, port, payload, what)

    def _subscribe(self, request: MapRequest, iid: int, net: IPNetwork, rloc: IPAddress, port: int,
                   record: MappingRecord, now: float, source_eid: IPAddress | None = None) -> list[SendControl]:
        minutes = min(max(record.ttl, SUBSCRIPTION_MIN_MINUTES), SUBSCRIPTION_MAX_MINUTES)
        assert request.xtr_id is not None and request.site_id is not None  # checked by the caller
        subs = self._subscriptions.get(iid, net)
        known = subs.get(request.xtr_id) if subs is not None else None
        if known is None and self._subscription_count >= MAX_SUBSCRIPTIONS:
            self._count("rejected.subscribe.table-full")
            return []
        sources = known.source_eids if known is not None else ()
        if source_eid is not None:  # the newest last; the oldest forgotten beyond the bound
            sources = (*(s for s in sources if s != source_eid), source_eid)[-MAX_SOURCES_PER_SUBSCRIPTION:]
        sub = Subscription(iid, net, request.xtr_id, request.site_id, rloc, port, request.nonce,
                           known.subscribed_at if known else now, now + minutes * 60.0, sources)
        self._set_subscription(sub)
        if known is None:
            LOG.info("%s (xTR-ID %032x) subscribed to %s iid %d", rloc, request.xtr_id, net, iid)
            self._count("subscriptions.new")
        else:
            self._count("subscriptions.renewed")
        return [self._notify(rloc, port, request.nonce, record, self._subscriber_site(sub),
                             AuthAlgorithm.HMAC_SHA_1_96, None,
                             f"Map-Notify confirming subscription of {rloc} to {net} iid {iid}", now)]

    def _set_subscription(self, sub: Subscription) -> None:
        subs = self._subscriptions.get(sub.iid, sub.prefix)
        if subs is None:
            subs = {}
            self._subscriptions.insert(sub.iid, sub.prefix, subs)
        old = subs.get(sub.xtr_id)
        if old is None:
            self._subscription_count += 1
        subs[sub.xtr_id] = sub
        if self._store is not None:
            self._batch.append(_subscription_entry(sub))
        if old is None or old.expires != sub.expires:
            self._schedule(sub.expires, "sub", (sub.iid, sub.prefix, sub.xtr_id))

    def _drop_subscription(self, sub: Subscription, journal: bool = True) -> None:
        subs = self._subscriptions.get(sub.iid, sub.prefix)
        if subs is None or sub.xtr_id not in subs:
            return
        del subs[sub.xtr_id]
        self._subscription_count -= 1
        if not subs:
            self._subscriptions.remove(sub.iid, sub.prefix)
        if journal:
            self._journal({"t": "unsub", "iid": sub.iid, "net": str(sub.prefix), "xid": _xid_bytes(sub.xtr_id)})

    # ------------------------------------------------------------------ Map-Request

    def reply_quickly(self, payload: bytes, source: IPAddress, now: float) -> tuple[bytes, bytes, int] | None:
        """`handle_control` for the datagram a Map-Resolver sees most, without building effects.

        For a plain Map-Request (`lisp_ryu.wire.quick`) answered by proxy from
        a registration alone: (Map-Reply, ITR-RLOC as 4 or 16 bytes, port),
        the Map-Reply empty when the source's rate limit dropped it, counted
        as `handle_control` counts.  None for anything else, which is then
        neither counted nor charged: give it to `handle_control`.
        """
        if not self._fast_path_open:
            return None
        request = read_plain_request(payload)
        if request is None:
            return None
        nonce, iid, eid, rloc, port = request
        key = (iid, eid)
        record = self._answers.records.get(key)
        if record is None:
            entry = self._plain_entry(iid, eid)
            if entry is None or not entry.proxy:
                return None
            record = entry.record_bytes or self._encode_record(entry)
            if not self._limiter.allow(source, now):
                return self._rate_limited(rloc, port)
            self._answers.offer(key, record)  # (after the limit: a flooding source fills nothing)
        elif not self._limiter.allow(source, now):
            return self._rate_limited(rloc, port)
        self._quick_replies += 1
        return struct_reply(nonce, record), rloc, port

    def _rate_limited(self, rloc: bytes, port: int) -> tuple[bytes, bytes, int]:
        self._count("received.datagrams")
        self._count("dropped.rate_limited")
        return b"", rloc, port

    @property
    def answer_cache(self) -> dict[str, int]:
        """The fast path's answer cache, for the counters view: size, hits, misses, flushes."""
        self._fold_quick_replies()
        return {"entries": len(self._answers), "capacity": self._answers.capacity,
                "hits": self._fast_replies - self._answers.misses, "misses": self._answers.misses,
                "flushes": self._answers.flushes}

    def _quick_answer(self, payload: bytes) -> list[SendControl] | None:
        """`_on_ecm`'s effects for a plain Map-Request the registration alone answers, or None."""
        plain = self._plain_match(payload)
        if plain is None:
            return None
        nonce, rloc, port, entry = plain
        self._count("received.map_request")
        if not entry.proxy:
            target = _forward_target(entry)
            self._count("sent.map_request_forwarded")
            return [SendControl(target.source, target.port, payload, "Map-Request forwarded to the ETR")]
        self._count("sent.map_reply")
        reply = struct_reply(nonce, entry.record_bytes or self._encode_record(entry))
        return [SendControl(ipaddress.ip_address(rloc), port, reply, "Map-Reply")]

    @property
    def quick_path(self) -> bool:
        """Whether plain Map-Requests take the fast path (False: all decode in full, for tests and benchmarks)."""
        return self._quick_path

    @quick_path.setter
    def quick_path(self, on: bool) -> None:
        self._quick_path = on
        self._refresh_fast_path()

    @property
    def policy(self) -> Policy:
        return self._policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        self._policy = policy
        self._refresh_fast_path()

    def _refresh_fast_path(self) -> None:
        """The fast path's preconditions, kept as two flags (it runs per request; they change rarely):
        open while no policy is set, looking for a more specific static mapping only when there is one.
        Called when the switch, the policy or the static mappings change."""
        self._fast_path_open = self._quick_path and self._policy.empty
        self._static_in_use = len(self._static) > 0
        self._answers.clear()  # remembered under the old rules

    def _plain_match(self, payload: bytes) -> tuple[bytes, bytes, int, _Registered] | None:
        """(nonce, ITR-RLOC bytes, reply port, registration) of a plain Map-Request whose answer
        depends on nothing but that registration, else None.

        Not so while policy is set (it shapes answers per requester), for an
        unregistered EID (negative answers are computed) or under a more
        specific static mapping.
        """
        if not self._fast_path_open:
            return None
        request = read_plain_request(payload)
        if request is None:
            return None
        nonce, iid, eid, rloc, port = request
        entry = self._plain_entry(iid, eid)
        return None if entry is None else (nonce, rloc, port, entry)

    def _plain_entry(self, iid: int, eid: bytes) -> _Registered | None:
        """The registration that alone answers for the host `eid` (packed) in `iid`, else None."""
        match = self._registered.longest_match_packed(iid, eid)
        if match is None:
            return None
        if self._static_in_use:
            static = self._static.longest_match_packed(iid, eid)
            if static is not None and static[0].prefixlen > match[0].prefixlen:
                return None
        return match[1]

    @staticmethod
    def _encode_record(entry: _Registered) -> bytes:
        """`entry`'s record as answered, encoded once per change of the registration."""
        assert entry.record is not None  # every stored prefix has at least one ETR
        entry.record_bytes = _record_bytes(entry.record)
        return entry.record_bytes

    def _on_ecm(self, payload: bytes, source: IPAddress, now: float) -> list[SendControl]:
        ecm = EncapsulatedControlMessage.decode(payload)
        request = ecm.message
        if not isinstance(request, MapRequest):
            self._count("dropped.ecm_not_map_request")
            return []
        self._count("received.map_request")
        if request.probe:
            self._count("dropped.map_request_probe")
            return []
        if len(request.records) > 1:
            self._count("map_request.extra_records_ignored")
        first = request.records[0]
        rloc = _reply_rloc(request, source)
        port = ecm.inner_source_port
        # RFC 9437 subscriptions carry the xTR-ID (I bit): only then is the N bit worth reading.
        subscribing = request.xtr_id is not None and request.records[0].notify_requested
        source_eid = _ip_of(request.source_eid)
        try:
            eid = first.eid_prefix
            iid = eid.instance_id
            if source_eid is None and request.xtr_id is not None and not self.policy.empty:
                # A re-resolution (SMR, refresh) names no source: the subscriber's last one stands.
                subs = self._subscriptions.get(iid, eid.network)
                known = subs.get(request.xtr_id) if subs is not None else None
                source_eid = known.source_eids[-1] if known is not None and known.source_eids else None
            answer = self._answer(iid, eid.address, source_eid, rloc)  # EidError unless an IP EID
        except (LispDecodeError, LispEncodeError, EidError):
            self._count("rejected.map_request.unsupported-eid")
            return []
        record, entry = answer.record, answer.entry
        effects: list[SendControl] = []
        if rloc is None or request.dont_map_reply:
            pass  # nobody to answer, or the requester asked for no answer (D bit)
        elif entry is not None and not entry.proxy:
            target = _forward_target(entry)
            self._count("sent.map_request_forwarded")
            effects.append(SendControl(target.source, target.port, payload,
                                       f"Map-Request for {eid} forwarded to ETR {target.source}"))
        elif entry is not None:
            reply = struct_reply(request.nonce.to_bytes(8, "big"), entry.record_bytes or self._encode_record(entry))
            self._count("sent.map_reply")
            effects.append(SendControl(rloc, port, reply, f"Map-Reply for {eid} to {rloc}"))
        else:
            if record.action is Action.DROP_POLICY_DENIED:
                self._count("sent.map_reply_policy_denied")
                what = f"policy-denied Map-Reply {_eid_text(record)} to {rloc} (source EID {source_eid})"
            elif record.locators:
                self._count("sent.map_reply_policy" if self._static.longest_match(iid, eid.address) is None
                            else "sent.map_reply_static")
                what = f"Map-Reply {_eid_text(record)} to {rloc}"
            else:
                self._count("sent.map_reply_negative")
                what = f"negative Map-Reply {_eid_text(record)} to {rloc}"
            effects.append(SendControl(rloc, port, MapReply(nonce=request.nonce, records=(record,)).encode(), what))
        if subscribing:
            assert request.xtr_id is not None
            net = eid.network
            if rloc is None:
                subs = self._subscriptions.get(iid, net)
                sub = subs.get(request.xtr_id) if subs is not None else None
                if sub is not None:
                    LOG.info("xTR-ID %032x withdrew its subscription to %s iid %d", request.xtr_id, net, iid)
                    self._count("subscriptions.withdrawn")
                    self._drop_subscription(sub)
            else:
                effects += self._subscribe(request, iid, net, rloc, port, record, now, source_eid)
        if rloc is None and not subscribing:
            self._count("dropped.map_request_no_itr_rloc")
        return effects

    def _negative_answer(self, iid: int, net: IPNetwork) -> tuple[IPNetwork, int, Action]:
        """Prefix, TTL (minutes) and action of the negative Map-Reply for an unregistered EID."""
        address = net.network_address
        configured = self._configured.longest_match(iid, address)
        if configured is None:
            negative = self._configured.widest_negative(iid, address)
            if len(self._static):  # never cover a static mapping either
                static_hole = self._static.widest_negative(iid, address)
                if static_hole.prefixlen > negative.prefixlen:
                    negative = static_hole
            return negative, self.config.negative_ttl_minutes, self._negative_action
        site_prefix = configured[0]
        hole = self._registered.widest_negative(iid, address)
        length = max(hole.prefixlen, site_prefix.prefixlen)
        if len(self._static):
            length = max(length, self._static.widest_negative(iid, address).prefixlen)
        value, width = int(address), address.max_prefixlen
        for inner in self._inner_configured[(iid, site_prefix)]:
            common = width - (value ^ int(inner.network_address)).bit_length()
            length = max(length, common + 1)
        return ipaddress.ip_network((address, length), strict=False), UNREGISTERED_TTL_MINUTES, Action.NATIVELY_FORWARD

    def lookup(self, iid: int, address: IPAddress, source: IPAddress | None = None,
               itr: IPAddress | None = None) -> MappingRecord:
        """The record a Map-Request for `address` from (source EID, ITR-RLOC) would be answered with."""
        return self._answer(iid, address, source, itr).record

    def _answer(self, iid: int, address: IPAddress, source: IPAddress | None, itr: IPAddress | None,
                policy: Policy | None = None) -> _Answer:
        """The mapping for `address` as this requester may see it (see "Policy" and "Static mappings")."""
        policy = self.policy if policy is None else policy
        reg = self._registered.longest_match(iid, address)
        static = self._static.longest_match(iid, address) if len(self._static) else None
        entry: _Registered | None = None
        site: str | None = None
        if static is not None and (reg is None or static[0].prefixlen > reg[0].prefixlen):
            net, record = static[0], static[1][1]
        elif reg is not None:
            net, entry = reg
            site = entry.site
            assert entry.record is not None  # every stored prefix has at least one ETR
            record = entry.record
        else:
            net, ttl, action = self._negative_answer(iid, ipaddress.ip_network(address))
            record = MappingRecord.for_prefix(EidPrefix(net.network_address, net.prefixlen, iid), (),
                                              ttl=ttl, action=action)
        if policy.empty:
            return _Answer(record, entry)
        shaped = self._shape(iid, net, record, site, source, itr, address, policy)
        return _Answer(shaped, entry if shaped is record else None)

    def _shape(self, iid: int, net: IPNetwork, record: MappingRecord, site: str | None, source: IPAddress | None,
               itr: IPAddress | None, address: IPAddress, policy: Policy) -> MappingRecord:
        """`record` (the mapping of `net`) as policy lets this requester see it at `address`."""
        decision = policy.decide(iid, source, itr, address)
        prefix = decision.region if decision.region.prefixlen > net.prefixlen else net
        if decision.source_region is not None:
            # The verdict depends on the requesting host: key the answer by (source, destination).
            eid_mask_len, eid = SourceDestKey(iid, decision.source_region, prefix).to_wire()
        else:
            eid_mask_len, eid = EidPrefix(prefix.network_address, prefix.prefixlen, iid).to_wire()
        if decision.denied:
            return MappingRecord(eid, eid_mask_len, (), ttl=self.config.negative_ttl_minutes,
                                 action=Action.DROP_POLICY_DENIED)
        locators = policy.adjust(record.locators, site) if record.locators else record.locators
        if decision.source_region is None and prefix == net and all(a is b for a, b in zip(locators, record.locators)):
            return record
        return MappingRecord(eid, eid_mask_len, locators, ttl=record.ttl, action=record.action,
                             map_version=record.map_version)

    # ------------------------------------------------------------------ policy and static mappings (REST)

    def set_rule(self, rule: Rule, now: float) -> list[SendControl]:
        """Add or replace a reachability rule; notify the subscribers whose answer changed."""
        previous = self.policy.rule(rule.id)
        iids = {rule.iid} | ({previous.iid} if previous is not None else set())
        self._journal({"t": "rule", "id": rule.id, "v": rule.to_dict()})
        LOG.info("policy rule %s: %s %s -> %s iid %d", rule.id, rule.action.value,
                 ", ".join(map(str, rule.sources)) or "any", ", ".join(map(str, rule.destinations)), rule.iid)
        return self._change(lambda: self._set_policy(self.policy.with_rule(rule)), lambda s: s.iid in iids, now)

    def remove_rule(self, rule_id: str, now: float) -> list[SendControl]:
        """Remove a rule (KeyError if there is none by that id)."""
        previous = self.policy.rule(rule_id)
        if previous is None:
            raise KeyError(rule_id)
        self._journal({"t": "unrule", "id": rule_id})
        LOG.info("policy rule %s removed", rule_id)
        return self._change(lambda: self._set_policy(self.policy.without_rule(rule_id)),
                            lambda s: s.iid == previous.iid, now)

    def set_override(self, override: RlocOverride, now: float) -> list[SendControl]:
        """Add or replace an RLOC override (PolicyError if another one already targets its RLOC/site)."""
        new = self.policy.with_override(override)
        if override.site is not None and override.site not in self._sites:
            raise PolicyError("site", f"no configured site {override.site!r}")
        self._journal({"t": "ovr", "id": override.id, "v": override.to_dict()})
        LOG.info("RLOC override %s: %s priority %s weight %s", override.id, override.rloc or f"site {override.site}",
                 override.priority, override.weight)
        return self._change(lambda: self._set_policy(new), lambda s: True, now)

    def remove_override(self, override_id: str, now: float) -> list[SendControl]:
        if self.policy.override(override_id) is None:
            raise KeyError(override_id)
        self._journal({"t": "unovr", "id": override_id})
        LOG.info("RLOC override %s removed", override_id)
        return self._change(lambda: self._set_policy(self.policy.without_override(override_id)), lambda s: True, now)

    def set_static(self, mapping: StaticMapping, now: float) -> list[SendControl]:
        """Add or replace a static mapping; notify the subscribers whose answer changed."""
        record = _static_record(mapping)
        self._journal({"t": "static", "iid": mapping.iid, "net": str(mapping.prefix), "v": mapping.to_dict()})
        LOG.info("static mapping %s iid %d -> %s", mapping.prefix, mapping.iid, _rlocs(record))
        return self._change(lambda: self._static.insert(mapping.iid, mapping.prefix, (mapping, record)),
                            _overlapping(mapping.iid, mapping.prefix), now)

    def remove_static(self, iid: int, prefix: IPNetwork, now: float) -> list[SendControl]:
        if self._static.get(iid, prefix) is None:
            raise KeyError(f"[{iid}]{prefix}")
        self._journal({"t": "unstatic", "iid": iid, "net": str(prefix)})
        LOG.info("static mapping %s iid %d removed", prefix, iid)
        return self._change(lambda: self._static.remove(iid, prefix), _overlapping(iid, prefix), now)

    def static_mappings(self) -> Iterator[StaticMapping]:
        for _, _, (mapping, _record) in self._static:
            yield mapping

    def _set_policy(self, policy: Policy) -> None:
        self.policy = policy
        self._count("policy.changes")

    def _change(self, apply: Callable[[], object], affected: Callable[[Subscription], bool],
                now: float) -> list[SendControl]:
        """Apply a policy/static change; Map-Notify every affected subscriber whose answer changed."""
        subs = [sub for sub in self.subscriptions() if affected(sub)]
        before = [self._subscriber_answers(sub) for sub in subs]
        apply()
        self._refresh_fast_path()  # a static mapping came or went
        effects: list[SendControl] = []
        for sub, olds in zip(subs, before):
            news = self._subscriber_answers(sub)
            changed = [(old, new) for old, new in zip(olds, news) if old != new]
            if not changed:
                continue
            # Withdraw first what the subscriber cached under a prefix or key no answer uses any more.
            kept = {(new.eid, new.eid_mask_len) for new in news}
            withdrawn = _distinct(MappingRecord(old.eid, old.eid_mask_len, (), ttl=0) for old, _ in changed
                                  if (old.eid, old.eid_mask_len) not in kept)
            records = withdrawn + _distinct(new for _, new in changed)
            new = records[-1]
            nonce = (sub.nonce + 1) & NONCE_MASK
            self._set_subscription(replace(sub, nonce=nonce))
            effects.append(self._notify(sub.itr_rloc, sub.port, nonce, records, self._subscriber_site(sub),
                                        AuthAlgorithm.HMAC_SHA_1_96, None,
                                        f"Map-Notify for {_eid_text(new)} to subscriber {sub.itr_rloc} "
                                        f"after a policy change", now))
            self._count("notify.policy")
        self._flush()
        self._maybe_compact()
        return effects

    def _subscriber_answers(self, sub: Subscription) -> list[MappingRecord]:
        """The answer for `sub`'s prefix as each of its hosts sees it (one, without a known host)."""
        address = sub.prefix.network_address
        return [self._answer(sub.iid, address, source, sub.itr_rloc).record for source in sub.source_eids or (None,)]

    # ------------------------------------------------------------------ Map-Notify-Ack

    def _on_map_notify_ack(self, payload: bytes, source: IPAddress) -> list[SendControl]:
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

    # ------------------------------------------------------------------ persistence

    def _journal(self, entry: dict) -> None:
        if self._store is not None:
            self._batch.append(entry)

    def _flush(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self._store.append(batch)  # type: ignore[union-attr]  # only filled when there is a store

    def _maybe_compact(self) -> None:
        store = self._store
        if store is None:
            return
        live = len(self._registered) + self._subscription_count + len(self._static) + len(self.policy.rules)
        if store.journal_length() >= max(COMPACT_MIN_ENTRIES, 2 * live):
            store.snapshot(self._stored_state())
            self._count("store.snapshots")

    def state_entries(self) -> Iterator[dict]:
        """The whole durable state as journal entries (what a snapshot holds)."""
        for _, _, entry in self._registered:
            for reg in entry.etrs.values():
                yield _registration_entry(reg)
        yield from self._stated_entries()

    def _stored_state(self) -> Iterator[bytes]:
        """`state_entries`, msgpack-encoded, for a snapshot: registrations as they were encoded
        when they came (at a million, encoding them again stalled the server for seconds)."""
        for entry in self._registered.values():
            for reg in entry.etrs.values():
                yield reg.stored or _pack(_registration_entry(reg))
        for entry in self._stated_entries():
            yield _pack(entry)

    def _stated_entries(self) -> Iterator[dict]:
        """Everything durable but the registrations: subscriptions, policy, static mappings."""
        for _, _, subs in self._subscriptions:
            for sub in subs.values():
                yield _subscription_entry(sub)
        for rule in self.policy.rules:
            yield {"t": "rule", "id": rule.id, "v": rule.to_dict()}
        for override in self.policy.overrides:
            yield {"t": "ovr", "id": override.id, "v": override.to_dict()}
        for mapping in self.static_mappings():
            yield {"t": "static", "iid": mapping.iid, "net": str(mapping.prefix), "v": mapping.to_dict()}

    def _restore(self, entries: list[dict], now: float) -> None:
        """Rebuild state from the store; expired or no-longer-allowed entries are dropped and counted."""
        registrations: dict[tuple[int, str, str], dict] = {}
        subscriptions: dict[tuple[int, str, bytes], dict] = {}
        stated: dict[tuple, dict] = {}  # policy rules, RLOC overrides, static mappings (REST)
        for entry in entries:
            kind = entry.get("t") if isinstance(entry, dict) else None
            try:
                if kind == "reg":
                    registrations[(entry["iid"], entry["net"], entry["etr"])] = entry
                elif kind == "unreg":
                    registrations.pop((entry["iid"], entry["net"], entry["etr"]), None)
                elif kind == "sub":
                    subscriptions[(entry["iid"], entry["net"], entry["xid"])] = entry
                elif kind == "unsub":
                    subscriptions.pop((entry["iid"], entry["net"], entry["xid"]), None)
                elif kind in ("rule", "ovr"):
                    stated[(kind, entry["id"])] = entry
                elif kind in ("unrule", "unovr"):
                    stated.pop((kind[2:], entry["id"]), None)
                elif kind == "static":
                    stated[("static", entry["iid"], entry["net"])] = entry
                elif kind == "unstatic":
                    stated.pop(("static", entry["iid"], entry["net"]), None)
                else:
                    self._count("restore.unknown_entries")
            except (KeyError, TypeError):
                self._count("restore.bad_entries")
        saved_store, self._store = self._store, None  # rebuilding must not re-journal
        self._restoring = True  # ... nor notify anybody: nothing changed for the outside world
        collecting = gc.isenabled()
        gc.disable()  # a million new objects without cycles: collection passes would only cost time
        try:
            policy = Policy()
            for key, entry in stated.items():
                try:
                    if key[0] == "rule":
                        policy = policy.with_rule(Rule.from_dict(entry["v"]))
                    elif key[0] == "ovr":
                        policy = policy.with_override(RlocOverride.from_dict(entry["v"]))
                    else:
                        mapping = StaticMapping.from_dict(entry["v"])
                        self._static.insert(mapping.iid, mapping.prefix, (mapping, _static_record(mapping)))
                    self._count("restore.policy")
                except (KeyError, TypeError, PolicyError):
                    self._count("restore.bad_entries")
            self.policy = policy
            self._restore_registrations(registrations.values(), now)
            for entry in subscriptions.values():
                try:
                    sub = _subscription_from_entry(entry)
                except BAD_STORED_ENTRY:
                    self._count("restore.bad_entries")
                    continue
                if sub.expires <= now:
                    self._count("restore.expired")
                    continue
                self._set_subscription(sub)
                self._count("restore.subscriptions")
        finally:
            self._store = saved_store
            self._restoring = False
            if collecting:
                gc.enable()
        restored = self.counters.get("restore.registrations", 0)
        if restored or self.counters.get("restore.subscriptions"):
            LOG.info("restored %d registrations and %d subscriptions from the store", restored,
                     self.counters.get("restore.subscriptions", 0))

    def _restore_registrations(self, entries: Iterable[dict], now: float) -> None:
        """Rebuild the stored registrations: the state replaying each through `_upsert` gives, ~3x faster.

        At a million registrations a restart took a minute, answering
        nothing meanwhile.  Restoring runs on an empty core and tells nobody
        anything, so most of `_upsert` has nothing to do: here a dict keyed
        by prefix text stands in for the prefix table until every prefix is
        inserted once at the end, a prefix's merged record is computed once
        all its ETRs are in (and not at all for a single ETR:
        `_StoredRegistrations` hands over its answer, encoded), and the
        expiry timers are heapified once.  Entries are checked in the same
        order, and counted under the same names, as one `_upsert` at a time.
        """
        reader = _StoredRegistrations()
        verdicts: dict[tuple, bool] = {}  # see _still_allows
        prefixes: dict[tuple[int, str], tuple[int, IPNetwork, _Registered]] = {}  # key: (iid, prefix text)
        merge: list[tuple[int, IPNetwork, _Registered]] = []  # record left None: `_rebuild` computes it
        timers, sequence = self._timers, self._sequence
        bad = expired = disallowed = conflicting = restored = 0
        for entry in entries:
            try:
                reg, text, answer, answer_bytes = reader.read(entry)
            except BAD_STORED_ENTRY:
                bad += 1
                continue
            if reg.expires <= now:
                expired += 1
                continue
            site = self._sites.get(reg.site)
            if site is None or not self._still_allows(site, reg.iid, reg.prefix, verdicts):
                disallowed += 1
                continue
            key = (reg.iid, text)
            known = prefixes.get(key)
            if known is None:
                known = prefixes[key] = (reg.iid, reg.prefix,
                                         _Registered(reg.site, {reg.etr: reg}, answer, answer_bytes, reg.proxy_reply))
                if answer is None:
                    merge.append(known)
            elif known[2].site != reg.site:
                conflicting += 1
                continue
            else:
                state = known[2]
                if state.record is not None:  # a second ETR: the answer is their merge now
                    state.record = None
                    merge.append(known)
                state.etrs[reg.etr] = reg
            timers.append((reg.expires, next(sequence), "reg", (reg.iid, reg.prefix, reg.etr)))
            if reg.xtr_id is not None:
                self._xtr_sites[reg.xtr_id] = reg.site
            restored += 1
        for iid, net, state in merge:
            self._rebuild(iid, net, state, None)
        # All at the end rather than as they come: measured ~10% faster overall (probably because the
        # trie's nodes then sit together in memory, not scattered among the registrations).
        for iid, net, state in prefixes.values():
            self._registered.insert(iid, net, state)
        heapq.heapify(timers)  # pops in the same (time, sequence) order as pushing them one by one
        for name, amount in (("bad_entries", bad), ("expired", expired), ("no_longer_allowed", disallowed),
                             ("conflicting_site", conflicting), ("registrations", restored)):
            if amount:
                self._count(f"restore.{name}", amount)

    def _still_allows(self, site: SiteConfig, iid: int, net: IPNetwork, verdicts: dict[tuple, bool]) -> bool:
        """`_site_allows(site, iid, net)` for a restore, remembered per configured prefix.

        The verdict depends only on the longest configured prefix around
        `net` and on whether `net` is that prefix itself (see
        `_configured_owners`), and a million restored prefixes share a handful
        of configured ones.
        """
        hit = self._configured.longest_match_packed(iid, net.network_address.packed)
        if hit is None:
            return False  # no configured prefix holds even its first address (or no such instance-ID)
        configured = hit[0]
        if configured.prefixlen > net.prefixlen:  # a configured prefix inside `net`: not the covering one
            return self._site_allows(site, iid, net)[0]
        key = (site.name, iid, configured, configured.prefixlen == net.prefixlen)
        allowed = verdicts.get(key)
        if allowed is None:
            allowed = verdicts[key] = self._site_allows(site, iid, net)[0]
        return allowed

    # ------------------------------------------------------------------ introspection

    def registrations(self) -> Iterator[tuple[int, IPNetwork, str, MappingRecord, tuple[EtrRegistration, ...]]]:
        """(iid, prefix, site, merged record, ETR registrations) in prefix order."""
        for iid, net, entry in self._registered:
            assert entry.record is not None
            yield iid, net, entry.site, entry.record, tuple(entry.etrs.values())

    def subscriptions(self) -> Iterator[Subscription]:
        for _, _, subs in self._subscriptions:
            yield from subs.values()

    @property
    def registration_count(self) -> int:
        return len(self._registered)

    @property
    def subscription_count(self) -> int:
        return self._subscription_count

    @property
    def pending_notifications(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------ helpers

    @property
    def counters(self) -> dict[str, int]:
        """Events by name (received.*, sent.*, dropped.*, rejected.*, ...), as the views show them."""
        self._fold_quick_replies()
        return self._counters

    def _fold_quick_replies(self) -> None:
        if self._quick_replies:
            answered, self._quick_replies = self._quick_replies, 0
            self._fast_replies += answered
            for name in ("received.datagrams", "received.map_request", "sent.map_reply"):
                self._count(name, answered)

    def _count(self, name: str, amount: int = 1) -> None:
        self._counters[name] = self._counters.get(name, 0) + amount

    def _schedule(self, when: float, kind: str, key: tuple) -> None:
        heapq.heappush(self._timers, (when, next(self._sequence), kind, key))

    def _log_throttled(self, topic: str, level: int, message: str, *args: object) -> None:
        """Log the 1st, 2nd, 4th, 8th ... occurrence of a topic: a flood must not flood the log."""
        seen = self._log_budget.get(topic, 0) + 1
        self._log_budget[topic] = seen
        if seen & (seen - 1) == 0:
            LOG.log(level, message + (f" ({seen} so far)" if seen > 1 else ""), *args)


# --------------------------------------------------------------------------- module helpers


def _distinct(records: Iterable[MappingRecord]) -> tuple[MappingRecord, ...]:
    """`records` in order, each once."""
    return tuple(dict.fromkeys(records))


def struct_reply(nonce: bytes, record_bytes: bytes) -> bytes:
    """A one-record Map-Reply from the request's nonce (8 bytes) and an already encoded record:
    the hot path of a proxy reply."""
    return _REPLY_HEAD + nonce + record_bytes


def _forward_target(entry: _Registered) -> EtrRegistration:
    """The ETR a Map-Request for `entry` is forwarded to: the one that registered last."""
    return max(entry.etrs.values(), key=lambda r: (r.registered_at, r.etr))


def _reply_rloc(request: MapRequest, source: IPAddress) -> IPAddress | None:
    """The first ITR-RLOC of the family we received on, else the first IP one at all."""
    usable = [r for r in request.itr_rlocs if isinstance(r, (ipaddress.IPv4Address, ipaddress.IPv6Address))]
    for rloc in usable:
        if rloc.version == source.version:
            return rloc
    return usable[0] if usable else None


def _plain_locator(locator: Locator) -> Locator:
    """A locator as a Map-Server hands it on: the ETR's own L and p bits mean nothing to others."""
    return replace(locator, local=False, probed=False) if locator.local or locator.probed else locator


def _as_answer(record: MappingRecord, iid: int, net: IPNetwork) -> MappingRecord:
    """The registered record as a Map-Reply carries it (reused as is when it already is one)."""
    locators = tuple(_plain_locator(loc) for loc in record.locators)
    if (record.action is Action.NO_ACTION and not record.authoritative and record.eid_mask_len == net.prefixlen
            and all(a is b for a, b in zip(locators, record.locators)) and record.eid == _wire_eid(iid, net)):
        return record
    return MappingRecord.for_prefix(EidPrefix(net.network_address, net.prefixlen, iid), locators, ttl=record.ttl,
                                    action=Action.NO_ACTION, map_version=record.map_version)


def _wire_eid(iid: int, net: IPNetwork) -> object:
    return EidPrefix(net.network_address, net.prefixlen, iid).to_wire()[1]


def _eid_text(record: MappingRecord) -> str:
    """The record's EID for a log line: a prefix, or a (source -> destination) key."""
    key = record_key(record)
    return str(key) if key is not None else str(record.eid_prefix)


def _rlocs(record: MappingRecord) -> str:
    return ", ".join(str(locator.address) for locator in record.locators) or "no RLOC"


def _etr_name(reg: EtrRegistration) -> str:
    return f"ETR {reg.source}" + (f" xTR-ID {reg.xtr_id:032x}" if reg.xtr_id is not None else "")


def _ip_of(address: object) -> IPAddress | None:
    """The IP address inside a Source-EID (plain or in an Instance-ID LCAF), else None."""
    if isinstance(address, InstanceIdAddress):
        address = address.address
    return address if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else None


def _static_record(mapping: StaticMapping) -> MappingRecord:
    prefix = EidPrefix(mapping.prefix.network_address, mapping.prefix.prefixlen, mapping.iid)
    return MappingRecord.for_prefix(prefix, mapping.locators(), ttl=mapping.ttl_minutes)


def _overlapping(iid: int, prefix: IPNetwork) -> Callable[[Subscription], bool]:
    """A subscription filter: same instance-ID and a prefix overlapping `prefix`."""
    return lambda sub: sub.iid == iid and sub.prefix.version == prefix.version and sub.prefix.overlaps(prefix)


def _xid_bytes(xtr_id: int | None) -> bytes | None:
    return None if xtr_id is None else xtr_id.to_bytes(16, "big")


def _record_bytes(record: MappingRecord) -> bytes:
    return MapReply(nonce=0, records=(record,)).encode()[12:]


def _record_from_bytes(data: bytes) -> MappingRecord:
    return MapReply.decode(struct_reply(bytes(8), data)).records[0]


def _pack(entry: dict) -> bytes:
    """A journal or snapshot entry as the store writes it."""
    return msgpack.packb(entry, use_bin_type=True)


def _registration_entry(reg: EtrRegistration) -> dict:
    return {
        "t": "reg",
        "iid": reg.iid,
        "net": str(reg.prefix),
        "etr": reg.etr,
        "site": reg.site,
        "rec": _record_bytes(reg.record),
        "src": str(reg.source),
        "port": reg.port,
        "proxy": reg.proxy_reply,
        "kid": reg.key_id,
        "alg": reg.algorithm,
        "at": reg.registered_at,
        "exp": reg.expires,
        "xid": _xid_bytes(reg.xtr_id),
        "sid": reg.site_id,
    }


def _registration_from_entry(entry: dict, prefix: IPNetwork | None = None, record: MappingRecord | None = None,
                             source: IPAddress | None = None) -> EtrRegistration:
    """The registration a stored entry holds; raises KeyError, TypeError, ValueError or a codec error if it holds none.

    `prefix`, `record` and `source`, when given, are what the entry's net,
    rec and src read as (`_StoredRegistrations` reads them faster).
    """
    xid = entry.get("xid")
    return EtrRegistration(  # positional: a third cheaper than by keyword, and this runs per restored entry
        entry["site"],  # site
        entry["etr"],  # etr
        int(entry["iid"]),  # iid
        ipaddress.ip_network(entry["net"]) if prefix is None else prefix,  # prefix
        _record_from_bytes(entry["rec"]) if record is None else record,  # record
        ipaddress.ip_address(entry["src"]) if source is None else source,  # source
        int(entry["port"]),  # port
        bool(entry["proxy"]),  # proxy_reply
        int(entry["kid"]),  # key_id
        int(entry["alg"]),  # algorithm
        float(entry["at"]),  # registered_at
        float(entry["exp"]),  # expires
        int.from_bytes(xid, "big") if xid is not None else None,  # xtr_id
        entry.get("sid"),  # site_id
    )


# Fixed layout of an EID-Record up to its EID address, and of an Instance-ID LCAF up to its address.
_RECORD_HEAD = struct.Struct(">IBBHHH")  # TTL, Locator Count, EID mask-len, ACT|A|Reserved, Rsvd|Map-Version, AFI
_AFI_IPV4, _AFI_IPV6, _AFI_LCAF = int(Afi.IPV4), int(Afi.IPV6), int(Afi.LCAF)
_LCAF_INSTANCE_ID = int(LcafType.INSTANCE_ID)
_ACTIONS = tuple(Action)  # by value: 0..5


@dataclass(frozen=True, slots=True)
class _StoredLocators:
    """The locator part of stored records (read once per distinct RLOC set), and the same as answered."""

    locators: tuple[Locator, ...]
    answered: tuple[Locator, ...]  # L and p bits cleared (`_plain_locator`); `locators` itself when none was set
    answered_bytes: bytes  # `answered` encoded


class _StoredRegistrations:
    """Reads stored registration entries for a restore, mostly without the codec or `ipaddress` parsing.

    A stored record is `_record_bytes` of a record decoded from a
    Map-Register, so its bytes are canonical.  Its head (TTL, flags, EID)
    is read here at fixed offsets; its locators are decoded by the codec
    once per distinct byte string and shared after that (typically a
    million EIDs behind a few RLOC sets).  The prefix is built from the
    record's EID, after checking that the entry's net text is exactly that
    prefix's text.  A record or net in any other form (LCAFs other than one
    instance-ID, reserved bits set, host bits past the mask, non-canonical
    text, ...) is left to `_registration_from_entry`, i.e. read exactly as
    before, errors included.
    """

    def __init__(self) -> None:
        self._locators: dict[tuple[int, bytes], _StoredLocators] = {}  # (Locator Count, bytes after the EID)
        self._sources: dict[str, IPAddress] = {}

    def read(self, entry: dict) -> tuple[EtrRegistration, str, MappingRecord | None, bytes]:
        """(registration, canonical prefix text, the answer for it as the only ETR or None, that answer encoded).

        Raises what `_registration_from_entry` raises for an entry that holds no registration.
        """
        # Nothing here raises: what can raise is left to `_registration_from_entry`, in its own order.
        text, src = entry.get("net"), entry.get("src")
        fast = self._read_record(entry.get("rec"), text, entry.get("iid"))
        # Few ETRs register many prefixes each: parse each address text once.
        source = self._sources.get(src) if type(src) is str else None
        if fast is None:
            reg = _registration_from_entry(entry, source=source)
            text = str(reg.prefix)
            answer, answer_bytes = None, b""
        else:
            prefix, record, answer, answer_bytes = fast
            reg = _registration_from_entry(entry, prefix, record, source)
        if source is None and type(src) is str:
            self._sources[src] = reg.source
        return reg, text, answer, answer_bytes

    def _read_record(self, rec: object, text: object, iid: object) -> tuple[IPNetwork, MappingRecord, MappingRecord,
                                                                              bytes] | None:
        """(prefix, record, `_as_answer` of it, that encoded) for a canonical record of prefix `text`, else None."""
        if type(rec) is not bytes or len(rec) < 12:
            return None
        ttl, count, mask_len, act_word, version_word, afi = _RECORD_HEAD.unpack_from(rec)
        action = act_word >> 13
        if act_word & 0x0FFF or version_word & 0xF000 or action >= len(_ACTIONS):
            return None  # reserved bits set (re-encoding would differ) or an undefined action
        at, wire_iid = 12, 0
        if afi == _AFI_LCAF:
            if len(rec) < 24:
                return None
            rsvd1, flags, lcaf_type, iid_mask_len, length, wire_iid, afi = IID_LCAF_BODY.unpack_from(rec, 12)
            # Only the form `EidPrefix.to_wire` makes: a plain instance-ID (not a range), and never instance 0.
            if rsvd1 or flags or lcaf_type != _LCAF_INSTANCE_ID or iid_mask_len or not wire_iid:
                return None
            if length != 6 + (4 if afi == _AFI_IPV4 else 16):
                return None
            at = 24
        if wire_iid != iid:
            return None  # the entry's instance-ID is not the record's: `_as_answer` would rewrite the EID
        if afi == _AFI_IPV4:
            end, bits = at + 4, 32
        elif afi == _AFI_IPV6:
            end, bits = at + 16, 128
        else:
            return None
        if mask_len > bits or len(rec) < end:
            return None
        value = int.from_bytes(rec[at:end], "big")
        if value & ((1 << (bits - mask_len)) - 1):
            return None  # host bits past the mask: not the prefix's own EID
        if bits == 32:
            if text != "%d.%d.%d.%d/%d" % (rec[at], rec[at + 1], rec[at + 2], rec[at + 3], mask_len):
                return None
            prefix: IPNetwork = ipaddress.IPv4Network((value, mask_len))
        else:
            prefix = ipaddress.IPv6Network((value, mask_len))
            if text != str(prefix):
                return None
        key = (count, rec[end:])
        stored = self._locators.get(key)
        if stored is None:
            stored = self._read_locators(rec, end)
            if stored is None:
                return None  # not canonical: left to the codec (not remembered, it is never the common case)
            self._locators[key] = stored
        address = prefix.network_address
        eid = address if not wire_iid else trusted(InstanceIdAddress, instance_id=wire_iid, address=address,
                                                   iid_mask_len=0)
        record = trusted(MappingRecord, eid=eid, eid_mask_len=mask_len, locators=stored.locators, ttl=ttl,
                         action=_ACTIONS[action], authoritative=bool(act_word & 0x1000), map_version=version_word)
        if act_word == 0 and stored.answered is stored.locators:
            return prefix, record, record, rec  # already an answer (`_as_answer` returns it as it is)
        answer = trusted(MappingRecord, eid=eid, eid_mask_len=mask_len, locators=stored.answered, ttl=ttl,
                         action=Action.NO_ACTION, authoritative=False, map_version=version_word)
        return prefix, record, answer, rec[:6] + b"\0\0" + rec[8:end] + stored.answered_bytes

    @staticmethod
    def _read_locators(rec: bytes, end: int) -> _StoredLocators | None:
        """The locators after offset `end` of `rec`, by the codec; None unless re-encoding gives `rec` back."""
        try:
            record = _record_from_bytes(rec)
            if _record_bytes(record) != rec:
                return None
            answered = tuple(_plain_locator(locator) for locator in record.locators)
            if all(a is b for a, b in zip(answered, record.locators)):
                answered = record.locators
            answered_bytes = _record_bytes(replace(record, locators=answered))[end:]
        except (LispDecodeError, LispEncodeError):
            return None  # `_registration_from_entry` reports it
        return _StoredLocators(record.locators, answered, answered_bytes)


def _subscription_entry(sub: Subscription) -> dict:
    return {
        "t": "sub",
        "iid": sub.iid,
        "net": str(sub.prefix),
        "xid": _xid_bytes(sub.xtr_id),
        "sid": sub.site_id,
        "rloc": str(sub.itr_rloc),
        "port": sub.port,
        "nonce": sub.nonce,
        "at": sub.subscribed_at,
        "exp": sub.expires,
        "seids": [str(source) for source in sub.source_eids],
    }


def _subscription_from_entry(entry: dict) -> Subscription:
    return Subscription(
        iid=int(entry["iid"]),
        prefix=ipaddress.ip_network(entry["net"]),
        xtr_id=int.from_bytes(entry["xid"], "big"),
        site_id=int(entry["sid"]),
        itr_rloc=ipaddress.ip_address(entry["rloc"]),
        port=int(entry["port"]),
        nonce=int(entry["nonce"]),
        subscribed_at=float(entry["at"]),
        expires=float(entry["exp"]),
        # "seid": one source EID, as written before subscriptions kept several.
        source_eids=tuple(ipaddress.ip_address(s) for s in entry.get("seids") or
                          ([entry["seid"]] if entry.get("seid") else [])),
    )
