"""Policies on IPv6 prefixes over the REST API, followed through to the ITR's map-cache and flows.

The same in-memory set-up as test_rest_api (real cores, real controller, real codec bytes, Ryu's
WSGI app), with dual-stack sites: the first ping6 of an ITR resolves an IPv6 EID over IPv4 RLOCs,
and a deny on IPv6 prefixes written over REST turns that entry into a Policy-Denied drop.
"""

from __future__ import annotations

import pytest

from support.underlay import ipv6_frame
from test_rest_api import Lab, cache_entry

CONFIG = """
map_server:
  sites:
    - {name: dc1, key: k1, eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}, {prefix: "fd00:1::/64", iid: 42}]}
    - {name: dc3, key: k3, eid_prefixes: [{prefix: 10.3.0.0/16, iid: 42}, {prefix: "fd00:3::/64", iid: 42}]}
rest: {token: t0ken}
xtrs:
  - name: dc1
    dpid: 1
    rlocs: [{address: 198.18.1.2}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}, {prefix: "fd00:1::/64", iid: 42}]
    map_servers: [{address: 198.18.0.2, key: k1}]
    map_resolvers: [198.18.0.2]
    gateways: [{subnet: "fd00:1::/64", ip: "fd00:1::1", mac: "02:4c:67:00:00:01", iid: 42}]
    hosts: [{ip: 10.1.0.10, mac: "02:00:00:01:00:0a", port: 1, iid: 42},
            {ip: "fd00:1::10", mac: "02:00:00:01:00:0a", port: 1, iid: 42}]
  - name: dc3
    dpid: 3
    rlocs: [{address: 198.18.3.2, weight: 50}, {address: 198.18.4.2, weight: 50}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.3.0.0/16, iid: 42}, {prefix: "fd00:3::/64", iid: 42}]
    map_servers: [{address: 198.18.0.2, key: k3}]
    map_resolvers: [198.18.0.2]
    hosts: [{ip: 10.3.0.10, mac: "02:00:00:03:00:0a", port: 1, iid: 42},
            {ip: "fd00:3::10", mac: "02:00:00:03:00:0a", port: 1, iid: 42}]
"""

DENY6 = {"id": "no-v6-dc1-to-dc3", "iid": 42, "sources": ["fd00:1::/64"], "destinations": ["fd00:3::/64"],
         "action": "deny"}


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path, config_text=CONFIG)
    lab.start()
    return lab


def miss6(lab, xtr, src, dst):
    core = lab.cores[xtr]
    lab.switches[core.config.dpid].packet_in(lab.controller, 1, ipv6_frame(src, dst), iid=42)
    lab.underlay.settle()


def test_a_first_ipv6_packet_is_resolved_and_reinjected(lab):
    miss6(lab, "dc1", "fd00:1::10", "fd00:3::10")
    entry = cache_entry(lab, "dc1", "fd00:3::/64")
    assert entry is not None and sorted(loc["address"] for loc in entry["locators"]) == ["198.18.3.2", "198.18.4.2"]
    assert any("ipv6_dst=fd00:3::/ffff:ffff:ffff:ffff::" in f["text"] and "group:" in f["text"] for f in entry["flows"])
    assert lab.controller.counters.get("packets_reinjected") == 1


def test_an_ipv6_deny_over_rest_reaches_the_itr_and_removal_restores_it(lab):
    miss6(lab, "dc1", "fd00:1::10", "fd00:3::10")
    status, body = lab.call("POST", "/lisp/v1/policies", DENY6)
    assert status == 201 and body["notified_subscribers"] == 1
    assert lab.call("GET", "/lisp/v1/policies/no-v6-dc1-to-dc3")[1]["sources"] == ["fd00:1::/64"]
    # The verdict depends on the source: the ITR now holds a source-specific Policy-Denied entry.
    status, data = lab.call("GET", "/lisp/v1/xtrs/dc1/map-cache")
    denied = [e for e in data["entries"] if "fd00:3::/64" in e["prefix"] and e["negative"]]
    assert denied and all(e["action"] == "drop-policy-denied" for e in denied), data["entries"]
    assert any("ipv6_src=fd00:1::/ffff:ffff:ffff:ffff::" in f["text"] and f["text"].endswith("actions=drop")
               for e in denied for f in e["flows"]), denied
    # IPv4 between the same sites is untouched.
    lab.miss("dc1", "10.1.0.10", "10.3.0.10")
    assert cache_entry(lab, "dc1", "10.3.0.0/16")["locators"]
    status, body = lab.call("DELETE", "/lisp/v1/policies/no-v6-dc1-to-dc3")
    assert status == 200
    miss6(lab, "dc1", "fd00:1::10", "fd00:3::10")
    status, data = lab.call("GET", "/lisp/v1/xtrs/dc1/map-cache")
    assert not [e for e in data["entries"] if "fd00:3::/64" in e["prefix"] and e["negative"]], data["entries"]


@pytest.mark.parametrize("bad, field", [
    ({**DENY6, "destinations": ["fd00:3::/129"]}, "destinations[0]"),
    ({**DENY6, "sources": ["fd00:1::/64", "fd00:1::1/64"]}, "sources[1]"),
])
def test_bad_ipv6_prefixes_are_400_naming_the_field(lab, bad, field):
    status, body = lab.call("POST", "/lisp/v1/policies", bad)
    assert status == 400 and body["field"].endswith(field), body
