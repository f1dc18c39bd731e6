"""A Map-Register that changes many records: one Map-Notify per destination carries them (cut to fit a
datagram), each acknowledged as one; unacknowledged Map-Notifies are retransmitted with a doubling interval."""

import ipaddress
import math

from lisp_ryu.mapserver.publication import MAX_NOTIFY_RECORD_BYTES, MAX_RECORDS_PER_NOTIFY, notify_parts
from lisp_ryu.wire import AuthAlgorithm, AuthResult, MapNotify, check_authentication, sign

from mapserver_helpers import DC1_KEY, DC2_KEY, ETR1, ETR2, ITR, T0, acked, make_core, only
from support import packets

XTR_ID = 0xFEED
HOSTS = [f"10.10.{i // 200}.{i % 200 + 1}/32" for i in range(100)]


def register_all(core, key, source, rlocs, now, want_notify=False):
    payload = packets.map_register([packets.record(h, rlocs, iid=42) for h in HOSTS], key, proxy=True,
                                   want_notify=want_notify)
    return core.handle_control(payload, source, 4342, now)


def subscribe(core, host, now, xtr_id=XTR_ID, itr=ITR, iid=42):
    payload = packets.map_request_ecm(host.split("/")[0], [itr], iid=iid, nonce=7, source_port=61000,
                                      subscribe=True, xtr_id=xtr_id, site_id=3)
    return acked(core, core.handle_control(payload, itr, 4342, now), now)


def moved_core():
    """100 hosts registered at dc1 in one Map-Register, an ITR subscribed to each of them."""
    core = make_core()
    register_all(core, DC1_KEY, ETR1, ["198.18.1.1"], T0, want_notify=True)
    for n, host in enumerate(HOSTS):
        subscribe(core, host, T0 + 1 + n * 1e-3)
    assert core.subscription_count == 100 and core.pending_notifications == 0
    return core


def test_a_100_record_move_sends_each_destination_its_records_in_few_notifies():
    core = moved_core()
    effects = register_all(core, DC2_KEY, ETR2, ["198.18.2.1"], T0 + 20, want_notify=True)
    notifies = only(effects, MapNotify)
    assert notifies[0][0].destination == ETR2 and len(notifies[0][1].records) == 100  # the register's own
    by_destination: dict = {}
    for effect, notify in notifies[1:]:
        by_destination.setdefault(effect.destination, []).append((effect, notify))
    assert set(by_destination) == {ETR1, ITR}
    assert [e.destination for e, _ in notifies[1:]][0] == ETR1  # the former holder first
    for destination, sent in by_destination.items():
        records = [r for _, notify in sent for r in notify.records]
        assert [str(r.eid_prefix) for r in records] == [f"[42]{h}" for h in HOSTS]  # every record, in order
        assert all(str(loc.address) == "198.18.2.1" for r in records for loc in r.locators)
        assert all(len(e.payload) <= 1400 and len(n.records) <= MAX_RECORDS_PER_NOTIFY for e, n in sent)
        record_bytes = sum(len(n.encode()) for _, n in sent) - 16 * len(sent)
        assert len(sent) == math.ceil(record_bytes / MAX_NOTIFY_RECORD_BYTES) or len(sent) <= 4, len(sent)
        assert len({n.nonce for _, n in sent}) == len(sent)  # each acknowledged on its own
    assert all(check_authentication(e.payload, DC1_KEY) is AuthResult.OK for e, _ in by_destination[ETR1])
    assert core.counters["notify.former_holders"] == 1 and core.counters["notify.subscribers"] == 1
    # The 100 subscriptions share the Notify's nonce, kept for their next one.
    assert {sub.nonce for sub in core.subscriptions()} == {by_destination[ITR][0][1].nonce}
    # Each Map-Notify is acknowledged as one (same nonce and records): nothing left to retransmit.
    pending = core.pending_notifications
    assert pending == sum(len(sent) for sent in by_destination.values())
    acked(core, [e for sent in by_destination.values() for e, _ in sent], T0 + 20.1)
    assert core.counters["notify.acknowledged"] >= pending and core.pending_notifications == 0
    assert core.counters.get("dropped.map_notify_ack_unmatched", 0) == 0
    assert [e for step in range(1, 20) for e in core.handle_timer(T0 + 20 + step)] == []


def test_an_ack_with_another_nonce_leaves_the_notify_pending():
    core = moved_core()
    effects = register_all(core, DC2_KEY, ETR2, ["198.18.2.1"], T0 + 20)
    [first, *_] = [(e, n) for e, n in only(effects, MapNotify) if e.destination == ETR1]
    effect, notify = first
    core.handle_control(packets.map_notify_ack(notify.nonce ^ 0xFFFF0000, notify.records, DC1_KEY), ETR1, 4342, T0 + 20.1)
    assert core.counters["dropped.map_notify_ack_unmatched"] == 1
    again = [e for e in core.handle_timer(T0 + 21) if e.destination == ETR1]
    assert effect.payload in [e.payload for e in again]


def test_unacknowledged_notifies_are_retransmitted_after_1_2_and_4_seconds_then_given_up():
    core = make_core()
    core.handle_control(packets.map_register([packets.record("10.1.0.0/16", ["198.18.1.1"])], DC1_KEY,
                                             proxy=True), ETR1, 4342, T0)
    subscribe(core, "10.1.2.3/32", T0 + 1, iid=0)
    core.handle_control(packets.map_register([packets.record("10.1.0.0/16", ["198.18.1.9"])], DC1_KEY,
                                             proxy=True, nonce=2), ETR1, 4342, T0 + 10)
    times = []
    for tenth in range(1, 300):
        now = T0 + 10 + tenth / 10
        if [e for e in core.handle_timer(now) if e.destination == ITR]:
            times.append(round(now - T0 - 10, 1))
    assert times == [1.0, 3.0, 7.0]
    assert core.counters["notify.unacknowledged"] == 1 and core.pending_notifications == 0


def test_an_ack_after_the_last_retransmission_still_matches():
    core = make_core()
    core.handle_control(packets.map_register([packets.record("10.1.0.0/16", ["198.18.1.1"])], DC1_KEY,
                                             proxy=True), ETR1, 4342, T0)
    subscribe(core, "10.1.2.3/32", T0 + 1, iid=0)
    effects = core.handle_control(packets.map_register([packets.record("10.1.0.0/16", ["198.18.1.9"])], DC1_KEY,
                                                       proxy=True, nonce=2), ETR1, 4342, T0 + 10)
    for step in range(1, 15):  # three retransmissions (at 11, 13, 17 s), the peer's Ack late
        core.handle_timer(T0 + 10 + step)
    acked(core, [e for e in effects if e.destination == ITR], T0 + 24.5)
    assert core.counters["notify.acknowledged"] >= 2 and core.pending_notifications == 0
    assert core.counters.get("notify.unacknowledged", 0) == 0


def test_notify_parts_fit_a_datagram_and_keep_the_order():
    records = [packets.record(f"10.{i // 250}.{i % 250}.0/24", ["198.18.1.1", "2001:db8::1"], iid=7)
               for i in range(700)]
    parts = list(notify_parts(tuple(records)))
    assert [r for part in parts for r in part] == records
    for part in parts:
        signed = sign(MapNotify(nonce=1, records=part), "k", AuthAlgorithm.HMAC_SHA_256_128).encode()
        assert len(part) <= MAX_RECORDS_PER_NOTIFY and len(signed) <= 1400
    assert len(parts) < 700 // 10
    wide = packets.record("10.0.0.0/8", [str(ipaddress.ip_address("2001:db8::") + i) for i in range(100)])
    assert list(notify_parts((records[0], wide, records[1]))) == [(records[0],), (wide,), (records[1],)]
