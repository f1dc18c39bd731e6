"""Failover in the data plane: fast-failover groups that watch per-peer BFD ports.

OVS 3.1 (userspace) runs BFD on a GPE port with a fixed `remote_ip` (beside
the flow-based port, DESIGN.md §9) and marks the port not live while the
session is down; an OpenFlow 1.3 fast-failover (FF) group uses its first
bucket whose watched port (or group) is live.  So the switch itself moves
traffic off a dead locator in about BFD's detection time, with no
controller in the loop.  RLOC probing stays: it still takes locators out of
map-cache entries (RFC 9301 semantics), which then recompile to fewer buckets.

A map-cache entry with two or more usable locators compiles to:

    ROUTE flow -> FF group
      bucket per priority level, best first:
        one locator:     watch_port=<BFD port to it>, tunnel to it
        several:         watch_group=<select group>, group action; the select
                         group's buckets (weights) each watch their BFD port,
                         and OVS hashes over the live ones only
      last bucket:       watch_port=<the flow-based port> (always live): what
                         the entry compiled to without failover (tun_dst on the
                         flow-based port, or the weighted select group over it)

Every bucket sends through the flow-based port (tun_dst, tun_src): a BFD
port is a liveness signal only, never a data path.  Its key (VNI) is
`BFD_KEY`, not the instance-ID, so a peer's data never lands on it either:
OVS maps a received tunnel packet to the port with the most specific match,
and a port that matched data would make a packet that needs an upcall
while OVS adds that port get dropped (the tunnel is known to the receive
map before the port is known to translation: `datapath_drop_upcall_error`),
which is exactly when a brand-new peer's first packets arrive.  Data with
instance-ID `BFD_KEY` would still land on the BFD ports, so they stay
decapsulation entry points (`classify_flows`) and a redirect arriving on one
leaves by the flow-based port's number (`redirect_flows`).

Why FF of select groups rather than one FF group per locator with the
controller re-balancing: the weights keep holding among the survivors of a
level without a round trip (OVS's select picks among live buckets), and a
whole level dying falls through to the next level in the same lookup.  The
last bucket covers every case where BFD cannot say anything: the session
is not up yet (about a second after the port appears), the peer runs no
BFD (a third-party ETR, an xTR without OVSDB access), or the BFD path is
broken while data still flows (then probing decides, as before).

Ports: one per (local RLOC, remote RLOC), named and numbered by the glue
(`lisp_ryu.glue.failover_ports`).
"""

from __future__ import annotations

import ipaddress
import zlib
from typing import Callable, Iterable

from lisp_ryu.flows.model import Action, Bucket, Flow, Group, GroupAction, match
from lisp_ryu.plan import FailoverPort, RemoteAction, RemoteEntry, Rloc

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RLOC_UNUSABLE_PRIORITY = 255
BFD_KEY = 0xFFFFFF  # the BFD ports' VNI: the last 24-bit instance-ID, so no data lands on them
GROUP_ID_SPACE = 0x7FFFFFFE


def fixed_ports(local: IPAddress | None, ports: Iterable[FailoverPort]) -> tuple[tuple[IPAddress, int], ...]:
    """(remote RLOC, ofport) of the BFD ports an ITR with source `local` sends through, sorted."""
    out = {p.remote: p.ofport for p in ports if local is None or p.local == local}
    return tuple(sorted(out.items(), key=lambda kv: (kv[0].version, int(kv[0]))))


def classify_flows(ports: Iterable[FailoverPort], priority: int, goto: int, cookie: int, table: int) -> list[Flow]:
    """Decapsulation entry points: traffic from a peer arrives on the fixed port pointing back at it."""
    return [Flow(table, priority, match(in_port=p.ofport), goto=goto, cookie=cookie)
            for p in sorted(ports, key=lambda p: p.ofport)]


def redirect_flows(base: Flow, tunnel_port: int, hairpin: tuple[Action, ...],
                   onward: tuple[Action, ...]) -> list[Flow]:
    """A redirect when packets may also arrive on fixed ports.

    From the flow-based port, OpenFlow needs IN_PORT to send a packet back
    out of it (`hairpin`); from a fixed port, IN_PORT would return it to the
    sender (a fixed port ignores tun_dst), so it leaves by the flow-based
    port's number (`onward`), one priority lower.
    """
    fields = dict(base.match)
    return [Flow(base.table, base.priority, match(in_port=tunnel_port, **fields), actions=hairpin,
                 cookie=base.cookie),
            Flow(base.table, base.priority - 1, base.match, actions=onward, cookie=base.cookie)]


# ---- encapsulation through a fast-failover group ------------------------------------------------


def _candidates(rlocs: tuple[Rloc, ...]) -> list[list[Rloc]]:
    """Priority levels, best first; in each, the locators that carry traffic (weight 0 drains unless all are)."""
    usable = [r for r in rlocs if r.priority != RLOC_UNUSABLE_PRIORITY]
    levels = []
    for prio in sorted({r.priority for r in usable}):
        level = [r for r in usable if r.priority == prio]
        weighted = [r for r in level if r.weight > 0]
        levels.append(sorted(weighted or level, key=lambda r: (r.address.version, int(r.address))))
    return levels


def _bfd_levels(entry: RemoteEntry, ports: dict) -> list[list[Rloc]]:
    return [lv for lv in ([r for r in level if r.address in ports] for level in _candidates(entry.rlocs)) if lv]


def groups_needed(entry: RemoteEntry, ports: tuple[tuple[IPAddress, int], ...],
                  usable: Callable[[tuple[Rloc, ...]], tuple[Rloc, ...]]) -> int:
    """How many group ids `entry` takes with failover: 0 when it does not fail over in the data plane."""
    if entry.action is not RemoteAction.ENCAP or len(entry.rlocs) < 2:
        return 0
    port_of = dict(ports)
    levels = _bfd_levels(entry, port_of)
    if sum(len(level) for level in _candidates(entry.rlocs)) < 2 or not levels:
        return 0
    return 1 + sum(1 for level in levels if len(level) > 1) + (1 if len(usable(entry.rlocs)) > 1 else 0)


def allocate_group_ids(remotes: tuple[RemoteEntry, ...], ports: tuple[tuple[IPAddress, int], ...],
                       usable: Callable[[tuple[Rloc, ...]], tuple[Rloc, ...]]) -> dict:
    """Stable group ids, like the compiler's: int for a plain select group, a tuple for a failover entry."""
    ids: dict = {}
    used: set[int] = set()

    def take(start: int) -> int:
        gid = start
        while gid in used:
            gid = gid % GROUP_ID_SPACE + 1
        used.add(gid)
        return gid

    # Only entries of two or more locators take ids (a select or a failover group), so only
    # they are sorted: a map-cache of single-locator /32s costs no sort.
    grouped = [e for e in remotes if e.action is RemoteAction.ENCAP and (len(e.rlocs) > 1 or len(e.replicate) > 1)]
    for entry in sorted(grouped, key=lambda e: (e.iid, e.prefix.version, e.prefix, e.source is not None,
                                                e.source or e.prefix)):
        count = groups_needed(entry, ports, usable)  # 0 for a replication (no rlocs): one ALL group
        plain = len(usable(entry.rlocs)) > 1 or len(entry.replicate) > 1
        if not count and not plain:
            continue
        base = (zlib.crc32(f"{entry.iid}/{entry.name}".encode()) & GROUP_ID_SPACE) or 1
        first = take(base)
        key = (entry.iid, entry.prefix, entry.source)
        ids[key] = tuple([first] + [take(first) for _ in range(count - 1)]) if count else first
    return ids


def encap(entry: RemoteEntry, gids: tuple[int, ...], ports: tuple[tuple[IPAddress, int], ...], tunnel_port: int,
          usable: Callable[[tuple[Rloc, ...]], tuple[Rloc, ...]],
          tunnel: Callable[[IPAddress], tuple[Action, ...]]) -> tuple[tuple[Group, ...], tuple[Action, ...]]:
    """The groups of a failover entry and the ROUTE flow's actions (a jump to the FF group).

    `tunnel(rloc)` is the encapsulation through the flow-based port (every
    bucket's, the watched BFD port only says whether the path is alive);
    `usable` is the compiler's choice of locators for the last bucket.
    """
    port_of = dict(ports)
    ids = iter(gids)
    top = next(ids)
    groups: list[Group] = []
    buckets: list[Bucket] = []

    for level in _bfd_levels(entry, port_of):
        if len(level) == 1:
            r = level[0]
            buckets.append(Bucket(0, tunnel(r.address), watch_port=port_of[r.address]))
            continue
        sid = next(ids)
        equal = all(r.weight == 0 for r in level)
        groups.append(Group(sid, "select", tuple(
            Bucket(1 if equal else r.weight, tunnel(r.address), watch_port=port_of[r.address]) for r in level)))
        buckets.append(Bucket(0, (GroupAction(sid),), watch_group=sid))
    fallback = usable(entry.rlocs)
    if len(fallback) == 1:
        last: tuple[Action, ...] = tunnel(fallback[0].address)
    else:
        fid = next(ids)
        equal = all(r.weight == 0 for r in fallback)
        groups.append(Group(fid, "select", tuple(Bucket(1 if equal else r.weight, tunnel(r.address))
                                                 for r in fallback)))
        last = (GroupAction(fid),)
    buckets.append(Bucket(0, last, watch_port=tunnel_port))
    groups.append(Group(top, "ff", tuple(buckets)))
    return tuple(groups), (GroupAction(top),)


def site_fails_over(site: tuple[IPAddress, ...], ports: tuple[tuple[IPAddress, int], ...]) -> bool:
    """A copy to a site of these RLOCs (best first) fails over in the switch: it has two or more
    and a BFD port towards one of them."""
    return len(site) > 1 and any(remote in site for remote, _ in ports)


def to_site(gid: int, site: tuple[IPAddress, ...], chosen: tuple[Action, ...],
            ports: tuple[tuple[IPAddress, int], ...], tunnel_port: int,
            tunnel: Callable[[IPAddress], tuple[Action, ...]]) -> Group:
    """A fast-failover group sending to one site (its RLOCs `site`, best first): a bucket per RLOC
    that a BFD port watches, in that order, then `chosen` (the controller's pick, through the
    flow-based port: always live), as a map-cache entry's group ends (`encap`)."""
    port_of = dict(ports)
    buckets = [Bucket(0, tunnel(rloc), watch_port=port_of[rloc]) for rloc in site if rloc in port_of]
    return Group(gid, "ff", (*buckets, Bucket(0, chosen, watch_port=tunnel_port)))


def flatten_buckets(groups: dict, group_id: int, depth: int = 0) -> list[tuple[int, tuple[Action, ...]]]:
    """(weight, actions) of every bucket that `group_id` may use, through the groups its buckets jump to.

    For reading back what a switch holds (adoption after a controller restart).
    """
    out: list[tuple[int, tuple[Action, ...]]] = []
    group = groups.get(group_id)
    if group is None or depth > 4:
        return out
    for bucket in group.buckets:
        nested = [a.group_id for a in bucket.actions if isinstance(a, GroupAction)]
        if nested:
            for gid in nested:
                out += flatten_buckets(groups, gid, depth + 1)
        else:
            out.append((bucket.weight, bucket.actions))
    return out
