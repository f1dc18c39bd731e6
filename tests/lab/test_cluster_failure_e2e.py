"""Issue 17's Done-when in the lab: a Map-Server node and another node's etcd member killed under load.

three-dc-cluster with the real controller and every node's Map-Server on the lab's etcd
cluster.  From the core router's namespace an ETR registers a fresh EID 20 times a second,
each with one node in turn (what one node acknowledges, the others know only through etcd),
and an ITR asks 20 times a second for EIDs acknowledged before, one Map-Resolver at a time,
moving to the next on silence as the xTR does.  Then ms1's Map-Server and ms2's etcd member
get SIGKILL, and h5 moves from dc3 to dc2 meanwhile.  Checked: every acknowledged
registration is answered by ms2 and ms3 with its RLOC; every request was answered (the
longest wait is the failover gap, printed); acknowledgements go on during the failure; h1
reaches h5 at its new site; after both come back, ms1 answers everything acknowledged while it
was dead, ms2's member holds the same revision as the others, a registration at ms1 is
answered by ms2, and `lab status` calls every node healthy.
"""

from __future__ import annotations

import ipaddress
import json
import random
import subprocess
import time
import urllib.request

import pytest

from conftest import controller_lab, dump_lab_on_failure, private_lab
from lisp_ryu.lab import cluster, cluster_load, controller_config
from lisp_ryu.lab import move as lab_move
from lisp_ryu.lab.state import read_state
from lisp_ryu.xtr.resolution import FAILOVER_MIN

pytestmark = pytest.mark.lab

REST_PORT = 18349
IID = 42
FIRST_EID = ipaddress.ip_address("10.3.128.1")  # inside dc3's prefix, away from the lab's hosts


def rest(state, path):
    with urllib.request.urlopen(f"{state.controller_rest}/lisp/v1/{path}", timeout=2) as response:
        return json.loads(response.read())


def etcd_revision(state, name) -> int | None:
    """The revision node `name`'s own etcd member holds (a local, serializable read)."""
    out = subprocess.run(["ip", "netns", "exec", state.namespace_of(name), "etcdctl",
                          "--endpoints=http://127.0.0.1:2379", "endpoint", "status", "-w", "json"],
                         capture_output=True, text=True, timeout=5, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)[0]["Status"]["header"]["revision"]


def reach(state, src, dst, within: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() < start + within:
        if subprocess.run(["ip", "netns", "exec", state.namespace_of(src), "ping", "-n", "-c", "1", "-W", "0.3", dst],
                          capture_output=True).returncode == 0:
            return time.monotonic() - start
    return None


@pytest.fixture(scope="module")
def lab(tmp_path_factory, module_monkeypatch):
    if not cluster.etcd_available():
        pytest.skip("no etcd binary (Debian etcd-server): the lab's nodes would not share a store")
    env, copy = private_lab(tmp_path_factory, module_monkeypatch, "clusterfail", "lk-", "three-dc-cluster.yaml",
                            "198.19.236.0/24", port=6676)
    with controller_lab(env, copy, extra_args=("--wsapi-port", str(REST_PORT))) as state:
        yield state


def test_kill_a_map_server_and_another_nodes_etcd_member_under_load(lab, request):
    state = read_state()  # with the controller's REST address
    try:
        _run(state)
    except BaseException:
        for node in state.map_server_nodes:
            for what in ("mapserver", "etcd"):
                path = cluster.node_dir(state, node["name"]) / f"{what}.log"
                text = path.read_text(errors="replace") if path.exists() else "(none)"
                print(f"--- {node['name']} {what}.log\n" + "\n".join(text.splitlines()[-25:]))
        raise
    finally:
        dump_lab_on_failure(request, state)


def _run(state):
    nodes = {n["name"]: n["address"] for n in state.map_server_nodes}
    assert [cluster.store_url(state, n) for n in nodes] == [f"etcd://{','.join(cluster.etcd_endpoints(state, n))}"
                                                          for n in nodes]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        views = {n: x["mapping_system"] for n, x in rest(state, "health")["xtrs"].items()}
        if all(s["registered"] for v in views.values() for s in v["map_servers"]):
            break
        time.sleep(0.2)
    assert all(s["registered"] for v in views.values() for s in v["map_servers"]), views

    core = next(n for n in state.nodes if n.kind == "router")
    namespace, bind = core.namespace, core.addresses[0].split("/")[0]
    dc3 = next(s for s in state.sites if s.name == "dc3")
    rloc = ipaddress.ip_address(dc3.rlocs[0].address)
    registrations = cluster_load.RegistrationLoad(
        namespace, bind, str(rloc), controller_config.site_key(dc3), nodes.values(),
        ((IID, FIRST_EID + i) for i in range(100_000)), rate=20).start()
    rng = random.Random(17)

    def pick():
        acked = list(registrations.acked(older_than=0.2))
        return (rng.choice(acked), rloc) if acked else None

    # The xTR's wait before the next Map-Resolver when answers take milliseconds, as they do here.
    requests = cluster_load.RequestLoad(namespace, bind, nodes.values(), pick, rate=20,
                                        timeout=FAILOVER_MIN).start()
    try:
        time.sleep(3)
        cluster.kill("ms1")
        killed = time.monotonic()
        cluster.kill("ms2", etcd=True)
        time.sleep(1.0)
        lab_move.move_host("h5", "dc2")  # registers with ms2 (its etcd member dead) and ms3
        moved_after = reach(state, "h1", "10.3.0.10", within=15)
        time.sleep(max(0.0, killed + 8 - time.monotonic()))
    finally:
        requests.stop()
        registrations.stop()

    acked = registrations.acked()
    during = {e: a for e, a in acked.items() if a.sent > killed}
    late = max(a.acknowledged - a.sent for a in acked.values())
    print(f"\nregistrations: {len(registrations.sent)} sent, {len(acked)} acknowledged "
          f"({len(during)} after the kills; slowest Map-Notify {late * 1000:.0f} ms)")
    assert len(during) >= 20, "the surviving nodes stopped acknowledging registrations"
    assert all(a.node != ipaddress.ip_address(nodes["ms1"]) for a in during.values())

    gap, worst = requests.gap()
    unanswered = [r for r in requests.requests if r.answered is None]
    wrong = [r for r in requests.requests if r.answered is not None and not r.positive]
    print(f"requests: {len(requests.requests)} asked, failover gap {gap * 1000:.0f} ms (request issued "
          f"{(worst.issued - killed) * 1000:+.0f} ms after the kill, sent to {[str(a) for a in worst.resolvers]})")
    assert not unanswered and not wrong, (unanswered[:5], wrong[:5])
    assert gap < FAILOVER_MIN + 0.75

    # Every acknowledged registration is answered by the surviving nodes, wherever it was registered.
    expected = {eid: rloc for eid in acked}
    for name in ("ms2", "ms3"):
        missing = cluster_load.ask(namespace, bind, nodes[name], expected)
        assert not missing, f"{name} does not answer {len(missing)} acknowledged: {list(missing.items())[:5]}"

    assert moved_after is not None, "h5 not reached at dc2 after its move during the failure"
    print(f"move during the failure: h1 reached h5 at dc2 {moved_after:.2f} s after the move")

    status = {c.name: c for c in cluster.status(state)}
    assert status["ms1"].map_server_pid is None and status["ms2"].etcd_health == "down"
    assert status["ms2"].map_server_health == "ok", status["ms2"]  # on another member, still acknowledging
    assert status["ms3"].healthy, status["ms3"]

    # Both come back and catch up.
    cluster.revive("ms2", etcd=True)
    cluster.revive("ms1")
    missing = cluster_load.ask(namespace, bind, nodes["ms1"], expected)
    assert not missing, f"revived ms1 does not answer {len(missing)} acknowledged: {list(missing.items())[:5]}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        revisions = {n: etcd_revision(state, n) for n in nodes}
        if None not in revisions.values() and len(set(revisions.values())) == 1:
            break
        time.sleep(0.2)
    assert None not in revisions.values() and len(set(revisions.values())) == 1, revisions
    print(f"revived: ms1 answers all {len(expected)} acknowledged; etcd members at revision {revisions}")

    after = cluster_load.RegistrationLoad(namespace, bind, str(rloc), controller_config.site_key(dc3),
                                          [nodes["ms1"]], ((IID, FIRST_EID + 10_000 + i) for i in range(10)),
                                          rate=50).start()
    deadline = time.monotonic() + 5
    while len(after.acked()) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    after.stop()
    assert len(after.acked()) == 10
    time.sleep(0.2)
    for name in ("ms2", "ms3"):
        assert cluster_load.ask(namespace, bind, nodes[name], {e: rloc for e in after.acked()}) == {}
    deadline = time.monotonic() + 5
    while not all(c.healthy for c in cluster.status(state)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(c.healthy for c in cluster.status(state)), cluster.status(state)
