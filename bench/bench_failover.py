"""RLOC failover: how long a ping to a multihomed site is broken when its best RLOC's link is cut
(lisp_ryu/lab/scenarios/failover.py), against the configured probe detection bound.

The real controller drives the three-dc lab with dc3's 198.18.4.2 at priority 1
and 198.18.3.2 at priority 2, probing every 0.5 s (jitter 10 %, timeout
0.2 s) and declaring an RLOC down after 3 missed probes.  h1 (dc1) pings h5
(dc3) every 10 ms; per cycle the core router's end of 198.18.4.2's link goes
down, the ITR fails over, the link comes back and traffic returns.

* ``failover.outage_ms.median`` / ``.max``: per cycle, from the cut to the
  send time of the first ping answered after it: detection + reprogramming,
  as the user sees it (10 ms granularity).
* ``failover.flow_moved_ms.median``: from the cut to the ITR switch's own
  notification (OpenFlow flow monitor) that the encap flow changed.
* ``failover.flow_back_ms.median``: from restoring the link to the flow's
  return (at most one probe interval plus a round trip: recovery waits for
  the next probe).

Baseline: the configured detection bound interval x misses (1500 ms), from
the same settings the run used; ratio = measured / bound.  A cut lands at a
random point of a probe interval, so detection takes between (misses - 1) x
interval x (1 - jitter) + timeout and misses x interval x (1 + jitter) +
timeout (1850 ms, ratio 1.23), about (misses - 0.5) x interval + timeout
(1450 ms) on average; a tcpdump of the probes during a cycle matched that
model to a few ms.  Targets: the max within the worst case (ratio <= 1.23);
the median is reported without one (it is the schedule's, not the code's);
the return within one probe interval plus jitter.

`python bench/bench_failover.py [--quick]` prints the per-cycle outcomes.
Runs as root; its lab has prefix ``fo-``, management 198.19.237.0/24 and
controller port 6698, torn down on every exit path.
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


from lisp_ryu.lab import controller as lab_controller  # noqa: E402
from lisp_ryu.lab.scenarios import failover  # noqa: E402
from lisp_ryu.lab import state as lab_state  # noqa: E402
from bench.lablib import isolated_lab  # noqa: E402

HERE = Path(__file__).resolve().parent
TOPOLOGY = HERE.parent / "topologies" / "three-dc.yaml"
LAB_PREFIX = "fo-"
MANAGEMENT_SUBNET = "198.19.237.0/24"
MANAGEMENT_PORT = 6698


@contextmanager
def controller_lab() -> Iterator[lab_state.LabState]:
    """three-dc with the failover priorities, driven by the controller with fast probing."""
    with isolated_lab(TOPOLOGY, LAB_PREFIX, MANAGEMENT_SUBNET, MANAGEMENT_PORT,
                      edit=lambda path: failover.failover_topology(path, path)) as state:
        lab_controller.start(state, rloc_probing=failover.PROBING)
        lab_controller.wait_ready(state)
        yield state


def measure(quick: bool = False) -> list[failover.FailoverOutcome]:
    with controller_lab() as state:
        return failover.run(state, cycles=2 if quick else 8)


def figures(cycles: list[failover.FailoverOutcome]) -> dict[str, dict]:
    p = failover.PROBING
    bound_ms = p["interval"] * p["misses"] * 1000.0
    worst_ms = (p["interval"] * p["misses"] * (1 + p["jitter"]) + p["timeout"]) * 1000.0
    outages = [c.outage_ms for c in cycles if c.outage_ms is not None]
    moved = [c.flow_moved_ms for c in cycles if c.flow_moved_ms is not None]
    back = [c.flow_back_ms for c in cycles if c.flow_back_ms is not None]
    common = {"cycles": len(cycles), "recovered": len(outages), "probing": dict(p),
              "lost_after_restore": sum(c.lost_after_restore for c in cycles)}
    nan = float("nan")

    def figure(values, stat, baseline, target, **extra):
        value = stat(values) if values else nan
        out = {"value": value, "unit": "ms", "baseline": baseline, "ratio": value / baseline,
               "target": target, **common, **extra}
        if target is not None:
            out["target_is_max"] = True
        return out

    return {
        "failover.outage_ms.median": figure(outages, statistics.median, bound_ms, None),
        "failover.outage_ms.max": figure(outages, max, bound_ms, worst_ms / bound_ms, worst_case_ms=worst_ms),
        "failover.flow_moved_ms.median": figure(moved, statistics.median, bound_ms, None),
        "failover.flow_back_ms.median": figure(back, statistics.median, p["interval"] * 1000.0,
                                               1 + p["jitter"]),
    }


def run(quick: bool = False) -> dict[str, dict]:
    return figures(measure(quick))


if __name__ == "__main__":
    cycles = measure("--quick" in sys.argv)
    for c in cycles:
        print(json.dumps(asdict(c)))
    for name, fig in figures(cycles).items():
        print(f"{name:34} {fig['value']:9.1f} {fig['unit']}  baseline {fig['baseline']:.0f}  "
              f"ratio {fig['ratio']:.2f}" + (f"  target <= {fig['target']:.2f}" if fig["target"] else ""))
