"""Every flag lands on the bit the RFC diagram gives it (bit 0 = most significant bit of the word).

RFC 9301 §5.2 (Map-Request), §5.4 (Map-Reply), §5.6 (Map-Register), §5.8
(ECM); RFC 9437 (Map-Request I bit, EID-Record N bit); RFC 9300 §5.3 and
RFC 9305 (data header).  The hypothesis round trips prove consistency; this
pins each flag to its position.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from lisp_ryu.wire import (
    EncapsulatedControlMessage,
    LispDataHeader,
    Locator,
    MapNotify,
    MapNotifyAck,
    MappingRecord,
    MapRegister,
    MapReply,
    MapRequest,
    MapRequestRecord,
)

RLOC = IPv4Address("198.18.0.1")
RECORD = MapRequestRecord(IPv4Address("10.0.0.1"), 32)


def first_word(message: object) -> int:
    return int.from_bytes(message.encode()[:4], "big")  # type: ignore[attr-defined]


def bit(position: int) -> int:
    return 1 << (31 - position)


def request(**fields: object) -> MapRequest:
    return MapRequest(**{"nonce": 1, "records": (RECORD,), "itr_rlocs": (RLOC,), **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flags", "position"),
    [
        ({"authoritative": True}, 4),
        ({"map_reply_record": MappingRecord(RLOC, 32)}, 5),
        ({"probe": True}, 6),
        ({"smr": True}, 7),
        ({"pitr": True}, 8),
        ({"smr_invoked": True}, 9),
        ({"xtr_id": 1, "site_id": 2}, 11),
        ({"local_xtr": True}, 17),
        ({"dont_map_reply": True}, 18),
    ],
)
def test_map_request_flags(flags: dict, position: int) -> None:
    assert first_word(request(**flags)) == (1 << 28) | bit(position) | 1


def test_map_request_irc_is_count_minus_one_in_bits_19_to_23() -> None:
    word = first_word(MapRequest(nonce=1, records=(RECORD,) * 3, itr_rlocs=(RLOC,) * 32))
    assert word == (1 << 28) | (31 << 8) | 3


def test_map_request_record_n_bit_is_the_top_bit_of_its_first_byte() -> None:
    raw = request(records=(MapRequestRecord(RLOC, 32, notify_requested=True),)).encode()
    assert raw[12 + 2 + 6] == 0x80  # after the header, AFI-0 source EID, one IPv4 ITR-RLOC


@pytest.mark.parametrize(("flag", "position"), [("probe", 4), ("echo_nonce_capable", 5), ("security", 6)])
def test_map_reply_flags(flag: str, position: int) -> None:
    assert first_word(MapReply(nonce=1, **{flag: True})) == (2 << 28) | bit(position)


@pytest.mark.parametrize(
    ("flags", "position"),
    [
        ({"proxy_map_reply": True}, 4),
        ({"security_capable": True}, 5),
        ({"xtr_id": 1, "site_id": 2}, 6),
        ({"eid_notify": True}, 19),
        ({"use_ttl_for_timeout": True}, 20),
        ({"merge_request": True}, 21),
        ({"want_map_notify": True}, 23),
    ],
)
def test_map_register_flags(flags: dict, position: int) -> None:
    assert first_word(MapRegister(nonce=1, **flags)) == (3 << 28) | bit(position)


@pytest.mark.parametrize("cls", [MapNotify, MapNotifyAck])
def test_notify_xtr_id_bit(cls: type) -> None:
    assert first_word(cls(nonce=1, xtr_id=1, site_id=2)) == (cls.message_type << 28) | bit(4)
    assert first_word(cls(nonce=1)) == cls.message_type << 28


@pytest.mark.parametrize(
    ("flag", "position"), [("security", 4), ("ddt_originated", 5), ("to_etr", 6), ("to_map_server", 7)]
)
def test_ecm_flags(flag: str, position: int) -> None:
    ecm = EncapsulatedControlMessage(
        message=request(), inner_source=RLOC, inner_destination=RLOC, inner_source_port=4342, **{flag: True}
    )
    assert first_word(ecm) == (8 << 28) | bit(position)


def test_record_and_locator_bits() -> None:
    record = MappingRecord(RLOC, 32, (Locator(RLOC, local=True, probed=True, reachable=True),), action=5, authoritative=True, map_version=0xABC)
    raw = MapReply(nonce=0, records=(record,)).encode()[12:]
    assert raw[6:8] == bytes([0b1011_0000, 0])  # ACT 5 in bits 16-18, A in bit 19 of the second word
    assert raw[8:10] == b"\x0a\xbc"  # Rsvd (4 bits) and the 12-bit map-version
    assert raw[16 + 4 : 16 + 6] == b"\x00\x07"  # ... |L|p|R| in the locator's flags


@pytest.mark.parametrize(
    ("header", "flags"),
    [
        (LispDataHeader(nonce=1), 0x80),
        (LispDataHeader(locator_status_bits=1), 0x40),
        (LispDataHeader(echo_nonce_request=True), 0x20),
        (LispDataHeader(source_map_version=1, dest_map_version=1), 0x10),
        (LispDataHeader(instance_id=1), 0x08),
        (LispDataHeader(next_protocol=1), 0x04),
        (LispDataHeader(key_bits=3), 0x03),
    ],
)
def test_data_header_flags(header: LispDataHeader, flags: int) -> None:
    assert header.encode()[0] == flags
