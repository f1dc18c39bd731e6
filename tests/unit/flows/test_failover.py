"""Failover in the switch: fast-failover groups over per-peer BFD ports, walked with ports dying."""

import ipaddress

from ryu.ofproto import ofproto_v1_3_parser as parser

from lisp_ryu import plan as pt
from lisp_ryu.flows import compiler as c
from lisp_ryu.flows import readback
from lisp_ryu.flows import ofp13
from lisp_ryu.flows.diff import AddGroup, apply, diff
from lisp_ryu.flows.model import DesiredState, GroupAction, Output, SetField
from lisp_ryu.flows.pipeline import Table
from support.simulate import walk

ip = ipaddress.ip_address
net = ipaddress.ip_network
TUN = 100
LOCAL = ip("198.18.1.2")
A, B, C = ip("198.18.3.2"), ip("198.18.4.2"), ip("198.18.5.2")
PORT = {A: 1000, B: 1001, C: 1002}
GW_MAC = "02:00:00:00:01:01"
H1_MAC = "02:00:00:01:00:0a"
EVERY_PORT = frozenset({1, 2, TUN, *PORT.values()})


def ports(*remotes, local=LOCAL):
    return tuple(pt.FailoverPort(local, r, PORT[r]) for r in remotes)


def plan(rlocs, failover_ports=ports(A, B, C), **overrides):
    base = dict(
        tunnel_port=TUN,
        host_ports=(pt.HostPort(1, 42), pt.HostPort(2, 42)),
        hosts=(pt.LocalHost(42, ip("10.1.0.10"), H1_MAC, 1),),
        gateways=(pt.Gateway(42, net("10.1.0.0/24"), ip("10.1.0.1"), GW_MAC),),
        remotes=(pt.RemoteEntry(42, net("10.3.0.0/16"), pt.RemoteAction.ENCAP, rlocs),),
        tunnel_source=LOCAL,
        failover_ports=failover_ports,
    )
    base.update(overrides)
    return pt.XtrPlan(**base)


def send(state, live=None):
    packet = {"in_port": 1, "eth_type": 0x0800, "eth_src": H1_MAC, "eth_dst": GW_MAC,
              "ipv4_src": "10.1.0.10", "ipv4_dst": "10.3.0.10"}
    return walk(state, packet, live_ports=live)


def where(trace):
    """(output port, tun_dst, weight) of each delivery."""
    return sorted((d.port, d.packet.get("tun_ipv4_dst"), d.weight) for d in trace.deliveries)


PRIMARY_BACKUP = (pt.Rloc(B, 1, 100), pt.Rloc(A, 2, 100))


def test_priorities_become_a_fast_failover_group_best_first_then_the_flow_based_port():
    state = c.compile_plan(plan(PRIMARY_BACKUP))
    (ff,) = [g for g in state.groups if g.type == "ff"]
    assert [b.watch_port for b in ff.buckets] == [PORT[B], PORT[A], TUN]
    (route,) = [f for f in state.flows if f.table == Table.ROUTE and GroupAction(ff.group_id) in f.actions]
    assert route.actions == (GroupAction(ff.group_id),)


def test_the_switch_fails_over_by_port_liveness_alone():
    state = c.compile_plan(plan(PRIMARY_BACKUP))
    assert where(send(state)) == [(TUN, str(B), 0)]
    assert where(send(state, EVERY_PORT - {PORT[B]})) == [(TUN, str(A), 0)]
    # Neither BFD session up (not yet, or a peer without BFD): the flow-based port to the best RLOC,
    # with the source RLOC set, as without failover.
    (d,) = send(state, EVERY_PORT - {PORT[A], PORT[B]}).deliveries
    assert d.port == TUN and d.packet["tun_ipv4_dst"] == str(B) and d.packet["tun_ipv4_src"] == str(LOCAL)
    assert d.packet["tunnel_id"] == 42


def test_same_priority_weights_hold_among_the_live_and_a_dead_level_falls_through():
    rlocs = (pt.Rloc(A, 1, 30), pt.Rloc(B, 1, 70), pt.Rloc(C, 2, 100))
    state = c.compile_plan(plan(rlocs))
    assert where(send(state)) == [(TUN, str(A), 30), (TUN, str(B), 70)]
    assert where(send(state, EVERY_PORT - {PORT[A]})) == [(TUN, str(B), 70)]
    assert where(send(state, EVERY_PORT - {PORT[A], PORT[B]})) == [(TUN, str(C), 0)]
    # Nothing live over BFD: the weighted select group over the flow-based port, as without failover.
    assert where(send(state, frozenset({1, 2, TUN}))) == [(TUN, str(A), 30), (TUN, str(B), 70)]


def test_bfd_ports_are_watched_only_every_bucket_tunnels_through_the_flow_based_port():
    """A BFD port never carries data (its key is not an instance-ID): data to and from the peer
    stays on the flow-based port, with the instance-ID and our source RLOC set."""
    state = c.compile_plan(plan((pt.Rloc(A, 1, 30), pt.Rloc(B, 1, 70), pt.Rloc(C, 2, 100))))
    for group in state.groups:
        for bucket in group.buckets:
            outputs = [a.port for a in bucket.actions if isinstance(a, Output)]
            assert outputs in ([TUN], []), group  # [] : a jump to a select group
            if outputs:
                fields = {a.field: a.value for a in bucket.actions if isinstance(a, SetField)}
                assert fields["tunnel_id"] == 42 and fields["tun_ipv4_src"] == str(LOCAL)
    watched = {b.watch_port for g in state.groups for b in g.buckets} - {None, TUN}
    assert watched == set(PORT.values())
    for live in (EVERY_PORT, EVERY_PORT - {PORT[A]}, EVERY_PORT - {PORT[A], PORT[B]}, frozenset({1, 2, TUN})):
        assert all(d.packet["tunnel_id"] == 42 and d.packet["tun_ipv4_src"] == str(LOCAL)
                   for d in send(state, live).deliveries)


def test_a_locator_without_a_bfd_port_is_served_by_the_last_bucket_only():
    state = c.compile_plan(plan(PRIMARY_BACKUP, failover_ports=ports(A)))
    (ff,) = [g for g in state.groups if g.type == "ff"]
    assert [b.watch_port for b in ff.buckets] == [PORT[A], TUN]


def test_ports_of_another_local_rloc_are_not_used_for_sending():
    other = ports(A, B, local=ip("198.18.9.9"))
    state = c.compile_plan(plan(PRIMARY_BACKUP, failover_ports=other))
    assert not state.groups  # one locator usable, no BFD port from our source: the plain flow
    # ... but they still decapsulate (the peer may send to our other RLOC).
    trace = walk(state, {"in_port": PORT[A], "tunnel_id": 42, "eth_type": 0x0800, "ipv4_dst": "10.1.0.10"})
    assert trace.ports == [1]


def test_single_locator_and_no_ports_compile_as_before():
    one = (pt.Rloc(A, 1, 100),)
    assert c.compile_plan(plan(one)).groups == frozenset()
    old = c.compile_plan(plan((pt.Rloc(A, 1, 50), pt.Rloc(B, 1, 50)), failover_ports=()))
    (group,) = old.groups
    assert group.type == "select" and all(b.watch_port is None for b in group.buckets)


def test_decapsulation_accepts_every_bfd_port():
    state = c.compile_plan(plan(PRIMARY_BACKUP))
    for port in (TUN, *PORT.values()):
        trace = walk(state, {"in_port": port, "tunnel_id": 42, "eth_type": 0x0800, "ipv4_dst": "10.1.0.10",
                             "eth_src": "00:00:00:00:00:00", "eth_dst": "00:00:00:00:00:00"})
        (d,) = trace.deliveries
        assert d.port == 1 and d.packet["eth_dst"] == H1_MAC


def test_a_redirect_leaves_by_the_flow_based_port_number_when_it_came_in_on_a_bfd_port():
    redirect = pt.Redirect(42, ip("10.1.0.99"), C)
    state = c.compile_plan(plan(PRIMARY_BACKUP, redirects=(redirect,)))
    base = {"tunnel_id": 42, "eth_type": 0x0800, "ipv4_dst": "10.1.0.99"}
    (d,) = walk(state, {"in_port": PORT[A], **base}).deliveries
    assert d.port == TUN and d.packet["tun_ipv4_dst"] == str(C)
    (d,) = walk(state, {"in_port": TUN, **base}).deliveries
    assert d.port == TUN and d.packet["tun_ipv4_dst"] == str(C)  # IN_PORT: back out of the flow-based port
    hairpin = [f for f in state.flows if f.table == Table.DECAP and dict(f.match).get("in_port") == TUN]
    assert hairpin and hairpin[0].actions[-1].port == "in_port"


def test_group_ids_are_distinct_and_stable():
    remotes = tuple(pt.RemoteEntry(42, net(f"10.{i}.0.0/16"), pt.RemoteAction.ENCAP,
                                   (pt.Rloc(A, 1, 30), pt.Rloc(B, 1, 70), pt.Rloc(C, 2, 100)))
                    for i in range(3, 40))
    first = c.compile_plan(plan((), remotes=remotes))
    ids = [g.group_id for g in first.groups]
    assert len(ids) == len(set(ids)) == 3 * len(remotes)  # FF, the level's select, the fallback select
    assert c.compile_plan(plan((), remotes=remotes)) == first


def test_reapplying_changes_nothing_and_a_revert_restores_the_table():
    before = c.compile_plan(plan((pt.Rloc(A, 1, 100),)))
    after = c.compile_plan(plan(PRIMARY_BACKUP))
    assert diff(after, after) == []
    assert apply(apply(before, diff(before, after)), diff(after, before)) == before
    ops = diff(before, after)
    assert any(isinstance(op, AddGroup) and op.group.type == "ff" for op in ops)


def test_watched_buckets_survive_the_openflow_round_trip():
    """What a switch reports back (group-desc) reads as the compiled group: no churn after reconnect."""
    state = c.compile_plan(plan((pt.Rloc(A, 1, 30), pt.Rloc(B, 1, 70), pt.Rloc(C, 2, 100))))

    class Datapath:
        ofproto = ofp13.ofp
        ofproto_parser = parser
        xid = 0

    for group in state.groups:
        msg = ofp13.to_message(Datapath(), AddGroup(group))
        msg.serialize()
        desc = parser.OFPGroupDescStats(type_=msg.type, group_id=msg.group_id, buckets=msg.buckets)
        assert ofp13.group_from_desc(desc) == group


def test_adopting_installed_failover_entries_names_each_locator_once():
    state = c.compile_plan(plan(PRIMARY_BACKUP))
    (entry,) = readback.remotes_installed(DesiredState(state.flows, state.groups))
    assert sorted(r.address for r in entry.rlocs) == sorted([A, B])


def test_adopting_an_equal_priority_failover_entry_recompiles_to_the_same_groups():
    """After a controller restart the switch's groups are read back and adopted: nothing churns."""
    state = c.compile_plan(plan((pt.Rloc(A, 1, 50), pt.Rloc(B, 1, 50))))
    (entry,) = readback.remotes_installed(DesiredState(state.flows, state.groups))
    assert c.compile_plan(plan(entry.rlocs)) == state


def _tun_dsts(state, packet, live):
    return sorted((d.port, d.packet.get("tun_ipv4_dst")) for d in walk(state, packet, live_ports=live).deliveries
                  if d.packet.get("tun_ipv4_dst"))


def test_a_redirect_to_a_multihomed_site_fails_over_in_the_switch_both_ways_out():
    """Traffic still arriving for a departed EID goes on to its new site's first live RLOC, as BFD
    sees them, whether it came in on the flow-based port (back out of IN_PORT) or on a BFD port
    (out of the flow-based port by number); with no BFD session up, to the plan's pick."""
    redirect = pt.Redirect(42, ip("10.1.0.99"), B, (B, A))
    state = c.compile_plan(plan(PRIMARY_BACKUP, redirects=(redirect,)))
    assert sum(1 for g in state.groups if g.type == "ff") == 1 + 2  # the map-cache entry's, and the redirect's two
    for in_port in (TUN, PORT[C]):
        packet = {"in_port": in_port, "tunnel_id": 42, "eth_type": 0x0800, "ipv4_dst": "10.1.0.99"}
        assert _tun_dsts(state, packet, EVERY_PORT) == [(TUN, str(B))]
        assert _tun_dsts(state, packet, EVERY_PORT - {PORT[B]}) == [(TUN, str(A))]
        assert _tun_dsts(state, packet, {TUN, in_port}) == [(TUN, str(B))]
    # a single-RLOC site, or no BFD port towards the site: the plain redirect, no group
    for r in (pt.Redirect(42, ip("10.1.0.99"), C, (C,)), pt.Redirect(42, ip("10.1.0.99"), B, (B, A))):
        elsewhere = ports(C) if r.rloc == B else ports(A)  # BFD towards no RLOC of the site, or one alone
        bare = c.compile_plan(plan(PRIMARY_BACKUP, redirects=(r,), failover_ports=elsewhere))
        assert not [g for g in bare.groups if g.group_id >= 0x80000000], r


def test_the_old_site_and_the_destination_send_their_copies_on_to_the_live_rloc():
    """A planned move's old site (Leaving: its own hosts' traffic and what ITRs tunnel to it) and
    destination (Expected: the same, to the old site) send on through fast-failover groups too."""
    host = pt.LocalHost(42, ip("10.1.0.10"), H1_MAC, 1)
    leaving = pt.Leaving(42, host.ip, B, site=(B, A))
    state = c.compile_plan(plan(PRIMARY_BACKUP, leaving=(leaving,)))
    own = {"in_port": 2, "eth_type": 0x0800, "eth_src": "02:00:00:01:00:0b", "eth_dst": GW_MAC,
           "ipv4_src": "10.1.0.11", "ipv4_dst": "10.1.0.10"}
    tunnelled = {"in_port": TUN, "tunnel_id": 42, "eth_type": 0x0800, "ipv4_dst": "10.1.0.10"}
    for packet in (own, tunnelled):
        assert _tun_dsts(state, packet, EVERY_PORT) == [(TUN, str(B))]
        assert _tun_dsts(state, packet, EVERY_PORT - {PORT[B]}) == [(TUN, str(A))]
        assert 1 in walk(state, packet, live_ports=EVERY_PORT).ports  # and delivered here
    expected = pt.Expected(42, ip("10.1.0.77"), old_rloc=B, old_site=(B, A))
    state = c.compile_plan(plan(PRIMARY_BACKUP, expected=(expected,)))
    tunnelled = {**tunnelled, "ipv4_dst": "10.1.0.77"}
    assert _tun_dsts(state, tunnelled, EVERY_PORT) == [(TUN, str(B))]
    assert _tun_dsts(state, tunnelled, EVERY_PORT - {PORT[B]}) == [(TUN, str(A))]
    assert "controller" in walk(state, tunnelled, live_ports=EVERY_PORT).ports  # held here meanwhile
