"""End to end on real OVS: two sites in namespaces, static flows, LISP-GPE
on the wire, and a teardown that leaves nothing behind.

The lab comes up once for this module (`two_dc`); the last test tears it
down and checks that nothing is left.  Labs built by single tests use their
own prefix, state directory and management subnet.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from lisp_ryu.glue import netns
from lisp_ryu.lab import build, capture, cli as lab_cli, processes, running, static_flows, teardown
from lisp_ryu.lab.state import LabError, read_state

pytestmark = pytest.mark.lab


def ping(state, src: str, dst_ip: str, *args: str) -> subprocess.CompletedProcess:
    return running.exec_in(src, ["ping", "-c", "1", "-W", "2", *args, dst_ip], state=state, check=False)


def test_ping_across_sites_is_lisp_gpe_on_the_underlay(two_dc, tmp_path):
    st, _ = two_dc
    h1, h3 = st.host("h1"), st.host("h3")
    dc1 = st.site("dc1")
    pcap = tmp_path / "tunnel.pcap"
    # The first packet to a new destination must not be lost: the gateway ARP
    # is answered by flows and the tunnel next hop was seeded at `up`.
    bpf = f"udp dst port 4341 and src host {dc1.rlocs[0].address}"  # requests only
    with capture.Capture(dc1.namespace, dc1.rlocs[0].uplink, bpf, pcap, count=2):
        first = ping(st, "h1", h3.ip)
        assert first.returncode == 0, first.stdout + first.stderr
        second = ping(st, "h1", h3.ip)
        assert second.returncode == 0, second.stdout + second.stderr
    text = capture.decode(pcap)
    packets = text.split("\nFrame ")
    assert len(packets) == 2, text
    for pkt in packets:
        assert "Src: 198.18.1.2, Dst: 198.18.2.2" in pkt  # outer: RLOC to RLOC
        assert "Dst Port: 4341" in pkt
        assert "Locator/ID Separation Protocol (Data)" in pkt
        assert "Flags: 0x0c" in pkt  # I and P (GPE) bits: what OVS sends and accepts
        assert "I bit (Instance ID present): Set" in pkt
        assert "Instance ID: 42" in pkt
        assert f"Src: {h1.ip}, Dst: {h3.ip}" in pkt  # inner packet, no Ethernet header
        assert "Internet Control Message Protocol" in pkt and "Echo (ping) request" in pkt
        assert "Ethernet II" in pkt and pkt.count("Ethernet II") == 1  # outer only
        assert "Malformed" not in pkt


def test_every_pair_of_hosts_reaches_each_other(two_dc):
    st, _ = two_dc
    for a in st.hosts:
        for b in st.hosts:
            if a is not b:
                out = ping(st, a.name, b.ip)
                assert out.returncode == 0, f"{a.name} -> {b.name} ({b.ip}): {out.stdout}{out.stderr}"


def test_hosts_see_the_gateway_mac_from_the_arp_responder(two_dc):
    st, _ = two_dc
    out = running.exec_in("h1", ["ip", "neigh", "show", st.host("h1").gateway], state=st).stdout
    assert st.host("h1").gateway_mac in out


def test_largest_host_packet_fits_the_tunnel(two_dc):
    """MTU 1450 on hosts: a full-size packet with DF crosses the 36-byte encapsulation."""
    st, _ = two_dc
    out = ping(st, "h2", st.host("h4").ip, "-M", "do", "-s", str(1450 - 28))
    assert out.returncode == 0, out.stdout + out.stderr


def test_tcp_crosses_the_tunnel(two_dc):
    """TCP breaks without `tx off` on the veths (checksum offload): move 2 MB."""
    st, _ = two_dc
    server = subprocess.Popen(["ip", "netns", "exec", st.host("h3").namespace, "iperf3", "-s", "-1", "-p", "5301"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(50):
            if "5301" in running.exec_in("h3", ["ss", "-ltn"], state=st).stdout:
                break
            subprocess.run(["sleep", "0.05"])
        out = running.exec_in("h1", ["iperf3", "-c", st.host("h3").ip, "-p", "5301", "-n", "2M", "--connect-timeout", "3000"],
                              state=st, check=False, timeout=30)
        assert out.returncode == 0, out.stdout + out.stderr
    finally:
        server.kill()
        server.wait()


def test_site_switch_is_configured_as_documented(two_dc):
    st, _ = two_dc
    for site in st.sites:
        show = running.ofctl(site.name, "show", state=st)
        assert f"dpid:{site.dpid_hex}" in show
        assert f" {site.tunnel_ofport}({site.tunnel_port}):" in show
        for host, port in site.host_ports.items():
            assert f" {port}({host}):" in show
        assert running.vsctl(site.name, "get", "bridge", "br-int", "fail_mode", state=st).strip() == "secure"
        target = running.vsctl(site.name, "get", "controller", "br-int", "target", state=st).strip()
        assert target == f'"tcp:{st.controller}:{st.controller_port}"'
        assert running.vsctl(site.name, "get", "controller", "br-int", "max_backoff", state=st).strip() == "1000"
        assert running.vsctl(site.name, "get", "controller", "br-int", "controller_queue_size",
                             state=st).strip() == "512"
        opts = running.vsctl(site.name, "get", "interface", site.tunnel_port, "options", state=st)
        for kv in ("exts=gpe", 'dst_port="4341"', "packet_type=legacy_l3", "remote_ip=flow", "key=flow",
                   f'local_ip="{site.rlocs[0].address}"'):
            assert kv in opts
        neigh = running.appctl(site.name, "tnl/neigh/show", state=st)
        assert site.rlocs[0].next_hop in neigh and site.rlocs[0].next_hop_mac in neigh
        flows = running.ofctl(site.name, "dump-flows", f"cookie={static_flows.STATIC_COOKIE:#x}/-1", state=st)
        assert flows.count("cookie=") == 14


def test_site_reaches_the_controller_address_over_management(two_dc):
    st, _ = two_dc
    for site in st.sites:
        out = running.exec_in(site.name, ["ping", "-c", "1", "-W", "2", st.controller], state=st, check=False)
        assert out.returncode == 0, out.stdout


def test_udp_socket_in_a_site_namespace_reaches_the_map_server(two_dc):
    """LISP control traffic from an xTR's RLOC crosses the underlay to the Map-Server."""
    st, _ = two_dc
    dc1 = st.site("dc1")
    ms = netns.open_udp_socket(st.map_server_namespace, (st.map_server_address, 4342))
    xtr = netns.open_udp_socket(dc1.namespace, (dc1.rlocs[0].address, 0))
    try:
        ms.settimeout(3)
        xtr.sendto(b"map-register", (st.map_server_address, 4342))
        data, source = ms.recvfrom(100)
        assert data == b"map-register"
        assert source[0] == dc1.rlocs[0].address
        # The same address does not exist here: the sockets really live in the lab.
        with pytest.raises(OSError, match="cannot bind UDP 198.18.0.2:4342 in the current namespace"):
            netns.open_udp_socket(None, (st.map_server_address, 4342))
    finally:
        ms.close()
        xtr.close()


def test_udp_socket_under_eventlet_monkey_patching(two_dc):
    """ryu-manager monkey-patches threads: the namespace switch must still
    happen on a real OS thread and never move the caller's thread."""
    st, _ = two_dc
    dc2 = st.site("dc2")
    code = f"""
import eventlet; eventlet.monkey_patch()
import os
from lisp_ryu.glue.netns import open_udp_socket
before = os.readlink("/proc/thread-self/ns/net")
ms = open_udp_socket({st.map_server_namespace!r}, ({st.map_server_address!r}, 4342))
x = open_udp_socket({dc2.namespace!r}, ({dc2.rlocs[0].address!r}, 4342))
x.sendto(b"ping", ({st.map_server_address!r}, 4342))
ms.settimeout(3)
data, src = ms.recvfrom(10)
assert os.readlink("/proc/thread-self/ns/net") == before
print(data.decode(), src[0])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ping", dc2.rlocs[0].address]


def test_missing_namespace_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="network namespace 'lt-nope' does not exist"):
        netns.open_udp_socket("lt-nope", ("127.0.0.1", 0))


def test_up_twice_is_an_error_and_changes_nothing(two_dc):
    st, env = two_dc
    before = processes.objects_with_prefix(env.prefix)
    with pytest.raises(LabError, match="lab already up: run `lisp-ryu lab down`"):
        build.up(st.topology)
    assert processes.objects_with_prefix(env.prefix) == before
    assert read_state() == st


def test_status_reports_a_healthy_lab(two_dc):
    st, _ = two_dc
    status = running.status()
    assert status.healthy
    assert [s.flows for s in status.sites] == [14, 14]
    assert all(s.controller_connected is False for s in status.sites)  # no controller yet


def test_cli_exec_and_status(two_dc, capfd):
    st, _ = two_dc
    parser = argparse.ArgumentParser(prog="lisp-ryu")
    lab_cli.add_parser(parser.add_subparsers(dest="command"), lab_cli.run)

    def cli(*argv: str) -> int:
        args, extra = parser.parse_known_args(list(argv))
        assert extra == []
        return args.func(args, extra)

    assert cli("lab", "exec", "h2", "--", "ping", "-c", "1", "-W", "2", st.host("h3").ip) == 0
    assert "1 received" in capfd.readouterr().out
    assert cli("lab", "exec", "h2", "ip", "-4", "-o", "addr", "show", "eth0") == 0
    assert st.host("h2").address in capfd.readouterr().out
    assert cli("lab", "exec", "h2", "--", "false") == 1
    assert cli("lab", "exec", "nosuch", "--", "true") == 1
    assert "no node 'nosuch' in the lab" in capfd.readouterr().err
    assert cli("lab", "status") == 0
    out = capfd.readouterr().out
    assert "healthy" in out and "site dc1: netns lt-dc1, dpid 0000000000000001" in out


def test_down_leaves_nothing_behind(two_dc):
    """Last in this module: the shared lab goes down and every trace with it."""
    st, env = two_dc
    pids = [pid for s in st.sites for pid in s.pids.values()]
    assert pids and all(processes.process_alive(p) for p in pids)
    removed = teardown.down()
    assert any(r.startswith("netns lt-dc1") for r in removed)
    assert env.leftovers(pids) == []
    assert read_state() is None
    assert not any(n.startswith("lt-") for n in processes.all_namespaces())
    assert running.status() is None


# ----------------------------------------------------------------------------
# Labs of their own


def test_down_after_a_crash_cleans_up_by_prefix(own_lab):
    """Daemons killed, state file gone: `down` still finds and removes everything."""
    env, topo_file = own_lab("lc-", "198.19.251.0/24")
    st = build.up(topo_file)
    pids = [pid for s in st.sites for pid in s.pids.values()]
    processes.signal_pid(st.site("dc1").pids["ovs-vswitchd"], 9)  # a crashed daemon
    (env.dir / "state.json").unlink()  # and a lost state file
    # A process left running inside a lab namespace (e.g. from `lab exec`).
    stray = subprocess.Popen(["ip", "netns", "exec", st.host("h1").namespace, "sleep", "300"])
    try:
        removed = teardown.down()
        assert f"netns {st.host('h4').namespace}" in removed
        assert any(f"process {stray.pid}" in r for r in removed)
        assert env.leftovers([*pids, stray.pid]) == []
    finally:
        stray.kill()
        stray.wait()


def test_failed_up_reports_the_command_and_tears_down(own_lab, monkeypatch):
    env, topo_file = own_lab("lf-", "198.19.252.0/24")
    real_run = processes.run

    def failing_run(argv, **kwargs):
        if "tnl/neigh/set" in argv and "dc2" in " ".join(argv):
            raise processes.CommandError(argv, 2, "simulated: no such bridge")
        return real_run(argv, **kwargs)

    monkeypatch.setattr(running, "run", failing_run)
    with pytest.raises(processes.CommandError) as exc:
        build.up(topo_file)
    assert "tnl/neigh/set" in str(exc.value) and "simulated: no such bridge" in str(exc.value)
    assert env.leftovers() == []
    assert read_state() is None


def test_up_refuses_leftovers_of_a_crashed_lab(own_lab):
    env, topo_file = own_lab("lg-", "198.19.253.0/24")
    subprocess.run(["ip", "netns", "add", "lg-dc1"], check=True)
    try:
        with pytest.raises(LabError, match=r"objects of an earlier lab are left \(netns lg-dc1\)"):
            build.up(topo_file)
    finally:
        teardown.down()
    assert env.leftovers() == []


def test_management_subnet_in_use_is_refused(own_lab):
    env, topo_file = own_lab("lh-", "127.0.0.0/8")
    with pytest.raises(LabError, match="management subnet 127.0.0.0/8 overlaps 127.0.0.1/8 on lo"):
        build.up(topo_file)
    assert env.leftovers() == []


def test_three_dc_multihomed_site_receives_on_both_rlocs(own_lab, tmp_path):
    """dc3 has two RLOCs on two bridges; its tunnel port (local_ip=flow)
    decapsulates traffic sent to either."""
    env, topo_file = own_lab("lm-", "198.19.254.0/24", "three-dc.yaml")
    st = build.up(topo_file)
    assert st.site("dc3").tunnel_local_ip == "flow"
    assert [r.bridge for r in st.site("dc3").rlocs] == ["br-phy", "br-phy1"]
    static_flows.install(st)
    h5 = st.host("h5")
    for rloc in st.site("dc3").rlocs:
        running.ofctl("dc1", "mod-flows", "-", state=st, input=(
            f"in_port=1,ip,nw_dst=10.3.0.0/16 actions=set_field:42->tun_id,"
            f"set_field:{rloc.address}->tun_dst,output:100\n"))
        pcap = tmp_path / f"{rloc.bridge}.pcap"
        with capture.Capture(st.site("dc3").namespace, rloc.uplink, "udp dst port 4341", pcap, count=1):
            out = ping(st, "h1", h5.ip)
        assert out.returncode == 0, f"via {rloc.address}: {out.stdout}"
        assert f"Dst: {rloc.address}" in capture.decode(pcap)
    teardown.down()
    assert env.leftovers() == []
