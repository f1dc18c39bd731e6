"""The lisp-ryu lab as a Mininet network: same system, Mininet's objects and CLI.

    from lisp_ryu.lab.mininet_net import LispMininet, LispTopo, LispRyuController
    net = LispMininet(topo=LispTopo("topologies/two-dc.yaml"), controller=LispRyuController)
    net.start()          # the controller starts, every site registers
    LispCLI(net)         # h1 ping h3, mapcache dc1, registrations, move h1 dc2, lisp xtrs
    net.stop()           # controller, OVS daemons, namespaces and the management network go

`mininet/lisp_topo.py` is the script around it.  Nothing here is a copy of
the lab: `LispMininet.build` lets Mininet create the nodes and veths, then
names their namespaces (`ip netns attach <prefix><node>`), after which the
lab's own code applies unchanged: `build.plan`, `build.configure`,
`build.add_management_network`, `move.move_host`, `controller.start`
(`lisp-ryu controller --config FILE` as its own process, its config from the
lab state) and `teardown.teardown`.  The lab state file lives in
$LISP_RYU_LAB_DIR (default here /run/lisp-ryu-mn) and names start with
$LISP_RYU_LAB_PREFIX (default here `mn-`), apart from a `lisp-ryu lab`.

Every site is a Mininet node running its own ovsdb-server + ovs-vswitchd
inside its namespace (DESIGN.md §4); core routers and the Map-Server are
plain nodes; hosts are Mininet hosts.  Without a controller
(`static_flows=True`) the sites get the lab's static LISP-GPE flows instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from mininet.cli import CLI
from mininet.link import Intf
from mininet.log import error, info, output
from mininet.net import Mininet
from mininet.node import Controller, Host, Node
from mininet.topo import Topo

from lisp_ryu.lab import controller as lab_controller
from lisp_ryu.lab import processes, static_flows, topology_load
from lisp_ryu.lab import topology as topo
from lisp_ryu.lab.build import REQUIRED_TOOLS, add_management_network, check_management_free, configure, plan
from lisp_ryu.lab.move import move_host
from lisp_ryu.lab.ovs import DAEMONS
from lisp_ryu.lab.running import load_state, locked, vsctl
from lisp_ryu.lab.state import LAB_DIR_ENV, LAB_PREFIX_ENV, LabError, LabState, prefix, read_state, write_state
from lisp_ryu.lab.teardown import teardown

DEFAULT_LAB_DIR = "/run/lisp-ryu-mn"
DEFAULT_PREFIX = "mn-"


def use_mininet_lab_dir() -> None:
    """Keep a Mininet lab apart from a `lisp-ryu lab` (its own state dir and
    name prefix) unless the environment already chose them."""
    os.environ.setdefault(LAB_DIR_ENV, DEFAULT_LAB_DIR)
    os.environ.setdefault(LAB_PREFIX_ENV, DEFAULT_PREFIX)


# --------------------------------------------------------------------------
# Nodes


class LispRouter(Node):
    """A core router: a namespace that forwards IPv4 (set by the lab's configure step)."""


class LispMapServer(Node):
    """The Map-Server's place on the underlay: a namespace with one address
    (the controller's embedded Map-Server binds its socket in there)."""


class LispSite(Node):
    """An xTR site: its own ovsdb-server + ovs-vswitchd run inside this node's
    namespace (started by the lab's `configure`), stopped with the node."""

    run_dir: str | None = None

    def terminate(self) -> None:
        if self.run_dir:
            pids = {}
            for daemon in DAEMONS:
                pid = processes.read_pid(Path(self.run_dir) / f"{daemon}.pid")
                if pid and processes.comm(pid) == daemon:
                    pids[pid] = f"{daemon} of {self.name}"
            processes.terminate(pids)
        super().terminate()


class LispRyuController(Controller):
    """The lisp-ryu controller with its embedded Map-Server, as a Mininet controller.

    `start` runs `lisp-ryu controller --config FILE --ofp-tcp-listen-port P
    --wsapi-port R` (lisp_ryu.lab.controller, config written from the lab
    state) in the root namespace, where the lab's management bridge carries
    the controller address every site's br-int connects to, and waits until
    every site has registered and holds the controller's flows.  The REST API
    listens on 127.0.0.1:`rest_port` (a free port unless given)."""

    def __init__(self, name: str = "c0", rest_port: int | None = None, ready_timeout: float = 30.0, **params):
        self.rest_port = rest_port
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None
        # Mininet's Controller runs a shell in the root namespace; ip and port are the lab's (set at start).
        super().__init__(name, command=sys.executable, cargs="", **params)

    def checkListening(self) -> None:
        """Mininet asks telnet; the lab's controller.start refuses a second controller itself."""

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def start(self) -> None:
        state = load_state()
        self.ip, self.port = state.controller, state.controller_port
        if self.rest_port is None:
            self.rest_port = _free_tcp_port()
        self.process = lab_controller.start(state, extra_args=("--wsapi-port", str(self.rest_port)))
        lab_controller.wait_ready(state, timeout=self.ready_timeout)
        info(f"(lisp-ryu controller pid {self.process.pid}, OpenFlow {self.ip}:{self.port}, REST {self.rest_url}, "
             f"log {lab_controller.log_path()}) ")

    def stop(self, *args, **kwargs) -> None:
        lab_controller.stop()
        if self.process is not None:
            self.process.wait(timeout=10)  # reap it
            self.process = None
        Node.stop(self, *args, **kwargs)

    def show(self, *args: str) -> subprocess.CompletedProcess:
        """`lisp-ryu show ARGS --url <this controller's REST API>`, as a user would run it."""
        return subprocess.run([sys.executable, "-m", "lisp_ryu", "show", *args, "--url", self.rest_url],
                              capture_output=True, text=True, timeout=30)


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# Topology and network


class LispTopo(Topo):
    """A lab topology file (topologies/*.yaml) as a Mininet topology: sites,
    core routers, the Map-Server and hosts as nodes; underlay links and host
    links with the lab's interface names and MACs."""

    def build(self, topology_path: str | Path = "topologies/two-dc.yaml", static_flows: bool | str = False) -> None:
        """`static_flows`: no controller, the lab's static flows (for `mn --topo lisp,FILE,static_flows=1`)."""
        self.static_flows = str(static_flows).lower() not in ("", "0", "false", "no")
        t = topology_load.load(topology_path)
        if t.pxtr or t.internet_hosts:
            raise LabError(f"{topology_path}: a PxTR and internet hosts are not built under Mininet yet: "
                           "use `lisp-ryu lab up`")
        self.lisp_topology = t
        self.topology_path = str(Path(topology_path).absolute())
        for site in t.sites:
            self.addHost(site.name, cls=LispSite, ip=None)
        for router in t.routers:
            self.addHost(router.name, cls=LispRouter, ip=None)
        if t.map_server:
            self.addHost(t.map_server.name, cls=LispMapServer, ip=None)
        for h in t.hosts:
            self.addHost(h.name, cls=Host, ip=None, mac=h.mac)
        for link in t.links:
            self.addLink(link.a.node, link.b.node, intfName1=link.a.ifname, intfName2=link.b.ifname,
                         addr1=link.a.mac, addr2=link.b.mac)
        for h in t.hosts:
            self.addLink(h.name, h.site, intfName1=topo.HOST_IFNAME, intfName2=h.name, addr1=h.mac)


class LispMininet(Mininet):
    """Mininet with the lab's configuration step: after Mininet builds the
    nodes and links, their namespaces get lab names, the management network
    and every site's OVS pair come up, and the lab state is written for the
    controller (started by `start`, like any Mininet controller).

    `controller=None` or `static_flows=True`: no controller, static flows."""

    def __init__(self, topo: LispTopo | None = None, controller=LispRyuController, static_flows: bool = False,
                 **kwargs):
        use_mininet_lab_dir()
        self.static_flows = static_flows or controller is None or getattr(topo, "static_flows", False)
        controller = _lisp_controller(controller)
        self.lisp_state: LabState | None = None
        kwargs.setdefault("autoSetMacs", False)
        kwargs.setdefault("autoStaticArp", False)
        super().__init__(topo=topo, controller=None if self.static_flows else controller, **kwargs)

    # -- build / stop

    def build(self) -> None:
        t: topo.Topology = self.topo.lisp_topology
        missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
        if missing:
            raise LabError(f"missing tools: {', '.join(missing)}")
        with locked() as directory:
            pfx = prefix()
            if read_state() is not None:
                raise LabError(f"a lab is up in {directory} already: stop it (or `lisp-ryu lab down` with "
                               f"{LAB_DIR_ENV}={directory} {LAB_PREFIX_ENV}={pfx})")
            leftovers = processes.objects_with_prefix(pfx)
            if leftovers:
                raise LabError(f"objects of an earlier lab are left ({', '.join(leftovers)}): "
                               f"`{LAB_DIR_ENV}={directory} {LAB_PREFIX_ENV}={pfx} lisp-ryu lab down`")
            if not self.static_flows:
                check_management_free(t.management)
            state = plan(t, pfx=pfx, directory=directory, topology_path=self.topo.topology_path)
            write_state(state)  # from here on, teardown finds what was made
            self.lisp_state = state
            try:
                super().build()
                for name, namespace in _namespaces(state).items():
                    processes.run(["ip", "netns", "attach", namespace, str(self[name].pid)])
                if not self.static_flows:
                    add_management_network(t, state)
                state = configure(t, state, _execute_in(state), management=not self.static_flows)
                write_state(state)
                self.lisp_state = state
                for s in state.sites:
                    self[s.name].run_dir = s.run_dir
                for h in state.hosts:
                    self[h.name].defaultIntf().updateIP()  # Mininet learns the address (`h1 ping h3`)
                if self.static_flows:
                    static_flows.install(state)
            except BaseException:
                self._remove_lab(directory, pfx)
                raise

    def stop(self) -> None:
        """Mininet's stop (controller, links, nodes and their OVS daemons), then
        the lab's teardown removes whatever is left: namespace names, the
        management network, run directories, the state file."""
        try:
            super().stop()
        finally:
            with locked() as directory:
                self._remove_lab(directory, prefix())

    def _remove_lab(self, directory: Path, pfx: str) -> None:
        if self.lisp_state is None:
            return
        try:
            teardown(read_state() or self.lisp_state, pfx, directory)
        except LabError as exc:
            error(f"*** teardown: {exc}\n")
        self.lisp_state = None

    # -- what the CLI and scripts use

    @property
    def state(self) -> LabState:
        return load_state()  # current: a move changes it

    @property
    def lisp_controller(self) -> LispRyuController | None:
        return next((c for c in self.controllers if isinstance(c, LispRyuController)), None)

    def end_hosts(self) -> list[Host]:
        """The workloads (not sites, routers or the Map-Server)."""
        return [self[h.name] for h in self.state.hosts]

    def pingAll(self, timeout=None):
        """`pingall`: between the workloads, across sites."""
        return self.ping(hosts=self.end_hosts(), timeout=timeout)

    def pingPair(self):
        return self.ping(hosts=self.end_hosts()[:2])

    def controller_connected(self) -> dict[str, bool]:
        """Site -> whether its br-int is connected to the controller (OVS's own view)."""
        state = self.state
        return {s.name: vsctl(s.name, "get", "controller", topo.BR_INT, "is_connected", state=state).strip() == "true"
                for s in state.sites}

    def show(self, *args: str) -> tuple[bool, str]:
        """`lisp-ryu show ARGS` against the controller's REST API: (ok, text)."""
        c = self.lisp_controller
        if c is None:
            return False, "no controller runs (static flows): nothing is registered or resolved"
        proc = c.show(*args)
        return proc.returncode == 0, (proc.stdout + proc.stderr).rstrip() + "\n"

    def move(self, host: str, site: str) -> str:
        """Move HOST to SITE as `lisp-ryu lab move` does; keep Mininet's view of
        the links in step (the host's eth0 is new, its port is at SITE)."""
        m = move_host(host, site)
        old_site, new_site = self[m.from_site], self[m.to_site]
        old_intf = old_site.nameToIntf.get(host)
        if old_intf is not None:
            old_site.delIntf(old_intf)
        # The new vif is a tap that the site's OVS holds and the host has as eth0: nothing of
        # that name is in the site's namespace for Mininet to bring up (up=None).
        new_intf = Intf(host, node=new_site, port=m.to_ofport, moveIntfFn=lambda *_: None, up=None)
        link = getattr(old_intf, "link", None)
        if link is not None:
            new_intf.link = link
            if link.intf2 is old_intf:
                link.intf2 = new_intf
            elif link.intf1 is old_intf:
                link.intf1 = new_intf
        return (f"moved {host} from {m.from_site} port {m.from_ofport} to {m.to_site} port {m.to_ofport}: "
                f"no link for {m.swap_ms:.1f} ms")


def _lisp_controller(controller):
    """The lisp-ryu controller, whatever Mininet was asked for: a LispRyuController
    (class, instance or `mn --controller lisp,rest_port=8081`) is kept, anything
    else (mn's default, `--controller none`, ...) becomes LispRyuController: this
    network has no other control plane (static flows are asked for explicitly)."""
    for c in controller if isinstance(controller, (list, tuple)) else [controller]:
        if isinstance(c, LispRyuController) or (isinstance(c, type) and issubclass(c, LispRyuController)):
            return c
    return LispRyuController


def _namespaces(state: LabState) -> dict[str, str]:
    return {x.name: x.namespace for group in (state.sites, state.hosts, state.nodes) for x in group}


def _execute_in(state: LabState):
    """The lab's `execute(node, argv, env=None)`: run inside the node's (now named) namespace."""
    ns = _namespaces(state)

    def execute(node: str, argv, env=None) -> str:
        return processes.run_in(ns[node], list(argv), env=env).stdout

    return execute


# --------------------------------------------------------------------------
# CLI


class LispCLI(CLI):
    """Mininet's CLI with the LISP verbs: move, mapcache, registrations, lisp."""

    prompt = "mininet> "

    def _lisp_net(self) -> LispMininet | None:
        if isinstance(self.mn, LispMininet):
            return self.mn
        error("not a lisp-ryu Mininet network\n")
        return None

    def do_move(self, line: str) -> None:
        """move HOST SITE: move a workload to another site's xTR as a live
        migration does (new port first, then the switchover; IP, MAC, routes,
        ARP cache and connections kept)."""
        args = line.split()
        net = self._lisp_net()
        if net is None:
            return
        if len(args) != 2:
            error("usage: move HOST SITE\n")
            return
        try:
            output(net.move(*args) + "\n")
        except LabError as exc:
            error(f"move failed: {exc}\n")

    def do_mapcache(self, line: str) -> None:
        """mapcache SITE: the map-cache of a site's xTR, from the controller."""
        args = line.split()
        net = self._lisp_net()
        if net is None:
            return
        if len(args) != 1:
            error("usage: mapcache SITE\n")
            return
        self._print(*net.show("map-cache", args[0]))

    def do_registrations(self, line: str) -> None:
        """registrations: what the embedded Map-Server holds."""
        net = self._lisp_net()
        if net is not None:
            self._print(*net.show("registrations", *line.split()))

    def do_lisp(self, line: str) -> None:
        """lisp WHAT [ARGS]: `lisp-ryu show WHAT ARGS` against the controller's REST API
        (registrations, subscriptions, counters, sites, xtrs, map-cache XTR, health, ...)."""
        net = self._lisp_net()
        if net is None:
            return
        if not line.strip():
            error("usage: lisp WHAT [ARGS] (as `lisp-ryu show`, e.g. lisp xtrs, lisp map-cache dc1)\n")
            return
        self._print(*net.show(*line.split()))

    @staticmethod
    def _print(ok: bool, text: str) -> None:
        (output if ok else error)(text)


# --------------------------------------------------------------------------
# The --no-cli check


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def self_check(net: LispMininet) -> list[str]:
    """Ping between two sites, show the first site's map-cache before and
    after, move the pinging host to the other site and ping it again.
    Prints what it does; returns the failures (empty: all good)."""
    failures: list[str] = []
    state = net.state
    a = state.hosts[0]
    b = next((h for h in state.hosts if h.site != a.site), None)
    if b is None:
        return ["the check needs hosts at two sites"]
    b_site = state.site(b.site)
    b_prefixes = [p["prefix"] for p in b_site.eid_prefixes]

    def say(text: str) -> None:
        print(f"*** {text}", flush=True)

    def ping(src: str, dst_ip: str, what: str) -> None:
        out = net[src].cmd(f"ping -n -c 1 -W 3 {dst_ip}")
        print(out.rstrip(), flush=True)
        if " 0% packet loss" not in out:
            failures.append(f"{what}: no answer")

    def mapcache(site: str, when: str) -> str:
        ok, text = net.show("map-cache", site)
        say(f"map-cache of {site} {when}:")
        print(text.rstrip(), flush=True)
        if not ok:
            failures.append(f"map-cache of {site} {when}: {text.strip()}")
        return text

    if net.lisp_controller is not None:
        # ovs-vswitchd writes is_connected to its database a little after it connects: wait for it.
        connected: dict[str, bool] = {}

        def all_connected() -> bool:
            connected.update(net.controller_connected())
            return all(connected.values())

        wait_until(all_connected, timeout=10.0)
        say("controller connected: " + ", ".join(f"{s} {'yes' if c else 'no'}" for s, c in connected.items()))
        failures += [f"site {s} is not connected to the controller" for s, c in connected.items() if not c]
        before = mapcache(a.site, "before the ping")
        if any(p in before for p in b_prefixes):
            failures.append(f"{a.site}'s map-cache held {b.site}'s prefix before any traffic")
    say(f"{a.name} ({a.ip}, {a.site}) -> {b.name} ({b.ip}, {b.site}): ping")
    ping(a.name, b.ip, f"{a.name} -> {b.name}")
    if net.lisp_controller is None:
        return failures  # static flows: nothing to resolve, nothing moves
    after = mapcache(a.site, "after the ping")
    if not any(p in after for p in b_prefixes):
        failures.append(f"{a.site}'s map-cache lacks {b.site}'s prefix ({', '.join(b_prefixes)}) after the ping")

    say(f"move {a.name} {b.site}")
    try:
        say(net.move(a.name, b.site))
    except LabError as exc:
        return failures + [f"move {a.name} {b.site}: {exc}"]
    moved = net.state.host(a.name)
    if moved.site != b.site:
        failures.append(f"{a.name} is at {moved.site} after the move, not {b.site}")
    say(f"{b.name} ({b.site}) -> {a.name} ({a.ip}, now at {b.site}): ping")
    ping(b.name, a.ip, f"{b.name} -> moved {a.name}")
    stayed = next((h for h in net.state.hosts if h.site == a.site and h.name != a.name), None)
    if stayed is not None:
        say(f"{stayed.name} ({stayed.site}) -> {a.name} ({a.ip}, now at {b.site}): ping")
        ping(stayed.name, a.ip, f"{stayed.name} -> moved {a.name}")
        text = mapcache(stayed.site, f"after {a.name} moved")
        rloc = b_site.rlocs[0].address
        if not any(f"{a.ip}/32" in line and rloc in line for line in text.splitlines()):
            failures.append(f"{stayed.site}'s map-cache does not send {a.ip}/32 to {b.site} ({rloc})")
    return failures
