"""Lab topology files: YAML -> validated frozen dataclasses -> a networkx graph.

A topology names the LISP sites (each an xTR with its RLOCs, EID prefixes and
gateways), the hosts behind them, the underlay (point-to-point links between
sites, core routers and the Map-Server) and the management network the
controller listens on.  Loading is pure: the only I/O is reading the file.
Everything the lab derives from the topology (OpenFlow port numbers, MACs,
datapath-ids, interface names, the routers' static routes) is computed here,
so the lab, the static flows and the controller configuration agree on it.

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

Fixed numbers (documented here because flows and tests depend on them):
  * br-int OpenFlow ports: hosts of a site get 1, 2, ... in file order;
    the LISP-GPE tunnel port `lisp0` is `TUNNEL_OFPORT` (100); a PxTR's
    native link is `NATIVE_OFPORT` (101), named `<router>-n` in the PxTR's
    namespace and `<pxtr>-n` in the router's.
  * br-phy (RLOC i>0: br-phy<i>): the underlay veth is port 1, the RLOC sits
    on the bridge's own internal (LOCAL) port.
  * MACs, unless given: host 02:4c:68:xx:xx:xx, gateway 02:4c:67:xx:xx:xx,
    RLOC (br-phy) 02:4c:72:xx:xx:xx, the OVS-owned underlay veth
    02:4c:76:xx:xx:xx, a router/Map-Server link end 02:4c:6c:xx:xx:xx, where
    xx:xx:xx are the low 24 bits of the interface's IPv4 address.  The same
    rule gives a PxTR's native veth (0x76), the router's ends of the native
    link and of an internet host's veth (0x6c) and internet hosts (0x68).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, TypeVar

import networkx as nx
import yaml

from lisp_ryu.config import ConfigError
from lisp_ryu.wire import MAX_IID

T = TypeVar("T")

TUNNEL_OFPORT = 100
NATIVE_OFPORT = 101
ROLES = ("xtr", "pxtr")
TUNNEL_PORT_NAME = "lisp0"
BR_INT = "br-int"
UPLINK_OFPORT = 1
HOST_IFNAME = "eth0"
MGMT_IFNAME = "mgmt0"
HOST_MTU = 1450
DEFAULT_CONTROLLER_PORT = 6653
MAX_HOSTS_PER_SITE = TUNNEL_OFPORT - 1
NAME_MAX = 10  # leaves room for the lab prefix and "m-" in a 15-character ifname
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_RESERVED = {"lo", HOST_IFNAME, MGMT_IFNAME, TUNNEL_PORT_NAME, "mgmt"}


class TopologyError(ConfigError):
    """The topology file is wrong; names the file and the path of the bad field.

    Same shape and message as `ConfigError` ("file: path: problem"), of which it
    is the lab's kind, so a caller may catch either.
    """


# --------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class Management:
    subnet: ipaddress.IPv4Network
    controller: ipaddress.IPv4Address
    port: int = DEFAULT_CONTROLLER_PORT


@dataclass(frozen=True)
class MapServer:
    name: str
    address: ipaddress.IPv4Address
    key: str


@dataclass(frozen=True)
class Router:
    name: str


@dataclass(frozen=True)
class LinkEnd:
    node: str
    interface: ipaddress.IPv4Interface
    ifname: str  # name of the interface inside the node's namespace
    mac: str


@dataclass(frozen=True)
class Link:
    index: int
    a: LinkEnd
    b: LinkEnd

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self.a.interface.network

    def end(self, node: str) -> LinkEnd:
        return self.a if self.a.node == node else self.b

    def peer(self, node: str) -> LinkEnd:
        return self.b if self.a.node == node else self.a

    def __str__(self) -> str:
        return f"{self.a.node}-{self.b.node} ({self.subnet})"


@dataclass(frozen=True)
class Rloc:
    address: ipaddress.IPv4Address
    priority: int = 1
    weight: int = 100


@dataclass(frozen=True)
class EidPrefix:
    prefix: ipaddress.IPv4Network
    iid: int
    gateway: ipaddress.IPv4Address
    gateway_mac: str


@dataclass(frozen=True)
class Native:
    """A PxTR's link to the non-LISP side: br-int port `NATIVE_OFPORT` <-> a router.

    The PxTR's `interface` address lives only in its flows (they answer ARP
    for it); the router holds `next_hop` and routes the EID space to the
    PxTR's address, which is how the proxy-ITR attracts it."""

    router: str
    interface: ipaddress.IPv4Interface
    next_hop: ipaddress.IPv4Address
    next_hop_mac: str  # the router's end: where the proxy-ETR sends decapsulated packets
    mac: str  # the PxTR's (OVS-owned) veth
    ifname: str  # in the PxTR's namespace
    router_ifname: str  # in the router's namespace
    iid: int | None  # None until the loader has seen every site
    prefixes: tuple[ipaddress.IPv4Network, ...] = ()  # the EID space it attracts

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self.interface.network


@dataclass(frozen=True)
class Site:
    name: str
    dpid: int
    key: str | None
    rlocs: tuple[Rloc, ...]
    eid_prefixes: tuple[EidPrefix, ...]
    role: str = "xtr"  # or "pxtr": a proxy xTR with a native link and no EIDs of its own
    native: Native | None = None

    @property
    def is_pxtr(self) -> bool:
        return self.role == "pxtr"


@dataclass(frozen=True)
class Host:
    name: str
    site: str
    interface: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address
    iid: int
    mac: str
    ofport: int  # its port on the site's br-int

    @property
    def address(self) -> ipaddress.IPv4Address:
        return self.interface.ip


@dataclass(frozen=True)
class InternetHost:
    """A non-LISP host: its own veth (`eth0`) to a router that is its gateway."""

    name: str
    router: str
    interface: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address  # the router's address on the veth
    mac: str
    gateway_mac: str

    @property
    def address(self) -> ipaddress.IPv4Address:
        return self.interface.ip

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self.interface.network


@dataclass(frozen=True)
class Route:
    """A static route a node needs: to an underlay subnet it is not on, or
    (routers only) to an internet host's subnet or to the EID space at the PxTR."""

    node: str
    destination: ipaddress.IPv4Network
    via: ipaddress.IPv4Address
    ifname: str  # the device inside the node's namespace (a site's br-phy bridge)


@dataclass(frozen=True)
class RlocPort:
    """Where one RLOC of a site lives: its br-phy bridge and underlay link."""

    rloc: Rloc
    bridge: str  # br-phy, br-phy1, ...; the RLOC is on its LOCAL port
    bridge_mac: str
    link: Link
    uplink: LinkEnd  # the site's (OVS-owned) end of the link
    peer: LinkEnd  # the node at the other end (router, Map-Server or site)


@dataclass(frozen=True)
class Topology:
    name: str
    source: str
    management: Management
    map_server: MapServer | None
    routers: tuple[Router, ...]
    links: tuple[Link, ...]
    sites: tuple[Site, ...]
    hosts: tuple[Host, ...]
    routes: tuple[Route, ...]
    internet_hosts: tuple[InternetHost, ...] = ()

    @property
    def pxtr(self) -> Site | None:
        return next((s for s in self.sites if s.is_pxtr), None)

    @property
    def lisp_sites(self) -> tuple[Site, ...]:
        """The sites with EIDs (every site but the PxTR)."""
        return tuple(s for s in self.sites if not s.is_pxtr)

    def internet_host(self, name: str) -> InternetHost:
        for host in self.internet_hosts:
            if host.name == name:
                return host
        raise KeyError(f"no internet host {name!r} in {self.source}")

    def site(self, name: str) -> Site:
        for site in self.sites:
            if site.name == name:
                return site
        raise KeyError(f"no site {name!r} in {self.source}")

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no host {name!r} in {self.source}")

    def hosts_of(self, site: str) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.site == site)

    def links_of(self, node: str) -> tuple[Link, ...]:
        return tuple(link for link in self.links if node in (link.a.node, link.b.node))

    def routes_of(self, node: str) -> tuple[Route, ...]:
        return tuple(r for r in self.routes if r.node == node)

    def rloc_ports(self, site: str) -> tuple[RlocPort, ...]:
        """The site's RLOCs in file order, each with its bridge and link."""
        out = []
        for i, rloc in enumerate(self.site(site).rlocs):
            link = next(
                link for link in self.links_of(site) if link.end(site).interface.ip == rloc.address
            )
            out.append(
                RlocPort(
                    rloc=rloc,
                    bridge=rloc_bridge(i),
                    bridge_mac=_derived_mac(0x72, rloc.address),
                    link=link,
                    uplink=link.end(site),
                    peer=link.peer(site),
                )
            )
        return tuple(out)

    def management_address(self, site: str) -> ipaddress.IPv4Interface:
        """The site's address on the management network (after the controller's)."""
        hosts = [a for a in self.management.subnet.hosts() if a != self.management.controller]
        index = [s.name for s in self.sites].index(site)
        return ipaddress.IPv4Interface(f"{hosts[index]}/{self.management.subnet.prefixlen}")

    @cached_property
    def graph(self) -> nx.MultiGraph:
        """Sites, hosts, routers, the Map-Server and internet hosts as nodes
        (attribute `kind`); underlay links (`kind="underlay"`, `link=Link`),
        host attachments (`kind="access"`) and a PxTR's native link
        (`kind="native"`, `native=Native`) as edges."""
        g = nx.MultiGraph(name=self.name)
        for site in self.sites:
            g.add_node(site.name, kind="site", site=site)
        for router in self.routers:
            g.add_node(router.name, kind="router", router=router)
        if self.map_server:
            g.add_node(self.map_server.name, kind="map-server", map_server=self.map_server)
        for link in self.links:
            g.add_edge(link.a.node, link.b.node, key=link.index, kind="underlay", link=link)
        for host in self.hosts:
            g.add_node(host.name, kind="host", host=host)
            g.add_edge(host.site, host.name, kind="access", ofport=host.ofport)
        for site in self.sites:
            if site.native:
                g.add_edge(site.name, site.native.router, kind="native", native=site.native)
        for ih in self.internet_hosts:
            g.add_node(ih.name, kind="internet-host", host=ih)
            g.add_edge(ih.router, ih.name, kind="access")
        return g


# --------------------------------------------------------------------------
# Loading


def load(path: str | Path) -> Topology:
    """Read and validate a topology file; raise TopologyError naming the bad field."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise TopologyError(source, "", f"cannot read: {exc.strerror}") from None
    return loads(text, source)


def loads(text: str, source: str = "<topology>") -> Topology:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TopologyError(source, "", f"not valid YAML: {exc}") from None
    return _Parser(source).topology(doc)


def rloc_bridge(index: int) -> str:
    """The br-phy bridge of a site's index-th RLOC: br-phy, br-phy1, br-phy2..."""
    return "br-phy" if index == 0 else f"br-phy{index}"


def _derived_mac(kind: int, address: ipaddress.IPv4Address) -> str:
    low = int(address) & 0xFFFFFF
    return f"02:4c:{kind:02x}:{low >> 16:02x}:{(low >> 8) & 0xFF:02x}:{low & 0xFF:02x}"


class _Parser:
    def __init__(self, source: str):
        self.source = source

    def error(self, path: str, problem: str) -> TopologyError:
        return TopologyError(self.source, path, problem)

    # -- generic readers ---------------------------------------------------

    def mapping(self, value: Any, path: str, required: set[str], optional: set[str]) -> dict:
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping, got {type(value).__name__}")
        for key in value:
            if key not in required and key not in optional:
                known = ", ".join(sorted(required | optional))
                raise self.error(_join(path, str(key)), f"unknown key (known: {known})")
        for key in sorted(required):
            if key not in value:
                raise self.error(_join(path, key), "missing")
        return value

    def seq(self, value: Any, path: str, item: Callable[[Any, str], T], min_len: int = 0) -> list[T]:
        if not isinstance(value, list):
            raise self.error(path, f"expected a list, got {type(value).__name__}")
        if len(value) < min_len:
            raise self.error(path, f"needs at least {min_len} entr{'y' if min_len == 1 else 'ies'}")
        return [item(v, f"{path}[{i}]") for i, v in enumerate(value)]

    def name(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not _NAME_RE.match(value) or len(value) > NAME_MAX:
            raise self.error(
                path,
                f"{value!r} is not a valid name (lower-case letters and digits, "
                f"starting with a letter, at most {NAME_MAX} characters)",
            )
        if value in _RESERVED:
            raise self.error(path, f"{value!r} is reserved for a lab interface name")
        return value

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(path, "expected a non-empty string")
        return value

    def integer(self, value: Any, path: str, lo: int, hi: int) -> int:
        if isinstance(value, str):
            try:
                value = int(value, 0)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path, f"expected an integer, got {value!r}")
        if not lo <= value <= hi:
            raise self.error(path, f"{value} is out of range {lo}..{hi}")
        return value

    def ipv4(self, value: Any, path: str) -> ipaddress.IPv4Address:
        try:
            return ipaddress.IPv4Address(value)
        except (ValueError, TypeError):
            raise self.error(path, f"{value!r} is not an IPv4 address") from None

    def interface(self, value: Any, path: str) -> ipaddress.IPv4Interface:
        if not isinstance(value, str) or "/" not in value:
            raise self.error(path, f"{value!r} is not ADDRESS/LENGTH")
        try:
            iface = ipaddress.IPv4Interface(value)
        except ValueError:
            raise self.error(path, f"{value!r} is not an IPv4 ADDRESS/LENGTH") from None
        if iface.network.prefixlen < 31 and iface.ip in (
            iface.network.network_address,
            iface.network.broadcast_address,
        ):
            raise self.error(path, f"{value} is the network or broadcast address of {iface.network}")
        return iface

    def network(self, value: Any, path: str) -> ipaddress.IPv4Network:
        try:
            return ipaddress.IPv4Network(value)
        except (ValueError, TypeError) as exc:
            raise self.error(path, f"{value!r} is not an IPv4 prefix ({exc})") from None

    def mac(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not _MAC_RE.match(value.lower()):
            raise self.error(path, f"{value!r} is not a MAC address like 02:4c:00:00:00:01")
        if int(value[:2], 16) & 1:
            raise self.error(path, f"{value} is a multicast MAC address")
        return value.lower()

    # -- sections ----------------------------------------------------------

    def topology(self, doc: Any) -> Topology:
        if doc is None:
            raise self.error("", "the file is empty")
        m = self.mapping(
            doc, "", {"name", "management", "underlay", "sites", "hosts"}, {"map_server", "internet_hosts"}
        )
        name = self.string(m["name"], "name")
        management = self.management(m["management"], "management")
        ms = self.map_server(m["map_server"], "map_server") if "map_server" in m else None
        u = self.mapping(m["underlay"], "underlay", {"links"}, {"routers"})
        routers = self.seq(u.get("routers", []), "underlay.routers", self.router)
        router_names = [r.name for r in routers]
        sites = self.seq(m["sites"], "sites", lambda v, p: self.site(v, p, ms, router_names), min_len=1)
        nodes = self.node_kinds([s.name for s in sites], routers, ms, m)
        links = self.links(u["links"], "underlay.links", nodes)
        if ms and not any(link.end(ms.name).interface.ip == ms.address for link in links if ms.name in (link.a.node, link.b.node)):
            raise self.error("map_server.address", f"{ms.address} is not its end of any underlay link")
        self.check_management(management, sites, links)
        sites = self.pxtr(sites)
        hosts = self.hosts(m["hosts"], "hosts", sites)
        internet_hosts = self.seq(m.get("internet_hosts", []), "internet_hosts",
                                  lambda v, p: self.internet_host(v, p, router_names))
        self.check_sites(sites, links, nodes)
        self.check_native(management, sites, links, internet_hosts)
        self.check_macs(sites, hosts, links, hosts_path="hosts", internet_hosts=internet_hosts)
        routes = self.routes(nodes, links, sites, ms) + self.native_routes(nodes, links, sites, internet_hosts)
        return Topology(
            name=name,
            source=self.source,
            management=management,
            map_server=ms,
            routers=tuple(routers),
            links=tuple(links),
            sites=tuple(sites),
            hosts=tuple(hosts),
            routes=routes,
            internet_hosts=tuple(internet_hosts),
        )

    def management(self, value: Any, path: str) -> Management:
        m = self.mapping(value, path, {"subnet", "controller"}, {"port"})
        subnet = self.network(m["subnet"], f"{path}.subnet")
        controller = self.ipv4(m["controller"], f"{path}.controller")
        if controller not in subnet or controller in (subnet.network_address, subnet.broadcast_address):
            raise self.error(f"{path}.controller", f"{controller} is not a host address of {subnet}")
        port = self.integer(m.get("port", DEFAULT_CONTROLLER_PORT), f"{path}.port", 1, 65535)
        return Management(subnet=subnet, controller=controller, port=port)

    def map_server(self, value: Any, path: str) -> MapServer:
        m = self.mapping(value, path, {"name", "address", "key"}, set())
        return MapServer(
            name=self.name(m["name"], f"{path}.name"),
            address=self.ipv4(m["address"], f"{path}.address"),
            key=self.string(m["key"], f"{path}.key"),
        )

    def router(self, value: Any, path: str) -> Router:
        m = self.mapping(value, path, {"name"}, set())
        return Router(name=self.name(m["name"], f"{path}.name"))

    def node_kinds(self, site_names, routers, ms, doc) -> dict[str, str]:
        """Every underlay node's kind; names are unique across sites, hosts,
        routers and the Map-Server because each becomes a namespace."""
        nodes: dict[str, str] = {}
        seen: dict[str, str] = {}
        entries = [(n, "site", f"sites[{i}].name") for i, n in enumerate(site_names)]
        entries += [(r.name, "router", f"underlay.routers[{i}].name") for i, r in enumerate(routers)]
        if ms:
            entries.append((ms.name, "map-server", "map_server.name"))
        for section in ("hosts", "internet_hosts"):
            hosts = doc.get(section) if isinstance(doc.get(section), list) else []
            for i, h in enumerate(hosts):
                if isinstance(h, dict) and isinstance(h.get("name"), str):
                    entries.append((h["name"], "host", f"{section}[{i}].name"))
        for name, kind, path in entries:
            if name in seen:
                raise self.error(path, f"name {name!r} is already used by {seen[name]}")
            seen[name] = path
            if kind != "host":
                nodes[name] = kind
        return nodes

    def links(self, value: Any, path: str, nodes: dict[str, str]) -> list[Link]:
        ifnames: dict[str, set[str]] = {}
        addresses: dict[ipaddress.IPv4Address, str] = {}

        def link(v: Any, p: str) -> Link:
            if not isinstance(v, dict) or len(v) != 2:
                raise self.error(p, "a link is a mapping of exactly two {node: address/len}")
            ends = []
            for node, addr in v.items():
                if node not in nodes:
                    raise self.error(
                        _join(p, str(node)),
                        f"unknown node {node!r} (links join sites, routers and the map_server)",
                    )
                iface = self.interface(addr, _join(p, node))
                if iface.ip in addresses:
                    raise self.error(_join(p, node), f"{iface.ip} is already used at {addresses[iface.ip]}")
                addresses[iface.ip] = _join(p, node)
                ends.append((node, iface))
            (na, ia), (nb, ib) = ends
            if na == nb:
                raise self.error(p, f"a link from {na!r} to itself")
            if ia.network != ib.network:
                raise self.error(p, f"{ia} and {ib} are not in the same subnet")
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
                made.append(LinkEnd(node=node, interface=iface, ifname=ifname, mac=_derived_mac(kind, iface.ip)))
            return Link(index=int(p.rsplit("[", 1)[1][:-1]), a=made[0], b=made[1])

        links = self.seq(value, path, link, min_len=1)
        for i, x in enumerate(links):
            for y in links[:i]:
                if x.subnet.overlaps(y.subnet):
                    raise self.error(f"{path}[{i}]", f"subnet {x.subnet} overlaps {y} ({path}[{y.index}])")
        g = nx.MultiGraph()
        g.add_nodes_from(nodes)
        g.add_edges_from((link.a.node, link.b.node) for link in links)
        if not nx.is_connected(g):
            parts = sorted(sorted(c) for c in nx.connected_components(g))
            raise self.error(path, "the underlay is not connected: " + " | ".join(", ".join(c) for c in parts))
        return links

    def site(self, value: Any, path: str, ms: MapServer | None, routers: list[str]) -> Site:
        role = value.get("role", "xtr") if isinstance(value, dict) else "xtr"
        if role not in ROLES:
            raise self.error(f"{path}.role", f"{role!r} is not a role ({', '.join(ROLES)})")
        if role == "pxtr":
            # A PxTR announces the other sites' EIDs and owns none: nothing to register.
            m = self.mapping(value, path, {"name", "rlocs", "role", "native"}, {"dpid", "key"})
        else:
            if isinstance(value, dict) and "native" in value:
                raise self.error(f"{path}.native", "only a PxTR site (role: pxtr) has a native link")
            m = self.mapping(value, path, {"name", "rlocs", "eid_prefixes"}, {"dpid", "key", "role"})
        index = int(path.rsplit("[", 1)[1][:-1])
        name = self.name(m["name"], f"{path}.name")
        dpid = self.integer(m.get("dpid", index + 1), f"{path}.dpid", 1, (1 << 64) - 1)
        key = self.string(m["key"], f"{path}.key") if "key" in m else (ms.key if ms else None)
        rlocs = self.seq(m["rlocs"], f"{path}.rlocs", self.rloc, min_len=1)
        seen = set()
        for i, r in enumerate(rlocs):
            if r.address in seen:
                raise self.error(f"{path}.rlocs[{i}].address", f"{r.address} is listed twice")
            seen.add(r.address)
        if role == "pxtr":
            native = self.native(m["native"], f"{path}.native", name, routers)
            return Site(name=name, dpid=dpid, key=key, rlocs=tuple(rlocs), eid_prefixes=(), role=role, native=native)
        prefixes = self.seq(m["eid_prefixes"], f"{path}.eid_prefixes", self.eid_prefix, min_len=1)
        for i, p in enumerate(prefixes):
            for j, q in enumerate(prefixes[:i]):
                if p.iid == q.iid and p.prefix.overlaps(q.prefix):
                    raise self.error(
                        f"{path}.eid_prefixes[{i}].prefix",
                        f"{p.prefix} overlaps {q.prefix} (eid_prefixes[{j}]) in instance-ID {p.iid}",
                    )
        return Site(name=name, dpid=dpid, key=key, rlocs=tuple(rlocs), eid_prefixes=tuple(prefixes))

    def native(self, value: Any, path: str, site: str, routers: list[str]) -> Native:
        m = self.mapping(value, path, {"router", "address", "next_hop"}, {"iid"})
        router = m["router"]
        if router not in routers:
            raise self.error(f"{path}.router", f"unknown router {router!r} (routers: {', '.join(routers) or 'none'})")
        iface = self.interface(m["address"], f"{path}.address")
        next_hop = self.ipv4(m["next_hop"], f"{path}.next_hop")
        if next_hop not in iface.network or next_hop == iface.ip or next_hop in (
                iface.network.network_address, iface.network.broadcast_address):
            raise self.error(f"{path}.next_hop", f"{next_hop} is not another host address of {iface.network}")
        iid = self.integer(m["iid"], f"{path}.iid", 0, MAX_IID) if "iid" in m else None
        return Native(router=router, interface=iface, next_hop=next_hop, next_hop_mac=_derived_mac(0x6C, next_hop),
                      mac=_derived_mac(0x76, iface.ip), ifname=f"{router}-n", router_ifname=f"{site}-n", iid=iid)

    def pxtr(self, sites: list[Site]) -> list[Site]:
        """At most one PxTR; it attracts every LISP site's EID prefixes of its instance-ID."""
        out = []
        first = None
        for i, site in enumerate(sites):
            if not site.is_pxtr:
                out.append(site)
                continue
            if first is not None:
                raise self.error(f"sites[{i}].role", f"only one PxTR per lab (sites[{first}] is one)")
            first = i
            iids = sorted({e.iid for s in sites if not s.is_pxtr for e in s.eid_prefixes})
            iid = site.native.iid
            if iid is None:
                if len(iids) != 1:
                    raise self.error(f"sites[{i}].native.iid", "the LISP sites use instance-IDs "
                                     f"{', '.join(map(str, iids)) or '(none)'}: say which one the PxTR serves")
                iid = iids[0]
            elif iid not in iids:
                raise self.error(f"sites[{i}].native.iid", f"no LISP site has EID prefixes in instance-ID {iid}")
            prefixes = tuple(e.prefix for s in sites if not s.is_pxtr for e in s.eid_prefixes if e.iid == iid)
            out.append(replace(site, native=replace(site.native, iid=iid, prefixes=prefixes)))
        return out

    def internet_host(self, value: Any, path: str, routers: list[str]) -> InternetHost:
        m = self.mapping(value, path, {"name", "router", "address", "gateway"}, {"mac"})
        name = self.name(m["name"], f"{path}.name")
        router = m["router"]
        if router not in routers:
            raise self.error(f"{path}.router", f"unknown router {router!r} (routers: {', '.join(routers) or 'none'})")
        iface = self.interface(m["address"], f"{path}.address")
        gateway = self.ipv4(m["gateway"], f"{path}.gateway")
        if gateway not in iface.network or gateway == iface.ip or gateway in (
                iface.network.network_address, iface.network.broadcast_address):
            raise self.error(f"{path}.gateway", f"{gateway} is not another host address of {iface.network}")
        mac = self.mac(m["mac"], f"{path}.mac") if "mac" in m else _derived_mac(0x68, iface.ip)
        return InternetHost(name=name, router=router, interface=iface, gateway=gateway, mac=mac,
                            gateway_mac=_derived_mac(0x6C, gateway))

    def rloc(self, value: Any, path: str) -> Rloc:
        m = self.mapping(value, path, {"address"}, {"priority", "weight"})
        return Rloc(
            address=self.ipv4(m["address"], f"{path}.address"),
            priority=self.integer(m.get("priority", 1), f"{path}.priority", 0, 255),
            weight=self.integer(m.get("weight", 100), f"{path}.weight", 0, 255),
        )

    def eid_prefix(self, value: Any, path: str) -> EidPrefix:
        m = self.mapping(value, path, {"prefix", "iid", "gateway"}, {"gateway_mac"})
        prefix = self.network(m["prefix"], f"{path}.prefix")
        gateway = self.ipv4(m["gateway"], f"{path}.gateway")
        if gateway not in prefix:
            raise self.error(f"{path}.gateway", f"{gateway} is not inside {prefix}")
        mac = self.mac(m["gateway_mac"], f"{path}.gateway_mac") if "gateway_mac" in m else _derived_mac(0x67, gateway)
        return EidPrefix(
            prefix=prefix,
            iid=self.integer(m["iid"], f"{path}.iid", 0, MAX_IID),
            gateway=gateway,
            gateway_mac=mac,
        )

    def hosts(self, value: Any, path: str, sites: list[Site]) -> list[Host]:
        by_name = {s.name: s for s in sites}
        ports: dict[str, int] = {}
        taken: dict[tuple[int, ipaddress.IPv4Address], str] = {}

        def host(v: Any, p: str) -> Host:
            m = self.mapping(v, p, {"name", "site", "address"}, {"gateway", "iid", "mac"})
            name = self.name(m["name"], f"{p}.name")
            site = by_name.get(m["site"])
            if site is None:
                raise self.error(f"{p}.site", f"unknown site {m['site']!r} (sites: {', '.join(by_name)})")
            if site.is_pxtr:
                raise self.error(f"{p}.site", f"{site.name} is a PxTR: hosts belong to LISP sites "
                                 "(non-LISP hosts go in internet_hosts)")
            iface = self.interface(m["address"], f"{p}.address")
            if "iid" in m:
                iid = self.integer(m["iid"], f"{p}.iid", 0, MAX_IID)
                candidates = [e for e in site.eid_prefixes if e.iid == iid and iface.ip in e.prefix]
            else:
                candidates = [e for e in site.eid_prefixes if iface.ip in e.prefix]
                if len(candidates) > 1:
                    raise self.error(f"{p}.iid", f"{iface.ip} is in several EID prefixes of {site.name}: say which instance-ID")
            if not candidates:
                own = ", ".join(f"{e.prefix} iid {e.iid}" for e in site.eid_prefixes)
                raise self.error(f"{p}.address", f"{iface.ip} is not inside an EID prefix of site {site.name} ({own})")
            eid = candidates[0]
            gateway = self.ipv4(m["gateway"], f"{p}.gateway") if "gateway" in m else eid.gateway
            if gateway != eid.gateway:
                raise self.error(f"{p}.gateway", f"{gateway} is not the gateway of {eid.prefix} at {site.name} ({eid.gateway})")
            if gateway not in iface.network or gateway == iface.ip:
                raise self.error(f"{p}.address", f"gateway {gateway} is not on the host's subnet {iface.network}")
            if (eid.iid, iface.ip) in taken:
                raise self.error(f"{p}.address", f"{iface.ip} in instance-ID {eid.iid} is already used by {taken[eid.iid, iface.ip]}")
            taken[eid.iid, iface.ip] = name
            ports[site.name] = ports.get(site.name, 0) + 1
            if ports[site.name] > MAX_HOSTS_PER_SITE:
                raise self.error(p, f"site {site.name} has more than {MAX_HOSTS_PER_SITE} hosts")
            mac = self.mac(m["mac"], f"{p}.mac") if "mac" in m else _derived_mac(0x68, iface.ip)
            return Host(name=name, site=site.name, interface=iface, gateway=gateway, iid=eid.iid, mac=mac, ofport=ports[site.name])

        return self.seq(value, path, host)

    # -- cross-checks --------------------------------------------------------

    def check_sites(self, sites: list[Site], links: list[Link], nodes: dict[str, str]) -> None:
        dpids: dict[int, str] = {}
        for i, site in enumerate(sites):
            if site.dpid in dpids:
                raise self.error(f"sites[{i}].dpid", f"datapath-id {site.dpid:#x} is already used by {dpids[site.dpid]}")
            dpids[site.dpid] = site.name
            ends = {link.end(site.name).interface.ip: link for link in links if site.name in (link.a.node, link.b.node)}
            for j, rloc in enumerate(site.rlocs):
                if rloc.address not in ends:
                    raise self.error(
                        f"sites[{i}].rlocs[{j}].address",
                        f"{rloc.address} is not {site.name}'s end of any underlay link",
                    )
            listed = {r.address for r in site.rlocs}
            for addr, link in ends.items():
                if addr not in listed:
                    raise self.error(f"underlay.links[{link.index}].{site.name}", f"{addr} must also be listed in sites[{i}].rlocs")
            if not ends:
                raise self.error(f"sites[{i}]", f"site {site.name} has no underlay link")
        # EID prefixes of different sites must not overlap within an instance-ID:
        # a static lab has no more-specifics to tell them apart.
        for i, site in enumerate(sites):
            for j, e in enumerate(site.eid_prefixes):
                for other in sites[:i]:
                    for f in other.eid_prefixes:
                        if e.iid == f.iid and e.prefix.overlaps(f.prefix):
                            raise self.error(
                                f"sites[{i}].eid_prefixes[{j}].prefix",
                                f"{e.prefix} overlaps {f.prefix} of site {other.name} in instance-ID {e.iid}",
                            )

    def check_native(self, mgmt: Management, sites: list[Site], links: list[Link],
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
                    raise self.error(path, f"{net} overlaps {other_what}")
            taken.append((net, what))

    def check_macs(self, sites: list[Site], hosts: list[Host], links: list[Link], hosts_path: str,
                   internet_hosts: list[InternetHost] = ()) -> None:
        """MACs are unique lab-wide; only a gateway MAC may repeat (an anycast
        gateway shared by several sites keeps a moved host's ARP cache valid)."""
        owners: dict[str, tuple[str, str]] = {}

        def claim(mac: str, owner: str, path: str, kind: str) -> None:
            if mac in owners:
                other, other_kind = owners[mac]
                if kind == other_kind == "gateway":
                    return
                raise self.error(path, f"MAC {mac} is already used by {other} (set a `mac`/`gateway_mac` explicitly)")
            owners[mac] = (owner, kind)

        for i, site in enumerate(sites):
            for j, e in enumerate(site.eid_prefixes):
                claim(e.gateway_mac, f"gateway {e.gateway} of {site.name}", f"sites[{i}].eid_prefixes[{j}].gateway_mac", "gateway")
            for j, r in enumerate(site.rlocs):
                claim(_derived_mac(0x72, r.address), f"RLOC {r.address}", f"sites[{i}].rlocs[{j}].address", "rloc")
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

    def check_management(self, mgmt: Management, sites: list[Site], links: list[Link]) -> None:
        if mgmt.subnet.num_addresses - 3 < len(sites):
            raise self.error("management.subnet", f"{mgmt.subnet} is too small for {len(sites)} sites and the controller")
        for link in links:
            if link.subnet.overlaps(mgmt.subnet):
                raise self.error("management.subnet", f"{mgmt.subnet} overlaps underlay link {link}")
        for i, site in enumerate(sites):
            for j, e in enumerate(site.eid_prefixes):
                for net in [mgmt.subnet, *(link.subnet for link in links)]:
                    if e.prefix.overlaps(net):
                        raise self.error(f"sites[{i}].eid_prefixes[{j}].prefix", f"{e.prefix} overlaps the underlay/management subnet {net}")

    def routes(self, nodes: dict[str, str], links: list[Link], sites: list[Site], ms: MapServer | None) -> tuple[Route, ...]:
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
            if ms and not any(ms.address in net for net in reach[site.name]):
                raise self.error(f"sites[{i}]", f"site {site.name} cannot reach the Map-Server {ms.address} through the underlay routers")
            for other in sites:
                if other is site:
                    continue
                if not any(r.address in net for r in other.rlocs for net in reach[site.name]):
                    raise self.error(f"sites[{i}]", f"site {site.name} cannot reach any RLOC of site {other.name}")
        return tuple(routes)

    def native_routes(self, nodes: dict[str, str], links: list[Link], sites: list[Site],
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
                    raise self.error(f"internet_hosts[{i}].router", f"{h.router} cannot reach {n.router} "
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


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
