"""Map-Register (RFC 9301 §8.2): which site may register what, and the table of registrations.

Rules, and why:

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
* **Refused before decoding**: a Map-Register whose HMAC verifies under
  the key of no site owning its first record (read at fixed offsets) is
  refused before the full decode, with the reason the full path would give
  (its chosen site must own every record, the first included; only a
  register with a non-IP EID in a later record is counted differently): a
  flood under a wrong key costs an HMAC each, not a decode.
* **Replays** (`freshness`): an authenticated Map-Register must also be
  current: our xTR's sequenced nonces must grow; for other ETRs a message is
  refused when it comes from an address that is neither the registrant's nor
  one of its RLOCs, or was superseded by a later one (varying nonces), and an
  old message never takes a prefix back from the site it moved to.
* **Expiry**: `registration_ttl` seconds after the ETR's last Map-Register
  (OOR's 180 s), or the Record TTL when the register sets the T bit.  A
  record with Record TTL 0 withdraws that ETR's registration at once.

Every change of a prefix's RLOC set is published (`pubsub`); every change of
its answer drops the fast path's cached copies of it.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Iterator

from lisp_ryu.config import SiteConfig
from lisp_ryu.effects import SendControl
from lisp_ryu.mapping import EidError
from lisp_ryu.mapserver.freshness import ReplayGuard
from lisp_ryu.mapserver.journal import Journal, registration_entry, unregistration_entry
from lisp_ryu.mapserver.pubsub import PubSub
from lisp_ryu.mapserver.state import (
    EtrRegistration,
    IPAddress,
    IPNetwork,
    Registered,
    State,
    as_answer,
    plain_locator,
    rlocs_text,
)
from lisp_ryu.wire import (
    Action,
    AuthResult,
    EidPrefix,
    LispDecodeError,
    LispEncodeError,
    Locator,
    MappingRecord,
    MapRegister,
    TTL_INFINITE,
    check_authentication,
)
from lisp_ryu.wire.auth import compute_digest
from lisp_ryu.wire.quick import read_register_eid

LOG = logging.getLogger("lisp_ryu.mapserver")

#: Distinct locator sets shared between registrations (forgotten all at once past this: a bound, not an LRU).
LOCATOR_SETS = 1 << 16

#: Map-Registers remembered for the refresh shortcut (the least recently handled in full forgotten first).
REFRESH_CAPACITY = 1 << 18

_set = object.__setattr__  # `Registry.refresh` moves a live registration's expiry on in place


@dataclass(frozen=True, slots=True)
class _Refresh:
    """What a Map-Register handled in full registered, for `Registry.refresh` of its identical successors."""

    site: SiteConfig
    etr: str
    source: IPAddress
    port: int
    xtr_id: int | None
    made: tuple[tuple[Registered, EtrRegistration], ...]  # per record: the prefix's entry, this ETR's registration
    lifetimes: tuple[float, ...]  # per record
    rlocs: frozenset  # the RLOC addresses the message registers (anti-replay: `freshness`)
    notify: bytes  # the Map-Notify it asks for, with a zero nonce and unsigned; b"" when it asks for none
    records: int


class Reject(Exception):
    """A message we decline: counted under `reason`, state untouched."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Registry:
    """Map-Registers into `state.registered`: authorisation, upsert and removal, the merged record, expiry."""

    def __init__(self, state: State, journal: Journal, pubsub: PubSub) -> None:
        self._state = state
        self._journal = journal
        self._pubsub = pubsub
        self._count = state.count
        self._registered = state.registered
        self._configured = state.configured
        self._answers = state.answers
        self._replay = ReplayGuard()
        self._precheck_owners: dict[tuple[int, IPNetwork], tuple[SiteConfig, ...]] = {}  # see _precheck
        #: Map-Registers handled in full, by everything but their nonce and authentication data: an identical
        #: one (a periodic refresh) takes `refresh`.  False: every Map-Register takes the full path (tests).
        self._refreshes: dict[bytes, _Refresh] = {}
        self._owner_memo: dict[tuple, tuple[tuple[SiteConfig, bool], ...]] = {}  # see `_owners`
        self._locator_sets: dict[tuple[Locator, ...], tuple[Locator, ...]] = {}  # see `_share_locators`
        self.refresh_shortcut = True

    def on_map_register(self, payload: bytes, source: IPAddress, port: int, now: float) -> list[SendControl]:
        if self.refresh_shortcut and len(payload) >= 16:
            # Everything but the nonce and the authentication data: what the registrations depend on.
            key = payload[:4] + payload[12:16] + payload[16 + int.from_bytes(payload[14:16], "big"):]
            known = self._refreshes.get(key)
            if known is not None and known.source == source and known.port == port:
                effects = self.refresh(key, known, payload, now)
                if effects is not None:
                    return effects
        else:
            key = b""
        state = self._state
        self._count("received.map_register")
        try:
            self._precheck(payload)  # a wrong key costs an HMAC, not a decode
            message = MapRegister.decode(payload)
            self._share_locators(message)
            site, prefixes = self.authorise(payload, message)
        except Reject as reject:
            self._count(f"rejected.map_register.{reject.reason}")
            state.log_throttled(f"register-{reject.reason}", logging.WARNING,
                                "rejected Map-Register from %s: %s", source, reject.detail)
            return []
        if self._journal.refuse_while_down("map_register"):  # no change the journal cannot record
            return []
        etr = f"xtr:{message.xtr_id:032x}" if message.xtr_id is not None else f"rloc:{source}"
        replay = self._replay
        refusal = replay.check(etr, message, source, now, *self._live(etr, message, prefixes))
        if refusal is not None:
            reason, detail = refusal
            self._count(f"rejected.map_register.{reason}")
            state.log_throttled(f"register-{reason}", logging.WARNING,
                                "refused Map-Register from %s (%s, site %s) as a replay: %s", source, etr,
                                site.name, detail)
            return []
        new_message = replay.is_new(etr, message, now)
        if message.xtr_id is not None:
            state.xtr_sites[message.xtr_id] = site.name
        effects: list[SendControl] = []
        until = now + state.config.registration_ttl
        made: list[tuple[Registered, EtrRegistration]] = []  # for the refresh shortcut
        for record, (iid, net) in zip(message.records, prefixes):
            if not new_message and record.ttl != 0:
                entry = self._registered.get(iid, net)
                if entry is not None and entry.site != site.name:
                    # Sent before the prefix went to the other site: an old message, not a move back.
                    self._count("rejected.map_register_record.replayed-takeover")
                    state.log_throttled("register-replayed-takeover", logging.WARNING,
                                        "kept %s iid %d at site %s: %s (site %s) resent a Map-Register from "
                                        "before it moved there", net, iid, entry.site, etr, site.name)
                    continue
            if record.ttl == 0:
                entry = self._registered.get(iid, net)
                if entry is not None and etr in entry.etrs and entry.site == site.name:
                    LOG.info("%s withdrew %s iid %d (site %s)", etr, net, iid, site.name)
                    self._count("registrations.withdrawn")
                    effects += self.remove_etr(iid, net, etr, now)
                continue
            if message.use_ttl_for_timeout and record.ttl != TTL_INFINITE:
                lifetime = record.ttl * 60.0
            else:
                lifetime = state.config.registration_ttl
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
                nonce=message.nonce,
            )
            until = max(until, reg.expires)
            effects += self.upsert(reg, now)
            if key:
                entry = self._registered.get(iid, net)
                if entry is not None:
                    made.append((entry, entry.etrs[etr]))
        replay.accepted(etr, message, source, until)
        self._journal.note_session(site.name, etr, until - now)
        self._count("accepted.map_register")
        if key and len(made) == len(message.records):  # every record registered: its refreshes can skip all this
            self._remember(key, payload, message, site, etr, source, port, made)
        if message.want_map_notify:
            self._count("sent.map_notify")
            # Acknowledges the register: it goes first, the changes it caused after.
            effects.insert(0, SendControl(source, port, signed_notify(unsigned_notify(payload), payload, site.key),
                                          f"Map-Notify for {len(message.records)} record(s) of site {site.name}"))
        return effects

    def _share_locators(self, message: MapRegister) -> None:
        """Give records with equal locators one tuple of them: many EIDs are registered behind a few RLOC
        sets, and each decoded locator (an object, its dict and its address) costs ~350 bytes that would
        otherwise live as long as each registration.  Only freshly decoded records are touched."""
        shared = self._locator_sets
        for record in message.records:
            locators = record.locators
            same = shared.get(locators)
            if same is None:
                if len(shared) >= LOCATOR_SETS:
                    shared.clear()
                shared[locators] = locators
            elif same is not locators:
                record.__dict__["locators"] = same  # equal and immutable: the record is the same value

    # ------------------------------------------------------------------ the refresh shortcut

    def _remember(self, key: bytes, payload: bytes, message: MapRegister, site: SiteConfig, etr: str,
                  source: IPAddress, port: int, made: list[tuple[Registered, EtrRegistration]]) -> None:
        """Keep what an identical Map-Register (another nonce, so other authentication data) needs to
        refresh what this one registered without being decoded: see `refresh`."""
        refreshes = self._refreshes
        refreshes.pop(key, None)
        while len(refreshes) >= REFRESH_CAPACITY:  # the oldest first (dicts keep insertion order)
            del refreshes[next(iter(refreshes))]
        notify = unsigned_notify(payload) if message.want_map_notify else b""
        lifetimes = tuple(record.ttl * 60.0 if message.use_ttl_for_timeout and record.ttl != TTL_INFINITE
                          else self._state.config.registration_ttl for record in message.records)
        refreshes[key] = _Refresh(site, etr, source, port, message.xtr_id, tuple(made), lifetimes,
                                  frozenset(_rlocs(message)), notify, len(message.records))

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
        site = known.site
        if check_authentication(payload, site.key) is not AuthResult.OK or self._journal.failure:
            return None
        etr = known.etr
        latest = None
        for entry, reg in known.made:
            if entry.etrs.get(etr) is not reg or entry.site != site.name:
                del self._refreshes[key]
                return None  # changed since (by another message, a withdrawal, an expiry, a move)
            if latest is None or reg.registered_at > latest.registered_at:
                latest = reg
        nonce = int.from_bytes(payload[4:12], "big")
        auth_end = 16 + int.from_bytes(payload[14:16], "big")
        digest = payload[16:auth_end]
        refusal = self._replay.check_fields(etr, nonce, digest, known.source, known.rlocs, now, latest, False)
        if refusal is not None:
            reason, detail = refusal
            self._count("received.map_register")
            self._count(f"rejected.map_register.{reason}")
            self._state.log_throttled(f"register-{reason}", logging.WARNING,
                                      "refused Map-Register from %s (%s, site %s) as a replay: %s", known.source,
                                      etr, site.name, detail)
            return []
        state = self._state
        if known.xtr_id is not None:
            state.xtr_sites[known.xtr_id] = site.name
        until = now + state.config.registration_ttl
        journal = self._journal
        journalled = journal.store is not None
        published: list[SendControl] = []
        sequence = state.sequence
        for (entry, reg), lifetime in zip(known.made, known.lifetimes):
            expires = now + lifetime
            _set(reg, "registered_at", now)
            _set(reg, "expires", expires)
            _set(reg, "nonce", nonce)
            _set(reg, "turn", next(sequence))  # as `upsert` would schedule it now
            if expires > until:
                until = expires
            if journalled and reg.durable - now < lifetime / 3:
                _set(reg, "stored", journal.record_entry(registration_entry(reg)))
                _set(reg, "durable", expires)
            if len(entry.etrs) > 1:
                # The freshest ETR's locators come first in the merged record, and win for an RLOC that
                # several ETRs register: the merged record may change, as `upsert` would change it.
                previous = entry.record
                if self.rebuild(reg.iid, reg.prefix, entry, previous):
                    holders = [other for other in entry.etrs.values() if other is not reg]
                    published += self._pubsub.publish(reg.iid, reg.prefix, entry.record, holders, now)
        self._replay.accepted_fields(etr, nonce, digest, known.source, until)
        journal.note_session(site.name, etr, until - now)
        self._count("received.map_register")
        self._count("accepted.map_register")
        self._count("refreshed.map_register")
        if not known.notify:
            return published
        self._count("sent.map_notify")
        return [SendControl(known.source, known.port, signed_notify(known.notify, payload, site.key),
                            f"Map-Notify for {known.records} record(s) of site {site.name}"), *published]

    def _live(self, etr: str, message: MapRegister,
              prefixes: list[tuple[int, IPNetwork]]) -> tuple[EtrRegistration | None, bool]:
        """This ETR's latest registration of one of `prefixes` (what a replay would change), and
        whether the message changes anything of this ETR's (False: it only refreshes)."""
        latest = None
        changes = False
        for record, (iid, net) in zip(message.records, prefixes):
            entry = self._registered.get(iid, net)
            reg = entry.etrs.get(etr) if entry is not None else None
            if reg is None:
                changes |= record.ttl != 0
                continue
            changes |= record.ttl == 0 or reg.record != record or reg.site != entry.site
            if latest is None or reg.registered_at > latest.registered_at:
                latest = reg
        return latest, changes

    def _precheck(self, payload: bytes) -> None:
        """`Reject` a register no owner of its first record signed, before its decode; else nothing."""
        first = read_register_eid(payload)
        if first is None:
            return  # a shape the full path reads (and says what is wrong with)
        count, iid, address, mask_len = first
        configured = self._configured
        hit = configured.longest_match_packed(iid, address)
        while hit is not None and hit[0].prefixlen > mask_len:  # inside the record's prefix: not an owner
            hit = configured.covering(iid, hit[0], strict=True)
        if hit is None:
            if count == 1:  # else a later record may name the candidates, as in `authorise`
                raise Reject("unknown-site", f"no configured site covers {ipaddress.ip_address(address)}/{mask_len}"
                             f" iid {iid}")
            return
        owners = self._precheck_owners.get((iid, hit[0]))
        if owners is None:  # the configured prefixes are fixed: one list per prefix, made once
            owners = self._precheck_owners[(iid, hit[0])] = tuple(dict.fromkeys(site for site, _ in
                                                                     self.configured_owners(iid, hit[0])))
        result = AuthResult.NO_AUTHENTICATION
        for site in owners:
            result = check_authentication(payload, site.key)
            if result is AuthResult.OK:
                return
            if result is not AuthResult.MISMATCH:
                break
        raise Reject(f"auth-{result.value}", f"authentication {result.value} for site(s) "
                     f"{', '.join(site.name for site in owners)}")

    def authorise(self, payload: bytes, message: MapRegister) -> tuple[SiteConfig, list[tuple[int, IPNetwork]]]:
        """The site this register belongs to and its (iid, prefix) list, or `Reject`."""
        if not message.records:
            raise Reject("no-records", "no EID-records")
        prefixes: list[tuple[int, IPNetwork]] = []
        for record in message.records:
            try:
                eid = record.eid_prefix
                net = eid.network
                # `ipaddress` gives every /32 and /128 its own `hosts` closure (200 bytes that would live as
                # long as the registration) and every /31 and /127 a bound method that makes a reference
                # cycle: without them `hosts()` is the class's, which nothing here calls.
                net.__dict__.pop("hosts", None)
            except (LispDecodeError, LispEncodeError):
                raise Reject("unsupported-eid", f"EID {record.eid}/{record.eid_mask_len} is not an IP prefix") from None
            prefixes.append((eid.instance_id, net))
        candidates: list[SiteConfig] = []
        for iid, net in prefixes:
            for site, _ in self._owners(iid, net):
                if site not in candidates:
                    candidates.append(site)
        if not candidates:
            iid, net = prefixes[0]
            raise Reject("unknown-site", f"no configured site covers {net} iid {iid}")
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
            raise Reject(f"auth-{result.value}", f"authentication {result.value} for site(s) {names}")
        for iid, net in prefixes:
            allowed, reason = self.site_allows(chosen, iid, net)
            if not allowed:
                raise Reject(reason, f"{net} iid {iid} is not a registrable prefix of site {chosen.name}")
        return chosen, prefixes

    def configured_owners(self, iid: int, net: IPNetwork) -> Iterator[tuple[SiteConfig, bool]]:
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

    def _owners(self, iid: int, net: IPNetwork) -> tuple[tuple[SiteConfig, bool], ...]:
        """`configured_owners(iid, net)`, remembered: it depends only on the longest configured prefix
        around `net` and on whether `net` is that prefix itself, and many registered prefixes (host
        routes) share a handful of configured ones."""
        try:
            hit = self._configured.longest_match_packed(iid, net.network_address.packed)
        except (EidError, TypeError, ValueError):
            hit = None
        if hit is None or hit[0].prefixlen > net.prefixlen:  # none, or one inside `net`: not the covering one
            return tuple(self.configured_owners(iid, net))
        key = (iid, hit[0], hit[0].prefixlen == net.prefixlen)
        owners = self._owner_memo.get(key)
        if owners is None:
            owners = self._owner_memo[key] = tuple(self.configured_owners(iid, net))
        return owners

    def site_allows(self, site: SiteConfig, iid: int, net: IPNetwork) -> tuple[bool, str]:
        """Whether `site` may register `net`, and the reject reason when not."""
        inside = False
        for owner, allowed in self._owners(iid, net):
            if owner is site:
                if allowed:
                    return True, ""
                inside = True
        return False, "more-specific-denied" if inside else "prefix-outside"

    def upsert(self, reg: EtrRegistration, now: float) -> list[SendControl]:
        """Add or refresh one ETR's registration; publish when the prefix's RLOC set changed."""
        iid, net = reg.iid, reg.prefix
        restoring = self._journal.restoring
        entry = self._registered.get(iid, net)
        previous = entry.record if entry is not None else None
        holders: list[EtrRegistration] = []
        if entry is None:
            entry = Registered(reg.site)
            # A host route from another site inside a registered prefix: the workload left
            # the site that registered the covering prefix, whose ETRs must hear it (they
            # still serve it locally and would keep attracting its traffic).
            covering = self._registered.covering(iid, net, strict=True)
            if covering is not None and covering[1].site != reg.site and not restoring:
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
                self._journal.record(unregistration_entry(iid, net, old.etr))
            entry.etrs.clear()
            entry.site = reg.site
        else:
            holders = [other for other in entry.etrs.values() if other.etr != reg.etr]
        is_new = reg.etr not in entry.etrs
        reg = self._journal.record_registration(reg)  # kept encoded for the next snapshot
        _set(reg, "durable", reg.expires if reg.stored else float("inf"))
        entry.etrs[reg.etr] = reg
        _set(reg, "turn", self._state.schedule(reg.expires, "reg", (iid, net, reg.etr)))
        changed = self.rebuild(iid, net, entry, previous)
        if restoring:
            return []
        if is_new:
            if LOG.isEnabledFor(logging.INFO):  # (the arguments cost more than the rest of a registration)
                LOG.info("registered %s iid %d -> %s (site %s, %s)", net, iid, rlocs_text(reg.record), reg.site,
                         _etr_name(reg))
            self._count("registrations.new")
        elif LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("refreshed %s iid %d -> %s (site %s)", net, iid, rlocs_text(reg.record), reg.site)
        if not changed:
            return []
        return self._pubsub.publish(iid, net, entry.record, holders, now)

    def remove_etr(self, iid: int, net: IPNetwork, etr: str, now: float, journal: bool = True) -> list[SendControl]:
        entry = self._registered.get(iid, net)
        if entry is None or etr not in entry.etrs:
            return []
        previous = entry.record
        del entry.etrs[etr]
        if journal:
            self._journal.record(unregistration_entry(iid, net, etr))
        if entry.etrs:
            changed = self.rebuild(iid, net, entry, previous)
            record = entry.record
        else:
            self._registered.remove(iid, net)
            self._answers.forget(iid, net)
            changed, record = True, None
            LOG.info("%s iid %d has no registration left (site %s)", net, iid, entry.site)
        if not changed:
            return []
        return self._pubsub.publish(iid, net, record, list(entry.etrs.values()), now)

    def rebuild(self, iid: int, net: IPNetwork, entry: Registered, previous: MappingRecord | None) -> bool:
        """Recompute the merged record of a prefix; True if its locator set changed."""
        was_proxy = entry.proxy
        if len(entry.etrs) == 1:
            [reg] = entry.etrs.values()
            record = as_answer(reg.record, iid, net)
            entry.proxy = reg.proxy_reply
        else:
            etrs = sorted(entry.etrs.values(), key=lambda r: (-r.registered_at, r.etr))  # freshest first
            seen: dict[object, Locator] = {}
            for reg in etrs:
                for locator in reg.record.locators:
                    if locator.address not in seen:
                        seen[locator.address] = plain_locator(locator)
            versions = {reg.record.map_version for reg in etrs}
            record = MappingRecord.for_prefix(
                EidPrefix(net.network_address, net.prefixlen, iid),
                tuple(seen.values()),
                ttl=min(reg.record.ttl for reg in etrs),
                action=Action.NO_ACTION,
                map_version=versions.pop() if len(versions) == 1 else 0,
            )
            entry.proxy = any(reg.proxy_reply for reg in etrs)
        # An unchanged refresh keeps bytes and cached answers; else (a new prefix too) its answers go.
        if record != entry.record:
            entry.record = record
            entry.record_bytes = b""
            self._answers.forget(iid, net)
        elif entry.proxy != was_proxy:
            self._answers.forget(iid, net)
        return previous is None or frozenset(previous.locators) != frozenset(record.locators)

    def expire(self, key: tuple, when: float, now: float) -> list[SendControl]:
        """The "reg" timer: drop the ETR's registration if this is still its expiry."""
        iid, net, etr = key
        entry = self._registered.get(iid, net)
        reg = entry.etrs.get(etr) if entry is not None else None
        if reg is None:
            return []
        if reg.expires != when:  # refreshed since it was armed: one timer per registration, armed again
            self._state.schedule(reg.expires, "reg", key, reg.turn)
            return []
        LOG.info("registration of %s iid %d by %s (site %s) expired", net, iid, _etr_name(reg), reg.site)
        self._count("registrations.expired")
        # Not journalled: the stored expiry already says it, and a mass expiry must not cost an fsync each.
        return self.remove_etr(iid, net, etr, now, journal=False)

    def registrations(self, after: tuple[int, IPNetwork] | None = None
                      ) -> Iterator[tuple[int, IPNetwork, str, MappingRecord, tuple[EtrRegistration, ...]]]:
        """(iid, prefix, site, merged record, ETR registrations) in prefix order, from after `after`."""
        for iid, net, entry in (self._registered if after is None else self._registered.items_after(*after)):
            assert entry.record is not None
            yield iid, net, entry.site, entry.record, tuple(entry.etrs.values())


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


def _rlocs(message: MapRegister) -> set:
    return {locator.address for record in message.records for locator in record.locators}


def _etr_name(reg: EtrRegistration) -> str:
    return f"ETR {reg.source}" + (f" xTR-ID {reg.xtr_id:032x}" if reg.xtr_id is not None else "")
