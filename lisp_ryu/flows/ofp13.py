"""Our flow model <-> OpenFlow 1.3 messages (Ryu's parser classes).

Ryu's message classes need a datapath only to serialise (`msg.datapath`
supplies `ofproto`), so tests build messages against a bare object carrying
those two modules and check the serialised bytes.  `flow_from_stats` reads
installed flows back, for reconciliation after a (re)connect.  Actions and
instructions are built by `encode` (which caches their bytes); this module
imports it, never the other way round.
"""

from __future__ import annotations

from typing import Any, Iterator

from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from lisp_ryu.flows import encode
from lisp_ryu.flows.diff import AddFlow, AddGroup, AddMeter, DeleteFlow, DeleteGroup, DeleteMeter, Operation
from lisp_ryu.flows.encode import SPECIAL_PORTS, to_actions, to_instructions
from lisp_ryu.flows.model import (
    Action,
    Bucket,
    DecTtl,
    Flow,
    Group,
    GroupAction,
    Meter,
    Move,
    Output,
    SetField,
    address_network,
)

_PORT_NAMES = {v: k for k, v in SPECIAL_PORTS.items()}
_GROUP_TYPES = {"select": ofp.OFPGT_SELECT, "all": ofp.OFPGT_ALL, "indirect": ofp.OFPGT_INDIRECT,
                "ff": ofp.OFPGT_FF}
_GROUP_NAMES = {v: k for k, v in _GROUP_TYPES.items()}


def to_match(flow: Flow) -> parser.OFPMatch:
    return parser.OFPMatch(**{k: v for k, v in flow.match})


def to_message(datapath: Any, op: Operation):
    """One diff operation as a Ryu message bound to `datapath`."""
    if isinstance(op, AddFlow):
        f = op.flow
        return parser.OFPFlowMod(datapath, cookie=f.cookie, table_id=f.table, command=ofp.OFPFC_ADD,
                                 idle_timeout=f.idle_timeout, hard_timeout=f.hard_timeout,
                                 priority=f.priority, flags=ofp.OFPFF_SEND_FLOW_REM if f.idle_timeout else 0,
                                 match=to_match(f), instructions=to_instructions(f))
    if isinstance(op, DeleteFlow):
        f = op.flow
        return parser.OFPFlowMod(datapath, cookie=f.cookie, cookie_mask=0xFFFFFFFFFFFFFFFF, table_id=f.table,
                                 command=ofp.OFPFC_DELETE_STRICT, priority=f.priority,
                                 out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=to_match(f))
    if isinstance(op, AddGroup):
        g = op.group
        buckets = [parser.OFPBucket(weight=b.weight,
                                    watch_port=ofp.OFPP_ANY if b.watch_port is None else b.watch_port,
                                    watch_group=ofp.OFPG_ANY if b.watch_group is None else b.watch_group,
                                    actions=to_actions(b.actions)) for b in g.buckets]
        command = ofp.OFPGC_MODIFY if op.modify else ofp.OFPGC_ADD
        return parser.OFPGroupMod(datapath, command, _GROUP_TYPES[g.type], g.group_id, buckets)
    if isinstance(op, DeleteGroup):
        return parser.OFPGroupMod(datapath, ofp.OFPGC_DELETE, ofp.OFPGT_SELECT, op.group_id, [])
    if isinstance(op, AddMeter):
        m = op.meter
        bands = [parser.OFPMeterBandDrop(rate=m.rate_pps, burst_size=m.burst)]
        flags = ofp.OFPMF_PKTPS | (ofp.OFPMF_BURST if m.burst else 0)
        command = ofp.OFPMC_MODIFY if op.modify else ofp.OFPMC_ADD
        return parser.OFPMeterMod(datapath, command, flags, m.meter_id, bands)
    if isinstance(op, DeleteMeter):
        return parser.OFPMeterMod(datapath, ofp.OFPMC_DELETE, 0, op.meter_id, [])
    raise TypeError(f"unknown operation {op!r}")


def barrier_request(datapath: Any) -> tuple[int, bytes]:
    """A barrier request's xid and bytes, without Ryu's message objects."""
    xid = next_xid(datapath)
    return xid, encode.barrier_request(xid)


def next_xid(datapath: Any) -> int:
    """The datapath's next transaction id, shared with Ryu's own `set_xid`."""
    datapath.xid = (datapath.xid + 1) & datapath.ofproto.MAX_XID
    return datapath.xid


def encode_operations(datapath: Any, ops: list[Operation], chunk: int = 1 << 16,
                      then: bytes = b"") -> Iterator[bytes]:
    """The operations as wire bytes, in order, joined into writes of about `chunk` bytes;
    `then` (a barrier) ends the last write.

    Flow-mods (nearly all of a push) come from the fast encoder; groups and
    meters, a handful per push, from Ryu.  Fewer, larger writes matter as much
    as cheaper encoding: each Ryu send is a queue hand-off and a syscall (and a
    move's push is usually one write).
    """
    pending: list[bytes] = []
    size = 0
    for op in ops:
        if isinstance(op, (AddFlow, DeleteFlow)):
            command = encode.OFPFC_ADD if isinstance(op, AddFlow) else encode.OFPFC_DELETE_STRICT
            try:
                data = encode.flow_mod(op.flow, command, next_xid(datapath))
            except encode.NotEncodable:
                data = _ryu_bytes(datapath, op)
        else:
            data = _ryu_bytes(datapath, op)
        pending.append(data)
        size += len(data)
        if size >= chunk:
            yield b"".join(pending)
            pending, size = [], 0
    if pending or then:
        yield b"".join(pending) + then


def _ryu_bytes(datapath: Any, op: Operation) -> bytes:
    msg = to_message(datapath, op)
    msg.set_xid(next_xid(datapath))
    msg.serialize()
    return bytes(msg.buf)


# ---- reading back what a switch holds ------------------------------------------


def _canonical_value(field: str, value: Any) -> Any:
    """Ryu reports masked fields as (value, mask) and full masks sometimes as masks."""
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple) and field.endswith(("_dst", "_src", "_tpa", "_spa")) and ":" not in str(value[0]):
        addr, mask = value
        net = address_network((addr, mask), strict=False)
        if net.prefixlen == net.max_prefixlen:
            return str(net.network_address)
        return (str(net.network_address), str(net.netmask))
    return value


def _from_actions(actions: list) -> tuple[Action, ...]:
    out: list[Action] = []
    for a in actions:
        if isinstance(a, parser.OFPActionOutput):
            out.append(Output(_PORT_NAMES.get(a.port, a.port), a.max_len))
        elif isinstance(a, parser.OFPActionSetField):
            out.append(SetField(a.key, a.value))
        elif isinstance(a, parser.NXActionRegMove):
            # OVS reports moves with the NXM names of fields ("eth_src_nxm") that we wrote as OXM.
            out.append(Move(_oxm_name(a.src_field), _oxm_name(a.dst_field), a.n_bits))
        elif isinstance(a, parser.OFPActionGroup):
            out.append(GroupAction(a.group_id))
        elif isinstance(a, parser.OFPActionDecNwTtl):
            out.append(DecTtl())
        else:
            out.append(SetField("unknown", repr(a)))  # never equal to a compiled flow: gets replaced
    return tuple(out)


# OVS reports some moved fields by their NXM names, which Ryu names apart from the OXM ones we wrote.
_NXM_ALIASES = {"nd_target": "ipv6_nd_target", "nd_sll": "ipv6_nd_sll", "nd_tll": "ipv6_nd_tll"}


def _oxm_name(field: str) -> str:
    field = field[: -len("_nxm")] if field.endswith("_nxm") else field
    return _NXM_ALIASES.get(field, field)


def flow_from_stats(stats: Any) -> Flow:
    """An OFPFlowStats entry as our `Flow`, comparable with compiled ones."""
    fields = tuple(sorted((k, _canonical_value(k, v)) for k, v in stats.match.items()))
    actions: tuple[Action, ...] = ()
    goto = meter = None
    write_metadata = None
    for inst in stats.instructions:
        if isinstance(inst, parser.OFPInstructionActions) and inst.type == ofp.OFPIT_APPLY_ACTIONS:
            actions = _from_actions(inst.actions)
        elif isinstance(inst, parser.OFPInstructionGotoTable):
            goto = inst.table_id
        elif isinstance(inst, parser.OFPInstructionMeter):
            meter = inst.meter_id
        elif isinstance(inst, parser.OFPInstructionWriteMetadata):
            write_metadata = (inst.metadata, inst.metadata_mask)
    return Flow(stats.table_id, stats.priority, fields, actions=actions, goto=goto,
                write_metadata=write_metadata, meter=meter, cookie=stats.cookie,
                idle_timeout=stats.idle_timeout, hard_timeout=stats.hard_timeout)


def group_from_desc(desc: Any) -> Group:
    return Group(desc.group_id, _GROUP_NAMES.get(desc.type, str(desc.type)),
                 tuple(Bucket(b.weight, _from_actions(b.actions),
                              None if b.watch_port == ofp.OFPP_ANY else b.watch_port,
                              None if b.watch_group == ofp.OFPG_ANY else b.watch_group)
                       for b in desc.buckets))


def meter_from_config(config: Any) -> Meter:
    band = config.bands[0] if config.bands else None
    return Meter(config.meter_id, band.rate if band else 0, band.burst_size if band else 0)

