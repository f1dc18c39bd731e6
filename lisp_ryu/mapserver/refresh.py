"""The refresh shortcut: a Map-Register identical to one handled in full but for its nonce (what ETRs send
every minute) moves the expiries of what it registered on in place, without being decoded.

Split from `registry.py`, which handles every Map-Register in full and
remembers here (`Refreshes.remember`) what each one registered.  The key is
everything of the message but its nonce and authentication data: flags,
records, xTR-ID, key and algorithm; with the address and port it came from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from lisp_ryu.config import SiteConfig
from lisp_ryu.effects import SendControl
from lisp_ryu.mapserver.freshness import ReplayGuard
from lisp_ryu.mapserver.journal import Journal
from lisp_ryu.mapserver.pubsub import PubSub
from lisp_ryu.mapserver.state import EtrRegistration, IPAddress, IPNetwork, Registered, State
from lisp_ryu.wire import AuthResult, MapRegister, TTL_INFINITE, check_authentication
from lisp_ryu.wire.auth import compute_digest

#: Map-Registers remembered for the refresh shortcut (the least recently handled in full forgotten first).
REFRESH_CAPACITY = 1 << 18

_set = object.__setattr__  # a registration's expiry, registration time and nonce move on in place


class Owner(Protocol):
    """What the shortcut needs of the registry (`registry.Registry`), which owns it."""

    journal: Journal
    state: State
    replay: ReplayGuard
    pubsub: PubSub
    registration_ttl: float
    built: object  # the merged record `rebuild` made last

    def rebuild(self, iid: int, net: IPNetwork, entry: Registered, previous: bytes | None,
                record: object = None) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Refresh:
    """What a Map-Register handled in full registered, for `Refreshes.refresh` of its identical successors."""

    site: SiteConfig
    etr: str
    source: IPAddress
    port: int
    xtr_id: int | None
    entries: tuple[Registered, ...]  # per record: the prefix's entry
    regs: tuple[EtrRegistration, ...]  # per record: this ETR's registration in it
    lifetimes: tuple[float, ...]  # per record
    rlocs: frozenset  # the RLOC addresses the message registers (anti-replay: `freshness`)
    notify: bytes  # the Map-Notify it asks for, with a zero nonce and unsigned; b"" when it asks for none
    records: int


def refresh_key(payload: bytes) -> bytes:
    """Everything but the nonce and the authentication data: what the registrations depend on."""
    return payload[:4] + payload[12:16] + payload[16 + int.from_bytes(payload[14:16], "big"):]


class Refreshes:
    """The Map-Registers handled in full, by `refresh_key`, and the shortcut their refreshes take."""

    def __init__(self, registry: Owner) -> None:
        self._registry = registry
        self._known: dict[bytes, _Refresh] = {}

    def get(self, key: bytes, source: IPAddress, port: int) -> _Refresh | None:
        known = self._known.get(key)
        return known if known is not None and known.source == source and known.port == port else None

    def remember(self, key: bytes, payload: bytes, message: MapRegister, site: SiteConfig, etr: str,
                 source: IPAddress, port: int, made: list[tuple[Registered, EtrRegistration]]) -> None:
        """Keep what an identical Map-Register (another nonce, so other authentication data) needs to
        refresh what this one registered without being decoded: see `refresh`."""
        known = self._known
        known.pop(key, None)
        while len(known) >= REFRESH_CAPACITY:  # the oldest first (dicts keep insertion order)
            del known[next(iter(known))]
        notify = unsigned_notify(payload) if message.want_map_notify else b""
        ttl = self._registry.registration_ttl
        lifetimes = tuple(record.ttl * 60.0 if message.use_ttl_for_timeout and record.ttl != TTL_INFINITE
                          else ttl for record in message.records)
        rlocs = frozenset(locator.address for record in message.records for locator in record.locators)
        known[key] = _Refresh(site, etr, source, port, message.xtr_id, tuple(e for e, _ in made),
                              tuple(r for _, r in made), lifetimes, rlocs, notify, len(message.records))

    def refresh(self, key: bytes, known: _Refresh, payload: bytes, now: float) -> list[SendControl] | None:
        """A Map-Register identical to one handled in full (`known`) but for its nonce: authenticated,
        checked for freshness, then the expiries of what it registered moved on in place.

        None when it cannot be taken this way (authentication fails, the journal is down, one of its
        registrations has changed or gone since): the full path then decides, and counts.
        Nothing is decoded, nothing long-lived allocated, and nothing journalled, unless a
        registration's stored expiry would lapse within a third of its lifetime: then its entry is
        journalled again, so that a restart keeps every registration whose ETR refreshes it at
        least three times per lifetime (RFC 9301's 60 s in 180 s).
        """
        registry = self._registry
        site = known.site
        journal = registry.journal
        if check_authentication(payload, site.key) is not AuthResult.OK or journal.failure:
            return None
        etr = known.etr
        latest = None
        for entry, reg in zip(known.entries, known.regs):
            if entry.etr(etr) is not reg or entry.site != site.name:
                del self._known[key]
                return None  # changed since (by another message, a withdrawal, an expiry, a move)
            if latest is None or reg.registered_at > latest.registered_at:
                latest = reg
        nonce = int.from_bytes(payload[4:12], "big")
        auth_end = 16 + int.from_bytes(payload[14:16], "big")
        digest = payload[16:auth_end]
        state = registry.state
        refusal = registry.replay.check_fields(etr, nonce, digest, known.source, known.rlocs, now, latest, False)
        if refusal is not None:
            reason, detail = refusal
            state.count("received.map_register")
            state.count(f"rejected.map_register.{reason}")
            state.log_throttled(f"register-{reason}", logging.WARNING,
                                "refused Map-Register from %s (%s, site %s) as a replay: %s", known.source,
                                etr, site.name, detail)
            return []
        if known.xtr_id is not None:
            state.xtr_sites[known.xtr_id] = site.name
        until = now + registry.registration_ttl
        journalled = journal.store is not None
        published: list[SendControl] = []
        expiries: dict[float, float] = {}  # lifetime -> expiry: one float for the records of a message
        turn = next(state.sequence)  # (see `EtrRegistration.turn`)
        registry.pubsub.begin()  # as the full path: one Map-Notify per destination
        for entry, reg, lifetime in zip(known.entries, known.regs, known.lifetimes):
            expires = expiries.get(lifetime)
            if expires is None:
                expires = expiries[lifetime] = now + lifetime
            _set(reg, "registered_at", now)
            _set(reg, "expires", expires)
            _set(reg, "nonce", nonce)
            _set(reg, "turn", turn)
            if expires > until:
                until = expires
            if journalled and reg.durable - now < lifetime / 3:
                journal.record_registration(reg)
                _set(reg, "durable", expires)
            if len(entry) > 1:
                # The freshest ETR's locators come first in the merged record, and win for an RLOC that
                # several ETRs register: the merged record may change, as `upsert` would change it.
                net = reg.prefix
                if registry.rebuild(reg.iid, net, entry, entry.record_bytes):
                    holders = [other for other in entry.regs() if other is not reg]
                    published += registry.pubsub.publish(reg.iid, net, registry.built, holders, now)
        published += registry.pubsub.end(now)
        registry.replay.accepted_fields(etr, nonce, digest, known.source, until)
        journal.note_session(site.name, etr, until - now)
        state.count("received.map_register")
        state.count("accepted.map_register")
        state.count("refreshed.map_register")
        if not known.notify:
            return published
        state.count("sent.map_notify")
        return [SendControl(known.source, known.port, signed_notify(known.notify, payload, site.key),
                            f"Map-Notify for {known.records} record(s) of site {site.name}"), *published]


def unsigned_notify(register: bytes) -> bytes:
    """The Map-Notify acknowledging a (decoded, so well-formed) Map-Register: its records and xTR-ID/site-ID
    as received, its key and algorithm, a zero nonce and zero authentication data (`signed_notify` fills both).

    The records are echoed as they came rather than encoded again, as an ETR checks them against what it sent."""
    auth_end = 16 + int.from_bytes(register[14:16], "big")
    first = (4 << 28) | (register[0] >> 1 & 1) << 27 | register[3]  # the I bit moves from bit 6 to bit 4
    return first.to_bytes(4, "big") + bytes(8) + register[12:16] + bytes(auth_end - 16) + register[auth_end:]


def signed_notify(unsigned: bytes, register: bytes, key: str) -> bytes:
    """`unsigned` (`unsigned_notify`) with the nonce of `register` and signed as `register` is."""
    data = unsigned[:4] + register[4:12] + unsigned[12:]
    auth_end = 16 + int.from_bytes(register[14:16], "big")
    return data[:16] + compute_digest(data, key, register[13]) + data[auth_end:]
