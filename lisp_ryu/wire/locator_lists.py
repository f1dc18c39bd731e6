"""LCAFs that stand for several RLOCs in one locator (RFC 8060).

    type 10  Explicit Locator Path   the RTRs a packet is re-encapsulated through, in order
    type 13  Replication List Entry  every RLOC gets a copy of each packet (multicast
                                     replication, and draft-ietf-lisp-predictive-rlocs)

Registered with the address codec (`address.register_lcaf`) when `lisp_ryu.wire` is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .address import Lcaf, LcafType, check_address, decode_address, encode_address, register_lcaf
from .checks import as_tuple, check_bool, check_uint
from .cursor import Reader, Writer
from .errors import LispEncodeError


@dataclass(frozen=True)
class ElpHop:
    """One re-encapsulation hop of an Explicit Locator Path, with its L (lookup),
    P (RLOC-probe) and S (strict) bits."""

    address: object
    lookup: bool = False
    rloc_probe: bool = False
    strict: bool = False

    def __post_init__(self) -> None:
        check_address("ElpHop", "address", self.address)
        check_bool("ElpHop", "lookup", self.lookup)
        check_bool("ElpHop", "rloc_probe", self.rloc_probe)
        check_bool("ElpHop", "strict", self.strict)


#   0                   1                   2                   3
#   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |           AFI = 16387         |     Rsvd1     |     Flags     |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |   Type = 10   |     Rsvd2     |               n               |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |           Rsvd3         |L|P|S|           AFI = x             |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                         Reencap Hop 1  ...                    |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |           Rsvd3         |L|P|S|           AFI = x             |   (repeats to n)
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
@register_lcaf
@dataclass(frozen=True)
class ExplicitLocatorPath(Lcaf):
    """LCAF type 10: the RTRs a packet must be re-encapsulated through, in order."""

    lcaf_type: ClassVar[int] = LcafType.EXPLICIT_LOCATOR_PATH
    hops: tuple

    def __post_init__(self) -> None:
        for hop in as_tuple(self, "hops", self.hops):
            if not isinstance(hop, ElpHop):
                raise LispEncodeError(f"ExplicitLocatorPath.hops must hold ElpHop, not {type(hop).__name__}")

    def _encode_body(self, writer: Writer) -> None:
        for hop in self.hops:
            writer.u16((hop.lookup << 2) | (hop.rloc_probe << 1) | hop.strict)
            encode_address(writer, hop.address)

    @classmethod
    def _decode_body(cls, reader: Reader, rsvd2: int, depth: int) -> ExplicitLocatorPath:
        hops = []
        while reader.pos < reader.end:
            bits = reader.u16("ELP hop flags")
            address = decode_address(reader, "ELP hop AFI", depth)
            hops.append(ElpHop(address, bool(bits & 4), bool(bits & 2), bool(bits & 1)))
        return cls(tuple(hops))

    def __str__(self) -> str:
        return "elp(" + " -> ".join(str(h.address) for h in self.hops) + ")"


@dataclass(frozen=True)
class RleEntry:
    """One replication target of a Replication List Entry and its level (RFC 8060: the level
    orders a replication tree; the RLOCs of draft-ietf-lisp-predictive-rlocs share one)."""

    address: object
    level: int = 0

    def __post_init__(self) -> None:
        check_address("RleEntry", "address", self.address)
        check_uint("RleEntry", "level", self.level, 8)


#   0                   1                   2                   3
#   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |           AFI = 16387         |     Rsvd1     |     Flags     |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |   Type = 13   |     Rsvd2     |             Length            |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |              Rsvd3            |     Rsvd4     |  Level Value  |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |              AFI = x          |           RTR/ETR #1 ...      |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |              Rsvd3            |     Rsvd4     |  Level Value  |   (repeats)
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
@register_lcaf
@dataclass(frozen=True)
class ReplicationList(Lcaf):
    """LCAF type 13, a Replication List Entry: a locator whose packets go to every entry, each
    a copy of its own (multicast replication, and the predictive RLOCs of a roaming EID)."""

    lcaf_type: ClassVar[int] = LcafType.REPLICATION_LIST
    entries: tuple

    def __post_init__(self) -> None:
        for entry in as_tuple(self, "entries", self.entries):
            if not isinstance(entry, RleEntry):
                raise LispEncodeError(f"ReplicationList.entries must hold RleEntry, not {type(entry).__name__}")

    def _encode_body(self, writer: Writer) -> None:
        for entry in self.entries:
            writer.u16(0)
            writer.u8(0)
            writer.u8(entry.level)
            encode_address(writer, entry.address)

    @classmethod
    def _decode_body(cls, reader: Reader, rsvd2: int, depth: int) -> ReplicationList:
        entries = []
        while reader.pos < reader.end:
            reader.u16("RLE Rsvd3")  # reserved: sent as zero, ignored on receipt
            reader.u8("RLE Rsvd4")
            level = reader.u8("RLE Level Value")
            entries.append(RleEntry(decode_address(reader, "RLE entry AFI", depth), level))
        return cls(tuple(entries))

    def __str__(self) -> str:
        return "rle(" + ", ".join(str(e.address) for e in self.entries) + ")"
