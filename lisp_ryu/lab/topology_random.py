"""Random lab topologies from a seed: the same seed always gives the same, valid topology.

It lives in the lab (not in tests/) so that a seed that failed can be looked at
by hand: `lisp-ryu lab random-topology SEED -o t.yaml && lisp-ryu lab up t.yaml`
builds exactly what the test built; the random-topology test and `make soak` use
it too.

What a seed chooses (networkx builds the router graph):
  * 2 to `max_sites` sites and 1 to 3 underlay routers joined as a random tree,
    or as a ring when there are three;
  * each site on a random router; some sites multihomed (two RLOCs, each on a
    link to a router, a different one where there are several);
  * 1 to 3 tenants (instance-IDs) that reuse the same EID prefix plan: site i
    holds 10.i.0.0/16 in every tenant present there, each tenant at two sites
    at least, with 1 or 2 hosts per tenant and site at the same addresses
    (10.i.0.10, 10.i.0.11) as the other tenants' hosts there, each with its own MAC;
  * a Map-Server on the first router;
  * with `ipv6_hosts`: every site also holds fd00:i::/64 in every tenant present
    there (gateway fd00:i::1, reused by the tenants as the IPv4 plan is), and
    most hosts are dual-stack (fd00:i::10, fd00:i::11 beside their IPv4
    address), some stay IPv4-only.  Those choices come from a second random
    stream, so a seed's IPv4 topology is the same with and without IPv6.
"""

from __future__ import annotations

import random
from typing import Any

import networkx as nx
import yaml

TENANT_IIDS = (42, 7, 1001)
MANAGEMENT_SUBNET = "198.19.0.0/24"
IPV6_SHARE = 0.75  # with ipv6_hosts: the share of hosts that are dual-stack (the others IPv4 only)


def generate(seed: int, *, max_sites: int = 8, max_routers: int = 3, max_tenants: int = 3,
             max_hosts: int = 2, multihome_share: float = 0.3, ipv6_hosts: bool = False,
             management_subnet: str = MANAGEMENT_SUBNET, controller_port: int = 6653) -> dict[str, Any]:
    """A topology document (the schema of lisp_ryu/lab/topology_load.py) for `seed`."""
    rng = random.Random(seed)
    rng6 = random.Random(f"{seed}/ipv6")  # IPv6 choices only: the IPv4 topology is the seed's either way
    n_sites = rng.randint(2, max(2, max_sites))
    n_routers = rng.randint(1, max(1, max_routers))
    routers = [f"r{i + 1}" for i in range(n_routers)]
    shape = "ring" if n_routers >= 3 and rng.random() < 0.5 else "tree"
    if shape == "ring":
        graph = nx.cycle_graph(n_routers)
    else:
        graph = nx.random_labeled_tree(n_routers, seed=rng.randrange(1 << 30)) if n_routers > 1 else nx.empty_graph(1)

    subnets = iter(range(1, 250))
    links: list[dict[str, str]] = [{"r1": "198.18.0.1/24", "ms": "198.18.0.2/24"}]
    for a, b in sorted(tuple(sorted(e)) for e in graph.edges):
        n = next(subnets)
        links.append({routers[a]: f"198.18.{n}.1/24", routers[b]: f"198.18.{n}.2/24"})

    n_tenants = rng.randint(1, max(1, min(max_tenants, len(TENANT_IIDS))))
    iids = list(TENANT_IIDS[:n_tenants])
    where: dict[int, list[int]] = {}  # iid -> the sites (indices) where it has EIDs
    for iid in iids:
        k = rng.randint(2, n_sites)
        where[iid] = sorted(rng.sample(range(n_sites), k))

    sites, hosts = [], []
    for i in range(n_sites):
        name = f"s{i + 1}"
        homes = [rng.choice(routers)]
        if rng.random() < multihome_share:
            others = [r for r in routers if r != homes[0]]
            homes.append(rng.choice(others) if others else homes[0])
        rlocs = []
        for router in homes:
            n = next(subnets)
            links.append({router: f"198.18.{n}.1/24", name: f"198.18.{n}.2/24"})
            rlocs.append({"address": f"198.18.{n}.2", "priority": 1, "weight": 100 // len(homes)})
        prefix = f"10.{i + 1}.0.0/16"
        tenants_here = [iid for iid in iids if i in where[iid]]
        if not tenants_here:  # every site has EIDs: give it the first tenant
            tenants_here = [iids[0]]
            where[iids[0]].append(i)
        eid_prefixes = [{"prefix": prefix, "iid": iid, "gateway": f"10.{i + 1}.0.1"} for iid in tenants_here]
        if ipv6_hosts:
            eid_prefixes += [{"prefix": f"fd00:{i + 1:x}::/64", "iid": iid, "gateway": f"fd00:{i + 1:x}::1"}
                             for iid in tenants_here]
        sites.append({"name": name, "rlocs": rlocs, "eid_prefixes": eid_prefixes})
        for t, iid in enumerate(iids):
            if iid not in tenants_here:
                continue
            for k in range(rng.randint(1, max(1, max_hosts))):
                host = {"name": f"h{i + 1}{'abc'[t]}{k}", "site": name,
                        "address": f"10.{i + 1}.0.{10 + k}/16", "iid": iid,
                        "mac": f"02:4c:68:{t + 1:02x}:{i + 1:02x}:{10 + k:02x}"}
                if ipv6_hosts and rng6.random() < IPV6_SHARE:
                    host["address6"] = f"fd00:{i + 1:x}::{10 + k}/64"
                hosts.append(host)

    net = management_subnet.split("/")[0].rsplit(".", 1)[0]
    return {
        "name": f"random-{seed}",
        "management": {"subnet": management_subnet, "controller": f"{net}.1", "port": controller_port},
        "map_server": {"name": "ms", "address": "198.18.0.2", "key": "lisp-lab-key"},
        "underlay": {"routers": [{"name": r} for r in routers], "links": links},
        "sites": sites,
        "hosts": hosts,
    }


def describe(doc: dict[str, Any]) -> str:
    """One line: what a generated topology holds."""
    routers = len(doc["underlay"]["routers"])
    multihomed = sum(1 for s in doc["sites"] if len(s["rlocs"]) > 1)
    iids = sorted({h["iid"] for h in doc["hosts"]})
    dual = sum(1 for h in doc["hosts"] if "address6" in h)
    return (f"{doc['name']}: {len(doc['sites'])} sites ({multihomed} multihomed), {routers} routers, "
            f"tenants {iids}, {len(doc['hosts'])} hosts" + (f" ({dual} dual-stack)" if dual else ""))


def dump(doc: dict[str, Any]) -> str:
    return f"# {describe(doc)}\n# generated by lisp_ryu/lab/topology_random.py\n" + yaml.safe_dump(doc, sort_keys=False)
