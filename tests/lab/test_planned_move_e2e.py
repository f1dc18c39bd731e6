"""End to end: planned moves (POST /lisp/v1/moves, `lisp-ryu lab move --planned`) under a 1 ms ping.

Lab: prefix pm-, management 198.19.227.0/24, controller port 6677.  h5 (dc3)
pings h1 every 1 ms while h1 moves dc1 -> dc2 -> dc1 -> dc2, each move
announced first: dc3 replicates to both sites (a group of type ALL), dc2
holds h1's traffic until h1 appears there.  Duplicated replies are expected
during the window and are not losses.  Afterwards no planned-move flow or
group is left anywhere, and nothing dangles (`failover.leftovers`).

The goal is no lost ping; what holds today is a bounded loss: 0-13 probes per move were
lost in the runs so far (a gap of 10-45 ms, no worse than an unplanned move), and where
they go is not yet found (the held probes delivered on arrival, or h1's first replies).
The bound below catches a move that stalls (one that fell back to the redirect path lost
about a second).
"""

from __future__ import annotations

import re
import time

import pytest

from lisp_ryu.lab import running
from lisp_ryu.lab.scenarios import failover, mobility

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
MAX_LOST = 40  # probes at 1 ms: the goal is 0 (see the module docstring)


def test_planned_moves_recover_with_bounded_loss_at_1ms(lab):
    report = mobility.run(moves=4, pause=1.0, interval=0.001, host="h1", to="dc2", pinger="h5", planned=True)
    print(mobility.format_table(report))
    assert all(m.recovered for m in report.moves), mobility.format_table(report)
    assert max(m.lost for m in report.moves) <= MAX_LOST, mobility.format_table(report)
    assert planned_leftovers(lab) == []
    # Once the ports' grace is over: every BFD port is used at one end at least, has its port back
    # and is up; no flow or group dangles.
    time.sleep(GRACE + 0.5)
    failover.wait_for(lambda: failover.armed(lab), 10, f"every BFD session up ({failover.bfd_ports(lab)})")
    assert failover.leftovers(lab) == []
