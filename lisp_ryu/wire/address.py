"""Addresses as LISP carries them: an AFI followed by the address bytes.

Plain AFIs (RFC 9301 §5, IANA address family numbers):

    AFI 0      no address (zero bytes follow)
    AFI 1      IPv4 (4 bytes)            -> ipaddress.IPv4Address
    AFI 2      IPv6 (16 bytes)           -> ipaddress.IPv6Address
    AFI 17     distinguished name (ASCII, NUL-terminated) -> DistinguishedName
    AFI 16389  48-bit MAC (6 bytes)      -> MacAddress
    AFI 16387  LCAF (RFC 8060)           -> one of the Lcaf subclasses below, or in
                                            locator_lists.py (ELP, RLE)

LCAF header (RFC 8060 §3), common to every LCAF type; ``Length`` counts the
bytes that follow it:

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           AFI = 16387         |     Rsvd1     |     Flags     |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |    Type       |     Rsvd2     |            Length             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

LCAF types live in a registry (type -> class).  A type with no class is kept
as `UnknownLcaf` (header fields and body bytes) and re-encoded unchanged, so a
Map-Server can store and hand on what it does not understand.

`prefix.EidPrefix`, the value the rest of the system keys on, is built from
these addresses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar, Union

from .checks import as_tuple, check_bytes, check_uint, trusted
from .cursor import Reader, Writer
from .errors import LispEncodeError


class Afi(IntEnum):
    NONE = 0
    IPV4 = 1
    IPV6 = 2
    DISTINGUISHED_NAME = 17
    LCAF = 16387
    MAC = 16389


class LcafType(IntEnum):
    """The LCAF types this codec decodes into structured values (RFC 8060 §4)."""

    AFI_LIST = 1
    INSTANCE_ID = 2
    EXPLICIT_LOCATOR_PATH = 10
    SOURCE_DEST_KEY = 12
    REPLICATION_LIST = 13


#: LCAFs may nest (an Instance-ID around a Source/Dest key ...); a peer must
#: not be able to make us recurse without bound.
MAX_LCAF_DEPTH = 8

_LCAF_HEADER = struct.Struct(">BBBBH")


# --------------------------------------------------------------------------- plain addresses


@dataclass(frozen=True)
class NoAddress:
    """AFI 0: the field is present but carries no address (e.g. an absent source EID)."""

    def __str__(self) -> str:
        return "no-address"


NO_ADDRESS = NoAddress()


@dataclass(frozen=True)
class MacAddress:
    """A 48-bit IEEE MAC address (AFI 16389), for layer-2 EIDs."""

    value: bytes

    def __post_init__(self) -> None:
        check_bytes("MacAddress", "value", self.value, exact_len=6)

    @classmethod
    def parse(cls, text: str) -> MacAddress:
        parts = text.replace("-", ":").split(":")
        if len(parts) != 6 or not all(len(p) == 2 for p in parts):
            raise LispEncodeError(f"not a MAC address: {text!r}")
        try:
            return cls(bytes(int(p, 16) for p in parts))
        except ValueError:
            raise LispEncodeError(f"not a MAC address: {text!r}") from None

    def __int__(self) -> int:
        return int.from_bytes(self.value, "big")

    def __str__(self) -> str:
        return ":".join(f"{b:02x}" for b in self.value)


@dataclass(frozen=True)
class DistinguishedName:
    """AFI 17: an ASCII name, NUL-terminated on the wire."""

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise LispEncodeError(f"DistinguishedName.name must be a str, not {type(self.name).__name__}")
        if not self.name.isascii() or "\x00" in self.name:
            raise LispEncodeError(f"DistinguishedName.name must be ASCII without NUL: {self.name!r}")

    def __str__(self) -> str:
        return f"'{self.name}'"


# --------------------------------------------------------------------------- LCAF


class Lcaf:
    """Base of every LCAF value; subclasses set ``lcaf_type`` and the body codec."""

    lcaf_type: ClassVar[int]

    def _rsvd2(self) -> int:
        return 0

    def _encode_body(self, writer: Writer) -> None:
        raise NotImplementedError

    @classmethod
    def _decode_body(cls, reader: Reader, rsvd2: int, depth: int) -> Lcaf:
        raise NotImplementedError


LCAF_REGISTRY: dict[int, type[Lcaf]] = {}


def register_lcaf(cls: type[Lcaf]) -> type[Lcaf]:
    """Class decorator: decode LCAF type ``cls.lcaf_type`` with ``cls``."""
    if cls.lcaf_type in LCAF_REGISTRY:
        raise LispEncodeError(f"LCAF type {cls.lcaf_type} is already registered to {LCAF_REGISTRY[cls.lcaf_type]}")
    LCAF_REGISTRY[cls.lcaf_type] = cls
    return cls


#   0                   1                   2                   3
#   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |           AFI = 16387         |     Rsvd1     |     Flags     |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |   Type = 1    |     Rsvd2     |            Length             |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |            AFI = x            |        Address ...            |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |            AFI = y            |        Address ...            |   (repeats to Length)
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
@register_lcaf
@dataclass(frozen=True)
class AfiListAddress(Lcaf):
    """LCAF type 1: several addresses of one node (e.g. an RLOC's IPv4 and IPv6)."""

    lcaf_type: ClassVar[int] = LcafType.AFI_LIST
    addresses: tuple

    def __post_init__(self) -> None:
        for item in as_tuple(self, "addresses", self.addresses):
            check_address("AfiListAddress", "addresses[]", item)

    def _encode_body(self, writer: Writer) -> None:
        for item in self.addresses:
            encode_address(writer, item)

    @classmethod
    def _decode_body(cls, reader: Reader, rsvd2: int, depth: int) -> AfiListAddress:
        items = []
        while reader.pos < reader.end:
            items.append(decode_address(reader, "AFI-List item AFI", depth))
        return cls(tuple(items))

    def __str__(self) -> str:
        return "(" + ", ".join(str(a) for a in self.addresses) + ")"


#   0                   1                   2                   3
#   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |           AFI = 16387         |     Rsvd1     |     Flags     |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |   Type = 2    | IID mask-len  |             Length            |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                         Instance ID                           |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |              AFI = x          |         Address  ...          |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
@register_lcaf
@dataclass(frozen=True)
class InstanceIdAddress(Lcaf):
    """LCAF type 2: an address inside a VPN (instance-ID).

    ``iid_mask_len`` (carried in Rsvd2) is 0 for an ordinary address; with
    AFI 0 inside, it makes the Instance ID itself a prefix (a range of IIDs).
    """

    lcaf_type: ClassVar[int] = LcafType.INSTANCE_ID
    instance_id: int
    address: object
    iid_mask_len: int = 0

    def __post_init__(self) -> None:
        check_uint("InstanceIdAddress", "instance_id", self.instance_id, 32)
        check_uint("InstanceIdAddress", "iid_mask_len", self.iid_mask_len, 8)
        if self.iid_mask_len > 32:
            raise LispEncodeError(f"InstanceIdAddress.iid_mask_len={self.iid_mask_len} exceeds 32")
        check_address("InstanceIdAddress", "address", self.address)

    def _rsvd2(self) -> int:
        return self.iid_mask_len

    def _encode_body(self, writer: Writer) -> None:
        writer.u32(self.instance_id)
        encode_address(writer, self.address)

    @classmethod
    def _decode_body(cls, reader: Reader, rsvd2: int, depth: int) -> InstanceIdAddress:
        if rsvd2 > 32:
            raise reader.error("IID mask-len", f"{rsvd2} exceeds 32", reader.pos - 3)
        instance_id = reader.u32("Instance ID")
        address = decode_address(reader, "Instance-ID LCAF AFI", depth)
        return trusted(cls, instance_id=instance_id, address=address, iid_mask_len=rsvd2)

    def __str__(self) -> str:
        return f"[{self.instance_id}]{self.address}"


#   0                   1                   2                   3
#   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |           AFI = 16387         |     Rsvd1     |     Flags     |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |   Type = 12   |     Rsvd2     |             Length            |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |            Reserved           |   Source-ML   |    Dest-ML    |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |              AFI = x          |         Source-Prefix ...     |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |              AFI = x          |     Destination-Prefix ...    |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
@register_lcaf
@dataclass(frozen=True)
class SourceDestAddress(Lcaf):
    """LCAF type 12: a (source prefix, destination prefix) key for source-specific mappings."""

    lcaf_type: ClassVar[int] = LcafType.SOURCE_DEST_KEY
    source: object
    source_mask_len: int
    dest: object
    dest_mask_len: int

    def __post_init__(self) -> None:
        check_address("SourceDestAddress", "source", self.source)
        check_address("SourceDestAddress", "dest", self.dest)
        check_mask_len("SourceDestAddress", "source_mask_len", self.source_mask_len, self.source)
        check_mask_len("SourceDestAddress", "dest_mask_len", self.dest_mask_len, self.dest)

    def _encode_body(self, writer: Writer) -> None:
        writer.u16(0)
        writer.u8(self.source_mask_len)
        writer.u8(self.dest_mask_len)
        encode_address(writer, self.source)
        encode_address(writer, self.dest)

    @classmethod
    def _decode_body(cls, reader: Reader, rsvd2: int, depth: int) -> SourceDestAddress:
        reader.u16("Source/Dest Reserved")
        source_ml_at = reader.pos
        source_ml = reader.u8("Source-ML")
        dest_ml = reader.u8("Dest-ML")
        source = decode_address(reader, "Source-Prefix AFI", depth)
        dest = decode_address(reader, "Destination-Prefix AFI", depth)
        _check_decoded_mask(reader, "Source-ML", source_ml, source, source_ml_at)
        _check_decoded_mask(reader, "Dest-ML", dest_ml, dest, source_ml_at + 1)
        return cls(source, source_ml, dest, dest_ml)

    def __str__(self) -> str:
        return f"({self.source}/{self.source_mask_len} -> {self.dest}/{self.dest_mask_len})"


@dataclass(frozen=True)
class UnknownLcaf(Lcaf):
    """An LCAF type this codec has no class for, kept byte for byte.

    ``lcaf_type`` is an instance field here (the registered classes have it as
    a class constant); ``body`` is everything after the Length field.
    """

    lcaf_type: int  # type: ignore[misc]
    body: bytes
    rsvd1: int = 0
    flags: int = 0
    rsvd2: int = 0

    def __post_init__(self) -> None:
        check_uint("UnknownLcaf", "lcaf_type", self.lcaf_type, 8)
        if self.lcaf_type in LCAF_REGISTRY:
            raise LispEncodeError(
                f"LCAF type {self.lcaf_type} has a codec ({LCAF_REGISTRY[self.lcaf_type].__name__}); use it"
            )
        check_bytes("UnknownLcaf", "body", self.body, max_len=0xFFFF)
        check_uint("UnknownLcaf", "rsvd1", self.rsvd1, 8)
        check_uint("UnknownLcaf", "flags", self.flags, 8)
        check_uint("UnknownLcaf", "rsvd2", self.rsvd2, 8)

    def _encode_body(self, writer: Writer) -> None:
        writer.raw(self.body)

    def __str__(self) -> str:
        return f"lcaf-{self.lcaf_type}({self.body.hex()})"


Address = Union[NoAddress, IPv4Address, IPv6Address, MacAddress, DistinguishedName, Lcaf]
_ADDRESS_TYPES = (NoAddress, IPv4Address, IPv6Address, MacAddress, DistinguishedName, Lcaf)


def check_address(owner: str, name: str, value: object) -> None:
    if not isinstance(value, _ADDRESS_TYPES):
        raise LispEncodeError(
            f"{owner}.{name} must be an address (ipaddress IPv4/IPv6Address, MacAddress, "
            f"DistinguishedName, NoAddress or an LCAF), not {type(value).__name__}"
        )


def max_mask_len(address: object) -> int | None:
    """The longest mask-len that makes sense for ``address``, or None where the RFCs set no bound."""
    if isinstance(address, IPv4Address):
        return 32
    if isinstance(address, IPv6Address):
        return 128
    if isinstance(address, MacAddress):
        return 48
    if isinstance(address, NoAddress):
        return 0
    if isinstance(address, InstanceIdAddress):
        return max_mask_len(address.address)
    return None


def check_mask_len(owner: str, name: str, mask_len: int, address: object) -> None:
    check_uint(owner, name, mask_len, 8)
    limit = max_mask_len(address)
    if limit is not None and mask_len > limit:
        raise LispEncodeError(f"{owner}.{name}={mask_len} is longer than the {limit} bits of {address}")


def _check_decoded_mask(reader: Reader, field: str, mask_len: int, address: object, offset: int) -> None:
    limit = max_mask_len(address)
    if limit is not None and mask_len > limit:
        raise reader.error(field, f"mask-len {mask_len} is longer than the {limit} bits of {address}", offset)


# --------------------------------------------------------------------------- codec entry points


def encode_address(writer: Writer, address: object) -> None:
    """Append ``address`` with its AFI."""
    kind = type(address)
    if kind is IPv4Address:
        writer.u16(Afi.IPV4)
        writer.raw(address.packed)  # type: ignore[union-attr]
    elif kind is IPv6Address:
        writer.u16(Afi.IPV6)
        writer.raw(address.packed)  # type: ignore[union-attr]
    elif kind is NoAddress:
        writer.u16(Afi.NONE)
    elif kind is MacAddress:
        writer.u16(Afi.MAC)
        writer.raw(address.value)  # type: ignore[union-attr]
    elif kind is DistinguishedName:
        writer.u16(Afi.DISTINGUISHED_NAME)
        writer.raw(address.name.encode("ascii") + b"\x00")  # type: ignore[union-attr]
    elif isinstance(address, Lcaf):
        writer.u16(Afi.LCAF)
        if isinstance(address, UnknownLcaf):
            writer.u8(address.rsvd1)
            writer.u8(address.flags)
            writer.u8(address.lcaf_type)
            writer.u8(address.rsvd2)
        else:
            writer.u16(0)
            writer.u8(address.lcaf_type)
            writer.u8(address._rsvd2())
        length_at = writer.placeholder(2)
        body_start = len(writer)
        address._encode_body(writer)
        length = len(writer) - body_start
        if length > 0xFFFF:
            raise LispEncodeError(f"LCAF type {address.lcaf_type} body is {length} bytes, at most 65535 fit")
        writer.fill_u16(length_at, length)
    else:
        check_address("encode_address", "address", address)


def decode_address(reader: Reader, field: str = "AFI", depth: int = 0) -> Address:
    """Read an AFI and its address; ``field`` names the AFI field in errors."""
    afi_at = reader.pos
    data = reader.data
    if afi_at + 2 > reader.end:
        raise reader.error(field, f"truncated: needs 2 bytes, {reader.end - afi_at} left")
    afi = (data[afi_at] << 8) | data[afi_at + 1]
    reader.pos = afi_at + 2
    # IPv4 and IPv6 are nearly every address on the wire: read them inline.
    if afi == 1:
        if afi_at + 6 > reader.end:
            raise reader.error("IPv4 address", f"truncated: needs 4 bytes, {reader.end - reader.pos} left")
        reader.pos = afi_at + 6
        return IPv4Address(data[afi_at + 2 : afi_at + 6])
    if afi == 2:
        if afi_at + 18 > reader.end:
            raise reader.error("IPv6 address", f"truncated: needs 16 bytes, {reader.end - reader.pos} left")
        reader.pos = afi_at + 18
        return IPv6Address(data[afi_at + 2 : afi_at + 18])
    if afi == Afi.NONE:
        return NO_ADDRESS
    if afi == Afi.LCAF:
        return _decode_lcaf(reader, depth)
    if afi == Afi.MAC:
        return MacAddress(reader.take(6, "MAC address"))
    if afi == Afi.DISTINGUISHED_NAME:
        nul = reader.find(0, "distinguished name")
        raw = reader.take(nul - reader.pos, "distinguished name")
        reader.pos += 1
        if not raw.isascii():
            raise reader.error("distinguished name", "not ASCII", afi_at + 2)
        return DistinguishedName(raw.decode("ascii"))
    raise reader.error(field, f"unsupported AFI {afi}", afi_at)


def _decode_lcaf(reader: Reader, depth: int) -> Lcaf:
    header_at = reader.pos
    if depth >= MAX_LCAF_DEPTH:
        raise reader.error("LCAF Type", f"LCAFs nested deeper than {MAX_LCAF_DEPTH}", header_at)
    rsvd1, flags, lcaf_type, rsvd2, length = reader.unpack(_LCAF_HEADER, "LCAF header")
    body = reader.sub(length, "LCAF Length")
    cls = LCAF_REGISTRY.get(lcaf_type)
    if cls is None:
        return UnknownLcaf(lcaf_type, body.take_rest(), rsvd1, flags, rsvd2)
    value = cls._decode_body(body, rsvd2, depth + 1)
    if body.pos != body.end:
        raise body.error("LCAF Length", f"{body.end - body.pos} bytes left over after the type-{lcaf_type} body")
    return value


def address_to_bytes(address: object) -> bytes:
    """``address`` with its AFI, as bytes (for keys, hashing and tests)."""
    writer = Writer()
    encode_address(writer, address)
    return writer.getvalue()


def address_from_bytes(data: bytes) -> Address:
    """Decode exactly one AFI-prefixed address from ``data``."""
    reader = Reader(bytes(data), context="address")
    address = decode_address(reader)
    reader.expect_end("address")
    return address


def address_afi(address: object) -> int:
    if isinstance(address, IPv4Address):
        return Afi.IPV4
    if isinstance(address, IPv6Address):
        return Afi.IPV6
    if isinstance(address, MacAddress):
        return Afi.MAC
    if isinstance(address, DistinguishedName):
        return Afi.DISTINGUISHED_NAME
    if isinstance(address, Lcaf):
        return Afi.LCAF
    return Afi.NONE
