"""The lab underlay's static routes, derived from the topology graph when it is loaded.

Only routers forward: every node reaches every underlay subnet it is not on
through the fewest routers, and routers also reach the non-LISP side
(internet hosts, the PxTR's native link and the EID space it attracts).
Apart from the model because it is graph search, not reading input; it raises
`InputError` when a site cannot reach what it must (the loader names the file).
"""

from __future__ import annotations

import ipaddress

import networkx as nx

from lisp_ryu.lab.topology import InternetHost, Link, MapServer, Route, Site, rloc_bridge
from lisp_ryu.schema import InputError


def routes(nodes: dict[str, str], links: list[Link], sites: list[Site], ms: MapServer | None) -> tuple[Route, ...]:
    """Static routes from the graph: every node reaches every link subnet it
    is not on through the fewest routers (only routers forward; ties go to
    the link listed first).  Then check that every site reaches the
    Map-Server and at least one RLOC of every other site."""
    g = nx.MultiGraph()
    g.add_nodes_from(nodes)
    for link in links:
        g.add_edge(link.a.node, link.b.node, key=link.index, link=link)
    routers = {n for n, kind in nodes.items() if kind == "router"}
    # A site's link end is a port of its br-phy bridge: routes leave by the
    # bridge's internal port, where the RLOC is.
    bridges = {
        (site.name, r.address): rloc_bridge(i)
        for site in sites
        for i, r in enumerate(site.rlocs)
    }
    routes: list[Route] = []
    reach: dict[str, set[ipaddress.IPv4Network]] = {}
    for node in nodes:
        transit = g.subgraph(routers | {node})
        paths = nx.single_source_shortest_path(transit, node)
        connected = {link.subnet for link in links if node in (link.a.node, link.b.node)}
        reach[node] = set(connected)
        for link in links:
            if link.subnet in connected:
                continue
            best = None
            for end in (link.a, link.b):
                if end.node in routers and end.node in paths:
                    path = paths[end.node]
                    if best is None or len(path) < len(best):
                        best = path
            if best is None:
                continue
            first_hop = best[1]
            edge = min(g[node][first_hop].values(), key=lambda d: d["link"].index)["link"]
            routes.append(
                Route(
                    node=node,
                    destination=link.subnet,
                    via=edge.peer(node).interface.ip,
                    ifname=bridges.get((node, edge.end(node).interface.ip), edge.end(node).ifname),
                )
            )
            reach[node].add(link.subnet)
    for i, site in enumerate(sites):
        for node in (ms.all_nodes if ms else ()):
            if not any(node.address in net for net in reach[site.name]):
                raise InputError(f"sites[{i}]", f"site {site.name} cannot reach the Map-Server {node.address} "
                                 "through the underlay routers")
        for other in sites:
            if other is site:
                continue
            if not any(r.address in net for r in other.rlocs for net in reach[site.name]):
                raise InputError(f"sites[{i}]", f"site {site.name} cannot reach any RLOC of site {other.name}")
    return tuple(routes)


def native_routes(nodes: dict[str, str], links: list[Link], sites: list[Site],
                  internet_hosts: list[InternetHost]) -> tuple[Route, ...]:
    """The routers' non-LISP routes: every internet host's subnet and the
    PxTR's native subnet through the fewest routers, and the EID space
    (what the proxy-ITR attracts) to the PxTR's native address.  Only
    routers get them: LISP sites reach non-LISP hosts through their PETR."""
    routers = [n for n, kind in nodes.items() if kind == "router"]
    g = nx.MultiGraph()
    g.add_nodes_from(routers)
    for link in links:
        if link.a.node in routers and link.b.node in routers:
            g.add_edge(link.a.node, link.b.node, key=link.index, link=link)
    # (destination, the router it is attached to, via and dev there: None when connected)
    attached: list[tuple[ipaddress.IPv4Network, str, ipaddress.IPv4Address | None, str | None]]
    attached = [(h.subnet, h.router, None, None) for h in internet_hosts]
    pxtr = next((s for s in sites if s.native), None)
    if pxtr:
        n = pxtr.native
        attached.append((n.subnet, n.router, None, None))
        attached += [(prefix, n.router, n.interface.ip, n.router_ifname) for prefix in n.prefixes]
        for i, h in enumerate(internet_hosts):
            if n.router not in nx.node_connected_component(g, h.router):
                raise InputError(f"internet_hosts[{i}].router", f"{h.router} cannot reach {n.router} "
                                 f"(where the PxTR {pxtr.name} is) through the underlay routers")
    routes: list[Route] = []
    for router in routers:
        paths = nx.single_source_shortest_path(g, router)
        for destination, at, via, ifname in attached:
            if at == router:
                if via is not None:
                    routes.append(Route(node=router, destination=destination, via=via, ifname=ifname))
                continue
            if at not in paths:
                continue
            edge = min(g[router][paths[at][1]].values(), key=lambda d: d["link"].index)["link"]
            routes.append(Route(node=router, destination=destination, via=edge.peer(router).interface.ip,
                                ifname=edge.end(router).ifname))
    return tuple(routes)
