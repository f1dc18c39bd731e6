"""The LISP data-plane header (RFC 9300 §5.3) and its LISP-GPE form (RFC 9305).

OVS's flow-based VXLAN-GPE port sends and accepts exactly the GPE form with
flags 0x0c (I and P) and Next Protocol IPv4 or IPv6; `LispDataHeader.gpe`
builds that.  Fields whose flag is clear are ignored on receipt, as RFC 9300
says, and sent as zero.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from .checks import check_bool, check_uint
from .cursor import Reader
from .errors import LispEncodeError

LISP_DATA_PORT = 4341
#: LISP instance-IDs are 24 bits on the wire (RFC 9300 §5.3, RFC 8060 §4.1).
MAX_IID = (1 << 24) - 1
HEADER_LENGTH = 8

_HEADER = struct.Struct(">II")

_N, _L, _E, _V, _I, _P = 0x80, 0x40, 0x20, 0x10, 0x08, 0x04


class NextProtocol(IntEnum):
    """LISP-GPE Next Protocol values (RFC 9305 §3)."""

    IPV4 = 1
    IPV6 = 2
    ETHERNET = 3
    NSH = 4


#   0                   1                   2                   3
#   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |N|L|E|V|I|R|K|K|            Nonce/Map-Version                  |   RFC 9300
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                 Instance ID/Locator-Status-Bits               |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#
#  with V:  |N|L|E|V|I|R|K|K|  Source Map-Version   |   Dest Map-Version    |
#  with I:  |                 Instance ID (24)              |  LSBs (8)     |
#  without I the second word is 32 Locator-Status-Bits.
#
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |N|L|E|V|I|P|K|K|     Nonce/Map-Version (16)    | Next Protocol |   RFC 9305 (P set)
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                 Instance ID/Locator-Status-Bits               |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
@dataclass(frozen=True, kw_only=True)
class LispDataHeader:
    """The 8-byte header before an encapsulated packet.

    A field that is None has its flag clear: ``nonce`` (N), ``locator_status_bits``
    (L), the two map-versions (V, RFC 9302), ``instance_id`` (I) and
    ``next_protocol`` (P, LISP-GPE).  In the GPE form the nonce shrinks to 16
    bits and map-versions (12 + 12 bits) no longer fit, so V with P is refused.
    """

    nonce: int | None = None
    echo_nonce_request: bool = False
    locator_status_bits: int | None = None
    source_map_version: int | None = None
    dest_map_version: int | None = None
    instance_id: int | None = None
    next_protocol: int | None = None
    key_bits: int = 0

    def __post_init__(self) -> None:
        owner = "LispDataHeader"
        gpe = self.next_protocol is not None
        if gpe:
            check_uint(owner, "next_protocol", self.next_protocol, 8)
        if self.nonce is not None:
            check_uint(owner, "nonce", self.nonce, 16 if gpe else 24)
        check_bool(owner, "echo_nonce_request", self.echo_nonce_request)
        if (self.source_map_version is None) != (self.dest_map_version is None):
            raise LispEncodeError(f"{owner}: source and dest map-versions go together (V bit)")
        if self.source_map_version is not None:
            if self.nonce is not None:
                raise LispEncodeError(f"{owner}: the N and V bits exclude each other (one 24-bit field)")
            if gpe:
                raise LispEncodeError(f"{owner}: map-versions do not fit the 16-bit LISP-GPE field")
            check_uint(owner, "source_map_version", self.source_map_version, 12)
            check_uint(owner, "dest_map_version", self.dest_map_version, 12)
        if self.instance_id is not None:
            check_uint(owner, "instance_id", self.instance_id, 24)
        if self.locator_status_bits is not None:
            check_uint(owner, "locator_status_bits", self.locator_status_bits, 8 if self.instance_id is not None else 32)
        check_uint(owner, "key_bits", self.key_bits, 2)

    @classmethod
    def gpe(cls, instance_id: int, next_protocol: int = NextProtocol.IPV4) -> LispDataHeader:
        """The header OVS's VXLAN-GPE port exchanges: flags 0x0c (I, P)."""
        return cls(instance_id=instance_id, next_protocol=next_protocol)

    @property
    def flags(self) -> int:
        return (
            (_N if self.nonce is not None else 0)
            | (_L if self.locator_status_bits is not None else 0)
            | (_E if self.echo_nonce_request else 0)
            | (_V if self.source_map_version is not None else 0)
            | (_I if self.instance_id is not None else 0)
            | (_P if self.next_protocol is not None else 0)
            | self.key_bits
        )

    def encode(self) -> bytes:
        if self.source_map_version is not None:
            field = (self.source_map_version << 12) | self.dest_map_version  # type: ignore[operator]
        else:
            field = self.nonce or 0
        if self.next_protocol is not None:
            field = (field << 8) | self.next_protocol
        lsbs = self.locator_status_bits or 0
        second = (self.instance_id << 8) | lsbs if self.instance_id is not None else lsbs
        return _HEADER.pack((self.flags << 24) | field, second)

    def encapsulate(self, payload: bytes) -> bytes:
        return self.encode() + payload

    @classmethod
    def decode(cls, data: bytes) -> LispDataHeader:
        """Decode exactly 8 bytes."""
        reader = Reader(bytes(data), context="LISP data header")
        header = cls._decode(reader)
        reader.expect_end("end of header")
        return header

    @classmethod
    def split(cls, packet: bytes) -> tuple[LispDataHeader, bytes]:
        """(header, inner packet) of a UDP-4341 payload."""
        reader = Reader(bytes(packet), context="LISP data header")
        header = cls._decode(reader)
        return header, reader.take_rest()

    @classmethod
    def _decode(cls, reader: Reader) -> LispDataHeader:
        first, second = reader.unpack(_HEADER, "LISP data header")
        flags = first >> 24
        field = first & 0xFFFFFF
        fields: dict = {"echo_nonce_request": bool(flags & _E), "key_bits": flags & 0x03}
        if flags & _P:
            fields["next_protocol"] = field & 0xFF
            field >>= 8
        if flags & _N and flags & _V:
            raise reader.error("flags", "N and V bits are both set", reader.pos - 8)
        if flags & _V:
            if flags & _P:
                raise reader.error("flags", "V bit with P bit: map-versions do not fit LISP-GPE", reader.pos - 8)
            fields["source_map_version"] = field >> 12
            fields["dest_map_version"] = field & 0x0FFF
        elif flags & _N:
            fields["nonce"] = field
        if flags & _I:
            fields["instance_id"] = second >> 8
            if flags & _L:
                fields["locator_status_bits"] = second & 0xFF
        elif flags & _L:
            fields["locator_status_bits"] = second
        return cls(**fields)
