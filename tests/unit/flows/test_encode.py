"""The fast flow-mod encoder writes exactly the bytes Ryu's parser would."""

import ipaddress

import pytest
from hypothesis import given, settings
from ryu.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from lisp_ryu import plan as pt
from lisp_ryu.flows import compiler as c
from lisp_ryu.flows import encode, ofp13
from lisp_ryu.flows.diff import AddFlow, DeleteFlow
from lisp_ryu.flows.model import Flow, Output, match

from test_diff import plans
from test_ofp13 import full_plan


class BareDatapath:
    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser
    id = 1


def ryu_bytes(op, xid):
    msg = ofp13.to_message(BareDatapath(), op)
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def check_state(state):
    for i, flow in enumerate(sorted(state.flows, key=repr)):
        assert encode.flow_mod(flow, encode.OFPFC_ADD, 1000 + i) == ryu_bytes(AddFlow(flow), 1000 + i), flow
        assert encode.flow_mod(flow, encode.OFPFC_DELETE_STRICT, 7) == ryu_bytes(DeleteFlow(flow), 7), flow


def test_every_flow_of_a_full_plan_matches_ryu_byte_for_byte():
    plan = full_plan()
    plan = pt.XtrPlan(**{**plan.__dict__,
                        "dynamic_prefixes": (pt.DynamicPrefix(42, ipaddress.ip_network("10.0.0.0/8")),
                                             pt.DynamicPrefix(42, ipaddress.ip_network("2001:db8::/32"))),
                        "redirects": (pt.Redirect(42, ipaddress.ip_address("10.1.0.99"),
                                                 ipaddress.ip_address("198.18.2.2")),),
                        "tunnel_source": ipaddress.ip_address("198.18.1.2")})
    check_state(c.compile_plan(plan))


@settings(max_examples=60, deadline=None)
@given(plans())
def test_generated_plans_match_ryu_byte_for_byte(plan):
    check_state(c.compile_plan(plan))


def test_unknown_match_fields_are_refused_not_guessed():
    with pytest.raises(encode.NotEncodable):
        encode.flow_mod(Flow(1, 1, match(tcp_dst=80), actions=(Output(1),)), encode.OFPFC_ADD, 1)


def test_a_barrier_request_matches_ryu_and_ends_the_push_s_last_write():
    msg = ofproto_v1_3_parser.OFPBarrierRequest(BareDatapath())
    msg.set_xid(0x01020304)
    msg.serialize()
    assert encode.barrier_request(0x01020304) == bytes(msg.buf)

    dp = type("Dp", (BareDatapath,), {"xid": 10})()
    xid, barrier = ofp13.barrier_request(dp)
    flow = Flow(1, 1, match(in_port=1), actions=(Output(2),))
    writes = list(ofp13.encode_operations(dp, [AddFlow(flow)], then=barrier))
    assert xid == 11 and len(writes) == 1
    assert writes[0] == encode.flow_mod(flow, encode.OFPFC_ADD, 12) + barrier
    assert list(ofp13.encode_operations(dp, [], then=barrier)) == [barrier]
