"""Property tests: every message type and every address kind survives encode -> decode unchanged,
and decoding what we encoded re-encodes to the same bytes."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lisp_ryu.wire import (
    EidPrefix,
    EncapsulatedControlMessage,
    LispDataHeader,
    MapNotify,
    MapNotifyAck,
    MapRegister,
    MapReply,
    MapRequest,
    address_from_bytes,
    address_to_bytes,
    decode_message,
)

from . import strategies as ws

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_round_trip(message: object) -> None:
    raw = message.encode()  # type: ignore[attr-defined]
    decoded = decode_message(raw)
    assert decoded == message
    ws.revalidate(decoded)
    assert type(message).decode(raw) == message  # type: ignore[attr-defined]
    assert decoded.encode() == raw


@FAST
@given(ws.map_requests())
def test_map_request_round_trip(message: MapRequest) -> None:
    assert_round_trip(message)


@FAST
@given(ws.map_replies)
def test_map_reply_round_trip(message: MapReply) -> None:
    assert_round_trip(message)


@FAST
@given(ws.map_registers())
def test_map_register_round_trip(message: MapRegister) -> None:
    assert_round_trip(message)


@FAST
@given(ws.map_notifies)
def test_map_notify_round_trip(message: MapNotify) -> None:
    assert_round_trip(message)


@FAST
@given(ws.map_notify_acks)
def test_map_notify_ack_round_trip(message: MapNotifyAck) -> None:
    assert_round_trip(message)


@FAST
@given(ws.ecms())
def test_ecm_round_trip(message: EncapsulatedControlMessage) -> None:
    assert_round_trip(message)


@settings(max_examples=300, deadline=None)
@given(ws.any_address)
def test_every_address_kind_round_trips(address: object) -> None:
    raw = address_to_bytes(address)
    assert address_from_bytes(raw) == address
    ws.revalidate(address_from_bytes(raw))
    assert address_to_bytes(address_from_bytes(raw)) == raw


@settings(max_examples=300, deadline=None)
@given(ws.data_headers(), st.binary(max_size=16))
def test_data_header_round_trip(header: LispDataHeader, payload: bytes) -> None:
    raw = header.encode()
    assert len(raw) == 8
    assert LispDataHeader.decode(raw) == header
    assert LispDataHeader.split(header.encapsulate(payload)) == (header, payload)


@settings(max_examples=300, deadline=None)
@given(ws.eid_prefixes())
def test_eid_prefix_survives_the_wire_form_and_its_text(prefix: EidPrefix) -> None:
    mask_len, address = prefix.to_wire()
    assert EidPrefix.from_wire(mask_len, address) == prefix
    assert EidPrefix.from_wire(mask_len, address_from_bytes(address_to_bytes(address))) == prefix
    assert EidPrefix.parse(str(prefix)) == prefix
