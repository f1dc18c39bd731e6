"""`lisp-ryu demo`: bring up a lab, ping between two sites through LISP-GPE,
show the decoded LISP header of one tunnel packet, tear down.

The data plane is programmed by `program_data_plane`: it starts the
lisp-ryu controller with the embedded Map-Server on the lab's own
configuration, exactly as a user would (`lisp-ryu controller --config`), and
waits until every xTR has registered and every switch holds its flows.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from lisp_ryu.lab import capture
from lisp_ryu.lab import controller as lab_controller
from lisp_ryu.lab.build import up
from lisp_ryu.lab.running import exec_in
from lisp_ryu.lab.state import HostState, LabError, LabState
from lisp_ryu.lab.teardown import down
from lisp_ryu.lab.topology import TopologyError
from lisp_ryu.wire import LISP_DATA_PORT


def program_data_plane(state: LabState) -> str:
    """Start the controller and wait until it drives every site; returns a one-line description."""
    lab_controller.start(state)
    lab_controller.wait_ready(state)
    return (f"lisp-ryu controller with the embedded Map-Server at {state.map_server_address} "
            f"(config {lab_controller.config_path()}, log {lab_controller.log_path()})")


def pick_hosts(state: LabState) -> tuple[HostState, HostState]:
    """The first hosts of the first two sites that have hosts."""
    firsts: dict[str, HostState] = {}
    for h in state.hosts:
        firsts.setdefault(h.site, h)
    if len(firsts) < 2:
        raise LabError("the demo needs hosts at two sites at least")
    a, b = list(firsts.values())[:2]
    return a, b


def run(topology_path: str, keep: bool = False) -> int:
    try:
        state = up(topology_path)
    except (LabError, TopologyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ok = False
    try:
        ok = _show(state)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
    finally:
        if keep:
            a, b = pick_hosts(state)
            print("\n== the lab stays up:")
            cmd = sys.argv[0] if sys.argv[0].endswith("lisp-ryu") else "lisp-ryu"
            print(f"   {cmd} lab exec {a.name} -- ping {b.ip}")
            print(f"   {cmd} lab status")
            print(f"   the controller keeps running: log {lab_controller.log_path()}")
            print(f"   {cmd} lab down        (also stops the controller)")
        else:
            down()
            print("\n== lab down: namespaces, OVS daemons and interfaces removed")
    return 0 if ok else 1


def _show(state: LabState) -> bool:
    sites = ", ".join(f"{s.name} (RLOC {', '.join(r.address for r in s.rlocs)})" for s in state.sites)
    print(f"== lab {state.name} up: sites {sites}; hosts {', '.join(h.name for h in state.hosts)}")
    print(f"== data plane: {program_data_plane(state)}")
    a, b = pick_hosts(state)
    site = state.site(a.site)
    uplink = site.rlocs[0].uplink
    print(f"\n== {a.name} ({a.ip}, {a.site}) -> {b.name} ({b.ip}, {b.site}): ping, "
          f"capturing on {a.site}'s underlay link ({uplink})")
    with tempfile.TemporaryDirectory(prefix="lisp-ryu-demo-") as tmp:
        pcap = Path(tmp) / "tunnel.pcap"
        with capture.Capture(site.namespace, uplink, f"udp dst port {LISP_DATA_PORT}", pcap, count=1):
            ping = exec_in(a.name, ["ping", "-c", "3", "-i", "0.2", "-W", "2", b.ip], state=state, check=False)
        print(ping.stdout.rstrip())
        lines = capture.lisp_header_lines(capture.decode(pcap))
    if lines:
        print(f"\n== one tunnel packet from {a.site}, decoded by tshark:")
        for line in lines:
            print(f"   {line}")
    else:
        print(f"\n== no LISP data packet was seen on {uplink}", file=sys.stderr)
    ok6 = True
    if a.ip6 and b.ip6:  # dual-stack hosts: the same across sites in IPv6
        print(f"\n== {a.name} ({a.ip6}) -> {b.name} ({b.ip6}): ping6")
        ping6 = exec_in(a.name, ["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", b.ip6], state=state, check=False)
        print(ping6.stdout.rstrip())
        ok6 = ping6.returncode == 0
    return ping.returncode == 0 and bool(lines) and ok6
