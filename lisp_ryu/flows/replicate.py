"""Planned moves in the data plane: replicate to both RLOCs, hold at the destination.

draft-ietf-lisp-predictive-rlocs: while a workload is known to be moving,
an ITR sends its traffic to the RLOCs of both the site it leaves and the
site it goes to, so whichever site holds the workload when a packet arrives
delivers it.  In OpenFlow that is a group of type ALL, one bucket per RLOC
(each bucket encapsulates its own copy), and one ROUTE flow for the EID's
host route above every map-cache prefix (`PRIO_PLANNED_MOVE`) and below a
host that is here:

    ROUTE  metadata=iid, ipv4_dst=EID  -> group ALL
             bucket: tunnel_id=iid, tun_dst=old RLOC, output tunnel port
             bucket: tunnel_id=iid, tun_dst=new RLOC, output tunnel port

The destination site delivers the EID's traffic to the workload's new
port from the announcement on when the orchestrator named that port (it
plugs the new vif before the switchover, as a live migration does): the
switch alone then serves the move, and no packet waits for the controller.
Without a port it cannot deliver: its DECAP table sends the EID's traffic
to the controller (not metered: the window is short and every packet
counts), which holds it until the host's first packet teaches the port,
then delivers it.  Either way the receiver sees duplicates of what the old
site delivered meanwhile: expected, the price of losing nothing.

The two sites' own hosts talk to the workload too, and no ITR replicates
for them: the destination's hosts send it to the old site (its map-cache)
and to the new port (or the controller, held with the rest), the old site's
hosts have it delivered locally and tunnelled to the new site, each by one
ROUTE flow for the EID whose action list outputs twice:

    destination  ROUTE  EID -> new port (or controller), tunnel to old RLOC
    old site     ROUTE  EID -> local delivery, tunnel to new RLOC

An ITR that knows nothing of the move (another implementation's, another
controller's) keeps tunnelling to the old site alone; the old site sends
that on too, so it reaches the new site whichever holds the workload when
it comes.  The copies of this controller's ITRs stay at the old site (they
send the new site their own), picked out by their tunnel's source RLOC:

    old site     DECAP  EID, tun_src = one of ours -> local delivery
    old site     DECAP  EID                        -> local delivery, tunnel to new RLOC

The controller output comes first: after a tunnel's set_fields and output,
ovs-vswitchd 3.1 (userspace datapath) died on the first packet, as it did
with the two as buckets of an ALL group.

Both end by themselves: the ITR's when its map-cache places the EID at the
new RLOC (the publication that follows the registration at the new site) or
at the move's deadline; the destination's when the host is learned; the old
site's when the host has left (its departure).  A diff then removes the
flows and groups (make-before-break as everywhere).
"""

from __future__ import annotations

import zlib
from typing import Callable

from lisp_ryu.flows.model import Action, Bucket, Flow, Group, GroupAction, Output, match
from lisp_ryu.flows.pipeline import (PRIO_KNOWN_HOST, PRIO_LOCAL_HOST, PRIO_PLANNED_MOVE, Owner, Table, cookie,
                                     known_host_classify)
from lisp_ryu.plan import Expected, Leaving, LocalHost, Replicate, served_before_learning

ETH_RARP = 0x8035

# Group ids of replication groups: their own range, above the map-cache's (< 0x7FFFFFFF).
GROUP_BASE = 0x80000000
GROUP_SPACE = 0x3FFFFFFF
METADATA_IID_MASK = 0xFFFFFF


def _eth(ip) -> tuple[int, str]:
    return (0x0800, "ipv4_dst") if ip.version == 4 else (0x86DD, "ipv6_dst")


# Above the host's own delivery (PRIO_LOCAL_HOST) at the old site, while it is leaving.
PRIO_LEAVING = PRIO_LOCAL_HOST + 1


def expect_cookie(iid: int, ip) -> int:
    """The cookie of the destination's flows for a workload it expects (the controller reads
    their counters: glue.moves.delivering)."""
    return cookie(Owner.PLANNED_MOVE, iid, f"expect {ip}")


def group_ids(replicates: tuple[Replicate, ...]) -> dict[tuple, int]:
    """Stable ids: a hash of (iid, EID), probed on collision in a fixed order."""
    ids: dict[tuple, int] = {}
    used: set[int] = set()
    for r in sorted(replicates, key=lambda r: (r.iid, r.ip.version, int(r.ip))):
        gid = GROUP_BASE + (zlib.crc32(f"{r.iid}/{r.ip}".encode()) & GROUP_SPACE)
        while gid in used:
            gid = GROUP_BASE + ((gid - GROUP_BASE + 1) & GROUP_SPACE)
        used.add(gid)
        ids[(r.iid, r.ip)] = gid
    return ids


def planned(replicates: tuple[Replicate, ...], expected: tuple[Expected, ...], leaving: tuple[Leaving, ...],
            hosts: tuple[LocalHost, ...], tunnel_actions: Callable[..., tuple[Action, ...]],
            deliver_actions: Callable[[LocalHost], tuple[Action, ...]], tunnel_port: int | None = None,
            fixed_ports: bool = False) -> tuple[list[Flow], list[Group]]:
    """Every planned move's flows and groups at this xTR, in whichever role it has in each.

    `tunnel_actions(iid, rloc, out_port=None)` encapsulates; `fixed_ports`: tunnelled traffic
    may also arrive on BFD ports (flows/failover.py), not only on `tunnel_port`."""
    flows, groups = replicate(replicates, tunnel_actions)
    local = {(h.iid, h.ip): h for h in hosts}
    flows += hold(expected, set(local), deliver_actions)
    for e in expected:
        if (e.iid, e.ip) in local or (e.old_rloc is None and e.at is None):
            continue
        there = tunnel_actions(e.iid, e.old_rloc) if e.old_rloc is not None else ()
        flows.append(Flow(Table.ROUTE, PRIO_PLANNED_MOVE, _route_match(e.iid, e.ip),
                          actions=(*_to_workload(e, deliver_actions), *there),
                          cookie=expect_cookie(e.iid, e.ip)))
    for x in leaving:
        host = local.get((x.iid, x.ip))
        if host is None:
            continue  # gone already: its redirect serves it
        flows.append(Flow(Table.ROUTE, PRIO_LEAVING, _route_match(x.iid, x.ip),
                          actions=(*deliver_actions(host), *tunnel_actions(x.iid, x.rloc)),
                          cookie=cookie(Owner.PLANNED_MOVE, x.iid, f"leave {x.ip}")))
        if tunnel_port is not None:
            flows += _forward_tunnelled(x, host, tunnel_port, fixed_ports, tunnel_actions, deliver_actions)
    return flows, groups


def _forward_tunnelled(x: Leaving, host: LocalHost, tunnel_port: int, fixed_ports: bool,
                       tunnel_actions: Callable[..., tuple[Action, ...]],
                       deliver_actions: Callable[[LocalHost], tuple[Action, ...]]) -> list[Flow]:
    """The old site's DECAP flows for a leaving workload: what an ITR tunnels to it here is
    delivered and sent on to the new RLOC, but what the ITRs at `x.replicated_by` tunnel (they
    send the new site a copy themselves) is only delivered.  Sent on as a redirect is: back out
    of the tunnel port it came in on (IN_PORT), or out of it by number from a BFD port."""
    owner = cookie(Owner.PLANNED_MOVE, x.iid, f"leave {x.ip}")
    eth_type, dst_field = _eth(x.ip)
    fields = {"tunnel_id": x.iid, "eth_type": eth_type, dst_field: str(x.ip)}
    deliver = deliver_actions(host)
    hairpin = (*deliver, *tunnel_actions(x.iid, x.rloc, out_port="in_port"))
    if fixed_ports:
        out = [Flow(Table.DECAP, PRIO_LEAVING + 1, match(in_port=tunnel_port, **fields), actions=hairpin,
                    cookie=owner),
               Flow(Table.DECAP, PRIO_LEAVING, match(**fields), actions=(*deliver, *tunnel_actions(x.iid, x.rloc)),
                    cookie=owner)]
    else:
        out = [Flow(Table.DECAP, PRIO_LEAVING + 1, match(**fields), actions=hairpin, cookie=owner)]
    for rloc in sorted(set(x.replicated_by), key=lambda a: (a.version, int(a))):
        source = "tun_ipv4_src" if rloc.version == 4 else "tun_ipv6_src"
        out.append(Flow(Table.DECAP, PRIO_LEAVING + 2, match(**fields, **{source: str(rloc)}), actions=deliver,
                        cookie=owner))
    return out


def _route_match(iid: int, ip) -> tuple:
    eth_type, dst_field = _eth(ip)
    return match(metadata=(iid, METADATA_IID_MASK), eth_type=eth_type, **{dst_field: str(ip)})


def replicate(replicates: tuple[Replicate, ...],
              tunnel_actions: Callable[[int, object], tuple[Action, ...]]) -> tuple[list[Flow], list[Group]]:
    """ITR side: one ALL group and one ROUTE flow per EID in a planned move."""
    flows: list[Flow] = []
    groups: list[Group] = []
    ids = group_ids(replicates)
    for r in replicates:
        rlocs = tuple(dict.fromkeys(r.rlocs))
        if not rlocs:
            continue
        owner = cookie(Owner.PLANNED_MOVE, r.iid, f"replicate {r.ip}")
        flow_match = _route_match(r.iid, r.ip)
        if len(rlocs) == 1:
            flows.append(Flow(Table.ROUTE, PRIO_PLANNED_MOVE, flow_match, actions=tunnel_actions(r.iid, rlocs[0]),
                              cookie=owner))
            continue
        gid = ids[(r.iid, r.ip)]
        groups.append(Group(gid, "all", tuple(Bucket(0, tunnel_actions(r.iid, rloc)) for rloc in rlocs)))
        flows.append(Flow(Table.ROUTE, PRIO_PLANNED_MOVE, flow_match, actions=(GroupAction(gid),), cookie=owner))
    return flows, groups


def hold(expected: tuple[Expected, ...], local: set,
         deliver_actions: Callable[[LocalHost], tuple[Action, ...]]) -> list[Flow]:
    """Destination side: decapsulated traffic for an announced workload not here yet is delivered
    to the port announced for it, or else goes to the controller (held there).

    With the port announced, an IPv4 workload's own packets from that port are classified as
    a known host's from the announcement on (`plan.served_before_learning`), so its replies
    leave through the switch at the switchover instead of waiting for its learn and push."""
    out = []
    announced_at: dict[int, Flow] = {}
    for e in expected:
        if (e.iid, e.ip) in local:
            continue  # already here: its own delivery flow serves it
        owner = expect_cookie(e.iid, e.ip)
        eth_type, dst_field = _eth(e.ip)
        out.append(Flow(Table.DECAP, PRIO_PLANNED_MOVE,
                        match(tunnel_id=e.iid, eth_type=eth_type, **{dst_field: str(e.ip)}),
                        actions=_to_workload(e, deliver_actions), cookie=owner))
        if e.at is None:
            continue
        if served_before_learning(e.ip):
            # Its ARP stays out of this flow and meets the learning flow as before (a gratuitous
            # ARP announces a migrated VM, any ARP request names its address as the sender): that
            # is how the controller sees the arrival.  The learned host's flow then replaces it.
            out.append(known_host_classify(e.at.port, e.iid, e.ip, owner))
        # A hypervisor announces a migrated VM by RARP (QEMU does, for a guest that does not
        # announce itself): from the announced port, to the controller, which knows the MAC.
        announced_at.setdefault(e.at.port, Flow(Table.CLASSIFY, PRIO_KNOWN_HOST,
                                                match(in_port=e.at.port, eth_type=ETH_RARP),
                                                actions=(Output("controller", 0xFFFF),), cookie=owner))
    return out + list(announced_at.values())


def _to_workload(e: Expected, deliver_actions: Callable[[LocalHost], tuple[Action, ...]]) -> tuple[Action, ...]:
    """Where the destination sends what is for an announced workload: its new port, if announced,
    else the controller (which holds it)."""
    return deliver_actions(e.at) if e.at is not None else (Output("controller", 0xFFFF),)
