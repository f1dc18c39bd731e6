"""Build, inspect and tear down the multi-site lab (DESIGN.md §4).

Every site is a network namespace running its own ovsdb-server and
ovs-vswitchd (userspace datapath) with its own run directory, because OVS's
userspace tunnel routing uses the kernel routes of the namespace it runs in:
with several xTRs in one namespace every RLOC is local and tunnels leave by
the wrong bridge.  In a site:

  * `br-phy` (netdev): the underlay veth (port 1, kernel ARP off so only OVS
    answers for the RLOC) and the RLOC on the bridge's internal port;
    a multihomed site has br-phy1, br-phy2... one per RLOC.
  * `br-int` (netdev, OpenFlow13, fail_mode=secure, fixed datapath-id):
    host ports 1..N and the flow-based VXLAN-GPE port `lisp0` (port 100),
    which is LISP-GPE on UDP 4341; its controller is
    tcp:<management address>:<port> with max_backoff=1000.

Hosts are namespaces with one veth (`eth0`, MTU 1450 for the 36-byte
encapsulation) into br-int; core routers and the Map-Server are namespaces
on the underlay.  A PxTR is a site like the others plus a native port on
br-int (port 101, kernel ARP off: its flows answer for its native address)
whose veth peer sits in a router; internet hosts are namespaces with one
veth (`eth0`) to a router, their gateway.  The management network is the one thing in the root
namespace: a lab bridge with the controller's address and one veth per site.

`move` re-attaches a host to another site as a live migration does
(workload mobility): a new veth pair is plugged into the new site's br-int
first, then the host switches over to it, keeping its address, MAC, routes,
ARP cache and sockets, and announces itself; the old pair and port go last.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

from lisp_ryu.lab import topology as topo
from lisp_ryu.lab import topology_load
from lisp_ryu.lab.netns import run_in_netns
from lisp_ryu.lab.rtnetlink import InterfaceSetup, RouteSocket
from lisp_ryu.lab.state import (
    HostState,
    LabError,
    LabState,
    NodeState,
    RlocState,
    SiteState,
    lab_dir,
    prefix,
    read_state,
    state_path,
    write_state,
)
from lisp_ryu.wire import LISP_DATA_PORT

log = logging.getLogger("lisp_ryu.lab")

OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
DAEMONS = ("ovs-vswitchd", "ovsdb-server")
REQUIRED_TOOLS = ("ip", "ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl", "ethtool")
_TIMEOUT = 30.0


class CommandError(LabError):
    """A command the lab ran failed; carries the command line and its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"command failed (exit {returncode}): {' '.join(self.argv)}\n{self.stderr}")


# --------------------------------------------------------------------------
# Running commands


def run(argv: Sequence[str], *, check: bool = True, input: str | None = None,
        timeout: float | None = _TIMEOUT, env: dict | None = None, capture: bool = True) -> subprocess.CompletedProcess:
    """Run a command; on failure raise CommandError with its stderr."""
    log.debug("run: %s", " ".join(argv))
    try:
        proc = subprocess.run(
            list(argv), input=input, text=True, timeout=timeout, env=env,
            stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None,
        )
    except FileNotFoundError:
        raise CommandError(argv, 127, f"{argv[0]}: command not found") from None
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, -1, f"timed out after {timeout}s: {exc.stderr or ''}") from None
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr or "")
    return proc


def run_in(namespace: str | None, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command inside a network namespace (None: the root namespace)."""
    if namespace is None:
        return run(argv, **kwargs)
    return run(["ip", "netns", "exec", namespace, *argv], **kwargs)


def _ovs_env(run_dir: str) -> dict:
    """OVS tools find their sockets, database and logs through these."""
    env = dict(os.environ)
    for var in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"):
        env[var] = run_dir
    return env


# --------------------------------------------------------------------------
# The API other code uses against a running lab


def load_state() -> LabState:
    state = read_state()
    if state is None:
        raise LabError(f"no lab is up (no {state_path()}): run `lisp-ryu lab up TOPOLOGY`")
    return state


def exec_in(node: str, argv: Sequence[str], *, state: LabState | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run a command in the namespace of a lab node (host, site, router, map-server)."""
    state = state or load_state()
    return run_in(state.namespace_of(node), argv, **kwargs)


def ofctl(site: str, command: str, *args: str, bridge: str = topo.BR_INT, input: str | None = None,
          state: LabState | None = None) -> str:
    """`ovs-ofctl -O OpenFlow13 COMMAND <site's bridge> ARGS` against the site's own daemon."""
    s = (state or load_state()).site(site)
    return run(["ovs-ofctl", "-O", "OpenFlow13", command, s.mgmt_socket(bridge), *args],
               input=input, env=_ovs_env(s.run_dir)).stdout


def appctl(site: str, *args: str, state: LabState | None = None) -> str:
    """`ovs-appctl` against the site's ovs-vswitchd (tnl/neigh/show, ovs/route/show, ...)."""
    s = (state or load_state()).site(site)
    return run(["ovs-appctl", "-t", s.vswitchd_ctl, *args], env=_ovs_env(s.run_dir)).stdout


def vsctl(site: str, *args: str, state: LabState | None = None) -> str:
    """`ovs-vsctl` against the site's ovsdb-server."""
    s = (state or load_state()).site(site)
    return run(["ovs-vsctl", f"--db={s.db}", "--timeout=10", *args], env=_ovs_env(s.run_dir)).stdout


# --------------------------------------------------------------------------
# Planning: the topology plus names -> the state the lab will have


def plan(t: topo.Topology, *, pfx: str, directory: Path, topology_path: str) -> LabState:
    """Everything `up` will create, named and numbered, before creating any of it."""
    ns = {name: pfx + name for name in
          [*(s.name for s in t.sites), *(h.name for h in t.hosts), *(r.name for r in t.routers),
           *([t.map_server.name] if t.map_server else []), *(h.name for h in t.internet_hosts)]}
    sites = []
    for site in t.sites:
        ports = t.rloc_ports(site.name)
        rlocs = []
        for p in ports:
            peer_mac = p.peer.mac
            if site_of := next((s for s in t.sites if s.name == p.peer.node), None):
                peer_mac = next(q.bridge_mac for q in t.rloc_ports(site_of.name) if q.link == p.link)
            rlocs.append(RlocState(
                address=str(p.rloc.address), prefixlen=p.uplink.interface.network.prefixlen,
                priority=p.rloc.priority, weight=p.rloc.weight, bridge=p.bridge, bridge_mac=p.bridge_mac,
                uplink=p.uplink.ifname, uplink_mac=p.uplink.mac,
                next_hop=str(p.peer.interface.ip), next_hop_mac=peer_mac,
            ))
        sites.append(SiteState(
            name=site.name, namespace=ns[site.name], run_dir=str(directory / site.name), dpid=site.dpid,
            management_address=str(t.management_address(site.name)),
            management_veth=f"{pfx}m-{site.name}",
            tunnel_port=topo.TUNNEL_PORT_NAME, tunnel_ofport=topo.TUNNEL_OFPORT,
            tunnel_local_ip=rlocs[0].address if len(rlocs) == 1 else "flow",
            rlocs=tuple(rlocs),
            host_ports={h.name: h.ofport for h in t.hosts_of(site.name)},
            eid_prefixes=tuple({"prefix": str(e.prefix), "iid": e.iid, "gateway": str(e.gateway),
                                "gateway_mac": e.gateway_mac} for e in site.eid_prefixes),
            key=site.key,
            role=site.role,
            native=None if site.native is None else {
                "router": site.native.router, "address": str(site.native.interface),
                "next_hop": str(site.native.next_hop), "next_hop_mac": site.native.next_hop_mac,
                "mac": site.native.mac, "ifname": site.native.ifname, "router_ifname": site.native.router_ifname,
                "ofport": topo.NATIVE_OFPORT, "iid": site.native.iid,
                "prefixes": [str(p) for p in site.native.prefixes]},
        ))
    hosts = []
    for h in t.hosts:
        gw_mac = next(e.gateway_mac for e in t.site(h.site).eid_prefixes if e.gateway == h.gateway and e.iid == h.iid)
        hosts.append(HostState(name=h.name, site=h.site, namespace=ns[h.name], address=str(h.interface),
                               mac=h.mac, gateway=str(h.gateway), gateway_mac=gw_mac, iid=h.iid, ofport=h.ofport))
    nodes = [NodeState(name=r.name, kind="router", namespace=ns[r.name],
                       addresses=tuple(str(l.end(r.name).interface) for l in t.links_of(r.name))
                       + tuple(f"{s.native.next_hop}/{s.native.subnet.prefixlen}" for s in t.sites
                               if s.native and s.native.router == r.name)
                       + tuple(f"{h.gateway}/{h.subnet.prefixlen}" for h in t.internet_hosts if h.router == r.name))
             for r in t.routers]
    if t.map_server:
        nodes.append(NodeState(name=t.map_server.name, kind="map-server", namespace=ns[t.map_server.name],
                               addresses=tuple(str(l.end(t.map_server.name).interface) for l in t.links_of(t.map_server.name))))
    nodes += [NodeState(name=h.name, kind="internet-host", namespace=ns[h.name], addresses=(str(h.interface),))
              for h in t.internet_hosts]
    bridge = f"{pfx}mgmt"
    return LabState(
        name=t.name, topology=topology_path, prefix=pfx, lab_dir=str(directory), status="starting",
        controller=str(t.management.controller), controller_port=t.management.port,
        management_bridge=bridge, namespaces=tuple(ns.values()),
        root_interfaces=(bridge, *(s.management_veth for s in sites)),
        sites=tuple(sites), hosts=tuple(hosts), nodes=tuple(nodes),
        map_server=t.map_server.name if t.map_server else None,
        map_server_address=str(t.map_server.address) if t.map_server else None,
    )


# --------------------------------------------------------------------------
# up


@contextmanager
def _locked() -> Iterator[Path]:
    """One lab operation at a time per lab directory."""
    directory = lab_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield directory


def up(topology_path: str | Path) -> LabState:
    """Build the lab described by the topology file; on any failure tear down
    what was built and raise the failing command with its stderr."""
    t = topology_load.load(topology_path)
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)} (install openvswitch-switch, iproute2, ethtool)")
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, veths, OVS daemons)")
    with _locked() as directory:
        pfx = prefix()
        if read_state() is not None:
            raise LabError("lab already up: run `lisp-ryu lab down`")
        leftovers = _objects_with_prefix(pfx)
        if leftovers:
            raise LabError(f"objects of an earlier lab are left ({', '.join(leftovers)}): run `lisp-ryu lab down`")
        _check_management_free(t.management)
        state = plan(t, pfx=pfx, directory=directory, topology_path=str(Path(topology_path).absolute()))
        write_state(state)
        started = time.monotonic()
        try:
            state = _build(t, state)
            write_state(state)
        except BaseException as exc:
            log.error("lab %s: up failed, tearing down: %s", t.name, exc)
            try:
                _teardown(state, pfx, directory)
            except LabError as cleanup:
                log.error("teardown after failed up: %s", cleanup)
            raise
        log.info("lab %s up in %.1fs: %d sites, %d hosts", t.name, time.monotonic() - started,
                 len(state.sites), len(state.hosts))
        return state


def _check_management_free(m: topo.Management) -> None:
    """The management subnet is the one thing the lab puts in the root
    namespace: refuse if the machine already uses any of it."""
    out = run(["ip", "-4", "-o", "addr", "show"]).stdout
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            iface = ipaddress.IPv4Interface(fields[fields.index("inet") + 1])
            if iface.network.overlaps(m.subnet):
                raise LabError(f"management subnet {m.subnet} overlaps {iface} on {fields[1]} in the root namespace: "
                               f"change management.subnet in the topology")


def _build(t: topo.Topology, state: LabState) -> LabState:
    """Create the namespaces and wires, then configure them (`configure`)."""
    ns_of = _namespaces(state)
    for namespace in state.namespaces:
        run(["ip", "netns", "add", namespace])
    # Management network: the lab bridge with the controller's address, one
    # veth per site (the only objects in the root namespace).
    bridge = state.management_bridge
    run(["ip", "link", "add", bridge, "type", "bridge"])
    run(["ip", "addr", "add", f"{state.controller}/{t.management.subnet.prefixlen}", "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])
    for s in state.sites:
        run(["ip", "link", "add", s.management_veth, "type", "veth", "peer", "name", topo.MGMT_IFNAME,
             "netns", s.namespace])
        run(["ip", "link", "set", s.management_veth, "master", bridge, "up"])
        run(["ethtool", "-K", s.management_veth, "tx", "off"])
    for link in t.links:
        run(["ip", "link", "add", link.a.ifname, "netns", ns_of[link.a.node], "type", "veth",
             "peer", "name", link.b.ifname, "netns", ns_of[link.b.node]])
    for h in state.hosts:
        run(["ip", "link", "add", topo.HOST_IFNAME, "netns", h.namespace, "type", "veth",
             "peer", "name", h.name, "netns", ns_of[h.site]])
    for site in t.sites:
        if site.native:
            run(["ip", "link", "add", site.native.ifname, "netns", ns_of[site.name], "type", "veth",
                 "peer", "name", site.native.router_ifname, "netns", ns_of[site.native.router]])
    for ih in t.internet_hosts:
        run(["ip", "link", "add", topo.HOST_IFNAME, "netns", ns_of[ih.name], "type", "veth",
             "peer", "name", ih.name, "netns", ns_of[ih.router]])
    return configure(t, state, lambda node, argv, env=None: run_in(ns_of[node], argv, env=env).stdout)


def _namespaces(state: LabState) -> dict[str, str]:
    return {x.name: x.namespace for group in (state.sites, state.hosts, state.nodes) for x in group}


def configure(t: topo.Topology, state: LabState, execute, *, management: bool = True) -> LabState:
    """Configure a lab whose nodes and veths exist: addresses, MACs, MTUs,
    routes, and each site's OVS pair.  `execute(node, argv, env=None)` runs a
    command inside a node and returns its stdout (raising on failure); the
    namespace lab and the Mininet lab (mininet/lisp_topo.py) share this."""

    def ip(node: str, *args: str) -> None:
        execute(node, ["ip", *args])

    def txoff(node: str, dev: str) -> None:
        execute(node, ["ethtool", "-K", dev, "tx", "off"])

    all_nodes = [*(s.name for s in state.sites), *(h.name for h in state.hosts), *(n.name for n in state.nodes)]
    for node in all_nodes:
        ip(node, "link", "set", "lo", "up")
    if management:
        for s in state.sites:
            ip(s.name, "addr", "add", s.management_address, "dev", topo.MGMT_IFNAME)
            ip(s.name, "link", "set", topo.MGMT_IFNAME, "up")
            txoff(s.name, topo.MGMT_IFNAME)

    site_names = {s.name for s in state.sites}
    for link in t.links:
        for end in (link.a, link.b):
            ip(end.node, "link", "set", end.ifname, "address", end.mac)
            if end.node in site_names:
                # Kernel ARP off on the OVS-owned veth, or the site kernel answers
                # for the RLOC with the veth's MAC and OVS never decapsulates.
                ip(end.node, "link", "set", end.ifname, "arp", "off")
            else:
                ip(end.node, "addr", "add", str(end.interface), "dev", end.ifname)
            ip(end.node, "link", "set", end.ifname, "up")
            txoff(end.node, end.ifname)
    for r in t.routers:
        execute(r.name, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                         "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"])

    for h in state.hosts:
        ip(h.name, "link", "set", topo.HOST_IFNAME, "address", h.mac, "mtu", str(topo.HOST_MTU), "up")
        ip(h.name, "addr", "add", h.address, "dev", topo.HOST_IFNAME)
        ip(h.name, "route", "add", "default", "via", h.gateway)
        ip(h.site, "link", "set", h.name, "mtu", str(topo.HOST_MTU), "up")
        txoff(h.name, topo.HOST_IFNAME)
        txoff(h.site, h.name)

    # The non-LISP side: a PxTR's native link (its end is an OVS port: no
    # address, kernel ARP off) and the internet hosts behind their routers.
    for site in t.sites:
        if site.native:
            n = site.native
            ip(site.name, "link", "set", n.ifname, "address", n.mac, "arp", "off", "up")
            txoff(site.name, n.ifname)
            ip(n.router, "link", "set", n.router_ifname, "address", n.next_hop_mac, "up")
            ip(n.router, "addr", "add", f"{n.next_hop}/{n.subnet.prefixlen}", "dev", n.router_ifname)
            txoff(n.router, n.router_ifname)
    for ih in t.internet_hosts:
        ip(ih.name, "link", "set", topo.HOST_IFNAME, "address", ih.mac, "mtu", str(topo.HOST_MTU), "up")
        ip(ih.name, "addr", "add", str(ih.interface), "dev", topo.HOST_IFNAME)
        ip(ih.name, "route", "add", "default", "via", str(ih.gateway))
        txoff(ih.name, topo.HOST_IFNAME)
        ip(ih.router, "link", "set", ih.name, "address", ih.gateway_mac, "mtu", str(topo.HOST_MTU), "up")
        ip(ih.router, "addr", "add", f"{ih.gateway}/{ih.subnet.prefixlen}", "dev", ih.name)
        txoff(ih.router, ih.name)

    sites = [_start_site(s, state, execute) for s in state.sites]

    # Static routes from the graph (routers, Map-Server, sites).
    for route in t.routes:
        ip(route.node, "route", "add", str(route.destination), "via", str(route.via), "dev", route.ifname)

    state = replace(state, sites=tuple(sites), status="up")
    # Seed OVS's tunnel neighbour cache with each RLOC's next hop, else the
    # first packet to a new destination is lost while OVS resolves it.
    for s in state.sites:
        for r in s.rlocs:
            appctl(s.name, "tnl/neigh/set", r.bridge, r.next_hop, r.next_hop_mac, state=state)
    return state


def ovs_daemon_argvs(run_dir: str) -> tuple[list[str], list[str]]:
    """ovsdb-server and ovs-vswitchd command lines for a site's run directory
    (start them inside the site's namespace, with `_ovs_env(run_dir)`)."""
    rd = run_dir
    db = f"unix:{rd}/db.sock"
    ovsdb = ["ovsdb-server", f"{rd}/conf.db", f"--remote=punix:{rd}/db.sock", f"--pidfile={rd}/ovsdb-server.pid",
             f"--log-file={rd}/ovsdb-server.log", f"--unixctl={rd}/ovsdb-server.ctl", "--detach", "--no-chdir"]
    vswitchd = ["ovs-vswitchd", db, f"--pidfile={rd}/ovs-vswitchd.pid", f"--log-file={rd}/ovs-vswitchd.log",
                f"--unixctl={rd}/ovs-vswitchd.ctl", "--detach", "--no-chdir"]
    return ovsdb, vswitchd


def ovs_bridge_args(s: SiteState, controller: str, port: int) -> list[str]:
    """One ovs-vsctl transaction that builds the site's bridges (DESIGN §4)."""
    cmd: list[str] = []
    for r in s.rlocs:
        cmd += ["--", "add-br", r.bridge,
                "--", "set", "bridge", r.bridge, "datapath_type=netdev", f"other-config:hwaddr={r.bridge_mac}",
                "--", "add-port", r.bridge, r.uplink,
                "--", "set", "interface", r.uplink, f"ofport_request={topo.UPLINK_OFPORT}"]
    cmd += ["--", "add-br", topo.BR_INT,
            "--", "set", "bridge", topo.BR_INT, "datapath_type=netdev", "protocols=OpenFlow13",
            "fail_mode=secure", f"other-config:datapath-id={s.dpid_hex}", "other-config:disable-in-band=true"]
    for host, ofport in s.host_ports.items():
        cmd += ["--", "add-port", topo.BR_INT, host, "--", "set", "interface", host, f"ofport_request={ofport}"]
    if s.native:
        cmd += ["--", "add-port", topo.BR_INT, s.native["ifname"],
                "--", "set", "interface", s.native["ifname"], f"ofport_request={s.native['ofport']}"]
    cmd += ["--", "add-port", topo.BR_INT, s.tunnel_port,
            "--", "set", "interface", s.tunnel_port, "type=vxlan", f"ofport_request={s.tunnel_ofport}",
            "options:exts=gpe", f"options:dst_port={LISP_DATA_PORT}", "options:packet_type=legacy_l3",
            "options:remote_ip=flow", "options:key=flow", f"options:local_ip={s.tunnel_local_ip}",
            "--", "--id=@c", "create", "controller", f"target=\"tcp:{controller}:{port}\"",
            "max_backoff=1000", "connection_mode=out-of-band",
            "--", "set", "bridge", topo.BR_INT, "controller=@c"]
    return cmd


def _start_site(s: SiteState, state: LabState, execute) -> SiteState:
    """Start the site's own ovsdb-server and ovs-vswitchd inside its namespace
    and build br-phy(s) and br-int."""
    rd = Path(s.run_dir)
    rd.mkdir(parents=True, exist_ok=False)
    env = _ovs_env(s.run_dir)
    run(["ovsdb-tool", "create", str(rd / "conf.db"), OVS_SCHEMA], env=env)
    ovsdb, vswitchd = ovs_daemon_argvs(s.run_dir)
    execute(s.name, ovsdb, env=env)
    run(["ovs-vsctl", f"--db={s.db}", "--no-wait", "init"], env=env)
    execute(s.name, vswitchd, env=env)
    pids = {d: int((rd / f"{d}.pid").read_text()) for d in DAEMONS}
    log.info("site %s: ovsdb-server pid %d, ovs-vswitchd pid %d in netns %s",
             s.name, pids["ovsdb-server"], pids["ovs-vswitchd"], s.namespace)
    run(["ovs-vsctl", f"--db={s.db}", "--timeout=20",
         *ovs_bridge_args(s, state.controller, state.controller_port)], env=env)
    # The RLOC goes on br-phy's internal port (the tap ovs-vswitchd just made).
    for r in s.rlocs:
        execute(s.name, ["ip", "addr", "add", f"{r.address}/{r.prefixlen}", "dev", r.bridge])
        execute(s.name, ["ip", "link", "set", r.bridge, "up"])
    _check_ports(s, env)
    log.info("site %s: RLOC %s, br-int dpid %s, controller tcp:%s:%d", s.name,
             ", ".join(f"{r.address} on {r.bridge}" for r in s.rlocs), s.dpid_hex, state.controller, state.controller_port)
    return replace(s, pids=pids)


def _check_ports(s: SiteState, env: dict) -> None:
    """OVS reports a port it could not open only in the Interface table: look."""
    out = run(["ovs-vsctl", f"--db={s.db}", "--format=csv", "--data=bare", "--no-headings",
               "--columns=name,ofport,error", "list", "interface"], env=env).stdout
    want = {s.tunnel_port: s.tunnel_ofport, **s.host_ports, **{r.uplink: topo.UPLINK_OFPORT for r in s.rlocs}}
    if s.native:
        want[s.native["ifname"]] = s.native["ofport"]
    for line in out.splitlines():
        name, ofport, error = (line.split(",", 2) + ["", ""])[:3]
        if error.strip():
            raise LabError(f"site {s.name}: OVS could not open port {name}: {error.strip()}")
        if name in want and ofport != str(want[name]):
            raise LabError(f"site {s.name}: port {name} got OpenFlow port {ofport}, wanted {want[name]}")


# --------------------------------------------------------------------------
# down


def down() -> list[str]:
    """Remove everything the lab made: from the state file, then by name
    prefix (so it also cleans up after a crash or a lost state file).
    Returns what was removed; raises if anything is left."""
    with _locked() as directory:
        try:
            state = read_state()
        except LabError as exc:
            log.warning("%s", exc)
            state = None
        pfx = state.prefix if state else prefix()
        return _teardown(state, pfx, directory)


def _teardown(state: LabState | None, pfx: str, directory: Path) -> list[str]:
    removed: list[str] = []
    run_dirs = {Path(s.run_dir) for s in state.sites} if state else set()
    run_dirs |= {p.parent for p in directory.glob("*/ovs-vswitchd.pid")}
    run_dirs |= {p.parent for p in directory.glob("*/ovsdb-server.pid")}
    run_dirs |= {p.parent for p in directory.glob("*/conf.db")}
    namespaces = set(state.namespaces if state else ()) | set(_namespaces_with_prefix(pfx))
    namespaces &= set(_all_namespaces())

    # 1. Processes: the OVS daemons by their pid files, then anything still
    #    running inside a lab namespace (lab exec leftovers, captures).
    pids: dict[int, str] = {}
    for rd in run_dirs:
        for daemon in DAEMONS:
            pid = _read_pid(rd / f"{daemon}.pid")
            if pid and _comm(pid) == daemon[:15]:
                pids[pid] = f"{daemon} ({rd.name})"
    for namespace in namespaces:
        out = run(["ip", "netns", "pids", namespace], check=False).stdout or ""
        for word in out.split():
            if word.isdigit() and int(word) != os.getpid():
                pids.setdefault(int(word), f"{_comm(int(word)) or 'process'} in {namespace}")
    controller = _read_pid(directory / "controller.pid")  # lisp_ryu.lab.controller's, in the root namespace
    if controller and process_alive(controller) and b"lisp" in _cmdline(controller):
        pids.setdefault(controller, "lisp-ryu controller")
    removed += [f"process {pid}: {what}" for pid, what in sorted(pids.items())]
    _terminate(pids)

    # 2. Namespaces (their veths and OVS taps go with them), then the root
    #    namespace's bridge and veth peers.
    for namespace in sorted(namespaces):
        run(["ip", "netns", "delete", namespace], check=False)
        removed.append(f"netns {namespace}")
    root_ifs = set(state.root_interfaces if state else ()) | set(_root_interfaces_with_prefix(pfx))
    for iface in sorted(root_ifs):
        if run(["ip", "link", "del", iface], check=False).returncode == 0:
            removed.append(f"interface {iface}")

    # 3. Files: run directories, the state file and the lab controller's config, log and pid.
    for rd in sorted(run_dirs):
        if rd.parent == directory and rd.exists():
            shutil.rmtree(rd, ignore_errors=True)
            removed.append(f"run dir {rd}")
    ms_data = directory / "map-server-data"  # the lab controller's embedded Map-Server store
    if ms_data.is_dir():
        shutil.rmtree(ms_data, ignore_errors=True)
        removed.append(f"map-server data {ms_data}")
    for leftover in (directory / "state.json", directory / "state.tmp", directory / "controller.pid",
                     directory / "controller.yaml", directory / "controller.log"):
        if leftover.exists():
            leftover.unlink()
            removed.append(f"state {leftover}")

    left = _objects_with_prefix(pfx) + [f"process {p}" for p in pids if process_alive(p)]
    if left:
        raise LabError(f"teardown left: {', '.join(left)}")
    for item in removed:
        log.info("removed %s", item)
    return removed


def _terminate(pids: dict[int, str], grace: float = 3.0) -> None:
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(process_alive(p) for p in pids):
        time.sleep(0.02)
    for pid in pids:
        if process_alive(pid):
            log.warning("pid %d (%s) ignored SIGTERM: killing", pid, pids[pid])
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(process_alive(p) for p in pids):
        time.sleep(0.02)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def process_alive(pid: int) -> bool:
    """True for a live process; a zombie child of ours counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    if state == "Z":
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _all_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout or ""
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _namespaces_with_prefix(pfx: str) -> list[str]:
    return [n for n in _all_namespaces() if n.startswith(pfx)]


def _root_interfaces_with_prefix(pfx: str) -> list[str]:
    out = run(["ip", "-o", "link", "show"], check=False).stdout or ""
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return [n for n in names if n.startswith(pfx)]


def _objects_with_prefix(pfx: str) -> list[str]:
    return ([f"netns {n}" for n in _namespaces_with_prefix(pfx)]
            + [f"interface {i}" for i in _root_interfaces_with_prefix(pfx)])


# --------------------------------------------------------------------------
# status


@dataclass(frozen=True)
class SiteStatus:
    name: str
    namespace_present: bool
    daemons: dict[str, bool]  # daemon -> running
    controller_connected: bool | None  # None: could not ask
    flows: int | None


@dataclass(frozen=True)
class LabStatus:
    state: LabState
    sites: tuple[SiteStatus, ...]
    missing_namespaces: tuple[str, ...]

    @property
    def healthy(self) -> bool:
        return (self.state.status == "up" and not self.missing_namespaces
                and all(s.namespace_present and all(s.daemons.values()) for s in self.sites))


def status() -> LabStatus | None:
    """What the state file says and whether it is still true; None if no lab."""
    state = read_state()
    if state is None:
        return None
    present = set(_all_namespaces())
    sites = []
    for s in state.sites:
        daemons = {d: process_alive(pid) and _comm(pid) == d for d, pid in s.pids.items()} or {d: False for d in DAEMONS}
        connected = flows = None
        if all(daemons.values()):
            try:
                connected = vsctl(s.name, "get", "controller", topo.BR_INT, "is_connected", state=state).strip() == "true"
                agg = ofctl(s.name, "dump-aggregate", state=state)
                flows = int(agg.split("flow_count=")[1].split()[0]) if "flow_count=" in agg else None
            except LabError:
                pass
        sites.append(SiteStatus(name=s.name, namespace_present=s.namespace in present, daemons=daemons,
                                controller_connected=connected, flows=flows))
    missing = tuple(n for n in state.namespaces if n not in present)
    return LabStatus(state=state, sites=tuple(sites), missing_namespaces=missing)


# --------------------------------------------------------------------------
# move: workload mobility


@dataclass(frozen=True)
class Move:
    """One host's move between sites and when its steps happened (`time.time()`,
    the clock `ping -D` and the mobility scenario use)."""

    host: str
    from_site: str
    to_site: str
    from_ofport: int
    to_ofport: int
    started: float  # the host's eth0 goes down: its link is gone
    attached: float  # its new eth0 is up with the old one's addresses, routes and ARP cache
    announced: float  # its gratuitous ARP is sent
    state: LabState  # the lab after the move (also written to the state file)

    @property
    def swap_ms(self) -> float:
        """How long the host had no link: the interface swap itself."""
        return (self.attached - self.started) * 1000.0


# A host's interfaces during a move: the new one waits under one name (the
# host has an eth0 already), the old one leaves under another.
INCOMING_IFNAME = f"{topo.HOST_IFNAME}-incoming"
OUTGOING_IFNAME = f"{topo.HOST_IFNAME}-outgoing"


def move(host: str, site: str) -> LabState:
    """Re-attach HOST to SITE's xTR keeping its IP and MAC; returns the new lab state."""
    return move_host(host, site).state


def move_host(host: str, site: str) -> Move:
    """Move a host to another site as a live-migrated VM moves, and time it.

    As a cloud's destination hypervisor plugs the VM's new vif before the
    switchover, the new site gets a new veth pair first: its site end joins
    the new br-int at the lowest free OpenFlow port, up; its host end waits in
    the host, down, with the MAC and MTU of the host's eth0.  The switchover
    (the outage) then works from sockets opened beforehand: eth0 goes down
    and is renamed away, the new interface becomes eth0, comes up and gets
    the old one's addresses, routes and neighbour (ARP) entries, and the host
    announces itself with a gratuitous ARP, as a hypervisor does after a
    migration.  The host's sockets live on (its address never left the
    namespace).  Only then does the old site lose its port and the old pair
    go.  A move that fails half-way puts the host back.
    """
    with _locked():
        state = load_state()
        if state.status != "up":
            raise LabError(f"the lab is {state.status}, not up: wait for `lisp-ryu lab up` or run `lisp-ryu lab down`")
        h = state.host(host)
        new = state.site(site)
        if h.site == new.name:
            raise LabError(f"host {host} is already at site {site}")
        if new.is_pxtr:
            raise LabError(f"site {site} is a PxTR: hosts move between LISP sites "
                           f"({', '.join(s.name for s in state.lisp_sites)})")
        old = state.site(h.site)
        migration = _Migration(state, h, old, new, _free_ofport(new, state))
        try:
            try:
                migration.plug()
            except LabError as exc:
                migration.put_back_or_explain(exc)
                raise LabError(f"moving {host} from {old.name} to {site} failed before the switchover, it stays at "
                               f"{old.name} port {h.ofport}: {exc}") from exc
            try:
                started, attached, announced = migration.switch_over()
            except LabError as exc:
                migration.put_back_or_explain(exc)
                raise LabError(f"moving {host} from {old.name} to {site} failed, it is back at {old.name} "
                               f"port {h.ofport}: {exc}") from exc
            moved = _state_after_move(state, host, old.name, new.name, migration.ofport)
            write_state(moved)
            try:
                migration.unplug_old()
            except LabError as exc:
                raise LabError(f"{host} moved from {old.name} to {site} (port {migration.ofport}), but removing "
                               f"its old port at {old.name} failed: {exc}\n`lisp-ryu lab down` removes the lab") from exc
        finally:
            migration.close()
    result = Move(host=host, from_site=old.name, to_site=new.name, from_ofport=h.ofport, to_ofport=migration.ofport,
                  started=started, attached=attached, announced=announced, state=moved)
    log.info("moved %s from %s port %d to %s port %d: no link for %.1f ms", host, old.name, h.ofport,
             new.name, migration.ofport, result.swap_ms)
    return result


class _Migration:
    """One host's move, step by step: plug the new interface in, switch
    over, unplug the old one; or put the host back from wherever it got."""

    def __init__(self, state: LabState, h: HostState, old: SiteState, new: SiteState, ofport: int):
        self.state, self.h, self.old, self.new, self.ofport = state, h, old, new, ofport
        self.net: RouteSocket | None = None  # rtnetlink in the host's namespace
        self.outgoing: int | None = None  # the host's eth0 (interface index)
        self.incoming: int | None = None  # its replacement
        self.carried: InterfaceSetup | None = None  # what eth0 held at the switchover
        self.packet_socket: socket.socket | None = None

    def plug(self) -> None:
        """The new veth pair, its site end in the new br-int and up, its host
        end down in the host; and the sockets the switchover needs (entering
        a namespace costs ~10 ms: none of that happens during it)."""
        h, new = self.h, self.new
        self.net = RouteSocket(h.namespace)
        eth0 = self.net.link(topo.HOST_IFNAME)
        self.outgoing = eth0.index
        mtu = str(eth0.mtu)
        run(["ip", "link", "add", INCOMING_IFNAME, "netns", h.namespace, "address", eth0.mac, "mtu", mtu,
             "type", "veth", "peer", "name", h.name, "netns", new.namespace, "mtu", mtu])
        self.incoming = self.net.link(INCOMING_IFNAME).index
        run_in(h.namespace, ["ethtool", "-K", INCOMING_IFNAME, "tx", "off"])
        run_in(new.namespace, ["ethtool", "-K", h.name, "tx", "off"])
        run_in(new.namespace, ["ip", "link", "set", h.name, "up"])
        # Waits until the new ovs-vswitchd has the port: from the switchover on it forwards.
        vsctl(new.name, "add-port", topo.BR_INT, h.name,
              "--", "set", "interface", h.name, f"ofport_request={self.ofport}", state=self.state)
        _check_host_port(new, h.name, self.ofport, self.state)
        self.packet_socket = host_packet_socket(h, INCOMING_IFNAME)

    def switch_over(self) -> tuple[float, float, float]:
        """The outage: old eth0 down and away, the new one eth0 and up with
        what the old one held, the gratuitous ARP.  Returns when the link
        went, came back and the host announced itself (`time.time()`).

        The host needs no telling to keep the copied ARP cache
        (arp_evict_nocarrier): the new eth0 never loses carrier, its peer
        being up before it is."""
        net, eth0, incoming = self.net, self.outgoing, self.incoming
        self.carried = net.setup_of(eth0)
        started = time.time()
        net.set_up(eth0, False, f"taking {topo.HOST_IFNAME} down")
        net.rename(eth0, OUTGOING_IFNAME, f"renaming {topo.HOST_IFNAME} to {OUTGOING_IFNAME}")
        net.rename(incoming, topo.HOST_IFNAME, f"renaming {INCOMING_IFNAME} to {topo.HOST_IFNAME}")
        net.set_up(incoming, True, f"bringing the new {topo.HOST_IFNAME} up")
        net.apply(incoming, self.carried, f"the new {topo.HOST_IFNAME}")
        attached = time.time()
        announce(self.h, self.packet_socket)
        return started, attached, time.time()

    def unplug_old(self) -> None:
        """The old site's port goes, then the old pair (its site end with it)."""
        vsctl(self.old.name, "del-port", topo.BR_INT, self.h.name, state=self.state)
        self.net.delete_link(self.outgoing, f"deleting the old {topo.HOST_IFNAME} ({OUTGOING_IFNAME}) and its pair")

    def put_back(self) -> None:
        """Undo a half-done move, whatever step it failed at: the new pair and
        port go, and the host's own eth0 is eth0 again, up, with what it held."""
        h = self.h
        if self.net is not None:
            incoming = self.incoming
            if incoming is None:  # made, but not looked up: find it by name
                found = self.net.find_link(INCOMING_IFNAME)
                incoming = found.index if found else None
            if incoming is not None:
                self.net.delete_link(incoming, f"deleting the new interface (#{incoming}) and its pair")
            if self.outgoing is not None:
                eth0 = self.net.link_at(self.outgoing)
                if eth0.name != topo.HOST_IFNAME:
                    self.net.rename(eth0.index, topo.HOST_IFNAME, f"renaming {eth0.name} back to {topo.HOST_IFNAME}")
                if not eth0.up:
                    self.net.set_up(eth0.index, True, f"bringing {topo.HOST_IFNAME} back up")
                if self.carried is not None:  # down, eth0 lost its routes and neighbours
                    self.net.apply(eth0.index, self.carried, topo.HOST_IFNAME)
        vsctl(self.new.name, "--if-exists", "del-port", topo.BR_INT, h.name, state=self.state)
        _check_host_port(self.old, h.name, h.ofport, self.state)

    def put_back_or_explain(self, failure: LabError) -> None:
        try:
            self.put_back()
        except LabError as again:
            raise LabError(f"moving {self.h.name} from {self.old.name} to {self.new.name} failed: {failure}\n"
                           f"putting it back at {self.old.name} failed too: {again}\n"
                           f"`lisp-ryu lab down` removes the lab") from failure

    def close(self) -> None:
        for sock in (self.packet_socket, self.net):
            if sock is not None:
                sock.close()


def _free_ofport(site: SiteState, state: LabState) -> int:
    """The lowest br-int port number below the tunnel's that neither the state
    file nor the switch itself has in use."""
    used = set(site.host_ports.values()) | {site.tunnel_ofport}
    ports = set(vsctl(site.name, "list-ports", topo.BR_INT, state=state).split())
    out = vsctl(site.name, "--format=csv", "--data=bare", "--no-headings", "--columns=name,ofport",
                "list", "interface", state=state)
    for line in out.splitlines():
        name, _, ofport = line.partition(",")
        if name in ports and ofport.strip().lstrip("-").isdigit():
            used.add(int(ofport))
    for number in range(1, topo.TUNNEL_OFPORT):
        if number not in used:
            return number
    raise LabError(f"site {site.name}: no free br-int port in 1..{topo.TUNNEL_OFPORT - 1}")


def _check_host_port(site: SiteState, host: str, ofport: int, state: LabState) -> None:
    """OVS reports a port it could not open (or numbered otherwise) only in its Interface table."""
    got, error = (vsctl(site.name, "--format=csv", "--data=bare", "--no-headings", "--columns=ofport,error",
                        "list", "interface", host, state=state).strip().split(",", 1) + [""])[:2]
    if error.strip():
        raise LabError(f"site {site.name}: OVS could not open port {host}: {error.strip()}")
    if got.strip() != str(ofport):
        raise LabError(f"site {site.name}: port {host} got OpenFlow port {got.strip()}, wanted {ofport}")


def _state_after_move(state: LabState, host: str, old: str, new: str, ofport: int) -> LabState:
    def site(s: SiteState) -> SiteState:
        if s.name == old:
            return replace(s, host_ports={k: v for k, v in s.host_ports.items() if k != host})
        if s.name == new:
            return replace(s, host_ports={**s.host_ports, host: ofport})
        return s

    return replace(state, sites=tuple(site(s) for s in state.sites),
                   hosts=tuple(replace(x, site=new, ofport=ofport) if x.name == host else x for x in state.hosts))


def gratuitous_arp(mac: str, ip: str) -> bytes:
    """A broadcast ARP request from `mac` asking for its own `ip` (sender =
    target address): how a host or hypervisor announces where it now is."""
    hw = bytes.fromhex(mac.replace(":", ""))
    addr = ipaddress.IPv4Address(ip).packed
    ethernet = b"\xff" * 6 + hw + b"\x08\x06"
    arp = b"\x00\x01\x08\x00\x06\x04\x00\x01" + hw + addr + b"\x00" * 6 + addr
    return (ethernet + arp).ljust(60, b"\x00")


def host_packet_socket(h: HostState, ifname: str = topo.HOST_IFNAME) -> socket.socket:
    """A raw packet socket on one of the host's interfaces, made inside its
    namespace.  It is bound to the interface, not its name: a move opens one
    on the new interface before the switchover (entering a namespace costs
    ~10 ms, an RCU grace period) and sends from it once that is eth0."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        try:
            sock.bind((ifname, 0))
        except OSError:
            sock.close()
            raise
        return sock

    try:
        return run_in_netns(h.namespace, make)
    except OSError as exc:
        raise LabError(f"host {h.name}: cannot open a packet socket on {ifname}: {exc}") from None


def announce(h: HostState, sock: socket.socket | None = None) -> None:
    """Send the host's gratuitous ARP out of its eth0, or out of the interface
    `sock` is bound to (a raw socket from inside its namespace: iputils-arping
    is not needed)."""
    own = sock is None
    sock = host_packet_socket(h) if own else sock
    try:
        sock.send(gratuitous_arp(h.mac, h.ip))
    except OSError as exc:
        raise LabError(f"host {h.name}: sending its gratuitous ARP on {topo.HOST_IFNAME} failed: {exc}") from None
    finally:
        if own:
            sock.close()
