"""Static OpenFlow 1.3 flows that make the lab's sites reach each other
through LISP-GPE without a controller: the foundation the controller's flow
compiler later replaces.

Everything is in table 0 and carries `STATIC_COOKIE`, so
`del-flows cookie=STATIC_COOKIE/-1` removes exactly these flows.  Per site:

  priority 1000  ARP responder: a host's ARP request for its gateway or for a
                 local host in the same instance-ID is answered in the switch
                 (no packet-in): the request is turned into a reply in place
                 and sent back out of IN_PORT.
  priority  900  ARP responder for remote EID prefixes (a stretched subnet),
                 answered with the gateway MAC.
  priority  800  L2 between local hosts of the same instance-ID.
  priority  700  routed between local hosts (addressed to the gateway MAC).
  priority  600  decap: in_port=lisp0, tun_id=IID, ip dst = a local host ->
                 set eth_src (gateway MAC) and eth_dst (host MAC), output.
  priority 100+len  encap: from a host port, ip dst in a remote EID prefix of
                 the same instance-ID -> tun_id=IID, tun_dst=remote RLOC
                 (tun_src too at a multihomed site), output lisp0.

What OVS 3.1 needs for the `packet_type=legacy_l3` VXLAN-GPE port (verified
in tests/lab/test_lab_static.py): nothing explicit.  The port represents
packets as Ethernet frames: a decapsulated packet arrives with a dummy
Ethernet header (so plain `ip,nw_dst=...` matches apply, no packet_type
match, no push_eth), and on output OVS strips the Ethernet header itself
(no pop_eth).  The dummy addresses are useless, hence the set_field of both
MACs before delivering to a host.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lisp_ryu.lab import topology as topo
from lisp_ryu.lab import topology_load
from lisp_ryu.lab.running import load_state, ofctl
from lisp_ryu.lab.state import LabState

log = logging.getLogger("lisp_ryu.lab")

STATIC_COOKIE = 0x4C41420000000001  # "LAB" + 1: the lab's static flows

# Answer an ARP request in place: reply to its sender, from `mac`, for the
# address it asked about (spa and tpa swapped through reg0, so one action
# list serves a single address and a whole prefix).
_ARP_REPLY = (
    "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:{mac}->eth_src,"
    "set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:{mac}->arp_sha,"
    "move:NXM_OF_ARP_TPA[]->NXM_NX_REG0[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],"
    "move:NXM_NX_REG0[]->NXM_OF_ARP_SPA[],IN_PORT"
)


def site_flows(t: topo.Topology, site: str) -> list[str]:
    """The flows of one site, as lines for `ovs-ofctl -O OpenFlow13 add-flows`."""
    me = t.site(site)
    hosts = t.hosts_of(site)
    local_src = None
    if len(me.rlocs) > 1:
        local_src = me.rlocs[0].address  # tunnel port has local_ip=flow: say which RLOC
    flows: list[str] = []

    def add(priority: int, match: str, actions: str) -> None:
        flows.append(f"cookie={STATIC_COOKIE:#x},table=0,priority={priority},{match} actions={actions}")

    gw_mac = {(e.iid, e.gateway): e.gateway_mac for e in me.eid_prefixes}
    for h in hosts:
        gmac = gw_mac[h.iid, h.gateway]
        add(1000, f"in_port={h.ofport},arp,arp_op=1,arp_tpa={h.gateway}", _ARP_REPLY.format(mac=gmac))
        for peer in hosts:
            if peer is h or peer.iid != h.iid:
                continue
            add(1000, f"in_port={h.ofport},arp,arp_op=1,arp_tpa={peer.address}", _ARP_REPLY.format(mac=peer.mac))
            add(800, f"in_port={h.ofport},dl_dst={peer.mac}", f"output:{peer.ofport}")
            add(700, f"in_port={h.ofport},ip,nw_dst={peer.address}",
                f"set_field:{gmac}->eth_src,set_field:{peer.mac}->eth_dst,output:{peer.ofport}")
        for other in t.sites:
            if other.name == site:
                continue
            rloc = min(other.rlocs, key=lambda r: (r.priority, -r.weight))
            for e in other.eid_prefixes:
                if e.iid != h.iid or e.prefix.version != 4:
                    continue  # static flows are IPv4 only
                add(900, f"in_port={h.ofport},arp,arp_op=1,arp_tpa={e.prefix}", _ARP_REPLY.format(mac=gmac))
                src = f"set_field:{local_src}->tun_src," if local_src else ""
                add(100 + e.prefix.prefixlen, f"in_port={h.ofport},ip,nw_dst={e.prefix}",
                    f"set_field:{e.iid}->tun_id,{src}set_field:{rloc.address}->tun_dst,output:{topo.TUNNEL_OFPORT}")
        add(600, f"in_port={topo.TUNNEL_OFPORT},tun_id={h.iid},ip,nw_dst={h.address}",
            f"set_field:{gmac}->eth_src,set_field:{h.mac}->eth_dst,output:{h.ofport}")
    return flows


def all_flows(t: topo.Topology) -> dict[str, list[str]]:
    return {s.name: site_flows(t, s.name) for s in t.sites}


def install(state: LabState | None = None) -> dict[str, int]:
    """Replace the static flows on every site's br-int; returns flows per site."""
    state = state or load_state()
    t = topology_load.load(Path(state.topology))
    counts = {}
    for site, flows in all_flows(t).items():
        ofctl(site, "del-flows", f"cookie={STATIC_COOKIE:#x}/-1", state=state)
        ofctl(site, "add-flows", "-", input="\n".join(flows) + "\n", state=state)
        counts[site] = len(flows)
        log.info("site %s: installed %d static flows", site, len(flows))
    return counts
