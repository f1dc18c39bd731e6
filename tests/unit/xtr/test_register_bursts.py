"""A burst of arrivals (an evacuation) is registered in a few Map-Registers, one in flight per map-server."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
import yaml

from lisp_ryu import config
from lisp_ryu.effects import SendControl
from lisp_ryu.wire import auth
from lisp_ryu.wire.control import decode_message
from lisp_ryu.wire.messages import MapNotify
from lisp_ryu.wire.prefix import EidPrefix
from lisp_ryu.wire.records import Locator, MappingRecord
from lisp_ryu.xtr.core import XtrCore
from support.effects import as_the_glue_runs

MS = ipaddress.ip_address("198.18.0.2")
KEY = "s3cret"
CONFIG = """
xtrs:
  - name: dc2
    dpid: 2
    rlocs: [{address: 198.18.2.2}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.2.0.0/16, iid: 42}]
    map_servers: [{address: 198.18.0.2, key: s3cret}]
    gateways: [{subnet: 10.1.0.0/16, ip: 10.1.0.1, mac: "02:00:00:00:01:01", iid: 42}]
    dynamic_eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}]
"""


@pytest.fixture
def xtr():
    cfg = config.parse(yaml.safe_load(CONFIG)).xtrs[0]
    counter = itertools.count(1000)
    return XtrCore(cfg, nonces=lambda: next(counter))


def registers(effects):
    return [e for e in effects if isinstance(e, SendControl) and e.what.startswith("Map-Register")]


def notify_for(payload):
    reg = decode_message(payload)
    return auth.sign(MapNotify(nonce=reg.nonce, records=reg.records, xtr_id=reg.xtr_id, site_id=reg.site_id),
                     KEY, 1).encode()


def host_routes(send):
    return sorted(str(r.eid_prefix) for r in decode_message(send.payload).records if r.eid_prefix.mask_len == 32)


def all_routes(send):
    return sorted(str(r.eid_prefix) for r in decode_message(send.payload).records)


def arrive(xtr, k, now):
    return as_the_glue_runs(xtr, xtr.handle_host_seen(10 + k, ipaddress.ip_address(f"10.1.0.{10 + k}"),
                                                      f"02:00:00:01:00:{k:02x}", b"garp", now), now)


def registered(xtr, now=0.0):
    (first,) = registers(xtr.start(now))
    assert xtr.handle_control(notify_for(first.payload), MS, 4342, now + 0.01) == []


def test_arrivals_while_a_register_is_in_flight_leave_together_on_its_map_notify(xtr):
    registered(xtr)
    (first,) = registers(arrive(xtr, 0, 10.0))
    assert all_routes(first) == ["[42]10.1.0.10/32"]  # what changed only: not the site's prefix again
    for k in range(1, 6):  # a burst: each arrival is learned at once, its registration waits
        assert registers(arrive(xtr, k, 10.0 + k * 0.001)) == []
    (second,) = registers(xtr.handle_control(notify_for(first.payload), MS, 4342, 10.02))
    assert host_routes(second) == [f"[42]10.1.0.{10 + k}/32" for k in range(1, 6)]  # 10.1.0.10 is confirmed
    assert xtr.handle_control(notify_for(second.payload), MS, 4342, 10.03) == []
    reg = xtr.registrations[0]
    assert reg.registered and reg.reachable and not reg.pending
    assert xtr.counters.get("map_register_unanswered", 0) == 0


def test_a_lost_map_notify_still_sends_the_waiting_arrivals_on_the_retry(xtr):
    registered(xtr)
    registers(arrive(xtr, 0, 10.0))
    assert registers(arrive(xtr, 1, 10.1)) == []
    assert xtr.next_deadline() == pytest.approx(11.0)
    (retry,) = registers(xtr.handle_timer(11.0))
    assert host_routes(retry) == ["[42]10.1.0.10/32", "[42]10.1.0.11/32"]


def test_an_arrival_after_the_wait_for_the_map_notify_registers_at_once(xtr):
    registered(xtr)
    registers(arrive(xtr, 0, 10.0))
    (again,) = registers(arrive(xtr, 1, 11.5))  # the first one's Map-Notify is overdue: no waiting for it
    assert host_routes(again) == ["[42]10.1.0.10/32", "[42]10.1.0.11/32"]


def test_a_map_notify_logs_only_what_changed_since_the_last_one(xtr, caplog):
    """Every Map-Register carries every record: logging each record of each Map-Notify made a
    line per EID per registration (452 lines in one evacuation), saying nothing new."""
    caplog.set_level("INFO", logger="lisp_ryu.xtr")
    registered(xtr)
    assert [r.getMessage() for r in caplog.records if ": registered " in r.getMessage()] == [
        "dc2: registered [42]10.2.0.0/16 -> 198.18.2.2 with 198.18.0.2"]
    caplog.clear()
    (first,) = registers(arrive(xtr, 0, 10.0))
    xtr.handle_control(notify_for(first.payload), MS, 4342, 10.01)
    assert [r.getMessage() for r in caplog.records if ": registered " in r.getMessage()] == [
        "dc2: registered [42]10.1.0.10/32 -> 198.18.2.2 with 198.18.0.2"]
    caplog.clear()
    (refresh,) = registers(xtr.handle_timer(10.0 + xtr.config.register_interval + 1))  # the periodic one
    xtr.handle_control(notify_for(refresh.payload), MS, 4342, 10.0 + xtr.config.register_interval + 1.01)
    assert [r.getMessage() for r in caplog.records if ": registered " in r.getMessage()] == []


def test_the_periodic_register_carries_every_record_an_interval_after_the_last_one(xtr):
    """Registers of changes only do not postpone the periodic one: it is what keeps every
    record from expiring at the map-server."""
    registered(xtr)
    interval = xtr.config.register_interval
    (first,) = registers(arrive(xtr, 0, 10.0))
    xtr.handle_control(notify_for(first.payload), MS, 4342, 10.01)
    assert xtr.next_deadline() == pytest.approx(interval + 0.01)  # from the first full one's Map-Notify
    (periodic,) = registers(xtr.handle_timer(interval + 0.01))
    assert all_routes(periodic) == ["[42]10.1.0.10/32", "[42]10.2.0.0/16"]
    xtr.handle_control(notify_for(periodic.payload), MS, 4342, interval + 0.02)
    assert xtr.next_deadline() == pytest.approx(2 * interval + 0.02)
    assert registers(xtr.handle_timer(2 * interval)) == []


def test_a_workload_that_left_and_came_back_is_registered_again(xtr):
    """The map-server filed it under its other site meanwhile: what it confirmed before no longer holds."""
    registered(xtr)
    (first,) = registers(arrive(xtr, 0, 10.0))
    xtr.handle_control(notify_for(first.payload), MS, 4342, 10.01)
    elsewhere = auth.sign(MapNotify(nonce=77, records=(MappingRecord.for_prefix(
        EidPrefix(ipaddress.ip_address("10.1.0.10"), 32, 42), (Locator(ipaddress.ip_address("198.18.9.2")),)),)),
        KEY, 1).encode()
    xtr.handle_control(elsewhere, MS, 4342, 11.0)  # the former holder hears of the move
    assert xtr.counters["dynamic_eid_departed"] == 1
    (again,) = registers(arrive(xtr, 0, 12.0))
    assert all_routes(again) == ["[42]10.1.0.10/32"]


def test_a_register_that_changes_nothing_is_not_sent(xtr):
    registered(xtr)
    (first,) = registers(arrive(xtr, 0, 10.0))
    xtr.handle_control(notify_for(first.payload), MS, 4342, 10.01)
    assert registers(xtr.registrar.register_all(10.5)) == []


def test_a_wait_for_the_map_notify_that_ends_with_nothing_new_leaves_nothing_pending(xtr):
    """B arrives while A's register is in flight, then leaves again before its Map-Notify:
    nothing is left to register, and nothing stays pending."""
    registered(xtr)
    (first,) = registers(arrive(xtr, 0, 10.0))
    assert registers(arrive(xtr, 1, 10.001)) == [] and xtr.registrations[0].pending
    b = MappingRecord.for_prefix(EidPrefix(ipaddress.ip_address("10.1.0.11"), 32, 42),
                                 (Locator(ipaddress.ip_address("198.18.9.2")),))
    xtr.moved_elsewhere(b, "dc9", 10.005)
    assert registers(xtr.handle_control(notify_for(first.payload), MS, 4342, 10.02)) == []
    assert not xtr.registrations[0].pending


def test_a_map_notify_arriving_after_a_departure_does_not_confirm_the_departed_host(xtr):
    """A workload flapping between two sites: it left while its Map-Register was in flight, and
    the Map-Notify for that register came after.  Taking that as confirmation made the xTR
    believe the map-server still had it from here, so when it came back it was never registered
    again and the map-server kept the other site (a planned evacuation left stale /32s so)."""
    registered(xtr)
    (first,) = registers(arrive(xtr, 0, 10.0))
    elsewhere = auth.sign(MapNotify(nonce=78, records=(MappingRecord.for_prefix(
        EidPrefix(ipaddress.ip_address("10.1.0.10"), 32, 42), (Locator(ipaddress.ip_address("198.18.9.2")),)),)),
        KEY, 1).encode()
    xtr.handle_control(elsewhere, MS, 4342, 10.005)  # it moved on before our Map-Notify came
    assert not xtr.is_here(42, ipaddress.ip_address("10.1.0.10"))
    xtr.handle_control(notify_for(first.payload), MS, 4342, 10.01)  # the late Map-Notify
    (back,) = registers(arrive(xtr, 0, 12.0))
    assert host_routes(back) == ["[42]10.1.0.10/32"]
