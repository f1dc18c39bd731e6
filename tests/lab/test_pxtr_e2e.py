"""End to end: a proxy xTR joins the LISP sites and a non-LISP host (issue 9).

topologies/internet.yaml: dc1 (h1, h2) and dc2 (h3) are LISP sites, px is the
PxTR with a native port to the core router, and `inet` (203.0.113.10) is a
plain host behind the core.  The real controller drives all three switches;
its embedded Map-Server answers 203.0.113.10 with a negative Map-Reply
(native-forward), so the sites tunnel it to px (their PETR), which
decapsulates it and forwards it natively.  The core routes the EID space to
px's native address; px resolves it through the Map-Resolver (Map-Requests
with the p bit) and encapsulates it to the site.  Lab: prefix lx-,
management 198.19.238.0/24, controller port 6688.
"""

from __future__ import annotations

import re
import time

import pytest

from lisp_ryu.flows.pipeline import Owner, cookie_owner
from lisp_ryu.lab import capture, running
from lisp_ryu.lab import controller as lab_controller
from lisp_ryu.lab import move as lab_move
from lisp_ryu.lab import state as lab_state

from conftest import controller_lab, private_lab

pytestmark = [pytest.mark.lab]

INET = "203.0.113.10"
PX_RLOC = "198.18.9.2"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, module_monkeypatch):
    env, topo_file = private_lab(tmp_path_factory, module_monkeypatch, "pxtr", "lx-", "internet.yaml",
                                 "198.19.238.0/24", 6688)
    # The Map-Server signs its publications to px with the key bound to px's xTR-ID.
    with controller_lab(env, topo_file, log_must_not_say=("failed authentication",)) as state:
        yield state


@pytest.fixture(autouse=True)
def flows_on_failure(request, lab):
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        now = lab_state.read_state() or lab
        for site in now.sites:
            print(f"--- flows of {site.name}\n{running.ofctl(site.name, 'dump-flows', state=now)}")
        print(f"--- controller log\n{lab_controller.log_path().read_text(errors='replace')[-5000:]}")


def ping(state, node: str, target: str, count: int = 3):
    return running.exec_in(node, ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", target],
                           state=state, check=False)


def mapping_flows(state, site: str) -> list[str]:
    """The site's map-cache flows (ROUTE table, MAPPING cookies)."""
    out = running.ofctl(site, "dump-flows", "table=1", state=state)
    return [line for line in out.splitlines() if "cookie=" in line
            and cookie_owner(int(re.search(r"cookie=(0x[0-9a-f]+)", line).group(1), 16)) is Owner.MAPPING]


def wait_for_flow(state, site: str, pattern: str, timeout: float = 10.0) -> str:
    """The first MAPPING flow of `site` matching `pattern` (waits for the controller to install it)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [f for f in mapping_flows(state, site) if re.search(pattern, f)]
        if found or time.monotonic() > deadline:
            assert found, (pattern, mapping_flows(state, site))
            return found[0]
        time.sleep(0.1)


def test_lab_has_the_pxtr_native_port_and_the_core_routes_the_eid_space_to_it(lab):
    px = lab.pxtr
    assert px.name == "px" and px.native["ofport"] == 101
    ports = running.ofctl("px", "show", state=lab)
    assert re.search(r"101\(core-n\)", ports), ports
    routes = running.exec_in("core", ["ip", "-4", "route"], state=lab).stdout
    for eid in ("10.1.0.0/16", "10.2.0.0/16"):
        assert f"{eid} via 198.18.19.2 dev px-n" in routes, routes
    # LISP sites have no native way to the internet host: only their PETR.
    assert "203.0.113" not in running.exec_in("dc1", ["ip", "-4", "route"], state=lab).stdout


def test_lisp_host_reaches_the_internet_host_through_the_petr(lab, tmp_path):
    tunnel, native = tmp_path / "tunnel.pcap", tmp_path / "native.pcap"
    px = lab.pxtr
    # dc1 -> px on px's underlay link: LISP-GPE; px -> core on the native link: plain IPv4.
    # Data of instance 42, not BFD (IID 0xFFFFFF, also on UDP 4341: dc1 and px keep BFD ports to each other).
    with capture.Capture(px.namespace, px.rlocs[0].uplink,
                         f"udp dst port 4341 and src host 198.18.1.2 and {capture.GPE_DATA}",
                         tunnel, count=1, timeout=8), \
            capture.Capture(lab.namespace_of("core"), px.native["router_ifname"],
                            f"icmp and src host 10.1.0.10 and dst host {INET}", native, count=1, timeout=8):
        out = ping(lab, "h1", INET)
    assert out.returncode == 0, out.stdout
    header = "\n".join(capture.lisp_header_lines(capture.decode(tunnel)))
    assert f"Src: 198.18.1.2, Dst: {PX_RLOC}" in header, header
    assert "Instance ID: 42" in header and f"Src: 10.1.0.10, Dst: {INET}" in header, header
    assert "Locator/ID Separation Protocol" not in capture.decode(native)  # decapsulated
    assert f"Src: 10.1.0.10, Dst: {INET}" in capture.decode(native)
    # dc1's negative entry (native-forward) covers the internet host and tunnels to the PETR.
    negative = wait_for_flow(lab, "dc1", rf"set_field:{PX_RLOC}->tun_dst")
    assert "nw_dst=128.0.0.0/1" in negative or "nw_dst=203." in negative, negative


def test_internet_host_reaches_a_lisp_host_through_the_proxy_itr(lab, tmp_path):
    control, tunnel = tmp_path / "control.pcap", tmp_path / "tunnel.pcap"
    px = lab.pxtr
    # px has not talked to dc2 yet: its Map-Request (in an ECM) leaves by its underlay link.
    with capture.Capture(px.namespace, px.rlocs[0].uplink, "udp dst port 4342 and src host 198.18.9.2",
                         control, count=1, timeout=8), \
            capture.Capture(px.namespace, px.rlocs[0].uplink,
                            f"udp dst port 4341 and dst host 198.18.2.2 and {capture.GPE_DATA}",
                            tunnel, count=1, timeout=8):
        out = ping(lab, "inet", "10.2.0.10")
    assert out.returncode == 0, out.stdout
    fields = capture.decode(control, "-T", "fields", "-e", "lisp.mreq.flags.pitr", "-e", "lisp.mreq.flags.probe",
                            "-Y", "lisp.mreq.flags").split()
    assert fields[:2] in (["1", "0"], ["True", "False"]), fields  # p bit (proxy ITR), not a probe
    decoded = capture.decode(control)
    assert "Encapsulated Control Message" in decoded and "Malformed" not in decoded, decoded
    header = "\n".join(capture.lisp_header_lines(capture.decode(tunnel)))
    assert f"Src: {PX_RLOC}, Dst: 198.18.2.2" in header and f"Src: {INET}, Dst: 10.2.0.10" in header, header
    wait_for_flow(lab, "px", r"nw_dst=10\.2\.0\.0/16.*set_field:198\.18\.2\.2->tun_dst")


def test_both_directions_keep_working_when_the_lisp_host_moves(lab):
    # px knows where h1 is before the move (it answered the internet host in the PETR test).
    assert ping(lab, "inet", "10.1.0.10").returncode == 0
    wait_for_flow(lab, "px", r"nw_dst=10\.1\.0\.0/16.*set_field:198\.18\.1\.2->tun_dst")
    moved = lab_move.move("h1", "dc2")
    assert moved.host("h1").site == "dc2"
    out = ping(lab, "h1", INET)  # h1 speaks first from dc2: dc2 learns it, registers it
    assert out.returncode == 0, out.stdout
    # px learns the move from the Map-Server's publication (not only dc1's redirect).
    wait_for_flow(moved, "px", r"nw_dst=10\.1\.0\.10 .*set_field:198\.18\.2\.2->tun_dst")
    out = ping(moved, "inet", "10.1.0.10")
    assert out.returncode == 0, out.stdout
    negative = wait_for_flow(moved, "dc2", rf"set_field:{PX_RLOC}->tun_dst")
    assert "nw_dst=128.0.0.0/1" in negative or "nw_dst=203." in negative, negative

    back = lab_move.move("h1", "dc1")
    assert ping(back, "h1", INET).returncode == 0
    wait_for_flow(back, "px", r"nw_dst=10\.1\.0\.10 .*set_field:198\.18\.1\.2->tun_dst")
    out = ping(back, "inet", "10.1.0.10")
    assert out.returncode == 0, out.stdout


def test_hosts_cannot_move_to_the_pxtr(lab):
    with pytest.raises(lab_state.LabError, match="site px is a PxTR: hosts move between LISP sites"):
        lab_move.move("h2", "px")
