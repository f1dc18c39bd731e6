"""An unplanned move between xTRs one controller drives: every xTR's flows change at once,
before the Map-Server's round trip (lisp_ryu/glue/moves.py), and the mapping system confirms.

Three xTRs on the in-memory underlay, as in test_rest_moves: dc1 holds 10.1.0.10,
dc2 learns hosts (dynamic EIDs), dc3 talks to 10.1.0.10.  The workload appears at
dc2; nothing is delivered on the underlay until the test settles it.
"""

from __future__ import annotations

import ipaddress

import pytest

from lisp_ryu.flows.pipeline import Owner, Table, cookie_owner
from support.simulate import walk
from support.underlay import ipv4_frame
from unit.rest.test_rest_moves import DC1, DC2, EID, held, three_site_lab, to_eid

MOVER_MAC = bytes.fromhex("02000001000a")


@pytest.fixture
def lab(tmp_path):
    lab = three_site_lab(tmp_path, dc1_learns=True)
    lab.miss("dc3", "10.3.0.10", EID)  # dc3 sends to the EID (dc1)
    lab.miss("dc1", EID, "10.3.0.10")  # and the EID to dc3: dc1 has a mapping dc2 lacks
    return lab


def arrive(lab):
    lab.switches[2].packet_in(lab.controller, 5, ipv4_frame(EID, "10.3.0.10", src_mac=MOVER_MAC),
                              table=Table.CLASSIFY)


def from_tunnel(lab, xtr):
    return walk(held(lab, xtr), {"in_port": 100, "tunnel_id": 42, "eth_type": 0x0800, "ipv4_src": "10.3.0.10",
                                 "ipv4_dst": EID})


def test_every_xtr_follows_a_move_before_the_map_server_answers(lab):
    assert [d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries] == [DC1]
    assert lab.cores["dc2"].cache.get(42, ipaddress.ip_network("10.3.0.0/16")) is None
    arrive(lab)  # nothing crossed the underlay yet: no Map-Register reached the Map-Server
    # The ITR tunnels to the new site, the old site sends on what still arrives there,
    # and the new site has the mapping the workload's replies need.
    assert [d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries] == [DC2]
    assert [d.packet["tun_ipv4_dst"] for d in from_tunnel(lab, "dc1").deliveries] == [DC2]
    back = walk(held(lab, "dc2"), {"in_port": 5, "eth_type": 0x0800, "ipv4_src": EID, "ipv4_dst": "10.3.0.10"})
    assert back.deliveries and {d.packet["tun_ipv4_dst"] for d in back.deliveries} <= {"198.18.3.2", "198.18.4.2"}
    assert lab.cores["dc1"].counters["moves_told_directly"] == 1
    assert lab.cores["dc3"].counters["moves_followed_directly"] == 1
    assert lab.cores["dc2"].counters["map_cache_seeded"] >= 1
    # The copies are short-lived until the mapping system confirms them.
    entry = lab.cores["dc3"].cache.get(42, ipaddress.ip_network(f"{EID}/32"))
    assert entry.expires_at - entry.inserted_at == 60.0

    lab.underlay.settle()  # the Map-Register, the Map-Server's publications, the SMRs, the answers
    entry = lab.cores["dc3"].cache.get(42, ipaddress.ip_network(f"{EID}/32"))
    assert entry.expires_at - entry.inserted_at > 60.0  # the publication replaced the copy
    assert [d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries] == [DC2]
    assert [d.packet["tun_ipv4_dst"] for d in from_tunnel(lab, "dc1").deliveries] == [DC2]
    assert lab.controller.counters.get("core_exceptions", 0) == 0
    redirects = [f for f in held(lab, "dc1").flows if cookie_owner(f.cookie) is Owner.REDIRECT]
    assert len(redirects) == 1


def test_the_map_register_leaves_after_every_xtr_has_its_flows(lab, monkeypatch):
    """Building and signing a Map-Register costs about a millisecond of the thread: on a move the
    three switches' flow-mods go first (the old site and the ITR are told directly), then it."""
    order = []
    for dpid, switch in lab.switches.items():
        sent = switch.send
        monkeypatch.setattr(switch, "send", lambda data, dpid=dpid, sent=sent: (order.append(dpid), sent(data)))
    endpoint = next(e for e in lab.controller.xtrs.values() if e.core.config.name == "dc2")
    sendto = endpoint.send
    monkeypatch.setattr(endpoint, "send", lambda payload, dest: (
        order.append("register" if is_map_register(payload) else "datagram"), sendto(payload, dest))[1])
    arrive(lab)
    assert "register" in order
    first_register = order.index("register")
    assert {1, 2, 3} <= set(order[:first_register])  # new site, old site, ITR: flows before it


def test_the_new_site_reaches_the_old_sites_own_hosts_at_once(lab):
    """The workload's old neighbours (dc1's own hosts) are in no map-cache dc2 could copy: dc2
    gets dc1's own mappings copied, so the replies to them need no Map-Request (measured in the
    lab before: 14 pings lost at 1 ms from a dc1 host while dc2 resolved dc1's prefix)."""
    old_prefix = ipaddress.ip_network("10.1.0.0/16")
    assert lab.cores["dc2"].cache.get(42, old_prefix) is None
    arrive(lab)
    entry = lab.cores["dc2"].cache.get(42, old_prefix)
    assert entry is not None and "copied from dc1" in entry.value.source
    assert [loc.address for loc in entry.value.record.locators] == [ipaddress.ip_address(DC1)]
    assert not any(loc.local for loc in entry.value.record.locators)
    back = walk(held(lab, "dc2"), {"in_port": 5, "eth_type": 0x0800, "ipv4_src": EID, "ipv4_dst": "10.1.0.99"})
    assert [d.packet["tun_ipv4_dst"] for d in back.deliveries] == [DC1] and "controller" not in back.ports
    # dc2's own space is never copied in: dc1 holds no mapping of it, and nothing of dc2's own is
    # in dc2's map-cache after the move.
    assert lab.cores["dc2"].cache.get(42, ipaddress.ip_network("10.2.0.0/16")) is None


def test_a_host_seen_again_where_it_is_tells_nobody(lab):
    arrive(lab)
    lab.underlay.settle()
    before = {name: dict(core.counters) for name, core in lab.cores.items()}
    arrive(lab)  # the same host on the same port: known
    lab.underlay.settle()
    for name, core in lab.cores.items():
        for counter in ("moves_told_directly", "moves_followed_directly", "map_cache_seeded"):
            assert core.counters.get(counter, 0) == before[name].get(counter, 0), (name, counter)


def test_a_lone_move_is_told_at_once_and_a_burst_in_one_deferred_step(lab):
    """Not busy: the old site and the ITR follow before the packet-in handler returns.  Busy
    (input queued): one step is deferred, after the new site's push, and arrivals that come
    meanwhile join it."""
    steps = []
    lab.controller.defer = steps.append
    lab.controller.busy = lambda: True
    pushes_before = len(lab.pushes)
    arrive(lab)
    # The new site's push already holds what the old site's map-cache held (seeded with it);
    # the old site's and the ITRs' part waits for its turn.
    assert len(steps) == 1
    assert lab.cores["dc2"].counters["map_cache_seeded"] >= 1
    assert [f for f in held(lab, "dc1").flows if cookie_owner(f.cookie) is Owner.REDIRECT] == []
    steps.pop(0)()
    assert steps == []
    lab.controller.busy = lambda: False
    for _ in range(3):  # pushes held back while busy leave on the next timer
        lab.controller.run_timers()
        lab.clock.advance(0.2)
    assert [f for f in held(lab, "dc1").flows if cookie_owner(f.cookie) is Owner.REDIRECT]
    assert [d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries] == [DC2]
    assert len(lab.pushes) >= pushes_before

def is_map_register(payload: bytes) -> bool:
    return payload[0] >> 4 == 3


def test_the_old_site_solicits_only_once_the_map_server_has_the_move(lab):
    """The old site's SMRs wait for the Map-Server's Map-Notify to it, the former holder.  Sent
    at once, with the Map-Server reading its Map-Registers late (a burst), they made the ITR's
    Map-Request reach the Map-Server first: it was forwarded to the old site, which no longer
    answers for the EID, and the ITR retried a second later (a lab capture showed exactly that).
    The workload goes to dc2 and back: dc2, its old site then, has no prefix covering it."""
    arrive(lab)
    lab.underlay.settle()
    lab.clock.advance(2.0)  # the workload stays a while (the ITR's SMR hold-down ends)
    lab.controller.run_timers()
    lab.underlay.settle()
    dc2, dc3 = lab.cores["dc2"], lab.cores["dc3"]
    sent_before, received_before = dc2.counters.get("smr_sent", 0), dc3.counters.get("smr_received", 0)
    lab.switches[1].packet_in(lab.controller, 1, ipv4_frame(EID, "10.3.0.10", src_mac=MOVER_MAC),
                              table=Table.CLASSIFY)  # back at dc1
    assert dc2.counters["moves_told_directly"] == 1
    assert dc2.counters.get("smr_sent", 0) == sent_before
    lab.underlay.settle(late=is_map_register)
    assert dc2.counters["smr_sent"] > sent_before and dc3.counters["smr_received"] > received_before
    assert dc2.counters.get("map_request_not_ours", 0) == 0
    # The ITR's answer is the mapping at dc1: nothing left to retry.
    assert dc3.state.resolutions == {}
    assert [d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries] == [DC1]
    lab.clock.advance(5.0)
    lab.controller.run_timers()
    lab.underlay.settle()
    assert dc2.counters.get("smr_without_confirmation", 0) == 0 and dc3.counters.get("map_request_retry", 0) == 0


def test_without_word_from_the_mapping_system_the_old_site_solicits_anyway(lab):
    """A Map-Server that does not notify former holders: the SMRs go after SOLICIT_FALLBACK."""
    from lisp_ryu.xtr.mobility import SOLICIT_FALLBACK

    dc1 = lab.cores["dc1"]
    arrive(lab)
    lab.underlay.in_flight.clear()  # nothing reaches the Map-Server: it never tells dc1
    lab.clock.advance(SOLICIT_FALLBACK / 2)
    lab.controller.run_timers()
    assert dc1.counters.get("smr_sent", 0) == 0
    lab.clock.advance(SOLICIT_FALLBACK / 2)
    lab.controller.run_timers()
    assert dc1.counters["smr_without_confirmation"] == 1 and dc1.counters["smr_sent"] >= 1
    assert dc1.state.solicit_later == {}


def test_a_workloads_second_address_is_not_a_burst(lab):
    """A dual-stack (or multi-address) workload is learned once per address, moments apart: one
    move, whose pushes leave at once.  Counted as two arrivals, it held its second address's
    pushes for a whole hold-off (measured: an IPv6 ping lost ~105 ms a move, IPv4 ~10)."""
    from lisp_ryu.glue.moves import BURST_WINDOW

    arrivals = lab.controller.arrivals
    arrivals.clock = lab.clock
    lab.controller.busy = arrivals.in_burst  # as the Ryu app wires it (besides queued input)
    arrive(lab)
    lab.clock.advance(BURST_WINDOW / 4)
    lab.switches[2].packet_in(lab.controller, 5, ipv4_frame("10.1.0.77", "10.3.0.10", src_mac=MOVER_MAC),
                              table=Table.CLASSIFY)  # the same machine's other address
    assert not arrivals.in_burst()
    assert lab.controller.counters.get("pushes_deferred", 0) == 0
    back = walk(held(lab, "dc2"), {"in_port": 5, "eth_type": 0x0800, "ipv4_src": "10.1.0.77",
                                   "ipv4_dst": "10.3.0.10"})
    assert back.deliveries  # its flows are in the switch already
    lab.switches[2].packet_in(lab.controller, 6, ipv4_frame("10.1.0.78", "10.3.0.10",
                                                            src_mac=bytes.fromhex("02000001004e")),
                              table=Table.CLASSIFY)
    assert arrivals.in_burst()  # another machine within the window: that is a burst


def test_the_second_arrival_within_the_burst_window_starts_a_burst(lab):
    """One move is told at once; workloads arriving BURST_ARRIVALS within BURST_WINDOW are a burst
    (an evacuation): the controller's pushes then wait and leave together, before a backlog
    the controller can see has built up behind one-by-one handling."""
    from lisp_ryu.glue.moves import BURST_ARRIVALS, BURST_WINDOW

    assert BURST_ARRIVALS == 2
    arrivals = lab.controller.arrivals
    arrivals.clock = lab.clock
    lab.controller.busy = arrivals.in_burst  # as the Ryu app wires it (besides queued input)
    arrive(lab)
    assert not arrivals.in_burst()
    assert lab.cores["dc1"].counters["moves_told_directly"] == 1  # at once
    lab.clock.advance(BURST_WINDOW / 4)
    deferred = lab.controller.counters.get("pushes_deferred", 0)
    lab.switches[2].packet_in(lab.controller, 6, ipv4_frame("10.1.0.77", "10.3.0.10",
                                                            src_mac=bytes.fromhex("02000001004d")),
                              table=Table.CLASSIFY)
    assert arrivals.in_burst()
    lab.switches[2].packet_in(lab.controller, 7, ipv4_frame("10.1.0.78", "10.3.0.10",
                                                            src_mac=bytes.fromhex("02000001004e")),
                              table=Table.CLASSIFY)
    assert lab.controller.counters.get("pushes_deferred", 0) > deferred  # the third waits for company
    lab.clock.advance(BURST_WINDOW * 1.5)
    assert not arrivals.in_burst()  # the burst is over: what waited leaves on the next timer
    lab.controller.run_timers()
    back = walk(held(lab, "dc2"), {"in_port": 7, "eth_type": 0x0800, "ipv4_src": "10.1.0.78",
                                   "ipv4_dst": "10.3.0.10"})
    assert back.deliveries
