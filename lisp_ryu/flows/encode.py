"""Flow-mod bytes straight from our flow model, and the flow's instructions as Ryu objects.

Building an OFPFlowMod through Ryu's parser is slow per flow (field
normalisation through netaddr, per-object serialisation), which would cap a
large map-cache push far below what OVS accepts.  Flows are data here, so a
flow-mod is a fixed header, an OXM match of a handful of known fields, and
instruction bytes that many flows share (every entry tunnelling to one RLOC
has identical actions), cached after Ryu serialised them once.  The
instructions' Ryu objects are built here too (`to_instructions`), so this
module needs nothing from `ofp13`, which builds whole Ryu messages on top of
it.  `tests/unit/flows/test_encode.py` checks that the bytes equal Ryu's for
every flow the compiler can produce.
"""

from __future__ import annotations

import ipaddress
import struct
from functools import lru_cache

from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from lisp_ryu.flows import oxm_ext  # noqa: F401 - Ryu learns the OVS ND fields the responder sets
from lisp_ryu.flows.model import Action, DecTtl, Flow, GroupAction, Move, Output, SetField

_FLOW_MOD = struct.Struct("!BBHIQQBBHHHIIIH2x")  # ofp_header + ofp_flow_mod up to the match
_HEADER = struct.Struct("!BBHI")  # ofp_header: a barrier request is nothing more
_MATCH_HEADER = struct.Struct("!HH")
OFPFC_ADD, OFPFC_DELETE_STRICT = ofp.OFPFC_ADD, ofp.OFPFC_DELETE_STRICT

# OpenFlow-basic OXM fields our pipeline matches on: name -> (field number, value bytes).
_OXM_FIELDS = {
    "in_port": (0, 4),
    "metadata": (2, 8),
    "eth_type": (5, 2),
    "ipv4_src": (11, 4),
    "ipv4_dst": (12, 4),
    "ip_proto": (10, 1),
    "icmpv6_type": (29, 1),
    "arp_op": (21, 2),
    "arp_spa": (22, 4),
    "arp_tpa": (23, 4),
    "ipv6_src": (26, 16),
    "ipv6_dst": (27, 16),
    "ipv6_nd_target": (31, 16),
    "tunnel_id": (38, 8),
}
# Open vSwitch's NXM_1 fields (class 0x0001) matched on: the tunnel's outer source, which a
# planned move's old site tells this controller's replicating ITRs by (flows/replicate.py).
OFPXMC_NXM_1 = 0x0001
_NXM_FIELDS = {
    "tun_ipv4_src": (31, 4),
    "tun_ipv6_src": (109, 16),
}
_ADDRESS_FIELDS = {"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa", "ipv6_src", "ipv6_dst", "ipv6_nd_target",
                   "tun_ipv4_src", "tun_ipv6_src"}


def _field(name: str) -> tuple[int, int, int]:
    """(OXM class, field number, value bytes) of a field this encoder knows."""
    if name in _OXM_FIELDS:
        return (ofp.OFPXMC_OPENFLOW_BASIC, *_OXM_FIELDS[name])
    if name in _NXM_FIELDS:
        return (OFPXMC_NXM_1, *_NXM_FIELDS[name])
    raise NotEncodable(f"no fast OXM encoding for {name}")


def _order(name: str) -> int:
    """Ryu's (and OVS's) order of a match's fields: by (class << 7 | field): NXM before basic."""
    try:
        oxm_class, number, _ = _field(name)
    except NotEncodable:
        return 1 << 32
    return oxm_class << 7 | number


class NotEncodable(ValueError):
    """A flow outside what this encoder knows; the caller falls back to Ryu."""


def _value_bytes(name: str, value: object, size: int) -> bytes:
    if name in _ADDRESS_FIELDS:
        return ipaddress.ip_address(value).packed  # type: ignore[arg-type]
    return int(value).to_bytes(size, "big")  # type: ignore[call-overload]


@lru_cache(maxsize=65536)
def _oxm(name: str, value: object) -> bytes:
    oxm_class, field, size = _field(name)
    if isinstance(value, tuple):
        body = _value_bytes(name, value[0], size) + _value_bytes(name, value[1], size)
        return struct.pack("!I", (oxm_class << 16) | (field << 9) | (1 << 8) | 2 * size) + body
    return struct.pack("!I", (oxm_class << 16) | (field << 9) | size) + _value_bytes(name, value, size)


def match_bytes(match: tuple) -> bytes:
    """An ofp_match with its OXM fields in Ryu's order (`_order`), padded to 8."""
    fields = sorted(match, key=lambda item: _order(item[0]))
    body = b"".join(_oxm(name, value) for name, value in fields)
    length = _MATCH_HEADER.size + len(body)
    return _MATCH_HEADER.pack(ofp.OFPMT_OXM, length) + body + bytes(-length % 8)


SPECIAL_PORTS = {"controller": ofp.OFPP_CONTROLLER, "in_port": ofp.OFPP_IN_PORT, "table": ofp.OFPP_TABLE}


def _port(port: int | str) -> int:
    return SPECIAL_PORTS[port] if isinstance(port, str) else port


def to_actions(actions: tuple[Action, ...]) -> list:
    """Our actions as Ryu action objects."""
    out = []
    for a in actions:
        if isinstance(a, Output):
            out.append(parser.OFPActionOutput(_port(a.port), a.max_len))
        elif isinstance(a, SetField):
            out.append(parser.OFPActionSetField(**{a.field: a.value}))
        elif isinstance(a, Move):
            out.append(parser.NXActionRegMove(src_field=a.src, dst_field=a.dst, n_bits=a.n_bits))
        elif isinstance(a, GroupAction):
            out.append(parser.OFPActionGroup(a.group_id))
        elif isinstance(a, DecTtl):
            out.append(parser.OFPActionDecNwTtl())
        else:
            raise TypeError(f"cannot render action {a!r}")
    return out


def to_instructions(flow: Flow) -> list:
    """The flow's instructions as Ryu objects, in the order OpenFlow applies them."""
    inst = []
    if flow.meter is not None:
        inst.append(parser.OFPInstructionMeter(flow.meter))
    if flow.actions:
        inst.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, to_actions(flow.actions)))
    if flow.write_metadata is not None:
        inst.append(parser.OFPInstructionWriteMetadata(*flow.write_metadata))
    if flow.goto is not None:
        inst.append(parser.OFPInstructionGotoTable(flow.goto))
    return inst


@lru_cache(maxsize=65536)
def instruction_bytes(meter: int | None, actions: tuple, write_metadata: tuple | None, goto: int | None) -> bytes:
    """Serialised instructions; shared by every flow with the same ones, so computed once."""
    flow = Flow(0, 0, (), actions=actions, goto=goto, write_metadata=write_metadata, meter=meter)
    buf = bytearray()
    for inst in to_instructions(flow):
        offset = len(buf)
        inst.serialize(buf, offset)
    return bytes(buf)


def barrier_request(xid: int) -> bytes:
    """An OFPT_BARRIER_REQUEST: a push's flow-mods and its barrier leave in one write."""
    return _HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_BARRIER_REQUEST, _HEADER.size, xid)


def flow_mod(flow: Flow, command: int, xid: int) -> bytes:
    """An OFPT_FLOW_MOD adding (OFPFC_ADD) or strictly deleting (OFPFC_DELETE_STRICT) `flow`."""
    match = match_bytes(flow.match)
    if command == OFPFC_ADD:
        instructions = instruction_bytes(flow.meter, flow.actions, flow.write_metadata, flow.goto)
        cookie_mask, out_port, out_group = 0, 0, 0
        flags = ofp.OFPFF_SEND_FLOW_REM if flow.idle_timeout else 0
        idle, hard = flow.idle_timeout, flow.hard_timeout
    elif command == OFPFC_DELETE_STRICT:
        instructions = b""
        cookie_mask, out_port, out_group = 0xFFFFFFFFFFFFFFFF, ofp.OFPP_ANY, ofp.OFPG_ANY
        flags = idle = hard = 0
    else:
        raise NotEncodable(f"flow-mod command {command}")
    length = _FLOW_MOD.size + len(match) + len(instructions)
    header = _FLOW_MOD.pack(ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, length, xid, flow.cookie, cookie_mask,
                            flow.table, command, idle, hard, flow.priority, ofp.OFP_NO_BUFFER, out_port,
                            out_group, flags)
    return header + match + instructions

