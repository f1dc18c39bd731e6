"""Bad input: every malformed packet raises LispDecodeError naming message, field and offset;
every out-of-range value we try to send raises LispEncodeError.  Never another exception."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from lisp_ryu.wire import (
    AuthAlgorithm,
    DistinguishedName,
    EidPrefix,
    EncapsulatedControlMessage,
    InstanceIdAddress,
    LispDataHeader,
    LispDecodeError,
    LispEncodeError,
    Locator,
    MapNotify,
    MappingRecord,
    MapRegister,
    MapReply,
    MapRequest,
    MapRequestRecord,
    ReplicationList,
    RleEntry,
    UnknownLcaf,
    address_from_bytes,
    address_to_bytes,
    decode_message,
    sign,
)
from lisp_ryu.wire.address import MAX_LCAF_DEPTH

from .test_wire_golden import (
    ECM,
    ECM_IPV6,
    GOLDEN,
    MAP_REGISTER,
    MAP_REPLY,
    MAP_REQUEST_PLAIN,
    MAP_REQUEST_PLAIN_OBJ,
    h,
)

GOLDEN_RAW = [pytest.param(p.values[0], id=p.id) for p in GOLDEN]


def decode_error(raw: bytes) -> LispDecodeError:
    with pytest.raises(LispDecodeError) as info:
        decode_message(raw)
    return info.value


def test_the_two_error_types_are_distinct_value_errors() -> None:
    assert issubclass(LispDecodeError, ValueError) and issubclass(LispEncodeError, ValueError)
    assert not issubclass(LispDecodeError, LispEncodeError) and not issubclass(LispEncodeError, LispDecodeError)


@pytest.mark.parametrize("raw", GOLDEN_RAW)
def test_every_truncation_of_a_golden_packet_is_a_decode_error(raw: bytes) -> None:
    for cut in range(len(raw)):
        error = decode_error(raw[:cut])
        assert 0 <= error.offset <= cut, (cut, error)
        assert error.message_type and error.field


@pytest.mark.parametrize("raw", GOLDEN_RAW)
def test_trailing_bytes_are_a_decode_error_at_the_end_of_the_message(raw: bytes) -> None:
    error = decode_error(raw + b"\x00")
    if raw[0] >> 4 == 8:  # an ECM: the inner IP length no longer matches what follows
        assert "but" in error.reason and "follow" in error.reason
    else:
        assert "trailing" in error.reason
        assert error.offset == len(raw)


def test_error_names_the_message_field_and_offset() -> None:
    raw = bytearray(MAP_REPLY)
    raw[46:48] = b"\x00\x09"  # Loc-AFI of the first record's second locator -> 9, unsupported
    error = decode_error(bytes(raw))
    assert error.message_type == "Map-Reply"
    assert error.field == "Loc-AFI"
    assert error.offset == 46
    assert "unsupported AFI 9" in str(error)


def test_mask_len_longer_than_the_address_is_rejected() -> None:
    raw = bytearray(MAP_REQUEST_PLAIN)
    raw[21] = 33  # EID mask-len of an IPv4 EID
    error = decode_error(bytes(raw))
    assert (error.message_type, error.field, error.offset) == ("Map-Request", "EID mask-len", 21)


@pytest.mark.parametrize("kind", [0, 6, 7, 9, 10, 15])
def test_unknown_or_unsupported_types_are_rejected(kind: int) -> None:
    error = decode_error(bytes([kind << 4]) + MAP_REQUEST_PLAIN[1:])
    assert error.field == "Type" and error.offset == 0


def test_typed_decode_refuses_another_type() -> None:
    with pytest.raises(LispDecodeError, match="expected type 2"):
        MapReply.decode(MAP_REQUEST_PLAIN)


def test_empty_input() -> None:
    assert decode_error(b"").field == "Type"


def test_non_bytes_input_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        decode_message("10000001")  # type: ignore[arg-type]


def test_record_count_zero_in_map_request() -> None:
    raw = bytearray(MAP_REQUEST_PLAIN)
    raw[3] = 0
    assert decode_error(bytes(raw)).field == "Record Count"


def test_counts_larger_than_the_data_are_truncation_errors() -> None:
    raw = bytearray(MAP_REQUEST_PLAIN)
    raw[3] = 2  # two records announced, one present
    assert "truncated" in decode_error(bytes(raw)).reason
    raw = bytearray(MAP_REPLY)
    raw[16] = 3  # Locator Count 3 in the first record, two present: the third eats record 2
    decode_error(bytes(raw))


def test_undefined_action_is_rejected() -> None:
    raw = bytearray(MAP_REPLY)
    raw[18] = (6 << 5) | (raw[18] & 0x1F)
    error = decode_error(bytes(raw))
    assert (error.field, error.offset) == ("ACT", 18)


def test_lcaf_length_inconsistent_with_its_body() -> None:
    iid = address_to_bytes(InstanceIdAddress(5, IPv4Address("10.0.0.0")))
    longer = iid[:6] + (len(iid) - 8 + 2).to_bytes(2, "big") + iid[8:] + b"\x00\x00"
    with pytest.raises(LispDecodeError, match="left over"):
        address_from_bytes(longer)
    shorter = iid[:6] + (len(iid) - 8 - 1).to_bytes(2, "big") + iid[8:]
    with pytest.raises(LispDecodeError):
        address_from_bytes(shorter)


def test_unknown_lcaf_types_pass_through_unchanged() -> None:
    raw = h("40 03 11 22 05 33 00 04 de ad be ef")  # Rsvd1 0x11, Flags 0x22, type 5 (Geo), Rsvd2 0x33
    value = address_from_bytes(raw)
    assert value == UnknownLcaf(5, bytes.fromhex("deadbeef"), 0x11, 0x22, 0x33)
    assert address_to_bytes(value) == raw


def test_replication_list_entries_must_be_whole() -> None:
    # RFC 8060 LCAF 13 with one IPv4 entry at level 3: Rsvd3, Rsvd4, Level, AFI 1, address.
    raw = h("40 03 00 00 0d 00 00 0a 00 00 00 03 00 01 c6 12 00 01")
    assert address_from_bytes(raw) == ReplicationList((RleEntry(IPv4Address("198.18.0.1"), 3),))
    cut = raw[:6] + (10 - 2).to_bytes(2, "big") + raw[8:-2]  # Length ends inside the entry's address
    with pytest.raises(LispDecodeError, match="RLE|AFI|truncated|left over"):
        address_from_bytes(cut)
    header_only = raw[:6] + (3).to_bytes(2, "big") + raw[8:11]  # an entry's header, cut before its level
    with pytest.raises(LispDecodeError, match="RLE Level"):
        address_from_bytes(header_only)
    with pytest.raises(LispEncodeError, match="RleEntry"):
        ReplicationList((IPv4Address("198.18.0.1"),))
    with pytest.raises(LispEncodeError, match="level"):
        RleEntry(IPv4Address("198.18.0.1"), 256)


def test_lcaf_nesting_is_bounded() -> None:
    address: object = IPv4Address("10.0.0.1")
    for _ in range(MAX_LCAF_DEPTH + 1):
        address = InstanceIdAddress(1, address)
    with pytest.raises(LispDecodeError, match="nested deeper"):
        address_from_bytes(address_to_bytes(address))


def test_distinguished_name_needs_nul_and_ascii() -> None:
    with pytest.raises(LispDecodeError, match="no terminating"):
        address_from_bytes(h("00 11") + b"abc")
    with pytest.raises(LispDecodeError, match="not ASCII"):
        address_from_bytes(h("00 11") + b"\xc3\xa9\x00")
    assert address_from_bytes(h("00 11") + b"abc\x00") == DistinguishedName("abc")


def test_ecm_inner_header_inconsistencies() -> None:
    def corrupt(offset: int, value: bytes) -> bytes:
        return ECM[:offset] + value + ECM[offset + len(value) :]

    assert decode_error(corrupt(4 + 2, b"\x00\x10")).field == "inner IPv4 total length"
    assert decode_error(corrupt(4 + 10, b"\x00\x00")).field == "inner IPv4 header checksum"
    assert decode_error(corrupt(4 + 20 + 6, b"\x12\x34")).field == "inner UDP checksum"
    assert decode_error(corrupt(4, b"\x55")).field == "inner IP version"
    ipv6 = bytearray(ECM_IPV6)
    ipv6[4 + 40 + 4 : 4 + 40 + 6] = b"\x00\x09"
    assert decode_error(bytes(ipv6)).field == "inner UDP length"


def test_ecm_inside_ecm_is_rejected() -> None:
    udp_payload_length = len(ECM) + 8
    outer = (
        h("80 00 00 00 60 00 00 00")
        + udp_payload_length.to_bytes(2, "big")
        + h("11 40")
        + bytes(15) + b"\x01" + bytes(15) + b"\x02"
        + h("10 f6 10 f6")
        + udp_payload_length.to_bytes(2, "big")
        + h("00 00")
        + ECM
    )
    assert "ECM inside an ECM" in decode_error(outer).reason


def test_data_header_errors() -> None:
    with pytest.raises(LispDecodeError, match="N and V"):
        LispDataHeader.decode(h("90 00 00 00 00 00 00 00"))
    with pytest.raises(LispDecodeError, match="GPE"):
        LispDataHeader.decode(h("14 00 00 01 00 00 00 00"))
    with pytest.raises(LispDecodeError, match="truncated"):
        LispDataHeader.decode(h("0c 00 00 01 00 00 2a"))
    with pytest.raises(LispDecodeError, match="trailing"):
        LispDataHeader.decode(h("0c 00 00 01 00 00 2a 00 00"))


# --------------------------------------------------------------------------- encode side

RLOC = IPv4Address("198.18.0.1")


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: Locator(RLOC, priority=300), id="priority-300"),
        pytest.param(lambda: Locator(RLOC, weight=-1), id="weight-negative"),
        pytest.param(lambda: Locator("198.18.0.1"), id="address-as-str"),
        pytest.param(
            lambda: MapRequest(nonce=1, records=MAP_REQUEST_PLAIN_OBJ.records, itr_rlocs=[RLOC] * 40), id="40-itr-rlocs"
        ),
        pytest.param(lambda: MapRequest(nonce=1, records=MAP_REQUEST_PLAIN_OBJ.records, itr_rlocs=[]), id="no-itr-rloc"),
        pytest.param(lambda: MapRequest(nonce=1, records=[], itr_rlocs=[RLOC]), id="no-record"),
        pytest.param(lambda: MapRequest(nonce=1 << 64, records=MAP_REQUEST_PLAIN_OBJ.records, itr_rlocs=[RLOC]), id="nonce-65-bits"),
        pytest.param(
            lambda: MapRequest(nonce=1, records=MAP_REQUEST_PLAIN_OBJ.records, itr_rlocs=[RLOC], xtr_id=1),
            id="xtr-id-without-site-id",
        ),
        pytest.param(lambda: MappingRecord(RLOC, 33), id="mask-33-on-ipv4"),
        pytest.param(lambda: MappingRecord(RLOC, 32, locators=[Locator(RLOC)] * 256), id="256-locators"),
        pytest.param(lambda: MappingRecord(RLOC, 32, action=9), id="undefined-action"),
        pytest.param(lambda: MappingRecord(RLOC, 32, map_version=4096), id="map-version-13-bits"),
        pytest.param(lambda: MappingRecord(RLOC, 32, ttl=1 << 32), id="ttl-33-bits"),
        pytest.param(lambda: MapRequestRecord(IPv6Address("::"), 129), id="mask-129-on-ipv6"),
        pytest.param(lambda: MapReply(nonce=1, records=[MapRequestRecord(RLOC, 32)]), id="wrong-record-type"),
        pytest.param(lambda: MapRegister(nonce=1, key_id=256), id="key-id-9-bits"),
        pytest.param(lambda: MapNotify(nonce=1, authentication_data="abc"), id="auth-data-str"),
        pytest.param(lambda: EidPrefix(IPv4Address("10.1.2.3"), 16), id="eid-prefix-host-bits"),
        pytest.param(lambda: EidPrefix.from_network("10.1.2.3/16"), id="eid-network-host-bits"),
        pytest.param(lambda: EidPrefix.parse("10.0.0.0"), id="eid-text-without-mask"),
        pytest.param(lambda: EidPrefix(IPv4Address("10.0.0.0"), 8, instance_id=1 << 32), id="iid-33-bits"),
        pytest.param(lambda: UnknownLcaf(2, b""), id="unknown-lcaf-with-registered-type"),
        pytest.param(lambda: DistinguishedName("caf\u00e9"), id="non-ascii-name"),
        pytest.param(lambda: InstanceIdAddress(1, RLOC, iid_mask_len=33), id="iid-mask-33"),
        pytest.param(
            lambda: EncapsulatedControlMessage(
                message=MAP_REQUEST_PLAIN_OBJ, inner_source=RLOC, inner_destination=IPv6Address("::1"), inner_source_port=1
            ),
            id="ecm-mixed-families",
        ),
        pytest.param(
            lambda: EncapsulatedControlMessage(
                message=b"raw", inner_source=RLOC, inner_destination=RLOC, inner_source_port=1
            ),
            id="ecm-bytes-payload",
        ),
        pytest.param(lambda: LispDataHeader(source_map_version=1, dest_map_version=2, next_protocol=1), id="gpe-with-v"),
        pytest.param(lambda: LispDataHeader(nonce=1, source_map_version=1, dest_map_version=2), id="n-and-v"),
        pytest.param(lambda: LispDataHeader(nonce=0x10000, next_protocol=1), id="gpe-nonce-17-bits"),
        pytest.param(lambda: LispDataHeader(instance_id=1 << 24), id="iid-25-bits"),
        pytest.param(lambda: LispDataHeader(instance_id=1, locator_status_bits=256), id="lsb-9-bits-with-iid"),
        pytest.param(lambda: sign(MapRegister(nonce=1), b"k", AuthAlgorithm.NONE), id="sign-without-algorithm"),
        pytest.param(lambda: sign(MAP_REGISTER, b"k", AuthAlgorithm.HMAC_SHA_256_128), id="sign-bytes-wrong-length"),
        pytest.param(lambda: sign(MAP_REQUEST_PLAIN_OBJ, b"k"), id="sign-map-request"),
    ],
)
def test_misuse_raises_encode_error(build) -> None:  # noqa: ANN001
    with pytest.raises(LispEncodeError):
        build()


def test_lcaf_too_long_for_its_length_field() -> None:
    huge = UnknownLcaf(200, bytes(0xFFFF))
    address_to_bytes(huge)  # exactly fits
    from lisp_ryu.wire import AfiListAddress

    with pytest.raises(LispEncodeError, match="65535"):
        address_to_bytes(AfiListAddress((huge,)))


def test_lists_are_frozen_into_tuples() -> None:
    record = MappingRecord(RLOC, 32, locators=[Locator(RLOC)])
    assert isinstance(record.locators, tuple)
    hash(record)


def test_eid_prefix_from_an_unsupported_eid_is_a_decode_error() -> None:
    from lisp_ryu.wire import SourceDestAddress

    record = MappingRecord(SourceDestAddress(RLOC, 32, RLOC, 32), 0)
    with pytest.raises(LispDecodeError) as info:
        record.eid_prefix
    assert info.value.offset is None
