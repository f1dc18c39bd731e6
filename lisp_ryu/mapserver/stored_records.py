"""Reading stored registration entries back, for a restore: the entry reader, its fast record parser,
and the rebuild of the registrations from them.

Split from `journal.py` (which writes the entries and drives the restore):
this is the per-entry hot loop of a restart.
"""

from __future__ import annotations

import ipaddress
import struct
from operator import itemgetter
from typing import Iterable, Iterator, Protocol
from socket import inet_ntoa
from dataclasses import dataclass, replace

from lisp_ryu.config import SiteConfig
from lisp_ryu.mapserver.snapshot_rows import WIDTH, expand
from lisp_ryu.mapserver.state import (
    EtrContext,
    EtrRegistration,
    IPNetwork,
    Registered,
    State,
    key_prefix,
    plain_locator,
    prefix_key,
    record_bytes,
    record_from_bytes,
    share_context,
)
from lisp_ryu.wire import Action, Afi, LcafType, LispDecodeError, LispEncodeError, MappingRecord
from lisp_ryu.wire.quick import IID_LCAF_BODY


#: What reading a damaged stored entry raises (a float where an int belongs, inf
#: included): the entry is counted as `restore.bad_entries` and skipped.
BAD_STORED_ENTRY = (KeyError, TypeError, ValueError, OverflowError, LispDecodeError, LispEncodeError)


class RegistryPart(Protocol):
    """What a restore needs of the registry (`registry.Registry`)."""

    def site_allows(self, site: SiteConfig, iid: int, net: IPNetwork) -> tuple[bool, str]: ...

    def rebuild(self, iid: int, net: IPNetwork, entry: Registered, previous: bytes | None,
                record: MappingRecord | None = None) -> bool: ...


def registration_from_entry(entry: dict, key: bytes | None = None, rec: bytes | None = None,
                            context: EtrContext | None = None) -> EtrRegistration:
    """The registration a stored entry holds; raises KeyError, TypeError, ValueError or a codec error if it holds none.

    `key`, `rec` and `context`, when given, are what the entry's net, rec and
    the fields its ETR's message shared read as (`StoredRegistrations` reads
    them faster); else the record is decoded (checked) and kept as encoded again.
    """
    if context is None:
        context = entry_context(entry)
    if key is None:
        key = prefix_key(ipaddress.ip_network(entry["net"]))
    if rec is None:
        rec = record_bytes(record_from_bytes(entry["rec"]))
    expires = float(entry["exp"])
    return EtrRegistration(  # positional: cheaper than by keyword, and this runs per restored entry
        context,
        int(entry["iid"]),  # iid
        key,
        rec,
        float(entry["at"]),  # registered_at
        expires,
        None if (nonce := entry.get("n")) is None else int(nonce),  # nonce (absent from older entries)
        expires,  # armed (until the expiry wheel takes it)
        expires,  # durable: what the entry says
    )


def entry_context(entry: dict) -> EtrContext:
    """The shared part of a stored registration entry (see `EtrContext`)."""
    xid = entry.get("xid")
    return share_context(EtrContext(
        str(entry["site"]),
        str(entry["etr"]),
        ipaddress.ip_address(entry["src"]),
        int(entry["port"]),
        bool(entry["proxy"]),
        int(entry["kid"]),
        int(entry["alg"]),
        int.from_bytes(xid, "big") if xid is not None else None,
        None if (sid := entry.get("sid")) is None else int(sid),
    ))


# --------------------------------------------------------------------------- the stored-record parser


# Fixed layout of an EID-Record up to its EID address, and of an Instance-ID LCAF up to its address.
_RECORD_HEAD = struct.Struct(">IBBHHH")  # TTL, Locator Count, EID mask-len, ACT|A|Reserved, Rsvd|Map-Version, AFI
_AFI_IPV4, _AFI_IPV6, _AFI_LCAF = int(Afi.IPV4), int(Afi.IPV6), int(Afi.LCAF)
_LCAF_INSTANCE_ID = int(LcafType.INSTANCE_ID)
_ACTIONS = tuple(Action)  # by value: 0..5
_MASKS = tuple(f"/{n}" for n in range(129))
_MASK_BYTES = tuple(bytes((n,)) for n in range(129))
_LCAF_AFI_BYTES = _AFI_LCAF.to_bytes(2, "big")
_SHARED = itemgetter("site", "etr", "src", "port", "proxy", "kid", "alg", "xid", "sid")
_OWN = itemgetter("iid", "net", "rec", "at", "exp")
_Registration = EtrRegistration


def _copy(data: bytes) -> bytes:
    return memoryview(data).tobytes()


@dataclass(frozen=True, slots=True)
class _StoredLocators:
    """The locator part of stored records (read once per distinct RLOC set), and the same as answered."""

    answered: bool  # no L or p bit set: the record's locators are already as answered
    answered_bytes: bytes  # the locators as answered (`plain_locator`), encoded


class StoredRegistrations:
    """Reads stored registration entries for a restore, mostly without the codec or `ipaddress` parsing.

    A stored record is `record_bytes` of a record decoded from a
    Map-Register, so its bytes are canonical.  Its head (TTL, flags, EID)
    is read here at fixed offsets; its locators are decoded by the codec
    once per distinct byte string and shared after that (typically many
    EIDs behind a few RLOC sets).  The prefix is read from the record's
    EID, after checking that the entry's net text is exactly that prefix's
    text.  A record or net in any other form (LCAFs other than one
    instance-ID, reserved bits set, host bits past the mask, non-canonical
    text, ...) is left to `registration_from_entry`, errors included.
    """

    def __init__(self) -> None:
        self._locators: dict[tuple[int, bytes], _StoredLocators] = {}  # (Locator Count, bytes after the EID)
        self._contexts: dict[tuple, EtrContext] = {}  # the entry's shared fields as stored -> their context
        self._heads: dict[bytes, tuple | bool] = {}  # see `_read_record`

    def read(self, entry: dict) -> tuple[EtrRegistration, str, bytes]:
        """(registration, canonical prefix text, its answer as the only ETR encoded, or b"" if not read here).

        Raises what `registration_from_entry` raises for an entry that holds no registration.
        """
        # Nothing here raises but `registration_from_entry`, which says what is wrong, in its own order.
        try:
            shared = _SHARED(entry)  # every key there, as `registration_entry` writes them
            iid, text, rec, at, exp = _OWN(entry)
            nonce = entry.get("n")  # (absent from older entries)
        except KeyError:
            return self._read_slowly(entry)
        # Few ETRs register many prefixes each: read their shared fields once.
        try:
            context = self._contexts.get(shared)
        except TypeError:  # unhashable: a damaged entry
            return self._read_slowly(entry)
        if context is None:
            context = entry_context(entry)
            if len(self._contexts) < 1 << 16:
                self._contexts[shared] = context
        fast = self._read_record(rec, text, iid)
        if fast is None or type(iid) is not int or type(at) is not float or type(exp) is not float or (nonce is not None
                                                                               and type(nonce) is not int):
            reg = registration_from_entry(entry, context=context)
            return reg, str(reg.prefix), b""
        key, answer_bytes = fast
        # Copies of what it keeps of the entry: the entries (a million small objects) are freed once
        # the restore is done, and the allocator can give their memory back only if no survivor sits
        # among them (else the resident size stays ~1 kB per registration higher).
        kept = _copy(rec)
        if answer_bytes is rec:
            answer_bytes = kept
        exp += 0.0
        # As `registration_from_entry` makes it, its checks done above.
        return _Registration(context, iid, key, kept, at + 0.0, exp, nonce, exp, exp), text, answer_bytes

    def group_context(self, group: dict) -> EtrContext | None:
        """The context of a group of rows; None if its fields hold none."""
        try:
            shared = _SHARED(group)
            context = self._contexts.get(shared)
            if context is None:
                context = entry_context(group)
                if len(self._contexts) < 1 << 16:
                    self._contexts[shared] = context
        except BAD_STORED_ENTRY:
            return None
        return context

    def _shape(self, rec: bytes) -> tuple | bool:
        """What `_read_head` says of a record's head (up to the EID address): the same for every record
        of one TTL, mask length and instance-ID, so read once per distinct head (a bounded cache)."""
        head = rec[:24] if rec[10:12] == _LCAF_AFI_BYTES else rec[:12]
        shape = self._heads.get(head)
        if shape is None:
            shape = self._read_head(head)
            if len(self._heads) < 1 << 12:
                self._heads[head] = shape
        return shape

    def read_row(self, rec: object, key: object, iid: int) -> bytes | None:
        """The answer of a row's record (itself when it is one), if it is canonical and of prefix `key`
        (a `prefix_key`) in instance `iid`; else None."""
        if type(rec) is not bytes or type(key) is not bytes or len(rec) < 12:
            return None
        shape = self._shape(rec)
        if not shape:
            return None
        at, end, bits, mask_len, wire_iid, count, plain = shape
        if wire_iid != iid or len(rec) < end or len(key) != end - at + 1 or key[-1] != mask_len:
            return None
        if not key.startswith(rec[at:end]):
            return None
        if mask_len != bits and int.from_bytes(key, "big") & ((1 << (bits - mask_len + 8)) - 1) != mask_len:
            return None  # host bits past the mask: not the prefix's own EID
        locators = (count, rec[end:])
        stored = self._locators.get(locators)
        if stored is None:
            stored = self._read_locators(rec, end)
            if stored is None:
                return None
            if len(self._locators) >= 1 << 16:  # (a bound: a live registry reads with it too)
                self._locators.clear()
            self._locators[locators] = stored
        if plain and stored.answered:
            return rec
        return rec[:6] + b"\0\0" + rec[8:end] + stored.answered_bytes

    def register_records(self, payload: bytes, count: int) -> list[bytes] | None:
        """The bytes of the `count` EID-records of a Map-Register, sliced from `payload` where each is
        in the form `record_bytes` makes (the caller checks each with `read_row`); None where any
        locator is not a plain IPv4 or IPv6 address (then the codec encodes them)."""
        at = 16 + int.from_bytes(payload[14:16], "big")
        out = []
        heads = self._heads
        for _ in range(count):
            head = payload[at:at + 24] if payload[at + 10:at + 12] == _LCAF_AFI_BYTES else payload[at:at + 12]
            shape = heads.get(head)
            if shape is None:
                shape = self._read_head(head) if len(head) >= 12 else False
                if len(heads) < 1 << 12:
                    heads[head] = shape
            if not shape:
                return None
            end = at + shape[1]
            for _ in range(shape[5]):  # locators: 6 bytes, an AFI, its address
                afi = payload[end + 6:end + 8]
                if afi == b"\x00\x01":
                    end += 12
                elif afi == b"\x00\x02":
                    end += 24
                else:
                    return None
            if end > len(payload):
                return None
            out.append(payload[at:end])
            at = end
        return out

    def _read_slowly(self, entry: dict) -> tuple[EtrRegistration, str, bytes]:
        reg = registration_from_entry(entry)
        return reg, str(reg.prefix), b""

    def _read_record(self, rec: object, text: object, iid: object) -> tuple[bytes, bytes] | None:
        """(`prefix_key`, the record as answered, encoded) for a canonical record of prefix `text`, else None."""
        if type(rec) is not bytes or len(rec) < 12:
            return None
        shape = self._shape(rec)
        if not shape:
            return None
        at, end, bits, mask_len, wire_iid, count, plain = shape
        if wire_iid != iid or len(rec) < end:
            return None  # the entry's instance-ID is not the record's: `as_answer` would rewrite the EID
        packed = rec[at:end]
        if mask_len != bits:
            value = int.from_bytes(packed, "big")
            if value & ((1 << (bits - mask_len)) - 1):
                return None  # host bits past the mask: not the prefix's own EID
        if bits == 32:
            if text != inet_ntoa(packed) + _MASKS[mask_len]:
                return None
        elif text != str(ipaddress.IPv6Network((packed, mask_len))):
            return None
        key = (count, rec[end:])
        stored = self._locators.get(key)
        if stored is None:
            stored = self._read_locators(rec, end)
            if stored is None:
                return None  # not canonical: left to the codec (not remembered, it is never the common case)
            self._locators[key] = stored
        if plain and stored.answered:
            return packed + _MASK_BYTES[mask_len], rec  # already an answer (`as_answer` returns it as it is)
        return packed + _MASK_BYTES[mask_len], rec[:6] + b"\0\0" + rec[8:end] + stored.answered_bytes

    @staticmethod
    def _read_head(head: bytes) -> tuple | bool:
        """(EID offset, its end, address bits, mask length, instance-ID, Locator Count, no action or A bit)
        of a record head (its first 12 bytes, 24 with an instance-ID LCAF) in the form `record_bytes`
        makes; False for any other form."""
        ttl, count, mask_len, act_word, version_word, afi = _RECORD_HEAD.unpack_from(head)
        action = act_word >> 13
        if act_word & 0x0FFF or version_word & 0xF000 or action >= len(_ACTIONS):
            return False  # reserved bits set (re-encoding would differ) or an undefined action
        at, wire_iid = 12, 0
        if afi == _AFI_LCAF:
            if len(head) < 24:
                return False
            rsvd1, flags, lcaf_type, iid_mask_len, length, wire_iid, afi = IID_LCAF_BODY.unpack_from(head, 12)
            # Only the form `EidPrefix.to_wire` makes: a plain instance-ID (not a range), and never instance 0.
            if rsvd1 or flags or lcaf_type != _LCAF_INSTANCE_ID or iid_mask_len or not wire_iid:
                return False
            if length != 6 + (4 if afi == _AFI_IPV4 else 16):
                return False
            at = 24
        if afi == _AFI_IPV4:
            end, bits = at + 4, 32
        elif afi == _AFI_IPV6:
            end, bits = at + 16, 128
        else:
            return False
        if mask_len > bits:
            return False
        return at, end, bits, mask_len, wire_iid, count, act_word == 0

    @staticmethod
    def _read_locators(rec: bytes, end: int) -> _StoredLocators | None:
        """The locators after offset `end` of `rec`, by the codec; None unless re-encoding gives `rec` back."""
        try:
            record = record_from_bytes(rec)
            if record_bytes(record) != rec:
                return None
            answered = tuple(plain_locator(locator) for locator in record.locators)
            same = all(a is b for a, b in zip(answered, record.locators))
            answered_bytes = record_bytes(replace(record, locators=answered))[end:]
        except (LispDecodeError, LispEncodeError):
            return None  # `registration_from_entry` reports it
        return _StoredLocators(same, answered_bytes)


# --------------------------------------------------------------------------- the restore


class StoredSet:
    """The stored registrations a replay leaves: a snapshot's groups of rows (`snapshot_rows`), then the
    journal's entries, some of which take the place of a row (same instance-ID, prefix and ETR).

    Iterating gives every registration entry in the order a replay of one
    entry each would leave them (a row's entry where the row is, replaced
    in place by a later journal entry for the same key, dropped if a later
    entry withdrew it): what `restore_registrations` reads, faster.
    """

    def __init__(self, groups: list[dict], entries: dict, replaced: dict, withdrawn: set) -> None:
        self.groups = groups
        self.entries = entries  # (iid, prefix text, ETR) -> the journal's last entry for it, in replay order
        #: (iid, `prefix_key`, ETR) of a row -> the key in `entries` of the entry that replaces it in place
        #: (none when the row was withdrawn: `withdrawn` holds it, and the entry, if any, comes after).
        self.replaced = {key: name for key, name in replaced.items() if name in entries}
        self.withdrawn = withdrawn
        self.etrs = {key[2] for key in (*replaced, *withdrawn)}  # the ETRs whose rows need a look

    def __iter__(self) -> Iterator[dict]:
        used = set()
        for group in self.groups:
            for entry, key in zip(expand(group), row_keys(group)):
                name = self.replaced.get(key)
                if name is not None:
                    used.add(name)
                    yield self.entries[name]
                elif key not in self.withdrawn:
                    yield entry
        for name, entry in self.entries.items():
            if name not in used:
                yield entry


def row_keys(group: dict) -> Iterator[tuple]:
    """(iid, key, ETR) of each row `expand` reads, as `StoredSet` names a row."""
    rows, etr = group.get("rows"), group.get("etr")
    if not isinstance(rows, list):
        yield (None, None, None)
        return
    for at in range(0, len(rows) - len(rows) % WIDTH, WIDTH):
        yield (rows[at], rows[at + 1], etr)
    if len(rows) % WIDTH:
        yield (None, None, None)


def restore_registrations(state: State, stored: Iterable[dict], now: float, registry: RegistryPart,
                          replicated: bool) -> None:
    """Rebuild the stored registrations: the state replaying each through `Registry.upsert` gives, faster.

    A restart answers nothing until this is done.  Restoring runs on an
    empty core and tells nobody anything, so most of `upsert` has
    nothing to do: here a dict keyed by prefix stands in for the prefix
    table until every prefix is inserted once at the end, a prefix's
    merged record is computed once all its ETRs are in (and not at all
    for a single ETR: the reader hands over its answer, encoded), and
    nothing is decoded that a canonical entry does not need.  A snapshot's
    rows (`StoredSet`) are read in a loop of their own, their context once
    per group.  Entries are checked in the same order, and counted under
    the same names, as one `upsert` at a time.
    """
    sites, xtr_sites = state.sites, state.xtr_sites
    reader = StoredRegistrations()
    read, read_row = reader.read, reader.read_row
    verdicts: dict[tuple, object] = {}  # see _still_allows
    prefixes: dict[tuple[int, bytes], Registered] = {}  # key: (iid, prefix_key)
    merge: list[Registered] = []  # record left unknown: `rebuild` computes it
    regs: list[EtrRegistration] = []
    fresh: list[tuple[int, bytes, Registered]] = []  # per prefix, in the order they came
    counts = [0, 0, 0, 0]  # bad, expired, disallowed, conflicting

    def place(reg: EtrRegistration, answer_bytes: bytes) -> None:
        """Take one registration read, as the rows' loop does inline."""
        if reg.expires <= now:
            counts[1] += 1
            return
        context = reg.context
        key = (reg.iid, reg.key)
        known = prefixes.get(key)
        if known is None or known.site != context.site:
            site = sites.get(context.site)
            if site is None or not _still_allows(state, registry, site, reg.iid, reg.key, verdicts):
                counts[2] += 1
                return
            if known is not None:
                counts[3] += 1
                return
            known = prefixes[key] = Registered(context.site, reg, answer_bytes, context.proxy_reply)
            fresh.append((reg.iid, reg.key, known))
            if not answer_bytes:
                merge.append(known)
        else:
            if known.record_bytes:  # a second ETR: the answer is their merge now
                known.record_bytes = b""
                merge.append(known)
            known.put(reg)
        regs.append(reg)
        if context.xtr_id is not None:
            xtr_sites[context.xtr_id] = context.site

    def place_entry(entry: dict) -> None:
        try:
            reg, _text, answer_bytes = read(entry)
        except BAD_STORED_ENTRY:
            counts[0] += 1
            return
        place(reg, answer_bytes)

    if isinstance(stored, StoredSet):
        used: set[tuple] = set()  # entries that took a row's place
        for group in stored.groups:
            _restore_group(group, stored, used, now, reader, read_row, place, place_entry, state, registry,
                           verdicts, prefixes, fresh, regs, counts)
        for name, entry in stored.entries.items():
            if name not in used:
                place_entry(entry)
    else:
        for entry in stored:
            place_entry(entry)
    for entry_state in merge:
        if not entry_state.record_bytes:  # (else listed twice)
            first = entry_state.regs()[0]
            registry.rebuild(first.iid, first.prefix, entry_state, None)
    # All at the end rather than as they come: faster overall (the trie's nodes then sit together
    # in memory, not scattered among the registrations; the hosts' sorted index is built at once).
    state.registered.insert_packed(fresh)
    if not replicated:
        state.expiry.add_many(regs)
    bad, expired, disallowed, conflicting = counts
    for name, amount in (("bad_entries", bad), ("expired", expired), ("no_longer_allowed", disallowed),
                         ("conflicting_site", conflicting), ("registrations", len(regs))):
        if amount:
            state.count(f"restore.{name}", amount)


def _restore_group(group: dict, stored: StoredSet, used: set, now: float, reader: StoredRegistrations, read_row, place,
                   place_entry, state: State, registry: RegistryPart, verdicts: dict, prefixes: dict,
                   fresh: list, regs: list, counts: list) -> None:
    """The rows of one group, as `place` would take each (inline: this is the loop of a restart)."""
    rows = group.get("rows")
    context = reader.group_context(group)
    if context is None or type(rows) is not list or len(rows) % WIDTH:
        for entry, key in zip(expand(group), row_keys(group)):  # damaged: judged entry by entry
            name = stored.replaced.get(key)
            if name is not None:
                used.add(name)
                place_entry(stored.entries[name])
            elif key not in stored.withdrawn:
                place_entry(entry)
        return
    site_name, etr, proxy = context.site, context.etr, context.proxy_reply
    site = state.sites.get(site_name)
    look = etr in stored.etrs  # rows a journal entry replaced or withdrew
    replaced, withdrawn, entries = stored.replaced, stored.withdrawn, stored.entries
    taken = len(regs)
    expired = 0
    span = None  # the last verdict span (see _still_allows) and the instance-ID and key length it is for
    span_for = None
    it = iter(rows)
    for iid, key, rec, at, exp, nonce in zip(it, it, it, it, it, it):
        if look:
            name = replaced.get((iid, key, etr))
            if name is not None:
                used.add(name)
                place_entry(entries[name])
                continue
            if (iid, key, etr) in withdrawn:
                continue
        answer = read_row(rec, key, iid) if type(iid) is int else None
        if answer is None or type(at) is not float or type(exp) is not float or (
                nonce is not None and type(nonce) is not int):
            place_entry(next(expand({**group, "rows": [iid, key, rec, at, exp, nonce]})))
            continue
        if exp <= now:
            expired += 1
            continue
        reg = _Registration(context, iid, key, rec, at, exp, nonce, exp, exp)
        slot = (iid, key)
        known = prefixes.get(slot)
        if known is None:
            if site is None:
                counts[2] += 1
                continue
            # Most rows of a group fall in the span of the verdict before: checked here, without a call.
            plen = key[-1]
            if (span is not None and plen > span[1] and span_for == (iid, len(key))
                    and int.from_bytes(key, "big") >> (8 * len(key) - span[1]) == span[0]):
                allowed = span[2]
            else:
                allowed = _still_allows(state, registry, site, iid, key, verdicts)
                span, span_for = verdicts.get((site_name, iid, 8 * len(key) - 8)), (iid, len(key))
            if not allowed:
                counts[2] += 1
                continue
            known = prefixes[slot] = Registered(site_name, reg, answer, proxy)
            fresh.append((iid, key, known))
            regs.append(reg)
        else:
            place(reg, answer)  # a second ETR, or another site's prefix
    counts[1] += expired
    if len(regs) > taken and context.xtr_id is not None:
        state.xtr_sites[context.xtr_id] = site_name


def _still_allows(state: State, registry: RegistryPart, site: SiteConfig, iid: int, key: bytes,
              verdicts: dict[tuple, bool]) -> bool:
    """`registry.site_allows(site, iid, net)` for a restore (`key`: the net's `prefix_key`),
    remembered per configured prefix.

    The verdict depends only on the longest configured prefix around
    `net` and on whether `net` is that prefix itself (see
    `Registry.configured_owners`), and many restored prefixes share a
    handful of configured ones.
    """
    plen, packed = key[-1], key[:-1]
    width = 8 * len(packed)
    value = int.from_bytes(packed, "big")
    # The last configured prefix seen for this site, when nothing is configured inside it: every
    # longer prefix inside it has the same verdict (most of a restore is one such run).
    span = verdicts.get((site.name, iid, width))
    if span is not None and plen > span[1] and value >> (width - span[1]) == span[0]:
        return span[2]
    hit = state.configured.longest_match_packed(iid, packed)
    if hit is None:
        return False  # no configured prefix holds even its first address (or no such instance-ID)
    configured = hit[0]
    if configured.prefixlen > plen:  # a configured prefix inside `net`: not the covering one
        return registry.site_allows(site, iid, key_prefix(key))[0]
    verdict = (site.name, iid, id(hit), configured.prefixlen == plen)  # (the configured table is fixed)
    allowed = verdicts.get(verdict)
    if allowed is None:
        allowed = verdicts[verdict] = registry.site_allows(site, iid, key_prefix(key))[0]
    if plen > configured.prefixlen and not state.inner_configured.get((iid, configured)):
        verdicts[(site.name, iid, width)] = (value >> (width - configured.prefixlen), configured.prefixlen,
                                             allowed)
    return allowed
