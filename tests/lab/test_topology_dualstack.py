"""Dual-stack topologies: IPv6 EID prefixes and host addresses in the topology file, what the lab and the
controller configuration make of them, and errors naming the field.  Pure: no root, no OVS."""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path

import pytest
import yaml

from lisp_ryu import config
from lisp_ryu.lab import build, controller_config, topology_load
from lisp_ryu.lab.topology import TopologyError

ROOT = Path(__file__).resolve().parents[2]
DUAL = ROOT / "topologies" / "two-dc-dualstack.yaml"


def doc() -> dict:
    return yaml.safe_load(DUAL.read_text())


def load(d: dict):
    return topology_load.loads(yaml.safe_dump(d), "t.yaml")


def test_the_dual_stack_file_loads_with_ipv6_hosts_and_gateways():
    t = topology_load.load(DUAL)
    h1 = t.host("h1")
    assert (str(h1.interface6), str(h1.gateway6)) == ("fd00:1::10/64", "fd00:1::1")
    v6 = [e for e in t.site("dc2").eid_prefixes if e.prefix.version == 6]
    assert [(str(e.prefix), str(e.gateway), e.iid) for e in v6] == [("fd00:2::/64", "fd00:2::1", 42)]
    assert v6[0].gateway_mac == "02:4c:67:00:00:01"  # derived: the low 24 bits of the gateway address


def test_the_controller_configuration_carries_both_families(tmp_path):
    t = topology_load.load(DUAL)
    state = build.plan(t, pfx="lr-", directory=tmp_path, topology_path=str(DUAL))
    assert (state.host("h3").ip6, state.host("h3").gateway6_mac) == ("fd00:2::10", "02:4c:67:00:00:01")
    cfg = config.parse(controller_config.build(state), source="<lab>")
    dc1 = next(x for x in cfg.xtrs if x.name == "dc1")
    assert {str(p.prefix) for p in dc1.eid_prefixes} == {"10.1.0.0/16", "fd00:1::/64"}
    assert {str(h.ip) for h in dc1.hosts} == {"10.1.0.10", "10.1.0.11", "fd00:1::10", "fd00:1::11"}
    assert {str(g.subnet) for g in dc1.gateways} >= {"fd00:1::/64", "fd00:2::/64"}
    assert {str(d.prefix) for d in dc1.dynamic_eid_prefixes} >= {"fd00:1::/64", "fd00:2::/64"}
    sites = {s.name: {str(p.prefix) for p in s.eid_prefixes} for s in cfg.map_server.sites}
    assert "fd00:2::/64" in sites["dc1"] and "fd00:1::/64" in sites["dc2"]  # hosts may move either way


def test_ipv4_only_files_are_unchanged():
    t = topology_load.load(ROOT / "topologies" / "two-dc.yaml")
    assert all(h.interface6 is None and h.gateway6 is None for h in t.hosts)


def mutate(path: str, value):
    d = copy.deepcopy(doc())
    node = d
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is None:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return d


@pytest.mark.parametrize("path, value, where, words", [
    ("hosts.0.address6", "fd00:9::10/64", "hosts[0].address6", "not inside an IPv6 EID prefix of site dc1"),
    ("hosts.0.address6", "10.1.0.12/16", "hosts[0].address6", "is not an IPv6 ADDRESS/LENGTH"),
    ("hosts.0.address6", "fd00:1::10", "hosts[0].address6", "is not an IPv6 ADDRESS/LENGTH"),
    ("hosts.0.address6", "fd00:1::/64", "hosts[0].address6", "subnet-router anycast"),
    ("hosts.1.address6", "fd00:1::10/64", "hosts[1].address6", "already used by h1"),
    ("hosts.0.gateway6", "fd00:1::2", "hosts[0].gateway6", "not the gateway of fd00:1::/64"),
    ("hosts.0.address", "fd00:1::12/64", "hosts[0].address", "not an IPv4 ADDRESS/LENGTH"),
    ("sites.0.eid_prefixes.1.gateway", "10.1.0.1", "sites[0].eid_prefixes[1].gateway", "10.1.0.1 is not inside fd00:1::/64"),
    ("sites.0.eid_prefixes.1.gateway", "fd00:9::1", "sites[0].eid_prefixes[1].gateway", "not inside fd00:1::/64"),
    ("sites.1.eid_prefixes.1.prefix", "fd00::/16", "sites[1].eid_prefixes[1].prefix", "overlaps fd00:1::/64"),
])
def test_errors_name_the_field(path, value, where, words):
    with pytest.raises(TopologyError) as info:
        load(mutate(path, value))
    text = str(info.value)
    assert where in text and words in text, text


def test_gateway6_without_address6_is_an_error():
    d = mutate("hosts.0.address6", None)
    d["hosts"][0]["gateway6"] = "fd00:1::1"
    with pytest.raises(TopologyError, match=r"hosts\[0\]\.gateway6: needs address6"):
        load(d)


def test_a_pxtr_attracts_only_the_ipv4_eid_space():
    d = doc()
    d["underlay"]["links"].append({"core": "198.18.9.1/24", "px": "198.18.9.2/24"})
    d["sites"].append({"name": "px", "role": "pxtr", "rlocs": [{"address": "198.18.9.2"}],
                       "native": {"router": "core", "address": "198.18.19.2/24", "next_hop": "198.18.19.1"}})
    t = load(d)
    assert all(p.version == 4 for p in t.pxtr.native.prefixes)
    assert ipaddress.ip_network("10.1.0.0/16") in t.pxtr.native.prefixes
