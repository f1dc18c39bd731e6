"""Planned moves in the flows (lisp_ryu/flows/replicate.py), walked through the pipeline model."""

from __future__ import annotations

import ipaddress

from lisp_ryu.flows.compiler import compile_plan
from lisp_ryu.flows.diff import diff
from lisp_ryu.flows.pipeline import Owner, cookie_owner
from lisp_ryu.plan import (DynamicPrefix, Expected, HostPort, LocalHost, RemoteAction, RemoteEntry, Replicate, Rloc,
                           XtrPlan)
from support.simulate import walk

ip = ipaddress.ip_address
net = ipaddress.ip_network
OLD, NEW, NEW2 = ip("198.18.1.2"), ip("198.18.2.2"), ip("198.18.4.2")
EID = ip("10.1.0.10")
BASE = XtrPlan(tunnel_port=100, host_ports=(HostPort(1, 42),), tunnel_source=ip("198.18.3.2"),
               remotes=(RemoteEntry(42, net("10.1.0.0/16"), RemoteAction.ENCAP, (Rloc(OLD),)),))
FROM_HOST = {"in_port": 1, "eth_type": 0x0800, "ipv4_src": "10.3.0.10", "ipv4_dst": str(EID)}


def test_replicate_sends_a_copy_to_each_rloc_through_a_group_all():
    state = compile_plan(XtrPlan(**{**BASE.__dict__, "replicates": (Replicate(42, EID, (OLD, NEW)),)}))
    trace = walk(state, FROM_HOST)
    assert sorted((d.port, d.packet["tun_ipv4_dst"], d.packet["tunnel_id"]) for d in trace.deliveries) == \
        [(100, str(OLD), 42), (100, str(NEW), 42)]
    assert [g.type for g in state.groups] == ["all"]
    # other hosts of the prefix and other tenants are untouched
    assert walk(state, {**FROM_HOST, "ipv4_dst": "10.1.0.11"}).ports == [100]
    other = walk(state, {**FROM_HOST, "in_port": 7})
    assert not any(d.packet.get("tun_ipv4_dst") == str(NEW) for d in other.deliveries)


def test_a_local_host_beats_a_replication_and_the_end_removes_everything():
    plan = XtrPlan(**{**BASE.__dict__, "replicates": (Replicate(42, EID, (OLD, NEW)),)})
    here = XtrPlan(**{**plan.__dict__, "hosts": (LocalHost(42, EID, "02:00:00:01:00:0a", 5),)})
    assert walk(compile_plan(here), FROM_HOST).ports == [5]
    during, after = compile_plan(plan), compile_plan(BASE)
    ops = diff(during, after)
    assert ops and diff(after, during)
    assert not [f for f in after.flows if cookie_owner(f.cookie) is Owner.PLANNED_MOVE] and not after.groups


def test_expected_workload_is_held_until_it_is_here():
    plan = XtrPlan(**{**BASE.__dict__, "expected": (Expected(42, EID),)})
    decap = {"in_port": 100, "tunnel_id": 42, "eth_type": 0x0800, "ipv4_dst": str(EID)}
    trace = walk(compile_plan(plan), decap)
    assert trace.ports == ["controller"] and not trace.meters
    arrived = XtrPlan(**{**plan.__dict__, "hosts": (LocalHost(42, EID, "02:00:00:01:00:0a", 5),)})
    state = compile_plan(arrived)
    assert walk(state, decap).ports == [5]
    assert not [f for f in state.flows if cookie_owner(f.cookie) is Owner.PLANNED_MOVE]
    assert walk(compile_plan(plan), {**decap, "tunnel_id": 7}).ports != ["controller"]  # another tenant


def test_group_ids_are_stable_and_distinct():
    from lisp_ryu.flows.replicate import move_group_ids

    reps = tuple(Replicate(42, ip(f"10.1.{i // 256}.{i % 256}"), (OLD, NEW)) for i in range(300))
    ids = move_group_ids(reps, (), (), (), ())
    assert len({g for (g,) in ids.values()}) == 300 and all(0x80000000 <= g < 0xC0000000 for (g,) in ids.values())
    assert move_group_ids(tuple(reversed(reps)), (), (), (), ()) == ids
    # Both sites multihomed with BFD ports: two fast-failover groups more per replication, two
    # per redirect (out of the tunnel port, back out of IN_PORT), all distinct and stable.
    from lisp_ryu.plan import Redirect

    multi = tuple(Replicate(r.iid, r.ip, r.rlocs, ((OLD, NEW2), (NEW, NEW2))) for r in reps)
    redirects = tuple(Redirect(42, ip(f"10.2.{i // 256}.{i % 256}"), NEW, (NEW, NEW2)) for i in range(300))
    ports = ((OLD, 201), (NEW, 202), (NEW2, 203))
    both = move_group_ids(multi, (), (), redirects, ports)
    every = [g for gids in both.values() for g in gids]
    assert len(every) == len(set(every)) == 300 * 3 + 300 * 2 and all(0x80000000 <= g < 0xC0000000 for g in every)
    assert move_group_ids(tuple(reversed(multi)), (), (), tuple(reversed(redirects)), ports) == both


# A multihomed destination: NEW (best) and NEW2; BFD ports towards both, and towards OLD.
BFD = {OLD: 201, NEW: 202, NEW2: 203}


def _multihomed(**move) -> XtrPlan:
    from lisp_ryu.plan import FailoverPort

    ports = tuple(FailoverPort(ip("198.18.3.2"), remote, ofport) for remote, ofport in BFD.items())
    replicate = Replicate(42, EID, (OLD, NEW), ((OLD,), (NEW, NEW2)), **move)
    return XtrPlan(**{**BASE.__dict__, "replicates": (replicate,), "failover_ports": ports})


def test_a_copy_to_a_multihomed_site_fails_over_in_the_switch():
    """The copy for the new site goes through a fast-failover group over its RLOCs that BFD
    watches, best first: with the best one's port dead, the switch sends it to the next; with
    both dead, to the controller's pick through the flow-based port (as a map-cache entry)."""
    state = compile_plan(_multihomed())
    assert sorted(g.type for g in state.groups) == ["all", "ff"]

    def copies(live):
        return sorted(d.packet["tun_ipv4_dst"] for d in walk(state, FROM_HOST, live_ports=live).deliveries)

    tunnel = BASE.tunnel_port
    assert copies({tunnel, *BFD.values()}) == sorted([str(OLD), str(NEW)])
    assert copies({tunnel, BFD[OLD], BFD[NEW2]}) == sorted([str(OLD), str(NEW2)])
    assert copies({tunnel}) == sorted([str(OLD), str(NEW)])  # no BFD says anything: the plan's pick
    # the old site has one RLOC: its copy is a plain bucket, whatever BFD says of it
    assert copies({tunnel, BFD[NEW]}) == sorted([str(OLD), str(NEW)])


def test_without_bfd_ports_or_a_second_rloc_a_copy_is_a_plain_bucket():
    from lisp_ryu.plan import FailoverPort

    no_ports = XtrPlan(**{**_multihomed().__dict__, "failover_ports": ()})
    assert [g.type for g in compile_plan(no_ports).groups] == ["all"]
    single = XtrPlan(**{**_multihomed().__dict__, "replicates": (Replicate(42, EID, (OLD, NEW), ((OLD,), (NEW,))),)})
    assert [g.type for g in compile_plan(single).groups] == ["all"]
    # a port towards another RLOC than the site's: nothing to fail over to in the switch
    other = XtrPlan(**{**no_ports.__dict__, "failover_ports": (FailoverPort(ip("198.18.3.2"), ip("198.18.9.2"), 209),)})
    assert [g.type for g in compile_plan(other).groups] == ["all"]


def test_the_end_of_a_replication_removes_its_failover_groups_too():
    during, after = compile_plan(_multihomed()), compile_plan(XtrPlan(**{**_multihomed().__dict__, "replicates": ()}))
    assert not after.groups and diff(during, after)
    assert not [f for f in after.flows if cookie_owner(f.cookie) is Owner.PLANNED_MOVE]


def test_a_departed_workload_announced_back_is_held_not_redirected():
    """Its redirect and its hold flow would clash (same priority and match): the hold wins."""
    from lisp_ryu.plan import Redirect

    plan = XtrPlan(**{**BASE.__dict__, "expected": (Expected(42, EID),), "redirects": (Redirect(42, EID, OLD),),
                      "failover_ports": ()})
    state = compile_plan(plan)
    decap = {"in_port": 100, "tunnel_id": 42, "eth_type": 0x0800, "ipv4_dst": str(EID)}
    assert walk(state, decap).ports == ["controller"]
    assert not [f for f in state.flows if cookie_owner(f.cookie) is Owner.REDIRECT]


def test_an_announced_port_classifies_the_workloads_packets_but_not_what_announces_it():
    """IPv4: its IP packets from the new port are routed as a known host's; its ARP meets the
    learning flow.  IPv6 (no sure announcement to learn from): its packets still meet learning."""
    eid6 = ip("2001:db8:1::10")
    learn = (DynamicPrefix(42, net("10.1.0.0/16")), DynamicPrefix(42, net("2001:db8:1::/64")))
    remotes = (*BASE.remotes, RemoteEntry(42, net("2001:db8:3::/64"), RemoteAction.ENCAP, (Rloc(OLD),)))
    at4, at6 = LocalHost(42, EID, "02:00:00:01:00:0a", 1), LocalHost(42, eid6, "02:00:00:01:00:0a", 1)
    plan = XtrPlan(**{**BASE.__dict__, "remotes": remotes, "dynamic_prefixes": learn,
                      "expected": (Expected(42, EID, OLD, at4), Expected(42, eid6, OLD, at6))})
    state = compile_plan(plan)
    out4 = walk(state, {"in_port": 1, "eth_type": 0x0800, "ipv4_src": str(EID), "ipv4_dst": "10.1.0.99"})
    assert [d.packet["tun_ipv4_dst"] for d in out4.deliveries] == [str(OLD)], out4
    garp = walk(state, {"in_port": 1, "eth_type": 0x0806, "arp_op": 1, "arp_spa": str(EID), "arp_tpa": str(EID)})
    assert garp.ports == ["controller"], garp
    out6 = walk(state, {"in_port": 1, "eth_type": 0x86DD, "ipv6_src": str(eid6), "ipv6_dst": "2001:db8:3::5",
                        "ip_proto": 17})
    assert out6.ports == ["controller"], out6
    # Another address from that port is not classified by it (it is learned, or dropped).
    other = walk(state, {"in_port": 1, "eth_type": 0x0800, "ipv4_src": "10.1.0.11", "ipv4_dst": "10.1.0.99"})
    assert other.ports == ["controller"], other
    # Learned: the host's own flows take the same places, nothing of the move is left.
    here = compile_plan(XtrPlan(**{**plan.__dict__, "expected": (), "hosts": (at4, at6)}))
    assert not [f for f in here.flows if cookie_owner(f.cookie) is Owner.PLANNED_MOVE]
    classify = [type(op).__name__ for op in diff(state, here) if getattr(op, "flow", None) is not None
                and ("ipv4_src", str(EID)) in op.flow.match]
    assert classify == ["AddFlow"], classify  # replaced in place, never missing
    # A hypervisor's RARP from the announced port reaches the controller until then (one flow a port).
    assert walk(state, {"in_port": 1, "eth_type": 0x8035}).ports == ["controller"]
    assert walk(here, {"in_port": 1, "eth_type": 0x8035}).ports != ["controller"]


def test_the_old_site_sends_on_what_an_itr_unaware_of_the_move_tunnels_there():
    """Leaving: a copy of what any ITR tunnels to the workload goes on to the new RLOC (back out
    of the tunnel port), except what the ITRs that replicate themselves send (by tunnel source);
    from a BFD port it leaves by the tunnel port's number.  Its departure removes all of it."""
    from lisp_ryu.plan import FailoverPort, Leaving

    ours, foreign = ip("198.18.3.2"), ip("203.0.113.9")
    host = LocalHost(42, EID, "02:00:00:01:00:0a", 5)
    plan = XtrPlan(**{**BASE.__dict__, "hosts": (host,), "leaving": (Leaving(42, EID, NEW, (ours, ip("fd00::3"))),)})
    state = compile_plan(plan)
    decap = {"in_port": 100, "tunnel_id": 42, "eth_type": 0x0800, "ipv4_dst": str(EID)}
    sent_on = walk(state, {**decap, "tun_ipv4_src": str(foreign)})
    assert sorted(map(str, sent_on.ports)) == ["100", "5"], sent_on
    (onward,) = [d for d in sent_on.deliveries if d.port == 100]
    assert (onward.packet["tun_ipv4_dst"], onward.packet["tunnel_id"]) == (str(NEW), 42)
    assert walk(state, {**decap, "tun_ipv4_src": str(ours)}).ports == [5]
    assert walk(state, {**decap, "ipv4_dst": "10.1.0.11"}).ports != [5, 100]  # only the workload's traffic
    assert walk(state, {**decap, "tunnel_id": 7, "tun_ipv4_src": str(foreign)}).ports != [5, 100]
    # With BFD ports, what came in on one goes on through the flow-based tunnel port.
    bfd = XtrPlan(**{**plan.__dict__, "failover_ports": (FailoverPort(ip("198.18.1.2"), foreign, 7),)})
    by_bfd = walk(compile_plan(bfd), {**decap, "in_port": 7, "tun_ipv4_src": str(foreign)})
    assert sorted(map(str, by_bfd.ports)) == ["100", "5"], by_bfd
    assert sorted(map(str, walk(compile_plan(bfd), {**decap, "tun_ipv4_src": str(foreign)}).ports)) == ["100", "5"]
    # Gone: its redirect serves every ITR, and nothing of the window is left.
    from lisp_ryu.plan import Redirect
    gone = compile_plan(XtrPlan(**{**plan.__dict__, "hosts": (), "redirects": (Redirect(42, EID, NEW),)}))
    assert not [f for f in gone.flows if cookie_owner(f.cookie) is Owner.PLANNED_MOVE]
    assert [d.packet["tun_ipv4_dst"] for d in walk(gone, {**decap, "tun_ipv4_src": str(ours)}).deliveries] == [str(NEW)]


def test_the_destination_sends_on_to_the_old_site_what_an_itr_unaware_of_the_move_tunnels_there():
    """An ITR whose map-cache still names the destination (the workload was there before) keeps
    tunnelling there: until the workload arrives, that goes to the announced port (or is held)
    and on to the old RLOC, where the workload still is; what the replicating ITRs send stays."""
    from lisp_ryu.plan import FailoverPort

    ours, foreign = ip("198.18.3.2"), ip("203.0.113.9")
    at = LocalHost(42, EID, "02:00:00:01:00:0a", 5)
    decap = {"in_port": 100, "tunnel_id": 42, "eth_type": 0x0800, "ipv4_dst": str(EID)}
    for announced, here in ((at, 5), (None, "controller")):
        plan = XtrPlan(**{**BASE.__dict__, "expected": (Expected(42, EID, OLD, announced, (ours,)),)})
        state = compile_plan(plan)
        sent_on = walk(state, {**decap, "tun_ipv4_src": str(foreign)})
        assert sent_on.ports == [here, 100], sent_on  # the controller's output first (OVS 3.1)
        assert [d.packet["tun_ipv4_dst"] for d in sent_on.deliveries if d.port == 100] == [str(OLD)]
        assert walk(state, {**decap, "tun_ipv4_src": str(ours)}).ports == [here]
        bfd = compile_plan(XtrPlan(**{**plan.__dict__, "failover_ports": (FailoverPort(ip("198.18.3.2"), foreign, 7),)}))
        assert walk(bfd, {**decap, "in_port": 7, "tun_ipv4_src": str(foreign)}).ports == [here, 100]
    # Arrived: its own delivery only, nothing sent on.
    arrived = compile_plan(XtrPlan(**{**plan.__dict__, "hosts": (at,)}))
    assert walk(arrived, {**decap, "tun_ipv4_src": str(foreign)}).ports == [5]
