"""End to end: RLOC probing notices a cut underlay link and traffic fails over, then returns.

Lab: prefix lp-, management 198.19.236.0/24, controller port 6697.
dc3 has two RLOCs; the test topology (`failover.failover_topology`) makes
198.18.4.2 (its second link) priority 1 and 198.18.3.2 priority 2.  h1 (dc1)
pings h5 (dc3) every 10 ms while the core router's end of the primary's link
goes down and, later, up again (`ip link set` inside the core's namespace).
The real controller probes every 0.5 s and declares an RLOC down after 3
missed probes.  No timing is asserted here (the figures are in
bench/bench_failover.py): only that traffic moved, recovered, and came back.
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
    with controller_lab(env, failover.failover_topology(copy, copy), rloc_probing=failover.PROBING) as state:
        yield state


@pytest.fixture(autouse=True)
def flows_on_failure(request, lab):
    yield
    dump_lab_on_failure(request, lab)


def test_traffic_goes_to_the_best_priority_rloc(lab):
    out = running.exec_in("h1", ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", "10.3.0.10"], state=lab, check=False)
    assert out.returncode == 0, out.stdout
    assert failover.encap_rloc(lab, "dc1", "10.3.0.0/16") == failover.PRIMARY


def test_cut_link_fails_over_to_the_next_priority_and_traffic_returns_when_it_is_back(lab):
    (cycle,) = failover.run(lab, cycles=1)
    print(cycle)
    # The ping recovered on the backup RLOC while the primary's link was down ...
    assert cycle.outage_ms is not None, cycle
    assert cycle.flow_moved_ms is not None and cycle.flow_back_ms is not None, cycle
    # ... and kept being answered once the flow went back to the primary.
    assert cycle.answered_after_restore > 0 and cycle.lost_after_restore <= 2, cycle
    log = lab_controller.log_path().read_text(errors="replace")
    assert f"RLOC {failover.PRIMARY} is down" in log and f"RLOC {failover.PRIMARY} is up again" in log
    # Only dc1's (and dc2's, if it talked to dc3) view changed: dc3 never declared its peers down.
    assert "RLOC 198.18.1.2 is down" not in log


def test_both_rlocs_of_the_multihomed_site_answer_probes(lab):
    """Probes reach dc3's controller on each of its RLOCs (it listens on both)."""
    assert running.exec_in("h1", ["ping", "-n", "-c", "1", "-W", "2", "10.3.0.11"], state=lab,
                           check=False).returncode == 0
    log = lab_controller.log_path().read_text(errors="replace")
    assert "RLOC 198.18.3.2 is down" not in log
