"""glue.flow_counters: a planned move's reads of a flow's packet counter, told apart from the
tables' read at connection and from other switches' replies (each switch numbers its own xids)."""

from __future__ import annotations

from types import SimpleNamespace

from ryu.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from lisp_ryu.glue.flow_counters import ALL_COOKIE_BITS, FlowCounters


class Datapath:
    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser

    def __init__(self, dpid: int, xid: int) -> None:
        self.id, self.next_xid, self.sent = dpid, xid, []

    def set_xid(self, msg) -> None:
        msg.set_xid(self.next_xid)

    def send_msg(self, msg) -> None:
        self.sent.append(msg)


def stats(packets: int) -> SimpleNamespace:
    return SimpleNamespace(packet_count=packets)


def test_a_read_sums_its_reply_parts_and_ignores_another_switchs_same_xid():
    counters = FlowCounters()
    dp = Datapath(2, 7)
    reading = counters.ask(dp, 2, 0x6000002A12345678)
    request = dp.sent[0]
    assert (request.table_id, request.cookie, request.cookie_mask) == (2, 0x6000002A12345678, ALL_COOKIE_BITS)
    assert counters.take(1, 7, [stats(9)], False) is False  # dc1's reply with the same xid: not ours
    assert counters.take(2, 8, [stats(9)], False) is False  # another xid of this switch: not ours
    assert counters.take(2, 7, [stats(5)], True) is True and reading.packets is None  # more to come
    assert counters.take(2, 7, [stats(1), stats(0)], False) is True and reading.packets == 6
    assert counters.take(2, 7, [stats(3)], False) is False  # answered once


def test_a_forgotten_read_is_not_answered_later():
    counters = FlowCounters()
    reading = counters.ask(Datapath(3, 11), 2, 1)
    counters.forget(reading)
    assert counters.take(3, 11, [stats(4)], False) is False and reading.packets is None
