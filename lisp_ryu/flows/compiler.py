"""Desired state of one xTR switch -> the exact set of flows, groups and meters.

Pure: the same plan always compiles to the same `DesiredState`, so the glue
can recompile from scratch on every change and let the diff decide what to
send.  See `pipeline.py` for the tables.
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass, replace
from functools import lru_cache

from lisp_ryu.flows import failover, neighbour, replicate
from lisp_ryu.flows.model import (
    Action,
    Bucket,
    DesiredState,
    Flow,
    FlowSet,
    Group,
    GroupAction,
    Meter,
    Move,
    Output,
    SetField,
    match,
)
from lisp_ryu.flows.pipeline import (
    METADATA_IID_MASK,
    PRIO_ARP_PROXY,
    PRIO_ARP_SELF,
    PRIO_CLASSIFY,
    PRIO_DEFAULT,
    PRIO_KNOWN_HOST,
    PRIO_LEARN,
    PRIO_TUNNEL_ANY_PORT,
    PRIO_LEARN_ANY_PORT,
    PRIO_LOCAL_HOST,
    PRIO_MISS,
    PRIO_TUNNEL,
    Owner,
    Table,
    check_flow,
    cookie,
    known_host_classify,
    prefix_priority,
)
from lisp_ryu.plan import (Expected, Leaving, LocalHost, Redirect, RemoteAction, RemoteEntry, Replicate, Rloc, XtrPlan,
                           cached_hash)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ETH_IPV4, ETH_IPV6, ETH_ARP = 0x0800, 0x86DD, 0x0806
MISS_METER_ID = 1
LEARN_METER_ID = 2
# Arrivals come in bursts (a rack evacuated: hundreds of gratuitous ARPs within a
# second); a learning packet the meter drops leaves its workload unreachable until
# it happens to send again.  The rate still bounds a sustained flood.
LEARN_BURST = 1000
RLOC_UNUSABLE_PRIORITY = 255  # RFC 9300: priority 255 means "do not use for unicast"


class CompileError(ValueError):
    """The plan is inconsistent (a host port without an instance-ID, ...)."""


def compile_plan(plan: XtrPlan) -> DesiredState:
    groups: list[Group] = []
    # What changes with the site's configuration only, memoised on the plan's fields it reads:
    # a push after a move or a Map-Reply recompiles only what moved.  Every memoised run of
    # flows is a FlowSet (its set and keys made once); the loose flows are the few made per push.
    segments: list[FlowSet] = [_infrastructure(replace(plan, hosts=(), remotes=(), redirects=(), peers=(), probers=(),
                                                       replicates=(), expected=(), leaving=(), petr=None,
                                                       tunnel_source=None, miss_rate_pps=0, learn_rate_pps=0))]
    loose: list[Flow] = []
    ports = failover.fixed_ports(plan.tunnel_source, plan.failover_ports)
    context = _context(plan.tunnel_port, plan.tunnel_source, plan.petr, plan.native_port, ports)
    move_ids = replicate.move_group_ids(plan.replicates, plan.expected, plan.leaving, plan.redirects, ports)
    redirect_segments, redirect_groups = _redirects(plan, context, move_ids)
    segments += redirect_segments  # memoised per redirect, checked when first compiled
    groups += redirect_groups
    segments += _local_hosts(plan)  # memoised per host, checked when first compiled
    group_ids = (failover.allocate_group_ids(plan.remotes, ports, usable_rlocs) if ports
                 else _allocate_group_ids(plan.remotes))
    for entry in plan.remotes:  # each entry's flows are memoised, checked when first compiled
        gid = (group_ids.get((entry.iid, entry.prefix, entry.source))
               if len(entry.rlocs) > 1 or len(entry.replicate) > 1 else None)
        entry_flows, entry_groups = _remote_compiled(entry, gid, context)
        segments.append(entry_flows)
        groups += entry_groups
    loose += _source_specific_misses(plan.remotes)
    if plan.replicates or plan.expected or plan.leaving:  # planned moves (flows/replicate.py)
        moving, moving_groups = replicate.planned(
            plan.replicates, plan.expected, plan.leaving, plan.hosts, move_ids,
            lambda r, gids: _replicate_flows(r, gids, context),
            lambda e, gids: _expected_flows(e, context, None if e.at is None else _gateway_mac(plan, e.at.iid, e.at.ip),
                                            bool(plan.failover_ports), gids),
            lambda x, host, gids: _leaving_flows(x, host, context, _gateway_mac(plan, host.iid, host.ip),
                                                 bool(plan.failover_ports), gids))
        loose += moving
        groups += moving_groups
    flows, keys, count = set(loose), {f.key_hash for f in loose}, len(loose)
    for segment in segments:
        flows |= segment.as_set
        keys |= segment.key_hashes
        count += len(segment)
    if len(keys) != count:  # equal keys hash alike: no repeat, no duplicate
        every = [f for segment in segments for f in segment] + loose
        all_keys = [f.key for f in every]
        if len(set(all_keys)) != len(all_keys):
            dup = next(k for k in all_keys if all_keys.count(k) > 1)
            raise CompileError(f"two flows share table/priority/match {dup}")
    meters = {Meter(MISS_METER_ID, plan.miss_rate_pps, burst=plan.miss_rate_pps)}
    if plan.dynamic_prefixes:
        meters.add(Meter(LEARN_METER_ID, plan.learn_rate_pps, burst=max(plan.learn_rate_pps, LEARN_BURST)))
    return DesiredState(flows=frozenset(flows), groups=frozenset(groups), meters=frozenset(meters))


@lru_cache(maxsize=16)
def _infrastructure(plan: XtrPlan) -> FlowSet:
    """The flows of the ports, learning, ARP and neighbour answers, the PxTR and the misses:
    `plan` holds only what they read (its hosts, map-cache and moves are empty)."""
    flows = _classify(plan) + _learning(plan) + _arp(plan) + neighbour.flows(plan) + _proxy(plan)
    flows.append(Flow(Table.ROUTE, PRIO_MISS, (), actions=(Output("controller", 0xFFFF),),
                      meter=MISS_METER_ID, cookie=cookie(Owner.INFRA, 0, "miss")))
    flows += _unroutable()
    for flow in flows:
        check_flow(flow)
    return FlowSet(flows)


def _classify(plan: XtrPlan) -> list[Flow]:
    infra = cookie(Owner.INFRA)
    out = [Flow(Table.CLASSIFY, PRIO_TUNNEL, match(in_port=plan.tunnel_port), goto=Table.DECAP, cookie=infra)]
    out += failover.classify_flows(plan.failover_ports, PRIO_TUNNEL, Table.DECAP, infra, Table.CLASSIFY)
    for hp in plan.host_ports:
        meta = (hp.iid, METADATA_IID_MASK)
        for eth_type, table in ((ETH_IPV4, Table.ROUTE), (ETH_IPV6, Table.ROUTE), (ETH_ARP, Table.ARP)):
            out.append(Flow(Table.CLASSIFY, PRIO_CLASSIFY, match(in_port=hp.port, eth_type=eth_type),
                            goto=table, write_metadata=meta, cookie=infra))
    return out


def _eth_type(address: IPAddress | IPNetwork) -> tuple[int, str]:
    return (ETH_IPV4, "ipv4_dst") if address.version == 4 else (ETH_IPV6, "ipv6_dst")


def _gateway_mac(plan: XtrPlan, iid: int, ip: IPAddress) -> str:
    for gw in plan.gateways:
        if gw.iid == iid and ip in gw.subnet:
            return gw.mac
    return plan.router_mac


UNROUTABLE = (
    (ETH_IPV4, "ipv4_dst", ipaddress.ip_network("224.0.0.0/4")),  # multicast
    (ETH_IPV4, "ipv4_dst", ipaddress.ip_network("255.255.255.255/32")),  # limited broadcast
    (ETH_IPV6, "ipv6_dst", ipaddress.ip_network("ff00::/8")),  # multicast: router solicitations, MLD
)


def _unroutable() -> list[Flow]:
    """Destinations no mapping can answer for are dropped, not sent to the controller.

    Hosts send IPv6 router solicitations and MLD reports on their own; without
    these flows each one would be a packet-in in steady state.
    """
    return [Flow(Table.ROUTE, PRIO_DEFAULT, match(eth_type=eth_type, **{dst_field: _masked(network)}),
                 cookie=cookie(Owner.INFRA, 0, f"unroutable {network}"))
            for eth_type, dst_field, network in UNROUTABLE]


def _learning(plan: XtrPlan) -> list[Flow]:
    """Unknown sources inside a dynamic-EID prefix go to the controller, metered.

    Known hosts match the higher-priority per-host classification first, so
    only a host that just arrived (its first packet or gratuitous ARP) gets here.

    The instance-ID of an arrival is its port's: on a configured host port,
    only the dynamic-EID prefixes of that port's instance-ID learn (one flow
    per port and prefix, above the port's plain classification), so two
    tenants may reuse one prefix at one site.  A port no configuration names
    (a workload plugged in since) learns below every host port's
    classification, and only in prefixes no other instance-ID's dynamic-EID
    prefix overlaps: there the source alone says which tenant it is.
    """
    out = []
    tunnelled: set[int] = set()
    to_controller = (Output("controller", 0xFFFF),)
    for dyn in plan.dynamic_prefixes:
        owner = cookie(Owner.INFRA, dyn.iid, f"learn {dyn.prefix}")
        eth_type, _ = _eth_type(dyn.prefix)
        src_field = "ipv4_src" if dyn.prefix.version == 4 else "ipv6_src"
        matches = [dict(eth_type=eth_type, **{src_field: _masked(dyn.prefix)})]
        if dyn.prefix.version == 4:
            matches.append(dict(eth_type=ETH_ARP, arp_spa=_masked(dyn.prefix)))
        ports = sorted({hp.port for hp in plan.host_ports if hp.iid == dyn.iid})
        for port in ports:
            for fields in matches:
                out.append(Flow(Table.CLASSIFY, PRIO_LEARN, match(in_port=port, **fields),
                                actions=to_controller, meter=LEARN_METER_ID, cookie=owner))
        shared = any(other.iid != dyn.iid and other.prefix.version == dyn.prefix.version
                     and other.prefix.overlaps(dyn.prefix) for other in plan.dynamic_prefixes)
        if not shared:
            # Decapsulated traffic on a tunnel port no CLASSIFY flow names yet (a BFD port
            # that OVS created before the controller learnt its number) carries its
            # instance-ID as tunnel_id: it is decapsulated, never learned as a host here.
            if dyn.iid and dyn.iid not in tunnelled:
                tunnelled.add(dyn.iid)
                out.append(Flow(Table.CLASSIFY, PRIO_TUNNEL_ANY_PORT, match(tunnel_id=dyn.iid), goto=Table.DECAP,
                                cookie=cookie(Owner.INFRA, dyn.iid, "decap any port")))
            for fields in matches:
                out.append(Flow(Table.CLASSIFY, PRIO_LEARN_ANY_PORT, match(**fields),
                                actions=to_controller, meter=LEARN_METER_ID, cookie=owner))
    return out


def _redirects(plan: XtrPlan, context: _TunnelContext, ids: dict) -> tuple[list[FlowSet], list[Group]]:
    """Traffic that still arrives for a departed EID is tunnelled on to its new RLOC (through
    fast-failover groups over its new site's RLOCs where `ids` has some for it)."""
    out, groups = [], []
    # A departed EID announced back here (a planned move): its traffic goes to its new port (or is
    # held) by the move's own flows, which send on to the site it is leaving only what ITRs that
    # do not replicate tunnel here (flows/replicate.py); the departure itself stays until it
    # arrives, so a configured host is not taken for here too early.
    coming_back = {(e.iid, e.ip) for e in plan.expected}
    with_fixed_ports = bool(plan.failover_ports)
    for r in plan.redirects:
        if (r.iid, r.ip) not in coming_back:
            gids = ids.get((replicate.REDIRECT, r.iid, r.ip), ())
            flows, r_groups = _redirect_flows(r, context, with_fixed_ports, gids)
            out.append(flows)
            groups += r_groups
    return out, groups


def _checked(flows) -> FlowSet:
    """Memoised flows, checked against the declared pipeline once, when first made."""
    for f in flows:
        check_flow(f)
    return FlowSet(flows)


@lru_cache(maxsize=1 << 16)
def _redirect_flows(r: Redirect, context: _TunnelContext, with_fixed_ports: bool,
                    gids: tuple[int, ...]) -> tuple[FlowSet, tuple[Group, ...]]:
    """One redirect's flows and groups, made and checked once (an old site's push after an evacuation has 200)."""
    eth_type, dst_field = _eth_type(r.ip)
    to, groups = _onward(r.iid, r.rloc, r.site, gids, context)
    # It came in on the tunnel port and goes out there again: OpenFlow needs IN_PORT for that.
    actions = to(out_port="in_port")
    flow = Flow(Table.DECAP, PRIO_LOCAL_HOST, match(tunnel_id=r.iid, eth_type=eth_type, **{dst_field: str(r.ip)}),
                actions=actions, cookie=cookie(Owner.REDIRECT, r.iid, str(r.ip)))
    # It may also arrive on a BFD port: leave by the flow-based port's number.
    flows = failover.redirect_flows(flow, context.tunnel_port, actions, to()) if with_fixed_ports else [flow]
    return _checked(flows), tuple(groups)


def _onward(iid: int, rloc: IPAddress, site: tuple, gids: tuple[int, ...], context: _TunnelContext):
    """`replicate.onward` with this plan's tunnel: (to(out_port=None) -> actions, groups)."""
    return replicate.onward(iid, rloc, site, gids,
                            lambda iid, rloc, out_port=None: _tunnel_actions(context, iid, rloc, out_port),
                            context.fixed_ports, context.tunnel_port)


# A planned move's flows in each role, made and checked once per move (flows/replicate.py).

@lru_cache(maxsize=1 << 16)
def _replicate_flows(r: Replicate, gids: tuple[int, ...],
                     context: _TunnelContext) -> tuple[tuple[Flow, ...], tuple[Group, ...]]:
    flows, groups = replicate.replicate_flows(r, gids, lambda iid, rloc: _tunnel_actions(context, iid, rloc),
                                              context.fixed_ports, context.tunnel_port)
    return _checked(flows), tuple(groups)


@lru_cache(maxsize=1 << 16)
def _expected_flows(e: Expected, context: _TunnelContext, gateway_mac: str | None,
                    with_fixed_ports: bool, gids: tuple[int, ...]) -> tuple[FlowSet, tuple[Group, ...]]:
    to, groups = _onward(e.iid, e.old_rloc, e.old_site, gids, context) if e.old_rloc is not None else (None, [])
    flows = replicate.expected_flows(e, context.tunnel_port, with_fixed_ports, to,
                                     lambda host: _deliver_actions(host, gateway_mac))
    return _checked(flows), tuple(groups)


@lru_cache(maxsize=1 << 16)
def _leaving_flows(x: Leaving, host: LocalHost, context: _TunnelContext, gateway_mac: str,
                   with_fixed_ports: bool, gids: tuple[int, ...]) -> tuple[FlowSet, tuple[Group, ...]]:
    to, groups = _onward(x.iid, x.rloc, x.site, gids, context)
    flows = replicate.leaving_flows(x, host, context.tunnel_port, with_fixed_ports, to,
                                    _deliver_actions(host, gateway_mac))
    return _checked(flows), tuple(groups)


def _local_hosts(plan: XtrPlan) -> list[FlowSet]:
    return [_host_flows(host, _gateway_mac(plan, host.iid, host.ip)) for host in plan.hosts]


@lru_cache(maxsize=1 << 16)
def _host_flows(host: LocalHost, gateway_mac: str) -> FlowSet:
    """One local host's flows; memoised, as the map-cache entries' are: most never change."""
    out = []
    owner = cookie(Owner.LOCAL_HOST, host.iid, str(host.ip))
    eth_type, dst_field = _eth_type(host.ip)
    meta = (host.iid, METADATA_IID_MASK)
    out.append(known_host_classify(host.port, host.iid, host.ip, owner))
    if host.ip.version == 4:
        out.append(Flow(Table.CLASSIFY, PRIO_KNOWN_HOST,
                        match(in_port=host.port, eth_type=ETH_ARP, arp_spa=str(host.ip)),
                        goto=Table.ARP, write_metadata=meta, cookie=owner))
    deliver = _deliver_actions(host, gateway_mac)
    out.append(Flow(Table.ROUTE, PRIO_LOCAL_HOST,
                    match(metadata=(host.iid, METADATA_IID_MASK), eth_type=eth_type, **{dst_field: str(host.ip)}),
                    actions=deliver, cookie=owner))
    out.append(Flow(Table.DECAP, PRIO_LOCAL_HOST,
                    match(tunnel_id=host.iid, eth_type=eth_type, **{dst_field: str(host.ip)}),
                    actions=deliver, cookie=owner))
    if host.ip.version == 4:
        # A host asking for its own address (gratuitous ARP, duplicate
        # detection) must not get the proxy answer below.
        out.append(Flow(Table.ARP, PRIO_ARP_SELF,
                        match(in_port=host.port, eth_type=ETH_ARP, arp_op=1, arp_tpa=str(host.ip)),
                        cookie=owner))
    for flow in out:
        check_flow(flow)
    return FlowSet(out)


def _deliver_actions(host: LocalHost, gateway_mac: str) -> tuple:
    """To a local host, as from its gateway."""
    return (SetField("eth_src", gateway_mac), SetField("eth_dst", host.mac), Output(host.port))


def _arp(plan: XtrPlan) -> list[Flow]:
    """Proxy-ARP per gateway subnet: every address in it is answered with the gateway MAC.

    So hosts send everything to the gateway MAC, whether the target is the
    gateway, a local host or a remote EID of a stretched subnet, and the
    ROUTE table does the rest - no packet-in per ARP.
    """
    out = []
    for gw in plan.gateways:
        if gw.subnet.version != 4:
            continue  # IPv6: neighbour discovery, answered in flows by flows/neighbour.py
        reply = (
            Move("eth_src", "eth_dst", 48),
            SetField("eth_src", gw.mac),
            SetField("arp_op", 2),
            Move("arp_sha", "arp_tha", 48),
            SetField("arp_sha", gw.mac),
            Move("arp_tpa", "reg0", 32),
            Move("arp_spa", "arp_tpa", 32),
            Move("reg0", "arp_spa", 32),
            Output("in_port"),
        )
        out.append(Flow(Table.ARP, PRIO_ARP_PROXY + gw.subnet.prefixlen,
                        match(metadata=(gw.iid, METADATA_IID_MASK), eth_type=ETH_ARP, arp_op=1,
                              arp_tpa=_masked(gw.subnet)),
                        actions=reply, cookie=cookie(Owner.GATEWAY, gw.iid, str(gw.subnet))))
    return out


def _proxy(plan: XtrPlan) -> list[Flow]:
    """PxTR flows: the native side in (proxy-ITR), decapsulated non-EID traffic out (proxy-ETR)."""
    px = plan.proxy
    if px is None:
        return []
    if plan.native_port is None:
        raise CompileError("a PxTR needs a native_port")
    owner = cookie(Owner.INFRA, px.iid, "proxy")
    meta = (px.iid, METADATA_IID_MASK)
    out = []
    for prefix in px.prefixes:
        eth_type, dst_field = _eth_type(prefix)
        out.append(Flow(Table.CLASSIFY, PRIO_CLASSIFY, match(in_port=plan.native_port, eth_type=eth_type,
                                                             **{dst_field: _masked(prefix)}),
                        goto=Table.ROUTE, write_metadata=meta, cookie=owner))
    out.append(Flow(Table.CLASSIFY, PRIO_CLASSIFY, match(in_port=plan.native_port, eth_type=ETH_ARP),
                    goto=Table.ARP, write_metadata=meta, cookie=owner))
    if px.address is not None and px.address.version == 4:
        reply = (Move("eth_src", "eth_dst", 48), SetField("eth_src", plan.router_mac), SetField("arp_op", 2),
                 Move("arp_sha", "arp_tha", 48), SetField("arp_sha", plan.router_mac),
                 Move("arp_tpa", "reg0", 32), Move("arp_spa", "arp_tpa", 32), Move("reg0", "arp_spa", 32),
                 Output("in_port"))
        out.append(Flow(Table.ARP, PRIO_ARP_SELF, match(in_port=plan.native_port, eth_type=ETH_ARP, arp_op=1,
                                                       arp_tpa=str(px.address)),
                        actions=reply, cookie=owner))
    # Proxy-ETR: below every local-host delivery in DECAP, so local EIDs still win.
    native = (SetField("eth_src", plan.router_mac), SetField("eth_dst", px.next_hop_mac), Output(plan.native_port))
    for eth_type in (ETH_IPV4, ETH_IPV6):
        out.append(Flow(Table.DECAP, PRIO_DEFAULT, match(tunnel_id=px.iid, eth_type=eth_type), actions=native,
                        cookie=owner))
    return out


def _masked(network: IPNetwork) -> str | tuple[str, str]:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return (str(network.network_address), str(network.netmask))


def usable_rlocs(rlocs: tuple[Rloc, ...]) -> tuple[Rloc, ...]:
    """The RLOCs traffic goes to: best priority; weight 0 drains unless all are 0 (RFC 9300 §6)."""
    candidates = [r for r in rlocs if r.priority != RLOC_UNUSABLE_PRIORITY]
    if not candidates:
        return ()
    best = min(r.priority for r in candidates)
    chosen = [r for r in candidates if r.priority == best]
    weighted = [r for r in chosen if r.weight > 0]
    return tuple(sorted(weighted or chosen, key=lambda r: (r.address.version, int(r.address))))


def _tunnel_actions(plan: XtrPlan | _TunnelContext, iid: int, rloc: IPAddress,
                    out_port: int | str | None = None) -> tuple[Action, ...]:
    """Encapsulate to `rloc` in instance `iid`, out of the tunnel port (or `out_port`)."""
    family = "ipv4" if rloc.version == 4 else "ipv6"
    source: tuple[Action, ...] = ()
    if plan.tunnel_source is not None and plan.tunnel_source.version == rloc.version:
        source = (SetField(f"tun_{family}_src", str(plan.tunnel_source)),)
    port = plan.tunnel_port if out_port is None else out_port
    return (SetField("tunnel_id", iid), *source, SetField(f"tun_{family}_dst", str(rloc)), Output(port))


@cached_hash
@dataclass(frozen=True)
class _TunnelContext:
    """The parts of a plan that a map-cache entry's flows depend on besides the entry itself."""

    tunnel_port: int
    tunnel_source: IPAddress | None
    petr: IPAddress | None
    native_port: int | None
    fixed_ports: tuple = ()  # (remote RLOC, ofport) of the BFD ports: entries fail over in the switch


@lru_cache(maxsize=64)
def _context(*parts) -> _TunnelContext:
    """The same object for the same parts: the memoised entries' keys then compare by identity."""
    return _TunnelContext(*parts)


def _source_specific_misses(remotes: tuple[RemoteEntry, ...]) -> list[Flow]:
    """A destination known only source-specifically sends other sources' packets to the controller.

    Without it a host outside every cached source prefix would fall through
    to a shorter covering entry (or be treated as resolved): its own
    Map-Request is what lets the Map-Server decide for it.  Same priority as
    a plain entry of that destination, which replaces it when there is one.
    """
    if all(e.source is None for e in remotes):
        return []
    plain = {(e.iid, e.prefix) for e in remotes if e.source is None}
    out = []
    for iid, prefix in sorted({(e.iid, e.prefix) for e in remotes if e.source is not None} - plain,
                              key=lambda k: (k[0], k[1].version, k[1])):
        eth_type, dst_field = _eth_type(prefix)
        flow = Flow(Table.ROUTE, prefix_priority(prefix),
                    match(metadata=(iid, METADATA_IID_MASK), eth_type=eth_type, **{dst_field: _masked(prefix)}),
                    actions=(Output("controller", 0xFFFF),), meter=MISS_METER_ID,
                    cookie=cookie(Owner.MAPPING, iid, f"{prefix} other sources"))
        check_flow(flow)
        out.append(flow)
    return out


@lru_cache(maxsize=1 << 17)
def _remote_compiled(entry: RemoteEntry, gid: int | tuple | None, plan: _TunnelContext) -> tuple[FlowSet, tuple]:
    """One entry's flows; memoised, since a push recompiles every entry and most never change."""
    owner = cookie(Owner.MAPPING, entry.iid, entry.name)
    eth_type, dst_field = _eth_type(entry.prefix)
    fields = {dst_field: _masked(entry.prefix)}
    if entry.source is not None:
        if entry.source.version != entry.prefix.version:
            raise CompileError(f"source {entry.source} and destination {entry.prefix} differ in family")
        fields[dst_field.replace("_dst", "_src")] = _masked(entry.source)
    flow_match = match(metadata=(entry.iid, METADATA_IID_MASK), eth_type=eth_type, **fields)
    prio = prefix_priority(entry.prefix, entry.source)
    groups: tuple[Group, ...] = ()
    actions: tuple[Action, ...]
    if entry.action is RemoteAction.ENCAP and entry.replicate:  # predictive RLOCs: a copy to each
        if len(entry.replicate) == 1:
            actions = _tunnel_actions(plan, entry.iid, entry.replicate[0])
        elif not isinstance(gid, int):
            raise CompileError(f"no group id for the replication of {entry.prefix} iid {entry.iid}")
        else:
            groups = (Group(gid, "all", tuple(Bucket(0, _tunnel_actions(plan, entry.iid, rloc))
                                              for rloc in entry.replicate)),)
            actions = (GroupAction(gid),)
    elif entry.action is RemoteAction.ENCAP:
        rlocs = usable_rlocs(entry.rlocs)
        if isinstance(gid, tuple):  # two or more locators, BFD ports towards some: a fast-failover group
            groups, actions = failover.encap(entry, gid, plan.fixed_ports, plan.tunnel_port, usable_rlocs,
                                             lambda rloc: _tunnel_actions(plan, entry.iid, rloc))
        elif not rlocs:
            actions = ()  # every locator down or unusable: drop rather than loop to the controller
        elif len(rlocs) == 1:
            actions = _tunnel_actions(plan, entry.iid, rlocs[0].address)
        else:
            if gid is None:
                raise CompileError(f"no group id for {entry.prefix} iid {entry.iid}")
            equal = all(r.weight == 0 for r in rlocs)
            groups = (Group(gid, "select", tuple(
                Bucket(1 if equal else r.weight, _tunnel_actions(plan, entry.iid, r.address)) for r in rlocs)),)
            actions = (GroupAction(gid),)
    elif entry.action is RemoteAction.NATIVE_FORWARD:
        if plan.petr is not None:
            actions = _tunnel_actions(plan, entry.iid, plan.petr)
        elif plan.native_port is not None:
            actions = (Output(plan.native_port),)
        else:
            actions = ()
    elif entry.action is RemoteAction.DROP:
        actions = ()
    else:  # SEND_MAP_REQUEST: the table-miss flow already does this
        return FlowSet(), ()
    flow = Flow(Table.ROUTE, prio, flow_match, actions=actions, cookie=owner)
    check_flow(flow)
    return FlowSet((flow,)), groups


def _allocate_group_ids(remotes: tuple[RemoteEntry, ...]) -> dict:
    """Stable group ids: a hash of the entry, probed on collision in a fixed order."""
    ids: dict = {}
    used: set[int] = set()
    grouped = [e for e in remotes if e.action is RemoteAction.ENCAP and (len(e.replicate) > 1 or (
        len(e.rlocs) > 1 and len(usable_rlocs(e.rlocs)) > 1))]  # (most have one locator)
    for entry in sorted(grouped, key=lambda e: (e.iid, e.prefix.version, e.prefix, e.source is not None,
                                                e.source or e.prefix)):
        gid = (zlib.crc32(f"{entry.iid}/{entry.name}".encode()) & 0x7FFFFFFE) or 1
        while gid in used:
            gid = gid % 0x7FFFFFFE + 1
        used.add(gid)
        ids[(entry.iid, entry.prefix, entry.source)] = gid
    return ids
