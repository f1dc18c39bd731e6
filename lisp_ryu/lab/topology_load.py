"""Reading a lab topology file: YAML -> validated `topology.Topology`, errors naming the field.

Loading is pure: the only I/O is reading the file.  Fields are read with the
shared readers of `lisp_ryu.schema` (IPv4 only; integers may be written as
strings like "0x10"); the cross-checks below make the lab buildable (links
join existing nodes, RLOCs are link ends, names, addresses and MACs are unique).

Schema (every key not listed is an error naming its path)::

    name: two-dc                       # lab name, for logs
    management:                        # controller network (a bridge in the root namespace)
      subnet: 198.19.0.0/24
      controller: 198.19.0.1           # the bridge's address; sites connect tcp:ADDR:PORT
      port: 6653                       # optional, default 6653
    map_server:                        # optional
      name: ms                         # its own namespace, attached by an underlay link
      address: 198.18.0.2              # must be its end of a link
      key: lisp-lab-key                # default authentication key of every site
      # or instead of name/address a cluster (lab/cluster.py): nodes: [{name: ms1, address: ..}, ..]
    underlay:
      routers: [{name: core}]          # namespaces that forward IPv4
      links:                           # each link: exactly two {node: address/len}
        - {core: 198.18.1.1/24, dc1: 198.18.1.2/24}
    sites:
      - name: dc1
        dpid: 1                        # optional, default: position + 1
        key: secret                    # optional, default map_server.key
        rlocs:                         # each must be the site's end of one link
          - {address: 198.18.1.2, priority: 1, weight: 100}
        eid_prefixes:
          - {prefix: 10.1.0.0/16, iid: 42, gateway: 10.1.0.1, gateway_mac: 02:4c:67:01:00:01}
    hosts:
      - {name: h1, site: dc1, address: 10.1.0.10/16, gateway: 10.1.0.1, iid: 42, mac: ...}

Dual-stack hosts: a site may list IPv6 EID prefixes beside its IPv4 ones
(`{prefix: fd00:1::/64, iid: 42, gateway: fd00:1::1}`), and a host then
takes `address6: fd00:1::10/64` (in an IPv6 EID prefix of its site, same
instance-ID) and optionally `gateway6` (default: that prefix's gateway).
The underlay, RLOCs and management stay IPv4; a PxTR attracts IPv4 only.
    internet_hosts:                    # optional: non-LISP hosts, each on its own veth to a router
      - {name: inet, router: core, address: 203.0.113.10/24, gateway: 203.0.113.1, mac: ...}

A proxy xTR (RFC 6832) is a site with `role: pxtr` (default `xtr`): an OVS
switch like the others, with RLOCs on the underlay, no EID prefixes and no
hosts, and a `native:` link from its br-int to a router::

      - name: px
        role: pxtr
        rlocs: [{address: 198.18.9.2}]
        native:
          router: core                 # the router at the other end
          address: 198.18.19.2/24      # the PxTR's address there (answered by flows)
          next_hop: 198.18.19.1        # the router's address there
          iid: 42                      # optional if all EID prefixes share one instance-ID

At most one PxTR per lab.  Routers reach the internet hosts' subnets, and
route every LISP site's EID prefix to the PxTR's native address (the
proxy-ITR attracts the EID space); LISP sites get no native routes (they
reach non-LISP hosts only through the PxTR as their PETR).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import networkx as nx

from lisp_ryu import schema
from lisp_ryu.lab import topology_routes
from lisp_ryu.lab.topology import (
    DEFAULT_CONTROLLER_PORT,
    HOST_IFNAME,
    MAX_HOSTS_PER_SITE,
    host_ofport,
    MGMT_IFNAME,
    ROLES,
    TUNNEL_PORT_NAME,
    EidPrefix,
    Host,
    InternetHost,
    Link,
    LinkEnd,
    Management,
    MapServer,
    MapServerNode,
    Native,
    Rloc,
    Router,
    Site,
    Topology,
    TopologyError,
    derived_mac,
)
from lisp_ryu.schema import InputError
from lisp_ryu.wire import MAX_IID

NAME_MAX = 10  # leaves room for the lab prefix and "m-" in a 15-character ifname
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*$")
_RESERVED = {"lo", HOST_IFNAME, MGMT_IFNAME, TUNNEL_PORT_NAME, "mgmt"}


def load(path: str | Path) -> Topology:
    """Read and validate a topology file; raise TopologyError naming the bad field."""
    try:  # bytes, decoded and parsed with the limits of the shared reader
        return _topology(schema.load_yaml(path), str(path))
    except InputError as exc:
        raise TopologyError(str(path), exc.path, exc.problem) from None


def loads(text: str, source: str = "<topology>") -> Topology:
    try:
        return _topology(schema.parse_yaml(text, source), source)
    except InputError as exc:
        raise TopologyError(source, exc.path, exc.problem) from None


# --------------------------------------------------------------------------- readers


def _mapping(value: Any, path: str, required: set[str], optional: set[str]) -> dict:
    """The mapping at `path` after checking its keys (unknown ones first, then missing ones)."""
    return schema.Node(value, path).expect(required, optional).value


def _name(value: Any, path: str) -> str:
    """A node or host name: it becomes a namespace and part of interface names."""
    if not isinstance(value, str) or not _NAME_RE.match(value) or len(value) > NAME_MAX:
        raise InputError(
            path,
            f"{schema.show(value)} is not a valid name (lower-case letters and digits, "
            f"starting with a letter, at most {NAME_MAX} characters)",
        )
    if value in _RESERVED:
        raise InputError(path, f"{schema.show(value)} is reserved for a lab interface name")
    return value


def _integer(value: Any, path: str, lo: int, hi: int) -> int:
    return schema.integer(value, path, lo, hi, from_string=True)


def _ipv4(value: Any, path: str) -> ipaddress.IPv4Address:
    return schema.address(value, path, version=4)  # type: ignore[return-value]


def _network(value: Any, path: str) -> ipaddress.IPv4Network:
    return schema.prefix(value, path, version=4)  # type: ignore[return-value]


def _mac(value: Any, path: str) -> str:
    return schema.mac(value, path, unicast=True)


# --------------------------------------------------------------------------- sections


def _topology(doc: Any, source: str) -> Topology:
    if doc is None:
        raise InputError("", "the file is empty")
    m = _mapping(
        doc, "", {"name", "management", "underlay", "sites", "hosts"}, {"map_server", "internet_hosts"}
    )
    name = schema.string(m["name"], "name")
    management = _management(m["management"], "management")
    ms = _map_server(m["map_server"], "map_server") if "map_server" in m else None  # or a cluster
    u = _mapping(m["underlay"], "underlay", {"links"}, {"routers"})
    routers = schema.seq(u.get("routers", []), "underlay.routers", _router)
    router_names = [r.name for r in routers]
    sites = schema.seq(m["sites"], "sites", lambda v, p: _site(v, p, ms, router_names), min_len=1)
    nodes = _node_kinds([s.name for s in sites], routers, ms, m)
    links = _links(u["links"], "underlay.links", nodes)
    for i, node in enumerate(ms.all_nodes if ms else ()):
        if not any(link.end(node.name).interface.ip == node.address for link in links if node.name in link.nodes):
            raise InputError(f"map_server.nodes[{i}].address" if ms.clustered else "map_server.address",
                             f"{node.address} is not its end of any underlay link")
    _check_management(management, sites, links)
    sites = _pxtr(sites)
    hosts = _hosts(m["hosts"], "hosts", sites)
    internet_hosts = schema.seq(m.get("internet_hosts", []), "internet_hosts",
                              lambda v, p: _internet_host(v, p, router_names))
    _check_sites(sites, links, nodes)
    _check_native(management, sites, links, internet_hosts)
    _check_macs(sites, hosts, links, hosts_path="hosts", internet_hosts=internet_hosts)
    routes = topology_routes.routes(nodes, links, sites, ms) + topology_routes.native_routes(nodes, links, sites, internet_hosts)
    return Topology(
        name=name,
        source=source,
        management=management,
        map_server=ms,
        routers=tuple(routers),
        links=tuple(links),
        sites=tuple(sites),
        hosts=tuple(hosts),
        routes=routes,
        internet_hosts=tuple(internet_hosts),
    )


def _management(value: Any, path: str) -> Management:
    m = _mapping(value, path, {"subnet", "controller"}, {"port"})
    subnet = _network(m["subnet"], f"{path}.subnet")
    controller = _ipv4(m["controller"], f"{path}.controller")
    if controller not in subnet or controller in (subnet.network_address, subnet.broadcast_address):
        raise InputError(f"{path}.controller", f"{controller} is not a host address of {subnet}")
    port = _integer(m.get("port", DEFAULT_CONTROLLER_PORT), f"{path}.port", 1, 65535)
    return Management(subnet=subnet, controller=controller, port=port)


def _map_server(value: Any, path: str) -> MapServer:
    if isinstance(value, dict) and "nodes" in value:  # a cluster; _node_kinds checks names unique
        m = _mapping(value, path, {"key", "nodes"}, set())
        nodes = schema.seq(m["nodes"], f"{path}.nodes", lambda v, p: MapServerNode(
            name=_name(_mapping(v, p, {"name", "address"}, set())["name"], f"{p}.name"),
            address=_ipv4(v["address"], f"{p}.address")), min_len=2)
        return MapServer(name=nodes[0].name, address=nodes[0].address,
                         key=schema.string(m["key"], f"{path}.key"), nodes=tuple(nodes))
    m = _mapping(value, path, {"name", "address", "key"}, set())
    return MapServer(name=_name(m["name"], f"{path}.name"), address=_ipv4(m["address"], f"{path}.address"),
                     key=schema.string(m["key"], f"{path}.key"))


def _router(value: Any, path: str) -> Router:
    m = _mapping(value, path, {"name"}, set())
    return Router(name=_name(m["name"], f"{path}.name"))


def _node_kinds(site_names, routers, ms, doc) -> dict[str, str]:
    """Every underlay node's kind; names are unique across sites, hosts,
    routers and the Map-Server because each becomes a namespace."""
    nodes: dict[str, str] = {}
    seen: dict[str, str] = {}
    entries = [(n, "site", f"sites[{i}].name") for i, n in enumerate(site_names)]
    entries += [(r.name, "router", f"underlay.routers[{i}].name") for i, r in enumerate(routers)]
    if ms:
        entries += [(n.name, "map-server", f"map_server.nodes[{i}].name" if ms.clustered else "map_server.name")
                    for i, n in enumerate(ms.all_nodes)]
    for section in ("hosts", "internet_hosts"):
        hosts = doc.get(section) if isinstance(doc.get(section), list) else []
        for i, h in enumerate(hosts):
            if isinstance(h, dict) and isinstance(h.get("name"), str):
                entries.append((h["name"], "host", f"{section}[{i}].name"))
    for name, kind, path in entries:
        if name in seen:
            raise InputError(path, f"name {schema.show(name)} is already used by {seen[name]}")
        seen[name] = path
        if kind != "host":
            nodes[name] = kind
    return nodes


def _links(value: Any, path: str, nodes: dict[str, str]) -> list[Link]:
    ifnames: dict[str, set[str]] = {}
    addresses: dict[ipaddress.IPv4Address, str] = {}

    def link(v: Any, p: str) -> Link:
        if not isinstance(v, dict) or len(v) != 2:
            raise InputError(p, "a link is a mapping of exactly two {node: address/len}")
        ends = []
        for node, addr in v.items():
            if node not in nodes:
                raise InputError(
                    schema.join(p, str(node)),
                    f"unknown node {schema.show(node)} (links join sites, routers and the map_server)",
                )
            iface = schema.interface(addr, schema.join(p, node))
            if iface.ip in addresses:
                raise InputError(schema.join(p, node), f"{iface.ip} is already used at {addresses[iface.ip]}")
            addresses[iface.ip] = schema.join(p, node)
            ends.append((node, iface))
        (na, ia), (nb, ib) = ends
        if na == nb:
            raise InputError(p, f"a link from {schema.show(na)} to itself")
        if ia.network != ib.network:
            raise InputError(p, f"{ia} and {ib} are not in the same subnet")
        made = []
        for (node, iface), (peer, _) in ((ends[0], ends[1]), (ends[1], ends[0])):
            used = ifnames.setdefault(node, set())
            ifname = peer
            k = 1
            while ifname in used:
                ifname = f"{peer}-{k}"
                k += 1
            used.add(ifname)
            kind = 0x76 if nodes[node] == "site" else 0x6C
            made.append(LinkEnd(node=node, interface=iface, ifname=ifname, mac=derived_mac(kind, iface.ip)))
        return Link(index=int(p.rsplit("[", 1)[1][:-1]), a=made[0], b=made[1])

    links = schema.seq(value, path, link, min_len=1)
    for i, x in enumerate(links):
        for y in links[:i]:
            if x.subnet.overlaps(y.subnet):
                raise InputError(f"{path}[{i}]", f"subnet {x.subnet} overlaps {y} ({path}[{y.index}])")
    g = nx.MultiGraph()
    g.add_nodes_from(nodes)
    g.add_edges_from((link.a.node, link.b.node) for link in links)
    if not nx.is_connected(g):
        parts = sorted(sorted(c) for c in nx.connected_components(g))
        raise InputError(path, "the underlay is not connected: " + " | ".join(", ".join(c) for c in parts))
    return links


def _site(value: Any, path: str, ms: MapServer | None, routers: list[str]) -> Site:
    role = value.get("role", "xtr") if isinstance(value, dict) else "xtr"
    if role not in ROLES:
        raise InputError(f"{path}.role", f"{schema.show(role)} is not a role ({', '.join(ROLES)})")
    if role == "pxtr":
        # A PxTR announces the other sites' EIDs and owns none: nothing to register.
        m = _mapping(value, path, {"name", "rlocs", "role", "native"}, {"dpid", "key"})
    else:
        if isinstance(value, dict) and "native" in value:
            raise InputError(f"{path}.native", "only a PxTR site (role: pxtr) has a native link")
        m = _mapping(value, path, {"name", "rlocs", "eid_prefixes"}, {"dpid", "key", "role"})
    index = int(path.rsplit("[", 1)[1][:-1])
    name = _name(m["name"], f"{path}.name")
    dpid = _integer(m.get("dpid", index + 1), f"{path}.dpid", 1, (1 << 64) - 1)
    key = schema.string(m["key"], f"{path}.key") if "key" in m else (ms.key if ms else None)
    rlocs = schema.seq(m["rlocs"], f"{path}.rlocs", _rloc, min_len=1)
    seen = set()
    for i, r in enumerate(rlocs):
        if r.address in seen:
            raise InputError(f"{path}.rlocs[{i}].address", f"{r.address} is listed twice")
        seen.add(r.address)
    if role == "pxtr":
        native = _native(m["native"], f"{path}.native", name, routers)
        return Site(name=name, dpid=dpid, key=key, rlocs=tuple(rlocs), eid_prefixes=(), role=role, native=native)
    prefixes = schema.seq(m["eid_prefixes"], f"{path}.eid_prefixes", _eid_prefix, min_len=1)
    for i, p in enumerate(prefixes):
        for j, q in enumerate(prefixes[:i]):
            if p.iid == q.iid and p.prefix.overlaps(q.prefix):
                raise InputError(
                    f"{path}.eid_prefixes[{i}].prefix",
                    f"{p.prefix} overlaps {q.prefix} (eid_prefixes[{j}]) in instance-ID {p.iid}",
                )
    return Site(name=name, dpid=dpid, key=key, rlocs=tuple(rlocs), eid_prefixes=tuple(prefixes))


def _native(value: Any, path: str, site: str, routers: list[str]) -> Native:
    m = _mapping(value, path, {"router", "address", "next_hop"}, {"iid"})
    router = m["router"]
    if router not in routers:
        raise InputError(f"{path}.router", f"unknown router {schema.show(router)} (routers: {', '.join(routers) or 'none'})")
    iface = schema.interface(m["address"], f"{path}.address")
    next_hop = _ipv4(m["next_hop"], f"{path}.next_hop")
    if next_hop not in iface.network or next_hop == iface.ip or next_hop in (
            iface.network.network_address, iface.network.broadcast_address):
        raise InputError(f"{path}.next_hop", f"{next_hop} is not another host address of {iface.network}")
    iid = _integer(m["iid"], f"{path}.iid", 0, MAX_IID) if "iid" in m else None
    return Native(router=router, interface=iface, next_hop=next_hop, next_hop_mac=derived_mac(0x6C, next_hop),
                  mac=derived_mac(0x76, iface.ip), ifname=f"{router}-n", router_ifname=f"{site}-n", iid=iid)


def _pxtr(sites: list[Site]) -> list[Site]:
    """At most one PxTR; it attracts every LISP site's EID prefixes of its instance-ID."""
    out = []
    first = None
    for i, site in enumerate(sites):
        if not site.is_pxtr:
            out.append(site)
            continue
        if first is not None:
            raise InputError(f"sites[{i}].role", f"only one PxTR per lab (sites[{first}] is one)")
        first = i
        iids = sorted({e.iid for s in sites if not s.is_pxtr for e in s.eid_prefixes})
        iid = site.native.iid
        if iid is None:
            if len(iids) != 1:
                raise InputError(f"sites[{i}].native.iid", "the LISP sites use instance-IDs "
                                 f"{', '.join(map(str, iids)) or '(none)'}: say which one the PxTR serves")
            iid = iids[0]
        elif iid not in iids:
            raise InputError(f"sites[{i}].native.iid", f"no LISP site has EID prefixes in instance-ID {iid}")
        prefixes = tuple(e.prefix for s in sites if not s.is_pxtr for e in s.eid_prefixes
                         if e.iid == iid and e.prefix.version == 4)  # the routers route IPv4 only
        out.append(replace(site, native=replace(site.native, iid=iid, prefixes=prefixes)))
    return out


def _internet_host(value: Any, path: str, routers: list[str]) -> InternetHost:
    m = _mapping(value, path, {"name", "router", "address", "gateway"}, {"mac"})
    name = _name(m["name"], f"{path}.name")
    router = m["router"]
    if router not in routers:
        raise InputError(f"{path}.router", f"unknown router {schema.show(router)} (routers: {', '.join(routers) or 'none'})")
    iface = schema.interface(m["address"], f"{path}.address")
    gateway = _ipv4(m["gateway"], f"{path}.gateway")
    if gateway not in iface.network or gateway == iface.ip or gateway in (
            iface.network.network_address, iface.network.broadcast_address):
        raise InputError(f"{path}.gateway", f"{gateway} is not another host address of {iface.network}")
    mac = _mac(m["mac"], f"{path}.mac") if "mac" in m else derived_mac(0x68, iface.ip)
    return InternetHost(name=name, router=router, interface=iface, gateway=gateway, mac=mac,
                        gateway_mac=derived_mac(0x6C, gateway))


def _rloc(value: Any, path: str) -> Rloc:
    m = _mapping(value, path, {"address"}, {"priority", "weight"})
    return Rloc(
        address=_ipv4(m["address"], f"{path}.address"),
        priority=_integer(m.get("priority", 1), f"{path}.priority", 0, 255),
        weight=_integer(m.get("weight", 100), f"{path}.weight", 0, 255),
    )


def _eid_prefix(value: Any, path: str) -> EidPrefix:
    m = _mapping(value, path, {"prefix", "iid", "gateway"}, {"gateway_mac"})
    raw = m["prefix"]
    if isinstance(raw, str) and ":" in raw:  # IPv6, for dual-stack hosts
        prefix = schema.prefix(raw, f"{path}.prefix")
    else:
        prefix = _network(raw, f"{path}.prefix")
    gateway = schema.address(m["gateway"], f"{path}.gateway", version=4 if prefix.version == 4 else None)
    if gateway not in prefix:
        raise InputError(f"{path}.gateway", f"{gateway} is not inside {prefix}")
    mac = _mac(m["gateway_mac"], f"{path}.gateway_mac") if "gateway_mac" in m else derived_mac(0x67, gateway)
    return EidPrefix(
        prefix=prefix,
        iid=_integer(m["iid"], f"{path}.iid", 0, MAX_IID),
        gateway=gateway,
        gateway_mac=mac,
    )


def _hosts(value: Any, path: str, sites: list[Site]) -> list[Host]:
    by_name = {s.name: s for s in sites}
    ports: dict[str, int] = {}
    taken: dict[tuple[int, ipaddress.IPv4Address], str] = {}

    def host(v: Any, p: str) -> Host:
        m = _mapping(v, p, {"name", "site", "address"}, {"gateway", "iid", "mac", "address6", "gateway6"})
        name = _name(m["name"], f"{p}.name")
        site = by_name.get(m["site"])
        if site is None:
            raise InputError(f"{p}.site", f"unknown site {schema.show(m['site'])} (sites: {', '.join(by_name)})")
        if site.is_pxtr:
            raise InputError(f"{p}.site", f"{site.name} is a PxTR: hosts belong to LISP sites "
                             "(non-LISP hosts go in internet_hosts)")
        iface = schema.interface(m["address"], f"{p}.address")
        if "iid" in m:
            iid = _integer(m["iid"], f"{p}.iid", 0, MAX_IID)
            candidates = [e for e in site.eid_prefixes if e.iid == iid and iface.ip in e.prefix]
        else:
            candidates = [e for e in site.eid_prefixes if iface.ip in e.prefix]
            if len(candidates) > 1:
                raise InputError(f"{p}.iid", f"{iface.ip} is in several EID prefixes of {site.name}: say which instance-ID")
        if not candidates:
            own = ", ".join(f"{e.prefix} iid {e.iid}" for e in site.eid_prefixes)
            raise InputError(f"{p}.address", f"{iface.ip} is not inside an EID prefix of site {site.name} ({own})")
        eid = candidates[0]
        gateway = _ipv4(m["gateway"], f"{p}.gateway") if "gateway" in m else eid.gateway
        if gateway != eid.gateway:
            raise InputError(f"{p}.gateway", f"{gateway} is not the gateway of {eid.prefix} at {site.name} ({eid.gateway})")
        if gateway not in iface.network or gateway == iface.ip:
            raise InputError(f"{p}.address", f"gateway {gateway} is not on the host's subnet {iface.network}")
        if (eid.iid, iface.ip) in taken:
            raise InputError(f"{p}.address", f"{iface.ip} in instance-ID {eid.iid} is already used by {taken[eid.iid, iface.ip]}")
        taken[eid.iid, iface.ip] = name
        ports[site.name] = ports.get(site.name, 0) + 1
        if ports[site.name] > MAX_HOSTS_PER_SITE:
            raise InputError(p, f"site {site.name} has more than {MAX_HOSTS_PER_SITE} hosts")
        mac = _mac(m["mac"], f"{p}.mac") if "mac" in m else derived_mac(0x68, iface.ip)
        iface6, gateway6 = _address6(m, p, site, eid.iid, name, taken)
        return Host(name=name, site=site.name, interface=iface, gateway=gateway, iid=eid.iid, mac=mac,
                    ofport=host_ofport(ports[site.name]), interface6=iface6, gateway6=gateway6)

    return schema.seq(value, path, host)

def _address6(m: dict, p: str, site: Site, iid: int, name: str,
              taken: dict) -> tuple[ipaddress.IPv6Interface | None, ipaddress.IPv6Address | None]:
    """A dual-stack host's IPv6 address and gateway (both None without `address6`)."""
    if "address6" not in m:
        if "gateway6" in m:
            raise InputError(f"{p}.gateway6", "needs address6")
        return None, None
    raw = m["address6"]
    try:
        iface6 = ipaddress.IPv6Interface(raw) if isinstance(raw, str) and "/" in raw else None
    except ValueError:
        iface6 = None
    if iface6 is None:
        raise InputError(f"{p}.address6", f"{raw!r} is not an IPv6 ADDRESS/LENGTH")
    if iface6.ip == iface6.network.network_address and iface6.network.prefixlen < 127:
        raise InputError(f"{p}.address6", f"{raw} is the subnet-router anycast address of {iface6.network}")
    eid6 = next((e for e in site.eid_prefixes if e.iid == iid and iface6.ip in e.prefix), None)
    if eid6 is None:
        own = ", ".join(f"{e.prefix}" for e in site.eid_prefixes if e.iid == iid and e.prefix.version == 6)
        raise InputError(f"{p}.address6", f"{iface6.ip} is not inside an IPv6 EID prefix of site {site.name} "
                         f"in instance-ID {iid} ({own or 'it has none'})")
    gateway6 = schema.address(m["gateway6"], f"{p}.gateway6", version=6) if "gateway6" in m else eid6.gateway
    if gateway6 != eid6.gateway:
        raise InputError(f"{p}.gateway6", f"{gateway6} is not the gateway of {eid6.prefix} at {site.name} ({eid6.gateway})")
    if gateway6 not in iface6.network or gateway6 == iface6.ip:
        raise InputError(f"{p}.address6", f"gateway {gateway6} is not on the host's subnet {iface6.network}")
    if (iid, iface6.ip) in taken:
        raise InputError(f"{p}.address6", f"{iface6.ip} in instance-ID {iid} is already used by {taken[iid, iface6.ip]}")
    taken[iid, iface6.ip] = name
    return iface6, gateway6  # type: ignore[return-value]


# --------------------------------------------------------------------------- cross-checks


def _check_sites(sites: list[Site], links: list[Link], nodes: dict[str, str]) -> None:
    dpids: dict[int, str] = {}
    for i, site in enumerate(sites):
        if site.dpid in dpids:
            raise InputError(f"sites[{i}].dpid", f"datapath-id {site.dpid:#x} is already used by {dpids[site.dpid]}")
        dpids[site.dpid] = site.name
        ends = {link.end(site.name).interface.ip: link for link in links if site.name in (link.a.node, link.b.node)}
        for j, rloc in enumerate(site.rlocs):
            if rloc.address not in ends:
                raise InputError(
                    f"sites[{i}].rlocs[{j}].address",
                    f"{rloc.address} is not {site.name}'s end of any underlay link",
                )
        listed = {r.address for r in site.rlocs}
        for addr, link in ends.items():
            if addr not in listed:
                raise InputError(f"underlay.links[{link.index}].{site.name}", f"{addr} must also be listed in sites[{i}].rlocs")
        if not ends:
            raise InputError(f"sites[{i}]", f"site {site.name} has no underlay link")
    # EID prefixes of different sites must not overlap within an instance-ID:
    # a static lab has no more-specifics to tell them apart.
    for i, site in enumerate(sites):
        for j, e in enumerate(site.eid_prefixes):
            for other in sites[:i]:
                for f in other.eid_prefixes:
                    if e.iid == f.iid and e.prefix.overlaps(f.prefix):
                        raise InputError(
                            f"sites[{i}].eid_prefixes[{j}].prefix",
                            f"{e.prefix} overlaps {f.prefix} of site {other.name} in instance-ID {e.iid}",
                        )


def _check_native(mgmt: Management, sites: list[Site], links: list[Link],
                 internet_hosts: list[InternetHost]) -> None:
    """The non-LISP subnets (native link, internet hosts) overlap nothing else,
    and every address on them is used once."""
    taken: list[tuple[ipaddress.IPv4Network, str]] = [(mgmt.subnet, "the management subnet")]
    taken += [(link.subnet, f"underlay link {link}") for link in links]
    taken += [(e.prefix, f"EID prefix {e.prefix} of {s.name}") for s in sites for e in s.eid_prefixes]
    mine = [(f"sites[{i}].native.address", s.native.subnet, f"{s.name}'s native link")
            for i, s in enumerate(sites) if s.native]
    mine += [(f"internet_hosts[{i}].address", h.subnet, f"internet host {h.name}'s subnet")
             for i, h in enumerate(internet_hosts)]
    for path, net, what in mine:
        for other, other_what in taken:
            if net.overlaps(other):
                raise InputError(path, f"{net} overlaps {other_what}")
        taken.append((net, what))


def _check_macs(sites: list[Site], hosts: list[Host], links: list[Link], hosts_path: str,
               internet_hosts: list[InternetHost] = ()) -> None:
    """MACs are unique lab-wide; only a gateway MAC may repeat (an anycast
    gateway shared by several sites keeps a moved host's ARP cache valid)."""
    owners: dict[str, tuple[str, str]] = {}

    def claim(mac: str, owner: str, path: str, kind: str) -> None:
        if mac in owners:
            other, other_kind = owners[mac]
            if kind == other_kind == "gateway":
                return
            raise InputError(path, f"MAC {mac} is already used by {other} (set a `mac`/`gateway_mac` explicitly)")
        owners[mac] = (owner, kind)

    for i, site in enumerate(sites):
        for j, e in enumerate(site.eid_prefixes):
            claim(e.gateway_mac, f"gateway {e.gateway} of {site.name}", f"sites[{i}].eid_prefixes[{j}].gateway_mac", "gateway")
        for j, r in enumerate(site.rlocs):
            claim(derived_mac(0x72, r.address), f"RLOC {r.address}", f"sites[{i}].rlocs[{j}].address", "rloc")
    for i, h in enumerate(hosts):
        claim(h.mac, f"host {h.name}", f"{hosts_path}[{i}].mac", "host")
    for link in links:
        for end in (link.a, link.b):
            claim(end.mac, f"{end.node}'s end of link {link}", f"underlay.links[{link.index}].{end.node}", "link")
    for i, site in enumerate(sites):
        if site.native:
            claim(site.native.mac, f"{site.name}'s native port", f"sites[{i}].native.address", "link")
            claim(site.native.next_hop_mac, f"{site.native.router}'s end of {site.name}'s native link",
                  f"sites[{i}].native.next_hop", "link")
    for i, h in enumerate(internet_hosts):
        claim(h.mac, f"internet host {h.name}", f"internet_hosts[{i}].mac", "host")
        claim(h.gateway_mac, f"{h.router}'s end of {h.name}'s veth", f"internet_hosts[{i}].gateway", "link")


def _check_management(mgmt: Management, sites: list[Site], links: list[Link]) -> None:
    if mgmt.subnet.num_addresses - 3 < len(sites):
        raise InputError("management.subnet", f"{mgmt.subnet} is too small for {len(sites)} sites and the controller")
    for link in links:
        if link.subnet.overlaps(mgmt.subnet):
            raise InputError("management.subnet", f"{mgmt.subnet} overlaps underlay link {link}")
    for i, site in enumerate(sites):
        for j, e in enumerate(site.eid_prefixes):
            for net in [mgmt.subnet, *(link.subnet for link in links)]:
                if e.prefix.overlaps(net):
                    raise InputError(f"sites[{i}].eid_prefixes[{j}].prefix", f"{e.prefix} overlaps the underlay/management subnet {net}")
