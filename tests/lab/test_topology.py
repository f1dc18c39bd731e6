"""The topology loader: shipped files, derived numbers, routes, and errors
that name the bad field.  Pure: no root, no OVS."""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path

import pytest
import yaml

from lisp_ryu.lab import topology as topo
from lisp_ryu.lab import topology_load
from lisp_ryu.lab.topology import TopologyError

ROOT = Path(__file__).resolve().parents[2]
TWO_DC = ROOT / "topologies" / "two-dc.yaml"
THREE_DC = ROOT / "topologies" / "three-dc.yaml"


def two_dc_doc() -> dict:
    return yaml.safe_load(TWO_DC.read_text())


def load_doc(doc: dict) -> topo.Topology:
    return topology_load.loads(yaml.safe_dump(doc), "t.yaml")


def test_two_dc_loads_with_documented_numbers():
    t = topology_load.load(TWO_DC)
    assert [s.name for s in t.sites] == ["dc1", "dc2"]
    assert [(s.name, s.dpid) for s in t.sites] == [("dc1", 1), ("dc2", 2)]
    assert {s.key for s in t.sites} == {"lisp-lab-key"}  # inherited from map_server.key
    assert [(h.name, h.site, h.ofport) for h in t.hosts] == [
        ("h1", "dc1", 1), ("h2", "dc1", 2), ("h3", "dc2", 1), ("h4", "dc2", 2)]
    h1 = t.host("h1")
    assert h1.interface == ipaddress.IPv4Interface("10.1.0.10/16")
    assert h1.iid == 42 and h1.gateway == ipaddress.IPv4Address("10.1.0.1")
    assert h1.mac == "02:4c:68:01:00:0a"  # low 24 bits of 10.1.0.10
    assert t.site("dc1").eid_prefixes[0].gateway_mac == "02:4c:67:01:00:01"
    (port,) = t.rloc_ports("dc1")
    assert port.bridge == "br-phy" and port.rloc.address == ipaddress.IPv4Address("198.18.1.2")
    assert port.uplink.ifname == "core" and port.peer.node == "core" and port.peer.ifname == "dc1"
    assert port.bridge_mac == "02:4c:72:12:01:02"
    assert str(t.management_address("dc1")) == "198.19.0.2/24"
    assert str(t.management_address("dc2")) == "198.19.0.3/24"
    assert t.map_server.address == ipaddress.IPv4Address("198.18.0.2")


def test_two_dc_graph():
    g = topology_load.load(TWO_DC).graph
    kinds = dict(g.nodes(data="kind"))
    assert kinds == {"dc1": "site", "dc2": "site", "core": "router", "ms": "map-server",
                     "h1": "host", "h2": "host", "h3": "host", "h4": "host"}
    underlay = [(u, v) for u, v, k in g.edges(data="kind") if k == "underlay"]
    assert sorted(tuple(sorted(e)) for e in underlay) == [("core", "dc1"), ("core", "dc2"), ("core", "ms")]
    assert g.has_edge("dc1", "h1") and g.has_edge("dc2", "h4")


def test_routes_of_two_dc_go_through_the_core():
    t = topology_load.load(TWO_DC)
    routes = {(r.node, str(r.destination)): (str(r.via), r.ifname) for r in t.routes}
    assert routes == {
        ("dc1", "198.18.0.0/24"): ("198.18.1.1", "br-phy"),
        ("dc1", "198.18.2.0/24"): ("198.18.1.1", "br-phy"),
        ("dc2", "198.18.0.0/24"): ("198.18.2.1", "br-phy"),
        ("dc2", "198.18.1.0/24"): ("198.18.2.1", "br-phy"),
        ("ms", "198.18.1.0/24"): ("198.18.0.1", "core"),
        ("ms", "198.18.2.0/24"): ("198.18.0.1", "core"),
    }
    assert t.routes_of("core") == ()  # every subnet is connected to it


def test_three_dc_multihomed_site_has_one_bridge_per_rloc():
    t = topology_load.load(THREE_DC)
    ports = t.rloc_ports("dc3")
    assert [(p.bridge, str(p.rloc.address), p.rloc.weight, p.uplink.ifname, p.peer.ifname) for p in ports] == [
        ("br-phy", "198.18.3.2", 50, "core", "dc3"),
        ("br-phy1", "198.18.4.2", 50, "core-1", "dc3-1"),
    ]
    # Ties between parallel links go to the link listed first.
    assert {r.via for r in t.routes_of("dc3")} == {ipaddress.IPv4Address("198.18.3.1")}
    assert [h.ofport for h in t.hosts_of("dc3")] == [1, 2]


def test_routes_across_a_chain_of_routers():
    doc = two_dc_doc()
    doc["underlay"]["routers"].append({"name": "edge"})
    doc["underlay"]["links"][2] = {"edge": "198.18.2.1/24", "dc2": "198.18.2.2/24"}
    doc["underlay"]["links"].append({"core": "198.18.9.1/30", "edge": "198.18.9.2/30"})
    t = load_doc(doc)
    routes = {(r.node, str(r.destination)): str(r.via) for r in t.routes}
    assert routes[("core", "198.18.2.0/24")] == "198.18.9.2"
    assert routes[("edge", "198.18.1.0/24")] == "198.18.9.1"
    assert routes[("edge", "198.18.0.0/24")] == "198.18.9.1"
    assert routes[("dc1", "198.18.2.0/24")] == "198.18.1.1"
    assert routes[("dc2", "198.18.1.0/24")] == "198.18.2.1"
    assert routes[("dc1", "198.18.9.0/30")] == "198.18.1.1"


def test_direct_site_link_without_routers():
    doc = {
        "name": "pair",
        "management": {"subnet": "198.19.0.0/24", "controller": "198.19.0.1"},
        "underlay": {"links": [{"a": "198.18.0.1/30", "b": "198.18.0.2/30"}]},
        "sites": [
            {"name": "a", "rlocs": [{"address": "198.18.0.1"}],
             "eid_prefixes": [{"prefix": "10.1.0.0/16", "iid": 0, "gateway": "10.1.0.1"}]},
            {"name": "b", "rlocs": [{"address": "198.18.0.2"}],
             "eid_prefixes": [{"prefix": "10.2.0.0/16", "iid": 0, "gateway": "10.2.0.1"}]},
        ],
        "hosts": [{"name": "x", "site": "a", "address": "10.1.0.5/16"}],
    }
    t = load_doc(doc)
    assert t.routes == () and t.map_server is None and t.sites[0].key is None
    assert t.host("x").iid == 0 and t.host("x").gateway == ipaddress.IPv4Address("10.1.0.1")


def _set(doc, path, value):
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _delete(doc, path):
    node = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]


ERRORS = [
    # (mutation, expected path, expected words in the problem)
    (lambda d: _set(d, ["sites", 1, "rloc"], "198.18.2.2"), "sites[1].rloc", "unknown key"),
    (lambda d: _set(d, ["extra"], 1), "extra", "unknown key"),
    (lambda d: _delete(d, ["sites", 0, "rlocs"]), "sites[0].rlocs", "missing"),
    (lambda d: _set(d, ["hosts", 2, "address"], "10.9.0.10/16"), "hosts[2].address", "not inside an EID prefix"),
    (lambda d: _set(d, ["hosts", 1, "name"], "h1"), "hosts[1].name", "already used"),
    (lambda d: _set(d, ["hosts", 0, "name"], "dc2"), "hosts[0].name", "already used"),
    (lambda d: _set(d, ["hosts", 0, "name"], "Host_1"), "hosts[0].name", "not a valid name"),
    (lambda d: _set(d, ["hosts", 0, "name"], "averyverylongname"), "hosts[0].name", "at most 10"),
    (lambda d: _set(d, ["hosts", 1, "address"], "10.1.0.10/16"), "hosts[1].address", "already used by h1"),
    (lambda d: _set(d, ["hosts", 0, "site"], "dc9"), "hosts[0].site", "unknown site"),
    (lambda d: _set(d, ["hosts", 0, "gateway"], "10.1.0.2"), "hosts[0].gateway", "not the gateway"),
    (lambda d: _set(d, ["hosts", 0, "address"], "10.1.0.10/30"), "hosts[0].address", "not on the host's subnet"),
    (lambda d: _set(d, ["hosts", 0, "iid"], 7), "hosts[0].address", "not inside an EID prefix"),
    (lambda d: _set(d, ["hosts", 0, "mac"], "01:00:5e:00:00:01"), "hosts[0].mac", "multicast"),
    (lambda d: _set(d, ["hosts", 0, "mac"], "02:4c:68:01:00:0b"), "hosts[1].mac", "already used by host h1"),
    (lambda d: _set(d, ["sites", 1, "rlocs", 0, "address"], "198.18.1.2"), "sites[1].rlocs[0].address", "not dc2's end"),
    (lambda d: _set(d, ["sites", 0, "rlocs", 0, "weight"], 300), "sites[0].rlocs[0].weight", "out of range"),
    (lambda d: _set(d, ["sites", 1, "dpid"], 1), "sites[1].dpid", "already used by dc1"),
    (lambda d: _set(d, ["sites", 1, "eid_prefixes", 0, "prefix"], "10.0.0.0/8"), "sites[1].eid_prefixes[0].prefix", "overlaps 10.1.0.0/16 of site dc1"),
    (lambda d: _set(d, ["sites", 0, "eid_prefixes", 0, "gateway"], "10.2.0.1"), "sites[0].eid_prefixes[0].gateway", "not inside"),
    (lambda d: _set(d, ["sites", 0, "eid_prefixes", 0, "iid"], 1 << 24), "sites[0].eid_prefixes[0].iid", "out of range"),
    (lambda d: _set(d, ["sites", 0, "eid_prefixes", 0, "iid"], True), "sites[0].eid_prefixes[0].iid", "expected an integer"),
    (lambda d: _set(d, ["sites", 0, "eid_prefixes", 0, "prefix"], "10.1.0.1/16"), "sites[0].eid_prefixes[0].prefix", "not an IPv4 prefix"),
    (lambda d: _set(d, ["sites", 0, "eid_prefixes", 0], {"prefix": "198.18.0.0/16", "iid": 42, "gateway": "198.18.200.1"}),
     "sites[0].eid_prefixes[0].prefix", "overlaps the underlay"),
    (lambda d: _set(d, ["underlay", "links", 1], {"core": "198.18.1.1/24", "dc1": "198.18.1.2/24", "ms": "198.18.1.3/24"}), "underlay.links[1]", "exactly two"),
    (lambda d: _set(d, ["underlay", "links", 1], {"core": "198.18.1.1/24", "dc1": "198.18.3.2/24"}), "underlay.links[1]", "not in the same subnet"),
    (lambda d: _set(d, ["underlay", "links", 1], {"core": "198.18.1.1/24", "dcx": "198.18.1.2/24"}), "underlay.links[1].dcx", "unknown node"),
    (lambda d: _set(d, ["underlay", "links", 1], {"core": "198.18.0.1/24", "dc1": "198.18.1.2/24"}), "underlay.links[1].core", "already used"),
    (lambda d: _set(d, ["underlay", "links", 1], {"core": "198.18.1.0/24", "dc1": "198.18.1.2/24"}), "underlay.links[1].core", "network or broadcast"),
    (lambda d: _set(d, ["underlay", "links", 1], {"core": "198.18.0.9/16", "dc1": "198.18.1.2/16"}), "underlay.links[1]", "overlaps"),
    (lambda d: _delete(d["underlay"]["links"], [2]), "underlay.links", "not connected: core, dc1, ms | dc2"),
    (lambda d: _set(d, ["management"], {"subnet": "198.18.0.0/16", "controller": "198.18.200.1"}),
     "management.subnet", "overlaps underlay"),
    (lambda d: _set(d, ["management", "controller"], "198.20.0.1"), "management.controller", "not a host address"),
    (lambda d: _set(d, ["management", "port"], 0), "management.port", "out of range"),
    (lambda d: _set(d, ["map_server", "address"], "198.18.0.7"), "map_server.address", "not its end of any underlay link"),
    (lambda d: _delete(d["map_server"], ["key"]), "map_server.key", "missing"),
]


@pytest.mark.parametrize("mutate,path,words", ERRORS, ids=[e[1] + ":" + e[2] for e in ERRORS])
def test_errors_name_the_bad_field(mutate, path, words):
    doc = copy.deepcopy(two_dc_doc())
    mutate(doc)
    with pytest.raises(TopologyError) as exc:
        load_doc(doc)
    assert exc.value.path == path, str(exc.value)
    assert words in exc.value.problem, str(exc.value)
    assert str(exc.value).startswith(f"t.yaml: {path}: ")


def test_sites_must_reach_each_other_through_routers_only():
    """A site does not forward: dc1 - dc2 - dc3 in a chain leaves dc1 and dc3 apart."""
    doc = {
        "name": "chain",
        "management": {"subnet": "198.19.0.0/24", "controller": "198.19.0.1"},
        "underlay": {"links": [{"dc1": "198.18.1.1/30", "dc2": "198.18.1.2/30"},
                               {"dc2": "198.18.2.1/30", "dc3": "198.18.2.2/30"}]},
        "sites": [
            {"name": n, "rlocs": [{"address": a} for a in rl],
             "eid_prefixes": [{"prefix": f"10.{i}.0.0/16", "iid": 0, "gateway": f"10.{i}.0.1"}]}
            for i, (n, rl) in enumerate([("dc1", ["198.18.1.1"]), ("dc2", ["198.18.1.2", "198.18.2.1"]),
                                         ("dc3", ["198.18.2.2"])], start=1)
        ],
        "hosts": [],
    }
    with pytest.raises(TopologyError) as exc:
        load_doc(doc)
    assert exc.value.path == "sites[0]"
    assert "dc1 cannot reach any RLOC of site dc3" in exc.value.problem


def test_a_link_end_of_a_site_must_be_one_of_its_rlocs():
    doc = two_dc_doc()
    doc["underlay"]["links"].append({"core": "198.18.5.1/24", "dc1": "198.18.5.2/24"})
    with pytest.raises(TopologyError) as exc:
        load_doc(doc)
    assert exc.value.path == "underlay.links[3].dc1"
    assert "must also be listed in sites[0].rlocs" in exc.value.problem


def test_derived_mac_collision_asks_for_an_explicit_mac():
    """Hosts with the same low 24 address bits in two instance-IDs collide."""
    doc = two_dc_doc()
    doc["sites"][0]["eid_prefixes"].append({"prefix": "10.1.0.0/16", "iid": 43, "gateway": "10.1.0.1",
                                            "gateway_mac": "02:4c:67:aa:00:01"})
    doc["hosts"].append({"name": "h9", "site": "dc1", "address": "10.1.0.10/16", "iid": 43})
    with pytest.raises(TopologyError) as exc:
        load_doc(doc)
    assert exc.value.path == "hosts[4].mac" and "set a `mac`" in exc.value.problem
    doc["hosts"][-1]["mac"] = "02:00:00:00:00:09"
    t = load_doc(doc)
    assert t.host("h9").iid == 43 and t.host("h9").ofport == 3


def test_ambiguous_instance_id_must_be_given():
    doc = two_dc_doc()
    doc["sites"][0]["eid_prefixes"].append({"prefix": "10.1.0.0/16", "iid": 43, "gateway": "10.1.0.1",
                                            "gateway_mac": "02:4c:67:aa:00:01"})
    del doc["hosts"][0]["iid"]
    with pytest.raises(TopologyError) as exc:
        load_doc(doc)
    assert exc.value.path == "hosts[0].iid"


def test_anycast_gateway_mac_may_repeat_across_sites():
    doc = two_dc_doc()
    for site in doc["sites"]:
        site["eid_prefixes"][0]["gateway_mac"] = "02:4c:67:00:00:01"
    t = load_doc(doc)
    assert {s.eid_prefixes[0].gateway_mac for s in t.sites} == {"02:4c:67:00:00:01"}


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(TopologyError, match="missing.yaml: cannot read"):
        topology_load.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(TopologyError, match="not valid YAML"):
        topology_load.load(bad)
    bad.write_text("")
    with pytest.raises(TopologyError, match="the file is empty"):
        topology_load.load(bad)


# --------------------------------------------------------------------------
# PxTR sites and internet hosts (topologies/internet.yaml)

INTERNET = ROOT / "topologies" / "internet.yaml"


def internet_doc() -> dict:
    return yaml.safe_load(INTERNET.read_text())


def test_internet_topology_has_a_pxtr_attracting_the_eid_space():
    t = topology_load.load(INTERNET)
    assert [s.name for s in t.lisp_sites] == ["dc1", "dc2"] and t.pxtr.name == "px"
    n = t.pxtr.native
    assert (n.router, str(n.interface), str(n.next_hop), n.iid) == ("core", "198.18.19.2/24", "198.18.19.1", 42)
    assert [str(p) for p in n.prefixes] == ["10.1.0.0/16", "10.2.0.0/16"]
    assert (n.ifname, n.router_ifname, n.next_hop_mac) == ("core-n", "px-n", "02:4c:6c:12:13:01")
    (inet,) = t.internet_hosts
    assert (inet.name, inet.router, str(inet.gateway), inet.mac) == ("inet", "core", "203.0.113.1", "02:4c:68:00:71:0a")
    g = t.graph
    assert g.nodes["inet"]["kind"] == "internet-host" and g.has_edge("core", "inet")
    assert any(k == "native" for _, _, k in g.edges("px", data="kind"))


def test_core_routes_the_eid_space_to_the_pxtr_and_sites_get_no_native_routes():
    t = topology_load.load(INTERNET)
    core = {str(r.destination): (str(r.via), r.ifname) for r in t.routes_of("core")}
    assert core == {"10.1.0.0/16": ("198.18.19.2", "px-n"), "10.2.0.0/16": ("198.18.19.2", "px-n")}
    for node in ("dc1", "dc2", "px", "ms"):
        assert not any(str(r.destination).startswith(("203.", "198.18.19.", "10.")) for r in t.routes_of(node))


def test_native_routes_cross_a_second_router():
    doc = internet_doc()
    doc["underlay"]["routers"].append({"name": "edge"})
    doc["underlay"]["links"].append({"core": "198.18.20.1/24", "edge": "198.18.20.2/24"})
    doc["internet_hosts"][0]["router"] = "edge"
    t = load_doc(doc)
    edge = {str(r.destination): (str(r.via), r.ifname) for r in t.routes_of("edge")}
    assert edge["10.1.0.0/16"] == ("198.18.20.1", "core") and edge["198.18.19.0/24"] == ("198.18.20.1", "core")
    core = {str(r.destination): (str(r.via), r.ifname) for r in t.routes_of("core")}
    assert core["203.0.113.0/24"] == ("198.18.20.2", "edge")


def _pxtr(doc: dict) -> dict:
    return next(s for s in doc["sites"] if s.get("role") == "pxtr")


@pytest.mark.parametrize("change, path, message", [
    (lambda d: _pxtr(d).update(role="proxy"), "sites[2].role", "'proxy' is not a role (xtr, pxtr)"),
    (lambda d: _pxtr(d).pop("native"), "sites[2].native", "missing"),
    (lambda d: _pxtr(d).update(eid_prefixes=[]), "sites[2].eid_prefixes", "unknown key"),
    (lambda d: d["sites"][0].update(native=_pxtr(d)["native"]), "sites[0].native",
     "only a PxTR site (role: pxtr) has a native link"),
    (lambda d: _pxtr(d)["native"].update(router="edge"), "sites[2].native.router", "unknown router 'edge'"),
    (lambda d: _pxtr(d)["native"].update(next_hop="198.18.20.1"), "sites[2].native.next_hop",
     "not another host address of 198.18.19.0/24"),
    (lambda d: _pxtr(d)["native"].update(address="198.18.1.9/24", next_hop="198.18.1.8"), "sites[2].native.address",
     "overlaps underlay link core-dc1"),
    (lambda d: _pxtr(d)["native"].update(iid=7), "sites[2].native.iid", "no LISP site has EID prefixes in instance-ID 7"),
    (lambda d: _pxtr(d)["native"].update(typo=1), "sites[2].native.typo", "unknown key"),
    (lambda d: (d["sites"].append({**copy.deepcopy(_pxtr(d)), "name": "px2", "dpid": 10,
                                   "rlocs": [{"address": "198.18.10.2"}]}),
                d["underlay"]["links"].append({"core": "198.18.10.1/24", "px2": "198.18.10.2/24"})),
     "sites[3].role", "only one PxTR per lab"),
    (lambda d: d["hosts"].append({"name": "h9", "site": "px", "address": "10.1.0.99/16"}), "hosts[3].site",
     "px is a PxTR: hosts belong to LISP sites"),
    (lambda d: d["internet_hosts"][0].update(router="px"), "internet_hosts[0].router", "unknown router 'px'"),
    (lambda d: d["internet_hosts"][0].update(gateway="203.0.113.10"), "internet_hosts[0].gateway",
     "not another host address"),
    (lambda d: d["internet_hosts"][0].update(address="10.1.9.9/24", gateway="10.1.9.1"), "internet_hosts[0].address",
     "overlaps EID prefix 10.1.0.0/16 of dc1"),
    (lambda d: d["internet_hosts"][0].update(name="h1"), "internet_hosts[0].name", "already used by hosts[0].name"),
    (lambda d: d["internet_hosts"][0].update(color="red"), "internet_hosts[0].color", "unknown key"),
    (lambda d: d["internet_hosts"].append({"name": "inet2", "router": "core", "address": "203.0.113.20/24",
                                           "gateway": "203.0.113.2"}),
     "internet_hosts[1].address", "overlaps internet host inet's subnet"),
])
def test_pxtr_and_internet_host_errors_name_the_field(change, path, message):
    doc = internet_doc()
    change(doc)
    with pytest.raises(TopologyError) as info:
        load_doc(doc)
    assert info.value.path == path, str(info.value)
    assert message in info.value.problem, str(info.value)


def test_pxtr_iid_defaults_only_when_the_sites_agree():
    doc = internet_doc()
    del _pxtr(doc)["native"]["iid"]
    assert load_doc(doc).pxtr.native.iid == 42
    doc["sites"][1]["eid_prefixes"][0]["iid"] = 7
    doc["hosts"][2]["iid"] = 7
    with pytest.raises(TopologyError, match=r"sites\[2\]\.native\.iid: the LISP sites use instance-IDs 7, 42"):
        load_doc(doc)
