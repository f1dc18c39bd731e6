#!/usr/bin/env python3
"""The lisp-ryu lab as a Mininet network, with Mininet's CLI.

    python mininet/lisp_topo.py topologies/two-dc.yaml      # then: h1 ping h3

Same topology file, same names, MACs, port numbers and OVS layout as
`lisp-ryu lab up` (lisp_ryu/lab/build.py shares its configuration step):
every site is a Mininet node running its own ovsdb-server + ovs-vswitchd
inside its namespace; routers and the Map-Server are plain nodes; hosts are
Mininet hosts.  The sites get the lab's static LISP-GPE flows, so hosts of
different sites reach each other without a controller.  Not yet here: the
management network (br-int's controller target is set but unreachable).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from mininet.cli import CLI
from mininet.log import info, setLogLevel
from mininet.net import Mininet
from mininet.node import Host, Node

from lisp_ryu.lab import processes, static_flows, topology as topo
from lisp_ryu.lab import topology_load
from lisp_ryu.lab.build import configure, plan
from lisp_ryu.lab.ovs import DAEMONS
from lisp_ryu.lab.running import ofctl
from lisp_ryu.lab.state import LabState

PREFIX = "mn-"  # only used in the plan's namespace names; Mininet's namespaces are unnamed


class LispRouter(Node):
    """A core router: a namespace that forwards IPv4 (set by the lab's configure step)."""


class LispMapServer(Node):
    """The Map-Server's place on the underlay: a namespace with one address."""


class LispSite(Node):
    """An xTR site: its own ovsdb-server + ovs-vswitchd run inside this node's
    namespace (started by `start_ovs`), stopped with the node."""

    run_dir: str | None = None

    def start_ovs(self, argv: list[str], env: dict) -> str:
        """Start one OVS daemon (detached) inside this node."""
        self.run_dir = str(Path(env["OVS_RUNDIR"]))
        out, err, rc = self.pexec(argv, env=env)
        if rc:
            raise processes.CommandError(argv, rc, err)
        return out

    def terminate(self) -> None:
        if self.run_dir:
            pids = {}
            for daemon in DAEMONS:
                pid = processes.read_pid(Path(self.run_dir) / f"{daemon}.pid")
                if pid and processes.comm(pid) == daemon:
                    pids[pid] = f"{daemon} of {self.name}"
            processes.terminate(pids)
        super().terminate()


def build(topology_path: str | Path) -> tuple[Mininet, LabState]:
    """Build and start the Mininet network for a topology file, with static
    flows installed.  The caller stops it with `stop(net, state)`."""
    t = topology_load.load(topology_path)
    if t.pxtr or t.internet_hosts:
        raise SystemExit(f"{topology_path}: a PxTR and internet hosts are not built under Mininet yet: "
                         "use `lisp-ryu lab up`")
    run_root = Path(tempfile.mkdtemp(prefix="lisp-ryu-mn-"))
    state = plan(t, pfx=PREFIX, directory=run_root, topology_path=str(Path(topology_path).absolute()))
    net = Mininet(topo=None, controller=None, build=False, autoSetMacs=False, autoStaticArp=False)
    try:
        for site in t.sites:
            net.addHost(site.name, cls=LispSite, ip=None)
        for router in t.routers:
            net.addHost(router.name, cls=LispRouter, ip=None)
        if t.map_server:
            net.addHost(t.map_server.name, cls=LispMapServer, ip=None)
        for h in state.hosts:
            net.addHost(h.name, cls=Host, ip=None, mac=h.mac)
        for link in t.links:
            net.addLink(link.a.node, link.b.node, intfName1=link.a.ifname, intfName2=link.b.ifname,
                        addr1=link.a.mac, addr2=link.b.mac)
        for h in state.hosts:
            net.addLink(h.name, h.site, intfName1=topo.HOST_IFNAME, intfName2=h.name, addr1=h.mac)
        net.build()
        net.start()

        def execute(node: str, argv, env=None) -> str:
            n = net[node]
            if isinstance(n, LispSite) and env is not None:
                return n.start_ovs(list(argv), env)
            out, err, rc = n.pexec(list(argv), env=env) if env else n.pexec(list(argv))
            if rc:
                raise processes.CommandError(argv, rc, err)
            return out

        state = configure(t, state, execute, management=False)
        for h in state.hosts:
            net[h.name].defaultIntf().updateIP()  # Mininet learns the address (for `h1 ping h3`)
        for site in t.sites:
            flows = static_flows.site_flows(t, site.name)
            ofctl(site.name, "add-flows", "-", input="\n".join(flows) + "\n", state=state)
    except BaseException:
        stop(net, state)
        raise
    return net, state


def stop(net: Mininet, state: LabState) -> None:
    """Stop Mininet (nodes stop their OVS daemons) and remove the run directories."""
    net.stop()
    shutil.rmtree(state.lab_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a lisp-ryu lab topology under Mininet, with its CLI.")
    parser.add_argument("topology", help="topology file, e.g. topologies/two-dc.yaml")
    parser.add_argument("--no-cli", action="store_true", help="build, ping once between two sites, stop")
    args = parser.parse_args(argv)
    setLogLevel("info")
    net, state = build(args.topology)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # still runs stop() below
    try:
        names = ", ".join(f"{h.name} {h.ip} ({h.site})" for h in state.hosts)
        info(f"*** lisp-ryu lab {state.name}: {names}; sites reach each other through LISP-GPE\n")
        if args.no_cli:
            a = state.hosts[0]
            b = next(h for h in state.hosts if h.site != a.site)
            started = time.monotonic()
            out = net[a.name].cmd(f"ping -c 1 -W 2 {b.ip}")
            info(out)
            return 0 if " 0% packet loss" in out and time.monotonic() - started < 10 else 1
        CLI(net)
        return 0
    finally:
        stop(net, state)


if __name__ == "__main__":
    raise SystemExit(main())
