"""What the Map-Server makes durable, and how it comes back: the journal entry schema, snapshots, restore.

`store.py` only handles files; this module decides what goes in them.
Every change one message causes is journalled as one batch (one fsync,
`Journal.flush`) before the handler returns, so a Map-Notify acknowledging a
change goes out only once the change survives a crash.  Expiries are not
journalled: the stored expiry times already say when an entry ends, so a
restart drops what expired meanwhile and a mass expiry costs no writes.
Pending Map-Notify retransmissions are not persisted.  When the journal
outgrows twice the live state it is compacted into a snapshot, which joins
each registration's entry as it was encoded on arrival instead of encoding
every registration again while the server answers nothing.

Entries are absolute (set this key / delete this key), so replaying a
journal on top of any older snapshot ends in the state journalled last.
A restart replays them (`replay`), then rebuilds the tables in bulk
(`Journal.restore`); entries that expired or that the configuration no
longer allows are dropped and counted.
"""

from __future__ import annotations

import heapq
import ipaddress
import logging
import struct
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, Protocol

import msgpack

from lisp_ryu.config import SiteConfig
from lisp_ryu.mapping.policy import Policy, PolicyError, RlocOverride, Rule, StaticMapping
from lisp_ryu.mapserver.state import (
    EtrRegistration,
    IPAddress,
    IPNetwork,
    Registered,
    State,
    Subscription,
    plain_locator,
    record_bytes,
    record_from_bytes,
    static_record,
)
from lisp_ryu.mapserver.store import Store
from lisp_ryu.wire import (
    Action,
    Afi,
    InstanceIdAddress,
    LcafType,
    LispDecodeError,
    LispEncodeError,
    Locator,
    MappingRecord,
)
from lisp_ryu.wire.checks import trusted
from lisp_ryu.wire.quick import IID_LCAF_BODY

LOG = logging.getLogger("lisp_ryu.mapserver")

#: Compact the journal into a snapshot when it holds this many entries and
#: more than twice as many as the live state.
COMPACT_MIN_ENTRIES = 10_000

#: What reading a damaged stored entry raises (a float where an int belongs, inf
#: included): the entry is counted as `restore.bad_entries` and skipped.
BAD_STORED_ENTRY = (KeyError, TypeError, ValueError, OverflowError, LispDecodeError, LispEncodeError)


# --------------------------------------------------------------------------- the entry schema


def pack(entry: dict) -> bytes:
    """A journal or snapshot entry as the store writes it."""
    return msgpack.packb(entry, use_bin_type=True)


def xid_bytes(xtr_id: int | None) -> bytes | None:
    return None if xtr_id is None else xtr_id.to_bytes(16, "big")


def registration_entry(reg: EtrRegistration) -> dict:
    return {
        "t": "reg",
        "iid": reg.iid,
        "net": str(reg.prefix),
        "etr": reg.etr,
        "site": reg.site,
        "rec": record_bytes(reg.record),
        "src": str(reg.source),
        "port": reg.port,
        "proxy": reg.proxy_reply,
        "kid": reg.key_id,
        "alg": reg.algorithm,
        "at": reg.registered_at,
        "exp": reg.expires,
        "xid": xid_bytes(reg.xtr_id),
        "sid": reg.site_id,
    }


def unregistration_entry(iid: int, net: IPNetwork, etr: str) -> dict:
    return {"t": "unreg", "iid": iid, "net": str(net), "etr": etr}


def registration_from_entry(entry: dict, prefix: IPNetwork | None = None, record: MappingRecord | None = None,
                            source: IPAddress | None = None) -> EtrRegistration:
    """The registration a stored entry holds; raises KeyError, TypeError, ValueError or a codec error if it holds none.

    `prefix`, `record` and `source`, when given, are what the entry's net,
    rec and src read as (`StoredRegistrations` reads them faster).
    """
    xid = entry.get("xid")
    return EtrRegistration(  # positional: cheaper than by keyword, and this runs per restored entry
        entry["site"],  # site
        entry["etr"],  # etr
        int(entry["iid"]),  # iid
        ipaddress.ip_network(entry["net"]) if prefix is None else prefix,  # prefix
        record_from_bytes(entry["rec"]) if record is None else record,  # record
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


def subscription_entry(sub: Subscription) -> dict:
    return {
        "t": "sub",
        "iid": sub.iid,
        "net": str(sub.prefix),
        "xid": xid_bytes(sub.xtr_id),
        "sid": sub.site_id,
        "rloc": str(sub.itr_rloc),
        "port": sub.port,
        "nonce": sub.nonce,
        "at": sub.subscribed_at,
        "exp": sub.expires,
        "seids": [str(source) for source in sub.source_eids],
    }


def unsubscription_entry(sub: Subscription) -> dict:
    return {"t": "unsub", "iid": sub.iid, "net": str(sub.prefix), "xid": xid_bytes(sub.xtr_id)}


def subscription_from_entry(entry: dict) -> Subscription:
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
        # "seid": the single source EID of entries written before subscriptions kept several.
        source_eids=tuple(ipaddress.ip_address(s) for s in entry.get("seids") or
                          ([entry["seid"]] if entry.get("seid") else [])),
    )


def rule_entry(rule: Rule) -> dict:
    return {"t": "rule", "id": rule.id, "v": rule.to_dict()}


def override_entry(override: RlocOverride) -> dict:
    return {"t": "ovr", "id": override.id, "v": override.to_dict()}


def static_entry(mapping: StaticMapping) -> dict:
    return {"t": "static", "iid": mapping.iid, "net": str(mapping.prefix), "v": mapping.to_dict()}


def unrule_entry(rule_id: str) -> dict:
    return {"t": "unrule", "id": rule_id}


def unoverride_entry(override_id: str) -> dict:
    return {"t": "unovr", "id": override_id}


def unstatic_entry(iid: int, prefix: IPNetwork) -> dict:
    return {"t": "unstatic", "iid": iid, "net": str(prefix)}


def replay(entries: Iterable[dict], count: Callable[[str], None]) -> tuple[dict, dict, dict]:
    """The entries still in force after replaying `entries` in order: (registrations, subscriptions,
    stated), each keyed by what an entry sets; stated are policy rules, RLOC overrides and static mappings."""
    registrations: dict[tuple[int, str, str], dict] = {}
    subscriptions: dict[tuple[int, str, bytes], dict] = {}
    stated: dict[tuple, dict] = {}
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
                count("restore.unknown_entries")
        except (KeyError, TypeError):
            count("restore.bad_entries")
    return registrations, subscriptions, stated


# --------------------------------------------------------------------------- the journal


class RegistryPart(Protocol):
    """What a restore needs of the registry (`registry.Registry`)."""

    def site_allows(self, site: SiteConfig, iid: int, net: IPNetwork) -> tuple[bool, str]: ...

    def rebuild(self, iid: int, net: IPNetwork, entry: Registered, previous: MappingRecord | None) -> bool: ...


class PubSubPart(Protocol):
    """What a restore needs of the subscriptions part (`pubsub.PubSub`)."""

    def set_subscription(self, sub: Subscription) -> None: ...


class Journal:
    """Collects the entries of the message being handled, writes them in one batch, compacts, restores."""

    def __init__(self, state: State, store: Store | None) -> None:
        self._state = state
        self._count = state.count
        self.store = store
        #: True while a restore rebuilds the tables: nothing is journalled nor told to anybody.
        self.restoring = False
        self._batch: list[dict | bytes] = []  # journal entries of the message being handled, written in one fsync

    def record(self, entry: dict) -> None:
        if self.store is not None:
            self._batch.append(entry)

    def record_registration(self, reg: EtrRegistration) -> EtrRegistration:
        """`reg` journalled, carrying its entry encoded for the next snapshot (`reg` itself without a store)."""
        if self.store is None:
            return reg
        reg = replace(reg, stored=pack(registration_entry(reg)))
        self._batch.append(reg.stored)
        return reg

    def record_subscription(self, sub: Subscription) -> None:
        if self.store is not None:
            self._batch.append(subscription_entry(sub))

    def flush(self) -> None:
        """Write what the message being handled changed: durable before the caller sends anything."""
        if self._batch:
            batch, self._batch = self._batch, []
            self.store.append(batch)  # type: ignore[union-attr]  # only filled when there is a store

    def maybe_compact(self) -> None:
        store, state = self.store, self._state
        if store is None:
            return
        live = len(state.registered) + state.subscription_count + len(state.static) + len(state.policy.rules)
        if store.journal_length() >= max(COMPACT_MIN_ENTRIES, 2 * live):
            store.snapshot(self.stored_state())
            self._count("store.snapshots")

    def state_entries(self) -> Iterator[dict]:
        """The whole durable state as journal entries (what a snapshot holds)."""
        for _, _, entry in self._state.registered:
            for reg in entry.etrs.values():
                yield registration_entry(reg)
        yield from self._stated_entries()

    def stored_state(self) -> Iterator[bytes]:
        """`state_entries`, msgpack-encoded, for a snapshot: registrations as they were encoded
        when they came (encoding them all again would stall the server)."""
        for entry in self._state.registered.values():
            for reg in entry.etrs.values():
                yield reg.stored or pack(registration_entry(reg))
        for entry in self._stated_entries():
            yield pack(entry)

    def _stated_entries(self) -> Iterator[dict]:
        """Everything durable but the registrations: subscriptions, policy, static mappings."""
        state = self._state
        for _, _, subs in state.subscriptions:
            for sub in subs.values():
                yield subscription_entry(sub)
        for rule in state.policy.rules:
            yield rule_entry(rule)
        for override in state.policy.overrides:
            yield override_entry(override)
        for _, _, (mapping, _record) in state.static:
            yield static_entry(mapping)

    # ------------------------------------------------------------------ restore

    def restore(self, entries: list[dict], now: float, registry: RegistryPart, pubsub: PubSubPart) -> None:
        """Rebuild the tables from the store's entries; expired or no-longer-allowed ones are dropped and counted.

        Sets `state.policy` and `state.static` directly: the caller refreshes what depends on them.
        """
        state, count = self._state, self._count
        registrations, subscriptions, stated = replay(entries, count)
        saved_store, self.store = self.store, None  # rebuilding must not re-journal
        self.restoring = True  # ... nor notify anybody: nothing changed for the outside world
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
                        state.static.insert(mapping.iid, mapping.prefix, (mapping, static_record(mapping)))
                    count("restore.policy")
                except (KeyError, TypeError, PolicyError):
                    count("restore.bad_entries")
            state.policy = policy
            self.restore_registrations(registrations.values(), now, registry)
            for entry in subscriptions.values():
                try:
                    sub = subscription_from_entry(entry)
                except BAD_STORED_ENTRY:
                    count("restore.bad_entries")
                    continue
                if sub.expires <= now:
                    count("restore.expired")
                    continue
                pubsub.set_subscription(sub)
                count("restore.subscriptions")
        finally:
            self.store = saved_store
            self.restoring = False
        restored = state.counters.get("restore.registrations", 0)
        if restored or state.counters.get("restore.subscriptions"):
            LOG.info("restored %d registrations and %d subscriptions from the store", restored,
                     state.counters.get("restore.subscriptions", 0))

    def restore_registrations(self, entries: Iterable[dict], now: float, registry: RegistryPart) -> None:
        """Rebuild the stored registrations: the state replaying each through `Registry.upsert` gives, faster.

        A restart answers nothing until this is done.  Restoring runs on an
        empty core and tells nobody anything, so most of `upsert` has
        nothing to do: here a dict keyed by prefix text stands in for the
        prefix table until every prefix is inserted once at the end, a
        prefix's merged record is computed once all its ETRs are in (and not
        at all for a single ETR: `StoredRegistrations` hands over its
        answer, encoded), and the expiry timers are heapified once.  Entries
        are checked in the same order, and counted under the same names, as
        one `upsert` at a time.
        """
        state = self._state
        sites, xtr_sites = state.sites, state.xtr_sites
        reader = StoredRegistrations()
        verdicts: dict[tuple, bool] = {}  # see _still_allows
        prefixes: dict[tuple[int, str], tuple[int, IPNetwork, Registered]] = {}  # key: (iid, prefix text)
        merge: list[tuple[int, IPNetwork, Registered]] = []  # record left None: `rebuild` computes it
        timers, sequence = state.timers, state.sequence
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
            site = sites.get(reg.site)
            if site is None or not self._still_allows(registry, site, reg.iid, reg.prefix, verdicts):
                disallowed += 1
                continue
            key = (reg.iid, text)
            known = prefixes.get(key)
            if known is None:
                known = prefixes[key] = (reg.iid, reg.prefix,
                                         Registered(reg.site, {reg.etr: reg}, answer, answer_bytes, reg.proxy_reply))
                if answer is None:
                    merge.append(known)
            elif known[2].site != reg.site:
                conflicting += 1
                continue
            else:
                entry_state = known[2]
                if entry_state.record is not None:  # a second ETR: the answer is their merge now
                    entry_state.record = None
                    merge.append(known)
                entry_state.etrs[reg.etr] = reg
            timers.append((reg.expires, next(sequence), "reg", (reg.iid, reg.prefix, reg.etr)))
            state.armed[("reg", (reg.iid, reg.prefix, reg.etr))] = reg.expires  # see State.schedule
            if reg.xtr_id is not None:
                xtr_sites[reg.xtr_id] = reg.site
            restored += 1
        for iid, net, entry_state in merge:
            registry.rebuild(iid, net, entry_state, None)
        # All at the end rather than as they come: faster overall (probably because the trie's
        # nodes then sit together in memory, not scattered among the registrations).
        for iid, net, entry_state in prefixes.values():
            state.registered.insert(iid, net, entry_state)
        heapq.heapify(timers)  # pops in the same (time, sequence) order as pushing them one by one
        for name, amount in (("bad_entries", bad), ("expired", expired), ("no_longer_allowed", disallowed),
                             ("conflicting_site", conflicting), ("registrations", restored)):
            if amount:
                self._count(f"restore.{name}", amount)

    def _still_allows(self, registry: RegistryPart, site: SiteConfig, iid: int, net: IPNetwork,
                      verdicts: dict[tuple, bool]) -> bool:
        """`registry.site_allows(site, iid, net)` for a restore, remembered per configured prefix.

        The verdict depends only on the longest configured prefix around
        `net` and on whether `net` is that prefix itself (see
        `Registry.configured_owners`), and many restored prefixes share a
        handful of configured ones.
        """
        hit = self._state.configured.longest_match_packed(iid, net.network_address.packed)
        if hit is None:
            return False  # no configured prefix holds even its first address (or no such instance-ID)
        configured = hit[0]
        if configured.prefixlen > net.prefixlen:  # a configured prefix inside `net`: not the covering one
            return registry.site_allows(site, iid, net)[0]
        key = (site.name, iid, configured, configured.prefixlen == net.prefixlen)
        allowed = verdicts.get(key)
        if allowed is None:
            allowed = verdicts[key] = registry.site_allows(site, iid, net)[0]
        return allowed


# --------------------------------------------------------------------------- the stored-record parser


# Fixed layout of an EID-Record up to its EID address, and of an Instance-ID LCAF up to its address.
_RECORD_HEAD = struct.Struct(">IBBHHH")  # TTL, Locator Count, EID mask-len, ACT|A|Reserved, Rsvd|Map-Version, AFI
_AFI_IPV4, _AFI_IPV6, _AFI_LCAF = int(Afi.IPV4), int(Afi.IPV6), int(Afi.LCAF)
_LCAF_INSTANCE_ID = int(LcafType.INSTANCE_ID)
_ACTIONS = tuple(Action)  # by value: 0..5


@dataclass(frozen=True, slots=True)
class _StoredLocators:
    """The locator part of stored records (read once per distinct RLOC set), and the same as answered."""

    locators: tuple[Locator, ...]
    answered: tuple[Locator, ...]  # L and p bits cleared (`plain_locator`); `locators` itself when none was set
    answered_bytes: bytes  # `answered` encoded


class StoredRegistrations:
    """Reads stored registration entries for a restore, mostly without the codec or `ipaddress` parsing.

    A stored record is `record_bytes` of a record decoded from a
    Map-Register, so its bytes are canonical.  Its head (TTL, flags, EID)
    is read here at fixed offsets; its locators are decoded by the codec
    once per distinct byte string and shared after that (typically many
    EIDs behind a few RLOC sets).  The prefix is built from the record's
    EID, after checking that the entry's net text is exactly that prefix's
    text.  A record or net in any other form (LCAFs other than one
    instance-ID, reserved bits set, host bits past the mask, non-canonical
    text, ...) is left to `registration_from_entry`, errors included.
    """

    def __init__(self) -> None:
        self._locators: dict[tuple[int, bytes], _StoredLocators] = {}  # (Locator Count, bytes after the EID)
        self._sources: dict[str, IPAddress] = {}

    def read(self, entry: dict) -> tuple[EtrRegistration, str, MappingRecord | None, bytes]:
        """(registration, canonical prefix text, the answer for it as the only ETR or None, that answer encoded).

        Raises what `registration_from_entry` raises for an entry that holds no registration.
        """
        # Nothing here raises: what can raise is left to `registration_from_entry`, in its own order.
        text, src = entry.get("net"), entry.get("src")
        fast = self._read_record(entry.get("rec"), text, entry.get("iid"))
        # Few ETRs register many prefixes each: parse each address text once.
        source = self._sources.get(src) if type(src) is str else None
        if fast is None:
            reg = registration_from_entry(entry, source=source)
            text = str(reg.prefix)
            answer, answer_bytes = None, b""
        else:
            prefix, record, answer, answer_bytes = fast
            reg = registration_from_entry(entry, prefix, record, source)
        if source is None and type(src) is str:
            self._sources[src] = reg.source
        return reg, text, answer, answer_bytes

    def _read_record(self, rec: object, text: object, iid: object) -> tuple[IPNetwork, MappingRecord, MappingRecord,
                                                                              bytes] | None:
        """(prefix, record, `as_answer` of it, that encoded) for a canonical record of prefix `text`, else None."""
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
            return None  # the entry's instance-ID is not the record's: `as_answer` would rewrite the EID
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
            return prefix, record, record, rec  # already an answer (`as_answer` returns it as it is)
        answer = trusted(MappingRecord, eid=eid, eid_mask_len=mask_len, locators=stored.answered, ttl=ttl,
                         action=Action.NO_ACTION, authoritative=False, map_version=version_word)
        return prefix, record, answer, rec[:6] + b"\0\0" + rec[8:end] + stored.answered_bytes

    @staticmethod
    def _read_locators(rec: bytes, end: int) -> _StoredLocators | None:
        """The locators after offset `end` of `rec`, by the codec; None unless re-encoding gives `rec` back."""
        try:
            record = record_from_bytes(rec)
            if record_bytes(record) != rec:
                return None
            answered = tuple(plain_locator(locator) for locator in record.locators)
            if all(a is b for a, b in zip(answered, record.locators)):
                answered = record.locators
            answered_bytes = record_bytes(replace(record, locators=answered))[end:]
        except (LispDecodeError, LispEncodeError):
            return None  # `registration_from_entry` reports it
        return _StoredLocators(record.locators, answered, answered_bytes)
