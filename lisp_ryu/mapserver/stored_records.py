"""Reading stored registration entries back, for a restore: the entry reader and its fast record parser.

Split from `journal.py` (which writes the entries and drives the restore):
this is the per-entry hot loop of a restart.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, replace

from lisp_ryu.mapserver.state import (
    EtrContext,
    EtrRegistration,
    plain_locator,
    prefix_key,
    record_bytes,
    record_from_bytes,
    share_context,
)
from lisp_ryu.wire import Action, Afi, LcafType, LispDecodeError, LispEncodeError
from lisp_ryu.wire.quick import IID_LCAF_BODY


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

    def read(self, entry: dict) -> tuple[EtrRegistration, str, bytes]:
        """(registration, canonical prefix text, its answer as the only ETR encoded, or b"" if not read here).

        Raises what `registration_from_entry` raises for an entry that holds no registration.
        """
        # Nothing here raises: what can raise is left to `registration_from_entry`, in its own order.
        get = entry.get
        text = get("net")
        fast = self._read_record(get("rec"), text, get("iid"))
        # Few ETRs register many prefixes each: read their shared fields once.
        shared = (get("site"), get("etr"), get("src"), get("port"), get("proxy"), get("kid"), get("alg"),
                  get("xid"), get("sid"))
        try:
            context = self._contexts.get(shared)
        except TypeError:  # unhashable: a damaged entry, reported by `registration_from_entry`
            context = None
        if context is None:
            context = entry_context(entry)
            if len(self._contexts) < 1 << 16:
                self._contexts[shared] = context
        if fast is None:
            reg = registration_from_entry(entry, context=context)
            return reg, str(reg.prefix), b""
        key, answer_bytes = fast
        return registration_from_entry(entry, key, entry["rec"], context), text, answer_bytes  # type: ignore[return-value]

    def _read_record(self, rec: object, text: object, iid: object) -> tuple[bytes, bytes] | None:
        """(`prefix_key`, the record as answered, encoded) for a canonical record of prefix `text`, else None."""
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
        packed = rec[at:end]
        value = int.from_bytes(packed, "big")
        if value & ((1 << (bits - mask_len)) - 1):
            return None  # host bits past the mask: not the prefix's own EID
        if bits == 32:
            if text != "%d.%d.%d.%d/%d" % (rec[at], rec[at + 1], rec[at + 2], rec[at + 3], mask_len):
                return None
        elif text != str(ipaddress.IPv6Network((value, mask_len))):
            return None
        key = (count, rec[end:])
        stored = self._locators.get(key)
        if stored is None:
            stored = self._read_locators(rec, end)
            if stored is None:
                return None  # not canonical: left to the codec (not remembered, it is never the common case)
            self._locators[key] = stored
        if act_word == 0 and stored.answered:
            return packed + bytes((mask_len,)), rec  # already an answer (`as_answer` returns it as it is)
        return packed + bytes((mask_len,)), rec[:6] + b"\0\0" + rec[8:end] + stored.answered_bytes

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
