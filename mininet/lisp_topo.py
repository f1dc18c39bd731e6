#!/usr/bin/env python3
"""The lisp-ryu lab as a Mininet network, with the real control plane and Mininet's CLI.

    python mininet/lisp_topo.py topologies/two-dc.yaml                 # CLI: h1 ping h3, mapcache dc1, move h1 dc2
    python mininet/lisp_topo.py --no-cli topologies/two-dc.yaml        # ping, map-cache, move, ping; exit 0 if all good
    python mininet/lisp_topo.py --static-flows topologies/two-dc.yaml  # no controller: the lab's static flows

Same topology file, names, MACs, port numbers and OVS layout as `lisp-ryu
lab up`: every site is a Mininet node running its own ovsdb-server +
ovs-vswitchd inside its namespace, and the lisp-ryu controller with its
embedded Map-Server is the network's Mininet controller (started and stopped
by Mininet); every site's br-int connects to it over the lab's management
network.  The classes live in lisp_ryu/lab/mininet_net.py (Python API:
`LispMininet(topo=LispTopo(FILE), controller=LispRyuController)`).

Extra CLI verbs: `move HOST SITE`, `mapcache SITE`, `registrations`,
`lisp WHAT [ARGS]` (= `lisp-ryu show WHAT ARGS` against the controller's
REST API); `pingall` pings between the workloads.

Mininet's own runner works too (its network and CLI classes come from here):
    mn --custom mininet/lisp_topo.py --topo lisp,topologies/two-dc.yaml [--test pingall]
(`--topo lisp,FILE,static_flows=1`: static flows).  Careful: `mn` runs
`mn -c`'s cleanup after any error, which kills every `ping`, `mnexec` and
controller on the machine by name; this script never does.
"""

from __future__ import annotations

import argparse
import signal
import sys

from mininet.log import info, setLogLevel

from lisp_ryu.lab.mininet_net import LispCLI, LispMininet, LispRyuController, LispTopo, self_check
from lisp_ryu.lab.state import LabError
from lisp_ryu.lab.topology import TopologyError


def build(topology_path, *, static_flows: bool = False) -> LispMininet:
    """Build and start the network (controller included unless static_flows); stop it with `net.stop()`."""
    net = LispMininet(topo=LispTopo(topology_path), controller=None if static_flows else LispRyuController)
    try:
        net.start()
    except BaseException:
        net.stop()
        raise
    return net


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a lisp-ryu lab topology under Mininet, with the lisp-ryu "
                                     "controller and Mininet's CLI (extra verbs: move, mapcache, registrations, lisp).")
    parser.add_argument("topology", help="topology file, e.g. topologies/two-dc.yaml")
    parser.add_argument("--no-cli", action="store_true",
                        help="build, ping between two sites, show the map-cache, move the host, ping again, stop; "
                        "exit 1 on any failure")
    parser.add_argument("--static-flows", action="store_true",
                        help="no controller: install the lab's static LISP-GPE flows instead")
    args = parser.parse_args(argv)
    setLogLevel("info")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # still runs net.stop() below
    try:
        net = build(args.topology, static_flows=args.static_flows)
    except (LabError, TopologyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        state = net.state
        names = ", ".join(f"{h.name} {h.ip} ({h.site})" for h in state.hosts)
        how = "static flows" if args.static_flows else "the lisp-ryu controller resolves through the Map-Server"
        info(f"*** lisp-ryu lab {state.name}: {names}; {how}\n")
        if args.no_cli:
            failures = self_check(net)
            for failure in failures:
                print(f"*** FAILED: {failure}", flush=True)
            if not failures:
                print("*** all checks passed", flush=True)
            return 1 if failures else 0
        LispCLI(net)
        return 0
    finally:
        net.stop()


# `mn --custom mininet/lisp_topo.py --topo lisp,topologies/two-dc.yaml [--test pingall]`: mn takes
# these names from this file (its topology and controller choices, and the network and CLI classes).
topos = {"lisp": LispTopo}
controllers = {"lisp": LispRyuController}
Mininet = LispMininet
CLI = LispCLI

if __name__ == "__main__":  # not under `mn --custom`, which runs this file with no __name__ of its own
    raise SystemExit(main())
