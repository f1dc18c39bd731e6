"""Several map-servers and map-resolvers (issue 17): register with all, resolve through one, fail over.

Time is injected: every step says when it happens.
"""

import ipaddress
import itertools
import logging

import pytest
import yaml

from lisp_ryu import config
from lisp_ryu.effects import SendControl
from lisp_ryu.glue.xtr_views import mapping_system_view
from lisp_ryu.wire import auth
from lisp_ryu.wire.control import decode_message
from lisp_ryu.wire.ecm import EncapsulatedControlMessage
from lisp_ryu.wire.messages import MapNotify, MapRegister, MapReply, MapRequest
from lisp_ryu.wire.prefix import EidPrefix
from lisp_ryu.wire.records import Locator, MappingRecord
from lisp_ryu.xtr import resolution
from lisp_ryu.xtr.core import XtrCore

ip = ipaddress.ip_address
MS = [ip("198.18.0.2"), ip("198.18.0.3"), ip("198.18.0.4")]
KEYS = {MS[0]: "k-one", MS[1]: "k-two", MS[2]: "k-three"}
RLOC = ip("198.18.1.2")
DC2 = ip("198.18.2.2")

CONFIG = """
xtrs:
  - name: dc1
    dpid: 1
    rlocs: [{address: 198.18.1.2}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}]
    map_servers:
      - {address: 198.18.0.2, key: k-one}
      - {address: 198.18.0.3, key: k-two}
      - {address: 198.18.0.4, key: k-three}
    hosts: [{ip: 10.1.0.10, mac: "02:00:00:01:00:0a", port: 1, iid: 42}]
"""


def make(extra: str = "") -> XtrCore:
    cfg = config.parse(yaml.safe_load(CONFIG + extra)).xtrs[0]
    counter = itertools.count(1000)
    return XtrCore(cfg, nonces=lambda: next(counter))


def sends(effects):
    return [e for e in effects if isinstance(e, SendControl)]


def registers(effects):
    return {e.destination: e for e in sends(effects) if e.what.startswith("Map-Register")}


def requests(effects):
    return [e for e in sends(effects) if e.what.startswith("Map-Request")]


def probes(effects):
    return [e for e in sends(effects) if e.what.startswith("Map-Resolver probe")]


def notify_for(send: SendControl) -> bytes:
    reg = decode_message(send.payload)
    assert isinstance(reg, MapRegister)
    notify = MapNotify(nonce=reg.nonce, records=reg.records, xtr_id=reg.xtr_id, site_id=reg.site_id)
    return auth.sign(notify, KEYS[send.destination], 1).encode()


def request_in(send: SendControl) -> MapRequest:
    ecm = decode_message(send.payload)
    assert isinstance(ecm, EncapsulatedControlMessage)
    return ecm.message


def reply_for(request: MapRequest, prefix="10.2.0.0/16") -> bytes:
    record = MappingRecord.for_prefix(EidPrefix.from_network(prefix, 42), (Locator(DC2),), ttl=10)
    return MapReply(nonce=request.nonce, records=(record,)).encode()


def miss(xtr, dst, now):
    return xtr.handle_miss(1, 42, ip("10.1.0.10"), ip(dst), b"packet", now)


# ---- the ETR: every map-server, each with its own key, its own Map-Notify, its own state


def test_default_map_resolvers_are_the_map_servers():
    assert make().config.map_resolvers == tuple(MS)
    xtr = make("    map_resolvers: [198.18.0.9, 198.18.0.3]\n")
    assert xtr.config.map_resolvers == (ip("198.18.0.9"), ip("198.18.0.3"))


def test_registers_with_three_map_servers_one_dead(caplog):
    caplog.set_level(logging.WARNING, "lisp_ryu.xtr")
    xtr = make()
    sent = registers(xtr.start(0.0))
    assert set(sent) == set(MS)
    for address, send in sent.items():  # each signed with that server's own key
        assert auth.verify(send.payload, KEYS[address])
        assert not auth.verify(send.payload, KEYS[MS[0] if address != MS[0] else MS[1]])
    for address in MS[:2]:  # the third never answers
        assert xtr.handle_control(notify_for(sent[address]), address, 4342, 0.1) == []
    # A Map-Notify signed with another server's key does not count for the third.
    reg3 = decode_message(sent[MS[2]].payload)
    forged = auth.sign(MapNotify(nonce=reg3.nonce, records=reg3.records, xtr_id=reg3.xtr_id,
                                 site_id=reg3.site_id), KEYS[MS[0]], 1).encode()
    xtr.handle_control(forged, MS[2], 4342, 0.2)
    assert [r.registered for r in xtr.registrations] == [True, True, False]
    assert xtr.counters["map_notify_bad_auth"] == 1

    # Only the silent one is retried, backing off 1, 2, 4, 4 s (REGISTER_RETRY_MAX).
    times, now = [], 0.0
    for _ in range(4):
        now = xtr.next_deadline()
        again = registers(xtr.handle_timer(now))
        assert set(again) == {MS[2]}
        times.append(now)
    assert times == pytest.approx([1.0, 3.0, 7.0, 11.0])
    assert xtr.counters["map_server_unreachable"] == 1  # said once, at the second unanswered one
    assert sum("Map-Server 198.18.0.4 unreachable" in r.getMessage() for r in caplog.records) == 1
    view = mapping_system_view(xtr, now)
    assert view["unreachable"] == ["198.18.0.4"]
    assert [s["reachable"] for s in view["map_servers"]] == [True, True, False]

    # It comes back: its Map-Notify makes it reachable and registered again.
    last = registers(xtr.handle_timer(xtr.next_deadline()))[MS[2]]
    xtr.handle_control(notify_for(last), MS[2], 4342, 15.2)
    assert [r.registered for r in xtr.registrations] == [True, True, True]
    assert mapping_system_view(xtr, 15.2)["unreachable"] == []
    assert any("Map-Server 198.18.0.4 answers again" in r.getMessage() for r in caplog.records)
    # The two that answered at once were never retried: next refresh one register_interval later.
    assert [r.due for r in xtr.registrations] == pytest.approx([60.1, 60.1, 75.2])


# ---- the ITR: one map-resolver at a time, failover on timeout, back after a hold-down


def answer_probe(xtr, probe: SendControl, now: float):
    """The resolver answers a probe (here itself; in the lab it may forward it to us, the ETR)."""
    return xtr.handle_control(reply_for(request_in(probe), "10.1.0.0/16"), probe.destination, 4342, now)


def test_map_requests_go_to_one_resolver_and_fail_over_on_timeout(caplog):
    caplog.set_level(logging.WARNING, "lisp_ryu.xtr")
    xtr = make()
    (first,) = requests(miss(xtr, "10.2.0.20", 10.0))
    assert first.destination == MS[0]
    xtr.handle_control(reply_for(request_in(first)), MS[0], 4342, 10.1)
    (second,) = requests(miss(xtr, "10.3.0.20", 11.0))
    assert second.destination == MS[0]  # the same one while it answers

    # MS[0] dies: the retry goes to the next resolver at once, and MS[0] is probed.
    effects = xtr.handle_timer(12.0)
    (retry,) = requests(effects)
    assert retry.destination == MS[1]
    assert request_in(retry).nonce == request_in(second).nonce
    (probe,) = probes(effects)
    assert probe.destination == MS[0]
    asked = request_in(probe).records[0].eid_prefix
    assert str(asked) == "[42]10.1.0.0/32"  # our own EID: answered by it, or forwarded to us
    assert xtr.counters["map_resolver_down"] == 1
    assert any("Map-Resolver 198.18.0.2 unreachable" in r.getMessage() for r in caplog.records)
    assert any("now go to Map-Resolver 198.18.0.3" in r.getMessage() for r in caplog.records)
    xtr.handle_control(reply_for(request_in(retry), "10.3.0.0/16"), MS[1], 4342, 12.05)
    assert xtr.lookup(42, None, ip("10.3.0.20"), 12.05) is not None  # answered 1 s after the first try

    # New misses go straight to MS[1]; MS[0] keeps being probed once a second, unanswered.
    (third,) = requests(miss(xtr, "10.4.0.20", 12.5))
    assert third.destination == MS[1]
    xtr.handle_control(reply_for(request_in(third), "10.4.0.0/16"), MS[1], 4342, 12.6)
    effects = xtr.handle_timer(13.0)
    assert [p.destination for p in probes(effects)] == [MS[0]]
    assert xtr.counters["map_resolver_probe_unanswered"] == 1
    view = mapping_system_view(xtr, 13.0)
    assert [(r["state"], r["active"]) for r in view["map_resolvers"]] == [("down", False), ("up", True),
                                                                        ("up", False)]
    assert view["unreachable"] == ["198.18.0.2"]

    # MS[0] comes back: it answers probes, but is used again only after the hold-down.
    now = 13.0
    probe = probes(effects)[0]
    back = None
    while back is None:
        answer_probe(xtr, probe, now + 0.01)
        if xtr.state.active_resolver == 0:
            back = now + 0.01
            break
        assert mapping_system_view(xtr, now)["map_resolvers"][0]["state"] == "recovering"
        now = xtr.next_deadline()
        (probe,) = probes(xtr.handle_timer(now))
    assert back - 13.01 == pytest.approx(resolution.RESOLVER_HOLD_DOWN, abs=1.0)
    assert xtr.counters["map_resolver_up"] == 1
    assert any("Map-Resolver 198.18.0.2 answers again" in r.getMessage() for r in caplog.records)
    (fourth,) = requests(miss(xtr, "10.5.0.20", back + 1))
    assert fourth.destination == MS[0]
    xtr.handle_control(reply_for(request_in(fourth), "10.5.0.0/16"), MS[0], 4342, back + 1.1)
    assert probes(xtr.handle_timer(back + 5)) == []  # no more probing


def test_a_silent_etr_does_not_keep_a_resolver_down():
    """The timeout was a forwarded request's ETR: the resolver answers its first probe and is back at once."""
    xtr = make()
    (first,) = requests(miss(xtr, "10.2.0.20", 0.0))
    effects = xtr.handle_timer(1.0)
    (probe,) = probes(effects)
    assert requests(effects)[0].destination == MS[1]
    answer_probe(xtr, probe, 1.05)
    assert xtr.state.active_resolver == 0 and xtr.state.resolvers[0].up
    (again,) = requests(miss(xtr, "10.3.0.20", 1.5))
    assert again.destination == MS[0]


def test_every_resolver_silent_tries_each_in_turn_then_gives_up():
    xtr = make()
    requests(miss(xtr, "10.2.0.20", 0.0))
    seen = [MS[0]]
    for now in (1.0, 2.0):
        seen += [s.destination for s in requests(xtr.handle_timer(now))]
    assert seen == MS  # 3 attempts, 3 resolvers
    xtr.handle_timer(3.0)
    assert xtr.counters["resolution_failed"] == 1
    assert not any(r.up for r in xtr.state.resolvers)
    # Still probing each, and a new miss still goes out.
    assert {p.destination for p in probes(xtr.handle_timer(xtr.next_deadline()))} <= set(MS)
    assert len(requests(miss(xtr, "10.9.0.1", 10.0))) == 1


def answered_in(xtr, dst, sent, took):
    (request,) = requests(miss(xtr, dst, sent))
    xtr.handle_control(reply_for(request_in(request), dst.rsplit(".", 2)[0] + ".0.0/16"), request.destination,
                       4342, sent + took)
    return request


def test_a_resolver_that_answers_fast_is_left_for_the_next_after_failover_min_not_a_second():
    xtr = make()
    for i in range(8):  # MS[0] answers in 10 ms
        answered_in(xtr, f"10.{10 + i}.0.20", float(i), 0.01)
    (silent,) = requests(miss(xtr, "10.3.0.20", 10.0))
    assert silent.destination == MS[0]
    assert requests(xtr.handle_timer(10.0 + resolution.FAILOVER_MIN - 0.01)) == []
    (moved,) = requests(xtr.handle_timer(10.0 + resolution.FAILOVER_MIN))
    assert moved.destination == MS[1] and request_in(moved).nonce == request_in(silent).nonce
    assert xtr.counters["map_resolver_down"] == 1
    # MS[1] has no answer time yet: its request waits the full retransmission interval.
    assert requests(xtr.handle_timer(10.0 + resolution.FAILOVER_MIN + resolution.REQUEST_TIMEOUT - 0.01)) == []


def test_a_slow_resolver_gets_the_time_its_answers_take():
    xtr = make()
    for i in range(8):
        answered_in(xtr, f"10.{10 + i}.0.20", float(i), 0.5 + 0.05 * (i % 2))
    requests(miss(xtr, "10.3.0.20", 10.0))
    assert requests(xtr.handle_timer(10.6)) == []  # its answers take 0.5-0.55 s: still waiting
    assert [r.destination for r in requests(xtr.handle_timer(11.0))] == [MS[1]]


def test_with_one_resolver_retries_keep_the_rfc_interval():
    xtr = make("    map_resolvers: [198.18.0.2]\n")
    for i in range(8):
        answered_in(xtr, f"10.{10 + i}.0.20", float(i), 0.01)
    requests(miss(xtr, "10.3.0.20", 10.0))
    assert requests(xtr.handle_timer(10.0 + resolution.REQUEST_TIMEOUT - 0.01)) == []
    assert [r.destination for r in requests(xtr.handle_timer(10.0 + resolution.REQUEST_TIMEOUT))] == [MS[0]]
