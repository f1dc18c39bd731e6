"""End to end: policies written over the controller's REST API reach real OVS xTRs at once.

The three-dc lab with the real controller (embedded Map-Server) and its
REST API on --wsapi-port.  A deny added over REST makes the Map-Server
publish a Drop/Policy-Denied record to the subscribed ITR (dc1), whose
flows drop; deleting it restores the mapping.  A weight-0 override of one
of dc3's RLOCs moves dc1's traffic to the other one.  A deny for one host
(h1) leaves its neighbour behind the same ITR (h2) alone: the answers are
Source/Dest-keyed and dc1's flows match the source.  Nothing is restarted.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from lisp_ryu.flows.pipeline import Owner, cookie_owner
from lisp_ryu.lab import controller_config, running

from conftest import controller_lab, dump_lab_on_failure, private_lab

pytestmark = [pytest.mark.lab]

TOKEN = "lq-e2e-token"
WSAPI_PORT = 8094
API = f"http://127.0.0.1:{WSAPI_PORT}/lisp/v1"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, module_monkeypatch):
    env, topo_file = private_lab(tmp_path_factory, module_monkeypatch, "policy", "lq-", "three-dc.yaml",
                                 "198.19.247.0/24", 6694)
    build = controller_config.build
    # The lab writes the controller's config; add the REST token to it.
    module_monkeypatch.setattr(controller_config, "build", lambda state, **kw: {**build(state, **kw),
                                                                                "rest": {"token": TOKEN}})
    with controller_lab(env, topo_file, extra_args=("--wsapi-port", str(WSAPI_PORT))) as state:
        wait_for(lambda: call("GET", "/health")[0] == 200, "the REST API to answer")
        yield state


@pytest.fixture(autouse=True)
def flows_on_failure(request, lab):
    yield
    dump_lab_on_failure(request, lab)


def call(method: str, path: str, body=None, token: str | None = TOKEN):
    request = urllib.request.Request(API + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)
    except OSError:
        return None, None


def wait_for(predicate, what: str, timeout: float = 15.0):
    """Poll until `predicate()` holds (a bound on waiting, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def ping(lab, host: str, target: str, count: int = 3) -> subprocess.CompletedProcess:
    return running.exec_in(host, ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1", target], state=lab,
                           check=False)


def mapping_flows(lab, site: str, prefix: str) -> list[str]:
    lines = running.ofctl(site, "dump-flows", "table=1", state=lab).splitlines()
    return [line for line in lines if "cookie=" in line and f"nw_dst={prefix}" in line
            and cookie_owner(int(re.search(r"cookie=(0x[0-9a-f]+)", line).group(1), 16)) is Owner.MAPPING]


def dc3_uplink_rx(lab) -> list[int]:
    """Packets received on dc3's uplinks: br-phy carries 198.18.3.2, br-phy1 198.18.4.2."""
    counts = []
    for bridge in ("br-phy", "br-phy1"):
        stats = running.ofctl("dc3", "dump-ports", bridge=bridge, state=lab)
        counts.append(int(re.search(r"port\s+1: rx pkts=(\d+)", stats).group(1)))
    return counts


DENY = {"id": "dc1-to-dc2", "iid": 42, "sources": ["10.1.0.0/16"], "destinations": ["10.2.0.0/16"],
        "action": "deny", "description": "lab e2e"}


def test_writes_need_the_token_and_the_document_lists_every_route(lab):
    assert call("POST", "/policies", DENY, token=None)[0] == 401
    assert call("POST", "/policies", DENY, token="wrong")[0] == 403
    status, doc = call("GET", "/openapi.json", token=None)
    assert status == 200 and "/lisp/v1/policies/{rule_id}" in doc["paths"]


def test_deny_over_rest_stops_the_ping_and_delete_restores_it(lab):
    assert ping(lab, "h1", "10.2.0.10").returncode == 0
    assert any("set_field:198.18.2.2->tun_dst" in f for f in mapping_flows(lab, "dc1", "10.2.0.0/16"))

    status, body = call("POST", "/policies", DENY)
    assert status == 201, body
    assert body["notified_subscribers"] >= 1
    wait_for(lambda: any("actions=drop" in f for f in mapping_flows(lab, "dc1", "10.2.0.0/16")),
             "dc1 to install a drop flow for 10.2.0.0/16")
    assert ping(lab, "h1", "10.2.0.10", count=2).returncode != 0
    # The controller's view: the map-cache entry, its TTL and the drop flow it produced.
    _, cache = call("GET", "/xtrs/dc1/map-cache")
    entry = next(e for e in cache["entries"] if e["prefix"] == "10.2.0.0/16")
    assert entry["action"] == "drop-policy-denied" and entry["ttl_left"] > 0
    assert entry["flows"] and all(f["installed"] and f["text"].endswith("actions=drop") for f in entry["flows"])
    shown = subprocess.run([sys.executable, "-m", "lisp_ryu", "show", "map-cache", "dc1", "--url",
                            f"http://127.0.0.1:{WSAPI_PORT}"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and "drop-policy-denied" in shown.stdout, shown.stdout + shown.stderr

    status, _ = call("DELETE", "/policies/dc1-to-dc2")
    assert status == 200
    wait_for(lambda: any("set_field:198.18.2.2->tun_dst" in f for f in mapping_flows(lab, "dc1", "10.2.0.0/16")),
             "dc1 to tunnel to dc2 again")
    assert ping(lab, "h1", "10.2.0.10").returncode == 0


def test_weight_zero_moves_traffic_to_the_other_rloc(lab):
    assert ping(lab, "h1", "10.3.0.10").returncode == 0
    groups = running.ofctl("dc1", "dump-groups", state=lab)
    assert "198.18.3.2->tun_dst" in groups and "198.18.4.2->tun_dst" in groups, groups

    status, body = call("PUT", "/rloc-overrides/drain-dc3-a", {"rloc": "198.18.3.2", "weight": 0})
    assert status == 200, body

    def only_second_rloc():
        flows = mapping_flows(lab, "dc1", "10.3.0.0/16")
        return len(flows) == 1 and "set_field:198.18.4.2->tun_dst" in flows[0] and "group" not in flows[0]

    wait_for(only_second_rloc, "dc1 to tunnel 10.3.0.0/16 only to 198.18.4.2")
    before = dc3_uplink_rx(lab)
    assert ping(lab, "h1", "10.3.0.10", count=10).returncode == 0
    after = dc3_uplink_rx(lab)
    assert after[1] - before[1] >= 10, (before, after)  # every echo request arrived on 198.18.4.2's uplink

    assert call("DELETE", "/rloc-overrides/drain-dc3-a")[0] == 200
    wait_for(lambda: any("group:" in f for f in mapping_flows(lab, "dc1", "10.3.0.0/16")),
             "dc1 to use both dc3 RLOCs again")
    assert ping(lab, "h1", "10.3.0.10").returncode == 0


DENY_H1 = {"id": "h1-to-dc2", "iid": 42, "sources": ["10.1.0.10/32"], "destinations": ["10.2.0.0/16"],
           "action": "deny", "description": "one host, not its site"}


def test_deny_for_one_host_leaves_its_neighbour_behind_the_same_itr_alone(lab):
    assert ping(lab, "h1", "10.2.0.10").returncode == 0
    assert ping(lab, "h2", "10.2.0.10").returncode == 0

    status, body = call("POST", "/policies", DENY_H1)
    assert status == 201, body
    # The subscriber's plain entry is withdrawn: each host's next packet asks for itself.
    wait_for(lambda: not any("nw_src" not in f and "set_field:198.18.2.2->tun_dst" in f
                             for f in mapping_flows(lab, "dc1", "10.2.0.0/16")),
             "dc1 to drop its plain entry for 10.2.0.0/16")
    assert ping(lab, "h1", "10.2.0.10", count=2).returncode != 0
    assert ping(lab, "h2", "10.2.0.10").returncode == 0
    flows = mapping_flows(lab, "dc1", "10.2.0.0/16")
    assert any("nw_src=10.1.0.10" in f and f.endswith("actions=drop") for f in flows), flows
    assert any("nw_src=10.1.0.11" in f and "set_field:198.18.2.2->tun_dst" in f for f in flows), flows
    _, cache = call("GET", "/xtrs/dc1/map-cache")
    by_source = {e["source_prefix"]: e for e in cache["entries"] if e["prefix"] == "10.2.0.0/16"}
    assert by_source["10.1.0.10/32"]["action"] == "drop-policy-denied"
    assert [loc["address"] for loc in by_source["10.1.0.11/32"]["locators"]] == ["198.18.2.2"]
    assert ping(lab, "h1", "10.2.0.10", count=2).returncode != 0  # still denied, h2 unaffected
    assert ping(lab, "h2", "10.2.0.10").returncode == 0

    status, _ = call("DELETE", "/policies/h1-to-dc2")
    assert status == 200
    wait_for(lambda: any("nw_src" not in f and "set_field:198.18.2.2->tun_dst" in f
                         for f in mapping_flows(lab, "dc1", "10.2.0.0/16")),
             "dc1 to tunnel 10.2.0.0/16 for every host again")
    assert not any("nw_src" in f for f in mapping_flows(lab, "dc1", "10.2.0.0/16"))
    assert ping(lab, "h1", "10.2.0.10").returncode == 0
    assert ping(lab, "h2", "10.2.0.10").returncode == 0
