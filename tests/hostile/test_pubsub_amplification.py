"""Pub/sub as an amplifier and a denial of service (issue 15, item 5).

Before: subscriptions needed no key and no confirmation, were kept for
whatever prefix the request named (0.0.0.0/0 although the answer was a /5),
each journalled with its own fsync, and notified at whatever ITR-RLOC the
request wrote; one change sent one Map-Notify per subscription; an
unmatched Map-Notify-Ack scanned every pending Notify.
"""

import ipaddress
import sys

from lisp_ryu.mapserver import MemoryStore
from lisp_ryu.mapserver.pubsub import MAX_CANDIDATES

from support import packets
from support.hostile_pubsub import ITR, T0, VICTIM, XTR_ID, ack_all, make_core, net, notifies, register, \
    subscribe


def test_a_subscription_is_never_wider_than_the_answer():
    core = make_core()
    ack_all(core, subscribe(core, "0.0.0.0/0", T0, xtr_id=7), T0, key=None)
    [sub] = core.subscriptions()
    assert sub.prefix == net("0.0.0.0/5")  # the negative answer's prefix, not 0.0.0.0/0


def test_a_spoofed_itr_rloc_is_never_subscribed_and_the_flood_does_not_lock_out_a_live_itr():
    core = make_core(rate_limit_per_source=1e9)
    register(core, "10.1.0.0/16", ["198.18.1.1"], xtr_id=XTR_ID)
    # 3x the candidate table of spoofed subscriptions naming a victim that never acknowledges.
    sent = received = 0
    for i in range(3 * MAX_CANDIDATES):
        payload = packets.map_request_ecm("10.1.2.3", [VICTIM], nonce=i, subscribe=True, xtr_id=1_000_000 + i,
                                          site_id=3)
        sent += len(payload)
        effects = core.handle_control(payload, ipaddress.ip_address(0x7F000000 + i), 4342, T0 + 1 + i * 1e-3)
        received += sum(len(e.payload) for e in effects if e.destination == VICTIM)
    assert core.subscription_count == 0
    assert core.pending_subscriptions <= MAX_CANDIDATES
    assert core.counters["subscriptions.candidates_evicted"] >= MAX_CANDIDATES
    # A live ITR subscribing right after the flood (its candidates still pending) is confirmed by its Ack.
    now = T0 + 1 + 3 * MAX_CANDIDATES * 1e-3
    ack_all(core, subscribe(core, "10.1.2.3", now), now)
    assert [sub.itr_rloc for sub in core.subscriptions()] == [ITR]
    # Unacknowledged candidates go when their retransmissions give up; nothing is left behind.
    for step in range(1, 17):  # retransmitted after 1, 2 and 4 s, given up 8 s later
        received += sum(len(e.payload) for e in core.handle_timer(now + step) if e.destination == VICTIM)
    assert core.pending_subscriptions == 0 and core.pending_notifications == 0
    # The victim got at most 4x the bytes sent naming it (a reply, a confirmation and 3 retransmissions
    # each, before: 162x), plus the time-based allowance.
    assert received <= 4 * sent + 256 * 10 + 4096, received / sent


def test_one_change_sends_one_map_notify_per_itr_not_per_subscription():
    core = make_core(rate_limit_per_source=1e9)
    register(core, "10.10.0.0/16", ["198.18.1.1"], xtr_id=XTR_ID)
    for i in range(2000):
        host = f"10.10.{i // 250}.{i % 250 + 1}"
        ack_all(core, subscribe(core, host, T0 + 1 + i * 1e-3, nonce=i), T0 + 1 + i * 1e-3)
    assert core.subscription_count == 2000
    effects = register(core, "10.10.0.0/16", ["198.18.1.2"], now=T0 + 10, xtr_id=XTR_ID)
    to_itr = [e for e, _ in notifies(effects) if e.destination == ITR]
    assert len(to_itr) == 1, len(to_itr)  # was 2000
    assert core.counters["notify.coalesced"] == 1999


def _lines_run(call) -> int:
    """Python lines executed by `call()`: a count that grows with any scan, whatever the machine's load."""
    count = 0

    def trace(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return trace

    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(None)
    return count


def test_an_unmatched_ack_is_found_in_one_lookup():
    record = packets.record("10.1.0.0/16", ["198.18.1.1"])
    stray = packets.map_notify_ack(1 << 60, [], None)
    work = {}
    for pending in (500, 50_000):
        core = make_core()
        for i in range(pending):
            core._pubsub.notify(ipaddress.ip_address(0xC6120000 + i), 4342, i, record, None, 1, None, "test", T0)
        core.handle_control(stray, VICTIM, 4342, T0 + 0.5)  # warm: first-time paths out of the count
        work[pending] = _lines_run(lambda: core.handle_control(stray, VICTIM, 4342, T0 + 0.5))
        assert core.counters["dropped.map_notify_ack_unmatched"] == 2
    assert work[50_000] == work[500], work  # a scan of the pending notifies would grow 100-fold


def test_subscriptions_are_journalled_in_batches():
    store = MemoryStore()
    appends = []
    original = store.append
    store.append = lambda entries: (appends.append(len(entries)), original(entries))[1]
    core = make_core(store=store, rate_limit_per_source=1e9)
    register(core, "10.1.0.0/16", ["198.18.1.1"], xtr_id=XTR_ID)
    appends.clear()
    for i in range(500):  # 500 live subscribers, each acknowledging at once
        now = T0 + 1 + i * 1e-3
        ack_all(core, subscribe(core, "10.1.2.3", now, xtr_id=XTR_ID + 1 + i, itr=ipaddress.ip_address(0x0A630000 + i),
                                nonce=i), now, key=None)
    assert len(appends) == 0  # nothing written per request or per Ack ...
    core.handle_timer(T0 + 3)
    assert appends == [500]  # ... but all of them in one batch, a moment later
    restarted = make_core(store=store)
    assert restarted.subscription_count == 500


def test_a_subscribe_flood_beyond_the_candidate_rate_is_only_answered():
    core = make_core(rate_limit_per_source=1e9)
    register(core, "10.1.0.0/16", ["198.18.1.1"], xtr_id=XTR_ID)
    for i in range(5000):  # 5,000 in half a second
        subscribe(core, "10.1.2.3", T0 + 1 + i * 1e-4, itr=ipaddress.ip_address(0x7F000000 + i), xtr_id=9000 + i,
                  nonce=i)
    assert core.counters["dropped.subscribe_over_budget"] >= 3000
    assert core.pending_subscriptions <= 2000
    assert core.counters["sent.map_reply"] >= 5000 - 1  # every request still answered
