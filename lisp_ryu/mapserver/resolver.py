"""Map-Request (inside an ECM, RFC 9301 §8.3): answers, negative answers, policy, and the fast path.

Rules, and why:

* **Map-Request**: proxy Map-Reply when any registered ETR of the prefix
  set the P bit, else the ECM is forwarded unchanged to the ETR that
  registered last, at the address and port its Map-Register came from.
  Replies go to the first ITR-RLOC of the requester's family, at the inner
  UDP source port.  Only the first EID-Record is answered.
* **Negative Map-Reply**: for an EID inside no configured prefix, the widest
  prefix around it that overlaps no configured prefix, with
  `negative_ttl_minutes` and `negative_action`.  For an EID inside a
  configured prefix that nobody registered, RFC 9301 §8.2 asks for
  Natively-Forward with a 1-minute TTL; the prefix is the configured one,
  narrowed so it overlaps no registered prefix and no more-specific
  configured prefix.
* **Policy** (`shaping`): a denied (source EID, ITR-RLOC) pair gets a
  negative record with action Drop/Policy-Denied and `negative_ttl_minutes`.
  When policy shapes an answer, the Map-Server answers itself instead of
  forwarding the request (the ETR knows no policy).
* **Static mappings** (stated over REST): the longer prefix wins; for the same
  prefix a registration beats the static mapping (a live, authenticated ETR
  knows better; static entries serve destinations that do not register).
* **Fast path**: a plain Map-Request (`lisp_ryu.wire.quick`) for a
  registered EID, while no policy is set and no static mapping is more
  specific, is answered from fixed-offset reads (remembered for the same
  request under another nonce: `PlainRequests`) and the record encoded once
  per change (or its copy in the answer cache), without decoding it in full.
  Its answers and counters are those of the full path, byte for byte
  (tests/unit/mapserver/test_ms_quick_path.py); everything else takes the
  full path.  `reply_quickly` is its one entry, for the server loop and for
  `MapServer.handle_control` alike.
* **Shedding subscribe floods**: a subscribing request (I and N bits) goes
  to the full path, which decodes it and makes a subscription candidate,
  only when `PubSub.admits` its xTR-ID (known, or within the budget of new
  ones).  Otherwise the fast path answers it without subscribing when it
  can, and the full path drops it before decoding when not (a negative or
  policy-shaped answer costs the decode the budget exists to spare): a
  spoofed flood of new xTR-IDs costs a fixed-offset read per request.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from lisp_ryu.effects import SendControl
from lisp_ryu.mapping import EidError
from lisp_ryu.mapping.policy import Policy
from lisp_ryu.mapserver.pubsub import PubSub
from lisp_ryu.mapserver.shaping import eid_text, shape
from lisp_ryu.mapserver.state import (
    LOG,
    EtrRegistration,
    IPAddress,
    IPNetwork,
    Registered,
    State,
    record_bytes,
    struct_reply,
)
from lisp_ryu.ratelimit import RateLimiter, ReflectionLimiter
from lisp_ryu.wire import (
    Action,
    EidPrefix,
    EncapsulatedControlMessage,
    InstanceIdAddress,
    LispDecodeError,
    LispEncodeError,
    MappingRecord,
    MapReply,
    MapRequest,
)
from lisp_ryu.wire.quick import PlainRequests, read_subscriber

_REPLY_HEAD = struct_reply(b"", b"")  # what `struct_reply` puts before the nonce

#: RFC 9301 §8.2: a configured EID prefix with no registration answers
#: Natively-Forward for one minute.
UNREGISTERED_TTL_MINUTES = 1


@dataclass(frozen=True, slots=True)
class Answer:
    """What a requester is told; `entry` is set only when it is the plain registration (forwardable)."""

    record: MappingRecord
    entry: Registered | None
    net: IPNetwork  # the prefix answered for (policy may narrow the record's, never widen it)


class Resolver:
    """Answers Map-Requests from the registrations, static mappings and policy in `state`."""

    def __init__(self, state: State, pubsub: PubSub, limiter: RateLimiter, quick_path: bool = True,
                 reflect: ReflectionLimiter | None = None) -> None:
        self._state = state
        self._pubsub = pubsub
        self._count = state.count
        # The fast path reads these per request: held here, one attribute away.
        self.limiter = limiter  # (binds `_allow`, its method the fast path calls)
        self._reflect = (reflect if reflect is not None else ReflectionLimiter()).allow
        self._registered = state.registered
        self._static = state.static
        self._answers = state.answers
        self._quick_path = quick_path
        self._read_request = PlainRequests().read  # an ITR's repeated requests are read once
        self._fast_path_open = self._static_in_use = False  # see refresh_fast_path
        self._quick_replies = 0  # fast-path Map-Replies not yet added to the counters (one add, not three)
        self._fast_replies = 0  # fast-path Map-Replies counted so far
        self.refresh_fast_path()

    # ------------------------------------------------------------------ the fast path

    def reply_quickly(self, payload: bytes, source: IPAddress, now: float) -> tuple[bytes, bytes, int] | None:
        """The answer to a plain Map-Request that a registration alone decides, without building effects.

        (datagram, destination as 4 or 16 bytes, port): a proxy Map-Reply to
        the ITR-RLOC, or the request itself forwarded to the ETR that
        registered last; the datagram empty when the source's rate limit
        dropped it.  Counted as `MapServer.handle_control` counts.  None for
        anything else, which is then neither counted nor charged: give it to
        `handle_control`.
        """
        if not self._fast_path_open:
            return None
        request = self._read_request(payload)
        if request is None:
            return None
        nonce, iid, eid, rloc, port, subscriber = request
        record = self._answers.records.get((iid, eid))
        if record is None:
            entry = self._plain_entry(iid, eid)
            if entry is None:
                return None
            if subscriber is not None and self._subscribes(subscriber, rloc, now):
                return None
            if not entry.proxy:
                return self._forward(payload, source, now, entry, rloc, port)
            record = entry.record_bytes or self._encode_record(entry)
            if not self._allow(source, now):
                return self._rate_limited(rloc, port)
            self._answers.offer((iid, eid), record)  # (after the limit: a flooding source fills nothing)
        elif subscriber is not None and self._subscribes(subscriber, rloc, now):
            return None
        elif not self._allow(source, now):
            return self._rate_limited(rloc, port)
        reply = _REPLY_HEAD + nonce + record  # `struct_reply`, inline
        if not self._reflect(rloc, len(payload), len(reply), now):
            self._count("received.datagrams")
            self._count("received.map_request")
            self._reflection_limited(rloc)
            return b"", rloc, port
        self._quick_replies += 1
        return reply, rloc, port

    def _subscribes(self, xtr_id: int, rloc: bytes, now: float) -> bool:
        """True: the full path makes this subscription; False: the fast path answers without (counted)."""
        if self._pubsub.admits(xtr_id, now):
            return True
        self._pubsub.shed(rloc, answered=True)
        return False

    def _reflection_limited(self, rloc: bytes | IPAddress) -> None:
        self._count("dropped.reflection_limited")
        if isinstance(rloc, bytes):
            rloc = ipaddress.ip_address(rloc)
        self._state.log_throttled("reflection", logging.WARNING, "holding back answers to %s: over its byte "
                                  "credit (reflection limit)", rloc)

    def _rate_limited(self, rloc: bytes, port: int) -> tuple[bytes, bytes, int]:
        self._count("received.datagrams")
        self._count("dropped.rate_limited")
        return b"", rloc, port

    def _forward(self, payload: bytes, source: IPAddress, now: float, entry: Registered, rloc: bytes,
                 port: int) -> tuple[bytes, bytes, int]:
        """The request itself, to the ETR: it answers for itself (no P bit)."""
        if not self._allow(source, now):
            return self._rate_limited(rloc, port)
        target = _forward_target(entry)
        self._count("received.datagrams")
        self._count("received.map_request")
        self._count("sent.map_request_forwarded")
        return payload, target.source.packed, target.port

    def _plain_entry(self, iid: int, eid: bytes) -> Registered | None:
        """The registration that alone answers for the host `eid` (packed) in `iid`, else None."""
        match = self._registered.longest_match_length_packed(iid, eid)  # (a host route's network is not kept)
        if match is None:
            return None
        if self._static_in_use:
            static = self._static.longest_match_length_packed(iid, eid)
            if static is not None and static[0] > match[0]:
                return None
        return match[1]

    @staticmethod
    def _encode_record(entry: Registered) -> bytes:
        """`entry`'s record as answered, encoded once per change of the registration."""
        assert entry.record is not None  # every stored prefix has at least one ETR
        entry.record_bytes = record_bytes(entry.record)
        return entry.record_bytes

    @property
    def limiter(self) -> RateLimiter:
        """The per-source token buckets every datagram is charged to (shared with `MapServer`)."""
        return self._limiter

    @limiter.setter
    def limiter(self, limiter: RateLimiter) -> None:
        self._limiter = limiter
        self._allow = limiter.allow

    @property
    def quick_path(self) -> bool:
        return self._quick_path

    @quick_path.setter
    def quick_path(self, on: bool) -> None:
        self._quick_path = on
        self.refresh_fast_path()

    def refresh_fast_path(self) -> None:
        """The fast path's preconditions, kept as two flags (it runs per request; they change rarely):
        open while no policy is set, looking for a more specific static mapping only when there is one.
        Called when the switch, the policy or the static mappings change."""
        self._fast_path_open = self._quick_path and self._state.policy.empty
        self._static_in_use = len(self._static) > 0
        self._answers.clear()  # remembered under the old rules

    def fold_quick_replies(self) -> None:
        """Add the fast path's Map-Replies to the counters (before anyone reads them)."""
        if self._quick_replies:
            answered, self._quick_replies = self._quick_replies, 0
            self._fast_replies += answered
            for name in ("received.datagrams", "received.map_request", "sent.map_reply"):
                self._count(name, answered)

    def answer_cache_stats(self) -> dict[str, int]:
        """The fast path's answer cache: size, hits, misses, flushes."""
        self.fold_quick_replies()
        answers = self._answers
        return {"entries": len(answers), "capacity": answers.capacity,
                "hits": self._fast_replies - answers.misses, "misses": answers.misses, "flushes": answers.flushes}

    # ------------------------------------------------------------------ the full path

    def on_ecm(self, payload: bytes, source: IPAddress, now: float) -> list[SendControl]:
        subscriber = read_subscriber(payload)
        if subscriber is not None and not self._pubsub.admits(subscriber, now):
            self._count("received.map_request")
            self._pubsub.shed(source, answered=False)
            return []
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
        pubsub = self._pubsub
        try:
            eid = first.eid_prefix
            iid = eid.instance_id
            if source_eid is None and request.xtr_id is not None and not self._state.policy.empty:
                # A re-resolution (SMR, refresh) names no source: the subscriber's last one stands.
                known = pubsub.subscription(iid, eid.network, request.xtr_id)
                source_eid = known.source_eids[-1] if known is not None and known.source_eids else None
            answer = self.answer(iid, eid.address, source_eid, rloc)  # EidError unless an IP EID
        except (LispDecodeError, LispEncodeError, EidError):
            self._count("rejected.map_request.unsupported-eid")
            return []
        record, entry = answer.record, answer.entry
        effects: list[SendControl] = []
        asked = len(payload)  # the byte credit this request earns its ITR-RLOC, taken by the first answer charged
        if rloc is None or request.dont_map_reply:
            pass  # nobody to answer, or the requester asked for no answer (D bit)
        elif entry is not None and not entry.proxy:
            target = _forward_target(entry)
            self._count("sent.map_request_forwarded")
            effects.append(SendControl(target.source, target.port, payload,
                                       f"Map-Request for {eid} forwarded to ETR {target.source}"))
        elif entry is not None:
            reply = struct_reply(request.nonce.to_bytes(8, "big"), entry.record_bytes or self._encode_record(entry))
            if self._reflect(rloc.packed, asked, len(reply), now):
                self._count("sent.map_reply")
                effects.append(SendControl(rloc, port, reply, f"Map-Reply for {eid} to {rloc}"))
            else:
                self._reflection_limited(rloc)
            asked = 0
        else:
            if record.action is Action.DROP_POLICY_DENIED:
                counter = "sent.map_reply_policy_denied"
                what = f"policy-denied Map-Reply {eid_text(record)} to {rloc} (source EID {source_eid})"
            elif record.locators:
                counter = ("sent.map_reply_policy" if self._static.longest_match(iid, eid.address) is None
                           else "sent.map_reply_static")
                what = f"Map-Reply {eid_text(record)} to {rloc}"
            else:
                counter = "sent.map_reply_negative"
                what = f"negative Map-Reply {eid_text(record)} to {rloc}"
            reply = MapReply(nonce=request.nonce, records=(record,)).encode()
            if self._reflect(rloc.packed, asked, len(reply), now):
                self._count(counter)
                effects.append(SendControl(rloc, port, reply, what))
            else:
                self._reflection_limited(rloc)
            asked = 0
        if subscribing:
            assert request.xtr_id is not None
            # Never wider than the prefix answered: what the ITR caches is all that can change for it
            # (a request for 0.0.0.0/0 answered with a /5 subscribes to the /5).
            named = eid.network
            net = named if named.version == answer.net.version and named.subnet_of(answer.net) else answer.net
            if rloc is None:
                sub = pubsub.subscription(iid, net, request.xtr_id) or pubsub.subscription(iid, eid.network,
                                                                                            request.xtr_id)
                if sub is not None:
                    LOG.info("xTR-ID %032x withdrew its subscription to %s iid %d", request.xtr_id, sub.prefix, iid)
                    self._count("subscriptions.withdrawn")
                    pubsub.drop_subscription(sub, now=now)
            else:
                effects += pubsub.subscribe(request, iid, net, rloc, port, record, now, source_eid, asked)
        if rloc is None and not subscribing:
            self._count("dropped.map_request_no_itr_rloc")
        return effects

    def answer(self, iid: int, address: IPAddress, source: IPAddress | None, itr: IPAddress | None,
               policy: Policy | None = None) -> Answer:
        """The mapping for `address` as this requester may see it (see "Policy" and "Static mappings")."""
        policy = self._state.policy if policy is None else policy
        reg = self._registered.longest_match(iid, address)
        static = self._static.longest_match(iid, address) if len(self._static) else None
        entry: Registered | None = None
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
            return Answer(record, entry, net)
        shaped = shape(iid, net, record, site, source, itr, address, policy, self._state.config.negative_ttl_minutes)
        return Answer(shaped, entry if shaped is record else None, net)

    def _negative_answer(self, iid: int, net: IPNetwork) -> tuple[IPNetwork, int, Action]:
        """Prefix, TTL (minutes) and action of the negative Map-Reply for an unregistered EID."""
        state = self._state
        address = net.network_address
        configured = state.configured.longest_match(iid, address)
        if configured is None:
            negative = state.configured.widest_negative(iid, address)
            if len(self._static):  # never cover a static mapping either
                static_hole = self._static.widest_negative(iid, address)
                if static_hole.prefixlen > negative.prefixlen:
                    negative = static_hole
            return negative, state.config.negative_ttl_minutes, state.negative_action
        site_prefix = configured[0]
        hole = self._registered.widest_negative(iid, address)
        length = max(hole.prefixlen, site_prefix.prefixlen)
        if len(self._static):
            length = max(length, self._static.widest_negative(iid, address).prefixlen)
        value, width = int(address), address.max_prefixlen
        for inner in state.inner_configured[(iid, site_prefix)]:
            common = width - (value ^ int(inner.network_address)).bit_length()
            length = max(length, common + 1)
        return ipaddress.ip_network((address, length), strict=False), UNREGISTERED_TTL_MINUTES, Action.NATIVELY_FORWARD


def _forward_target(entry: Registered) -> EtrRegistration:
    """The ETR a Map-Request for `entry` is forwarded to: the one that registered last."""
    return max(entry.etrs.values(), key=lambda r: (r.registered_at, r.etr))


def _reply_rloc(request: MapRequest, source: IPAddress) -> IPAddress | None:
    """The first ITR-RLOC of the family we received on, else the first IP one at all."""
    usable = [r for r in request.itr_rlocs if isinstance(r, (ipaddress.IPv4Address, ipaddress.IPv6Address))]
    for rloc in usable:
        if rloc.version == source.version:
            return rloc
    return usable[0] if usable else None


def _ip_of(address: object) -> IPAddress | None:
    """The IP address inside a Source-EID (plain or in an Instance-ID LCAF), else None."""
    if isinstance(address, InstanceIdAddress):
        address = address.address
    return address if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else None
