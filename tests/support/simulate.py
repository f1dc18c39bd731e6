"""A small model of the OpenFlow 1.3 pipeline that a packet walks through.

Level-3 tests compile a plan, then ask "where does this packet go?" without
a switch: the answer is the port(s) and the rewritten header fields.  It
implements just what the compiler emits (exact/masked matches, set-field,
reg-move, write-metadata, goto, groups, output) and refuses ambiguity (two
equal-priority flows matching one packet), which OpenFlow leaves undefined.

Groups: "select" and "all" deliver through every bucket (a select's with its
weight, so a test sees the split), "ff" through its first live bucket.
Liveness is `live_ports` (None: every port is live): a bucket watching a port
is live if the port is; watching a group, if that group has a live bucket; a
bucket that watches nothing is live.  A select group skips dead buckets, as
OVS does; with no live bucket a group drops the packet.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from lisp_ryu.flows.model import DesiredState, Flow, GroupAction, Move, Output, SetField, address_network

_ADDRESS_FIELDS = {"ipv4_dst", "ipv4_src", "ipv6_dst", "ipv6_src", "arp_tpa", "arp_spa", "ipv6_nd_target"}


class AmbiguousMatch(AssertionError):
    """Two flows of equal priority match one packet: the switch may pick either."""


@dataclass(frozen=True)
class Delivery:
    port: int | str
    packet: dict[str, Any]
    weight: int = 1  # the bucket weight when a select group chose among several


@dataclass
class Trace:
    flows: list[Flow] = field(default_factory=list)  # in the order the packet hit them
    deliveries: list[Delivery] = field(default_factory=list)
    meters: list[int] = field(default_factory=list)

    @property
    def dropped(self) -> bool:
        return not self.deliveries

    @property
    def ports(self) -> list[int | str]:
        return [d.port for d in self.deliveries]


def _field_matches(name: str, want: Any, packet: dict[str, Any]) -> bool:
    if name not in packet:
        return False
    have = packet[name]
    if name in _ADDRESS_FIELDS:
        return ipaddress.ip_address(have) in address_network(want)
    if isinstance(want, tuple):
        value, mask = want
        return (int(have) & mask) == (value & mask)
    return have == want


def matches(flow: Flow, packet: dict[str, Any]) -> bool:
    return all(_field_matches(name, want, packet) for name, want in flow.match)


def walk(state: DesiredState, packet: dict[str, Any], start_table: int = 0,
         live_ports: set[int] | frozenset[int] | None = None) -> Trace:
    """Run `packet` (header fields, in Ryu names, plus in_port) through `state`.

    `live_ports`: the ports whose liveness is up (None: all), for watched buckets."""
    trace = Trace()
    pkt = dict(packet)
    pkt.setdefault("metadata", 0)
    groups = {g.group_id: g for g in state.groups}
    table: int | None = start_table
    while table is not None:
        candidates = [f for f in state.flows if f.table == table and matches(f, pkt)]
        if not candidates:
            return trace  # table-miss without a flow: drop (OpenFlow 1.3)
        top = max(f.priority for f in candidates)
        best = [f for f in candidates if f.priority == top]
        if len(best) > 1:
            raise AmbiguousMatch(f"table {table}: {len(best)} flows of priority {top} match {pkt}")
        flow = best[0]
        trace.flows.append(flow)
        if flow.meter is not None:
            trace.meters.append(flow.meter)
        _apply(flow.actions, pkt, pkt.get("in_port"), groups, trace, 1, live_ports)
        if flow.write_metadata is not None:
            value, mask = flow.write_metadata
            pkt["metadata"] = (pkt["metadata"] & ~mask) | (value & mask)
        table = flow.goto
    return trace


def _bucket_live(bucket, groups, live_ports, depth: int = 0) -> bool:
    if depth > 8:
        raise AssertionError("groups watch each other in a loop")
    if bucket.watch_port is None and bucket.watch_group is None:
        return True
    if bucket.watch_port is not None and (live_ports is None or bucket.watch_port in live_ports):
        return True
    if bucket.watch_group is not None:
        group = groups.get(bucket.watch_group)
        if group is None:
            raise AssertionError(f"bucket watches missing group {bucket.watch_group}")
        return any(_bucket_live(b, groups, live_ports, depth + 1) for b in group.buckets)
    return False


def _apply(actions, pkt, in_port, groups, trace: Trace, weight: int, live_ports=None) -> None:
    for action in actions:
        if isinstance(action, SetField):
            pkt[action.field] = action.value
        elif isinstance(action, Move):
            pkt[action.dst] = pkt.get(action.src)
        elif isinstance(action, Output):
            port = in_port if action.port == "in_port" else action.port
            trace.deliveries.append(Delivery(port, dict(pkt), weight))
        elif isinstance(action, GroupAction):
            group = groups.get(action.group_id)
            if group is None:
                raise AssertionError(f"flow points at missing group {action.group_id}")
            live = [b for b in group.buckets if _bucket_live(b, groups, live_ports)]
            if group.type == "ff":
                live = live[:1]
            for bucket in live:
                _apply(bucket.actions, dict(pkt), in_port, groups, trace, bucket.weight, live_ports)
