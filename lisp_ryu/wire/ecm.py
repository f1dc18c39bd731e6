"""Encapsulated Control Message (RFC 9301 §5.8): a control message inside
an inner IPv4/IPv6 + UDP header, behind a 4-byte LISP header.

ITRs send Map-Requests to a Map-Resolver this way; the Map-Resolver learns
the requester's address and reply port from the inner headers.  Checksums are
computed on encode and checked on decode (a zero UDP checksum is accepted and
remembered, as many implementations send it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar

from .checks import check_bool, check_bytes, check_uint
from .cursor import Reader, Writer
from .errors import LispEncodeError
from .messages import _CONTROL_CLASSES, MessageType, _Message, decode_typed

LISP_CONTROL_PORT = 4342
IP_PROTO_UDP = 17

_IPV4 = struct.Struct(">BBHHHBBH4s4s")
_IPV6 = struct.Struct(">IHBB16s16s")
_UDP = struct.Struct(">HHHH")


def internet_checksum(data: bytes) -> int:
    """RFC 1071 ones'-complement checksum.

    Summing 16-bit words modulo 0xffff is the big integer modulo 0xffff
    (2**16 = 1 mod 0xffff), which lets Python do the loop in C.
    """
    if len(data) % 2:
        data += b"\x00"
    value = int.from_bytes(data, "big")
    total = value % 0xFFFF
    if total == 0 and value:
        total = 0xFFFF
    return 0xFFFF - total


def _udp_checksum(source: bytes, destination: bytes, segment: bytes) -> int:
    length = len(segment)
    if len(source) == 4:
        pseudo = source + destination + struct.pack(">BBH", 0, IP_PROTO_UDP, length)
    else:
        pseudo = source + destination + struct.pack(">IxxxB", length, IP_PROTO_UDP)
    return internet_checksum(pseudo + segment)


#   0                   1                   2                   3
#   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |Type=8 |S|D|E|M|                Reserved                       |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                 IPv4 or IPv6 header (inner)                   |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |       Source Port = xxxx      |       Dest Port = 4342        |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |           UDP Length          |        UDP Checksum           |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                     LISP control message                      |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#
# S LISP-SEC, D DDT-originated, E to-ETR, M to-Map-Server.
@dataclass(frozen=True, kw_only=True)
class EncapsulatedControlMessage(_Message):
    """``message`` travelling from ``inner_source``:``inner_source_port`` to
    ``inner_destination``:``inner_destination_port``.

    The inner-header fields (``ttl``, ``tos``, ``identification``,
    ``dont_fragment``, ``flow_label``, ``ipv4_options``,
    ``zero_udp_checksum``) are kept so a decoded ECM re-encodes byte for byte.
    """

    message_type: ClassVar[int] = MessageType.ENCAPSULATED_CONTROL_MESSAGE

    message: object
    inner_source: IPv4Address | IPv6Address
    inner_destination: IPv4Address | IPv6Address
    inner_source_port: int
    inner_destination_port: int = LISP_CONTROL_PORT
    security: bool = False
    ddt_originated: bool = False
    to_etr: bool = False
    to_map_server: bool = False
    ttl: int = 64
    tos: int = 0
    identification: int = 0
    dont_fragment: bool = False
    flow_label: int = 0
    ipv4_options: bytes = b""
    zero_udp_checksum: bool = False

    def __post_init__(self) -> None:
        owner = "EncapsulatedControlMessage"
        if type(self.message) not in _CONTROL_CLASSES.values():
            raise LispEncodeError(f"{owner}.message must be a control message (not an ECM), not {type(self.message).__name__}")
        source, destination = self.inner_source, self.inner_destination
        if not isinstance(source, (IPv4Address, IPv6Address)) or type(source) is not type(destination):
            raise LispEncodeError(f"{owner}: inner source and destination must be IP addresses of one family")
        check_uint(owner, "inner_source_port", self.inner_source_port, 16)
        check_uint(owner, "inner_destination_port", self.inner_destination_port, 16)
        for name in ("security", "ddt_originated", "to_etr", "to_map_server", "dont_fragment", "zero_udp_checksum"):
            check_bool(owner, name, getattr(self, name))
        check_uint(owner, "ttl", self.ttl, 8)
        check_uint(owner, "tos", self.tos, 8)
        check_uint(owner, "identification", self.identification, 16)
        check_uint(owner, "flow_label", self.flow_label, 20)
        check_bytes(owner, "ipv4_options", self.ipv4_options, max_len=40)
        if len(self.ipv4_options) % 4:
            raise LispEncodeError(f"{owner}.ipv4_options must be a multiple of 4 bytes")
        if isinstance(source, IPv6Address) and (self.identification or self.dont_fragment or self.ipv4_options):
            raise LispEncodeError(f"{owner}: identification/dont_fragment/ipv4_options are IPv4-only")
        if isinstance(source, IPv4Address) and self.flow_label:
            raise LispEncodeError(f"{owner}: flow_label is IPv6-only")

    def _encode(self, writer: Writer) -> None:
        writer.u32(
            (8 << 28)
            | (self.security << 27)
            | (self.ddt_originated << 26)
            | (self.to_etr << 25)
            | (self.to_map_server << 24)
        )
        payload = self.message.encode()  # type: ignore[attr-defined]
        udp_length = 8 + len(payload)
        source, destination = self.inner_source.packed, self.inner_destination.packed
        segment = _UDP.pack(self.inner_source_port, self.inner_destination_port, udp_length, 0) + payload
        if not self.zero_udp_checksum:
            checksum = _udp_checksum(source, destination, segment) or 0xFFFF
            segment = segment[:6] + checksum.to_bytes(2, "big") + segment[8:]
        if isinstance(self.inner_source, IPv4Address):
            header_length = 20 + len(self.ipv4_options)
            total_length = header_length + udp_length
            if total_length > 0xFFFF:
                raise LispEncodeError(f"inner IPv4 packet would be {total_length} bytes, over 65535")
            header = _IPV4.pack(
                0x40 | (header_length // 4),
                self.tos,
                total_length,
                self.identification,
                0x4000 if self.dont_fragment else 0,
                self.ttl,
                IP_PROTO_UDP,
                0,
                source,
                destination,
            ) + self.ipv4_options
            checksum = internet_checksum(header)
            writer.raw(header[:10] + checksum.to_bytes(2, "big") + header[12:])
        else:
            if udp_length > 0xFFFF:
                raise LispEncodeError(f"inner IPv6 payload would be {udp_length} bytes, over 65535")
            writer.raw(
                _IPV6.pack(
                    (6 << 28) | (self.tos << 20) | self.flow_label,
                    udp_length,
                    IP_PROTO_UDP,
                    self.ttl,
                    source,
                    destination,
                )
            )
        writer.raw(segment)

    @classmethod
    def _decode(cls, reader: Reader) -> EncapsulatedControlMessage:
        word = reader.u32("ECM header")
        ip_start = reader.pos
        version = reader.data[ip_start] >> 4 if ip_start < reader.end else None
        fields: dict = {}
        if version == 4:
            vihl, tos, total_length, ident, frag, ttl, proto, _, source, destination = reader.unpack(
                _IPV4, "inner IPv4 header"
            )
            header_length = (vihl & 0x0F) * 4
            if header_length < 20:
                raise reader.error("inner IPv4 IHL", f"header length {header_length} is below 20", ip_start)
            options = reader.take(header_length - 20, "inner IPv4 options")
            if total_length != reader.end - ip_start:
                raise reader.error(
                    "inner IPv4 total length",
                    f"says {total_length} bytes but {reader.end - ip_start} follow",
                    ip_start + 2,
                )
            if internet_checksum(reader.data[ip_start : ip_start + header_length]) != 0:
                raise reader.error("inner IPv4 header checksum", "does not match the header", ip_start + 10)
            if proto != IP_PROTO_UDP:
                raise reader.error("inner IPv4 protocol", f"{proto} is not UDP", ip_start + 9)
            if frag & 0x3FFF:
                raise reader.error("inner IPv4 fragment", "fragmented inner packets are not supported", ip_start + 6)
            fields.update(
                tos=tos,
                identification=ident,
                dont_fragment=bool(frag & 0x4000),
                ttl=ttl,
                ipv4_options=options,
                inner_source=IPv4Address(source),
                inner_destination=IPv4Address(destination),
            )
        elif version == 6:
            first, payload_length, next_header, hop_limit, source, destination = reader.unpack(
                _IPV6, "inner IPv6 header"
            )
            if next_header != IP_PROTO_UDP:
                raise reader.error(
                    "inner IPv6 next header", f"{next_header} is not UDP (extension headers unsupported)", ip_start + 6
                )
            if payload_length != reader.end - reader.pos:
                raise reader.error(
                    "inner IPv6 payload length",
                    f"says {payload_length} bytes but {reader.end - reader.pos} follow",
                    ip_start + 4,
                )
            fields.update(
                tos=(first >> 20) & 0xFF,
                flow_label=first & 0xFFFFF,
                ttl=hop_limit,
                inner_source=IPv6Address(source),
                inner_destination=IPv6Address(destination),
            )
        else:
            raise reader.error("inner IP version", f"expected 4 or 6, got {version}", ip_start)
        udp_start = reader.pos
        source_port, destination_port, udp_length, checksum = reader.unpack(_UDP, "inner UDP header")
        if udp_length != reader.end - udp_start:
            raise reader.error(
                "inner UDP length", f"says {udp_length} bytes but {reader.end - udp_start} follow", udp_start + 4
            )
        if checksum and _udp_checksum(
            fields["inner_source"].packed, fields["inner_destination"].packed, reader.data[udp_start : reader.end]
        ):
            raise reader.error("inner UDP checksum", "does not match the datagram", udp_start + 6)
        inner = Reader(reader.data, reader.pos, reader.end, reader.context)
        message = decode_typed(inner)  # types 1-5: no ECM inside an ECM
        reader.pos = reader.end
        return cls(
            message=message,
            inner_source_port=source_port,
            inner_destination_port=destination_port,
            zero_udp_checksum=checksum == 0,
            security=bool(word & (1 << 27)),
            ddt_originated=bool(word & (1 << 26)),
            to_etr=bool(word & (1 << 25)),
            to_map_server=bool(word & (1 << 24)),
            **fields,
        )
