"""What a switch's flows implement, read back: the compiler's inverse.

A controller restart loses the xTR's memory, not the switch's flows.  What
the switch still forwards with (its map-cache entries, the workloads it
delivers to) is read back from the flows at reconnection, so the xTR takes
it over instead of deleting working flows while it learns it all again.
"""

from __future__ import annotations

import ipaddress

from lisp_ryu.flows import failover
from lisp_ryu.flows.model import DesiredState, GroupAction, Output, SetField, address_network
from lisp_ryu.flows.pipeline import Owner, Table, cookie_owner
from lisp_ryu.plan import LocalHost, RemoteAction, RemoteEntry, Rloc


def remotes_installed(state: DesiredState) -> list[RemoteEntry]:
    """The map-cache entries that a switch's MAPPING flows implement.

    Native-forward via a PETR reads back as an ordinary encap entry; the
    re-resolution that follows adoption puts the right action back.
    """
    groups = {g.group_id: g for g in state.groups}
    out = []
    for flow in state.flows:
        if flow.table != Table.ROUTE or cookie_owner(flow.cookie) is not Owner.MAPPING:
            continue
        fields = flow.match_dict()
        meta = fields.get("metadata")
        dst = fields.get("ipv4_dst", fields.get("ipv6_dst"))
        if not isinstance(meta, tuple) or dst is None:
            continue
        if "ipv4_src" in fields or "ipv6_src" in fields:
            continue  # source-specific: not adopted, the host's next packet re-resolves it
        prefix = address_network(dst)
        iid = meta[0]
        buckets: list[tuple[int, tuple]] = []
        replicated = False
        for action in flow.actions:
            if isinstance(action, GroupAction) and action.group_id in groups:
                buckets = failover.flatten_buckets(groups, action.group_id)  # through FF groups' select groups
                replicated = groups[action.group_id].type == "all"  # a Replication List Entry's copies
        if not buckets and flow.actions:
            buckets = [(100, flow.actions)]
        found = {}  # a fast-failover group names a locator more than once: the first (best) bucket's weight
        for weight, actions in buckets:
            for a in actions:
                if isinstance(a, SetField) and a.field in ("tun_ipv4_dst", "tun_ipv6_dst"):
                    found.setdefault(ipaddress.ip_address(a.value), weight)
        rlocs = tuple(Rloc(address, 1, weight) for address, weight in found.items())
        if rlocs and replicated:
            out.append(RemoteEntry(iid, prefix, RemoteAction.ENCAP, replicate=tuple(found)))
        elif rlocs:
            out.append(RemoteEntry(iid, prefix, RemoteAction.ENCAP, rlocs))
        elif not flow.actions:
            out.append(RemoteEntry(iid, prefix, RemoteAction.DROP))
    return out


def hosts_installed(state: DesiredState) -> list[LocalHost]:
    """The local hosts a switch delivers tunnelled traffic to (a LOCAL_HOST flow of the DECAP
    table: tunnel_id = instance-ID, destination = the host, rewritten to its MAC, out of its port),
    in address order; a flow that does not read back whole is left out."""
    out = []
    for flow in state.flows:
        if flow.table != Table.DECAP or cookie_owner(flow.cookie) is not Owner.LOCAL_HOST:
            continue
        fields = flow.match_dict()
        iid, dst = fields.get("tunnel_id"), fields.get("ipv4_dst", fields.get("ipv6_dst"))
        mac = next((a.value for a in flow.actions if isinstance(a, SetField) and a.field == "eth_dst"), None)
        port = next((a.port for a in flow.actions if isinstance(a, Output) and isinstance(a.port, int)), None)
        if not isinstance(iid, int) or not isinstance(dst, str) or "/" in dst or mac is None or port is None:
            continue
        try:
            out.append(LocalHost(iid, ipaddress.ip_address(dst), str(mac).lower(), port))
        except ValueError:
            continue
    return sorted(out, key=lambda h: (h.iid, h.ip.version, h.ip))
