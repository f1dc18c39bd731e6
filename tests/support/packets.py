"""Build the datagrams an xTR sends to a Map-Server, from the codec's classes.

Used by the tests, the benchmark's load generator and by hand against a
running server; every builder returns the exact bytes to put in a UDP
payload.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from lisp_ryu.wire import (
    AuthAlgorithm,
    EidPrefix,
    LISP_CONTROL_PORT,
    TTL_ONE_DAY,
    EncapsulatedControlMessage,
    Locator,
    MapNotifyAck,
    MappingRecord,
    MapRegister,
    MapRequest,
    MapRequestRecord,
    NO_ADDRESS,
    sign,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def eid(text: str, iid: int = 0) -> EidPrefix:
    """"10.1.0.0/16" (or a bare address: a host prefix) in instance `iid`."""
    return EidPrefix.from_network(ipaddress.ip_network(text), iid)


def record(prefix: str, rlocs: Iterable[str], iid: int = 0, ttl: int = TTL_ONE_DAY, priority: int = 1,
           weight: int = 100) -> MappingRecord:
    locators = tuple(Locator(ipaddress.ip_address(r), priority=priority, weight=weight) for r in rlocs)
    return MappingRecord.for_prefix(eid(prefix, iid), locators, ttl=ttl)


def map_register(records: Iterable[MappingRecord], key: str, *, nonce: int = 1,
                 algorithm: int = AuthAlgorithm.HMAC_SHA_1_96, key_id: int = 0, proxy: bool = False,
                 want_notify: bool = False, xtr_id: int | None = None, site_id: int | None = None,
                 use_ttl_for_timeout: bool = False) -> bytes:
    """A signed Map-Register (xtr_id also sets a site-ID of 0 unless given: the I bit needs both)."""
    message = MapRegister(
        nonce=nonce,
        records=tuple(records),
        key_id=key_id,
        proxy_map_reply=proxy,
        want_map_notify=want_notify,
        use_ttl_for_timeout=use_ttl_for_timeout,
        xtr_id=xtr_id,
        site_id=(site_id if site_id is not None else 0) if xtr_id is not None else None,
    )
    if algorithm == AuthAlgorithm.NONE:
        return message.encode()
    return sign(message, key, algorithm).encode()


def map_request_ecm(eid_text: str, itr_rlocs: Iterable[IPAddress | str], *, iid: int = 0, nonce: int = 1,
                    source_port: int = LISP_CONTROL_PORT, map_server: str = "127.0.0.1", subscribe: bool = False,
                    xtr_id: int | None = None, site_id: int | None = None,
                    dont_map_reply: bool = False, source_eid: str | None = None) -> bytes:
    """A Map-Request for `eid_text` inside an ECM, as an ITR sends it to a Map-Resolver.

    The inner IP header runs from the first ITR-RLOC to the requested EID (any
    address of the right family when that is an AFI-0 placeholder).
    """
    rlocs = tuple(NO_ADDRESS if r is None or r == "" else ipaddress.ip_address(r) for r in itr_rlocs)
    prefix = eid(eid_text, iid)
    request = MapRequest(
        nonce=nonce,
        records=(MapRequestRecord.for_prefix(prefix, notify_requested=subscribe),),
        itr_rlocs=rlocs,
        source_eid=eid(source_eid, iid).to_wire()[1] if source_eid else NO_ADDRESS,
        dont_map_reply=dont_map_reply,
        xtr_id=xtr_id,
        site_id=(site_id if site_id is not None else 0) if xtr_id is not None else None,
    )
    destination = prefix.address if isinstance(prefix.address, (ipaddress.IPv4Address, ipaddress.IPv6Address)) \
        else ipaddress.ip_address(map_server)
    source = next((r for r in rlocs if isinstance(r, type(destination))), None)
    if source is None:
        source = ipaddress.ip_address("0.0.0.0") if destination.version == 4 else ipaddress.ip_address("::")
    ecm = EncapsulatedControlMessage(message=request, inner_source=source, inner_destination=destination,
                                     inner_source_port=source_port, to_map_server=False)
    return ecm.encode()


def map_notify_ack(nonce: int, records: Iterable[MappingRecord], key: str | None,
                   algorithm: int = AuthAlgorithm.HMAC_SHA_1_96) -> bytes:
    """The Map-Notify-Ack an xTR answers a Map-Notify with (unsigned when `key` is None)."""
    ack = MapNotifyAck(nonce=nonce, records=tuple(records))
    return ack.encode() if key is None else sign(ack, key, algorithm).encode()
