"""End to end: a dual-stack workload moves under a 1 ms ping6 and a TCP stream over IPv6.

topologies/three-dc-dualstack.yaml (lab prefix sx-, management 198.19.228.0/24,
controller port 6679): h1 (10.1.0.10, fd00:1::10) moves dc1 -> dc2 -> dc1 -> dc2
while h5 at dc3 pings its IPv6 address every 1 ms and streams TCP to it.

Planned (`lisp-ryu lab move --planned` announces both of the workload's EIDs): not
a ping6 lost, and nothing of the planned moves left.  Unplanned: the IPv6 EID is
learned right after the IPv4 one (gratuitous ARP, then unsolicited neighbour
advertisement); the two are one workload, not a burst of arrivals, so its flows
leave at once -- counted as a burst, they waited a push hold-off and TCP timed out
in every move.  And a controller started again on a lab that keeps the last one's
flows is ready only when it drives every switch itself.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from lisp_ryu.lab import controller as lab_controller
from lisp_ryu.lab.evacuate import evacuate
from lisp_ryu.lab.move import move_host
from lisp_ryu.lab.scenarios import mobility
from lisp_ryu.lab.scenarios.probe import Prober
from lisp_ryu.lab.state import read_state

from conftest import controller_lab, dump_lab_on_failure, private_lab
from test_planned_move_e2e import MAX_LOST, MAX_RTOS, MAX_RTOS_PLANNED, planned_leftovers

pytestmark = [pytest.mark.lab]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, module_monkeypatch):
    env, copy = private_lab(tmp_path_factory, module_monkeypatch, "ipv6-moves", "sx-", "three-dc-dualstack.yaml",
                            "198.19.228.0/24", 6679)
    with controller_lab(env, copy) as state:
        yield state


@pytest.fixture(autouse=True)
def flows_on_failure(request, lab):
    yield
    dump_lab_on_failure(request, lab)


def test_planned_moves_of_a_dual_stack_workload_lose_no_ping6(lab):
    report = mobility.run(moves=4, pause=1.0, interval=0.001, host="h1", to="dc2", pinger="h5", planned=True,
                          tcp=True, ipv6=True)
    print(mobility.format_table(report))
    assert report.target == "fd00:1::10"
    assert all(m.recovered for m in report.moves), mobility.format_table(report)
    assert max(m.lost for m in report.moves) <= MAX_LOST, mobility.format_table(report)
    assert report.tcp.intact and report.tcp.rto_events <= MAX_RTOS_PLANNED, mobility.format_table(report)
    assert planned_leftovers(lab) == []


def test_unplanned_moves_of_a_dual_stack_workload_keep_a_tcp_stream_over_ipv6(lab):
    report = mobility.run(moves=4, pause=1.0, interval=0.001, host="h1", to="dc2", pinger="h5", tcp=True,
                          ipv6=True)
    print(mobility.format_table(report))
    assert all(m.recovered for m in report.moves), mobility.format_table(report)
    assert report.tcp.intact and report.tcp.rto_events <= MAX_RTOS, mobility.format_table(report)


def test_a_planned_evacuation_of_dual_stack_workloads_loses_no_ping6(lab):
    """`lab evacuate --planned` announces both EIDs of every workload: h1 and h2 leave dc1 together
    under 1 ms ping6 from h5 to each, and no probe of either is lost."""
    state = read_state()
    here = {h.name: h.site for h in state.hosts}
    to = "dc2" if here["h1"] == "dc1" else "dc1"
    movers = [h for h in state.hosts if h.name in ("h1", "h2")]
    assert {h.site for h in movers} == {here["h1"]}, "the earlier tests leave h1 and h2 together"
    probers = [Prober(state.host("h5").namespace, h.ip6, 0.001) for h in movers]
    for p in probers:
        p.start()
    try:
        assert all(p.wait_reply(10.0) for p in probers), "no ping6 reply before the evacuation"
        time.sleep(0.3)
        began = time.time()
        done = evacuate(here["h1"], to, ["h1", "h2"], planned=True)
        assert {m.host for m in done.moves} == {"h1", "h2"}
        time.sleep(1.5)
    finally:
        results = [p.stop() for p in probers]
    switchovers = {m.host: round(m.started - began, 4) for m in done.moves}
    for h, probes in zip(movers, results):
        lost = [round(x.sent - began, 4) for x in probes if x.received is None]
        assert len(lost) <= MAX_LOST, (f"{h.name} ({h.ip6}): {len(lost)} of {len(probes)} ping6 lost, sent at "
                                       f"{lost[:20]} s after the evacuation began; switchovers at {switchovers}")
    assert planned_leftovers(lab) == []


# Probes at 1 ms a move may lose here to the lab's own port changes, not to the moves.  h2 sits on
# the switch where the lab plugs h1's new vif (before the switchover) or unplugs its old one (after),
# and a userspace ovs-vswitchd changing a port hands the tunnelled packets it receives meanwhile to
# its namespace's kernel instead of its tunnel (captured: the kernel answers them with ICMP port
# unreachable), 3-6 ms of h2's traffic from the other site; in 4 of 20 port changes with no move
# at all (h5 pinging h1 while dc1 added and removed a spare port).  Again at stop 24, 15 port
# adds each: a tap as the lab plugs it lost 4-5 probes in 4 of 15, a veth 5-7 in 3 of 15; one CI
# run lost 9 in the plug at h2's site.  A planned move from a third site does not see it (the
# ITR's copy to the other site covers the stall), so there 0 is required.  Losses while the lab
# plugs the new vif (before the move is even announced) are the switch's alone and have their own
# bound: a CI run at stop 29 lost 12 there, 0.54 s before the switchover.
OWN_SITE_PORT_STALL = 10
PLUG_STALL = 30
PLUG_SETTLE = 0.05  # the stall outlasts the port's creation by a few milliseconds


def test_planned_moves_lose_nothing_for_hosts_at_the_old_site_and_the_destination(lab):
    """No ITR replicates for the two sites' own hosts: the old site delivers and tunnels a copy to
    the new one, the destination sends to the old site and to the new port.  h2 pings h1 (IPv4 and
    IPv6, every 1 ms) from h1's old site, then from its destination.  Nothing is lost to the moves
    (the bug this guarded: 14-86 lost while the new site resolved the old site's own prefix and
    while the two sites made their first BFD ports); see OWN_SITE_PORT_STALL for what is allowed."""
    state = read_state()
    h1, h2 = state.host("h1"), state.host("h2")
    assert h1.site == h2.site, "the planned evacuation before leaves them together"
    home, away = h1.site, ("dc1" if h1.site != "dc1" else "dc2")
    probers = [Prober(h2.namespace, address, 0.001) for address in h1.eids]
    for p in probers:
        p.start()
    moves = []
    try:
        assert all(p.wait_reply(10.0) for p in probers), "no reply before the moves"
        time.sleep(0.3)
        for to in (away, home):  # h2 at the old site, then at the destination
            moves.append(move_host("h1", to, planned=True))
            time.sleep(1.0)
    finally:
        results = [p.stop() for p in probers]
    switchovers = [round(m.started, 3) for m in moves]
    plugs = [m.plugged for m in moves if m.plugged is not None]
    for address, probes in zip(h1.eids, results):
        lost = [round(x.sent, 3) for x in probes if x.received is None]
        in_plug = [t for t in lost if any(a <= t <= b + PLUG_SETTLE for a, b in plugs)]
        moving = [t for t in lost if t not in in_plug]
        per_move = [sum(1 for t in moving if min(switchovers, key=lambda s: abs(s - t)) == s) for s in switchovers]
        assert max(per_move) <= OWN_SITE_PORT_STALL and len(in_plug) <= PLUG_STALL, \
            (f"{address}: {per_move} lost per move and {len(in_plug)} while a vif was plugged, sent at {lost[:10]}; "
             f"switchovers at {switchovers}, plugs at {plugs}")
    assert planned_leftovers(lab) == []


def test_a_restarted_controller_is_ready_only_when_it_drives_every_switch(lab):
    """The switches keep the last controller's flows and its lines stay in the log: neither says
    that a new controller has its switches (they reconnect after their back-off)."""
    assert lab_controller.stop()
    lab_controller.start(lab)
    lab_controller.wait_ready(lab)
    rest = lab_controller.read_state().controller_rest
    with urllib.request.urlopen(f"{rest}/lisp/v1/health", timeout=5) as response:
        health = json.loads(response.read())
    assert {name: x["connected"] for name, x in health["xtrs"].items()} == {s.name: True for s in lab.sites}
