"""Workload mobility in the lab: `lisp-ryu lab move` and the mobility scenario.

The move mechanics are tested on a lab without a controller (its flows are
the test's own), so they hold whatever the controller does; the end-to-end
test (also `slow`) runs the real controller and moves a host back and forth
under a continuous ping and an open TCP connection.  Labs here use the name
prefixes mv- and mw-, management subnets 198.19.245.0/24 and 198.19.244.0/24
and controller port 6691, so they never meet another lab.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import re
import socket
import struct
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from lisp_ryu.flows.pipeline import Owner, cookie
from lisp_ryu.lab import cli as lab_cli
from lisp_ryu.lab import topology_load
from lisp_ryu.lab import controller as lab_controller
from lisp_ryu.lab import build, processes, rtnetlink, running, teardown
from lisp_ryu.lab import move as lab_move
from lisp_ryu.lab.scenarios import mobility, probe
from lisp_ryu.glue.netns import run_in_netns
from lisp_ryu.lab.state import LabError, read_state
from lisp_ryu.wire.ecm import internet_checksum

from conftest import TOPOLOGIES, LabEnv, lab_unavailable, private_lab, topology_copy

TEST_COOKIE = 0x6D76000000000000  # "mv": flows this test adds by hand


def _topology(directory: Path, subnet: str, port: int) -> Path:
    return topology_copy(TOPOLOGIES / "three-dc.yaml", directory, subnet, port=port)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, module_monkeypatch):
    """three-dc without a controller, up once for the mechanics tests."""
    env, topo_file = private_lab(tmp_path_factory, module_monkeypatch, "move", "mv-", "three-dc.yaml",
                                 "198.19.245.0/24", 6691)
    st = build.up(topo_file)
    yield st, env
    if read_state() is not None or env.leftovers():
        teardown.down()


def sh(state, node: str, *argv: str) -> str:
    return running.exec_in(node, list(argv), state=state).stdout


def link_exists(namespace: str, name: str) -> bool:
    return processes.run_in(namespace, ["ip", "link", "show", "dev", name], check=False).returncode == 0


def host_links(state, host: str) -> list[str]:
    """The names of a host's interfaces."""
    out = sh(state, host, "ip", "-o", "link", "show")
    return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())


def eth0_index(state, host: str) -> int:
    """The interface index of a host's eth0: a move gives it a new one."""
    return int(sh(state, host, "ip", "-o", "link", "show", "dev", "eth0").split(":")[0])


def arp_responder(state, site: str, h) -> None:
    """A flow at `site` answering the host's ARP requests for its gateway on
    its port there (the test's own: no controller runs here)."""
    respond = (f"move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:{h.gateway_mac}->eth_src,"
               f"set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],"
               f"set_field:{h.gateway_mac}->arp_sha,move:NXM_OF_ARP_TPA[]->NXM_NX_REG0[],"
               f"move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],move:NXM_NX_REG0[]->NXM_OF_ARP_SPA[],IN_PORT")
    running.ofctl(site, "add-flow", f"cookie={TEST_COOKIE:#x},table=0,priority=65000,in_port={h.ofport},"
                  f"arp,arp_op=1,arp_tpa={h.gateway},actions={respond}", state=state)


def resolves_its_gateway(state, site: str, h) -> bool:
    """With `arp_responder` installed at `site` for the time of the check:
    the host, its ARP cache flushed, resolves its gateway through its port there."""
    arp_responder(state, site, h)
    try:
        return _resolves_through(state, site, h)
    finally:
        running.ofctl(site, "del-flows", f"cookie={TEST_COOKIE:#x}/-1", state=state)


def _resolves_through(state, site: str, h) -> bool:
    before = flow_packets(state, site, TEST_COOKIE)
    sh(state, h.name, "ip", "neigh", "flush", "dev", "eth0")
    # Any off-subnet destination makes the host resolve its gateway first.
    running.exec_in(h.name, ["ping", "-c", "1", "-W", "1", "10.2.0.10"], state=state, check=False)
    neigh = sh(state, h.name, "ip", "neigh", "show", h.gateway)
    return (flow_packets(state, site, TEST_COOKIE) > before and h.gateway_mac in neigh
            and "FAILED" not in neigh and "INCOMPLETE" not in neigh)


def flow_packets(state, site: str, match_cookie: int) -> int:
    out = running.ofctl(site, "dump-flows", f"cookie={match_cookie:#x}/-1", state=state)
    return sum(int(n) for n in re.findall(r"n_packets=(\d+)", out))


# --------------------------------------------------------------------------
# Pure parts: frames, probes, monitor lines, the analysis


def test_gratuitous_arp_frame_asks_for_its_own_address():
    frame = lab_move.gratuitous_arp("02:4c:68:01:00:0a", "10.1.0.10")
    assert len(frame) == 60  # padded to the Ethernet minimum
    mac, ip = bytes.fromhex("024c6801000a"), ipaddress.IPv4Address("10.1.0.10").packed
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac and frame[12:14] == b"\x08\x06"
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)  # Ethernet/IPv4 request
    assert frame[22:28] == mac and frame[28:32] == ip  # sender
    assert frame[32:38] == b"\x00" * 6 and frame[38:42] == ip  # target: itself


def test_echo_request_checksum_verifies():
    packet = probe.echo_request(0x1234, 70000, b"abc")  # odd payload, sequence wraps
    assert packet[0] == 8 and struct.unpack("!HH", packet[4:8]) == (0x1234, 70000 & 0xFFFF)
    assert internet_checksum(packet) == 0  # the checksum the probe filled in verifies


def test_monitor_lines_become_flow_events():
    line = (" event=DELETED reason=delete table=1 cookie=0x200002a56a730bb "
            "ip,metadata=0x2a/0xffffff,nw_dst=10.1.0.10 actions=output:3")
    e = probe.parse_monitor_line("dc2", 12.5, line)
    assert (e.site, e.at, e.event, e.table, e.cookie) == ("dc2", 12.5, "DELETED", 1, 0x200002A56A730BB)
    assert e.flow.startswith("ip,metadata=") and e.per_eid
    infra = probe.parse_monitor_line("dc2", 1.0, " event=ADDED table=0 cookie=0x100000000000000 priority=0")
    assert infra.cookie == cookie(Owner.INFRA) and not infra.per_eid
    assert not probe.parse_monitor_line("dc2", 1.0, f" event=ADDED table=3 cookie={TEST_COOKIE:#x} arp").per_eid
    assert probe.parse_monitor_line("dc2", 1.0, "ONFST_FLOW_MONITOR reply (OF1.3) (xid=0x0):") is None


def _planned(name: str):
    """The state a lab of the shipped topology would have (pure: nothing is built)."""
    t = topology_load.load(TOPOLOGIES / name)
    return build.plan(t, pfx="mv-", directory=Path("/nonexistent"), topology_path=str(TOPOLOGIES / name))


def test_scenario_cast_defaults_and_errors():
    st = _planned("three-dc.yaml")
    cast = mobility.choose(st)
    assert (cast.mover.name, cast.home, cast.away, cast.pinger.name) == ("h1", "dc1", "dc2", "h5")
    cast = mobility.choose(st, host="h3", to="dc3")
    assert (cast.home, cast.away, cast.pinger.name, cast.pinger.site) == ("dc2", "dc3", "h1", "dc1")
    with pytest.raises(LabError, match="host h1 is already at site dc1"):
        mobility.choose(st, to="dc1")
    with pytest.raises(LabError, match="the pinger h2 is at dc1: it must be at a third site, neither dc1 nor dc2"):
        mobility.choose(st, pinger="h2")
    with pytest.raises(LabError, match="needs three sites .* lab two-dc has 2"):
        mobility.choose(_planned("two-dc.yaml"))


def test_scenario_cast_over_ipv6_needs_dual_stack_hosts():
    cast = mobility.choose(_planned("three-dc-dualstack.yaml"), ipv6=True)
    assert (cast.mover.name, cast.pinger.name, cast.target) == ("h1", "h5", "fd00:1::10")
    assert mobility.choose(_planned("three-dc-dualstack.yaml")).target == "10.1.0.10"
    with pytest.raises(LabError, match="no dual-stack host outside dc1 and dc2 to ping from"):
        mobility.choose(_planned("three-dc.yaml"), ipv6=True)
    with pytest.raises(LabError, match="--ipv6: the mover h1 has no IPv6 address"):
        mobility.choose(_planned("three-dc.yaml"), pinger="h5", ipv6=True)


def test_an_icmpv6_echo_request_leaves_its_checksum_to_the_kernel():
    packet = probe.echo_request(0x1234, 70000, b"abc", socket.AF_INET6)
    assert packet[0] == 128 and packet[2:4] == b"\x00\x00"  # RFC 3542: the kernel fills it in
    assert struct.unpack("!HH", packet[4:8]) == (0x1234, 70000 & 0xFFFF) and packet[8:] == b"abc"
    assert probe.family_of("fd00:1::10") == socket.AF_INET6 and probe.family_of("10.1.0.10") == socket.AF_INET


def _move(started: float, src: str, dst: str) -> lab_move.Move:
    return lab_move.Move(host="h1", from_site=src, to_site=dst, from_ofport=1, to_ofport=3, started=started,
                        attached=started + 0.03, announced=started + 0.031, unplugged=started + 0.04, state=None)


def test_analysis_measures_outage_loss_and_reactions():
    """Probes every 10 ms from t=0 to 6 s; moves at 1, 3 and 5 s.  After the
    first, replies stop for 60 ms; after the second they never come back;
    the third brings them back after 40 ms."""
    interval = 0.01
    probes = []
    for i in range(600):
        sent = i * interval
        lost = 1.0 <= sent < 1.06 or 3.0 <= sent < 5.04
        probes.append(probe.Probe(i, sent, None if lost else sent + 0.0005))
    owner = cookie(Owner.LOCAL_HOST, 42, "10.1.0.10")

    def ev(site: str, at: float, c: int = owner) -> probe.FlowEvent:
        return probe.FlowEvent(site, at, "ADDED", 1, c, "")

    events = (ev("dc2", 1.045), ev("dc2", 1.050), ev("dc1", 1.070), ev("dc3", 1.052),
              ev("dc3", 1.01, cookie(Owner.INFRA)),  # the skeleton does not count
              ev("dc1", 3.040))
    moves = [_move(1.0, "dc1", "dc2"), _move(3.0, "dc2", "dc1"), _move(5.0, "dc1", "dc2")]
    outcomes, lost_before = mobility.analyse(moves, tuple(probes), events, interval=interval, pinger_site="dc3")
    first, second, third = outcomes
    assert lost_before == 0
    assert first.lost == 6 and first.lost_ms == pytest.approx(60.0)
    assert first.lost_at_ms == pytest.approx((0.0, 10.0, 20.0, 30.0, 40.0, 50.0))
    assert first.unplugged_ms == pytest.approx(40.0)
    assert first.gap_ms == pytest.approx(70.0)  # last reply 0.9905 -> next 1.0605
    assert first.outage_ms == first.gap_ms
    assert first.after_attach_ms == pytest.approx(30.5)  # attached at 1.03, reply at 1.0605
    assert not second.recovered and second.gap_ms is None and second.after_attach_ms is None
    assert second.outage_ms == second.window_ms == pytest.approx(1980.0)  # to its last probe, at 4.98 s
    # The third move's outage starts at its own start, not at the second's last reply.
    assert third.recovered and third.lost == 5  # its window starts one interval early: 4.99 .. 5.03
    assert third.gap_ms == pytest.approx(40.5)  # from 5.0, not from the last reply at 2.99
    assert first.reaction("new_site").first_change_ms == pytest.approx(45.0)
    assert first.reaction("new_site").last_change_ms == pytest.approx(50.0)
    assert first.reaction("new_site").changes == 2
    assert first.reaction("old_site").first_change_ms == pytest.approx(70.0)
    assert first.reaction("itr").first_change_ms == pytest.approx(52.0) and first.reaction("itr").changes == 1
    assert second.reaction("new_site").site == "dc1"
    assert second.reaction("new_site").first_change_ms == pytest.approx(40.0)
    assert second.reaction("old_site").first_change_ms is None
    report = mobility.MobilityReport(lab="t", host="h1", target="10.1.0.10", pinger="h5", pinger_site="dc3",
                                     interval=interval, pause=2.0, moves=outcomes, probes=tuple(probes),
                                     events=events, lost_before_moves=0)
    summary = report.summary()
    assert summary["recovered"] == 2 and summary["outage_ms"]["max"] == pytest.approx(1980.0)
    assert summary["outage_ms"]["median"] == pytest.approx(70.0)
    assert summary["first_flow_change_ms"]["old_site"]["moves_without_change"] == 2
    table = mobility.format_table(report)
    assert "dc1->dc2" in table
    assert ("move 1: 6 probes lost, sent at (ms after its start) 0.0, 10.0, 20.0, 30.0, 40.0, 50.0; the host "
            "attached at 30.0 ms, its old port was gone at 40.0 ms") in table
    assert "move 2: 199 probes lost, sent at (ms after its start) 0.0, 10.0" in table and "190.0 ...;" in table
    assert "move 3: 5 probes lost, sent at (ms after its start) -10.0, 0.0" in table


def test_a_probe_lost_on_its_way_to_the_next_switchover_is_that_moves_loss():
    """At 1 ms a probe sent 1.5 ms before a switchover is still on its way there: it counts for
    that move, and the move before it, whose pings came back, stays recovered."""
    interval = 0.001
    probes = tuple(probe.Probe(i, i * interval, None if i in (1498, 1502) else i * interval + 0.0008)
                   for i in range(3000))
    first, second = mobility.analyse([_move(0.5, "dc1", "dc2"), _move(1.5, "dc2", "dc1")], probes, (),
                                     interval=interval, pinger_site="dc3")[0]
    assert first.recovered and first.lost == 0
    assert second.lost == 2 and second.lost_at_ms == pytest.approx((-2.0, 2.0))


def test_plot_draws_a_png(tmp_path):
    probes = tuple(probe.Probe(i, i * 0.01, None if 50 <= i < 55 else i * 0.01 + 0.0004) for i in range(200))
    outcomes, _ = mobility.analyse([_move(0.5, "dc1", "dc2")], probes, (), interval=0.01, pinger_site="dc3")
    report = mobility.MobilityReport(lab="t", host="h1", target="10.1.0.10", pinger="h5", pinger_site="dc3",
                                     interval=0.01, pause=1.0, moves=outcomes, probes=probes, events=(),
                                     lost_before_moves=0)
    path = mobility.plot(report, tmp_path / "timeline.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------
# The move itself, on a lab without a controller

pytestlab = pytest.mark.lab


@pytestlab
def test_move_reattaches_the_host_at_the_new_site(lab):
    st, _ = lab
    h1, dc1, dc2 = st.host("h1"), st.site("dc1"), st.site("dc2")
    # The host has resolved its gateway before it moves; a flow at dc2 counts
    # its gratuitous ARP (broadcast, sender = target = its own address).
    sh(st, "h1", "ip", "neigh", "replace", h1.gateway, "lladdr", h1.gateway_mac, "dev", "eth0", "nud", "stale")
    old_eth0 = eth0_index(st, "h1")
    running.ofctl("dc2", "add-flow", f"cookie={TEST_COOKIE:#x},table=0,priority=65000,in_port=3,arp,arp_op=1,"
                  f"dl_dst=ff:ff:ff:ff:ff:ff,dl_src={h1.mac},arp_spa={h1.ip},arp_tpa={h1.ip},actions=drop", state=st)
    try:
        mv = lab_move.move_host("h1", "dc2")
        assert flow_packets(st, "dc2", TEST_COOKIE) >= 1
    finally:
        running.ofctl("dc2", "del-flows", f"cookie={TEST_COOKIE:#x}/-1", state=st)

    # dc2's ports were 1 and 2: h1 gets 3, the lowest free one.
    assert (mv.host, mv.from_site, mv.to_site, mv.from_ofport, mv.to_ofport) == ("h1", "dc1", "dc2", 1, 3)
    assert mv.started < mv.attached <= mv.announced and mv.swap_ms > 0
    # The state file agrees with what the move returned.
    now = read_state()
    assert now == mv.state
    assert now.host("h1").site == "dc2" and now.host("h1").ofport == 3
    assert now.site("dc1").host_ports == {"h2": 2}
    assert now.site("dc2").host_ports == {"h3": 1, "h4": 2, "h1": 3}
    assert [h for h in now.hosts if h.name != "h1"] == [h for h in st.hosts if h.name != "h1"]
    # The switches: h1 is port 3 of dc2's br-int and gone from dc1's.
    assert " 3(h1):" in running.ofctl("dc2", "show", state=now)
    assert "(h1)" not in running.ofctl("dc1", "show", state=now)
    assert running.vsctl("dc2", "get", "interface", "h1", "error", state=now).strip() == "[]"
    assert "h1" not in running.vsctl("dc1", "list-ports", "br-int", state=now).split()
    # The new port is a tap (dc2's OVS holds it: its gratuitous ARP came in at port 3 above),
    # living in the host; nothing of it or of the old one is left in a site's namespace.
    assert running.vsctl("dc2", "get", "interface", "h1", "type", state=now).strip() == "tap"
    assert not link_exists(dc1.namespace, "h1") and not link_exists(dc2.namespace, "h1")
    # The host: a new eth0 (nothing else left of the switchover) with the
    # old one's MAC, MTU, address, route and ARP cache.
    assert eth0_index(now, "h1") != old_eth0
    assert host_links(now, "h1") == ["eth0", "lo"]
    link = sh(now, "h1", "ip", "-d", "link", "show", "eth0")
    assert h1.mac in link and "mtu 1450" in link and "type tap" in link and "LOWER_UP" in link
    assert h1.address in sh(now, "h1", "ip", "-4", "addr", "show", "eth0")
    assert f"default via {h1.gateway} dev eth0" in sh(now, "h1", "ip", "route")
    assert "tx-checksumming: off" in sh(now, "h1", "ethtool", "-k", "eth0")
    assert h1.gateway_mac in sh(now, "h1", "ip", "neigh", "show", h1.gateway)


@pytestlab
def test_moved_host_exchanges_frames_through_its_new_port(lab):
    """Both directions through dc2 port 3: an ARP responder flow there answers
    h1's request for its gateway, and h1's kernel takes the answer."""
    st = read_state()
    h1 = st.host("h1")
    assert h1.site == "dc2"
    assert resolves_its_gateway(st, "dc2", h1)


@pytestlab
def test_move_back_and_forth(lab):
    st = read_state()
    assert st.host("h1").site == "dc2"
    back = lab_move.move("h1", "dc1")
    assert back.host("h1").site == "dc1" and back.host("h1").ofport == 1  # its old port is free again
    assert back.site("dc2").host_ports == {"h3": 1, "h4": 2}
    assert back.site("dc1").host_ports == {"h2": 2, "h1": 1}
    for site in ("dc2", "dc3", "dc1", "dc2", "dc1"):
        assert lab_move.move("h1", site).host("h1").site == site
    final = read_state()
    assert final.host("h1") == replace(st.host("h1"), site="dc1", ofport=1)
    for s in final.sites:
        ports = running.vsctl(s.name, "list-ports", "br-int", state=final).split()
        assert sorted(ports) == sorted([*s.host_ports, s.tunnel_port])
        assert not link_exists(s.namespace, "h1")  # its tap lives in the host
        errors = running.vsctl(s.name, "--columns=name,error", "--format=csv", "--no-headings", "--data=bare",
                               "list", "interface", state=final)
        assert all(line.split(",", 1)[1] == "" for line in errors.splitlines()), errors
    assert host_links(final, "h1") == ["eth0", "lo"]
    assert resolves_its_gateway(final, "dc1", final.host("h1"))


@pytestlab
def test_move_errors_are_clear_and_change_nothing(lab, tmp_path, monkeypatch):
    before = read_state()
    with pytest.raises(LabError, match=r"no host 'h9' in the lab \(hosts: h1, h2"):
        lab_move.move("h9", "dc2")
    with pytest.raises(LabError, match=r"no site 'dc9' in the lab \(sites: dc1, dc2, dc3\)"):
        lab_move.move("h1", "dc9")
    with pytest.raises(LabError, match="host h1 is already at site dc1"):
        lab_move.move("h1", "dc1")
    assert read_state() == before
    monkeypatch.setenv("LISP_RYU_LAB_DIR", str(tmp_path / "nolab"))
    with pytest.raises(LabError, match=r"no lab is up .*run `lisp-ryu lab up TOPOLOGY`"):
        lab_move.move("h1", "dc2")


@pytestlab
def test_failed_plug_leaves_the_host_where_it_is(lab, monkeypatch):
    """The new site's switch refuses the port before the switchover: the host
    never loses its link, and nothing of the new vif or port is left."""
    before = read_state()
    dc2 = before.site("dc2")
    old_eth0 = eth0_index(before, "h1")
    real_run = processes.run

    def refusing(argv, **kwargs):
        if "add-port" in argv and f"--db={dc2.db}" in argv:
            raise processes.CommandError(argv, 1, "simulated: ovs-vsctl: cannot add port")
        return real_run(argv, **kwargs)

    monkeypatch.setattr(running, "run", refusing)
    with pytest.raises(LabError, match=r"moving h1 from dc1 to dc2 failed before the switchover, it stays at dc1 "
                                       r"port 1:(.|\n)*simulated: ovs-vsctl: cannot add port"):
        lab_move.move("h1", "dc2")
    monkeypatch.setattr(running, "run", real_run)
    assert read_state() == before
    assert " 1(h1):" in running.ofctl("dc1", "show", state=before)
    assert not link_exists(dc2.namespace, "h1")
    assert "h1" not in running.vsctl("dc2", "list-ports", "br-int", state=before).split()
    assert eth0_index(before, "h1") == old_eth0 and host_links(before, "h1") == ["eth0", "lo"]
    assert resolves_its_gateway(before, "dc1", before.host("h1"))


@pytestlab
@pytest.mark.parametrize("failing", ["renaming the new interface", "the gratuitous ARP"])
def test_failed_switchover_puts_the_host_back(lab, monkeypatch, failing):
    """The switchover fails half-way (eth0 is down and renamed away) or at its
    end (the new eth0 has everything, the announcement fails): the host gets
    its own eth0 back, up, with its address, route and ARP cache, and
    exchanges frames through its old port; nothing of the new vif or port
    is left."""
    before = read_state()
    h1, dc2 = before.host("h1"), before.site("dc2")
    assert h1.site == "dc1"
    sh(before, "h1", "ip", "neigh", "replace", h1.gateway, "lladdr", h1.gateway_mac, "dev", "eth0", "nud", "stale")
    old_eth0 = eth0_index(before, "h1")
    if failing == "renaming the new interface":
        real_rename = rtnetlink.RouteSocket.rename

        def rename(self, index, name, what):
            if index != old_eth0:  # renaming the old one away and back works
                raise rtnetlink.NetlinkError(f"netns {self.namespace}: {what}: simulated", errno.EBUSY)
            real_rename(self, index, name, what)

        monkeypatch.setattr(rtnetlink.RouteSocket, "rename", rename)
    else:
        def announce(h, sock=None):
            raise LabError(f"host {h.name}: simulated: its gratuitous ARP could not be sent")

        monkeypatch.setattr(lab_move, "announce", announce)
    with pytest.raises(LabError, match=r"moving h1 from dc1 to dc2 failed, it is back at dc1 port 1:(.|\n)*simulated"):
        lab_move.move("h1", "dc2")
    monkeypatch.undo()

    assert read_state() == before
    assert eth0_index(before, "h1") == old_eth0 and host_links(before, "h1") == ["eth0", "lo"]
    link = sh(before, "h1", "ip", "-d", "link", "show", "eth0")
    assert h1.mac in link and ",UP," in link and "LOWER_UP" in link
    assert h1.address in sh(before, "h1", "ip", "-4", "addr", "show", "eth0")
    assert f"default via {h1.gateway} dev eth0" in sh(before, "h1", "ip", "route")
    assert h1.gateway_mac in sh(before, "h1", "ip", "neigh", "show", h1.gateway)
    assert not link_exists(dc2.namespace, "h1")
    assert "h1" not in running.vsctl("dc2", "list-ports", "br-int", state=before).split()
    assert " 1(h1):" in running.ofctl("dc1", "show", state=before)
    assert resolves_its_gateway(before, "dc1", h1)


@pytestlab
def test_route_socket_reads_what_an_interface_carries(lab):
    """What a switchover copies: the address and the route set by hand, not
    what the kernel makes by itself (the subnet's route, the IPv6 link-local
    address); usable neighbour entries only.  Failures name the step."""
    st = read_state()
    h2 = st.host("h2")
    sh(st, "h2", "ip", "neigh", "replace", h2.gateway, "lladdr", h2.gateway_mac, "dev", "eth0", "nud", "stale")
    sh(st, "h2", "ip", "neigh", "replace", "10.1.0.99", "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", "noarp")
    net = rtnetlink.RouteSocket(h2.namespace)
    try:
        eth0 = net.link("eth0")
        assert (eth0.name, eth0.mac, eth0.mtu, eth0.up) == ("eth0", h2.mac, 1450, True)
        setup = net.setup_of(eth0.index)
        assert [rtnetlink.describe(m) for m in setup.addresses] == [h2.address]
        assert [rtnetlink.describe(m) for m in setup.routes] == [f"default via {h2.gateway}"]
        assert [rtnetlink.describe(m) for m in setup.neighbours] == [f"{h2.gateway} lladdr {h2.gateway_mac}"]
        with pytest.raises(LabError, match=f"netns {h2.namespace}: looking up link nolink: No such device"):
            net.link("nolink")
        assert net.find_link("nolink") is None
    finally:
        net.close()
        sh(st, "h2", "ip", "neigh", "del", "10.1.0.99", "dev", "eth0")
    with pytest.raises(LabError, match="cannot open an rtnetlink socket in network namespace mv-nope"):
        rtnetlink.RouteSocket("mv-nope")


@pytestlab
def test_cli_move(lab, capfd):
    parser = argparse.ArgumentParser(prog="lisp-ryu")
    lab_cli.add_parser(parser.add_subparsers(dest="command"), lab_cli.run)

    def cli(*argv: str) -> int:
        args, extra = parser.parse_known_args(list(argv))
        return args.func(args, extra)

    assert cli("lab", "move", "h1", "--to", "dc3") == 0
    assert "h1 moved from dc1 (port 1) to dc3 (port 3)" in capfd.readouterr().out
    assert cli("lab", "move", "h1", "--to", "dc3") == 1
    assert "error: host h1 is already at site dc3" in capfd.readouterr().err
    assert cli("lab", "move", "h1", "--to", "dc1") == 0
    assert read_state().host("h1").site == "dc1"


@pytestlab
def test_prober_and_flow_watch(lab):
    """The scenario's recorders on their own: a prober pinging its own host's
    address, and a flow monitor seeing a flow come and go."""
    st = read_state()
    h5 = st.host("h5")
    with probe.Prober(h5.namespace, h5.ip, interval=0.01) as prober:
        assert prober.wait_reply(5)
        time.sleep(0.2)
        probes = prober.stop()
    answered = [p for p in probes if p.received is not None]
    assert len(probes) >= 10 and len(answered) >= len(probes) - 1  # the last may still be on its way
    assert all(p.rtt_ms >= 0 for p in answered)
    assert [p.seq for p in probes] == list(range(len(probes)))

    watch = probe.FlowWatch(st.site("dc2"))
    watch.start()
    owner = cookie(Owner.LOCAL_HOST, 42, "10.9.9.9")
    try:
        running.ofctl("dc2", "add-flow", f"cookie={owner:#x},table=1,priority=5,ip,nw_dst=10.9.9.9,actions=drop",
                      state=st)
        running.ofctl("dc2", "del-flows", f"cookie={owner:#x}/-1", state=st)
        deadline = time.monotonic() + 5
        while len(watch.events) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        events = watch.stop()
    assert [(e.event, e.cookie, e.per_eid) for e in events] == [("ADDED", owner, True), ("DELETED", owner, True)]
    assert events[0].at <= events[1].at


@pytestlab
def test_down_after_moves_leaves_nothing(lab):
    st, env = lab
    lab_move.move("h1", "dc2")  # leave it away from home
    pids = [pid for s in read_state().sites for pid in s.pids.values()]
    teardown.down()
    assert env.leftovers(pids) == []
    assert read_state() is None


# --------------------------------------------------------------------------
# End to end, with the controller


class EchoServer:
    """A TCP echo server whose socket lives in a host's namespace."""

    def __init__(self, namespace: str, address: str, port: int):
        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, port))
            s.listen(1)
            return s

        self.listener = run_in_netns(namespace, make)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def close(self) -> None:
        self.listener.close()


def connect(namespace: str, address: str, port: int) -> socket.socket:
    def make() -> socket.socket:
        s = socket.create_connection((address, port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    return run_in_netns(namespace, make)


def echo(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(len(payload) - len(got))
        if not chunk:
            raise ConnectionError("the echo server closed the connection")
        got += chunk
    return got


def local_host_cookies(state, site: str) -> set[int]:
    out = running.ofctl(site, "dump-flows", state=state)
    return {int(c, 16) for c in re.findall(r"cookie=(0x[0-9a-f]+)", out)}


@pytestlab
@pytest.mark.slow
def test_ten_moves_under_ping_and_tcp_with_the_controller(tmp_path, monkeypatch):
    """h1 moves dc1 <-> dc2 ten times while h5 (dc3) pings it every 10 ms and
    keeps a TCP connection to it busy.  After each move the pings come back,
    the connection survives, and no xTR keeps flows for a host that left."""
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    env = LabEnv(monkeypatch, tmp_path / "run", "mw-")
    st = build.up(_topology(tmp_path, "198.19.244.0/24", 6691))
    server = None
    try:
        lab_controller.start(st)
        lab_controller.wait_ready(st)
        h1, h5 = st.host("h1"), st.host("h5")
        server = EchoServer(h1.namespace, h1.ip, 7007)
        client = connect(h5.namespace, h1.ip, 7007)
        assert echo(client, b"before the moves") == b"before the moves"
        failures: list[str] = []
        stop = threading.Event()

        def chatter() -> None:  # the connection carries data throughout the moves
            n = 0
            while not stop.wait(0.1):
                n += 1
                msg = f"message {n:05d}".encode()
                try:
                    if echo(client, msg) != msg:
                        failures.append(f"message {n}: wrong echo")
                except OSError as exc:
                    failures.append(f"message {n}: {exc}")
                    return

        talker = threading.Thread(target=chatter, daemon=True)
        talker.start()
        report = mobility.run(moves=10, pause=1.5, host="h1", to="dc2", pinger="h5")
        stop.set()
        talker.join(timeout=30)
        print(mobility.format_table(report))

        assert len(report.moves) == 10
        # Every problem at once: the controller side is easier to fix from the whole picture.
        problems = [f"pings did not come back after move {m.index} ({m.from_site} -> {m.to_site})"
                    for m in report.moves if not m.recovered]
        problems += [f"TCP during the moves: {f}" for f in failures]
        try:
            if echo(client, b"after the moves") != b"after the moves":
                problems.append("TCP after the moves: wrong echo")
        except OSError as exc:
            problems.append(f"TCP after the moves: {exc!r}")
        client.close()

        now = read_state()
        assert now.host("h1").site == "dc1"  # ten moves: back home
        for site in now.sites:
            present = local_host_cookies(now, site.name)
            for h in now.hosts:
                has = cookie(Owner.LOCAL_HOST, h.iid, h.ip) in present
                if has != (h.site == site.name):
                    problems.append(f"{site.name} {'still has' if has else 'lacks'} local-host flows for {h.name} "
                                    f"(at {h.site})")
        for src in ("h2", "h3", "h6"):
            out = running.exec_in(src, ["ping", "-c", "2", "-i", "0.2", "-W", "2", h1.ip], state=now, check=False)
            if out.returncode != 0:
                problems.append(f"{src} -> h1 after the moves: {out.stdout.splitlines()[-2:]}")
        log = lab_controller.log_path().read_text(errors="replace")
        if "Traceback" in log or "OpenFlow error" in log:
            problems.append(f"controller log has errors: {log[-3000:]}")
        assert not problems, "\n".join(problems) + "\n" + mobility.format_table(report)
    except BaseException:
        now = read_state()
        for site in now.sites:  # what the xTRs hold, before the lab goes
            print(f"--- flows of {site.name}\n{running.ofctl(site.name, 'dump-flows', state=now)}")
        if lab_controller.log_path().exists():
            print(f"--- controller log\n{lab_controller.log_path().read_text(errors='replace')[-6000:]}")
        raise
    finally:
        if server is not None:
            server.close()
        lab_controller.stop()
        teardown.down()
    assert env.leftovers() == []
