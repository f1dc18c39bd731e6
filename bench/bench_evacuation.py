"""Evacuation: 200 workloads leave one site for another at once, a rack drained for
maintenance (lisp_ryu/lab/scenarios/evacuation.py, lisp_ryu/lab/evacuate.py).

Scenario: a generated lab of three sites around a core router and the embedded
Map-Server, 200 workloads at dc1, one host at dc2, the prober p3 at dc3, driven
by the lisp-ryu controller.  One prober process pings every workload in turn,
each every 50 ms (4,000 probes a second: each probe crosses two userspace
switches each way, on the same two cores as the switches and the controller).
First one workload moves dc1 -> dc2 -> dc1 -> dc2 -> dc1 alone (4 moves, 1.5 s
apart), then all 200 move dc1 -> dc2 at once: every new vif (a tap of dc2's br-int)
prepared first, then every switchover from 32 threads, then the old ports in one OVSDB
transaction.  When each has answered again, every switch's flows and groups
are checked for stale entries (old-site delivery, classification of a departed
host, mappings or redirects to an old RLOC, leftover planned-move flows).

Figures:

* ``mobility.evacuation_200.outage_ms.p99`` / ``.p50`` / ``.max``: per workload,
  the longest time without a reply from its last reply before its own
  switchover on (a workload that never answers again within 30 s counts its
  whole window).  Baseline: one move's outage measured the same way in the same
  run (median of the 4 single moves), so the ratio says how much worse a
  workload fares when 199 others move with it.  The goal is p99 <= 500 ms: as a
  ratio target that is 500 / baseline (``target_ms`` says so).
* ``mobility.evacuation_200.lost_workloads``: workloads that did not answer
  again; baseline the number of workloads (the ratio is the share lost); target 0.
  Alongside: probes lost, stale flows, the time until every workload answered,
  the preparation time and the spread of the switchovers.
* ``mobility.evacuation_200.planned.outage_ms.p99`` / ``.p50`` / ``.max`` and
  ``.planned.lost_workloads``: the same on a fresh lab, as a rack drain an
  orchestrator announces (POST /lisp/v1/moves with each new port, as
  `lisp-ryu lab evacuate --planned` does, after plugging every vif and before
  the switchovers); baseline the median of its own single planned moves.
* ``mobility.evacuation_200.bystander_outage_ms``: the longest reply gap of b1,
  a workload that stays at the old site, from the first switchover on.  It
  moves nothing and no mapping of it changes, so it is what the lab's own
  switches cost meanwhile (the old site's userspace OVS handling 200 ports
  going down and away); baseline the same single-move median.

Runs as root.  Everything lives in its own lab: prefix ``eb-``, a private lab
directory, management subnet 198.19.222.0/24, controller port 6662, REST API on
127.0.0.1:18662; torn down on every exit path.  Probes go only between the
lab's namespaces.  `python bench/bench_evacuation.py [--quick]` prints the
report (quick: 50 workloads, 2 single moves).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lisp_ryu.lab import controller as lab_controller  # noqa: E402
from lisp_ryu.lab.scenarios import evacuation  # noqa: E402
from bench.lablib import isolated_lab  # noqa: E402

LAB_PREFIX = "eb-"
MANAGEMENT_SUBNET = "198.19.222.0/24"
MANAGEMENT_PORT = 6662
REST_PORT = 18662
WORKLOADS = 200
QUICK_WORKLOADS = 50
SINGLE_MOVES = 4
TARGET_P99_MS = 500.0


def measure(quick: bool = False, progress=lambda line: None) -> tuple[evacuation.EvacuationReport, ...]:
    """The evacuation dc1 -> dc2 unplanned, then the same as planned moves, each on a lab of its own."""
    return tuple(_measure(quick, planned, progress) for planned in (False, True))


def _measure(quick: bool, planned: bool, progress) -> evacuation.EvacuationReport:
    workloads = QUICK_WORKLOADS if quick else WORKLOADS
    with tempfile.TemporaryDirectory(prefix="eb-topo-") as tmp:
        topology = evacuation.write_topology(workloads, Path(tmp) / "evacuation.yaml")
        with isolated_lab(topology, LAB_PREFIX, MANAGEMENT_SUBNET, MANAGEMENT_PORT) as state:
            lab_controller.start(state, extra_args=("--wsapi-port", str(REST_PORT)))
            lab_controller.wait_ready(state)
            return evacuation.run(single_moves=2 if quick else SINGLE_MOVES, planned=planned, progress=progress)


def figures(reports: tuple[evacuation.EvacuationReport, ...]) -> dict[str, dict]:
    out = {}
    for report in reports:
        out.update(_figures(report))
    return out


def _figures(report: evacuation.EvacuationReport) -> dict[str, dict]:
    s = report.summary()
    n = s["workloads"]
    name = f"mobility.evacuation_{n}" + (".planned" if report.planned else "")
    base = s["baseline_ms"]
    detail = {"workloads": n, "interval_ms": s["interval_ms"], "baseline_moves_ms": s["baseline_moves"],
              "lost_workloads": s["lost_workloads"], "lost_probes": s["lost_probes"], "stale_flows": s["stale_flows"],
              "recovered_after_s": s["recovered_after_s"], "prepared_s": s["prepared_s"],
              "switchover_spread_ms": s["spread_ms"]}
    out = {}
    for q in ("p99", "p50", "max"):
        value = s["outage_ms"][q]
        out[f"{name}.outage_ms.{q}"] = {
            "value": value, "unit": "ms", "baseline": base, "ratio": value / base if base else float("nan"),
            "target": None, **detail}
    p99 = out[f"{name}.outage_ms.p99"]
    p99.update(target=TARGET_P99_MS / base if base else None, target_is_max=True, target_ms=TARGET_P99_MS)
    if s["bystander_ms"] is not None:  # no move of its own: what the lab's switches cost it meanwhile
        out[f"{name}.bystander_outage_ms"] = {"value": s["bystander_ms"], "unit": "ms", "baseline": base,
                                             "ratio": s["bystander_ms"] / base if base else float("nan"),
                                             "target": None}
    out[f"{name}.lost_workloads"] = {"value": s["lost_workloads"], "unit": "workloads", "baseline": n,
                                     "ratio": s["lost_workloads"] / n, "target": 0, "target_is_max": True,
                                     "stale_flows": s["stale_flows"]}
    return out


def run(quick: bool = False) -> dict[str, dict]:
    return figures(measure(quick))


if __name__ == "__main__":
    reports = measure("--quick" in sys.argv[1:], progress=lambda line: print(f"== {line}", flush=True))
    for report in reports:
        print(evacuation.format_report(report))
    for key, f in figures(reports).items():
        target = "" if f["target"] is None else f" (target ratio <= {f['target']:g})"
        print(f"{key:48} {f['value']:10.1f} {f['unit']}  baseline {f['baseline']:.1f}  ratio {f['ratio']:.2f}{target}")
