"""IPv6 neighbour discovery answered in flows: solicitations walked through the compiled tables."""

import ipaddress

from lisp_ryu import plan as pt
from lisp_ryu.flows import compiler as c
from lisp_ryu.flows import neighbour as nd
from lisp_ryu.flows.pipeline import Table
from support.simulate import walk

ip = ipaddress.ip_address
net = ipaddress.ip_network
TUN = 100
GW4_MAC, GW6_MAC = "02:4c:67:01:00:01", "02:4c:67:00:00:01"
H1_MAC = "02:4c:68:01:00:0a"
SOLICITED_NODE = "ff02::1:ff00:1"


def plan(**overrides):
    base = dict(
        tunnel_port=TUN,
        host_ports=(pt.HostPort(1, 42), pt.HostPort(2, 42), pt.HostPort(3, 7)),
        hosts=(pt.LocalHost(42, ip("10.1.0.10"), H1_MAC, 1), pt.LocalHost(42, ip("fd00:1::10"), H1_MAC, 1)),
        gateways=(pt.Gateway(42, net("10.1.0.0/16"), ip("10.1.0.1"), GW4_MAC),
                  pt.Gateway(42, net("fd00:1::/64"), ip("fd00:1::1"), GW6_MAC)),
        remotes=(pt.RemoteEntry(42, net("fd00:2::/64"), pt.RemoteAction.ENCAP, (pt.Rloc(ip("198.18.2.2")),)),),
        dynamic_prefixes=(pt.DynamicPrefix(42, net("fd00::/16")),),
    )
    base.update(overrides)
    return pt.XtrPlan(**base)


def solicitation(target, src="fd00:1::10", in_port=1, mac=H1_MAC, dst=SOLICITED_NODE):
    """A host's Neighbor Solicitation as the switch parses it (nd_sll: its source link-layer option)."""
    return {"in_port": in_port, "eth_type": 0x86DD, "eth_src": mac, "eth_dst": "33:33:ff:00:00:01",
            "ipv6_src": src, "ipv6_dst": dst, "ip_proto": 58, "icmpv6_type": 135, "icmpv6_code": 0,
            "ipv6_nd_target": target, "ipv6_nd_sll": mac, "nd_reserved": 0, "nd_options_type": 1}


def advertisement(target, **kw):
    (delivery,) = walk(c.compile_plan(plan()), solicitation(target, **kw)).deliveries
    return delivery


def test_the_gateway_is_advertised_back_out_of_the_asking_port():
    d = advertisement("fd00:1::1")
    assert d.port == 1
    p = d.packet
    assert (p["eth_src"], p["eth_dst"]) == (GW6_MAC, H1_MAC)
    assert (p["ipv6_src"], p["ipv6_dst"]) == ("fd00:1::1", "fd00:1::10")
    assert p["icmpv6_type"] == 136 and p["ipv6_nd_target"] == "fd00:1::1"
    assert p["nd_reserved"] == nd.NA_ROUTER | nd.NA_SOLICITED | nd.NA_OVERRIDE
    assert (p["nd_options_type"], p["ipv6_nd_tll"]) == (2, GW6_MAC)


def test_any_other_address_of_the_subnet_is_advertised_with_the_gateway_mac_not_as_a_router():
    """Remote EIDs of a stretched subnet and hosts at the same site alike: routed through the gateway MAC."""
    for target in ("fd00:1::20", "fd00:1::10:11"):
        p = advertisement(target).packet
        assert (p["ipv6_src"], p["ipv6_nd_tll"], p["eth_src"]) == (target, GW6_MAC, GW6_MAC)
        assert p["nd_reserved"] == nd.NA_SOLICITED | nd.NA_OVERRIDE


def test_a_solicitation_from_a_link_local_source_is_answered_to_it():
    p = advertisement("fd00:1::1", src="fe80::4c:68ff:fe01:a").packet
    assert p["ipv6_dst"] == "fe80::4c:68ff:fe01:a"


def test_unicast_reachability_probes_are_answered_too():
    """Neighbour unreachability detection: a unicast NS to the gateway's own address and MAC."""
    assert advertisement("fd00:1::1", dst="fd00:1::1").packet["icmpv6_type"] == 136


def test_duplicate_address_detection_is_never_answered():
    state = c.compile_plan(plan())
    assert walk(state, solicitation("fd00:1::10", src="::", dst="ff02::1:ff00:10")).dropped
    assert walk(state, solicitation("fd00:1::1", src="::")).dropped


def test_addresses_outside_every_gateway_subnet_and_other_instances_get_no_answer():
    state = c.compile_plan(plan())
    assert walk(state, solicitation("fd00:9::1")).dropped
    assert walk(state, solicitation("fe80::1")).dropped
    # Port 3 is in instance 7, which has no IPv6 gateway: 42's answers are not for it.
    assert walk(state, solicitation("fd00:1::1", in_port=3)).dropped


def test_each_instance_answers_with_its_own_gateway():
    gw7 = pt.Gateway(7, net("fd00:1::/64"), ip("fd00:1::1"), "02:4c:67:00:07:01")
    state = c.compile_plan(plan(gateways=plan().gateways + (gw7,)))
    (d42,) = walk(state, solicitation("fd00:1::1", in_port=1)).deliveries
    (d7,) = walk(state, solicitation("fd00:1::1", in_port=3)).deliveries
    assert (d42.packet["ipv6_nd_tll"], d7.packet["ipv6_nd_tll"]) == (GW6_MAC, "02:4c:67:00:07:01")


def test_a_new_host_soliciting_is_answered_and_not_learned_from_the_solicitation():
    """An unknown source in a dynamic-EID prefix: its NS is answered, its first data packet is learned."""
    state = c.compile_plan(plan())
    trace = walk(state, solicitation("fd00:1::1", src="fd00:5::99", in_port=2, mac="02:4c:68:05:00:99"))
    assert trace.ports == [2] and not trace.meters
    ping = {"in_port": 2, "eth_type": 0x86DD, "eth_src": "02:4c:68:05:00:99", "ipv6_src": "fd00:5::99",
            "ipv6_dst": "fd00:2::10", "ip_proto": 58, "icmpv6_type": 128}
    assert walk(state, ping).ports == ["controller"]


def test_an_unsolicited_advertisement_of_a_moved_host_is_learned():
    """A host that moved in announces its IPv6 address with an unsolicited NA: the learning flow sees it."""
    na = {"in_port": 2, "eth_type": 0x86DD, "eth_src": "02:4c:68:05:00:99", "ipv6_src": "fd00:5::99",
          "ipv6_dst": "ff02::1", "ip_proto": 58, "icmpv6_type": 136, "ipv6_nd_target": "fd00:5::99"}
    trace = walk(c.compile_plan(plan()), na)
    assert trace.ports == ["controller"] and trace.flows[0].table == Table.CLASSIFY


def test_ping6_still_routes_past_the_responder():
    state = c.compile_plan(plan())
    ping = {"in_port": 1, "eth_type": 0x86DD, "eth_src": H1_MAC, "eth_dst": GW6_MAC, "ipv6_src": "fd00:1::10",
            "ipv6_dst": "fd00:2::10", "ip_proto": 58, "icmpv6_type": 128}
    (d,) = walk(state, ping).deliveries
    assert d.port == TUN and d.packet["tun_ipv4_dst"] == "198.18.2.2"
    reply = {"in_port": TUN, "tunnel_id": 42, "eth_type": 0x86DD, "ipv6_src": "fd00:2::10",
             "ipv6_dst": "fd00:1::10", "ip_proto": 58, "icmpv6_type": 129}
    (d,) = walk(state, reply).deliveries
    assert (d.port, d.packet["eth_src"], d.packet["eth_dst"]) == (1, GW6_MAC, H1_MAC)


def test_ipv4_only_plans_compile_exactly_as_before():
    v4 = plan(gateways=plan().gateways[:1], hosts=plan().hosts[:1], remotes=(), dynamic_prefixes=())
    flows = c.compile_plan(v4).flows
    assert not nd.wanted(v4) and not any(f.table == Table.ND_REPLY for f in flows)
    assert not any(f.match_dict().get("icmpv6_type") for f in flows)


def test_adding_and_removing_an_ipv6_gateway_changes_only_the_responder():
    from lisp_ryu.flows.diff import diff
    from lisp_ryu.flows.pipeline import Owner, cookie_owner

    with6 = c.compile_plan(plan())
    without = c.compile_plan(plan(gateways=plan().gateways[:1]))
    ops = diff(without, with6)
    added = {op.flow for op in ops}
    assert added == with6.flows - without.flows
    responder = {f for f in added if f.match_dict().get("icmpv6_type") or cookie_owner(f.cookie) is Owner.GATEWAY}
    # Besides the responder, only the IPv6 host's deliveries change: from the gateway's MAC, not the router MAC.
    others = added - responder
    assert others and all(cookie_owner(f.cookie) is Owner.LOCAL_HOST and f.match_dict().get("ipv6_dst") == "fd00:1::10"
                          for f in others), others
    assert diff(with6, with6) == []
    assert c.compile_plan(plan()) == with6  # the same plan compiles to the same flows
