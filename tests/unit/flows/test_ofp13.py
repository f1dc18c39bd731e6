"""Flow model -> Ryu OpenFlow 1.3 messages, serialised without a switch, and read back."""

import ipaddress

from ryu.ofproto import ofproto_v1_3, ofproto_v1_3_parser
from ryu.ofproto.ofproto_parser import msg as parse_msg

from lisp_ryu import plan as pt
from lisp_ryu.flows import compiler as c
from lisp_ryu.flows import ofp13
from lisp_ryu.flows.diff import diff
from lisp_ryu.flows.model import DesiredState, Move

ip = ipaddress.ip_address


class BareDatapath:
    """What Ryu's serialiser reads from a datapath: the protocol modules, nothing else."""

    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser
    id = 1


def full_plan():
    return pt.XtrPlan(
        tunnel_port=100,
        host_ports=(pt.HostPort(1, 42),),
        hosts=(pt.LocalHost(42, ip("10.1.0.10"), "02:00:00:01:00:0a", 1),
               pt.LocalHost(42, ip("fd00:1::10"), "02:00:00:01:00:0a", 1)),  # dual-stack
        gateways=(pt.Gateway(42, ipaddress.ip_network("10.1.0.0/24"), ip("10.1.0.1"), "02:00:00:00:01:01"),
                  # IPv6: the neighbour responder's flows (set-field of OVS's ERICOXM ND fields)
                  pt.Gateway(42, ipaddress.ip_network("fd00:1::/64"), ip("fd00:1::1"), "02:00:00:00:01:02")),
        remotes=(
            pt.RemoteEntry(42, ipaddress.ip_network("10.2.0.0/16"), pt.RemoteAction.ENCAP, (pt.Rloc(ip("198.18.2.2")),)),
            pt.RemoteEntry(42, ipaddress.ip_network("10.3.0.0/16"), pt.RemoteAction.ENCAP,
                          (pt.Rloc(ip("198.18.3.2"), 1, 50), pt.Rloc(ip("198.18.3.6"), 1, 50))),
            pt.RemoteEntry(42, ipaddress.ip_network("2001:db8:2::/48"), pt.RemoteAction.ENCAP,
                          (pt.Rloc(ip("2001:db8:ffff::2")),)),
            pt.RemoteEntry(42, ipaddress.ip_network("10.9.0.0/16"), pt.RemoteAction.DROP),
        ),
        # A planned move away: DECAP flows matching the tunnel's IPv4 and IPv6 source (NXM fields)
        leaving=(pt.Leaving(42, ip("10.1.0.10"), ip("198.18.2.2"), (ip("198.18.3.2"), ip("2001:db8:ffff::3"))),),
    )


def roundtrip(msg):
    msg.serialize()
    dp = BareDatapath()
    version, msg_type, msg_len, xid = ofproto_v1_3_parser.ofproto_parser.header(bytes(msg.buf))
    return parse_msg(dp, version, msg_type, msg_len, xid, bytes(msg.buf))


def test_every_operation_serialises_with_consistent_length():
    dp = BareDatapath()
    desired = c.compile_plan(full_plan())
    ops = diff(DesiredState(), desired) + diff(desired, DesiredState())
    for op in ops:
        msg = ofp13.to_message(dp, op)
        msg.serialize()
        version, msg_type, msg_len, _ = ofproto_v1_3_parser.ofproto_parser.header(bytes(msg.buf))
        assert (version, msg_type, msg_len) == (0x04, msg.msg_type, len(msg.buf))
        if isinstance(msg, ofproto_v1_3_parser.OFPFlowMod):  # Ryu parses flow-mods back
            assert roundtrip(msg).match.to_jsondict() == msg.match.to_jsondict()


def test_flows_read_back_from_the_switch_equal_compiled_ones():
    """Reconciliation depends on this: what the switch reports compares equal to what we compile."""
    dp = BareDatapath()
    desired = c.compile_plan(full_plan())
    for flow in desired.flows:
        mod = roundtrip(ofp13.to_message(dp, ofp13.AddFlow(flow)))
        stats = ofproto_v1_3_parser.OFPFlowStats(
            table_id=mod.table_id, duration_sec=0, duration_nsec=0, priority=mod.priority,
            idle_timeout=mod.idle_timeout, hard_timeout=mod.hard_timeout, flags=0, cookie=mod.cookie,
            packet_count=0, byte_count=0, match=mod.match, instructions=mod.instructions)
        assert ofp13.flow_from_stats(stats) == flow


def test_groups_read_back_equal_compiled_ones():
    dp = BareDatapath()
    (group,) = c.compile_plan(full_plan()).groups
    mod = ofp13.to_message(dp, ofp13.AddGroup(group))
    mod.serialize()
    buf, offset, buckets = bytes(mod.buf), ofproto_v1_3.OFP_GROUP_MOD_SIZE, []
    while offset < len(buf):  # Ryu has no group-mod parser; its bucket parser reads the body
        bucket = ofproto_v1_3_parser.OFPBucket.parser(buf, offset)
        buckets.append(bucket)
        offset += bucket.len
    desc = ofproto_v1_3_parser.OFPGroupDescStats(type_=mod.type, group_id=mod.group_id, buckets=buckets)
    assert ofp13.group_from_desc(desc) == group


def test_moves_reported_with_nxm_field_names_compare_equal():
    """OVS answers flow-stats with NXM names for fields we wrote as OXM ("eth_src_nxm")."""
    arp = next(f for f in c.compile_plan(full_plan()).flows
               if any(isinstance(a, Move) for a in f.actions) and f.match_dict().get("eth_type") == 0x0806)
    reported = [ofproto_v1_3_parser.NXActionRegMove(src_field=f"{a.src}_nxm" if a.src != "reg0" else a.src,
                                                    dst_field=f"{a.dst}_nxm" if a.dst != "reg0" else a.dst,
                                                    n_bits=a.n_bits)
                if isinstance(a, Move) else ofp13.to_actions((a,))[0] for a in arp.actions]
    stats = ofproto_v1_3_parser.OFPFlowStats(
        table_id=arp.table, duration_sec=0, duration_nsec=0, priority=arp.priority, idle_timeout=0,
        hard_timeout=0, flags=0, cookie=arp.cookie, packet_count=0, byte_count=0, match=ofp13.to_match(arp),
        instructions=[ofproto_v1_3_parser.OFPInstructionActions(ofproto_v1_3.OFPIT_APPLY_ACTIONS, reported)])
    assert ofp13.flow_from_stats(stats) == arp


# How OVS 3.1 names the fields of the neighbour responder's moves in flow-stats (NXM names).
_OVS_NXM_NAMES = {"eth_src": "eth_src_nxm", "eth_dst": "eth_dst_nxm", "ipv6_src": "ipv6_src_nxm",
                  "ipv6_dst": "ipv6_dst_nxm", "ipv6_nd_target": "nd_target", "ipv6_nd_tll": "nd_tll"}


def test_neighbour_responder_flows_read_back_equal_compiled_ones():
    """The ND flows' moves come back under NXM names, the ERICOXM set-fields as themselves."""
    nd = [f for f in c.compile_plan(full_plan()).flows
          if f.match_dict().get("eth_type") == 0x86DD and any(isinstance(a, Move) for a in f.actions)]
    assert len(nd) == 3  # the gateway, its subnet, the link-layer option
    for flow in nd:
        reported = [ofproto_v1_3_parser.NXActionRegMove(src_field=_OVS_NXM_NAMES[a.src], dst_field=_OVS_NXM_NAMES[a.dst],
                                                        n_bits=a.n_bits)
                    if isinstance(a, Move) else ofp13.to_actions((a,))[0] for a in flow.actions]
        mod = roundtrip(ofp13.to_message(BareDatapath(), ofp13.AddFlow(flow)))
        instructions = [ofproto_v1_3_parser.OFPInstructionActions(ofproto_v1_3.OFPIT_APPLY_ACTIONS, reported)]
        instructions += [i for i in mod.instructions if not isinstance(i, ofproto_v1_3_parser.OFPInstructionActions)]
        stats = ofproto_v1_3_parser.OFPFlowStats(
            table_id=flow.table, duration_sec=0, duration_nsec=0, priority=flow.priority, idle_timeout=0,
            hard_timeout=0, flags=0, cookie=flow.cookie, packet_count=0, byte_count=0, match=mod.match,
            instructions=instructions)
        assert ofp13.flow_from_stats(stats) == flow


def test_encoded_operations_are_the_messages_ryu_would_send_in_order():
    """The push path: fast flow-mods and Ryu-built groups/meters, concatenated, each a whole message."""
    from lisp_ryu.flows.diff import AddFlow as Add, AddGroup

    class Counting(BareDatapath):
        xid = 0

    desired = c.compile_plan(full_plan())
    ops = diff(DesiredState(), desired) + diff(desired, DesiredState())
    data = b"".join(ofp13.encode_operations(Counting(), ops, chunk=512))
    offset, seen = 0, []
    while offset < len(data):
        version, msg_type, length, xid = ofproto_v1_3_parser.ofproto_parser.header(data[offset:offset + 8])
        seen.append((msg_type, xid))
        offset += length
    assert offset == len(data)
    expected_types = [ofproto_v1_3.OFPT_FLOW_MOD if isinstance(op, (Add, ofp13.DeleteFlow))
                      else ofproto_v1_3.OFPT_GROUP_MOD if isinstance(op, (AddGroup, ofp13.DeleteGroup))
                      else ofproto_v1_3.OFPT_METER_MOD for op in ops]
    assert [t for t, _ in seen] == expected_types
    assert [x for _, x in seen] == list(range(1, len(ops) + 1))
