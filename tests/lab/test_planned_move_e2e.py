"""End to end: moves under a 1 ms ping and a TCP stream, planned (POST /lisp/v1/moves,
`lisp-ryu lab move --planned`) and unplanned.

Lab: prefix pm-, management 198.19.227.0/24, controller port 6677.  h5 (dc3)
pings h1 every 1 ms and streams TCP to it while h1 moves dc1 -> dc2 -> dc1 -> dc2.
Planned, each move announced once the new interface is plugged, with its port:
dc3 replicates to both sites (a group of type ALL) and dc2's switch delivers h1's
traffic to that port from then on, nothing of it through the controller.
Announced without the port, dc2 holds h1's traffic in the controller until h1
appears there, then delivers it.  Duplicated replies are expected during the
window and are not losses.  Afterwards no planned-move flow or group is left
anywhere, and nothing dangles (`failover.leftovers`).  Unplanned: the controller
tells the old site, the new site and the ITR at the host's arrival (glue/moves.py);
the TCP stream gets through with every byte.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

from lisp_ryu.lab import controller as lab_controller
from lisp_ryu.lab import running
from lisp_ryu.lab.scenarios import failover, mobility
from lisp_ryu.lab.scenarios.foreign_itr import ForeignItr
from lisp_ryu.lab.scenarios.probe import Prober

from conftest import controller_lab, dump_lab_on_failure, private_lab

pytestmark = [pytest.mark.lab]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, module_monkeypatch):
    env, copy = private_lab(tmp_path_factory, module_monkeypatch, "planned", "pm-", "three-dc.yaml",
                            "198.19.227.0/24", 6677)
    with controller_lab(env, copy, failover={"grace": GRACE}) as state:
        yield state


@pytest.fixture(autouse=True)
def flows_on_failure(request, lab):
    yield
    dump_lab_on_failure(request, lab)


def planned_leftovers(state) -> list[str]:
    """Flows with a PLANNED_MOVE cookie (owner byte 6) or ALL groups still on any site."""
    out = []
    for site in state.sites:
        flows = running.ofctl(site.name, "dump-flows", state=state)
        out += [f"{site.name}: {line.strip()}" for line in flows.splitlines() if re.search(r"cookie=0x6[0-9a-f]{15}", line)]
        groups = running.ofctl(site.name, "dump-groups", state=state)
        out += [f"{site.name}: {line.strip()}" for line in groups.splitlines() if "type=all" in line]
    return out


GRACE = 2.0  # seconds a BFD port outlives its last use (failover.grace), short to check what is left
MAX_LOST = 0  # probes at 1 ms
# Retransmission timeouts of the TCP stream over 4 moves.  The goal is 0, and a planned move
# announced with its port meets it: nothing of the stream waits for the controller.  Seen
# otherwise: 0 over 6 unplanned moves, and 1 over 4 planned ones announced without the port,
# the first, whose learn at the new site came 141 ms late (a 230 ms stall, load average 5 on
# 2 cores): every packet for the workload reached the new site's controller to be held (1 ms
# pings and 1 KiB every 1 ms here), and the host's first packet waited behind them.
MAX_RTOS = 1
MAX_RTOS_PLANNED = 0
# At 1 ms, what a site's own traffic loses while a port is added there (a userspace ovs-vswitchd
# stops forwarding on every port meanwhile): h1's move back home adds its new vif at dc1, where
# the foreign ITR tunnels.  Measured: 5-7 in 3 of 30 moves, 0 in the others (as OWN_SITE_PORT_STALL
# in test_ipv6_moves_e2e).
PORT_ADD_STALL = 10
HELD = re.compile(r"planned move of \[\d+\]\S+: arrived; (\d+) held packets delivered")


def held_since(offset: int) -> list[int]:
    """Per planned arrival logged since `offset`: how many packets the controller had held for it."""
    return [int(n) for n in HELD.findall(lab_controller.log_path().read_text(errors="replace")[offset:])]


def log_size() -> int:
    return len(lab_controller.log_path().read_text(errors="replace"))


def planned_moves(lab, moves: int, **options):
    """h1 moved dc1 <-> dc2 `moves` times as planned moves under h5's 1 ms ping: every move
    recovered, no probe lost, no planned-move flow or group left; the report."""
    report = mobility.run(moves=moves, pause=1.0, interval=0.001, host="h1", to="dc2", pinger="h5", planned=True,
                          **options)
    print(mobility.format_table(report))
    assert all(m.recovered for m in report.moves), mobility.format_table(report)
    assert max(m.lost for m in report.moves) <= MAX_LOST, mobility.format_table(report)
    assert planned_leftovers(lab) == []
    return report


def test_the_answer_says_whether_the_destination_delivers_by_the_moves_flow(lab):
    """Before any move (the module's first test: dc2 never saw h1's traffic, so the switch counts
    its first copy at once): h5 pings h1 every 1 ms, and a move of h1 to dc2 is announced but not
    carried out (its window ends by itself).  The answer says dc2 delivered a copy by the move's
    own flow; that of h2, which nothing sends to, says it did not.  h1 stays reachable at dc1."""
    h1, h2, h5 = (lab.host(name) for name in ("h1", "h2", "h5"))
    prober = Prober(h5.namespace, h1.ip, 0.001)
    prober.start()
    try:
        assert prober.wait_reply(10.0), "no reply before the announcements"
        state = lab_controller.read_state()  # with the controller's REST address
        busy = lab_controller.planned_move(state, h1.iid, h1.ip, "dc2", timeout=1.0, port=40)
        idle = lab_controller.planned_move(state, h2.iid, h2.ip, "dc2", timeout=1.0, port=41)
        time.sleep(0.2)
    finally:
        probes = prober.stop()
    assert busy["installed"] is True and busy["delivering"] is True, busy
    assert idle["installed"] is True and idle["delivering"] is False, idle
    answered = [p for p in probes if p.received is not None]
    assert answered and sum(p.received is None for p in probes if p.sent > answered[0].sent) <= 1
    failover.wait_for(lambda: planned_leftovers(lab) == [], 10, "the windows' flows and groups gone")


def test_planned_moves_lose_nothing_at_1ms(lab):
    offset = log_size()
    report = planned_moves(lab, 4, tcp=True)
    assert report.tcp.intact and report.tcp.rto_events <= MAX_RTOS_PLANNED, mobility.format_table(report)
    # The new site's switch delivered everything: not a packet waited in the controller.
    assert held_since(offset) == [0] * 4
    # Once the ports' grace is over: every BFD port is used at one end at least, has its port back
    # and is up; no flow or group dangles.
    time.sleep(GRACE + 0.5)
    failover.wait_for(lambda: failover.armed(lab), 10, f"every BFD session up ({failover.bfd_ports(lab)})")
    assert failover.leftovers(lab, lab_controller.mesh_sites()) == []


def test_unplanned_moves_keep_a_tcp_stream(lab):
    report = mobility.run(moves=4, pause=1.0, interval=0.001, host="h1", to="dc2", pinger="h5", tcp=True)
    print(mobility.format_table(report))
    assert all(m.recovered for m in report.moves), mobility.format_table(report)
    assert report.tcp.intact, mobility.format_table(report)
    assert report.tcp.rto_events <= MAX_RTOS, mobility.format_table(report)


def test_planned_moves_announced_without_the_port_lose_nothing(lab):
    """An orchestrator that does not give the new port: the new site's controller holds the
    workload's traffic until it appears there, then delivers it."""
    offset = log_size()
    planned_moves(lab, 2, hold=True)
    held = held_since(offset)
    assert len(held) == 2 and all(n > 0 for n in held), held



def test_a_planned_move_loses_nothing_an_itr_unaware_of_it_sends(lab):
    """The core router tunnels to h1's home site every 1 ms as another implementation's ITR would
    (not replicating: it knows nothing of the moves) while h1 makes planned moves.  The old site
    delivers and sends each on to the new site during the window, then redirects: h1 receives
    every datagram (duplicates allowed), and nothing of the windows is left."""
    report = mobility.run(moves=2, pause=1.0, interval=0.001, host="h1", to="dc2", pinger="h5", planned=True,
                          foreign=True)
    print(mobility.format_table(report))
    f = report.foreign
    assert len(f.sent) > 1500 and len(set(f.received)) > 1500, mobility.format_table(report)
    in_port_adds = report.foreign_lost_in_port_adds()
    assert len(f.lost) == in_port_adds <= PORT_ADD_STALL, mobility.format_table(report)
    assert planned_leftovers(lab) == []


def test_the_destination_sends_on_what_an_itr_still_tunnelling_there_sends(lab):
    """An ITR unaware of the move whose map-cache names the destination (dc2: as if h2 had been
    there before) tunnels to it; a planned move of h2 (never moved: dc2 has no redirect for it)
    to dc2 is announced, with a port nothing is plugged into, and not carried out.  Until then
    dc2 drops what it gets for h2; during the window it sends it on to dc1, where h2 still is:
    h2 receives every datagram."""
    state = lab_controller.read_state()
    h2 = state.host("h2")
    assert h2.site == "dc1"
    itr = ForeignItr(state.namespace_of("core"), state.site("dc2").rlocs[0].address, "dc2", h2.ip, h2.namespace,
                     h2.iid, 0.001)
    itr.start()
    try:
        time.sleep(0.3)
        asked = time.time()
        answer = lab_controller.planned_move(state, h2.iid, h2.ip, "dc2", timeout=1.0, port=41)
        answered = time.time()
        time.sleep(0.6)
    finally:
        outcome = itr.stop()
    assert answer["installed"] is True, answer
    before = [s for s, t in enumerate(outcome.sent) if t < asked]
    during = [s for s, t in enumerate(outcome.sent) if answered + 0.05 <= t < answered + 0.5]
    got = set(outcome.received)
    assert before and not got & set(before), "dc2 delivered h2's traffic before any move was announced"
    assert len(during) > 300 and set(during) <= got, f"{len(set(during) - got)} of {len(during)} lost in the window"
    failover.wait_for(lambda: planned_leftovers(lab) == [], 10, "the window's flows gone")


def test_a_silent_workload_moved_as_planned_is_asked_at_its_new_port_and_learned(lab):
    """h1 moves to dc2 as a planned move but sends nothing after its switchover (a guest that
    announces nothing, a hypervisor that sends no RARP; its copied ARP cache needs no request).
    The move's flows serve it meanwhile, its replies included, so nothing from it reaches the
    controller; without being asked it would never be learned, and once the window closed its
    traffic would go back to its old site.  dc2 asks it (an ARP request out of its new port every
    ASK_FIRST after the announcement, then less often): its answer teaches it, and the move ends as usual."""
    from lisp_ryu.lab.move import move_host
    from lisp_ryu.xtr.mobility import ASK_FIRST

    state = lab_controller.read_state()
    h1 = state.host("h1")
    assert h1.site == "dc1"
    offset = log_size()
    learned_line = re.compile(rf"dc2: dynamic EID \[42\]{re.escape(h1.ip)} \S+ arrived on port")
    moved = move_host("h1", "dc2", planned=True, silent=True)
    try:
        learned = failover.wait_for(
            lambda: learned_line.search(lab_controller.log_path().read_text(errors="replace")[offset:]) is not None,
            ASK_FIRST + 3.0, "dc2 to learn the silent h1")
        assert learned - moved.attached < ASK_FIRST + 1.0, (learned, moved.attached)
        failover.wait_for(lambda: planned_leftovers(lab) == [], 5, "the move's window to end")
        out = running.exec_in("h5", ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", h1.ip], state=state,
                              check=False)
        assert out.returncode == 0 and " 0% packet loss" in out.stdout, out.stdout
    finally:
        move_host("h1", "dc1")  # home again, announced, for whatever runs next


def test_a_planned_move_called_off_loses_nothing_and_leaves_nothing(lab):
    """The migration fails after its announcement (`lab move --planned --abort`): the move is
    called off (DELETE /lisp/v1/moves/IID/EID) and the new vif unplugged.  h1 never leaves dc1:
    not a probe of h5's 1 ms ping is lost, every xTR's part ended at once (not when the window
    would have), and nothing of the move is left (before, the window stayed open, the destination
    delivering to the port it had been given)."""
    from lisp_ryu.lab.move import abort_planned_move
    from lisp_ryu.lab.scenarios import stale

    state = lab_controller.read_state()
    h1, h5 = state.host("h1"), state.host("h5")
    assert h1.site == "dc1"
    prober = Prober(h5.namespace, h1.ip, 0.001)
    prober.start()
    try:
        assert prober.wait_reply(10.0)
        began = time.time()
        (answer,) = abort_planned_move("h1", "dc2")
        assert sorted(answer["ended_at"]) == ["dc1", "dc2", "dc3"] and answer["installed"] is True, answer
        assert planned_leftovers(lab) == []  # at once: the window (10 s) is far from over
        time.sleep(0.5)
    finally:
        probes = prober.stop()
    assert [p for p in probes if p.sent > began and p.received is None] == []
    state = lab_controller.read_state()
    assert state.host("h1").site == "dc1" and stale.check(state) == []
    with urllib.request.urlopen(f"{state.controller_rest}/lisp/v1/moves", timeout=5) as response:
        assert json.loads(response.read()) == {"moves": []}
