"""The flow compiler: given a plan, the exact flows; and packets walked through them."""

import ipaddress

import pytest

from lisp_ryu import plan as pt
from lisp_ryu.flows import compiler as c
from lisp_ryu.flows import readback
from lisp_ryu.flows.model import GroupAction, Output, SetField
from lisp_ryu.flows.pipeline import Owner, Table, cookie_owner, PipelineError, check_flow
from lisp_ryu.flows.model import Flow, match
from support.simulate import walk

ip = ipaddress.ip_address
net = ipaddress.ip_network
TUN = 100
GW_MAC = "02:00:00:00:01:01"
H1_MAC = "02:00:00:01:00:0a"


def plan(**overrides):
    base = dict(
        tunnel_port=TUN,
        host_ports=(pt.HostPort(1, 42), pt.HostPort(2, 42)),
        hosts=(pt.LocalHost(42, ip("10.1.0.10"), H1_MAC, 1),),
        gateways=(pt.Gateway(42, net("10.1.0.0/24"), ip("10.1.0.1"), GW_MAC),),
        remotes=(pt.RemoteEntry(42, net("10.2.0.0/16"), pt.RemoteAction.ENCAP, (pt.Rloc(ip("198.18.2.2")),)),),
    )
    base.update(overrides)
    return pt.XtrPlan(**base)


def ip_packet(dst, in_port=1, **extra):
    return {"in_port": in_port, "eth_type": 0x0800, "eth_src": H1_MAC, "eth_dst": GW_MAC,
            "ipv4_src": "10.1.0.10", "ipv4_dst": dst, **extra}


def test_encap_to_single_rloc():
    state = c.compile_plan(plan())
    trace = walk(state, ip_packet("10.2.0.20"))
    (d,) = trace.deliveries
    assert d.port == TUN
    assert d.packet["tunnel_id"] == 42 and d.packet["tun_ipv4_dst"] == "198.18.2.2"
    assert cookie_owner(trace.flows[-1].cookie) is Owner.MAPPING


def test_decap_delivers_with_gateway_and_host_macs():
    state = c.compile_plan(plan())
    trace = walk(state, {"in_port": TUN, "tunnel_id": 42, "eth_type": 0x0800, "ipv4_dst": "10.1.0.10",
                         "eth_src": "00:00:00:00:00:00", "eth_dst": "00:00:00:00:00:00"})
    (d,) = trace.deliveries
    assert d.port == 1 and d.packet["eth_src"] == GW_MAC and d.packet["eth_dst"] == H1_MAC


def test_decap_checks_instance_id():
    state = c.compile_plan(plan())
    trace = walk(state, {"in_port": TUN, "tunnel_id": 7, "eth_type": 0x0800, "ipv4_dst": "10.1.0.10"})
    assert trace.dropped


def test_unknown_destination_goes_to_controller_through_the_meter():
    state = c.compile_plan(plan())
    trace = walk(state, ip_packet("10.9.9.9"))
    assert trace.ports == ["controller"]
    assert trace.meters == [c.MISS_METER_ID]
    assert {m.meter_id for m in state.meters} == {c.MISS_METER_ID}


def test_longest_prefix_wins_through_priorities():
    remotes = (
        pt.RemoteEntry(42, net("10.0.0.0/8"), pt.RemoteAction.DROP),
        pt.RemoteEntry(42, net("10.2.0.0/16"), pt.RemoteAction.ENCAP, (pt.Rloc(ip("198.18.2.2")),)),
    )
    state = c.compile_plan(plan(remotes=remotes))
    assert walk(state, ip_packet("10.2.3.4")).ports == [TUN]
    assert walk(state, ip_packet("10.3.3.4")).dropped


def test_local_host_beats_covering_remote_prefix():
    remotes = (pt.RemoteEntry(42, net("10.0.0.0/8"), pt.RemoteAction.ENCAP, (pt.Rloc(ip("198.18.2.2")),)),)
    state = c.compile_plan(plan(remotes=remotes))
    (d,) = walk(state, ip_packet("10.1.0.10", in_port=2)).deliveries
    assert d.port == 1 and d.packet["eth_dst"] == H1_MAC


def test_tenants_are_kept_apart_by_instance_id():
    p = plan(host_ports=(pt.HostPort(1, 42), pt.HostPort(3, 7)))
    state = c.compile_plan(p)
    assert walk(state, ip_packet("10.2.0.20", in_port=1)).ports == [TUN]
    # Same destination from a port of tenant 7: no mapping there -> resolve, never tenant 42's tunnel.
    assert walk(state, ip_packet("10.2.0.20", in_port=3)).ports == ["controller"]


def test_weighted_rlocs_become_a_select_group():
    rlocs = (pt.Rloc(ip("198.18.3.2"), 1, 70), pt.Rloc(ip("198.18.3.6"), 1, 30), pt.Rloc(ip("198.18.9.9"), 2, 100))
    state = c.compile_plan(plan(remotes=(pt.RemoteEntry(42, net("10.3.0.0/16"), pt.RemoteAction.ENCAP, rlocs),)))
    (group,) = state.groups
    assert group.type == "select"
    assert sorted(b.weight for b in group.buckets) == [30, 70]
    trace = walk(state, ip_packet("10.3.0.5"))
    assert {(d.packet["tun_ipv4_dst"], d.weight) for d in trace.deliveries} == {("198.18.3.2", 70), ("198.18.3.6", 30)}
    (flow,) = [f for f in state.flows if any(isinstance(a, GroupAction) for a in f.actions)]
    assert flow.actions == (GroupAction(group.group_id),)


def test_usable_rlocs_rules():
    a, b, d = ip("198.18.0.1"), ip("198.18.0.2"), ip("198.18.0.3")
    # weight 0 drains when another RLOC of the same priority has weight
    assert c.usable_rlocs((pt.Rloc(a, 1, 0), pt.Rloc(b, 1, 100))) == (pt.Rloc(b, 1, 100),)
    # all zero: equal split
    assert len(c.usable_rlocs((pt.Rloc(a, 1, 0), pt.Rloc(b, 1, 0)))) == 2
    # priority 255 is never used; lower priority value is preferred
    assert c.usable_rlocs((pt.Rloc(a, 255, 100), pt.Rloc(d, 3, 100))) == (pt.Rloc(d, 3, 100),)
    assert c.usable_rlocs((pt.Rloc(a, 255, 100),)) == ()


def test_native_forward_uses_petr_then_native_port_then_drops():
    neg = (pt.RemoteEntry(42, net("172.16.0.0/12"), pt.RemoteAction.NATIVE_FORWARD),)
    with_petr = c.compile_plan(plan(remotes=neg, petr=ip("198.18.9.1")))
    (d,) = walk(with_petr, ip_packet("172.16.1.1")).deliveries
    assert d.port == TUN and d.packet["tun_ipv4_dst"] == "198.18.9.1"
    native = c.compile_plan(plan(remotes=neg, native_port=9))
    assert walk(native, ip_packet("172.16.1.1")).ports == [9]
    assert walk(c.compile_plan(plan(remotes=neg)), ip_packet("172.16.1.1")).dropped


def test_arp_for_gateway_and_stretched_subnet_answered_in_flows():
    state = c.compile_plan(plan())
    req = {"in_port": 1, "eth_type": 0x0806, "arp_op": 1, "eth_src": H1_MAC, "eth_dst": "ff:ff:ff:ff:ff:ff",
           "arp_sha": H1_MAC, "arp_spa": "10.1.0.10", "arp_tha": "00:00:00:00:00:00"}
    for target in ("10.1.0.1", "10.1.0.77"):
        (d,) = walk(state, {**req, "arp_tpa": target}).deliveries
        assert d.port == 1
        p = d.packet
        assert (p["arp_op"], p["eth_dst"], p["eth_src"], p["arp_sha"]) == (2, H1_MAC, GW_MAC, GW_MAC)
        assert (p["arp_spa"], p["arp_tpa"], p["arp_tha"]) == (target, "10.1.0.10", H1_MAC)
    # A host asking for its own address is not answered.
    assert walk(state, {**req, "arp_tpa": "10.1.0.10"}).dropped


def test_compilation_is_deterministic_and_order_independent():
    remotes = tuple(pt.RemoteEntry(42, net(f"10.{i}.0.0/16"), pt.RemoteAction.ENCAP,
                                  (pt.Rloc(ip("198.18.0.1")), pt.Rloc(ip("198.18.0.2")))) for i in range(2, 40))
    a = c.compile_plan(plan(remotes=remotes))
    b = c.compile_plan(plan(remotes=tuple(reversed(remotes))))
    assert a == b
    assert len({g.group_id for g in a.groups}) == len(remotes)


def test_pipeline_rejects_undeclared_fields_and_backward_goto():
    with pytest.raises(PipelineError):
        check_flow(Flow(Table.ROUTE, 1, match(tcp_dst=80), actions=(Output(1),)))
    with pytest.raises(PipelineError):
        check_flow(Flow(Table.ARP, 1, match(eth_type=0x806), goto=Table.ROUTE))
    with pytest.raises(PipelineError):
        check_flow(Flow(Table.ROUTE, 1, match(eth_type=0x800), actions=(SetField("eth_dst", "x"),)))


def test_duplicate_flow_identity_is_a_compile_error():
    hosts = (pt.LocalHost(42, ip("10.1.0.10"), H1_MAC, 1), pt.LocalHost(42, ip("10.1.0.10"), "02:00:00:00:00:99", 2))
    with pytest.raises(c.CompileError):
        c.compile_plan(plan(hosts=hosts))


def test_installed_mapping_flows_read_back_as_the_entries_that_made_them():
    remotes = (
        pt.RemoteEntry(42, net("10.2.0.0/16"), pt.RemoteAction.ENCAP, (pt.Rloc(ip("198.18.2.2")),)),
        pt.RemoteEntry(42, net("10.3.0.0/16"), pt.RemoteAction.ENCAP,
                      (pt.Rloc(ip("198.18.3.2"), 1, 70), pt.Rloc(ip("198.18.3.6"), 1, 30))),
        pt.RemoteEntry(7, net("10.9.0.0/16"), pt.RemoteAction.DROP),
    )
    p = plan(remotes=remotes, tunnel_source=ip("198.18.1.2"))
    state = c.compile_plan(p)
    back = readback.remotes_installed(state)
    assert sorted(back, key=lambda e: str(e.prefix)) == sorted(remotes, key=lambda e: str(e.prefix))
    # Adopting them reproduces exactly the installed flows: nothing to change on the switch.
    assert c.compile_plan(plan(remotes=tuple(back), tunnel_source=ip("198.18.1.2"))) == state


def test_tunnel_source_is_set_when_asked():
    state = c.compile_plan(plan(tunnel_source=ip("198.18.1.2")))
    (d,) = walk(state, ip_packet("10.2.0.20")).deliveries
    assert d.packet["tun_ipv4_src"] == "198.18.1.2"


def test_multicast_and_broadcast_are_dropped_not_sent_to_the_controller():
    state = c.compile_plan(plan())
    solicitation = {"in_port": 1, "eth_type": 0x86DD, "ipv6_src": "fe80::1", "ipv6_dst": "ff02::2"}
    assert walk(state, solicitation).dropped
    assert walk(state, ip_packet("224.0.0.251")).dropped
    assert walk(state, ip_packet("255.255.255.255")).dropped
    assert walk(state, ip_packet("10.9.9.9")).ports == ["controller"]
