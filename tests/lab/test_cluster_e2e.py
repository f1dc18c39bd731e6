"""A clustered mapping system in the lab (issue 17): three standalone Map-Servers, one killed.

three-dc-cluster with the real controller: every xTR registers with ms1, ms2
and ms3 and resolves through ms1 first.  During a steady ping and a stream of
new Map-Requests (a fresh destination every 0.4 s, each outside every EID
prefix so the Map-Resolver answers it itself) ms1 is killed with SIGKILL:
the requests keep being answered (dc1 moves to ms2: the longest
request-to-answer time is the failover gap), a host moved meanwhile is
reached at its new site, and ms1 once revived is dc1's Map-Resolver again.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
import urllib.request

import pytest

from conftest import controller_lab, dump_lab_on_failure, private_lab
from lisp_ryu.lab import cluster
from lisp_ryu.lab import move as lab_move
from lisp_ryu.lab.state import read_state

pytestmark = pytest.mark.lab

REST_PORT = 18347
CONFIGURED = [ipaddress.ip_network(p) for p in ("10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16")]


def fresh_destinations() -> list[ipaddress.IPv4Address]:
    """One address in each maximal hole between the lab's EID prefixes: each is a new negative answer."""
    holes = [ipaddress.ip_network("0.0.0.0/0")]
    for p in CONFIGURED:
        holes = [h2 for h in holes for h2 in (h.address_exclude(p) if p.subnet_of(h) else [h])]
    out = []
    for hole in sorted(holes, key=lambda n: -n.prefixlen):
        a = hole.network_address + 1
        if not any(hole.overlaps(ipaddress.ip_network(n)) for n in ("0.0.0.0/8", "127.0.0.0/8", "198.18.0.0/15",
                                                                     "224.0.0.0/3")):
            out.append(a)
    return out


def rest(state, path):
    with urllib.request.urlopen(f"{state.controller_rest}/lisp/v1/{path}", timeout=2) as response:
        return json.loads(response.read())


def cached(state, xtr="dc1") -> list[ipaddress.IPv4Network]:
    return [ipaddress.ip_network(e["prefix"]) for e in rest(state, f"xtrs/{xtr}/map-cache")["entries"]]


def ping(state, host, dst, *args):
    return subprocess.Popen(["ip", "netns", "exec", state.namespace_of(host), "ping", "-n", *args, str(dst)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, module_monkeypatch):
    env, copy = private_lab(tmp_path_factory, module_monkeypatch, "cluster", "lc-", "three-dc-cluster.yaml",
                            "198.19.247.0/24", port=6697)
    with controller_lab(env, copy, extra_args=("--wsapi-port", str(REST_PORT))) as state:
        yield state


def test_kill_a_map_server_node_under_load(lab, request):
    state = read_state()  # with the controller's REST address
    try:
        _run(state)
    finally:
        dump_lab_on_failure(request, state)


def _run(state):
    # Every xTR registered with all three nodes before the failure.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        views = {n: x["mapping_system"] for n, x in rest(state, "health")["xtrs"].items()}
        if all(s["registered"] for v in views.values() for s in v["map_servers"]):
            break
        time.sleep(0.2)
    assert all(s["registered"] for v in views.values() for s in v["map_servers"]), views
    steady = ping(state, "h1", "10.2.0.10", "-i", "0.02", "-w", "14")
    dests = fresh_destinations()
    assert len(dests) >= 12
    issued: dict[ipaddress.IPv4Address, float] = {}
    answered: dict[ipaddress.IPv4Address, float] = {}
    start = time.monotonic()
    killed_at = moved_at = None
    for i, dst in enumerate(dests):
        issued[dst] = time.monotonic()
        subprocess.Popen(["ip", "netns", "exec", state.namespace_of("h2"), "ping", "-c", "1", "-W", "1", str(dst)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if i == 3:
            cluster.kill("ms1")
            killed_at = time.monotonic()
        if i == 5:  # a move during the failure: h5 from dc3 to dc2 (registers with ms2 and ms3 only)
            lab_move.move_host("h5", "dc2")
            moved_at = time.monotonic()
        next_at = start + 0.4 * (i + 1)
        while time.monotonic() < next_at:
            now = time.monotonic()
            nets = cached(state)
            for d in issued:
                if d not in answered and any(d in n for n in nets):
                    answered[d] = now
            time.sleep(0.05)
    deadline = time.monotonic() + 5
    while len(answered) < len(issued) and time.monotonic() < deadline:
        nets, now = cached(state), time.monotonic()
        answered.update({d: now for d in issued if d not in answered and any(d in n for n in nets)})
        time.sleep(0.05)
    assert set(answered) == set(issued), f"never answered: {set(issued) - set(answered)}"
    latency = {d: answered[d] - issued[d] for d in issued}
    gap = max(latency.values())
    worst = max(latency, key=latency.get)
    print(f"\nfailover gap: {gap * 1000:.0f} ms (request for {worst} issued "
          f"{(issued[worst] - killed_at) * 1000:+.0f} ms after the kill); "
          f"median {sorted(latency.values())[len(latency) // 2] * 1000:.0f} ms")
    assert gap < 2.5
    health = rest(state, "health")["xtrs"]["dc1"]["mapping_system"]
    assert [r["state"] for r in health["map_resolvers"]][:2] == ["down", "up"]
    assert health["map_resolvers"][1]["active"]
    assert "198.18.10.2" in health["unreachable"]

    # The move made during the failure completes: h1 reaches h5 at dc2.
    reached = None
    deadline = time.monotonic() + 10
    while reached is None and time.monotonic() < deadline:
        if subprocess.run(["ip", "netns", "exec", state.namespace_of("h1"), "ping", "-n", "-c", "1", "-W", "0.3",
                           "10.3.0.10"], capture_output=True).returncode == 0:
            reached = time.monotonic()
    assert reached is not None, "h5 not reached after its move during the failure"
    print(f"move during the failure: h5 reached at dc2 {reached - moved_at:.2f} s after the move")

    # The steady ping never depended on the mapping system.
    out, _ = steady.communicate(timeout=20)
    summary = next(line for line in out.splitlines() if "packets transmitted" in line)
    sent_n, got_n = (int(w) for w in summary.replace(",", "").split()[0:4:3])
    print(f"steady ping h1 -> h3: {summary}")
    assert sent_n - got_n <= 2

    # ms1 comes back: dc1 re-registers with it, and after the hold-down resolves through it again.
    cluster.revive("ms1")
    revived = time.monotonic()
    deadline = revived + 20
    while time.monotonic() < deadline:
        ms = rest(state, "health")["xtrs"]["dc1"]["mapping_system"]
        if ms["map_resolvers"][0]["active"] and ms["map_servers"][0]["registered"]:
            break
        time.sleep(0.2)
    assert ms["map_resolvers"][0]["active"] and ms["unreachable"] == [], ms
    print(f"ms1 revived: dc1 registered with it and resolves through it again after "
          f"{time.monotonic() - revived:.1f} s")
    log = (cluster.node_dir(state, "ms1") / "mapserver.log").read_text()
    assert log.count("lisp-ryu mapserver: udp") == 2
