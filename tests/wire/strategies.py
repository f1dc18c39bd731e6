"""Hypothesis strategies for every value of `lisp_ryu.wire`, reusable by other test suites.

Import with a relative import from a sibling package, or ``from wire.strategies
import ...`` when ``tests/`` is on sys.path (pytest's rootdir-relative mode).
"""

from __future__ import annotations

import dataclasses
import ipaddress

from hypothesis import strategies as st

from lisp_ryu.wire import (
    LCAF_REGISTRY,
    NO_ADDRESS,
    Action,
    AfiListAddress,
    DistinguishedName,
    EidPrefix,
    ElpHop,
    EncapsulatedControlMessage,
    ExplicitLocatorPath,
    InstanceIdAddress,
    LispDataHeader,
    Locator,
    MacAddress,
    MapNotify,
    MapNotifyAck,
    MappingRecord,
    MapRegister,
    MapReply,
    MapRequest,
    MapRequestRecord,
    ReplicationList,
    RleEntry,
    SourceDestAddress,
    UnknownLcaf,
)
from lisp_ryu.wire.address import max_mask_len

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
nonces = st.integers(0, (1 << 64) - 1)

ipv4_addresses = st.builds(ipaddress.IPv4Address, u32)
ipv6_addresses = st.builds(ipaddress.IPv6Address, st.integers(0, (1 << 128) - 1))
ip_addresses = st.one_of(ipv4_addresses, ipv6_addresses)
mac_addresses = st.builds(MacAddress, st.binary(min_size=6, max_size=6))
distinguished_names = st.builds(
    DistinguishedName, st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=127), max_size=24)
)
plain_addresses = st.one_of(st.just(NO_ADDRESS), ipv4_addresses, ipv6_addresses, mac_addresses, distinguished_names)

unknown_lcaf_types = st.integers(0, 255).filter(lambda t: t not in LCAF_REGISTRY)
unknown_lcafs = st.builds(
    UnknownLcaf,
    lcaf_type=unknown_lcaf_types,
    body=st.binary(max_size=24),
    rsvd1=u8,
    flags=u8,
    rsvd2=u8,
)


def mask_lens_for(address: object) -> st.SearchStrategy[int]:
    limit = max_mask_len(address)
    return st.integers(0, 255 if limit is None else limit)


def _prefix_pairs(children: st.SearchStrategy) -> st.SearchStrategy[tuple]:
    return children.flatmap(lambda a: st.tuples(st.just(a), mask_lens_for(a)))


def addresses(depth: int = 2) -> st.SearchStrategy:
    """Any address the codec supports: plain AFIs and LCAFs nested up to ``depth`` levels."""
    if depth <= 0:
        return st.one_of(plain_addresses, unknown_lcafs)
    children = addresses(depth - 1)
    instance_ids = st.builds(
        InstanceIdAddress,
        instance_id=u32,
        address=children,
        iid_mask_len=st.integers(0, 32),
    )
    afi_lists = st.builds(AfiListAddress, st.lists(children, max_size=3).map(tuple))
    hops = st.builds(ElpHop, address=children, lookup=st.booleans(), rloc_probe=st.booleans(), strict=st.booleans())
    elps = st.builds(ExplicitLocatorPath, st.lists(hops, max_size=3).map(tuple))
    rles = st.builds(ReplicationList, st.lists(st.builds(RleEntry, address=children, level=u8), max_size=3).map(tuple))
    source_dests = st.tuples(_prefix_pairs(children), _prefix_pairs(children)).map(
        lambda pair: SourceDestAddress(pair[0][0], pair[0][1], pair[1][0], pair[1][1])
    )
    return st.one_of(plain_addresses, unknown_lcafs, instance_ids, afi_lists, elps, rles, source_dests)


any_address = addresses()


@st.composite
def eid_prefixes(draw: st.DrawFn, families: tuple = ("ipv4", "ipv6", "mac")) -> EidPrefix:
    family = draw(st.sampled_from(families))
    address = draw({"ipv4": ipv4_addresses, "ipv6": ipv6_addresses, "mac": mac_addresses}[family])
    mask_len = draw(st.integers(0, max_mask_len(address)))
    instance_id = draw(st.one_of(st.just(0), st.integers(1, (1 << 24) - 1), u32))
    canonical = EidPrefix.from_wire(mask_len, address).address  # host bits cleared
    return EidPrefix(canonical, mask_len, instance_id)


locators = st.builds(
    Locator,
    address=st.one_of(ip_addresses, any_address),
    priority=u8,
    weight=u8,
    multicast_priority=u8,
    multicast_weight=u8,
    local=st.booleans(),
    probed=st.booleans(),
    reachable=st.booleans(),
)


@st.composite
def mapping_records(draw: st.DrawFn, max_locators: int = 4) -> MappingRecord:
    eid = draw(st.one_of(any_address, eid_prefixes().map(lambda p: p.to_wire()[1])))
    return MappingRecord(
        eid=eid,
        eid_mask_len=draw(mask_lens_for(eid)),
        locators=tuple(draw(st.lists(locators, max_size=max_locators))),
        ttl=draw(u32),
        action=draw(st.sampled_from(Action)),
        authoritative=draw(st.booleans()),
        map_version=draw(st.integers(0, 0xFFF)),
    )


@st.composite
def map_request_records(draw: st.DrawFn) -> MapRequestRecord:
    eid = draw(any_address)
    return MapRequestRecord(eid, draw(mask_lens_for(eid)), draw(st.booleans()))


trailers = st.one_of(st.just((None, None)), st.tuples(st.integers(0, (1 << 128) - 1), nonces))


@st.composite
def map_requests(draw: st.DrawFn) -> MapRequest:
    xtr_id, site_id = draw(trailers)
    return MapRequest(
        nonce=draw(nonces),
        records=tuple(draw(st.lists(map_request_records(), min_size=1, max_size=3))),
        itr_rlocs=tuple(draw(st.lists(st.one_of(ip_addresses, any_address), min_size=1, max_size=32))),
        source_eid=draw(any_address),
        authoritative=draw(st.booleans()),
        probe=draw(st.booleans()),
        smr=draw(st.booleans()),
        pitr=draw(st.booleans()),
        smr_invoked=draw(st.booleans()),
        local_xtr=draw(st.booleans()),
        dont_map_reply=draw(st.booleans()),
        map_reply_record=draw(st.one_of(st.none(), mapping_records())),
        xtr_id=xtr_id,
        site_id=site_id,
    )


map_replies = st.builds(
    MapReply,
    nonce=nonces,
    records=st.lists(mapping_records(), max_size=3).map(tuple),
    probe=st.booleans(),
    echo_nonce_capable=st.booleans(),
    security=st.booleans(),
)

_auth_fields = dict(
    nonce=nonces,
    records=st.lists(mapping_records(), max_size=3).map(tuple),
    key_id=u8,
    algorithm_id=u8,
    authentication_data=st.binary(max_size=40),
)


@st.composite
def map_registers(draw: st.DrawFn) -> MapRegister:
    xtr_id, site_id = draw(trailers)
    return MapRegister(
        **{name: draw(strategy) for name, strategy in _auth_fields.items()},
        xtr_id=xtr_id,
        site_id=site_id,
        proxy_map_reply=draw(st.booleans()),
        security_capable=draw(st.booleans()),
        eid_notify=draw(st.booleans()),
        use_ttl_for_timeout=draw(st.booleans()),
        merge_request=draw(st.booleans()),
        want_map_notify=draw(st.booleans()),
    )


def _notifications(cls: type) -> st.SearchStrategy:
    @st.composite
    def build(draw: st.DrawFn):  # noqa: ANN202
        xtr_id, site_id = draw(trailers)
        return cls(**{name: draw(strategy) for name, strategy in _auth_fields.items()}, xtr_id=xtr_id, site_id=site_id)

    return build()


map_notifies = _notifications(MapNotify)
map_notify_acks = _notifications(MapNotifyAck)
inner_messages = st.one_of(map_requests(), map_replies, map_registers(), map_notifies, map_notify_acks)


@st.composite
def ecms(draw: st.DrawFn) -> EncapsulatedControlMessage:
    family = draw(st.sampled_from((4, 6)))
    addr = ipv4_addresses if family == 4 else ipv6_addresses
    extra: dict = {}
    if family == 4:
        extra = dict(
            identification=draw(u16),
            dont_fragment=draw(st.booleans()),
            ipv4_options=draw(st.integers(0, 10).map(lambda n: bytes(4 * n))),
        )
    else:
        extra = dict(flow_label=draw(st.integers(0, (1 << 20) - 1)))
    return EncapsulatedControlMessage(
        message=draw(inner_messages),
        inner_source=draw(addr),
        inner_destination=draw(addr),
        inner_source_port=draw(u16),
        inner_destination_port=draw(u16),
        security=draw(st.booleans()),
        ddt_originated=draw(st.booleans()),
        to_etr=draw(st.booleans()),
        to_map_server=draw(st.booleans()),
        ttl=draw(u8),
        tos=draw(u8),
        zero_udp_checksum=draw(st.booleans()),
        **extra,
    )


control_messages = st.one_of(inner_messages, ecms())


@st.composite
def data_headers(draw: st.DrawFn) -> LispDataHeader:
    gpe = draw(st.booleans())
    instance_id = draw(st.one_of(st.none(), st.integers(0, (1 << 24) - 1)))
    versions = (None, None) if gpe else draw(st.one_of(st.just((None, None)), st.tuples(st.integers(0, 4095), st.integers(0, 4095))))
    nonce = None if versions[0] is not None else draw(st.one_of(st.none(), st.integers(0, 0xFFFF if gpe else 0xFFFFFF)))
    lsb_bits = 8 if instance_id is not None else 32
    return LispDataHeader(
        nonce=nonce,
        echo_nonce_request=draw(st.booleans()),
        locator_status_bits=draw(st.one_of(st.none(), st.integers(0, (1 << lsb_bits) - 1))),
        source_map_version=versions[0],
        dest_map_version=versions[1],
        instance_id=instance_id,
        next_protocol=draw(u8) if gpe else None,
        key_bits=draw(st.integers(0, 3)),
    )


def revalidate(value: object) -> None:
    """Re-run every ``__post_init__`` check on ``value`` and everything inside it.

    Decoders build objects without re-checking fields they bounded by
    construction; this proves the result is exactly as valid as an object
    built through the public constructors.
    """
    if isinstance(value, tuple):
        for item in value:
            revalidate(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        rebuilt = dataclasses.replace(value)  # runs __init__ and __post_init__
        assert rebuilt == value
        for field in dataclasses.fields(value):
            revalidate(getattr(value, field.name))
