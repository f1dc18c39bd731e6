"""The fixed-offset readers agree with the full decoder, or decline.

`read_plain_request` may return None for anything, but when it answers, the
full decoder must accept the same bytes and read the same nonce, instance-ID,
EID, ITR-RLOC, port and (for a subscribing request) xTR-ID, for a request a
Map-Resolver answers from the registration alone (no probe, M or D bit, one
ITR-RLOC, one host EID).  It must also answer the shapes ITRs really send,
or it is no fast path.

The shedding peeks (`read_subscriber`, `read_register_eid`) never raise,
read what the full decoder reads whenever it accepts the bytes, and miss no
subscriber whose addresses they can walk.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from lisp_ryu.wire import (
    NO_ADDRESS,
    EidPrefix,
    EncapsulatedControlMessage,
    InstanceIdAddress,
    LispDecodeError,
    MapRegister,
    MapRequest,
    MapRequestRecord,
    decode_message,
)
from lisp_ryu.wire.quick import PlainRequests, read_plain_request, read_register_eid, read_subscriber

from .strategies import ecms, ipv4_addresses, ipv6_addresses, map_registers, mapping_records, nonces, u16

FULL_LENGTH = {4: 32, 6: 128}


def agrees_with_full_decoder(payload: bytes) -> bool:
    """True when the quick reader declined; else assert it read what the full decoder reads."""
    quick = read_plain_request(payload)
    if quick is None:
        return True
    nonce, iid, eid, rloc, port, subscriber = quick
    ecm = decode_message(payload)  # raises if the quick reader accepted what the full decoder rejects
    assert isinstance(ecm, EncapsulatedControlMessage)
    request = ecm.message
    assert isinstance(request, MapRequest)
    assert not request.probe and request.map_reply_record is None
    assert not request.dont_map_reply
    assert subscriber == (request.xtr_id if request.records[0].notify_requested else None)
    assert len(request.itr_rlocs) == 1 and len(request.records) == 1
    prefix = request.records[0].eid_prefix
    assert prefix.mask_len == FULL_LENGTH[prefix.address.version]
    assert nonce == request.nonce.to_bytes(8, "big")
    assert (iid, eid) == (prefix.instance_id, prefix.address.packed)
    assert rloc == request.itr_rlocs[0].packed
    assert port == ecm.inner_source_port
    return False


@st.composite
def nearly_plain_ecms(draw: st.DrawFn) -> EncapsulatedControlMessage:
    """ECM Map-Requests that are mostly plain: each departure from the plain shape is one draw away."""
    family = draw(st.sampled_from((4, 6)))
    eid = draw(ipv4_addresses if family == 4 else ipv6_addresses)
    iid = draw(st.sampled_from((0, 0, 42, 0xFFFFFFFF)))
    mask_len = FULL_LENGTH[family] if draw(st.integers(0, 4)) else draw(st.integers(0, FULL_LENGTH[family]))
    prefix = EidPrefix.from_wire(mask_len, eid)
    prefix = EidPrefix(prefix.address, mask_len, iid)
    address = prefix.to_wire()[1]
    if draw(st.integers(0, 9)) == 0:  # an IID range, never a single prefix
        address = InstanceIdAddress(iid, prefix.address, iid_mask_len=draw(st.integers(1, 31)))
    records = [MapRequestRecord(address, mask_len, draw(st.booleans()))]
    if draw(st.integers(0, 9)) == 0:
        records.append(records[0])
    rlocs = [draw(st.one_of(ipv4_addresses, ipv6_addresses))]
    if draw(st.integers(0, 9)) == 0:
        rlocs.append(draw(ipv4_addresses))
    source_kind = draw(st.sampled_from(("none", "v4", "v6", "iid")))
    source_eid = {"none": NO_ADDRESS, "v4": draw(ipv4_addresses), "v6": draw(ipv6_addresses),
                  "iid": InstanceIdAddress(iid, draw(ipv4_addresses))}[source_kind]
    unusual = draw(st.integers(0, 12))
    xtr_id = draw(st.sampled_from((None, None, 7, (1 << 128) - 1, 1 << 100)))
    request = MapRequest(
        nonce=draw(nonces), records=tuple(records), itr_rlocs=tuple(rlocs), source_eid=source_eid,
        probe=unusual == 2, dont_map_reply=unusual == 3, smr=draw(st.booleans()), pitr=draw(st.booleans()),
        smr_invoked=draw(st.booleans()), authoritative=draw(st.booleans()), local_xtr=draw(st.booleans()),
        map_reply_record=draw(mapping_records()) if unusual == 4 else None,
        xtr_id=xtr_id, site_id=draw(nonces) if xtr_id is not None else None,
    )
    inner = ipv4_addresses if draw(st.booleans()) else ipv6_addresses
    return EncapsulatedControlMessage(
        message=request, inner_source=draw(inner), inner_destination=draw(inner),
        inner_source_port=draw(u16), zero_udp_checksum=draw(st.booleans()),
        to_map_server=unusual == 5, ipv4_options=bytes(4) if unusual == 6 and inner is ipv4_addresses else b"",
    )


@given(nearly_plain_ecms())
@settings(max_examples=600, deadline=None)
def test_quick_reader_agrees_on_nearly_plain_requests(ecm):
    agrees_with_full_decoder(ecm.encode())


@given(ecms())
@settings(max_examples=300, deadline=None)
def test_quick_reader_agrees_on_any_control_message(ecm):
    agrees_with_full_decoder(ecm.encode())


@given(nearly_plain_ecms(), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=3),
       st.integers(-3, 3))
@settings(max_examples=800, deadline=None)
def test_quick_reader_agrees_on_damaged_requests(ecm, changes, resize):
    data = bytearray(ecm.encode())
    for position, value in changes:
        data[position % len(data)] = value
    if resize < 0:
        del data[resize:]
    else:
        data += bytes(resize)
    payload = bytes(data)
    try:
        decode_message(payload)
    except LispDecodeError:
        assert read_plain_request(payload) is None
        return
    agrees_with_full_decoder(payload)


def plain(eid: str, rloc: str, *, iid: int = 0, inner: str = "192.0.2.1", source_eid=NO_ADDRESS,
          zero_udp_checksum: bool = False, subscribe: bool = False, xtr_id: int | None = None) -> bytes:
    address = ipaddress.ip_address(eid)
    record = MapRequestRecord.for_prefix(EidPrefix(address, address.max_prefixlen, iid), subscribe)
    request = MapRequest(nonce=0x0123456789ABCDEF, records=(record,), itr_rlocs=(ipaddress.ip_address(rloc),),
                         source_eid=source_eid, xtr_id=xtr_id, site_id=None if xtr_id is None else 5)
    inner_address = ipaddress.ip_address(inner)
    return EncapsulatedControlMessage(message=request, inner_source=inner_address, inner_destination=inner_address,
                                      inner_source_port=61000, zero_udp_checksum=zero_udp_checksum).encode()


def test_quick_reader_answers_what_itrs_send():
    """IPv4 and IPv6 underlays, plain and instance-ID EIDs, with and without the inner UDP checksum."""
    cases = [
        plain("10.1.2.3", "198.18.1.1"),
        plain("10.1.2.3", "198.18.1.1", zero_udp_checksum=True),
        plain("10.1.2.3", "198.18.1.1", iid=42, source_eid=InstanceIdAddress(42, ipaddress.ip_address("10.2.0.9"))),
        plain("2001:db8::7", "2001:db8:ff::1", inner="2001:db8:ff::1"),
        plain("2001:db8::7", "198.18.1.1", iid=7, source_eid=ipaddress.ip_address("2001:db8::9")),
    ]
    for payload in cases:
        assert read_plain_request(payload) is not None, payload.hex()
        assert not agrees_with_full_decoder(payload)
    nonce, iid, eid, rloc, port, subscriber = read_plain_request(cases[2])
    assert (nonce.hex(), iid, eid, rloc, port, subscriber) == ("0123456789abcdef", 42, bytes([10, 1, 2, 3]),
                                                                bytes([198, 18, 1, 1]), 61000, None)


def test_quick_reader_reads_the_xtr_id_of_a_subscribing_request():
    subscribing = plain("10.1.2.3", "198.18.1.1", subscribe=True, xtr_id=0xABCDEF << 80)
    assert read_plain_request(subscribing)[1:] == (0, bytes([10, 1, 2, 3]), bytes([198, 18, 1, 1]), 61000,
                                                   0xABCDEF << 80)
    re_resolving = plain("10.1.2.3", "198.18.1.1", xtr_id=0xABCDEF << 80)  # an xTR-ID without the N bit
    assert read_plain_request(re_resolving)[5] is None
    ignored = plain("10.1.2.3", "198.18.1.1", subscribe=True)  # the N bit without an xTR-ID is ignored
    assert read_plain_request(ignored)[5] is None
    for payload in (subscribing, re_resolving, ignored):
        assert not agrees_with_full_decoder(payload)


def test_quick_reader_declines_a_request_it_must_not_answer():
    good = plain("10.1.2.3", "198.18.1.1", zero_udp_checksum=True)  # no checksum: a flipped flag is all that is wrong
    assert read_plain_request(good) is not None
    flag_bits = {"probe (P)": (32, 0x02), "map data (M)": (32, 0x04), "xTR-ID (I)": (33, 0x10),
                 "don't reply (D)": (34, 0x20)}
    for name, (offset, bit) in flag_bits.items():
        bad = bytearray(good)
        bad[offset] |= bit
        assert read_plain_request(bytes(bad)) is None, name
    assert read_plain_request(good + b"\0") is None
    for offset in (14, 30):  # inner IPv4 header checksum, inner UDP checksum
        bad = bytearray(plain("10.1.2.3", "198.18.1.1"))
        bad[offset] ^= 0x01
        assert read_plain_request(bytes(bad)) is None, offset


def test_quick_reader_agrees_on_every_damage_of_the_commonest_shape():
    """The IPv4 host request without Source EID or xTR-ID has a one-read shortcut: every byte of it,
    changed in a few ways, is read as the full decoder reads it or declined (the general walk agrees)."""
    for zero_udp_checksum in (False, True):
        good = plain("10.1.2.3", "198.18.1.1", zero_udp_checksum=zero_udp_checksum)
        assert len(good) == 60 and read_plain_request(good) is not None
        for position in range(len(good)):
            for value in {0, 0xFF, good[position] ^ 0x01, good[position] ^ 0x80, good[position] ^ 0x10}:
                damaged = bytearray(good)
                damaged[position] = value
                payload = bytes(damaged)
                try:
                    decode_message(payload)
                except LispDecodeError:
                    assert read_plain_request(payload) is None, (position, value)
                    continue
                agrees_with_full_decoder(payload)


def _renonced(ecm: EncapsulatedControlMessage, nonce: int) -> bytes:
    from dataclasses import replace

    return replace(ecm, message=replace(ecm.message, nonce=nonce)).encode()


@given(nearly_plain_ecms(), st.lists(st.tuples(nonces, st.integers(0, 5), st.integers(0, 200), st.integers(0, 255)),
                                     min_size=1, max_size=8))
@settings(max_examples=500, deadline=None)
def test_the_remembering_reader_reads_as_the_reader_does(ecm, variants):
    """The same request again with other nonces (its checksum right, damaged, or zero), or damaged
    anywhere: what `PlainRequests` remembers never makes it read otherwise than `read_plain_request`."""
    reader = PlainRequests(capacity=4)
    sequence = [ecm.encode()]
    for nonce, how, position, value in variants:
        payload = bytearray(_renonced(ecm, nonce))
        if how == 1:  # the UDP checksum damaged (or zeroed, when the request had none)
            at = 30 if payload[4] == 0x45 else 50
            payload[at + 1] ^= 0x01
        elif how == 2:  # no UDP checksum at all
            at = 30 if payload[4] == 0x45 else 50
            payload[at:at + 2] = b"\0\0"
        elif how == 3:  # a byte anywhere
            payload[position % len(payload)] = value
        sequence.append(bytes(payload))
    for payload in sequence + sequence:
        assert reader.read(payload) == read_plain_request(payload)


def test_the_remembering_reader_remembers_a_request_under_other_nonces():
    for zero_udp_checksum in (False, True):
        for inner in ("192.0.2.1", "2001:db8:ff::1"):
            ecm = EncapsulatedControlMessage.decode(plain("10.1.2.3", "198.18.1.1", inner=inner,
                                                          zero_udp_checksum=zero_udp_checksum))
            reader = PlainRequests()
            for nonce in (1, 2, (1 << 64) - 1, 0x0123456789ABCDEF):
                payload = _renonced(ecm, nonce)
                assert reader.read(payload) == read_plain_request(payload) is not None
                assert reader.read(payload)[0] == nonce.to_bytes(8, "big")
            assert len(reader) == 1  # one request, four nonces
            wrong = bytearray(_renonced(ecm, 5))
            wrong[30 if inner == "192.0.2.1" else 50] ^= 0x40  # the checksum no longer matches the nonce
            assert reader.read(bytes(wrong)) is None and read_plain_request(bytes(wrong)) is None


# ---------------------------------------------------------------------------- the shedding peeks


def subscriber_agrees(payload: bytes) -> None:
    """`read_subscriber` never raises; when the full decoder accepts, it reads the same subscriber,
    and declines only shapes it cannot walk (addresses other than AFI 0, IPv4, IPv6 and LCAFs)."""
    peeked = read_subscriber(payload)
    try:
        message = decode_message(payload)
    except LispDecodeError:
        return
    request = message.message if isinstance(message, EncapsulatedControlMessage) else None
    if not isinstance(request, MapRequest):
        assert peeked is None
        return
    expected = request.xtr_id if request.xtr_id is not None and request.records[0].notify_requested else None
    walkable = all(a is NO_ADDRESS or isinstance(a, (ipaddress.IPv4Address, ipaddress.IPv6Address))
                   or hasattr(a, "lcaf_type")
                   for a in (request.source_eid, *request.itr_rlocs))
    if walkable:
        assert peeked == expected, (peeked, expected)
    else:
        assert peeked in (None, expected)


@given(nearly_plain_ecms())
@settings(max_examples=400, deadline=None)
def test_subscriber_peek_agrees_on_nearly_plain_requests(ecm):
    subscriber_agrees(ecm.encode())


@given(ecms())
@settings(max_examples=400, deadline=None)
def test_subscriber_peek_agrees_on_any_ecm(ecm):
    subscriber_agrees(ecm.encode())


@given(nearly_plain_ecms(), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=3),
       st.integers(-3, 3))
@settings(max_examples=400, deadline=None)
def test_subscriber_peek_survives_damage(ecm, changes, resize):
    data = bytearray(ecm.encode())
    for position, value in changes:
        data[position % len(data)] = value
    payload = bytes(data[:resize] if resize < 0 else data + bytes(resize))
    subscriber_agrees(payload)


def test_subscriber_peek_reads_every_truncation_without_raising():
    subscribing = plain("10.1.2.3", "198.18.1.1", subscribe=True, xtr_id=0x1234,
                        source_eid=InstanceIdAddress(3, ipaddress.ip_address("10.2.0.9")))
    assert read_subscriber(subscribing) == 0x1234
    assert read_subscriber(plain("10.1.2.3", "198.18.1.1", xtr_id=0x1234)) is None  # no N bit
    assert read_subscriber(plain("10.1.2.3", "198.18.1.1", subscribe=True)) is None  # no I bit
    for end in range(len(subscribing)):
        read_subscriber(subscribing[:end])
        subscriber_agrees(subscribing[:end])


def register_eid_agrees(payload: bytes) -> None:
    """`read_register_eid` never raises and, when the full decoder accepts, reads its first record."""
    peeked = read_register_eid(payload)
    try:
        message = decode_message(payload)
    except LispDecodeError:
        return
    if not isinstance(message, MapRegister) or not message.records:
        assert peeked is None
        return
    if peeked is None:
        return  # a shape it does not read (MAC, other LCAFs): the full path decides
    count, iid, address, mask_len = peeked
    first = message.records[0]
    assert count == len(message.records) and mask_len == first.eid_mask_len
    eid = first.eid
    if isinstance(eid, InstanceIdAddress):
        assert iid == eid.instance_id
        eid = eid.address
    else:
        assert iid == 0
    assert address == eid.packed


@given(map_registers())
@settings(max_examples=400, deadline=None)
def test_register_peek_agrees_with_the_full_decoder(register):
    register_eid_agrees(register.encode())


@given(map_registers(), st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), min_size=1, max_size=3),
       st.integers(-3, 3))
@settings(max_examples=400, deadline=None)
def test_register_peek_survives_damage(register, changes, resize):
    data = bytearray(register.encode())
    for position, value in changes:
        data[position % len(data)] = value
    register_eid_agrees(bytes(data[:resize] if resize < 0 else data + bytes(resize)))


def test_register_peek_reads_what_etrs_send_and_every_truncation():
    from support import packets

    for prefix, iid in (("10.1.0.0/16", 0), ("10.10.3.0/24", 42), ("2001:db8::/48", 7)):
        payload = packets.map_register([packets.record(prefix, ["198.18.1.1"], iid=iid)] * 2, "key")
        network = ipaddress.ip_network(prefix)
        assert read_register_eid(payload) == (2, iid, network.network_address.packed, network.prefixlen)
        for end in range(len(payload)):
            register_eid_agrees(payload[:end])
