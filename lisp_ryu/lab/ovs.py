"""One site's Open vSwitch: its own ovsdb-server and ovs-vswitchd, and the bridges they run.

Every site runs its own OVS pair (userspace datapath) inside its namespace,
with its own run directory: OVS's userspace tunnel routing uses the kernel
routes of the namespace it runs in, so with several xTRs in one namespace
every RLOC would be local and tunnels would leave by the wrong bridge.

  * `br-phy` (netdev): the underlay veth (port 1) and the RLOC on the
    bridge's internal port; a multihomed site has br-phy1, br-phy2... one
    per RLOC.
  * `br-int` (netdev, OpenFlow13, fail_mode=secure, fixed datapath-id):
    host ports 1..N (taps, or the site ends of veths: `host_taps`), a PxTR's
    native port (101) and the flow-based VXLAN-GPE port `lisp0` (100), which
    is LISP-GPE on UDP 4341; its controller is tcp:<management
    address>:<port> with max_backoff=1000 and controller_queue_size=512 (OVS's most; its default, 100, drops the
    packet-ins of a burst of arrivals, an evacuation's gratuitous ARPs, while
    the controller catches up, and a workload whose only announcement was
    dropped stays unlearned until it sends again).

A host port is a tap that ovs-vswitchd opens, moved into the host's namespace
as its eth0 (as a hypervisor plugs a VM's vif), not a veth: the userspace
datapath polls every port it cannot wait on in its main loop, and a veth
(an AF_PACKET socket) costs 32 packet buffers allocated and freed per poll,
a tap one read.  Measured on OVS 3.1 with 200 idle ports beside a 1 ms ping
between two others: ovs-vswitchd took 7.0 s of CPU for 3,000 pings with
veths (ping RTT 4.1 ms average, 168 ms max), 2.3 s with taps (0.6 ms) and
0.5 s with no idle port.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from lisp_ryu.lab import topology as topo
from lisp_ryu.lab.processes import run
from lisp_ryu.lab.state import LabError, LabState, SiteState
from lisp_ryu.wire import LISP_DATA_PORT

CONTROLLER_QUEUE = 512  # packet-ins OVS queues for the controller (see the module docstring)
log = logging.getLogger("lisp_ryu.lab")

OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
DAEMONS = ("ovs-vswitchd", "ovsdb-server")


def ovs_env(run_dir: str) -> dict:
    """OVS tools find their sockets, database and logs through these."""
    env = dict(os.environ)
    for var in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"):
        env[var] = run_dir
    return env


def ovs_daemon_argvs(run_dir: str) -> tuple[list[str], list[str]]:
    """ovsdb-server and ovs-vswitchd command lines for a site's run directory
    (start them inside the site's namespace, with `ovs_env(run_dir)`)."""
    rd = run_dir
    db = f"unix:{rd}/db.sock"
    ovsdb = ["ovsdb-server", f"{rd}/conf.db", f"--remote=punix:{rd}/db.sock", f"--pidfile={rd}/ovsdb-server.pid",
             f"--log-file={rd}/ovsdb-server.log", f"--unixctl={rd}/ovsdb-server.ctl", "--detach", "--no-chdir"]
    vswitchd = ["ovs-vswitchd", db, f"--pidfile={rd}/ovs-vswitchd.pid", f"--log-file={rd}/ovs-vswitchd.log",
                f"--unixctl={rd}/ovs-vswitchd.ctl", "--detach", "--no-chdir"]
    return ovsdb, vswitchd


def ovs_bridge_args(s: SiteState, controller: str, port: int, host_taps: bool = False) -> list[str]:
    """One ovs-vsctl transaction that builds the site's bridges (DESIGN §4); `host_taps`: the
    host ports are taps ovs-vswitchd makes (`host_port_args`), else existing interfaces."""
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
        cmd += host_port_args(host, ofport) if host_taps else [
            "--", "add-port", topo.BR_INT, host, "--", "set", "interface", host, f"ofport_request={ofport}"]
    if s.native:
        cmd += ["--", "add-port", topo.BR_INT, s.native["ifname"],
                "--", "set", "interface", s.native["ifname"], f"ofport_request={s.native['ofport']}"]
    cmd += ["--", "add-port", topo.BR_INT, s.tunnel_port,
            "--", "set", "interface", s.tunnel_port, "type=vxlan", f"ofport_request={s.tunnel_ofport}",
            "options:exts=gpe", f"options:dst_port={LISP_DATA_PORT}", "options:packet_type=legacy_l3",
            "options:remote_ip=flow", "options:key=flow", f"options:local_ip={s.tunnel_local_ip}",
            "--", "--id=@c", "create", "controller", f"target=\"tcp:{controller}:{port}\"",
            "max_backoff=1000", "connection_mode=out-of-band", f"controller_queue_size={CONTROLLER_QUEUE}",
            "--", "set", "bridge", topo.BR_INT, "controller=@c"]
    return cmd


def host_port_args(host: str, ofport: int) -> list[str]:
    """The ovs-vsctl commands that make `host`'s port: a tap of that name, which ovs-vswitchd
    creates in the site's namespace and holds open (it goes when the port goes), numbered
    `ofport`.  The lab then moves the tap into the host's namespace (`tap_to_host`)."""
    return ["--", "add-port", topo.BR_INT, host, "--", "set", "interface", host, "type=tap", f"ofport_request={ofport}"]


def tap_to_host(tap: str, namespace: str, ifname: str, mac: str, mtu: int = topo.HOST_MTU) -> str:
    """The `ip` command (run in the site's namespace; a line of `ip -batch`) that moves a host
    port's tap into the host's namespace with its interface name, MAC and MTU in one request.
    It arrives down (a move takes a link down) and keeps working: ovs-vswitchd reads and
    writes it by its file descriptor; only OVS's by-name queries of it fail (OVS logs them)."""
    return f"link set {tap} netns {namespace} name {ifname} address {mac} mtu {mtu}"


def start_site(s: SiteState, state: LabState, execute, host_taps: bool = False) -> SiteState:
    """Start the site's own ovsdb-server and ovs-vswitchd inside its namespace
    and build br-phy(s) and br-int (`host_taps`: see `ovs_bridge_args`); returns the
    site with the daemons' PIDs."""
    rd = Path(s.run_dir)
    rd.mkdir(parents=True, exist_ok=False)
    env = ovs_env(s.run_dir)
    run(["ovsdb-tool", "create", str(rd / "conf.db"), OVS_SCHEMA], env=env)
    ovsdb, vswitchd = ovs_daemon_argvs(s.run_dir)
    execute(s.name, ovsdb, env=env)
    run(["ovs-vsctl", f"--db={s.db}", "--no-wait", "init"], env=env)
    execute(s.name, vswitchd, env=env)
    pids = {d: int((rd / f"{d}.pid").read_text()) for d in DAEMONS}
    log.info("site %s: ovsdb-server pid %d, ovs-vswitchd pid %d in netns %s",
             s.name, pids["ovsdb-server"], pids["ovs-vswitchd"], s.namespace)
    run(["ovs-vsctl", f"--db={s.db}", "--timeout=20",
         *ovs_bridge_args(s, state.controller, state.controller_port, host_taps)], env=env)
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
