"""Source-specific map-cache entries in flows: ROUTE matches the source too, longest destination
first then longest source, and other sources of such a destination reach the controller."""

import ipaddress

from lisp_ryu import plan as pt
from lisp_ryu.flows import compiler as c
from lisp_ryu.flows import readback
from lisp_ryu.flows.diff import diff
from lisp_ryu.flows.encode import flow_mod, OFPFC_ADD
from lisp_ryu.flows.pipeline import (
    PRIO_LOCAL_HOST, PRIO_PREFIX_BASE, PRIO_PREFIX_STRIDE, Owner, Table, cookie, prefix_priority,
)
from support.simulate import walk

ip = ipaddress.ip_address
net = ipaddress.ip_network
TUN = 100
A, B, C = ip("198.18.2.2"), ip("198.18.3.2"), ip("198.18.4.2")


def plan(*remotes):
    hosts = tuple(pt.LocalHost(42, ip(f"10.1.0.{n}"), f"02:00:00:01:00:{n:02x}", n) for n in (10, 11, 12))
    return pt.XtrPlan(tunnel_port=TUN, host_ports=tuple(pt.HostPort(h.port, 42) for h in hosts), hosts=hosts,
                     remotes=remotes)


def encap(prefix, rloc, source=None, *more):
    rlocs = (pt.Rloc(rloc),) + tuple(pt.Rloc(r) for r in more)
    return pt.RemoteEntry(42, net(prefix), pt.RemoteAction.ENCAP, rlocs, source=net(source) if source else None)


def where(state, source, destination):
    """Where the ITR sends a packet from a local host: an RLOC, "controller" or "drop"."""
    trace = walk(state, {"in_port": int(source.split(".")[-1]), "eth_type": 0x0800, "ipv4_src": source,
                         "ipv4_dst": destination})
    if trace.dropped:
        return "drop"
    ports = {d.port for d in trace.deliveries}
    if ports == {"controller"}:
        return "controller"
    return ",".join(sorted(d.packet["tun_ipv4_dst"] for d in trace.deliveries))


def test_priority_formula_orders_destination_length_first_then_source_length():
    for family in (32, 128):
        ordered = []
        for dst_len in range(family + 1):
            ordered.append((dst_len, None))
            ordered += [(dst_len, src_len) for src_len in range(family + 1)]
        space = "0.0.0.0/{}" if family == 32 else "::/{}"
        prios = [prefix_priority(net(space.format(d)), None if s is None else net(space.format(s)))
                 for d, s in ordered]
        assert prios == sorted(prios) and len(set(prios)) == len(prios)  # strictly increasing: no collision
        assert PRIO_PREFIX_BASE <= prios[0] and prios[-1] < PRIO_LOCAL_HOST
    assert prefix_priority(net("10.2.0.0/16")) == PRIO_PREFIX_BASE + 16 * PRIO_PREFIX_STRIDE
    assert prefix_priority(net("10.2.0.0/16"), net("10.1.0.10/32")) == PRIO_PREFIX_BASE + 16 * PRIO_PREFIX_STRIDE + 33


def test_source_specific_flow_matches_the_source_and_other_sources_reach_the_controller():
    deny_h1 = pt.RemoteEntry(42, net("10.2.0.0/16"), pt.RemoteAction.DROP, source=net("10.1.0.10/32"))
    state = c.compile_plan(plan(deny_h1, encap("10.2.0.0/16", A, "10.1.0.11/32")))
    assert where(state, "10.1.0.10", "10.2.0.5") == "drop"
    assert where(state, "10.1.0.11", "10.2.0.5") == str(A)
    assert where(state, "10.1.0.12", "10.2.0.5") == "controller"
    [flow] = [f for f in state.flows if f.cookie == cookie(Owner.MAPPING, 42, "10.1.0.10/32->10.2.0.0/16")]
    assert dict(flow.match) == {"metadata": (42, 0xFFFFFF), "eth_type": 0x0800, "ipv4_dst": ("10.2.0.0", "255.255.0.0"),
                                "ipv4_src": "10.1.0.10"}
    assert flow.table == Table.ROUTE and flow.actions == ()
    [punt] = [f for f in state.flows if f.cookie == cookie(Owner.MAPPING, 42, "10.2.0.0/16 other sources")]
    assert punt.priority == prefix_priority(net("10.2.0.0/16")) and punt.meter == c.MISS_METER_ID
    # The fast encoder knows the source field in ROUTE (no fallback to Ryu's parser).
    assert flow_mod(flow, OFPFC_ADD, 1)


def test_plain_entry_of_the_same_destination_serves_uncovered_sources_and_a_longer_plain_one_wins():
    state = c.compile_plan(plan(
        pt.RemoteEntry(42, net("10.2.0.0/16"), pt.RemoteAction.DROP, source=net("10.1.0.10/32")),
        encap("10.2.0.0/16", B),
        encap("10.2.5.0/24", C),
        encap("10.2.0.0/16", A, "10.1.0.0/24"),  # a shorter source for the same destination
    ))
    assert where(state, "10.1.0.10", "10.2.0.5") == "drop"  # longest source first
    assert where(state, "10.1.0.11", "10.2.0.5") == str(A)
    assert where(state, "10.1.0.10", "10.2.5.1") == str(C)  # longest destination before any source
    assert not [f for f in state.flows if f.meter is not None and f.table == Table.ROUTE and f.priority > 0]


def test_groups_of_source_specific_entries_are_their_own_and_adoption_skips_them():
    wide = encap("10.3.0.0/16", B, None, C)
    narrow = encap("10.3.0.0/16", B, "10.1.0.11/32", C)
    state = c.compile_plan(plan(wide, narrow))
    assert len(state.groups) == 2
    assert where(state, "10.1.0.11", "10.3.0.1") == where(state, "10.1.0.10", "10.3.0.1") == f"{B},{C}"
    assert readback.remotes_installed(state) == [wide]


def test_a_source_specific_entry_and_its_removal_change_only_its_own_flows():
    before = c.compile_plan(plan(encap("10.2.0.0/16", A)))
    after = c.compile_plan(plan(encap("10.2.0.0/16", A), encap("10.2.0.0/16", B, "10.1.0.11/32")))
    assert diff(before, after) and diff(after, after) == []
    back = c.compile_plan(plan(encap("10.2.0.0/16", A)))
    assert back == before
    added = after.flows - before.flows
    assert {f.cookie for f in added} == {cookie(Owner.MAPPING, 42, "10.1.0.11/32->10.2.0.0/16")}
    assert before.flows <= after.flows


def test_ipv6_source_specific_entry():
    hosts = (pt.LocalHost(42, ip("2001:db8:1::10"), "02:00:00:01:00:10", 1),)
    state = c.compile_plan(pt.XtrPlan(tunnel_port=TUN, host_ports=(pt.HostPort(1, 42),), hosts=hosts, remotes=(
        pt.RemoteEntry(42, net("2001:db8:2::/48"), pt.RemoteAction.ENCAP, (pt.Rloc(A),), source=net("2001:db8:1::/64")),
    )))
    trace = walk(state, {"in_port": 1, "eth_type": 0x86DD, "ipv6_src": "2001:db8:1::10", "ipv6_dst": "2001:db8:2::1"})
    assert trace.deliveries[0].packet["tun_ipv4_dst"] == str(A)
    trace = walk(state, {"in_port": 1, "eth_type": 0x86DD, "ipv6_src": "2001:db8:9::1", "ipv6_dst": "2001:db8:2::1"})
    assert trace.ports == ["controller"]
