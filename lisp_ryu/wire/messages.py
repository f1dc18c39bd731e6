"""LISP control messages (RFC 9301 §5, RFC 9437 pub/sub fields, RFC 9302 map-versions).

The records and locators they carry are in `records`.

Every message is a frozen dataclass with ``encode() -> bytes`` and a
classmethod ``decode(data)`` that returns a fully valid object or raises
`LispDecodeError`.  `control.decode_message` dispatches a datagram on the
type nibble (it needs the ECM too, which carries one of these).

Flag bits that a message derives from its contents are not separate fields:
the Map-Request M bit is "``map_reply_record`` is not None", the I bit is
"``xtr_id`` is not None", counts are the lengths of the tuples.  Reserved bits
are sent as zero and ignored on receipt, as the RFC says.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Union

from .address import NO_ADDRESS, Address, check_address, decode_address, encode_address
from .auth import AuthAlgorithm
from .checks import as_tuple, check_bool, check_bytes, check_uint, trusted
from .cursor import Reader, Writer
from .errors import LispEncodeError
from .records import MappingRecord, MapRequestRecord


class MessageType(IntEnum):
    MAP_REQUEST = 1
    MAP_REPLY = 2
    MAP_REGISTER = 3
    MAP_NOTIFY = 4
    MAP_NOTIFY_ACK = 5
    MAP_REFERRAL = 6
    INFO = 7
    ENCAPSULATED_CONTROL_MESSAGE = 8


MESSAGE_NAMES = {
    1: "Map-Request",
    2: "Map-Reply",
    3: "Map-Register",
    4: "Map-Notify",
    5: "Map-Notify-Ack",
    6: "Map-Referral",
    7: "Info-Request/Reply",
    8: "Encapsulated Control Message",
}


MAX_ITR_RLOCS = 32

_NONCE_WORD = struct.Struct(">IQ")


def _check_nonce(owner: str, nonce: int) -> None:
    check_uint(owner, "nonce", nonce, 64)


def _check_trailer(owner: str, xtr_id: int | None, site_id: int | None) -> None:
    """xTR-ID (128 bits) and site-ID (64 bits) travel together, announced by the I bit."""
    if (xtr_id is None) != (site_id is None):
        raise LispEncodeError(f"{owner}: xtr_id and site_id must both be set (I bit) or both be None")
    if xtr_id is not None:
        check_uint(owner, "xtr_id", xtr_id, 128)
        check_uint(owner, "site_id", site_id, 64)


def _check_records(owner: str, obj: object, record_type: type, minimum: int = 0) -> None:
    records = as_tuple(obj, "records", obj.records)  # type: ignore[attr-defined]
    if not minimum <= len(records) <= 255:
        raise LispEncodeError(f"{owner} has {len(records)} records; Record Count allows {minimum}..255")
    for record in records:
        if not isinstance(record, record_type):
            raise LispEncodeError(f"{owner}.records must hold {record_type.__name__}, not {type(record).__name__}")


def _write_trailer(writer: Writer, xtr_id: int | None, site_id: int | None) -> None:
    if xtr_id is not None:
        writer.raw(xtr_id.to_bytes(16, "big"))
        writer.u64(site_id)  # type: ignore[arg-type]


def _read_trailer(reader: Reader) -> tuple[int, int]:
    xtr_id = int.from_bytes(reader.take(16, "xTR-ID"), "big")
    return xtr_id, reader.u64("site-ID")


class _Message:
    """Shared encode/decode plumbing of the control messages."""

    message_type: ClassVar[int]

    def encode(self) -> bytes:
        writer = Writer()
        self._encode(writer)  # type: ignore[attr-defined]
        return writer.getvalue()

    @classmethod
    def decode(cls, data: bytes):  # noqa: ANN206 - returns cls
        """Decode exactly one message of this type from ``data`` (no trailing bytes)."""
        reader = _reader_for(data, MESSAGE_NAMES[cls.message_type])
        if not reader.end:
            raise reader.error("Type", "empty message")
        kind = reader.data[0] >> 4
        if kind != cls.message_type:
            raise reader.error("Type", f"expected type {cls.message_type}, got {kind} ({MESSAGE_NAMES.get(kind, 'unknown')})")
        message = cls._decode(reader)  # type: ignore[attr-defined]
        reader.expect_end("end of message")
        return message


def _reader_for(data: bytes, context: str) -> Reader:
    if isinstance(data, bytes):
        return Reader(data, context=context)
    if isinstance(data, (bytearray, memoryview)):
        return Reader(bytes(data), context=context)
    raise TypeError(f"LISP messages decode from bytes, not {type(data).__name__}")


# --------------------------------------------------------------------------- Map-Request

#   0                   1                   2                   3
#   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |Type=1 |A|M|P|S|p|s|R|I|  Rsvd   |L|D|   IRC   | Record Count  |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                         Nonce . . .                           |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                         . . . Nonce                           |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |         Source-EID-AFI        |   Source EID Address  ...     |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |         ITR-RLOC-AFI 1        |    ITR-RLOC Address 1  ...    |   (IRC + 1 of them)
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |N|  Reserved   | EID mask-len  |        EID-Prefix-AFI         |   (Record Count
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+    EID-Records)
#  |                       EID-Prefix  ...                         |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                   Map-Reply Record  ... (M bit)               |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                xTR-ID (128 bits, I bit, RFC 9437)             |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                site-ID (64 bits, I bit, RFC 9437)             |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#
# A authoritative, M map-data present, P probe, S SMR, p PITR, s SMR-invoked,
# I xTR-ID present (pub/sub), L local xTR, D don't map-reply; per EID-Record,
# N notification requested (RFC 9437 subscription).
@dataclass(frozen=True, kw_only=True)
class MapRequest(_Message):
    message_type: ClassVar[int] = MessageType.MAP_REQUEST

    nonce: int
    records: tuple
    itr_rlocs: tuple
    source_eid: Address = NO_ADDRESS
    authoritative: bool = False
    probe: bool = False
    smr: bool = False
    pitr: bool = False
    smr_invoked: bool = False
    local_xtr: bool = False
    dont_map_reply: bool = False
    map_reply_record: MappingRecord | None = None
    xtr_id: int | None = None
    site_id: int | None = None

    def __post_init__(self) -> None:
        _check_nonce("MapRequest", self.nonce)
        _check_records("MapRequest", self, MapRequestRecord, minimum=1)
        rlocs = as_tuple(self, "itr_rlocs", self.itr_rlocs)
        if not 1 <= len(rlocs) <= MAX_ITR_RLOCS:
            raise LispEncodeError(f"MapRequest has {len(rlocs)} ITR-RLOCs; 1..{MAX_ITR_RLOCS} fit (IRC is 5 bits)")
        for rloc in rlocs:
            check_address("MapRequest", "itr_rlocs[]", rloc)
        check_address("MapRequest", "source_eid", self.source_eid)
        for name in ("authoritative", "probe", "smr", "pitr", "smr_invoked", "local_xtr", "dont_map_reply"):
            check_bool("MapRequest", name, getattr(self, name))
        if self.map_reply_record is not None and not isinstance(self.map_reply_record, MappingRecord):
            raise LispEncodeError("MapRequest.map_reply_record must be a MappingRecord or None")
        _check_trailer("MapRequest", self.xtr_id, self.site_id)

    def _encode(self, writer: Writer) -> None:
        word = (
            (1 << 28)
            | (self.authoritative << 27)
            | ((self.map_reply_record is not None) << 26)
            | (self.probe << 25)
            | (self.smr << 24)
            | (self.pitr << 23)
            | (self.smr_invoked << 22)
            | ((self.xtr_id is not None) << 20)
            | (self.local_xtr << 14)
            | (self.dont_map_reply << 13)
            | ((len(self.itr_rlocs) - 1) << 8)
            | len(self.records)
        )
        writer.raw(_NONCE_WORD.pack(word, self.nonce))
        encode_address(writer, self.source_eid)
        for rloc in self.itr_rlocs:
            encode_address(writer, rloc)
        for record in self.records:
            record._encode(writer)
        if self.map_reply_record is not None:
            self.map_reply_record._encode(writer)
        _write_trailer(writer, self.xtr_id, self.site_id)

    @classmethod
    def _decode(cls, reader: Reader) -> MapRequest:
        word, nonce = reader.unpack(_NONCE_WORD, "Map-Request header")
        count = word & 0xFF
        if count == 0:
            raise reader.error("Record Count", "a Map-Request needs at least one EID-Record", 3)
        source_eid = decode_address(reader, "Source-EID-AFI")
        itr_rlocs = tuple([decode_address(reader, "ITR-RLOC-AFI") for _ in range(((word >> 8) & 0x1F) + 1)])
        records = tuple([MapRequestRecord._decode(reader) for _ in range(count)])
        map_reply_record = MappingRecord._decode(reader) if word & (1 << 26) else None
        xtr_id = site_id = None
        if word & (1 << 20):
            xtr_id, site_id = _read_trailer(reader)
        return trusted(
            cls,
            nonce=nonce,
            records=records,
            itr_rlocs=itr_rlocs,
            source_eid=source_eid,
            authoritative=bool(word & (1 << 27)),
            probe=bool(word & (1 << 25)),
            smr=bool(word & (1 << 24)),
            pitr=bool(word & (1 << 23)),
            smr_invoked=bool(word & (1 << 22)),
            local_xtr=bool(word & (1 << 14)),
            dont_map_reply=bool(word & (1 << 13)),
            map_reply_record=map_reply_record,
            xtr_id=xtr_id,
            site_id=site_id,
        )


# --------------------------------------------------------------------------- Map-Reply

#   0                   1                   2                   3
#   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |Type=2 |P|E|S|          Reserved               | Record Count  |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                         Nonce . . .                           |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                         . . . Nonce                           |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                 Mapping records (Record Count) ...            |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#
# P probe reply, E echo-nonce capable, S security (LISP-SEC).
@dataclass(frozen=True, kw_only=True)
class MapReply(_Message):
    message_type: ClassVar[int] = MessageType.MAP_REPLY

    nonce: int
    records: tuple = ()
    probe: bool = False
    echo_nonce_capable: bool = False
    security: bool = False

    def __post_init__(self) -> None:
        _check_nonce("MapReply", self.nonce)
        _check_records("MapReply", self, MappingRecord)
        check_bool("MapReply", "probe", self.probe)
        check_bool("MapReply", "echo_nonce_capable", self.echo_nonce_capable)
        check_bool("MapReply", "security", self.security)

    def _encode(self, writer: Writer) -> None:
        word = (
            (2 << 28)
            | (self.probe << 27)
            | (self.echo_nonce_capable << 26)
            | (self.security << 25)
            | len(self.records)
        )
        writer.raw(_NONCE_WORD.pack(word, self.nonce))
        for record in self.records:
            record._encode(writer)

    @classmethod
    def _decode(cls, reader: Reader) -> MapReply:
        word, nonce = reader.unpack(_NONCE_WORD, "Map-Reply header")
        records = tuple([MappingRecord._decode(reader) for _ in range(word & 0xFF)])
        return trusted(
            cls,
            nonce=nonce,
            records=records,
            probe=bool(word & (1 << 27)),
            echo_nonce_capable=bool(word & (1 << 26)),
            security=bool(word & (1 << 25)),
        )


# --------------------------------------------------------------------------- Map-Register / Notify / Notify-Ack


@dataclass(frozen=True, kw_only=True)
class _AuthenticatedMessage(_Message):
    """Body shared by Map-Register, Map-Notify and Map-Notify-Ack (after the first word)."""

    nonce: int
    records: tuple = ()
    key_id: int = 0
    algorithm_id: int = AuthAlgorithm.NONE
    authentication_data: bytes = b""
    xtr_id: int | None = None
    site_id: int | None = None

    def _check_common(self, owner: str) -> None:
        _check_nonce(owner, self.nonce)
        _check_records(owner, self, MappingRecord)
        check_uint(owner, "key_id", self.key_id, 8)
        check_uint(owner, "algorithm_id", self.algorithm_id, 8)
        if type(self.algorithm_id) is int and self.algorithm_id in AuthAlgorithm._value2member_map_:
            object.__setattr__(self, "algorithm_id", AuthAlgorithm(self.algorithm_id))
        check_bytes(owner, "authentication_data", self.authentication_data, max_len=0xFFFF)
        _check_trailer(owner, self.xtr_id, self.site_id)

    def _first_word(self) -> int:
        raise NotImplementedError

    def _encode(self, writer: Writer) -> None:
        writer.raw(_NONCE_WORD.pack(self._first_word() | len(self.records), self.nonce))
        writer.u8(self.key_id)
        writer.u8(self.algorithm_id)
        writer.u16(len(self.authentication_data))
        writer.raw(self.authentication_data)
        for record in self.records:
            record._encode(writer)
        _write_trailer(writer, self.xtr_id, self.site_id)

    @staticmethod
    def _decode_common(reader: Reader, xtr_bit: int) -> tuple[int, dict]:
        word, nonce = reader.unpack(_NONCE_WORD, "header")
        key_id = reader.u8("Key ID")
        algorithm_id = reader.u8("Algorithm ID")
        auth_length = reader.u16("Authentication Data Length")
        authentication_data = reader.take(auth_length, "Authentication Data")
        records = tuple([MappingRecord._decode(reader) for _ in range(word & 0xFF)])
        xtr_id = site_id = None
        if word & xtr_bit:
            xtr_id, site_id = _read_trailer(reader)
        if algorithm_id in AuthAlgorithm._value2member_map_:
            algorithm_id = AuthAlgorithm(algorithm_id)
        return word, dict(
            nonce=nonce,
            records=records,
            key_id=key_id,
            algorithm_id=algorithm_id,
            authentication_data=authentication_data,
            xtr_id=xtr_id,
            site_id=site_id,
        )


#   0                   1                   2                   3
#   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |Type=3 |P|S|I|        Reserved         |E|T|a|R|M| Record Count  |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                         Nonce . . .                           |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                         . . . Nonce                           |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |    Key ID     | Algorithm ID  |  Authentication Data Length   |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  ~                     Authentication Data                       ~
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                 Mapping records (Record Count) ...            |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                xTR-ID (128 bits, I bit)                       |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                site-ID (64 bits, I bit)                       |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#
# Bits: P 4 proxy Map-Reply, S 5 LISP-SEC capable, I 6 xTR-ID present,
# E 19 EID-notify, T 20 use Record TTL for timeout, a 21 merge request,
# R 22 reserved, M 23 want Map-Notify.
#
# The 16 bits after the nonce were one 16-bit "Key ID" in RFC 6830; RFC 9301
# splits them into Key ID and Algorithm ID.  A legacy "Key ID 1" (what OOR
# sends for HMAC-SHA-1) therefore reads as key 0, algorithm 1: the same bytes.
@dataclass(frozen=True, kw_only=True)
class MapRegister(_AuthenticatedMessage):
    message_type: ClassVar[int] = MessageType.MAP_REGISTER

    proxy_map_reply: bool = False
    security_capable: bool = False
    eid_notify: bool = False
    use_ttl_for_timeout: bool = False
    merge_request: bool = False
    want_map_notify: bool = False

    def __post_init__(self) -> None:
        self._check_common("MapRegister")
        for name in (
            "proxy_map_reply",
            "security_capable",
            "eid_notify",
            "use_ttl_for_timeout",
            "merge_request",
            "want_map_notify",
        ):
            check_bool("MapRegister", name, getattr(self, name))

    def _first_word(self) -> int:
        return (
            (3 << 28)
            | (self.proxy_map_reply << 27)
            | (self.security_capable << 26)
            | ((self.xtr_id is not None) << 25)
            | (self.eid_notify << 12)
            | (self.use_ttl_for_timeout << 11)
            | (self.merge_request << 10)
            | (self.want_map_notify << 8)
        )

    @classmethod
    def _decode(cls, reader: Reader) -> MapRegister:
        word, fields = cls._decode_common(reader, 1 << 25)
        return trusted(
            cls,
            proxy_map_reply=bool(word & (1 << 27)),
            security_capable=bool(word & (1 << 26)),
            eid_notify=bool(word & (1 << 12)),
            use_ttl_for_timeout=bool(word & (1 << 11)),
            merge_request=bool(word & (1 << 10)),
            want_map_notify=bool(word & (1 << 8)),
            **fields,
        )


#   0                   1                   2                   3
#   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |Type=4/5|I|              Reserved               | Record Count  |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                         Nonce . . .                           |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                         . . . Nonce                           |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |    Key ID     | Algorithm ID  |  Authentication Data Length   |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  ~                     Authentication Data                       ~
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |                 Mapping records (Record Count) ...            |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |          xTR-ID (128 bits) and site-ID (64 bits), I bit       |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#
# (The type field is 4 bits; "Type=4/5" is just wider in the drawing.)
# RFC 9301 leaves the bits after the type reserved.  Deployed implementations
# (and Wireshark) use bit 4 as "xTR-ID/site-ID appended", the way a Map-Server
# echoes a Map-Register's trailer; we do the same, so with no xtr_id the
# message is exactly the RFC 9301 layout.
@dataclass(frozen=True, kw_only=True)
class _Notification(_AuthenticatedMessage):
    """Map-Notify and Map-Notify-Ack: the Map-Register body without its flags."""

    def __post_init__(self) -> None:
        self._check_common(type(self).__name__)

    def _first_word(self) -> int:
        return (self.message_type << 28) | ((self.xtr_id is not None) << 27)

    @classmethod
    def _decode(cls, reader: Reader):  # noqa: ANN206
        _, fields = cls._decode_common(reader, 1 << 27)
        return trusted(cls, **fields)


@dataclass(frozen=True, kw_only=True)
class MapNotify(_Notification):
    """Type 4: the Map-Server's acknowledgement of a Map-Register, or a mapping change pushed to an xTR."""

    message_type: ClassVar[int] = MessageType.MAP_NOTIFY


@dataclass(frozen=True, kw_only=True)
class MapNotifyAck(_Notification):
    """Type 5: the xTR's acknowledgement of a Map-Notify."""

    message_type: ClassVar[int] = MessageType.MAP_NOTIFY_ACK


# --------------------------------------------------------------------------- dispatch

ControlMessage = Union[MapRequest, MapReply, MapRegister, MapNotify, MapNotifyAck]

_CONTROL_CLASSES: dict[int, type] = {
    MessageType.MAP_REQUEST: MapRequest,
    MessageType.MAP_REPLY: MapReply,
    MessageType.MAP_REGISTER: MapRegister,
    MessageType.MAP_NOTIFY: MapNotify,
    MessageType.MAP_NOTIFY_ACK: MapNotifyAck,
}


def decode_typed(reader: Reader, classes: dict[int, type] = _CONTROL_CLASSES):  # noqa: ANN201
    """Decode the message at ``reader.pos`` up to ``reader.end`` as the class `classes` gives its type.

    The default table holds types 1-5: what an ECM may carry.  The table that
    adds the ECM itself is `control.decode_message`'s.
    """
    if reader.pos >= reader.end:
        raise reader.error("Type", "empty message")
    kind = reader.data[reader.pos] >> 4
    cls = classes.get(kind)
    if cls is None:
        if kind == MessageType.ENCAPSULATED_CONTROL_MESSAGE:
            reason = "an ECM inside an ECM is not allowed"
        elif kind in MESSAGE_NAMES:
            reason = f"{MESSAGE_NAMES[kind]} (type {kind}) is not supported"
        else:
            reason = f"unknown message type {kind}"
        raise reader.error("Type", reason)
    saved = reader.context
    reader.context = MESSAGE_NAMES[kind]
    message = cls._decode(reader)
    reader.expect_end("end of message")
    reader.context = saved
    return message


__all__ = [
    "ControlMessage",
    "MapNotify",
    "MapNotifyAck",
    "MapRegister",
    "MapReply",
    "MapRequest",
    "MessageType",
    "MESSAGE_NAMES",
]
