"""The xTR's OpenFlow table pipeline, declared as data, and the cookie scheme.

    table 0 CLASSIFY  tunnel port -> DECAP; known local host (port + source) or
                      host port -> ROUTE for IP, ARP for ARP, tagging the packet
                      with the instance-ID in metadata; an unknown source inside
                      a dynamic-EID prefix of the port's instance-ID ->
                      controller (learn it, metered; the port names the tenant)
    table 1 ROUTE     ITR: local host -> deliver; map-cache prefix -> encapsulate
                      (a source-specific entry also matches the source prefix);
                      miss -> controller through the miss meter
    table 2 DECAP     ETR: tunnel_id (instance-ID) + local host -> deliver
    table 3 ARP       answer ARP in flows (gateway and proxy-ARP), no packet-in;
                      IPv6 Neighbor Solicitations likewise (flows/neighbour.py)
    table 4 ND_REPLY  the second half of a Neighbor Advertisement built from a
                      solicitation: its target link-layer address option

How the instance-ID (the tenant) travels: it enters at table 0, from the
host port (`host_ports: [{port, iid}]`, or the known host's own entry), the
PxTR's native port, or the packet's `tunnel_id` when it comes from the
tunnel; host-side classification writes it into the low 24 bits of
`metadata`, and every EID-dependent flow after that matches it (ROUTE:
`metadata`; ARP: `metadata`; DECAP: `tunnel_id`).  Encapsulation sets
`tunnel_id` from the entry's instance-ID, so it crosses to the ETR in the
LISP-GPE header.  Learning (table 0, before any metadata) is per host port
and prefix, so the port decides the tenant of an arrival; cookies carry the
instance-ID, so two tenants' flows for one prefix have distinct owners.

Priorities encode prefix length inside a band, so longest-prefix match is
the switch's own priority order.  Cookies name the owner of a flow
(kind, instance-ID, a hash of the prefix) so a diff removes exactly what is
stale and an operator can tell from `dump-flows` why a flow exists.
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass
from enum import IntEnum

from lisp_ryu.flows.model import Flow, GroupAction, Output, match


class Table(IntEnum):
    CLASSIFY = 0
    ROUTE = 1
    DECAP = 2
    ARP = 3
    ND_REPLY = 4


@dataclass(frozen=True)
class TableSpec:
    table: Table
    match_fields: frozenset[str]  # fields a flow in this table may match on
    may_goto: frozenset[Table]


PIPELINE: dict[Table, TableSpec] = {
    Table.CLASSIFY: TableSpec(
        Table.CLASSIFY,
        # ipv4_dst/ipv6_dst: a proxy-ITR admits from its native port only traffic for the EIDs it proxies
        # ip_proto/icmpv6_type: Neighbor Solicitations go to the ARP table (flows/neighbour.py)
        # tunnel_id: decapsulated traffic on a tunnel port no flow names yet (a BFD port just added)
        frozenset({"in_port", "eth_type", "ipv4_src", "ipv6_src", "arp_spa", "ipv4_dst", "ipv6_dst",
                   "ip_proto", "icmpv6_type", "tunnel_id"}),
        frozenset({Table.ROUTE, Table.DECAP, Table.ARP}),
    ),
    Table.ROUTE: TableSpec(
        Table.ROUTE,
        # ipv4_src/ipv6_src: source-specific map-cache entries (Source/Dest-key mappings)
        frozenset({"metadata", "eth_type", "ipv4_dst", "ipv6_dst", "ipv4_src", "ipv6_src"}),
        frozenset(),
    ),
    Table.DECAP: TableSpec(
        Table.DECAP,
        # tun_ipv4_src/tun_ipv6_src: a planned move's old site tells the ITRs that replicate
        # themselves by their RLOC (flows/replicate.py)
        frozenset({"in_port", "tunnel_id", "eth_type", "ipv4_dst", "ipv6_dst", "tun_ipv4_src", "tun_ipv6_src"}),
        frozenset(),
    ),
    Table.ARP: TableSpec(
        Table.ARP,
        frozenset({"metadata", "in_port", "eth_type", "arp_op", "arp_tpa", "arp_spa",
                   "ip_proto", "icmpv6_type", "ipv6_src", "ipv6_nd_target"}),
        frozenset({Table.ND_REPLY}),
    ),
    Table.ND_REPLY: TableSpec(
        Table.ND_REPLY,
        frozenset({"eth_type", "ip_proto", "icmpv6_type"}),
        frozenset(),
    ),
}


class PipelineError(ValueError):
    """The compiler produced a flow the declared pipeline does not allow (a bug)."""


def check_flow(flow: Flow) -> None:
    """Reject flows outside the declared pipeline: wrong table, field or goto."""
    spec = PIPELINE.get(flow.table)  # type: ignore[call-overload]  # IntEnum keys hash like ints
    if spec is None:
        raise PipelineError(f"flow in undeclared table {flow.table}: {flow}")
    extra = [name for name, _ in flow.match if name not in spec.match_fields]
    if extra:
        raise PipelineError(f"table {spec.table.name} does not match on {sorted(extra)}: {flow}")
    if flow.goto is not None:
        if flow.goto <= flow.table or Table(flow.goto) not in spec.may_goto:
            raise PipelineError(f"table {spec.table.name} may not go to table {flow.goto}: {flow}")
    if flow.goto is None and not flow.actions:
        return  # an explicit drop
    if not any(isinstance(a, (Output, GroupAction)) for a in flow.actions) and flow.goto is None:
        raise PipelineError(f"flow neither outputs nor continues: {flow}")


# ---- priorities -----------------------------------------------------------

PRIO_MISS = 0
PRIO_DEFAULT = 10
PRIO_CLASSIFY = 100  # a configured host port: its instance-ID
PRIO_LEARN_ANY_PORT = 50  # an unknown source in a dynamic-EID prefix on a port no config names
PRIO_TUNNEL_ANY_PORT = 60  # decapsulated traffic (tunnel_id = an instance-ID) on a port no flow names: never learned
PRIO_LEARN = 150  # an unknown source in a dynamic-EID prefix of its host port's instance-ID
PRIO_KNOWN_HOST = 200  # a known local host on its port
PRIO_ND_SOLICIT = 250  # a Neighbor Solicitation from a host port: answered in the ARP table
PRIO_TUNNEL = 300  # everything from the tunnel port is decapsulated traffic
PRIO_PREFIX_BASE = 1000  # see prefix_priority: 1000..17769
PRIO_PREFIX_STRIDE = 130  # one destination length: its plain flow + 129 source lengths (0..128)
PRIO_LOCAL_HOST = 20000  # local delivery beats any remote prefix
PRIO_PLANNED_MOVE = PRIO_LOCAL_HOST - 1  # above every map-cache prefix, below a host that is here
PRIO_ARP_PROXY = 100
PRIO_ARP_SELF = 300  # a host probing its own address (gratuitous ARP / DAD)
# The instance-ID's bits of `metadata` (24, as in the LISP-GPE header), written at table 0.
METADATA_IID_MASK = 0xFFFFFF


def known_host_classify(port: int, iid: int, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, owner: int) -> Flow:
    """Table 0: a known local host's IP packets from its port, to ROUTE with its instance-ID.

    Its table, priority and match are the host's identity there: the flow a planned move
    installs for a workload not learned yet (flows/replicate.py) and the learned host's own
    (flows/compiler.py) replace each other in place."""
    eth_type, src_field = (0x0800, "ipv4_src") if ip.version == 4 else (0x86DD, "ipv6_src")
    return Flow(Table.CLASSIFY, PRIO_KNOWN_HOST, match(in_port=port, eth_type=eth_type, **{src_field: str(ip)}),
                goto=Table.ROUTE, write_metadata=(iid, METADATA_IID_MASK), cookie=owner)


def prefix_priority(network: ipaddress.IPv4Network | ipaddress.IPv6Network,
                    source: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None) -> int:
    """Longest destination first, then longest source: one OpenFlow priority per (dst, src) length.

        plain (destination only):   BASE + STRIDE * dst_len
        source-specific:            BASE + STRIDE * dst_len + 1 + src_len

    With STRIDE = 130 every source-specific flow of a destination length sits
    above that length's plain flow and below the plain flow one bit longer
    (BASE + 130 * dst_len + 129 < BASE + 130 * (dst_len + 1)), for IPv6 too;
    the band tops out at 1000 + 130 * 128 + 129 = 17769 < PRIO_LOCAL_HOST.
    """
    base = PRIO_PREFIX_BASE + PRIO_PREFIX_STRIDE * network.prefixlen
    return base if source is None else base + 1 + source.prefixlen


# ---- cookies ------------------------------------------------------------------


class Owner(IntEnum):
    """Who a flow belongs to; the top byte of its cookie."""

    INFRA = 1  # pipeline skeleton: classification, table-miss
    LOCAL_HOST = 2  # a local EID: delivery, decap, ARP
    GATEWAY = 3  # ARP answers for a gateway / proxy-ARP for a subnet
    MAPPING = 4  # a map-cache entry: encap, negative action
    REDIRECT = 5  # a host that moved away: tunnel what still arrives for it to its new RLOC
    PLANNED_MOVE = 6  # a planned move: replicate to the old and new RLOC (ITR), hold arrivals (new site)


COOKIE_OWNER_SHIFT = 56
COOKIE_IID_SHIFT = 32
COOKIE_OWNER_MASK = 0xFF << COOKIE_OWNER_SHIFT


def cookie(owner: Owner, iid: int = 0, name: str = "") -> int:
    """owner(8) | instance-ID(24) | crc32 of the owning prefix/host (32)."""
    return (int(owner) << COOKIE_OWNER_SHIFT) | ((iid & 0xFFFFFF) << COOKIE_IID_SHIFT) | zlib.crc32(name.encode())


def cookie_owner(value: int) -> Owner | None:
    try:
        return Owner(value >> COOKIE_OWNER_SHIFT)
    except ValueError:
        return None


def is_ours(value: int) -> bool:
    """Flows whose cookie we did not write are left alone by reconciliation."""
    return cookie_owner(value) is not None
