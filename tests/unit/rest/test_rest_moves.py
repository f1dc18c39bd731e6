"""POST /lisp/v1/moves: a planned move (draft-ietf-lisp-predictive-rlocs) driven through the REST API.

Three xTRs on the in-memory underlay: dc1 holds 10.1.0.10, dc2 learns hosts
(dynamic EIDs), dc3 talks to 10.1.0.10.  The move to dc2 makes dc3 send to
both RLOCs (a group of type ALL), dc2 hold what arrives for the EID until the
workload shows up, then deliver it; the window closes by itself.
"""

from __future__ import annotations


import pytest
import yaml

from lisp_ryu.flows.pipeline import Owner, Table, cookie, cookie_owner
from lisp_ryu.glue import moves
from support.simulate import walk
from support.underlay import ipv4_frame
from unit.rest.test_rest_api import CONFIG, Lab

EID = "10.1.0.10"
DC1, DC2 = "198.18.1.2", "198.18.2.2"
DC2_XTR = {"name": "dc2", "dpid": 2, "rlocs": [{"address": DC2}], "tunnel_port": 100,
           "eid_prefixes": [{"prefix": "10.2.0.0/16", "iid": 42}],
           "dynamic_eid_prefixes": [{"prefix": "10.0.0.0/8", "iid": 42}],
           "host_ports": [{"port": 5, "iid": 42}],
           "map_servers": [{"address": "198.18.0.2", "key": "k2"}], "map_resolvers": ["198.18.0.2"]}


def three_site_lab(tmp_path, dc1_learns: bool = False, fast_lane: bool = False, start: bool = True) -> Lab:
    """dc1 and dc3 of the REST tests' configuration, and dc2 between them learning hosts
    (dc1 too if `dc1_learns`: a workload can come back); the controller's fast lane on if asked;
    started (its switches connected, empty) unless `start` is false."""
    doc = yaml.safe_load(CONFIG)
    doc["xtrs"].insert(1, DC2_XTR)
    if dc1_learns:
        doc["xtrs"][0]["dynamic_eid_prefixes"] = [{"prefix": "10.1.0.0/16", "iid": 42}]
    # dc2 registers hosts that arrive from anywhere in 10/8 (the site must allow them)
    for site in doc["map_server"]["sites"]:
        if site["name"] == "dc2" or (dc1_learns and site["name"] == "dc1"):
            site["eid_prefixes"] = [{"prefix": "10.0.0.0/8", "iid": 42, "accept_more_specifics": True}]
    lab = Lab(tmp_path, config_text=yaml.safe_dump(doc))
    lab.controller.fast_lane = fast_lane
    if start:
        lab.start()
    return lab


@pytest.fixture
def lab(tmp_path):
    return three_site_lab(tmp_path)


def held(lab, name):
    return lab.switches[lab.cores[name].config.dpid].held()


def to_eid(lab, xtr):
    """Where a packet from xTR's local host to the EID goes."""
    return walk(held(lab, xtr), {"in_port": 1, "eth_type": 0x0800, "ipv4_src": "10.3.0.10", "ipv4_dst": EID})


def arrive_at_dc2(lab):
    """The workload appears on dc2's port 5: the packet-outs that delivered what dc2 held for it."""
    switch = lab.switches[2]
    before = len(switch.messages)
    switch.packet_in(lab.controller, 5, ipv4_frame(EID, "10.3.0.10", src_mac=bytes.fromhex("02000001000a")),
                     table=Table.CLASSIFY)
    lab.underlay.settle()
    return [m for m in switch.messages[before:] if type(m).__name__ == "PacketOutMsg"
            and any(getattr(a, "port", None) == 5 for a in m.actions)]


def planned_flows(state):
    return [f for f in state.flows if cookie_owner(f.cookie) is Owner.PLANNED_MOVE]


def test_planned_move_replicates_holds_delivers_and_ends(lab):
    lab.miss("dc3", "10.3.0.10", EID)  # dc3 talks to the EID: it has a mapping (and a subscription)
    assert [d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries] == [DC1]

    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2"})
    assert status == 202, answer
    assert answer["from_site"] == "dc1" and answer["new_rloc"] == DC2 and answer["replicating_at"] == ["dc3"]
    assert answer["installed"] is True  # both switches answered the barrier after their push

    # The ITR sends every packet to both sites: a group of type ALL.
    trace = to_eid(lab, "dc3")
    assert sorted(d.packet["tun_ipv4_dst"] for d in trace.deliveries) == [DC1, DC2]
    assert [g.type for g in held(lab, "dc3").groups if len(g.buckets) == 2 and g.group_id >= 0x80000000] == ["all"]
    # The destination sends the EID's decapsulated traffic to the controller (held), unmetered;
    # what an ITR unaware of the move tunnels there goes on to dc1 too, where the EID still is.
    decap = {"in_port": 100, "tunnel_id": 42, "eth_type": 0x0800, "ipv4_dst": EID}
    from_dc3 = walk(held(lab, "dc2"), {**decap, "tun_ipv4_src": "198.18.3.2"})
    assert from_dc3.ports == ["controller"] and not from_dc3.meters
    foreign = walk(held(lab, "dc2"), {**decap, "tun_ipv4_src": "203.0.113.7"})
    assert foreign.ports == ["controller", 100] and not foreign.meters
    assert [d.packet["tun_ipv4_dst"] for d in foreign.deliveries if d.port == 100] == [DC1]

    # A copy reaches dc2 before the workload: held; then the workload appears on port 5.
    dc2 = lab.controller.xtrs[2]
    lab.controller.packet_in(2, Table.DECAP, 100, 0, ipv4_frame("10.3.0.10", EID), tunnel_id=42)
    assert dc2.core.counters["planned_move_held"] == 1
    delivered = arrive_at_dc2(lab)
    assert len(delivered) == 1 and delivered[0].data[:6] == bytes.fromhex("02000001000a")  # to the host's MAC

    # The registration moved dc3's mapping to dc2: replication over, no planned-move flow or group anywhere.
    assert [d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries] == [DC2]
    for name in ("dc1", "dc2", "dc3"):
        assert planned_flows(held(lab, name)) == [], name
        assert not [g for g in held(lab, name).groups if g.group_id >= 0x80000000], name


def test_the_old_site_sends_on_what_an_itr_unaware_of_the_move_tunnels_to_it(lab):
    """An ITR this controller does not drive (another implementation's) keeps tunnelling to dc1:
    dc1 delivers it and sends a copy on to dc2.  dc3's copies (both its RLOCs) and dc2's stay at
    dc1: they send dc2 their own.  The workload's arrival ends it; its redirect serves them all."""
    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2"})
    assert status == 202, answer
    decap = {"in_port": 100, "tunnel_id": 42, "eth_type": 0x0800, "ipv4_src": "10.9.0.1", "ipv4_dst": EID}
    local = walk(held(lab, "dc1"), {**decap, "tun_ipv4_src": "198.18.3.2"}).ports
    assert local and 100 not in local
    foreign = walk(held(lab, "dc1"), {**decap, "tun_ipv4_src": "203.0.113.7"})
    assert sorted(map(str, foreign.ports)) == sorted(["100", *map(str, local)]), foreign
    assert [d.packet["tun_ipv4_dst"] for d in foreign.deliveries if d.port == 100] == [DC2]
    for ours in ("198.18.4.2", DC2):
        assert walk(held(lab, "dc1"), {**decap, "tun_ipv4_src": ours}).ports == local, ours
    arrive_at_dc2(lab)
    assert planned_flows(held(lab, "dc1")) == []
    gone = walk(held(lab, "dc1"), {**decap, "tun_ipv4_src": "203.0.113.7"})
    assert [d.packet["tun_ipv4_dst"] for d in gone.deliveries] == [DC2]


def test_an_itr_that_never_sent_to_the_eid_stops_replicating_when_the_workload_arrives(lab):
    """No mapping of the EID at dc3 (a dual-stack workload's other address, say): no answer or
    publication will ever move one there, yet the replication ends with the move, not the timeout."""
    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2"})
    assert status == 202 and answer["replicating_at"] == ["dc3"], answer
    assert planned_flows(held(lab, "dc3"))
    arrive_at_dc2(lab)
    assert lab.cores["dc3"].state.replicating == {}
    assert lab.cores["dc3"].counters["planned_move_replication_ended"] == 1
    for name in ("dc1", "dc2", "dc3"):
        assert planned_flows(held(lab, name)) == [], name
        assert not [g for g in held(lab, name).groups if g.group_id >= 0x80000000], name


def test_a_planned_move_answers_once_the_switches_confirm_its_flows(lab):
    """The orchestrator starts the migration on the answer: it says whether the destination and
    the ITRs answered the barrier after their push (an ITR not replicating yet at the switchover
    sends only to the old site, and that is lost).  A burst's held-back push leaves at once."""
    lab.miss("dc3", "10.3.0.10", EID)
    waited = []
    lab.controller.wait_until = lambda condition, timeout: (waited.append(timeout), condition())[1]
    lab.switches[3].answer_barriers = False
    session = lab.controller.sessions[3]
    session.deferred.append("a change a burst held back")  # it must not wait for the burst to end
    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2"})
    assert status == 202 and answer["installed"] is False and waited == [1.0], answer
    assert session.deferred == [] and planned_flows(held(lab, "dc3"))  # sent, not confirmed
    lab.controller.barrier_reply(3, session.barrier_sent)  # the switch catches up
    assert lab.controller.settled([2, 3])


def cached_prefixes(lab, name):
    return {str(e.value.record.eid_prefix.network) for e in lab.cores[name].cache if not e.negative}


def test_a_planned_move_answers_once_the_destination_can_reach_what_the_workload_talks_to(lab):
    """dc1's host talks to dc3's: the destination resolves dc3's prefix in advance, and the answer
    waits for the Map-Reply, so the workload's first replies there are encapsulated by the switch
    instead of waiting in the controller for it."""
    lab.miss("dc1", "10.1.0.10", "10.3.0.10")
    assert "10.3.0.0/16" in cached_prefixes(lab, "dc1") and "10.3.0.0/16" not in cached_prefixes(lab, "dc2")
    at_answer = []
    wait = lab.controller.wait_until
    lab.controller.wait_until = lambda condition, timeout: (wait(condition, timeout),
                                                            at_answer.append(cached_prefixes(lab, "dc2")))[0]
    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2", "port": 5})
    assert status == 202 and answer["installed"] is True, answer
    assert "10.3.0.0/16" in at_answer[0]
    to_dc3 = walk(held(lab, "dc2"), {"in_port": 5, "eth_type": 0x0800, "ipv4_src": EID, "ipv4_dst": "10.3.0.10"})
    assert sorted(d.packet["tun_ipv4_dst"] for d in to_dc3.deliveries) == ["198.18.3.2", "198.18.4.2"]  # dc3's


def test_a_planned_move_says_so_when_the_destination_has_no_answer_in_time(lab):
    """`installed` false: the Map-Reply the destination waits for did not come within the wait."""
    lab.miss("dc1", "10.1.0.10", "10.3.0.10")
    waited = []
    lab.controller.wait_until = lambda condition, timeout: (waited.append(timeout), condition())[1]  # nothing arrives
    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2"})
    assert status == 202 and answer["installed"] is False and waited == [1.0], answer
    assert "10.3.0.0/16" in cached_prefixes(lab, "dc2")  # the Map-Reply came after all (call settles)


def counter_reads(switch):
    return [m for m in switch.messages if type(m).__name__ == "StatsRequest" and m.cookie_mask]


def test_a_planned_move_says_whether_the_destination_delivers_by_its_flow_yet(lab):
    """A barrier says the switch's tables hold the move; a userspace OVS applies that to the flows
    it has cached later.  The answer reads the counter of the destination's own flow for the EID:
    a packet counted is an ITR's copy delivered by it."""
    owner = cookie(Owner.PLANNED_MOVE, 42, f"expect {EID}")
    lab.switches[2].packet_counts[owner] = 3
    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2", "port": 5})
    assert status == 202 and answer["installed"] is True and answer["delivering"] is True, answer
    reads = counter_reads(lab.switches[2])
    assert len(reads) == 1 and (reads[0].table, reads[0].cookie, reads[0].cookie_mask) == (
        Table.DECAP, owner, 0xFFFFFFFFFFFFFFFF)


def test_a_planned_move_of_a_workload_without_traffic_is_not_delivering(lab):
    """Nothing counted: no traffic for it, or the switch still forwards it as before.  The answer
    says so after reading the counter for at most DELIVERY_WAIT."""
    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2", "port": 5})
    assert status == 202 and answer["installed"] is True and answer["delivering"] is False, answer
    assert len(counter_reads(lab.switches[2])) == round(moves.DELIVERY_WAIT / moves.DELIVERY_POLL)
    assert not lab.controller.flow_counters._pending  # every read was answered and forgotten


def test_a_destination_that_does_not_answer_the_reads_is_not_delivering(lab):
    lab.switches[2].answer_reads = False
    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2", "port": 5})
    assert status == 202 and answer["delivering"] is False, answer
    assert not lab.controller.flow_counters._pending  # each unanswered read was given up


def from_own_host(lab, xtr, src):
    """Where a packet from one of xTR's own hosts (already classified: instance 42) to the EID goes."""
    return walk(held(lab, xtr), {"metadata": 42, "eth_type": 0x0800, "ipv4_src": src, "ipv4_dst": EID},
                start_table=Table.ROUTE)


def test_the_two_sites_own_hosts_lose_nothing_either(lab):
    """No ITR replicates for the old site's and the destination's own hosts.  The old site
    delivers theirs and tunnels a copy to the new site (held there); the destination sends its
    own to the old site (where the workload still is) and to the controller (held with the rest)."""
    from lisp_ryu.flows.pipeline import cookie

    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2"})
    assert status == 202, answer
    old = from_own_host(lab, "dc1", "10.1.0.99")
    assert sorted(map(str, old.ports)) == ["1", "100"]  # the host's port, and the tunnel
    assert [d.packet["tun_ipv4_dst"] for d in old.deliveries if d.port == 100] == [DC2]
    dest = from_own_host(lab, "dc2", "10.2.0.99")
    assert sorted(map(str, dest.ports)) == ["100", "controller"]
    assert [d.packet["tun_ipv4_dst"] for d in dest.deliveries if d.port == 100] == [DC1]

    # dc2's own host's packet reaches the controller through that flow: held like the tunnel's
    dc2 = lab.controller.xtrs[2]
    lab.controller.packet_in(2, Table.ROUTE, 6, 42, ipv4_frame("10.2.0.99", EID),
                             flow_cookie=cookie(Owner.PLANNED_MOVE, 42, f"expect {EID}"))
    assert dc2.core.counters["planned_move_held"] == 1
    delivered = arrive_at_dc2(lab)
    assert len(delivered) == 1
    # Arrived and departed: no planned-move flow or group is left at either site.
    for name in ("dc1", "dc2", "dc3"):
        assert planned_flows(held(lab, name)) == [], name
        assert not [g for g in held(lab, name).groups if g.group_id >= 0x80000000], name
    assert [d.packet["tun_ipv4_dst"] for d in from_own_host(lab, "dc1", "10.1.0.99").deliveries] == [DC2]


def test_a_planned_arrival_is_pushed_at_once_even_behind_a_backlog(lab):
    """At the destination the traffic held for the workload reaches the controller as a stream of
    packet-ins: a backlog that looks like a burst.  The arrival's push must not wait it out (a
    hold-off of PUSH_MAX_WAIT: the host's replies waited 100 ms, and TCP timed out in each move)."""
    lab.miss("dc3", "10.3.0.10", EID)
    assert lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2"})[0] == 202
    lab.controller.busy = lambda: True  # input is queued
    assert len(arrive_at_dc2(lab)) == 0  # nothing was held; the push is what matters here
    back = walk(held(lab, "dc2"), {"in_port": 5, "eth_type": 0x0800, "ipv4_src": EID, "ipv4_dst": "10.3.0.10"})
    assert back.deliveries, "the workload's replies have their flows without waiting for a timer"
    assert lab.controller.sessions[2].deferred == []


def test_planned_move_times_out(lab):
    lab.miss("dc3", "10.3.0.10", EID)
    assert lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2", "timeout": 2})[0] == 202
    assert planned_flows(held(lab, "dc3")) and planned_flows(held(lab, "dc2"))
    lab.clock.advance(3)
    lab.controller.run_timers()
    lab.underlay.settle()
    assert not planned_flows(held(lab, "dc3")) and not planned_flows(held(lab, "dc2"))
    assert [d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries] == [DC1]  # nothing moved


def test_a_move_announced_again_elsewhere_takes_over_the_first(lab):
    """The orchestrator retargets a migration before it happened (dc2, then dc3): each xTR has one
    role in the move, the last one announced; nothing of the first is left when the window ends.
    Announcing the same move again changes nothing."""
    dc3 = "198.18.3.2"
    lab.miss("dc3", "10.3.0.10", EID)
    assert lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2", "timeout": 5})[0] == 202
    before = {name: held(lab, name) for name in ("dc1", "dc2", "dc3")}
    assert lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2", "timeout": 5})[0] == 202
    assert {name: held(lab, name) for name in ("dc1", "dc2", "dc3")} == before  # the same again: no change

    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc3", "timeout": 5})
    assert status == 202 and answer["replicating_at"] == ["dc2"] and answer["new_rloc"] == dc3, answer
    # dc2, the first destination, is an ITR now: both copies, to dc1 and dc3; it holds nothing for the EID.
    [group] = [g for g in held(lab, "dc2").groups if g.group_id >= 0x80000000]
    assert group.type == "all"
    assert sorted(a.value for b in group.buckets for a in b.actions if getattr(a, "field", "") == "tun_ipv4_dst") \
        == [DC1, dc3]
    decap = {"in_port": 100, "tunnel_id": 42, "eth_type": 0x0800, "ipv4_dst": EID, "tun_ipv4_src": "203.0.113.7"}
    assert walk(held(lab, "dc2"), decap).ports == []
    assert lab.cores["dc2"].counters["planned_move_superseded"] == 1
    # dc3, the ITR of the first move, is the destination: its hosts' packets to the EID are held
    # there and go to dc1, where the workload still is; it replicates no more.
    trace = to_eid(lab, "dc3")
    assert trace.ports == ["controller", 100] and [d.packet["tun_ipv4_dst"] for d in trace.deliveries
                                                  if d.port == 100] == [DC1]
    assert not [g for g in held(lab, "dc3").groups if g.group_id >= 0x80000000]
    # dc1, still the old site, sends what an unaware ITR tunnels to the EID on to dc3 now.
    assert [d.packet["tun_ipv4_dst"] for d in walk(held(lab, "dc1"), decap).deliveries if d.port == 100] == [dc3]

    lab.clock.advance(6)
    lab.controller.run_timers()
    lab.underlay.settle()
    for name in ("dc1", "dc2", "dc3"):
        assert planned_flows(held(lab, name)) == [], name
        assert not [g for g in held(lab, name).groups if g.group_id >= 0x80000000], name


def test_a_planned_move_names_the_destinations_preferred_rloc(tmp_path, monkeypatch):
    """A multihomed destination whose second RLOC has the better priority gets the copies there,
    as its registration ranks them, not at the first one listed."""
    preferred = "198.18.2.3"
    monkeypatch.setitem(DC2_XTR, "rlocs", [{"address": DC2, "priority": 2}, {"address": preferred, "priority": 1}])
    lab = three_site_lab(tmp_path)
    lab.miss("dc3", "10.3.0.10", EID)
    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2"})
    assert status == 202 and (answer["old_rloc"], answer["new_rloc"]) == (DC1, preferred), answer
    assert sorted(d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries) == [DC1, preferred]


def test_a_move_to_a_site_whose_switch_is_away_is_refused_and_prepares_nothing(lab):
    """Nothing can be held at a destination whose switch is not connected: the orchestrator hears
    503 (retry), not 202 for a move that would lose the traffic; no xTR is left replicating."""
    lab.miss("dc3", "10.3.0.10", EID)
    lab.controller.switch_disconnected(2)
    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2"})
    assert status == 503 and "dc2" in answer["error"] and "not connected" in answer["error"], answer
    assert lab.cores["dc2"].state.expected == {} and lab.cores["dc3"].state.replicating == {}
    assert not planned_flows(held(lab, "dc3"))
    lab.switches[2] = lab.underlay.connect(lab.controller, 2)  # back: reconciled, the move can be prepared
    lab.underlay.settle()
    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2"})
    assert status == 202 and answer["not_connected"] == [], answer
    assert planned_flows(held(lab, "dc2")) and planned_flows(held(lab, "dc3"))


def test_an_itr_whose_switch_is_away_is_named_and_replicates_once_back(lab):
    lab.miss("dc3", "10.3.0.10", EID)
    lab.controller.switch_disconnected(3)
    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2"})
    assert status == 202 and answer["replicating_at"] == ["dc3"] and answer["not_connected"] == ["dc3"], answer
    lab.switches[3] = lab.underlay.connect(lab.controller, 3)
    lab.underlay.settle()
    assert sorted(d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries) == [DC1, DC2]
    # Meanwhile its switch forwarded by its old flows, to dc1 only: dc1 sends dc3's copies on too.
    decap = {"in_port": 100, "tunnel_id": 42, "eth_type": 0x0800, "ipv4_dst": EID, "tun_ipv4_src": "198.18.3.2"}
    assert [d.packet["tun_ipv4_dst"] for d in walk(held(lab, "dc1"), decap).deliveries if d.port == 100] == [DC2]


@pytest.mark.parametrize("body, status, field", [
    ({"iid": 42, "eid": EID, "to_site": "nowhere"}, 404, None),
    ({"iid": 42, "eid": "10.9.9.9", "to_site": "dc2"}, 404, None),
    ({"iid": 42, "eid": EID, "to_site": "dc1"}, 409, None),
    ({"iid": 42, "eid": "not-an-ip", "to_site": "dc2"}, 400, "eid"),
    ({"iid": 42, "eid": EID}, 400, None),
    ({"iid": 42, "eid": EID, "to_site": "dc2", "timeout": 0}, 400, "timeout"),
    ({"iid": 42, "eid": EID, "to_site": "dc2", "when": "now"}, 400, None),
])
def test_bad_moves(lab, body, status, field):
    got, answer = lab.call("POST", "/lisp/v1/moves", body)
    assert got == status, answer
    if field is not None:
        assert answer.get("field") == field


def test_moves_need_the_token(lab):
    assert lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2"}, token=None)[0] == 401


def test_fast_lane_runs_a_whole_move_before_anything_else_and_drops_the_wire_copies(tmp_path):
    """An unplanned move with the fast lane on: the learn, the Map-Register, the Map-Server's
    Notify and publications and every xTR's flows all happen within the packet-in's handling;
    the datagrams still cross the wire, and their copies are recognised and dropped."""
    lab = three_site_lab(tmp_path, fast_lane=True)
    lab.miss("dc3", "10.3.0.10", EID)
    lab.underlay.settle()
    registers = lab.ms.counters.get("map_register", 0) if hasattr(lab.ms, "counters") else None
    lab.switches[2].packet_in(lab.controller, 5, ipv4_frame(EID, "10.3.0.10", src_mac=bytes.fromhex("02000001000a")),
                              table=Table.CLASSIFY)
    # before the wire delivers anything: dc3 already tunnels to dc2
    assert [d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries] == [DC2]
    assert lab.controller.counters["fast_lane_handed"] >= 3
    lab.underlay.settle()
    assert lab.controller.counters.get("fast_lane_wire_copies_dropped", 0) >= 3
    if registers is not None:
        assert lab.ms.counters.get("map_register", 0) - registers <= 2  # handled once, not twice
    assert [d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries] == [DC2]


def test_a_planned_move_to_a_multihomed_site_avoids_the_rloc_probing_calls_down(tmp_path, monkeypatch):
    """The destination's preferred RLOC stops answering (its socket gone from the underlay):
    once the probing of the ITR (dc3) and of the old site (dc1) calls it down, the copies a
    planned move makes for the destination take its next RLOC, and go back when it answers."""
    from ipaddress import ip_address

    from lisp_ryu.wire import LISP_CONTROL_PORT

    second = "198.18.2.3"
    monkeypatch.setitem(DC2_XTR, "rlocs", [{"address": DC2, "priority": 1}, {"address": second, "priority": 2}])
    lab = three_site_lab(tmp_path)
    lab.miss("dc3", "10.3.0.10", EID)
    for xtr, src in (("dc3", "10.3.0.10"), ("dc1", "10.1.0.99")):  # both probe dc2's RLOCs
        lab.miss(xtr, src, "10.2.0.10")
    cut = (ip_address(DC2), LISP_CONTROL_PORT)
    sockets = lab.underlay.sockets
    saved = sockets.pop(cut)

    def probe_for(seconds):
        for _ in range(int(seconds / 5)):
            lab.clock.advance(5)
            lab.controller.run_timers()
            lab.underlay.settle()

    probe_for(200)
    for name in ("dc1", "dc3"):
        assert not lab.cores[name].prober.health.is_up(ip_address(DC2)), name
    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2", "timeout": 600})
    assert status == 202 and answer["new_rloc"] == DC2, answer  # the site's preferred, as registered
    assert sorted(d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries) == [DC1, second]
    assert [d.packet["tun_ipv4_dst"] for d in from_own_host(lab, "dc1", "10.1.0.99").deliveries
            if d.port == 100] == [second]

    sockets[cut] = saved  # the link is back: the probes are answered, the copies return
    probe_for(100)
    assert lab.cores["dc3"].prober.health.is_up(ip_address(DC2))
    assert sorted(d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries) == [DC1, DC2]
    assert [d.packet["tun_ipv4_dst"] for d in from_own_host(lab, "dc1", "10.1.0.99").deliveries
            if d.port == 100] == [DC2]
