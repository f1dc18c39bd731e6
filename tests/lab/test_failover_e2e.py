"""End to end: a multihomed site loses its best RLOC's link and the switch fails over by itself.

Lab: prefix lp-, management 198.19.236.0/24, controller port 6697.
dc3 has two RLOCs; the test topology (`failover.failover_topology`) makes
198.18.4.2 (its second link) priority 1 and 198.18.3.2 priority 2.  The
controller runs with the shipped defaults: every xTR keeps BFD ports
(100 ms x 3) towards the RLOCs of its map-cache and tunnels to a multi-RLOC
entry through a fast-failover group; RLOC probing as shipped (30 s x 3),
far too slow to be what moves the traffic here.  h1 (dc1) sends an ICMP echo
to h5 (dc3) every 1 ms while the core router's end of the primary's link
goes down and, later, up again (`ip link set` inside the core's namespace).
"""

from __future__ import annotations

import pytest

from lisp_ryu.lab import controller as lab_controller
from lisp_ryu.lab import running
from lisp_ryu.lab.scenarios import failover

from conftest import controller_lab, dump_lab_on_failure, private_lab

pytestmark = [pytest.mark.lab]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, module_monkeypatch):
    env, copy = private_lab(tmp_path_factory, module_monkeypatch, "failover", "lp-", "three-dc.yaml",
                            "198.19.236.0/24", 6697)
    with controller_lab(env, failover.failover_topology(copy, copy),
                        log_must_not_say=("cannot update the BFD ports",)) as state:
        yield state


@pytest.fixture(autouse=True)
def flows_on_failure(request, lab):
    yield
    dump_lab_on_failure(request, lab)


def test_traffic_goes_to_the_best_priority_rloc_through_a_fast_failover_group(lab):
    out = running.exec_in("h1", ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", "10.3.0.10"], state=lab, check=False)
    assert out.returncode == 0, out.stdout
    failover.wait_for(lambda: failover.active_rloc(lab, "h1", "10.3.0.10") == failover.PRIMARY, 10,
                      "dc1 to tunnel to the primary")
    groups = running.ofctl("dc1", "dump-groups", state=lab)
    assert "type=ff" in groups and "watch_port:" in groups, groups


def test_cut_link_fails_over_in_the_switch_within_a_second_and_traffic_returns(lab):
    cycles = failover.run(lab, cycles=2)
    for cycle in cycles:
        print(cycle)
        # The probes were answered through the backup RLOC in under a second after the cut ...
        assert cycle.outage_ms is not None and cycle.outage_ms < 1000.0, cycle
        assert cycle.moved_ms is not None and cycle.back_ms is not None, cycle
        # ... and kept being answered once the switch went back to the primary.  The link's own
        # first milliseconds up are the underlay's (the ITR is still on the backup then): a
        # bound there, and at most 2 lost at the return, as before.
        assert cycle.answered_after_restore > 0 and cycle.lost_at_return <= 2, cycle
        assert cycle.lost_at_link_up <= 20, cycle
    log = lab_controller.log_path().read_text(errors="replace")
    # The controller was not what moved the traffic: probing (30 s) never declared the primary down.
    assert f"RLOC {failover.PRIMARY} is down" not in log
    assert failover.leftovers(lab, lab_controller.mesh_sites()) == []


def test_both_rlocs_of_the_multihomed_site_answer_probes(lab):
    """Probes reach dc3's controller on each of its RLOCs (it listens on both)."""
    assert running.exec_in("h1", ["ping", "-n", "-c", "1", "-W", "2", "10.3.0.11"], state=lab,
                           check=False).returncode == 0
    log = lab_controller.log_path().read_text(errors="replace")
    assert "RLOC 198.18.3.2 is down" not in log


BFD_SHOW = """---- lfb9e1be1f ----
  Forwarding: true
  Detect Multiplier: 3
  TX Interval: Approx 75ms
  RX Interval: Approx 75ms
  Detect Time: now +192ms
  Local Session State: up
---- lfcd795790 ----
  Forwarding: true
  Detect Multiplier: 3
  TX Interval: Approx 75ms
  RX Interval: Approx 75ms
  Detect Time: now +2795ms
  Local Session State: up
---- lf00000001 ----
  Forwarding: false
  Detect Time: now +2661ms
  Local Session State: down
"""


def test_a_session_just_up_on_the_peers_slow_interval_is_not_armed():
    """Right after coming up a session still runs on the peer's pre-up interval (1 s x 3): a cut
    then took 2.9 s to notice.  Only up sessions count; a down one is `armed`'s other test."""
    assert failover.slow_sessions(BFD_SHOW) == ["lfcd795790"]
    assert failover.slow_sessions(BFD_SHOW.replace("+2795ms", "+180ms")) == []


def test_probes_lost_as_the_link_comes_up_are_told_apart_from_the_return():
    """A probe lost in the restored link's first LINK_UP_MS is the underlay's; later ones are the return's."""
    from lisp_ryu.lab.scenarios.probe import Probe

    restored, back = 100.0, 101.5
    probes = tuple(Probe(k, restored + k / 1000.0, None if k in (0, 2, 1500, 1501) else restored + k / 1000.0 + 0.001)
                   for k in range(2000))
    cycle = failover.outcome(probes, 99.0, 99.2, restored, back, restored + 2.0)
    assert (cycle.lost_after_restore, cycle.lost_at_link_up, cycle.lost_at_return) == (4, 2, 2)
    assert cycle.lost_after_restore_ms == (0.0, 2.0, 1500.0, 1501.0)
