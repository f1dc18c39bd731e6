"""Installed state vs desired state -> the minimal, safely ordered operations.

Order is make-before-break: meters and groups exist before the flows that
use them; new and changed flows go in before stale ones are deleted; groups
and meters go last, once nothing points at them.  Applying the result to
`installed` yields exactly `desired`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from lisp_ryu.flows.model import DesiredState, Flow, Group, Meter


@dataclass(frozen=True)
class AddMeter:
    meter: Meter
    modify: bool = False


@dataclass(frozen=True)
class AddGroup:
    group: Group
    modify: bool = False


@dataclass(frozen=True)
class AddFlow:
    """OpenFlow ADD: replaces an entry with the same table/priority/match."""

    flow: Flow


@dataclass(frozen=True)
class DeleteFlow:
    """A strict delete of exactly this table/priority/match."""

    flow: Flow


@dataclass(frozen=True)
class DeleteGroup:
    group_id: int


@dataclass(frozen=True)
class DeleteMeter:
    meter_id: int


Operation = Union[AddMeter, AddGroup, AddFlow, DeleteFlow, DeleteGroup, DeleteMeter]


def diff(installed: DesiredState, desired: DesiredState) -> list[Operation]:
    ops: list[Operation] = []

    have_meters = {m.meter_id: m for m in installed.meters}
    want_meters = {m.meter_id: m for m in desired.meters}
    for mid in sorted(want_meters):
        if have_meters.get(mid) != want_meters[mid]:
            ops.append(AddMeter(want_meters[mid], modify=mid in have_meters))

    have_groups = {g.group_id: g for g in installed.groups}
    want_groups = {g.group_id: g for g in desired.groups}
    for gid in sorted(want_groups):
        if have_groups.get(gid) != want_groups[gid]:
            ops.append(AddGroup(want_groups[gid], modify=gid in have_groups))

    # Set differences first: with the compiler's memoised flows (their hashes cached) the
    # unchanged bulk of a big table costs one C-level pass, and only what differs is keyed.
    added = desired.flows - installed.flows
    removed = installed.flows - desired.flows
    added_keys = {f.key for f in added}
    for flow in sorted(added, key=_order):
        ops.append(AddFlow(flow))
    for flow in sorted((f for f in removed if f.key not in added_keys), key=_order):
        ops.append(DeleteFlow(flow))

    for gid in sorted(have_groups.keys() - want_groups.keys()):
        ops.append(DeleteGroup(gid))
    for mid in sorted(have_meters.keys() - want_meters.keys()):
        ops.append(DeleteMeter(mid))
    return ops


def _order(flow: Flow) -> tuple:
    return _flow_order(flow.key)


def _flow_order(key: tuple) -> tuple:
    # Later tables first, so a classification flow never points into a table
    # whose entries are not there yet.  Within a table the order is free (the
    # sort is stable), and leaving the match out keeps a 10k-flow diff cheap.
    table, priority, _ = key
    return (-table, -priority)


def apply(installed: DesiredState, ops: list[Operation]) -> DesiredState:
    """What the switch holds after `ops`: the model the tests check the diff against."""
    flows = {f.key: f for f in installed.flows}
    groups = {g.group_id: g for g in installed.groups}
    meters = {m.meter_id: m for m in installed.meters}
    for op in ops:
        if isinstance(op, AddFlow):
            flows[op.flow.key] = op.flow
        elif isinstance(op, DeleteFlow):
            flows.pop(op.flow.key, None)
        elif isinstance(op, AddGroup):
            groups[op.group.group_id] = op.group
        elif isinstance(op, DeleteGroup):
            groups.pop(op.group_id, None)
        elif isinstance(op, AddMeter):
            meters[op.meter.meter_id] = op.meter
        elif isinstance(op, DeleteMeter):
            meters.pop(op.meter_id, None)
    return DesiredState(frozenset(flows.values()), frozenset(groups.values()), frozenset(meters.values()))
