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
controller's) keeps tunnelling to the one site its map-cache names: the old
site, or the destination if the workload was there before.  Each of the two
sends that on to the other too, so it reaches whichever holds the workload
when it comes.  The copies of this controller's ITRs stay where they arrive
(they send both sites their own), picked out by their tunnel's source RLOC:

    old site     DECAP  EID, tun_src = one of ours -> local delivery
    old site     DECAP  EID                        -> local delivery, tunnel to new RLOC
    destination  DECAP  EID, tun_src = one of ours -> new port (or controller)
    destination  DECAP  EID                        -> new port (or controller), tunnel to old RLOC

The controller output comes first: after a tunnel's set_fields and output,
ovs-vswitchd 3.1 (userspace datapath) died on the first packet, as it did
with the two as buckets of an ALL group.

A site may have several RLOCs, and its preferred one may be dead.  Each copy
for such a site (an ITR's bucket, what either site sends on, an old site's
redirect afterwards) goes through a fast-failover group over the site's RLOCs
that BFD ports watch, best first, ending with the controller's pick (the first
one probing does not call down) through the flow-based port: the switch skips a
dead RLOC as it does for a map-cache entry (`failover.to_site`).

Both end by themselves: the ITR's when its map-cache places the EID at the
new RLOC (the publication that follows the registration at the new site) or
at the move's deadline; the destination's when the host is learned; the old
site's when the host has left (its departure).  A diff then removes the
flows and groups (make-before-break as everywhere).
"""

from __future__ import annotations

import zlib
from typing import Callable, Iterable

from lisp_ryu.flows import failover
from lisp_ryu.flows.model import Action, Bucket, Flow, Group, GroupAction, Output, match
from lisp_ryu.flows.pipeline import (METADATA_IID_MASK, PRIO_KNOWN_HOST, PRIO_LOCAL_HOST, PRIO_PLANNED_MOVE, Owner,
                                     Table, cookie, known_host_classify)
from lisp_ryu.plan import Expected, Leaving, LocalHost, Redirect, Replicate, served_before_learning

ETH_RARP = 0x8035

# Group ids of replication groups: their own range, above the map-cache's (< 0x7FFFFFFF).
GROUP_BASE = 0x80000000
GROUP_SPACE = 0x3FFFFFFF


def _eth(ip) -> tuple[int, str]:
    return (0x0800, "ipv4_dst") if ip.version == 4 else (0x86DD, "ipv6_dst")


# Above the host's own delivery (PRIO_LOCAL_HOST) at the old site, while it is leaving.
PRIO_LEAVING = PRIO_LOCAL_HOST + 1


def expect_cookie(iid: int, ip) -> int:
    """The cookie of the destination's flows for a workload it expects (the controller reads
    their counters: glue.moves.delivering)."""
    return cookie(Owner.PLANNED_MOVE, iid, f"expect {ip}")


# The kinds of group owners (group_ids' keys are (kind, iid, EID)): an xTR has one role in a
# move of an EID, but a departed EID's redirect and its announced return meet at the old site.
REPLICATE, EXPECT, LEAVE, REDIRECT = "replicate", "expect", "leave", "redirect"
ONWARD_GROUPS = 2  # a copy sent on to a site that fails over: out of the tunnel port, and back out of IN_PORT


def group_ids(wanted: Iterable[tuple[tuple, int]]) -> dict[tuple, tuple[int, ...]]:
    """Stable ids for the groups of planned moves and redirects, `count` for each (kind, iid, EID)
    key of `wanted`: a hash of the key, probed on collision in a fixed order."""
    ids: dict[tuple, tuple[int, ...]] = {}
    used: set[int] = set()

    def take(gid: int) -> int:
        while gid in used:
            gid = GROUP_BASE + ((gid - GROUP_BASE + 1) & GROUP_SPACE)
        used.add(gid)
        return gid

    for (kind, iid, ip), count in sorted((w for w in wanted if w[1]),
                                         key=lambda w: (w[0][0], w[0][1], w[0][2].version, int(w[0][2]))):
        name = f"{iid}/{ip}" if kind == REPLICATE else f"{kind} {iid}/{ip}"
        first = take(GROUP_BASE + (zlib.crc32(name.encode()) & GROUP_SPACE))
        ids[(kind, iid, ip)] = (first, *(take(first) for _ in range(count - 1)))
    return ids


def move_group_ids(replicates: tuple[Replicate, ...], expected: tuple[Expected, ...], leaving: tuple[Leaving, ...],
                   redirects: tuple[Redirect, ...], ports: tuple[tuple[object, int], ...]) -> dict[tuple, tuple]:
    """The group ids of every planned move and redirect of a plan (`ports`: its BFD ports, (remote
    RLOC, ofport)): an ITR's ALL group and one fast-failover group per copy for a site that fails
    over (`failovers_needed`); ONWARD_GROUPS for each copy the old site, the destination or a
    redirect sends on to such a site."""
    wanted = [((REPLICATE, r.iid, r.ip), 1 + failovers_needed(r, ports)) for r in replicates]
    if not ports:  # nothing fails over: only the replications' ALL groups (a push after an evacuation
        return group_ids(wanted)  # walks 200 redirects for nothing otherwise)
    onward = lambda site: ONWARD_GROUPS if failover.site_fails_over(site, ports) else 0  # noqa: E731
    wanted += [((EXPECT, e.iid, e.ip), onward(e.old_site) if e.old_rloc is not None else 0) for e in expected]
    wanted += [((LEAVE, x.iid, x.ip), onward(x.site)) for x in leaving]
    wanted += [((REDIRECT, r.iid, r.ip), onward(r.site)) for r in redirects]
    return group_ids(wanted)


def failovers_needed(r: Replicate, ports: tuple[tuple[object, int], ...]) -> int:
    """How many of `r`'s copies fail over in the switch: those whose site has another RLOC and
    a BFD port towards one of them (`ports`: (remote RLOC, ofport))."""
    return sum(1 for site in _sites(r) if failover.site_fails_over(site, ports))


def _sites(r: Replicate) -> list[tuple]:
    """Each distinct RLOC of `r` with its site's RLOCs (best first), or itself alone."""
    sites = dict(zip(r.rlocs, r.sites))
    return [sites.get(rloc) or (rloc,) for rloc in dict.fromkeys(r.rlocs)]


def onward(iid: int, rloc, site: tuple, gids: tuple[int, ...], tunnel_actions: Callable[..., tuple[Action, ...]],
           ports: tuple[tuple[object, int], ...], tunnel_port: int) -> tuple[Callable[..., tuple], list[Group]]:
    """How a copy goes on to `rloc`'s site (`site`: its RLOCs, best first): `to(out_port=None)`,
    the actions out of the tunnel port or back out of the one it came in on ("in_port"), and the
    groups they need.  With `gids` (ONWARD_GROUPS of them), each way is a fast-failover group over
    the site's RLOCs (`failover.to_site`), so the switch itself skips a dead one.
    `tunnel_actions(iid, rloc, out_port=None)`."""
    if not gids:
        return (lambda out_port=None: tunnel_actions(iid, rloc, out_port=out_port)), []
    ways = dict(zip((None, "in_port"), gids))
    groups = [failover.to_site(gid, site, tunnel_actions(iid, rloc, out_port=way), ports, tunnel_port,
                               lambda a, way=way: tunnel_actions(iid, a, out_port=way)) for way, gid in ways.items()]

    def to(out_port=None) -> tuple[Action, ...]:
        if out_port not in ways:
            raise ValueError(f"a copy sent on through a failover group leaves by the tunnel port or IN_PORT, "
                             f"not {out_port!r}")
        return (GroupAction(ways[out_port]),)
    return to, groups


def planned(replicates: tuple[Replicate, ...], expected: tuple[Expected, ...], leaving: tuple[Leaving, ...],
            hosts: tuple[LocalHost, ...], ids: dict[tuple, tuple],
            replicate_one: Callable[[Replicate, tuple], tuple[tuple, tuple]],
            expected_one: Callable[[Expected, tuple], tuple[tuple, tuple]],
            leaving_one: Callable[[Leaving, LocalHost, tuple], tuple[tuple, tuple]]) -> tuple[list[Flow], list[Group]]:
    """Every planned move's flows and groups at this xTR, in whichever role it has in each.

    Each move's are made by the compiler's memoised `replicate_one` (`replicate_flows`),
    `expected_one` (`expected_flows`) and `leaving_one` (`leaving_flows`): in a planned
    evacuation every switch holds 200 of them and is pushed at each announcement and arrival.
    `ids` (`move_group_ids`): each move's group ids, handed to its `_one` maker with the move."""
    flows: list[Flow] = []
    groups: list[Group] = []
    for r in replicates:
        r_flows, r_groups = replicate_one(r, ids[(REPLICATE, r.iid, r.ip)])
        flows += r_flows
        groups += r_groups
    local = {(h.iid, h.ip): h for h in hosts}
    announced_at: dict[int, Flow] = {}
    for e in expected:
        if (e.iid, e.ip) in local:
            continue  # already here: its own flows serve it
        e_flows, e_groups = expected_one(e, ids.get((EXPECT, e.iid, e.ip), ()))
        flows += e_flows
        groups += e_groups
        if e.at is not None:
            # A hypervisor announces a migrated VM by RARP (QEMU does, for a guest that does not
            # announce itself): from the announced port, to the controller, which knows the MAC.
            announced_at.setdefault(e.at.port, Flow(Table.CLASSIFY, PRIO_KNOWN_HOST,
                                                    match(in_port=e.at.port, eth_type=ETH_RARP),
                                                    actions=(Output("controller", 0xFFFF),),
                                                    cookie=expect_cookie(e.iid, e.ip)))
    flows += announced_at.values()
    for x in leaving:
        host = local.get((x.iid, x.ip))
        if host is not None:  # else gone already: its redirect serves it
            x_flows, x_groups = leaving_one(x, host, ids.get((LEAVE, x.iid, x.ip), ()))
            flows += x_flows
            groups += x_groups
    return flows, groups


def replicate_flows(r: Replicate, gids: tuple[int, ...], tunnel_actions: Callable[[int, object], tuple[Action, ...]],
                    ports: tuple[tuple[object, int], ...] = (), tunnel_port: int = 0) -> tuple[list[Flow], list[Group]]:
    """ITR side: the EID's ROUTE flow to an ALL group of one bucket per RLOC (`gids[0]`), or
    straight to the one RLOC if there is only one.  A copy whose site has other RLOCs and BFD
    ports towards them (`ports`) goes through a fast-failover group of its own (`gids[1:]`,
    `failover.to_site`): a planned move to or from a multihomed site whose preferred link is
    down loses nothing at the switchover."""
    rlocs = tuple(dict.fromkeys(r.rlocs))
    if not rlocs:
        return [], []
    owner = cookie(Owner.PLANNED_MOVE, r.iid, f"replicate {r.ip}")
    flow_match = _route_match(r.iid, r.ip)
    spare = iter(gids[1:])
    groups: list[Group] = []
    copies = []
    for rloc, site in zip(rlocs, _sites(r)):
        tunnel = tunnel_actions(r.iid, rloc)
        if failover.site_fails_over(site, ports):
            gid = next(spare)
            groups.append(failover.to_site(gid, site, tunnel, ports, tunnel_port,
                                           lambda a: tunnel_actions(r.iid, a)))
            tunnel = (GroupAction(gid),)
        copies.append(tunnel)
    if len(copies) == 1:
        return [Flow(Table.ROUTE, PRIO_PLANNED_MOVE, flow_match, actions=copies[0], cookie=owner)], groups
    groups.append(Group(gids[0], "all", tuple(Bucket(0, actions) for actions in copies)))
    return [Flow(Table.ROUTE, PRIO_PLANNED_MOVE, flow_match, actions=(GroupAction(gids[0]),), cookie=owner)], groups


def expected_flows(e: Expected, tunnel_port: int, fixed_ports: bool, onward_to: Callable[..., tuple[Action, ...]],
                   deliver_actions: Callable[[LocalHost], tuple[Action, ...]]) -> list[Flow]:
    """Destination side, for an announced workload not here yet: decapsulated traffic for it is
    delivered to the port announced for it, or else goes to the controller (held there), and,
    but from the ITRs at `e.replicated_by` (they send the old site their own copy), tunnelled
    on to its old site (`e.old_rloc`), where it still is until the switchover: an ITR whose
    map-cache still names this site (the workload was here before) loses nothing meanwhile.
    What our own hosts send it goes to both as well.

    With the port announced, an IPv4 workload's own packets from that port are classified as
    a known host's from the announcement on (`plan.served_before_learning`), so its replies
    leave through the switch at the switchover instead of waiting for its learn and push.
    `onward_to(out_port=None)`: tunnelled to the old site (`onward`); `fixed_ports` as for `leaving_flows`."""
    owner = expect_cookie(e.iid, e.ip)
    fields = _decap_fields(e.iid, e.ip)
    here = _to_workload(e, deliver_actions)
    if e.old_rloc is None:
        out = [Flow(Table.DECAP, PRIO_PLANNED_MOVE, match(**fields), actions=here, cookie=owner)]
    else:  # the controller output (holding) first: see the module's note on ovs-vswitchd 3.1
        out = _sent_on(fields, PRIO_PLANNED_MOVE - 1, tunnel_port, fixed_ports, here, onward_to, owner)
        out += _kept(fields, PRIO_PLANNED_MOVE, e.replicated_by, here, owner)
    if e.at is not None and served_before_learning(e.ip):
        # Its ARP stays out of this flow and meets the learning flow as before (a gratuitous
        # ARP announces a migrated VM, any ARP request names its address as the sender): that
        # is how the controller sees the arrival.  The learned host's flow then replaces it.
        out.append(known_host_classify(e.at.port, e.iid, e.ip, owner))
    if e.old_rloc is not None or e.at is not None:
        there = onward_to() if e.old_rloc is not None else ()
        out.append(Flow(Table.ROUTE, PRIO_PLANNED_MOVE, _route_match(e.iid, e.ip),
                        actions=(*_to_workload(e, deliver_actions), *there), cookie=owner))
    return out


def leaving_flows(x: Leaving, host: LocalHost, tunnel_port: int, fixed_ports: bool,
                  onward_to: Callable[..., tuple[Action, ...]], deliver: tuple[Action, ...]) -> list[Flow]:
    """The old site's flows for a workload leaving it (`host`, still here), `deliver`ing to it.

    ROUTE: what our own hosts send it is delivered and tunnelled to the new RLOC too.  DECAP:
    what an ITR tunnels to it here is delivered and sent on to the new RLOC, but what the ITRs
    at `x.replicated_by` tunnel (they send the new site a copy themselves) is only delivered.
    Sent on as a redirect is: back out of the tunnel port it came in on (IN_PORT), or out of it
    by number from a BFD port (`fixed_ports`).  `onward_to(out_port=None)`: tunnelled to the
    new site (`onward`)."""
    owner = cookie(Owner.PLANNED_MOVE, x.iid, f"leave {x.ip}")
    out = [Flow(Table.ROUTE, PRIO_LEAVING, _route_match(x.iid, x.ip),
                actions=(*deliver, *onward_to()), cookie=owner)]
    fields = _decap_fields(x.iid, x.ip)
    out += _sent_on(fields, PRIO_LEAVING + 1, tunnel_port, fixed_ports, deliver, onward_to, owner)
    return out + _kept(fields, PRIO_LEAVING + 2, x.replicated_by, deliver, owner)


def _sent_on(fields: dict, priority: int, tunnel_port: int, fixed_ports: bool, here: tuple[Action, ...],
             onward: Callable[..., tuple[Action, ...]], owner: int) -> list[Flow]:
    """DECAP: what is tunnelled to the workload goes `here` and `onward` (to the other site) too,
    as a redirect goes (`failover.redirect_flows`): back out of the tunnel port it came in on
    (IN_PORT), or, from a BFD port, out of the tunnel port by number, one priority lower."""
    hairpin = (*here, *onward(out_port="in_port"))
    flow = Flow(Table.DECAP, priority, match(**fields), actions=hairpin, cookie=owner)
    return failover.redirect_flows(flow, tunnel_port, hairpin, (*here, *onward())) if fixed_ports else [flow]


def _kept(fields: dict, priority: int, replicated_by: tuple, here: tuple[Action, ...], owner: int) -> list[Flow]:
    """DECAP: what the ITRs at `replicated_by` tunnel to the workload goes `here` only (they send
    the other site a copy themselves), told apart by the tunnel's source RLOC."""
    out = []
    for rloc in sorted(set(replicated_by), key=lambda a: (a.version, int(a))):
        source = "tun_ipv4_src" if rloc.version == 4 else "tun_ipv6_src"
        out.append(Flow(Table.DECAP, priority, match(**fields, **{source: str(rloc)}), actions=here, cookie=owner))
    return out


def _decap_fields(iid: int, ip) -> dict:
    """A DECAP match's fields for what is tunnelled to `ip` in instance `iid`."""
    eth_type, dst_field = _eth(ip)
    return {"tunnel_id": iid, "eth_type": eth_type, dst_field: str(ip)}


def _route_match(iid: int, ip) -> tuple:
    eth_type, dst_field = _eth(ip)
    return match(metadata=(iid, METADATA_IID_MASK), eth_type=eth_type, **{dst_field: str(ip)})


def _to_workload(e: Expected, deliver_actions: Callable[[LocalHost], tuple[Action, ...]]) -> tuple[Action, ...]:
    """Where the destination sends what is for an announced workload: its new port, if announced,
    else the controller (which holds it)."""
    return deliver_actions(e.at) if e.at is not None else (Output("controller", 0xFFFF),)
