"""OVS 3.1 userspace carries LISP-GPE over an IPv6 underlay: IPv6 RLOCs, a flow-based tunnel port, tun_ipv6_dst.

Two sites, each its own ovsdb-server + ovs-vswitchd in its own namespace (DESIGN.md §4), br-phy
holding the IPv6 RLOC, br-int with one host and the flow-based VXLAN-GPE port
(`options:local_ip=<IPv6 RLOC> remote_ip=flow key=flow packet_type=legacy_l3 exts=gpe dst_port=4341`).
The encapsulation flows are the ones the compiler emits for an IPv6 RLOC (set tunnel_id, set
tun_ipv6_dst, output to the tunnel port; checked below against `compile_plan`).  Hosts carry IPv4
and IPv6 EIDs: both cross the IPv6 underlay from the first packet, and tshark decodes what crosses
it as IPv6 / UDP 4341 / LISP data, flags 0x0c, instance-ID 42, the inner packet.

What OVS needs besides what an IPv4 underlay needs: IPv6 off on the OVS-owned veth (the IPv6
counterpart of `arp off`: the namespace kernel must not answer neighbour discovery there), the
RLOC added `nodad`, and the tunnel neighbour preset with `tnl/neigh/set br-phy <IPv6 RLOC> <MAC>`.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lisp_ryu import plan as pt
from lisp_ryu.flows.compiler import compile_plan
from lisp_ryu.flows.model import Output, SetField
from lisp_ryu.lab import capture

from conftest import lab_unavailable

pytestmark = [pytest.mark.lab]

PFX = "lu-"
SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
GW = "02:4c:67:00:00:01"
SITES = {
    "s1": dict(rloc="fc00:4c::1", mac="02:4c:72:00:00:01", uplink="up1", host="h1", ip="10.1.0.10",
               ip6="fd00:1::10", hmac="02:4c:68:01:00:0a"),
    "s2": dict(rloc="fc00:4c::2", mac="02:4c:72:00:00:02", uplink="up2", host="h2", ip="10.2.0.10",
               ip6="fd00:2::10", hmac="02:4c:68:02:00:0a"),
}


def sh(*argv: str, ns: str | None = None, env: dict | None = None, check: bool = True) -> str:
    if ns:
        argv = ("ip", "netns", "exec", PFX + ns, *argv)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def peer(site: str) -> dict:
    return SITES["s2" if site == "s1" else "s1"]


def encap_actions(rloc: str) -> str:
    """The compiler's encapsulation to an IPv6 RLOC, as ovs-ofctl text."""
    entry = pt.RemoteEntry(42, ipaddress.ip_network("10.9.0.0/16"), pt.RemoteAction.ENCAP,
                           (pt.Rloc(ipaddress.ip_address(rloc)),))
    (flow,) = [f for f in compile_plan(pt.XtrPlan(tunnel_port=100, remotes=(entry,))).flows
               if f.match_dict().get("ipv4_dst") == ("10.9.0.0", "255.255.0.0")]
    assert flow.actions == (SetField("tunnel_id", 42), SetField("tun_ipv6_dst", rloc), Output(100))
    return f"set_field:42->tun_id,set_field:{rloc}->tun_ipv6_dst,output:100"


@pytest.fixture(scope="module")
def underlay6(tmp_path_factory):
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("v6u")
    names = [*SITES, *(s["host"] for s in SITES.values())]
    pids: list[Path] = []
    try:
        for n in names:
            sh("ip", "netns", "add", PFX + n)
            sh("ip", "link", "set", "lo", "up", ns=n)
        sh("ip", "link", "add", "up1", "netns", PFX + "s1", "type", "veth", "peer", "name", "up2", "netns", PFX + "s2")
        for name, s in SITES.items():
            sh("ip", "link", "add", "eth0", "netns", PFX + s["host"], "type", "veth", "peer", "name", s["host"],
               "netns", PFX + name)
            run = base / name
            run.mkdir()
            env = {"OVS_RUNDIR": str(run), "OVS_DBDIR": str(run), "OVS_LOGDIR": str(run),
                   "OVS_SYSCONFDIR": str(run)}
            sh("ovsdb-tool", "create", f"{run}/conf.db", SCHEMA, env=env)
            sh("ovsdb-server", f"{run}/conf.db", f"--remote=punix:{run}/db.sock", f"--pidfile={run}/ovsdb-server.pid",
               f"--log-file={run}/ovsdb-server.log", "--detach", ns=name, env=env)
            pids.append(run / "ovsdb-server.pid")
            vsctl = ("ovs-vsctl", f"--db=unix:{run}/db.sock")
            sh(*vsctl, "--no-wait", "init", ns=name, env=env)
            sh("ovs-vswitchd", f"unix:{run}/db.sock", f"--pidfile={run}/ovs-vswitchd.pid",
               f"--log-file={run}/ovs-vswitchd.log", f"--unixctl={run}/ovs-vswitchd.ctl", "--detach", ns=name, env=env)
            pids.append(run / "ovs-vswitchd.pid")
            # The IPv6 counterpart of `arp off`: the namespace kernel must not do neighbour discovery on
            # the OVS-owned uplink, or it answers for the RLOC and OVS never decapsulates.
            sh("sysctl", "-qw", f"net.ipv6.conf.{s['uplink']}.disable_ipv6=1", ns=name)
            for dev in (s["uplink"], s["host"]):
                sh("ip", "link", "set", dev, "up", ns=name)
                sh("ethtool", "-K", dev, "tx", "off", ns=name)
            sh(*vsctl, "add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev",
               f"other_config:hwaddr={s['mac']}", "--", "add-port", "br-phy", s["uplink"], ns=name, env=env)
            sh("ip", "link", "set", "br-phy", "up", ns=name)
            sh("ip", "-6", "addr", "add", f"{s['rloc']}/64", "dev", "br-phy", "nodad", ns=name)
            sh(*vsctl, "add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev", "fail_mode=secure",
               "--", "add-port", "br-int", s["host"], "--", "set", "interface", s["host"], "ofport_request=1",
               "--", "add-port", "br-int", "lisp0", "--", "set", "interface", "lisp0", "type=vxlan",
               "ofport_request=100", "options:exts=gpe", "options:dst_port=4341", "options:packet_type=legacy_l3",
               "options:remote_ip=flow", "options:key=flow", f"options:local_ip={s['rloc']}", ns=name, env=env)
            sh("ovs-appctl", "-t", f"{run}/ovs-vswitchd.ctl", "tnl/neigh/set", "br-phy", peer(name)["rloc"],
               peer(name)["mac"], ns=name, env=env)
            mgmt = f"unix:{run}/br-int.mgmt"
            # Only echo requests and replies are encapsulated: the hosts' own IPv6 chatter (MLD reports,
            # router solicitations, sent on their own schedule after link-up) would otherwise cross the
            # underlay among the pings and shift the frames this test reads.
            flows = [f"table=0,in_port=1,{proto},actions={encap_actions(peer(name)['rloc'])}"
                     for proto in ("icmp", "icmp6,icmp_type=128", "icmp6,icmp_type=129")]
            flows += [f"table=0,in_port=100,{proto},actions=set_field:{GW}->eth_src,set_field:{s['hmac']}->eth_dst,"
                      "output:1" for proto in ("ip", "ipv6")]
            for flow in flows:
                sh("ovs-ofctl", "-O", "OpenFlow13", "add-flow", mgmt, flow, ns=name, env=env)
            host = s["host"]
            sh("ip", "link", "set", "eth0", "address", s["hmac"], "mtu", "1400", "up", ns=host)
            sh("ethtool", "-K", "eth0", "tx", "off", ns=host)
            sh("ip", "addr", "add", f"{s['ip']}/16", "dev", "eth0", ns=host)
            sh("ip", "-6", "addr", "add", f"{s['ip6']}/64", "dev", "eth0", "nodad", ns=host)
            gw4, gw6 = s["ip"].rsplit(".", 1)[0] + ".1", s["ip6"].rsplit(":", 1)[0] + ":1"
            sh("ip", "route", "add", "default", "via", gw4, ns=host)
            sh("ip", "-6", "route", "add", "default", "via", gw6, ns=host)
            # Static neighbours for the gateways: this test is about the underlay, not ARP/ND.
            sh("ip", "neigh", "replace", gw4, "lladdr", GW, "dev", "eth0", "nud", "permanent", ns=host)
            sh("ip", "-6", "neigh", "replace", gw6, "lladdr", GW, "dev", "eth0", "nud", "permanent", ns=host)
        yield base
    finally:
        for pid_file in pids:
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        time.sleep(0.3)
        for n in names:
            sh("ip", "netns", "del", PFX + n, check=False)


def test_ipv4_and_ipv6_eids_cross_an_ipv6_underlay_from_the_first_packet(underlay6, tmp_path):
    pcap = tmp_path / "underlay.pcap"
    with capture.Capture(PFX + "s2", "up2", "udp port 4341", pcap, count=4, timeout=5):
        out4 = sh("ping", "-n", "-c", "1", "-W", "2", "10.2.0.10", ns="h1", check=False)
        out6 = sh("ping", "-6", "-n", "-c", "1", "-W", "2", "fd00:2::10", ns="h1", check=False)
    assert " 0% packet loss" in out4, out4
    assert " 0% packet loss" in out6, out6
    decoded = capture.decode(pcap)
    assert "Malformed" not in decoded and "Expert Info (Error" not in decoded, decoded
    lines = capture.lisp_header_lines(capture.decode(pcap, "-V", "-Y", "frame.number==1"))
    assert lines[0].startswith("Internet Protocol Version 6, Src: fc00:4c::1, Dst: fc00:4c::2"), lines
    assert "Dst Port: 4341" in lines[1] and "    Flags: 0x0c" in lines and "    Instance ID: 42" in lines, lines
    assert lines[-1].startswith("Internet Protocol Version 4, Src: 10.1.0.10, Dst: 10.2.0.10"), lines
    inner6 = capture.lisp_header_lines(capture.decode(pcap, "-V", "-Y", "frame.number==3"))
    assert inner6[0].startswith("Internet Protocol Version 6, Src: fc00:4c::1") and \
        inner6[-1].startswith("Internet Protocol Version 6, Src: fd00:1::10, Dst: fd00:2::10"), inner6
