"""RLOC failover: how long traffic to a multihomed site is broken when its best RLOC's link is cut
(lisp_ryu/lab/scenarios/failover.py), with the SHIPPED defaults: failover in the switch (per-peer
BFD ports, 100 ms x 3, and fast-failover groups; lisp_ryu/flows/failover.py), probing as shipped.

The real controller drives the three-dc lab with dc3's 198.18.4.2 at priority 1
and 198.18.3.2 at priority 2.  h1 (dc1) sends an ICMP echo to h5 (dc3) every
1 ms; per cycle the core router's end of 198.18.4.2's link goes down, the
ITR's switch fails over by itself, the link comes back and traffic returns.

* ``failover.outage_ms.median`` / ``.max``: per cycle, from the cut to the
  send time of the first probe answered after it (the reply gap, 1 ms
  granularity): detection + switch-over, as the user sees it.  Target:
  median <= 300 ms (issue 20).
* ``failover.moved_ms.median``: from the cut until `ofproto/trace` of the
  ping's packet at the ITR shows another RLOC (polled every ~20 ms).
* ``failover.back_ms.median``: from restoring the link until it shows the
  primary again; ``failover.bfd_up_ms.median``: until the ITR's BFD session
  to the primary is up.  The return follows BFD, and BFD is slow to come up:
  while a session is not up OVS sends at most one packet a second (RFC 5880
  6.8.3, `bfd_min_tx`), and the three-way handshake needs one from each end.

Baseline: BFD's detection time min_rx x mult (300 ms) from the settings the
run used; ratio = measured / bound.  A cut lands at a random point between
two BFD packets (sent every 75-100 ms, OVS jitters them), so detection takes
between (mult - 1) x interval and mult x interval after the cut, plus the
datapath's next look at the port (OVS re-reads liveness in its main loop).

`python bench/bench_failover.py [--quick] [--probing-only]` prints the
per-cycle outcomes; `--probing-only` turns failover in the switch off and
probes every 0.5 s x 3 (the figures before issue 20).  Runs as root; its lab
has prefix ``fo-``, management 198.19.237.0/24 and controller port 6698,
torn down on every exit path.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from lisp_ryu import config as config_mod  # noqa: E402
from lisp_ryu.lab import controller as lab_controller  # noqa: E402
from lisp_ryu.lab.scenarios import failover  # noqa: E402
from lisp_ryu.lab import state as lab_state  # noqa: E402
from bench.lablib import isolated_lab  # noqa: E402

HERE = Path(__file__).resolve().parent
TOPOLOGY = HERE.parent / "topologies" / "three-dc.yaml"
LAB_PREFIX = "fo-"
MANAGEMENT_SUBNET = "198.19.237.0/24"
MANAGEMENT_PORT = 6698
TARGET_MS = 300.0


@contextmanager
def controller_lab(probing_only: bool = False) -> Iterator[lab_state.LabState]:
    """three-dc with the failover priorities, driven by the controller with the shipped defaults."""
    with isolated_lab(TOPOLOGY, LAB_PREFIX, MANAGEMENT_SUBNET, MANAGEMENT_PORT,
                      edit=lambda path: failover.failover_topology(path, path)) as state:
        if probing_only:
            lab_controller.start(state, rloc_probing=failover.PROBING, failover={"enabled": False})
        else:
            lab_controller.start(state)
        lab_controller.wait_ready(state)
        yield state


def measure(quick: bool = False, probing_only: bool = False) -> tuple[list[failover.FailoverOutcome], list[str]]:
    with controller_lab(probing_only) as state:
        cycles = failover.run(state, cycles=2 if quick else 8, phase=0.1 if not probing_only else 0.5)
        # The shipped BFD mesh keeps every pair of sites' ports, used or not: not leftovers.
        return cycles, failover.leftovers(state, lab_controller.mesh_sites())


def figures(cycles: list[failover.FailoverOutcome], stale: list[str]) -> dict[str, dict]:
    bfd = config_mod.BfdConfig()
    bound_ms = float(bfd.min_rx * bfd.mult)
    outages = [c.outage_ms for c in cycles if c.outage_ms is not None]
    moved = [c.moved_ms for c in cycles if c.moved_ms is not None]
    back = [c.back_ms for c in cycles if c.back_ms is not None]
    bfd_up = [c.bfd_up_ms for c in cycles if c.bfd_up_ms is not None]
    common = {"cycles": len(cycles), "recovered": len(outages), "bfd": asdict(bfd),
              "lost_after_restore": sum(c.lost_after_restore for c in cycles), "stale": len(stale)}
    nan = float("nan")

    def figure(values, stat, baseline, target, **extra):
        value = stat(values) if values else nan
        out = {"value": value, "unit": "ms", "baseline": baseline, "ratio": value / baseline,
               "target": target, **common, **extra}
        if target is not None:
            out["target_is_max"] = True
        return out

    return {
        "failover.outage_ms.median": figure(outages, statistics.median, bound_ms, TARGET_MS / bound_ms),
        "failover.outage_ms.max": figure(outages, max, bound_ms, None),
        "failover.moved_ms.median": figure(moved, statistics.median, bound_ms, None),
        "failover.back_ms.median": figure(back, statistics.median, bound_ms, None),
        "failover.bfd_up_ms.median": figure(bfd_up, statistics.median, bound_ms, None),
    }


def run(quick: bool = False) -> dict[str, dict]:
    return figures(*measure(quick))


if __name__ == "__main__":
    cycles, stale = measure("--quick" in sys.argv, "--probing-only" in sys.argv)
    for c in cycles:
        print(json.dumps(asdict(c)))
    for line in stale:
        print("STALE", line)
    for name, fig in figures(cycles, stale).items():
        print(f"{name:34} {fig['value']:9.1f} {fig['unit']}  baseline {fig['baseline']:.0f}  "
              f"ratio {fig['ratio']:.2f}" + (f"  target <= {fig['target']:.2f}" if fig["target"] else ""))
