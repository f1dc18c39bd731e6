"""The random topology generator: every seed gives a valid topology, the same one each time, with
what the issue asks for across seeds (2-8 sites, 1-3 routers in a tree or ring, multihomed sites,
1-3 tenants reusing one prefix plan)."""

from __future__ import annotations

import networkx as nx
import pytest
import yaml

from lisp_ryu.lab import topology_load, topology_random


@pytest.mark.parametrize("size", [{}, {"max_sites": 3, "max_hosts": 1}])
def test_every_seed_gives_a_valid_topology_and_the_same_one_again(size):
    seen = {"sites": set(), "routers": set(), "tenants": set(), "multihomed": 0, "ring": 0, "shared_ip": 0}
    for seed in range(200):
        doc = topology_random.generate(seed, **size)
        assert topology_random.generate(seed, **size) == doc
        t = topology_load.loads(topology_random.dump(doc), f"seed {seed}")
        seen["sites"].add(len(t.sites))
        seen["routers"].add(len(t.routers))
        seen["tenants"].add(len({h.iid for h in t.hosts}))
        seen["multihomed"] += any(len(s.rlocs) > 1 for s in t.sites)
        routers = t.graph.subgraph(r.name for r in t.routers)
        seen["ring"] += len(t.routers) > 2 and not nx.is_forest(nx.Graph(routers))
        ips = [(h.site, h.address) for h in t.hosts]
        seen["shared_ip"] += len(ips) != len(set(ips))
        for iid in {h.iid for h in t.hosts}:
            assert len({h.site for h in t.hosts if h.iid == iid}) >= 2  # each tenant has pairs across sites
    assert seen["sites"] == set(range(2, size.get("max_sites", 8) + 1))
    assert seen["routers"] == {1, 2, 3} and seen["tenants"] == {1, 2, 3}
    assert seen["multihomed"] and seen["ring"] and seen["shared_ip"]


def test_ipv6_hosts_are_dual_stack_hosts_in_prefixes_the_tenants_reuse():
    shared6 = ipv4_only = 0
    for seed in range(100):
        doc = topology_random.generate(seed, ipv6_hosts=True)
        t = topology_load.loads(topology_random.dump(doc), f"seed {seed}")
        for site in t.sites:  # an IPv6 prefix beside each IPv4 one, same tenants
            v4 = sorted(e.iid for e in site.eid_prefixes if e.prefix.version == 4)
            assert sorted(e.iid for e in site.eid_prefixes if e.prefix.version == 6) == v4
        ips6 = [(h.site, h.address6) for h in t.hosts if h.address6 is not None]
        shared6 += len(ips6) != len(set(ips6))
        ipv4_only += any(h.address6 is None for h in t.hosts)
        # The IPv6 choices do not change the seed's IPv4 topology.
        plain = topology_random.generate(seed)
        assert [{k: v for k, v in h.items() if k != "address6"} for h in doc["hosts"]] == plain["hosts"]
        assert doc["underlay"] == plain["underlay"]
    assert shared6 and ipv4_only


def test_dump_is_yaml_with_a_describing_comment():
    text = topology_random.dump(topology_random.generate(5))
    assert text.startswith("# random-5: ") and yaml.safe_load(text)["name"] == "random-5"
