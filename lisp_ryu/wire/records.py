"""Mapping records and locators (RFC 9301 §5): the EID-to-RLOC mappings every control message carries.

Apart from `messages` because they are the payload, not the message: the
Map-Server's store, the map-cache and the journal handle records without any
message around them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from .address import (
    Address,
    _check_decoded_mask,
    check_address,
    check_mask_len,
    decode_address,
    encode_address,
)
from .checks import as_tuple, check_bool, check_uint, trusted
from .cursor import Reader, Writer
from .errors import LispEncodeError
from .prefix import EidPrefix

class Action(IntEnum):
    """The ACT field of a mapping record: what to do with packets for a negative mapping."""

    NO_ACTION = 0
    NATIVELY_FORWARD = 1
    SEND_MAP_REQUEST = 2
    DROP_NO_REASON = 3
    DROP_POLICY_DENIED = 4
    DROP_AUTH_FAILURE = 5


#: Record TTL meaning "keep as long as you like" (RFC 9301 §5.4).
TTL_INFINITE = 0xFFFFFFFF
#: Default Record TTL: one day, in minutes.
TTL_ONE_DAY = 24 * 60

_LOCATOR = struct.Struct(">BBBBH")
_RECORD = struct.Struct(">IBBHH")


# --------------------------------------------------------------------------- locators and records

#   0                   1                   2                   3
#   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |    Priority   |    Weight     |  M Priority   |   M Weight    |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |        Unused Flags     |L|p|R|           Loc-AFI             |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                             Locator                           |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
@dataclass(frozen=True)
class Locator:
    """An RLOC of a mapping record.

    ``local`` (L) marks the sender's own RLOC, ``probed`` (p) the RLOC a probe
    reply answers for, ``reachable`` (R) its up/down state.  Priority 255
    means "not for unicast".
    """

    address: Address
    priority: int = 1
    weight: int = 100
    multicast_priority: int = 255
    multicast_weight: int = 0
    local: bool = False
    probed: bool = False
    reachable: bool = True

    def __post_init__(self) -> None:
        check_address("Locator", "address", self.address)
        check_uint("Locator", "priority", self.priority, 8)
        check_uint("Locator", "weight", self.weight, 8)
        check_uint("Locator", "multicast_priority", self.multicast_priority, 8)
        check_uint("Locator", "multicast_weight", self.multicast_weight, 8)
        check_bool("Locator", "local", self.local)
        check_bool("Locator", "probed", self.probed)
        check_bool("Locator", "reachable", self.reachable)

    def _encode(self, writer: Writer) -> None:
        writer.raw(
            _LOCATOR.pack(
                self.priority,
                self.weight,
                self.multicast_priority,
                self.multicast_weight,
                (self.local << 2) | (self.probed << 1) | self.reachable,
            )
        )
        encode_address(writer, self.address)

    @classmethod
    def _decode(cls, reader: Reader) -> Locator:
        priority, weight, m_priority, m_weight, bits = reader.unpack(_LOCATOR, "Locator")
        return trusted(
            cls,
            address=decode_address(reader, "Loc-AFI"),
            priority=priority,
            weight=weight,
            multicast_priority=m_priority,
            multicast_weight=m_weight,
            local=bool(bits & 4),
            probed=bool(bits & 2),
            reachable=bool(bits & 1),
        )


#   0                   1                   2                   3
#   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                          Record TTL                           |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  | Locator Count | EID mask-len  | ACT |A|      Reserved         |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  | Rsvd  |  Map-Version Number   |       EID-Prefix-AFI          |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                          EID-Prefix                           |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                  Locator (repeats Locator Count times)        |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
@dataclass(frozen=True)
class MappingRecord:
    """An EID-Record with its locators, as carried by Map-Reply, Map-Register,
    Map-Notify(-Ack) and the Map-Request's optional Map-Reply record.

    ``eid`` is the address exactly as it travelled (plain AFI or an
    Instance-ID LCAF), so re-encoding a decoded record is byte-exact;
    `eid_prefix` is the normalised view.  ``ttl`` is in minutes
    (`TTL_INFINITE` = 0xffffffff); ``map_version`` is RFC 9302's 12-bit number.
    """

    eid: Address
    eid_mask_len: int
    locators: tuple = ()
    ttl: int = TTL_ONE_DAY
    action: Action = Action.NO_ACTION
    authoritative: bool = False
    map_version: int = 0

    def __post_init__(self) -> None:
        check_address("MappingRecord", "eid", self.eid)
        check_mask_len("MappingRecord", "eid_mask_len", self.eid_mask_len, self.eid)
        locators = as_tuple(self, "locators", self.locators)
        if len(locators) > 255:
            raise LispEncodeError(f"MappingRecord has {len(locators)} locators; Locator Count holds at most 255")
        for locator in locators:
            if not isinstance(locator, Locator):
                raise LispEncodeError(f"MappingRecord.locators must hold Locator, not {type(locator).__name__}")
        check_uint("MappingRecord", "ttl", self.ttl, 32)
        if type(self.action) is not Action:
            try:
                object.__setattr__(self, "action", Action(self.action))
            except ValueError:
                raise LispEncodeError(f"MappingRecord.action={self.action!r} is not a defined action") from None
        check_bool("MappingRecord", "authoritative", self.authoritative)
        check_uint("MappingRecord", "map_version", self.map_version, 12)

    @classmethod
    def for_prefix(cls, prefix: EidPrefix, locators: tuple = (), **fields: object) -> MappingRecord:
        mask_len, eid = prefix.to_wire()
        return cls(eid, mask_len, locators, **fields)  # type: ignore[arg-type]

    @property
    def eid_prefix(self) -> EidPrefix:
        """Computed once per record: map-caches and registries read it on every lookup and sweep.
        (Kept in the instance's __dict__ by hand: functools.cached_property takes a lock on
        Python 3.11, which a Map-Server restoring a million records pays a million times.)"""
        found = self.__dict__.get("_eid_prefix")
        if found is None:
            found = self.__dict__["_eid_prefix"] = EidPrefix.from_wire(self.eid_mask_len, self.eid)
        return found

    def _encode(self, writer: Writer) -> None:
        writer.raw(
            _RECORD.pack(
                self.ttl,
                len(self.locators),
                self.eid_mask_len,
                (self.action << 13) | (self.authoritative << 12),
                self.map_version,
            )
        )
        encode_address(writer, self.eid)
        for locator in self.locators:
            locator._encode(writer)

    @classmethod
    def _decode(cls, reader: Reader) -> MappingRecord:
        start = reader.pos
        ttl, locator_count, mask_len, act_word, version_word = reader.unpack(_RECORD, "EID-Record")
        action = act_word >> 13
        if action > Action.DROP_AUTH_FAILURE:
            raise reader.error("ACT", f"undefined action {action}", start + 6)
        eid = decode_address(reader, "EID-Prefix-AFI")
        _check_decoded_mask(reader, "EID mask-len", mask_len, eid, start + 5)
        return trusted(
            cls,
            eid=eid,
            eid_mask_len=mask_len,
            locators=tuple([Locator._decode(reader) for _ in range(locator_count)]),
            ttl=ttl,
            action=Action(action),
            authoritative=bool(act_word & 0x1000),
            map_version=version_word & 0x0FFF,
        )


#   0                   1                   2                   3
#   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |N|  Reserved   | EID mask-len  |        EID-Prefix-AFI         |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                       EID-Prefix  ...                         |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#
# N (RFC 9437 §4): notification requested -- subscribe to changes of this mapping.
@dataclass(frozen=True)
class MapRequestRecord:
    """An EID-Record of a Map-Request: the prefix being asked for, and whether
    the requester subscribes to its updates (pub/sub N bit)."""

    eid: Address
    eid_mask_len: int
    notify_requested: bool = False

    def __post_init__(self) -> None:
        check_address("MapRequestRecord", "eid", self.eid)
        check_mask_len("MapRequestRecord", "eid_mask_len", self.eid_mask_len, self.eid)
        check_bool("MapRequestRecord", "notify_requested", self.notify_requested)

    @classmethod
    def for_prefix(cls, prefix: EidPrefix, notify_requested: bool = False) -> MapRequestRecord:
        mask_len, eid = prefix.to_wire()
        return cls(eid, mask_len, notify_requested)

    @property
    def eid_prefix(self) -> EidPrefix:
        return EidPrefix.from_wire(self.eid_mask_len, self.eid)

    def _encode(self, writer: Writer) -> None:
        writer.u8(0x80 if self.notify_requested else 0)
        writer.u8(self.eid_mask_len)
        encode_address(writer, self.eid)

    @classmethod
    def _decode(cls, reader: Reader) -> MapRequestRecord:
        start = reader.pos
        flags = reader.u8("EID-Record N bit / Reserved")
        mask_len = reader.u8("EID mask-len")
        eid = decode_address(reader, "EID-Prefix-AFI")
        _check_decoded_mask(reader, "EID mask-len", mask_len, eid, start + 1)
        return trusted(cls, eid=eid, eid_mask_len=mask_len, notify_requested=bool(flags & 0x80))


__all__ = ["Action", "Locator", "MapRequestRecord", "MappingRecord", "TTL_INFINITE", "TTL_ONE_DAY"]
