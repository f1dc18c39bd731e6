"""IPv6 neighbour discovery answered in flows, as ARP is: no packet-in per Neighbor Solicitation.

A host's Neighbor Solicitation (RFC 4861 §4.3) for its IPv6 gateway, or for
any other address of the gateway's subnet (a remote EID of a stretched
subnet, or a host at the same site: all are reached through the gateway MAC
and the ROUTE table, as with proxy-ARP), is turned into the Neighbor
Advertisement (§4.4) by OpenFlow actions alone:

    CLASSIFY  host port + ICMPv6 type 135          -> ARP table, instance-ID in metadata
    ARP       iid + nd_target in a gateway subnet   -> eth_dst := eth_src, eth_src := gateway MAC,
                                                       ipv6_dst := ipv6_src, ipv6_src := nd_target,
                                                       icmpv6_type := 136, nd_reserved := R|S|O flags,
                                                       nd_options_type := 2 (target link-layer)
                                                       -> ND_REPLY
    ND_REPLY  ICMPv6 type 136                       -> nd_tll := eth_src (the gateway MAC), out in_port

Why two tables (verified on OVS 3.1 userspace, see tests/lab/test_ipv6_e2e.py):
OVS checks a set-field's prerequisites against the flow's match, not against
the packet as earlier actions left it, so a flow matching a solicitation
(type 135) may not set `nd_tll` (prerequisite: type 136) - "set_field nd_tll
lacks correct prerequisites".  Setting `nd_sll` and then the option type
does not work either: once the type is 136, OVS writes the option as a
target address, and the host's own MAC stays in it.  A second table, whose
flow matches type 136, may set `nd_tll`.  OVS fixes the ICMPv6 checksum
after every rewrite (tshark: "[correct]").  `nd_reserved` and
`nd_options_type` are Open vSwitch fields (ERICOXM class, OVS >= 2.11) that
OpenFlow 1.3 reaches through set-field; `oxm_ext` teaches Ryu their headers.

Duplicate address detection (a solicitation from the unspecified address
::) is never answered: the host would take its own address for a duplicate.
The hop limit stays 255, as the NS had it (hosts drop ND with any other).
"""

from __future__ import annotations

from lisp_ryu.flows.model import Flow, Move, Output, SetField, match
from lisp_ryu.flows.pipeline import (
    METADATA_IID_MASK,
    PRIO_ARP_PROXY,
    PRIO_ARP_SELF,
    PRIO_DEFAULT,
    PRIO_ND_SOLICIT,
    Owner,
    Table,
    cookie,
)
from lisp_ryu.plan import XtrPlan

ETH_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
ND_SOLICIT, ND_ADVERT = 135, 136
ND_OPT_TARGET_LL = 2
# Neighbor Advertisement flags, the top bits of nd_reserved (RFC 4861 §4.4)
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 1 << 31, 1 << 30, 1 << 29
PRIO_ND_GATEWAY = PRIO_ARP_PROXY + 129  # the gateway's own address, above any subnet length (0..128)

_SOLICIT = dict(eth_type=ETH_IPV6, ip_proto=IPPROTO_ICMPV6, icmpv6_type=ND_SOLICIT)


def wanted(plan: XtrPlan) -> bool:
    """Neighbour discovery flows exist only where there is an IPv6 gateway to answer for."""
    return any(gw.subnet.version == 6 for gw in plan.gateways)


def flows(plan: XtrPlan) -> list[Flow]:
    """Every flow of the IPv6 neighbour responder of `plan` (none for an IPv4-only plan)."""
    if not wanted(plan):
        return []
    infra = cookie(Owner.INFRA, 0, "nd")
    out = [Flow(Table.CLASSIFY, PRIO_ND_SOLICIT, match(in_port=hp.port, **_SOLICIT), goto=Table.ARP,
                write_metadata=(hp.iid, METADATA_IID_MASK), cookie=infra)
           for hp in plan.host_ports]
    # Duplicate address detection: never answered (nor passed on: no host here owns another's address).
    out.append(Flow(Table.ARP, PRIO_ARP_SELF, match(ipv6_src="::", **_SOLICIT), cookie=infra))
    for gw in plan.gateways:
        if gw.subnet.version != 6:
            continue
        owner = cookie(Owner.GATEWAY, gw.iid, str(gw.subnet))
        meta = (gw.iid, METADATA_IID_MASK)
        out.append(Flow(Table.ARP, PRIO_ND_GATEWAY, match(metadata=meta, ipv6_nd_target=str(gw.ip), **_SOLICIT),
                        actions=_advertise(gw.mac, NA_ROUTER | NA_SOLICITED | NA_OVERRIDE), goto=Table.ND_REPLY,
                        cookie=owner))
        out.append(Flow(Table.ARP, PRIO_ARP_PROXY + gw.subnet.prefixlen,
                        match(metadata=meta, ipv6_nd_target=_masked(gw.subnet), **_SOLICIT),
                        actions=_advertise(gw.mac, NA_SOLICITED | NA_OVERRIDE), goto=Table.ND_REPLY, cookie=owner))
    out.append(Flow(Table.ND_REPLY, PRIO_DEFAULT,
                    match(eth_type=ETH_IPV6, ip_proto=IPPROTO_ICMPV6, icmpv6_type=ND_ADVERT),
                    actions=(Move("eth_src", "ipv6_nd_tll", 48), Output("in_port")), cookie=infra))
    return out


def _advertise(mac: str, flags: int) -> tuple:
    """The solicitation turned into an advertisement from `mac`, all but its link-layer option."""
    return (
        Move("eth_src", "eth_dst", 48),
        SetField("eth_src", mac),
        Move("ipv6_src", "ipv6_dst", 128),
        Move("ipv6_nd_target", "ipv6_src", 128),
        SetField("icmpv6_type", ND_ADVERT),
        SetField("nd_reserved", flags),
        SetField("nd_options_type", ND_OPT_TARGET_LL),
    )


def _masked(network) -> str | tuple[str, str]:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return (str(network.network_address), str(network.netmask))
