"""The RFC 9437 N bit of a Map-Request EID-Record, read and written from raw bytes.

RFC 9437 §4 puts the Notification-Requested bit in the top bit of the
Reserved byte that starts each EID-Record of a Map-Request.  The codec's
`MapRequestRecord` writes that byte as zero and ignores it on receipt, so
until it carries the bit these two helpers work on the bytes: the record
offset is the fixed header plus the encoded length of the source EID and of
every ITR-RLOC (addresses re-encode to the length they were decoded from).
"""

from __future__ import annotations

import struct

from lisp_ryu.wire import EncapsulatedControlMessage, MapRequest, address_to_bytes
from lisp_ryu.wire.ecm import internet_checksum

NOTIFY_BIT = 0x80
_MAP_REQUEST_HEADER = 12  # type/flags/counts (4) + nonce (8)


def _first_record_offset(request: MapRequest) -> int:
    return (
        _MAP_REQUEST_HEADER
        + len(address_to_bytes(request.source_eid))
        + sum(len(address_to_bytes(rloc)) for rloc in request.itr_rlocs)
    )


def ecm_inner_offset(ecm_bytes: bytes) -> int:
    """Where the control message starts inside an encoded ECM (after LISP, IP and UDP headers)."""
    version = ecm_bytes[4] >> 4
    ip_header = (ecm_bytes[4] & 0x0F) * 4 if version == 4 else 40
    return 4 + ip_header + 8


def notification_requested(message_bytes: bytes, request: MapRequest, offset: int = 0) -> bool:
    """The N bit of the first EID-Record of the Map-Request encoded at `message_bytes[offset:]`."""
    position = offset + _first_record_offset(request)
    return position < len(message_bytes) and bool(message_bytes[position] & NOTIFY_BIT)


def encode_subscribe_request(request: MapRequest) -> bytes:
    """`request` encoded with the N bit set on every EID-Record (to subscribe)."""
    data = bytearray(request.encode())
    position = _first_record_offset(request)
    for record in request.records:
        data[position] |= NOTIFY_BIT
        position += 2 + len(address_to_bytes(record.eid))
    return bytes(data)


def encode_subscribe_ecm(ecm: EncapsulatedControlMessage) -> bytes:
    """An ECM around a subscribing Map-Request: N bit set, inner UDP checksum recomputed."""
    if not isinstance(ecm.message, MapRequest):
        raise TypeError("only a Map-Request can subscribe")
    data = bytearray(ecm.encode())
    inner = ecm_inner_offset(bytes(data))
    patched = encode_subscribe_request(ecm.message)
    data[inner:inner + len(patched)] = patched
    if not ecm.zero_udp_checksum:
        udp = inner - 8
        data[udp + 6:udp + 8] = b"\x00\x00"
        source, destination = ecm.inner_source.packed, ecm.inner_destination.packed
        length = len(data) - udp
        if len(source) == 4:
            pseudo = source + destination + struct.pack(">BBH", 0, 17, length)
        else:
            pseudo = source + destination + struct.pack(">IxxxB", length, 17)
        checksum = internet_checksum(pseudo + bytes(data[udp:])) or 0xFFFF
        data[udp + 6:udp + 8] = checksum.to_bytes(2, "big")
    return bytes(data)
