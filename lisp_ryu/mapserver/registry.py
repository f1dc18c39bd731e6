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
from typing import Iterator

from lisp_ryu.config import SiteConfig
from lisp_ryu.effects import SendControl
from lisp_ryu.mapping import EidError
from lisp_ryu.mapserver.freshness import ReplayGuard
from lisp_ryu.mapserver.journal import Journal, unregistration_entry
from lisp_ryu.mapserver.stored_records import StoredRegistrations
from lisp_ryu.mapserver.pubsub import PubSub
from lisp_ryu.mapserver.refresh import Refreshes, refresh_key, signed_notify, unsigned_notify
from lisp_ryu.mapserver.state import (
    EtrContext,
    EtrRegistration,
    IPAddress,
    IPNetwork,
    Registered,
    State,
    as_answer,
    plain_locator,
    prefix_key,
    record_bytes,
    record_from_bytes,
    rlocs_text,
    share_context,
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
from lisp_ryu.wire.quick import read_register_eid

LOG = logging.getLogger("lisp_ryu.mapserver")

_set = object.__setattr__  # a registration's bookkeeping fields (`durable`) are set once it is made


_NETWORKS = {ipaddress.IPv4Address: ipaddress.IPv4Network, ipaddress.IPv6Address: ipaddress.IPv6Network}


def _allows(site: SiteConfig, owners: tuple[tuple[SiteConfig, bool], ...]) -> tuple[bool, str]:
    """`Registry.site_allows` from the owners of the prefix (`Registry._owners`)."""
    inside = False
    for owner, allowed in owners:
        if owner is site:
            if allowed:
                return True, ""
            inside = True
    return False, "more-specific-denied" if inside else "prefix-outside"


class Reject(Exception):
    """A message we decline: counted under `reason`, state untouched."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Registry:
    """Map-Registers into `state.registered`: authorisation, upsert and removal, the merged record, expiry."""

    def __init__(self, state: State, journal: Journal, pubsub: PubSub) -> None:
        self._state = self.state = state
        self._journal = self.journal = journal
        self._pubsub = self.pubsub = pubsub
        self.registration_ttl = state.config.registration_ttl
        self._count = state.count
        self._registered = state.registered
        self._configured = state.configured
        self._answers = state.answers
        self._replay = self.replay = ReplayGuard()
        self._precheck_owners: dict[tuple[int, IPNetwork], tuple[SiteConfig, ...]] = {}  # see _precheck
        #: Map-Registers handled in full, by everything but their nonce and authentication data: an identical
        #: one (a periodic refresh) takes `Refreshes.refresh`.  False: every Map-Register takes the full path (tests).
        self._refreshes = Refreshes(self)
        self._owner_memo: dict[tuple, tuple[tuple[SiteConfig, bool], ...]] = {}  # see `_owners`
        self._forms = StoredRegistrations()  # record forms seen (heads, locator sets): see `_recs`
        self.refresh_shortcut = True
        #: The merged record `rebuild` made last, decoded (what the entry holds encoded): to publish it.
        self.built: MappingRecord | None = None
        self.placed: Registered | None = None  # the prefix `upsert` put its registration in last

    def on_map_register(self, payload: bytes, source: IPAddress, port: int, now: float) -> list[SendControl]:
        if self.refresh_shortcut and len(payload) >= 16:
            key = refresh_key(payload)
            known = self._refreshes.get(key, source, port)
            if known is not None:
                effects = self._refreshes.refresh(key, known, payload, now)
                if effects is not None:
                    return effects
        else:
            key = b""
        state = self._state
        self._count("received.map_register")
        try:
            self._precheck(payload)  # a wrong key costs an HMAC, not a decode
            message = MapRegister.decode(payload)
            site, prefixes = self.authorise(payload, message)
        except Reject as reject:
            self._count(f"rejected.map_register.{reject.reason}")
            state.log_throttled(f"register-{reject.reason}", logging.WARNING,
                                "rejected Map-Register from %s: %s", source, reject.detail)
            return []
        if self._journal.refuse_while_down("map_register"):  # no change the journal cannot record
            return []
        etr = f"xtr:{message.xtr_id:032x}" if message.xtr_id is not None else f"rloc:{source}"
        recs = self._recs(payload, message, prefixes)  # what the registrations keep
        replay = self._replay
        refusal = replay.check(etr, message, source, now, *self._live(etr, message, prefixes, recs))
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
        context = share_context(EtrContext(site.name, etr, source, port, message.proxy_map_reply, message.key_id,
                                           int(message.algorithm_id), message.xtr_id, message.site_id))
        expiries: dict[float, float] = {}  # lifetime -> expiry: one float for the records of a message
        turn = next(state.sequence)  # (see `EtrRegistration.turn`)
        self._pubsub.begin()  # one Map-Notify per destination for all the records this message changes
        for record, rec, (iid, net) in zip(message.records, recs, prefixes):
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
                if entry is not None and entry.etr(etr) is not None and entry.site == site.name:
                    LOG.info("%s withdrew %s iid %d (site %s)", etr, net, iid, site.name)
                    self._count("registrations.withdrawn")
                    effects += self.remove_etr(iid, net, etr, now)
                continue
            if message.use_ttl_for_timeout and record.ttl != TTL_INFINITE:
                lifetime = record.ttl * 60.0
            else:
                lifetime = state.config.registration_ttl
            expires = expiries.get(lifetime)
            if expires is None:
                expires = expiries[lifetime] = now + lifetime
            reg = EtrRegistration(context, iid, prefix_key(net), rec, now, expires, message.nonce, turn=turn)
            until = max(until, reg.expires)
            effects += self.upsert(reg, now, record, net)
            if key:
                made.append((self.placed, reg))  # type: ignore[arg-type]
        effects += self._pubsub.end(now)
        replay.accepted(etr, message, source, until)
        self._journal.note_session(site.name, etr, until - now)
        self._count("accepted.map_register")
        if key and len(made) == len(message.records):  # every record registered: its refreshes can skip all this
            self._refreshes.remember(key, payload, message, site, etr, source, port, made)
        if message.want_map_notify:
            self._count("sent.map_notify")
            # Acknowledges the register: it goes first, the changes it caused after.
            effects.insert(0, SendControl(source, port, signed_notify(unsigned_notify(payload), payload, site.key),
                                          f"Map-Notify for {len(message.records)} record(s) of site {site.name}"))
        return effects

    def _recs(self, payload: bytes, message: MapRegister, prefixes: list[tuple[int, IPNetwork]]) -> list[bytes]:
        """`record_bytes` of each record: its bytes in `payload` where they are already in that form
        (checked with the head and locator forms seen before), else encoded again."""
        records = message.records
        sliced = self._forms.register_records(payload, len(records))
        if sliced is None:
            return [record_bytes(record) for record in records]
        read = self._forms.read_row
        return [rec if read(rec, prefix_key(net), iid) is not None else record_bytes(record)
                for record, rec, (iid, net) in zip(records, sliced, prefixes)]

    def _live(self, etr: str, message: MapRegister, prefixes: list[tuple[int, IPNetwork]],
              recs: list[bytes]) -> tuple[EtrRegistration | None, bool]:
        """This ETR's latest registration of one of `prefixes` (what a replay would change), and
        whether the message changes anything of this ETR's (False: it only refreshes)."""
        latest = None
        changes = False
        for record, rec, (iid, net) in zip(message.records, recs, prefixes):
            entry = self._registered.get(iid, net)
            reg = entry.etr(etr) if entry is not None else None
            if reg is None:
                changes |= record.ttl != 0
                continue
            changes |= record.ttl == 0 or reg.rec != rec or reg.site != entry.site
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
                address = eid.address
                # From the address's integer: `eid.network` would parse its text (no host bits: checked).
                net = _NETWORKS[type(address)]((int(address), eid.mask_len))  # type: ignore[arg-type]
            except (LispDecodeError, LispEncodeError, KeyError):
                raise Reject("unsupported-eid", f"EID {record.eid}/{record.eid_mask_len} is not an IP prefix") from None
            prefixes.append((eid.instance_id, net))
        candidates: list[SiteConfig] = []
        owners_of = [self._owners(iid, net) for iid, net in prefixes]
        for owners in owners_of:
            for site, _ in owners:
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
        for (iid, net), owners in zip(prefixes, owners_of):
            allowed, reason = _allows(chosen, owners)
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
        return _allows(site, self._owners(iid, net))

    def upsert(self, reg: EtrRegistration, now: float, record: MappingRecord | None = None,
               net: IPNetwork | None = None) -> list[SendControl]:
        """Add or refresh one ETR's registration; publish when the prefix's RLOC set changed.

        `record` and `net`, when given, are `reg.record` and `reg.prefix` (the caller decoded them)."""
        iid = reg.iid
        if net is None:
            net = reg.prefix
        restoring = self._journal.restoring
        entry = self._registered.get(iid, net)
        previous = entry.record_bytes if entry is not None else None
        holders: list[EtrRegistration] = []
        if entry is None:
            entry = Registered(reg.site)
            # A host route from another site inside a registered prefix: the workload left
            # the site that registered the covering prefix, whose ETRs must hear it (they
            # still serve it locally and would keep attracting its traffic).
            covering = self._registered.covering(iid, net, strict=True)
            if covering is not None and covering[1].site != reg.site and not restoring:
                holders = list(covering[1].regs())
                LOG.info("%s iid %d moved from site %s (inside %s) to site %s", net, iid, covering[1].site,
                         covering[0], reg.site)
                self._count("registrations.moved_out_of_covering")
            self._registered.insert(iid, net, entry)
        elif entry.site != reg.site:
            holders = list(entry.regs())
            LOG.info("%s iid %d moved from site %s to site %s", net, iid, entry.site, reg.site)
            self._count("registrations.moved")
            for old in holders:
                self._journal.record(unregistration_entry(iid, net, old.etr))
            entry.clear()
            entry.site = reg.site
        else:
            holders = [other for other in entry.regs() if other.context.etr != reg.context.etr]
        is_new = entry.etr(reg.context.etr) is None
        self._journal.record_registration(reg)
        _set(reg, "durable", reg.expires)  # what its journal entry says (`Refreshes.refresh`)
        if not reg.turn:  # (one drawn per Map-Register by `on_map_register`)
            _set(reg, "turn", next(self._state.sequence))
        entry.put(reg)
        self.placed = entry
        if not self._journal.replicated:  # else the ETR's session lease expires it, on every node
            self._state.expiry.add(reg)
        changed = self.rebuild(iid, net, entry, previous, record)
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
        return self._pubsub.publish(iid, net, self.built, holders, now)

    def remove_etr(self, iid: int, net: IPNetwork, etr: str, now: float, journal: bool = True) -> list[SendControl]:
        entry = self._registered.get(iid, net)
        if entry is None or entry.etr(etr) is None:
            return []
        previous = entry.record_bytes
        entry.drop(etr)
        if journal:
            self._journal.record(unregistration_entry(iid, net, etr))
        if len(entry):
            changed = self.rebuild(iid, net, entry, previous)
            record = self.built
        else:
            self._registered.remove(iid, net)
            self._answers.forget(iid, net)
            changed, record = True, None
            LOG.info("%s iid %d has no registration left (site %s)", net, iid, entry.site)
        if not changed:
            return []
        return self._pubsub.publish(iid, net, record, list(entry.regs()), now)

    def rebuild(self, iid: int, net: IPNetwork, entry: Registered, previous: bytes | None,
                record: MappingRecord | None = None) -> bool:
        """Recompute the merged record of a prefix (`previous`: its bytes before, None for a new prefix);
        True if its locator set changed.  `record`: the only ETR's record decoded, when the caller has it."""
        was_proxy = entry.proxy
        regs = entry.regs()
        if len(regs) == 1:
            [reg] = regs
            # A record already in the form answered is answered as it is (`as_answer`), read from its bytes.
            if record is not None and self._forms.read_row(reg.rec, reg.key, iid) is reg.rec:
                answer, answer_bytes = record, reg.rec
            else:
                if record is None:
                    record = reg.record
                answer = as_answer(record, iid, net)
                answer_bytes = reg.rec if answer is record else record_bytes(answer)  # the same bytes, shared
            entry.proxy = reg.proxy_reply
            self.built = answer
        else:
            etrs = sorted(regs, key=lambda r: (-r.registered_at, r.etr))  # freshest first
            records = [reg.record for reg in etrs]
            seen: dict[object, Locator] = {}
            for one in records:
                for locator in one.locators:
                    if locator.address not in seen:
                        seen[locator.address] = plain_locator(locator)
            versions = {one.map_version for one in records}
            self.built = MappingRecord.for_prefix(
                EidPrefix(net.network_address, net.prefixlen, iid),
                tuple(seen.values()),
                ttl=min(one.ttl for one in records),
                action=Action.NO_ACTION,
                map_version=versions.pop() if len(versions) == 1 else 0,
            )
            answer_bytes = record_bytes(self.built)
            entry.proxy = any(reg.proxy_reply for reg in etrs)
        # An unchanged refresh keeps cached answers; else (a new prefix too) its answers go.
        if answer_bytes != entry.record_bytes:
            entry.record_bytes = answer_bytes
            self._answers.forget(iid, net)
        elif entry.proxy != was_proxy:
            self._answers.forget(iid, net)
        if previous is None or not previous:
            return True
        if previous == answer_bytes:
            return False
        return frozenset(record_from_bytes(previous).locators) != frozenset(record_from_bytes(answer_bytes).locators)

    def expire(self, key: tuple, when: float, now: float) -> list[SendControl]:
        """The "reg" timer of a bucket of the expiry wheel: drop the registrations due whose ETRs did
        not refresh them."""
        effects: list[SendControl] = []

        def due(reg: EtrRegistration) -> None:
            iid, net, etr = reg.iid, reg.prefix, reg.context.etr
            entry = self._registered.get(iid, net)
            if entry is None or entry.etr(etr) is not reg:
                return  # replaced or removed since it took its slot
            LOG.info("registration of %s iid %d by %s (site %s) expired", net, iid, _etr_name(reg), reg.site)
            self._count("registrations.expired")
            # Not journalled: the stored expiry already says it, and a mass expiry must not cost an fsync each.
            effects.extend(self.remove_etr(iid, net, etr, now, journal=False))

        self._state.expiry.due(key, now, due)
        return effects

    def registrations(self, after: tuple[int, IPNetwork] | None = None
                      ) -> Iterator[tuple[int, IPNetwork, str, MappingRecord, tuple[EtrRegistration, ...]]]:
        """(iid, prefix, site, merged record, ETR registrations) in prefix order, from after `after`."""
        for iid, net, entry in (self._registered if after is None else self._registered.items_after(*after)):
            record = entry.record
            assert record is not None
            yield iid, net, entry.site, record, tuple(entry.regs())


def _etr_name(reg: EtrRegistration) -> str:
    return f"ETR {reg.source}" + (f" xTR-ID {reg.xtr_id:032x}" if reg.xtr_id is not None else "")
