"""Mobility with a clustered mapping system, against one Map-Server, in the same run (issue 17).

Scenario: the mobility scenario of bench_mobility (lisp_ryu/lab/scenarios/mobility.py: h5
pings h1 every 10 ms while h1 moves dc1 -> dc2 -> dc1 ..., 2 s apart; 6 moves, quick: 3)
twice: first on three-dc (the controller's embedded Map-Server, a file journal), then on
three-dc-cluster (three standalone Map-Servers on a 3-member etcd cluster, every xTR
registering with all three: a move's Map-Notify goes out only once the new registration is
committed in etcd).  Then, on the cluster lab, a Map-Resolver dies under request load.

Figures:

* ``mobility.cluster.outage_ms.median``: the median outage per move on the cluster.
  Baseline: the same median on the single Map-Server, measured in the same run; the ratio
  is the cost of the cluster (goal: within noise, <= 1.5).
* ``mapserver.cluster.lab_failover_gap_ms``: in the cluster lab, an ITR in the core
  router's namespace asks 20 times a second for registered EIDs, one Map-Resolver at a time,
  moving to the next after the xTR's wait (lisp_ryu/xtr/resolution.py FAILOVER_MIN, which
  is what the xTR waits when answers take milliseconds); ms1 gets SIGKILL.  The value is
  the longest a request waited for its answer; the baseline is that wait, so the ratio says
  how much beyond the wait itself the failover cost.

Runs as root with etcd installed.  Labs: prefixes ``ms-`` and ``mc-``, management
198.19.226.0/24 and 198.19.225.0/24, controller ports 6668/6669, REST 18668/18669; torn
down on every exit path.  Probes go only between the lab's namespaces.

`python bench/bench_cluster_lab.py [--quick]` prints the figures.
"""

from __future__ import annotations

import ipaddress
import os
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.lablib import isolated_lab  # noqa: E402
from lisp_ryu.lab import cluster, cluster_load, controller_config  # noqa: E402
from lisp_ryu.lab import controller as lab_controller  # noqa: E402
from lisp_ryu.lab.scenarios import mobility  # noqa: E402
from lisp_ryu.xtr.resolution import FAILOVER_MIN  # noqa: E402

HERE = Path(__file__).resolve().parent
TOPOLOGIES = HERE.parent / "topologies"
INTERVAL = 0.01
PAUSE = 2.0
TARGET_RATIO = 1.5
LABS = {  # name: (topology, prefix, management subnet, OpenFlow port, REST port)
    "single": ("three-dc.yaml", "ms-", "198.19.226.0/24", 6668, 18668),
    "cluster": ("three-dc-cluster.yaml", "mc-", "198.19.225.0/24", 6669, 18669),
}


def _mobility(name: str, moves: int, progress) -> tuple[mobility.MobilityReport, dict | None]:
    topology, prefix, subnet, port, rest = LABS[name]
    with isolated_lab(TOPOLOGIES / topology, prefix, subnet, port) as state:
        lab_controller.start(state, extra_args=("--wsapi-port", str(rest)))
        lab_controller.wait_ready(state)
        progress(f"{name}: {moves} moves")
        report = mobility.run(moves=moves, pause=PAUSE, interval=INTERVAL, host="h1", to="dc2", pinger="h5",
                              progress=progress)
        gap = _failover_gap(state, progress) if state.map_server_nodes else None
        return report, gap


def _failover_gap(state, progress) -> dict:
    """The longest wait of an ITR's Map-Request while ms1 dies (see the module docstring)."""
    nodes = [n["address"] for n in state.map_server_nodes]
    core = next(n for n in state.nodes if n.kind == "router")
    bind = core.addresses[0].split("/")[0]
    dc3 = next(s for s in state.sites if s.name == "dc3")
    rloc = ipaddress.ip_address(dc3.rlocs[0].address)
    eids = [(42, ipaddress.ip_address("10.3.128.1") + i) for i in range(40)]
    registrations = cluster_load.RegistrationLoad(core.namespace, bind, str(rloc), controller_config.site_key(dc3),
                                                  nodes, iter(eids), rate=100).start()
    deadline = time.monotonic() + 5
    while len(registrations.acked()) < len(eids) and time.monotonic() < deadline:
        time.sleep(0.05)
    registrations.stop()
    acked = list(registrations.acked())
    rng = random.Random(17)
    requests = cluster_load.RequestLoad(core.namespace, bind, nodes, lambda: (rng.choice(acked), rloc), rate=20,
                                        timeout=FAILOVER_MIN).start()
    try:
        time.sleep(2)
        cluster.kill(state.map_server_nodes[0]["name"])
        progress("cluster: ms1 killed under request load")
        time.sleep(3)
    finally:
        requests.stop()
    gap, _ = requests.gap()
    return {"gap_ms": gap * 1000.0, "requests": len(requests.requests),
            "unanswered": sum(r.answered is None for r in requests.requests),
            "wrong": sum(r.answered is not None and not r.positive for r in requests.requests)}


def measure(quick: bool = False, progress=lambda line: None) -> dict:
    moves = 3 if quick else 6
    single, _ = _mobility("single", moves, progress)
    clustered, gap = _mobility("cluster", moves, progress)
    return {"single": single, "cluster": clustered, "gap": gap}


def figures(result: dict) -> dict[str, dict]:
    single, clustered = result["single"].summary(), result["cluster"].summary()
    base, value = single["outage_ms"]["median"], clustered["outage_ms"]["median"]
    out = {
        "mobility.cluster.outage_ms.median": {
            "value": value, "unit": "ms", "baseline": base, "ratio": value / base if base else float("nan"),
            "target": TARGET_RATIO, "target_is_max": True,
            "moves": clustered["moves"], "recovered": clustered["recovered"],
            "max_ms": clustered["outage_ms"]["max"], "single_max_ms": single["outage_ms"]["max"],
            "single_recovered": single["recovered"],
        },
    }
    gap = result["gap"]
    if gap is not None:
        wait_ms = FAILOVER_MIN * 1000.0
        out["mapserver.cluster.lab_failover_gap_ms"] = {
            "value": gap["gap_ms"], "unit": "ms", "baseline": wait_ms, "ratio": gap["gap_ms"] / wait_ms,
            "target": None, **{k: v for k, v in gap.items() if k != "gap_ms"},
        }
    return out


def run(quick: bool = False) -> dict[str, dict]:
    if not cluster.etcd_available():
        raise RuntimeError("bench_cluster_lab needs etcd (Debian etcd-server)")
    return figures(measure(quick))


if __name__ == "__main__":
    result = measure("--quick" in sys.argv[1:], progress=lambda line: print(f"== {line}", flush=True))
    for name in ("single", "cluster"):
        print(f"{name}:")
        print(mobility.format_table(result[name]))
    for name, f in figures(result).items():
        print(f"{name:48} {f['value']:8.1f} {f['unit']}  baseline {f['baseline']:.1f}  ratio {f['ratio']:.2f}")
