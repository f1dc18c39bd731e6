"""The lab topology model: sites, hosts, routers, underlay links, as frozen dataclasses and a graph.

A topology names the LISP sites (each an xTR with its RLOCs, EID prefixes and
gateways), the hosts behind them, the underlay (point-to-point links between
sites, core routers and the Map-Server) and the management network the
controller listens on.  `topology_load` reads a file into this model;
`topology_routes` derives the routers' static routes.  Everything the lab
derives from the topology (OpenFlow port numbers, MACs, datapath-ids,
interface names) is fixed here, so the lab, the static flows and the
controller configuration agree on it.

Fixed numbers (documented here because flows and tests depend on them):
  * br-int OpenFlow ports: hosts of a site get 1, 2, ... in file order,
    stepping over 100 and 101 (`host_ofport`) and staying below the BFD
    ports of failover (numbered from 1000);
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
from dataclasses import dataclass
from functools import cached_property

import networkx as nx

from lisp_ryu.config import ConfigError

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
# The controller's failover ports are numbered from its default `failover.port_base`.
HOST_OFPORT_LIMIT = 1000
MAX_HOSTS_PER_SITE = HOST_OFPORT_LIMIT - 3  # 1..999 less the tunnel and native ports


def host_ofport(n: int) -> int:
    """The br-int port of a site's n-th host port (1-based): the tunnel and
    native ports keep their numbers whatever the number of hosts."""
    if n < 1 or n > MAX_HOSTS_PER_SITE:
        raise ValueError(f"host port index {n} outside 1..{MAX_HOSTS_PER_SITE}")
    return n if n < TUNNEL_OFPORT else n + (NATIVE_OFPORT - TUNNEL_OFPORT + 1)


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
class MapServerNode:
    """One node of a clustered mapping system: a standalone `lisp-ryu mapserver` in its namespace."""

    name: str
    address: ipaddress.IPv4Address


@dataclass(frozen=True)
class MapServer:
    """The lab's mapping system: the controller's embedded Map-Server in the namespace `name`, or
    (`nodes` set) a cluster of standalone Map-Servers, `name`/`address` being the first node's."""

    name: str
    address: ipaddress.IPv4Address
    key: str
    nodes: tuple[MapServerNode, ...] = ()

    @property
    def clustered(self) -> bool:
        return bool(self.nodes)

    @property
    def all_nodes(self) -> tuple[MapServerNode, ...]:
        return self.nodes or (MapServerNode(self.name, self.address),)


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

    @property
    def nodes(self) -> tuple[str, str]:
        return (self.a.node, self.b.node)

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
    """An EID prefix of a site and its (anycast) gateway: IPv4, or IPv6 for dual-stack hosts."""

    prefix: ipaddress.IPv4Network | ipaddress.IPv6Network
    iid: int
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address
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
    # Dual-stack: an IPv6 address in an IPv6 EID prefix of the site (same instance-ID) and its gateway.
    interface6: ipaddress.IPv6Interface | None = None
    gateway6: ipaddress.IPv6Address | None = None

    @property
    def address(self) -> ipaddress.IPv4Address:
        return self.interface.ip

    @property
    def address6(self) -> ipaddress.IPv6Address | None:
        return None if self.interface6 is None else self.interface6.ip


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

    def reserved_ports(self, site: str) -> dict[str, int]:
        """Every lab host's br-int port at `site`: its own hosts' ports, then
        one per host of another site (file order) for when it moves in.

        Fixed up front, the controller's configuration names each of them with
        its host's instance-ID (`host_ports`), so a workload arriving on one is
        learned in its own tenant even where tenants reuse addresses.  Hosts
        past the port range get none (a move then takes the lowest free port,
        learned only where its address names the tenant)."""
        own = {h.name: h.ofport for h in self.hosts_of(site)}
        out = dict(own)
        index = len(own)
        for h in self.hosts:
            if h.name in own:
                continue
            index += 1
            if index > MAX_HOSTS_PER_SITE:
                break
            out[h.name] = host_ofport(index)
        return out

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
                    bridge_mac=derived_mac(0x72, rloc.address),
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
            for node in self.map_server.all_nodes:
                g.add_node(node.name, kind="map-server", map_server=self.map_server)
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


def rloc_bridge(index: int) -> str:
    """The br-phy bridge of a site's index-th RLOC: br-phy, br-phy1, br-phy2..."""
    return "br-phy" if index == 0 else f"br-phy{index}"


def derived_mac(kind: int, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The MAC of an interface without an explicit one: 02:4c:KIND + its address's low 24 bits."""
    low = int(address) & 0xFFFFFF
    return f"02:4c:{kind:02x}:{low >> 16:02x}:{(low >> 8) & 0xFF:02x}:{low & 0xFF:02x}"
