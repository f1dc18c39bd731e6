"""Floods shed before the full decode (issue 15, item 5 continued): a spoofed datagram must cost little.

A spoofer sends subscribing Map-Requests, each with a new xTR-ID, or
Map-Registers under a wrong key, from many sources each inside its rate
limit.  Before, every one was decoded in full (~70 and ~50 us in Python:
10,000/s is most of a core) before the candidate budget or the HMAC refused
it, and legitimate requests starved.  Now a subscribing request beyond the
new-candidate budget is recognised at fixed offsets and answered by the fast
path without subscribing (or dropped when only the full path could answer),
and a Map-Register failing authentication under every key that could own
its first record is refused before it is decoded.  Known subscribers and
authenticated ETRs still go through.  Counted by calls to the full decoders,
not by time.
"""

from __future__ import annotations

import ipaddress

import pytest

from lisp_ryu.mapserver.pubsub import CANDIDATES_PER_SECOND
from lisp_ryu.wire import EncapsulatedControlMessage, MapRegister, MapReply, decode_message

from support import packets
from support.hostile_pubsub import ETR, ITR, KEY, T0, XTR_ID, ack_all, make_core, notifies, register, subscribe

FLOOD = 5000  # in half a second: 10,000/s, five times the budget's refill over the flood


@pytest.fixture
def decodes(monkeypatch):
    """Calls to the full decoders of ECMs and Map-Registers, by class name."""
    calls = {"ecm": 0, "register": 0}
    for name, cls in (("ecm", EncapsulatedControlMessage), ("register", MapRegister)):
        original = cls.decode.__func__

        def counting(klass, data, _original=original, _name=name):
            calls[_name] += 1
            return _original(klass, data)

        monkeypatch.setattr(cls, "decode", classmethod(counting))
    return calls


def spoofed(i: int) -> ipaddress.IPv4Address:
    return ipaddress.ip_address(0x7F010000 + i % 1000)  # 1,000 sources of 127.1/16


def test_a_subscribe_flood_beyond_the_budget_is_answered_without_a_full_decode(decodes):
    core = make_core(rate_limit_per_source=1e9)
    register(core, "10.1.0.0/16", ["198.18.1.1"], xtr_id=XTR_ID)
    answered = 0
    for i in range(FLOOD):
        source = spoofed(i)
        effects = subscribe(core, "10.1.2.3", T0 + 1 + i * 1e-4, itr=source, source=source, xtr_id=(1 << 100) + i,
                            nonce=i)
        answered += sum(isinstance(decode_message(e.payload), MapReply) for e in effects if e.destination == source)
    assert answered == FLOOD  # every ITR still gets its answer
    # The budget's burst and its refill over the flood, and nothing else, were decoded in full (was 5,000).
    assert decodes["ecm"] <= CANDIDATES_PER_SECOND * 1.5 + 10, decodes
    assert core.counters["dropped.subscribe_over_budget"] >= FLOOD - CANDIDATES_PER_SECOND * 1.5 - 10
    assert core.pending_subscriptions <= CANDIDATES_PER_SECOND * 1.5 + 10


def test_known_subscribers_and_registered_xtrs_go_through_during_the_flood(decodes):
    core = make_core(rate_limit_per_source=1e9)
    register(core, "10.1.0.0/16", ["198.18.1.1"], xtr_id=XTR_ID)
    live = 0xC0FFEE
    ack_all(core, subscribe(core, "10.1.2.3", T0 + 0.5, xtr_id=live, nonce=7), T0 + 0.5, key=None)
    assert core.subscription_count == 1
    for i in range(3000):  # the budget is spent
        source = spoofed(i)
        subscribe(core, "10.1.2.3", T0 + 1 + i * 1e-5, itr=source, source=source, xtr_id=(1 << 100) + i, nonce=i)
    assert core.counters["dropped.subscribe_over_budget"] > 1000
    now = T0 + 1 + 3000e-5  # right after the flood: no token left
    before = decodes["ecm"]
    renewal = subscribe(core, "10.1.2.3", now, xtr_id=live, nonce=8)  # a renewal: confirmed again
    assert len(notifies(renewal)) == 1
    other = subscribe(core, "10.1.9.9", now, xtr_id=live, nonce=9)  # a new prefix of a live subscriber
    assert len(notifies(other)) == 1
    etr_itr = subscribe(core, "10.1.2.3", now, xtr_id=XTR_ID, nonce=10)  # the xTR-ID an ETR registered
    assert len(notifies(etr_itr)) == 1
    assert decodes["ecm"] == before + 3


def test_a_subscribe_flood_only_the_full_path_could_answer_is_dropped_before_decoding(decodes):
    """Subscribing to a prefix, not a host, is outside the fast path's shape: over budget, it is dropped."""
    core = make_core(rate_limit_per_source=1e9)
    register(core, "10.1.0.0/16", ["198.18.1.1"], xtr_id=XTR_ID)
    for i in range(FLOOD):
        source = spoofed(i)
        payload = packets.map_request_ecm("10.1.2.0/24", [source], nonce=i, subscribe=True,
                                          xtr_id=(1 << 100) + i, site_id=1)
        core.handle_control(payload, source, 4342, T0 + 1 + i * 1e-4)
    assert decodes["ecm"] <= CANDIDATES_PER_SECOND * 1.5 + 10, decodes
    assert core.counters["dropped.map_request_shed"] >= FLOOD - CANDIDATES_PER_SECOND * 1.5 - 10
    assert "dropped.malformed" not in core.counters


def test_registers_failing_authentication_are_refused_before_decoding(decodes):
    core = make_core(rate_limit_per_source=1e9)
    for i in range(2000):
        source = spoofed(i)
        payload = packets.map_register([packets.record(f"10.10.{i % 250}.0/24", [str(source)])], "wrong-key",
                                       nonce=i, want_notify=True)
        assert core.handle_control(payload, source, 4342, T0 + 1 + i * 1e-4) == []
    unsigned = packets.map_register([packets.record("10.10.1.0/24", ["198.18.1.1"])], KEY, algorithm=0)
    core.handle_control(unsigned, ETR, 4342, T0 + 2)
    outside = packets.map_register([packets.record("10.99.0.0/16", ["198.18.1.1"])], KEY)
    core.handle_control(outside, ETR, 4342, T0 + 2)
    assert decodes["register"] == 0, decodes  # was 2,002
    assert core.counters["rejected.map_register.auth-mismatch"] == 2000
    assert core.counters["rejected.map_register.auth-no-authentication"] == 1
    assert core.counters["rejected.map_register.unknown-site"] == 1
    effects = register(core, "10.10.1.0/24", ["198.18.1.1"], now=T0 + 3, want_notify=True)
    assert decodes["register"] == 1 and len(notifies(effects)) == 1  # the ETR with the key: decoded, accepted
    assert core.counters["accepted.map_register"] == 1


def test_renewals_ride_out_the_flood_unchanged():
    """Without shedding (no flood) a subscriber's first request still subscribes it: the budget is not spent."""
    core = make_core(rate_limit_per_source=1e9)
    register(core, "10.1.0.0/16", ["198.18.1.1"], xtr_id=XTR_ID)
    effects = subscribe(core, "10.1.2.3", T0 + 1, xtr_id=0xABC, nonce=1)
    assert len(notifies(effects)) == 1 and any(e.destination == ITR for e in effects)


def test_the_loop_answers_plain_requests_behind_a_flood_of_costly_ones(monkeypatch):
    """A full batch (the loop is behind): plain requests and registers in it are served, the costly
    Map-Requests beyond the budget dropped and counted; the next, partial batch is served whole."""
    import socket
    import time

    from lisp_ryu.glue import mapserver_loop
    from lisp_ryu.glue.mapserver_loop import UDP_BATCH, StandaloneServer

    monkeypatch.setattr(mapserver_loop, "SLOW_BUDGET", -1.0)  # no time at all for them while behind
    core = make_core(rate_limit_per_source=1e9)
    register(core, "10.1.0.0/16", ["198.18.1.1"], xtr_id=XTR_ID)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.bind(("127.0.0.1", 0))
        client.bind(("127.0.0.1", 0))
        client.settimeout(2.0)
        server = StandaloneServer(core, udp, clock=lambda: T0 + 1)
        port = client.getsockname()[1]
        costly = [packets.map_request_ecm("10.1.2.0/24", ["127.0.0.1"], nonce=1000 + i, source_port=port)
                  for i in range(UDP_BATCH + 40)]
        plain = packets.map_request_ecm("10.1.2.3", ["127.0.0.1"], nonce=7, source_port=port)
        etr = packets.map_register([packets.record("10.10.7.0/24", ["198.18.1.1"])], KEY, nonce=99)
        for payload in costly[:100] + [plain, etr] + costly[100:]:
            client.sendto(payload, udp.getsockname())
        time.sleep(0.05)
        server._receive()  # a full batch: the loop is behind
        assert server.counters["shed_map_requests"] == UDP_BATCH - 2
        assert core.counters["accepted.map_register"] == 2  # the register in the batch was handled
        assert client.recv(65535)[4:12] == (7).to_bytes(8, "big")  # the plain request answered
        server._receive()  # the rest: not behind, served whole
        assert server.counters["shed_map_requests"] == UDP_BATCH - 2
        answered = {client.recv(65535)[4:12] for _ in range(len(costly) - (UDP_BATCH - 2))}
        assert len(answered) == len(costly) - (UDP_BATCH - 2)
    finally:
        udp.close()
        client.close()
