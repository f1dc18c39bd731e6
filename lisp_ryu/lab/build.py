"""Bring a lab up: plan every name and number, then create the namespaces,
veths and the management network, and configure them (DESIGN.md §4).

Sites are namespaces, each with its own OVS pair (lisp_ryu/lab/ovs.py).
Hosts are namespaces with one interface (`eth0`, MTU 1450 for the 36-byte
encapsulation): a tap of the site's br-int, which ovs-vswitchd opens and the
lab moves into the host (lisp_ryu/lab/ovs.py says why not a veth); core
routers and the Map-Server are namespaces on the underlay.  A PxTR is a site like the others plus a native port on
br-int whose veth peer sits in a router; internet hosts are namespaces with
one veth (`eth0`) to a router, their gateway.  The management network is
the one thing in the root namespace: a lab bridge with the controller's
address and one veth per site.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

from lisp_ryu.lab import topology as topo
from lisp_ryu.lab import topology_load
from lisp_ryu.lab.ovs import start_site, tap_to_host
from lisp_ryu.lab.processes import objects_with_prefix, run, run_in
from lisp_ryu.lab.running import appctl, locked
from lisp_ryu.lab.state import (
    HostState,
    LabError,
    LabState,
    NodeState,
    RlocState,
    SiteState,
    prefix,
    read_state,
    write_state,
)
from lisp_ryu.lab.teardown import teardown

log = logging.getLogger("lisp_ryu.lab")

REQUIRED_TOOLS = ("ip", "ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl", "ethtool")


def plan(t: topo.Topology, *, pfx: str, directory: Path, topology_path: str) -> LabState:
    """Everything `up` will create, named and numbered, before creating any of it."""
    ns = {name: pfx + name for name in
          [*(s.name for s in t.sites), *(h.name for h in t.hosts), *(r.name for r in t.routers),
           *(n.name for n in (t.map_server.all_nodes if t.map_server else ())), *(h.name for h in t.internet_hosts)]}
    sites = []
    for site in t.sites:
        ports = t.rloc_ports(site.name)
        rlocs = []
        for p in ports:
            peer_mac = p.peer.mac
            if site_of := next((s for s in t.sites if s.name == p.peer.node), None):
                peer_mac = next(q.bridge_mac for q in t.rloc_ports(site_of.name) if q.link == p.link)
            rlocs.append(RlocState(
                address=str(p.rloc.address), prefixlen=p.uplink.interface.network.prefixlen,
                priority=p.rloc.priority, weight=p.rloc.weight, bridge=p.bridge, bridge_mac=p.bridge_mac,
                uplink=p.uplink.ifname, uplink_mac=p.uplink.mac,
                next_hop=str(p.peer.interface.ip), next_hop_mac=peer_mac,
            ))
        sites.append(SiteState(
            name=site.name, namespace=ns[site.name], run_dir=str(directory / site.name), dpid=site.dpid,
            management_address=str(t.management_address(site.name)),
            management_veth=f"{pfx}m-{site.name}",
            tunnel_port=topo.TUNNEL_PORT_NAME, tunnel_ofport=topo.TUNNEL_OFPORT,
            tunnel_local_ip=rlocs[0].address if len(rlocs) == 1 else "flow",
            rlocs=tuple(rlocs),
            host_ports={h.name: h.ofport for h in t.hosts_of(site.name)},
            reserved_ports={} if site.is_pxtr else t.reserved_ports(site.name),
            eid_prefixes=tuple({"prefix": str(e.prefix), "iid": e.iid, "gateway": str(e.gateway),
                                "gateway_mac": e.gateway_mac} for e in site.eid_prefixes),
            key=site.key,
            role=site.role,
            native=None if site.native is None else {
                "router": site.native.router, "address": str(site.native.interface),
                "next_hop": str(site.native.next_hop), "next_hop_mac": site.native.next_hop_mac,
                "mac": site.native.mac, "ifname": site.native.ifname, "router_ifname": site.native.router_ifname,
                "ofport": topo.NATIVE_OFPORT, "iid": site.native.iid,
                "prefixes": [str(p) for p in site.native.prefixes]},
        ))
    hosts = []
    for h in t.hosts:
        gw_mac = next(e.gateway_mac for e in t.site(h.site).eid_prefixes if e.gateway == h.gateway and e.iid == h.iid)
        dual = {}
        if h.interface6 is not None:
            dual = dict(address6=str(h.interface6), gateway6=str(h.gateway6),
                        gateway6_mac=next(e.gateway_mac for e in t.site(h.site).eid_prefixes
                                          if e.gateway == h.gateway6 and e.iid == h.iid))
        hosts.append(HostState(name=h.name, site=h.site, namespace=ns[h.name], address=str(h.interface),
                               mac=h.mac, gateway=str(h.gateway), gateway_mac=gw_mac, iid=h.iid, ofport=h.ofport,
                               **dual))
    nodes = [NodeState(name=r.name, kind="router", namespace=ns[r.name],
                       addresses=tuple(str(l.end(r.name).interface) for l in t.links_of(r.name))
                       + tuple(f"{s.native.next_hop}/{s.native.subnet.prefixlen}" for s in t.sites
                               if s.native and s.native.router == r.name)
                       + tuple(f"{h.gateway}/{h.subnet.prefixlen}" for h in t.internet_hosts if h.router == r.name))
             for r in t.routers]
    for ms in (t.map_server.all_nodes if t.map_server else ()):
        nodes.append(NodeState(name=ms.name, kind="map-server", namespace=ns[ms.name],
                               addresses=tuple(str(l.end(ms.name).interface) for l in t.links_of(ms.name))))
    nodes += [NodeState(name=h.name, kind="internet-host", namespace=ns[h.name], addresses=(str(h.interface),))
              for h in t.internet_hosts]
    bridge = f"{pfx}mgmt"
    return LabState(
        name=t.name, topology=topology_path, prefix=pfx, lab_dir=str(directory), status="starting",
        controller=str(t.management.controller), controller_port=t.management.port,
        management_bridge=bridge, namespaces=tuple(ns.values()),
        root_interfaces=(bridge, *(s.management_veth for s in sites)),
        sites=tuple(sites), hosts=tuple(hosts), nodes=tuple(nodes),
        map_server=t.map_server.name if t.map_server else None,
        map_server_address=str(t.map_server.address) if t.map_server else None,
        map_server_nodes=tuple({"name": n.name, "address": str(n.address)} for n in t.map_server.nodes)
        if t.map_server else (),
    )


def up(topology_path: str | Path) -> LabState:
    """Build the lab described by the topology file; on any failure tear down
    what was built and raise the failing command with its stderr."""
    t = topology_load.load(topology_path)
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)} (install openvswitch-switch, iproute2, ethtool)")
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, veths, OVS daemons)")
    with locked() as directory:
        pfx = prefix()
        if read_state() is not None:
            raise LabError("lab already up: run `lisp-ryu lab down`")
        leftovers = objects_with_prefix(pfx)
        if leftovers:
            raise LabError(f"objects of an earlier lab are left ({', '.join(leftovers)}): run `lisp-ryu lab down`")
        check_management_free(t.management)
        state = plan(t, pfx=pfx, directory=directory, topology_path=str(Path(topology_path).absolute()))
        write_state(state)
        started = time.monotonic()
        try:
            state = _build(t, state)
            write_state(state)
            if state.map_server_nodes:
                from lisp_ryu.lab import cluster

                cluster.start_all(state)
        except BaseException as exc:
            log.error("lab %s: up failed, tearing down: %s", t.name, exc)
            try:
                teardown(state, pfx, directory)
            except LabError as cleanup:
                log.error("teardown after failed up: %s", cleanup)
            raise
        log.info("lab %s up in %.1fs: %d sites, %d hosts", t.name, time.monotonic() - started,
                 len(state.sites), len(state.hosts))
        return state


def check_management_free(m: topo.Management) -> None:
    """The management subnet is the one thing the lab puts in the root
    namespace: refuse if the machine already uses any of it."""
    out = run(["ip", "-4", "-o", "addr", "show"]).stdout
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            iface = ipaddress.IPv4Interface(fields[fields.index("inet") + 1])
            if iface.network.overlaps(m.subnet):
                raise LabError(f"management subnet {m.subnet} overlaps {iface} on {fields[1]} in the root namespace: "
                               f"change management.subnet in the topology")


def add_management_network(t: topo.Topology, state: LabState) -> None:
    """The management network: the lab bridge with the controller's address and
    one veth per site, its `mgmt0` end in the site's (named) namespace: the only
    objects in the root namespace.  The Mininet lab (lisp_ryu/lab/mininet_net.py) shares it."""
    bridge = state.management_bridge
    run(["ip", "link", "add", bridge, "type", "bridge"])
    run(["ip", "addr", "add", f"{state.controller}/{t.management.subnet.prefixlen}", "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])
    for s in state.sites:
        run(["ip", "link", "add", s.management_veth, "type", "veth", "peer", "name", topo.MGMT_IFNAME,
             "netns", s.namespace])
        run(["ip", "link", "set", s.management_veth, "master", bridge, "up"])
        run(["ethtool", "-K", s.management_veth, "tx", "off"])


def _build(t: topo.Topology, state: LabState) -> LabState:
    """Create the namespaces and wires, then configure them (`configure`)."""
    ns_of = _namespaces(state)
    for namespace in state.namespaces:
        run(["ip", "netns", "add", namespace])
    add_management_network(t, state)
    for link in t.links:
        run(["ip", "link", "add", link.a.ifname, "netns", ns_of[link.a.node], "type", "veth",
             "peer", "name", link.b.ifname, "netns", ns_of[link.b.node]])
    for site in t.sites:
        if site.native:
            run(["ip", "link", "add", site.native.ifname, "netns", ns_of[site.name], "type", "veth",
                 "peer", "name", site.native.router_ifname, "netns", ns_of[site.native.router]])
    for ih in t.internet_hosts:
        run(["ip", "link", "add", topo.HOST_IFNAME, "netns", ns_of[ih.name], "type", "veth",
             "peer", "name", ih.name, "netns", ns_of[ih.router]])
    return configure(t, state, lambda node, argv, env=None: run_in(ns_of[node], argv, env=env).stdout,
                     host_taps=True)


def _namespaces(state: LabState) -> dict[str, str]:
    return {x.name: x.namespace for group in (state.sites, state.hosts, state.nodes) for x in group}


def configure(t: topo.Topology, state: LabState, execute, *, management: bool = True,
              host_taps: bool = False) -> LabState:
    """Configure a lab whose nodes and veths exist: addresses, MACs, MTUs,
    routes, and each site's OVS pair.  `execute(node, argv, env=None)` runs a
    command inside a node and returns its stdout (raising on failure); the
    namespace lab and the Mininet lab (mininet/lisp_topo.py) share this.
    `host_taps`: each host's eth0 is a tap its site's OVS makes, moved into
    the host here (the namespace lab); else a veth that exists (Mininet's)."""

    def ip(node: str, *args: str) -> None:
        execute(node, ["ip", *args])

    def txoff(node: str, dev: str) -> None:
        execute(node, ["ethtool", "-K", dev, "tx", "off"])

    all_nodes = [*(s.name for s in state.sites), *(h.name for h in state.hosts), *(n.name for n in state.nodes)]
    for node in all_nodes:
        ip(node, "link", "set", "lo", "up")
    if management:
        for s in state.sites:
            ip(s.name, "addr", "add", s.management_address, "dev", topo.MGMT_IFNAME)
            ip(s.name, "link", "set", topo.MGMT_IFNAME, "up")
            txoff(s.name, topo.MGMT_IFNAME)

    site_names = {s.name for s in state.sites}
    for link in t.links:
        for end in (link.a, link.b):
            ip(end.node, "link", "set", end.ifname, "address", end.mac)
            if end.node in site_names:
                # Kernel ARP off on the OVS-owned veth, or the site kernel answers
                # for the RLOC with the veth's MAC and OVS never decapsulates.
                ip(end.node, "link", "set", end.ifname, "arp", "off")
            else:
                ip(end.node, "addr", "add", str(end.interface), "dev", end.ifname)
            ip(end.node, "link", "set", end.ifname, "up")
            txoff(end.node, end.ifname)
    for r in t.routers:
        execute(r.name, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                         "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"])

    # The non-LISP side: a PxTR's native link (its end is an OVS port: no
    # address, kernel ARP off) and the internet hosts behind their routers.
    for site in t.sites:
        if site.native:
            n = site.native
            ip(site.name, "link", "set", n.ifname, "address", n.mac, "arp", "off", "up")
            txoff(site.name, n.ifname)
            ip(n.router, "link", "set", n.router_ifname, "address", n.next_hop_mac, "up")
            ip(n.router, "addr", "add", f"{n.next_hop}/{n.subnet.prefixlen}", "dev", n.router_ifname)
            txoff(n.router, n.router_ifname)
    for ih in t.internet_hosts:
        ip(ih.name, "link", "set", topo.HOST_IFNAME, "address", ih.mac, "mtu", str(topo.HOST_MTU), "up")
        ip(ih.name, "addr", "add", str(ih.interface), "dev", topo.HOST_IFNAME)
        ip(ih.name, "route", "add", "default", "via", str(ih.gateway))
        txoff(ih.name, topo.HOST_IFNAME)
        ip(ih.router, "link", "set", ih.name, "address", ih.gateway_mac, "mtu", str(topo.HOST_MTU), "up")
        ip(ih.router, "addr", "add", f"{ih.gateway}/{ih.subnet.prefixlen}", "dev", ih.name)
        txoff(ih.router, ih.name)

    sites = [start_site(s, state, execute, host_taps) for s in state.sites]
    for h in state.hosts:
        # A host answers ARP only on the interface that holds the address asked for: a move's new
        # interface waits in the host, up, until the switchover gives it the addresses, and a VM
        # not yet running at its destination answers nothing there (the destination asks an
        # announced workload to show itself at its new port: xtr/frames.py).
        execute(h.name, ["sysctl", "-q", "-w", "net.ipv4.conf.all.arp_ignore=1"])
        if host_taps:  # a tap's checksum offload is off already: OVS asks for none
            ip(h.site, *tap_to_host(h.name, h.namespace, topo.HOST_IFNAME, h.mac).split())
        ip(h.name, "link", "set", topo.HOST_IFNAME, "address", h.mac, "mtu", str(topo.HOST_MTU), "up")
        ip(h.name, "addr", "add", h.address, "dev", topo.HOST_IFNAME)
        ip(h.name, "route", "add", "default", "via", h.gateway)
        if h.address6 is not None:
            # nodad: the xTR never answers duplicate address detection, and the address is usable at once
            ip(h.name, "-6", "addr", "add", h.address6, "dev", topo.HOST_IFNAME, "nodad")
            ip(h.name, "-6", "route", "add", "default", "via", h.gateway6, "dev", topo.HOST_IFNAME)
        if not host_taps:
            ip(h.site, "link", "set", h.name, "mtu", str(topo.HOST_MTU), "up")
            txoff(h.name, topo.HOST_IFNAME)
            txoff(h.site, h.name)

    # Static routes from the graph (routers, Map-Server, sites).
    for route in t.routes:
        ip(route.node, "route", "add", str(route.destination), "via", str(route.via), "dev", route.ifname)

    state = replace(state, sites=tuple(sites), status="up")
    # Seed OVS's tunnel neighbour cache with each RLOC's next hop, else the
    # first packet to a new destination is lost while OVS resolves it.
    for s in state.sites:
        for r in s.rlocs:
            appctl(s.name, "tnl/neigh/set", r.bridge, r.next_hop, r.next_hop_mac, state=state)
    return state
