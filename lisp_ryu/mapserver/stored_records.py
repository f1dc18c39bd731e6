"""Reading stored registration entries back, for a restore: the entry reader and its fast record parser.

Split from `journal.py` (which writes the entries and drives the restore):
this is the per-entry hot loop of a restart.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, replace

from lisp_ryu.mapserver.state import (
    EtrRegistration,
    IPAddress,
    IPNetwork,
    plain_locator,
    record_bytes,
    record_from_bytes,
)
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
        None if (nonce := entry.get("n")) is None else int(nonce),  # nonce (absent from older entries)
    )


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
