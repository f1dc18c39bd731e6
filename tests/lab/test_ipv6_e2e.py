"""End to end, IPv6 EIDs: dual-stack hosts on real OVS driven by the controller.

topologies/two-dc-dualstack.yaml: two sites, each with an IPv4 and an IPv6
EID prefix (instance-ID 42) over an IPv4 underlay.  Checked here: the first
ping6 to another site is held and re-injected, not lost; neighbour
discovery is answered by the switch's flows (no packet-in); an unregistered
IPv6 EID gets a negative map-cache entry; a host that moves keeps answering
ping6 at its new site; and every LISP control packet of all that decodes in
Wireshark's dissector without "Malformed".
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import time

import pytest

from lisp_ryu.flows.pipeline import Owner, Table, cookie_owner
from lisp_ryu.lab import capture, running
from lisp_ryu.lab import move as lab_move
from lisp_ryu.lab.state import read_state

from conftest import controller_lab, dump_lab_on_failure, private_lab

pytestmark = [pytest.mark.lab]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, module_monkeypatch):
    env, topo_file = private_lab(tmp_path_factory, module_monkeypatch, "ipv6", "lx-", "two-dc-dualstack.yaml",
                                 "198.19.229.0/24", 6671)
    # "no Map-Reply": an SMR for an IPv6 EID over IPv4 RLOCs once left its request unsent.
    with controller_lab(env, topo_file, log_must_not_say=("no Map-Reply",)) as state:
        yield state


@pytest.fixture(scope="module")
def control_capture(lab, tmp_path_factory):
    """Every LISP control packet on both sites' uplinks, from the first test of the module to the last."""
    directory = tmp_path_factory.mktemp("ipv6-capture")
    caps = [capture.Capture(s.namespace, s.rlocs[0].uplink, "udp port 4342", directory / f"{s.name}.pcap",
                            count=100000, timeout=0.5) for s in lab.sites]
    for c in caps:
        c.__enter__()
    try:
        yield caps
    finally:
        for c in caps:
            c.__exit__(None, None, None)


@pytest.fixture(autouse=True)
def flows_on_failure(request, lab):
    yield
    dump_lab_on_failure(request, read_state() or lab)


def ping6(lab, host: str, target: str, *args: str) -> subprocess.CompletedProcess:
    return running.exec_in(host, ["ping", "-6", "-n", *args, target], state=read_state() or lab, check=False)


def flows(lab, site: str, table: int | None = None) -> list[str]:
    args = [f"table={table}"] if table is not None else []
    return [line for line in running.ofctl(site, "dump-flows", *args, state=read_state() or lab).splitlines()
            if "cookie=" in line]


def owner(line: str) -> Owner | None:
    return cookie_owner(int(re.search(r"cookie=(0x[0-9a-f]+)", line).group(1), 16))


def packets(line: str) -> int:
    return int(re.search(r"n_packets=(\d+)", line).group(1))


def test_first_ping6_across_sites_is_held_and_reinjected_not_lost(lab, control_capture):
    out = ping6(lab, "h1", "fd00:2::10", "-c", "3", "-i", "0.2", "-W", "2")
    assert out.returncode == 0, out.stdout
    assert "icmp_seq=1 " in out.stdout, out.stdout
    encap = [f for f in flows(lab, "dc1", Table.ROUTE) if owner(f) is Owner.MAPPING]
    assert any("ipv6_dst=fd00:2::/64" in f and "set_field:198.18.2.2->tun_dst" in f for f in encap), encap


def test_neighbour_discovery_is_answered_by_flows_not_the_controller(lab):
    """h1 learnt its gateway's MAC from an NA the switch built; the NS never reached the controller."""
    neigh = running.exec_in("h1", ["ip", "-6", "neigh", "show", "fd00:1::1"], state=lab).stdout
    assert "lladdr 02:4c:67:00:00:01" in neigh and "router" in neigh, neigh
    answered = [f for f in flows(lab, "dc1", Table.ARP) if "icmp_type=135" in f and packets(f) > 0]
    assert answered, flows(lab, "dc1", Table.ARP)
    replies = flows(lab, "dc1", Table.ND_REPLY)
    assert replies and all(packets(f) > 0 for f in replies), replies
    # What the miss and learning flows sent the controller: no neighbour solicitation among it.
    to_controller = [f for f in flows(lab, "dc1") if "CONTROLLER" in f and "icmp_type=135" in f]
    assert to_controller == []


def test_ping6_between_hosts_at_the_same_site(lab):
    out = ping6(lab, "h1", "fd00:1::11", "-c", "2", "-i", "0.2", "-W", "2")
    assert out.returncode == 0, out.stdout
    neigh = running.exec_in("h1", ["ip", "-6", "neigh", "show", "fd00:1::11"], state=lab).stdout
    assert "lladdr 02:4c:67:00:00:01" in neigh, neigh  # proxy-ND: through the gateway MAC, as proxy-ARP


def test_unregistered_ipv6_eid_gets_a_negative_entry(lab):
    out = ping6(lab, "h1", "fd00:9::1", "-c", "2", "-i", "0.2", "-W", "1")
    assert out.returncode != 0
    negative = [f for f in flows(lab, "dc1", Table.ROUTE) if owner(f) is Owner.MAPPING and "actions=drop" in f]
    target = ipaddress.ip_address("fd00:9::1")
    registered = [ipaddress.ip_network("fd00:1::/64"), ipaddress.ip_network("fd00:2::/64")]
    prefixes = [ipaddress.ip_network(m.group(1)) for f in negative if (m := re.search(r"ipv6_dst=([0-9a-f:/]+)", f))]
    covering = [p for p in prefixes if target in p]
    assert covering, negative
    # The widest prefix around it that covers no registered one (RFC 9301 §8.1): fd00:8::/29.
    assert not any(covering[0].overlaps(r) for r in registered)
    assert any(covering[0].supernet().overlaps(r) for r in registered), covering
    assert covering[0] == ipaddress.ip_network("fd00:8::/29"), covering


def test_ping6_through_a_move(lab, control_capture, tmp_path):
    """h1 moves dc1 -> dc2 (announcing itself with a gratuitous ARP and an unsolicited NA): it answers
    ping6 at its new site, from both sites, and the old site stops delivering to it."""
    state = read_state()
    dc1 = state.site("dc1")
    # LISP-GPE carrying IPv6 only: BFD (IID 0, inner IPv4) shares UDP 4341 with the data.
    data = capture.Capture(dc1.namespace, dc1.rlocs[0].uplink, f"udp port 4341 and {capture.GPE_INNER_IPV6}",
                           tmp_path / "data.pcap", count=1, timeout=5.0)
    with data:
        out = ping6(lab, "h2", "fd00:2::11", "-c", "2", "-i", "0.2", "-W", "2")
    assert out.returncode == 0 and "icmp_seq=1 " in out.stdout, out.stdout
    # The data plane: LISP-GPE with an IPv6 inner packet over the IPv4 underlay.
    lisp = capture.lisp_header_lines(capture.decode(data.pcap))
    assert any(line.startswith("Internet Protocol Version 6") for line in lisp), lisp

    for target in ("fd00:1::10", "10.1.0.10"):  # dc2 caches h1 at dc1, both families
        assert running.exec_in("h3", ["ping", "-n", "-c", "1", "-W", "2", target], state=state,
                               check=False).returncode == 0
    mv = lab_move.move_host("h1", "dc2")
    assert mv.state.host("h1").site == "dc2"
    problems = []
    for src in ("h3", "h2", "h4"):  # the new site, the old site, the new site again
        out = ping6(lab, src, "fd00:1::10", "-c", "3", "-i", "0.3", "-W", "2")
        if out.returncode != 0 or " 0% packet loss" not in out.stdout:
            problems.append(f"{src} -> h1 (fd00:1::10) after the move: {out.stdout.splitlines()[-2:]}")
    out = ping6(lab, "h1", "fd00:1::11", "-c", "2", "-i", "0.2", "-W", "2")  # and h1 reaches its old site
    if out.returncode != 0:
        problems.append(f"h1 -> h2 after the move: {out.stdout.splitlines()[-2:]}")
    assert not problems, "\n".join(problems)
    # The new site delivers to h1 locally, IPv6 included; the old site no longer does.
    assert any("ipv6_dst=fd00:1::10" in f and owner(f) is Owner.LOCAL_HOST for f in flows(lab, "dc2", Table.ROUTE))
    assert not any("ipv6_dst=fd00:1::10" in f and owner(f) is Owner.LOCAL_HOST for f in flows(lab, "dc1", Table.ROUTE))


def test_a_controller_restart_keeps_the_neighbour_responder_as_it_is(lab):
    """After a restart the controller reads the ND flows back (OVS reports their moves under NXM names and
    the ERICOXM set-fields as such) and finds them right: none is replaced, so none restarts its clock."""
    from lisp_ryu.lab import controller as lab_controller

    state = read_state()
    log = lab_controller.log_path()
    before = log.read_text().count(": reconciling")
    started = time.monotonic()
    lab_controller.stop()
    lab_controller.start(state)
    lab_controller.wait_ready(state)
    deadline = time.monotonic() + 15
    while log.read_text().count(": reconciling") < before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # both switches reconnected and were read back
    time.sleep(0.5)
    elapsed = time.monotonic() - started
    nd = [f for site in ("dc1", "dc2") for table in (Table.ARP, Table.ND_REPLY) for f in flows(lab, site, table)
          if "icmp6" in f]
    assert len(nd) == 2 * 6, nd
    young = [f for f in nd if float(re.search(r"duration=([0-9.]+)s", f).group(1)) < elapsed]
    assert young == [], young
    assert ping6(lab, "h2", "fd00:2::10", "-c", "2", "-i", "0.2", "-W", "2").returncode == 0


def test_every_control_packet_of_it_decodes_in_wireshark(lab, control_capture):
    """The capture of the whole module (ping6 across sites, a negative answer, the move) decodes cleanly."""
    seen = ""
    frames = 0
    for c in control_capture:
        c.__exit__(None, None, None)
        decoded = capture.decode(c.pcap)
        assert decoded, f"nothing captured in {c.pcap}"
        assert "Malformed" not in decoded and "Expert Info (Error" not in decoded, decoded[-3000:]
        seen += decoded
        frames += len(capture.decode(c.pcap, "-T", "fields", "-e", "frame.number").split())
    print(f"{frames} control packets captured on the sites' uplinks, all decoded:")
    print(capture.decode(control_capture[0].pcap, "-T", "fields", "-e", "frame.number", "-e", "ip.src",
                         "-e", "ip.dst", "-e", "_ws.col.Info"))
    for message in ("Map-Register", "Map-Notify", "Encapsulated Control Message", "Map-Request", "Map-Reply"):
        assert message in seen, message
    # IPv6 EIDs in the control messages, the moved host's /128 among them.
    for eid in ("fd00:2::10", "fd00:9::1", "fd00:1::10"):
        assert f"Address: {eid}" in seen or f"Prefix: {eid}" in seen or eid in seen, eid
