"""Garbage in, counters up, state untouched; one flooding source cannot starve another."""

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from lisp_ryu.ratelimit import RateLimiter
from lisp_ryu.mapserver.service import MAX_DATAGRAM
from lisp_ryu.wire import MapReply

from mapserver_helpers import DC1_KEY, ETR1, ITR, T0, decoded, make_core, site_config
from support import packets

FLOODER = ipaddress.ip_address("203.0.113.66")


def test_token_bucket_allows_a_burst_then_the_rate():
    limiter = RateLimiter(rate=10, burst=10)
    assert [limiter.allow("a", 0.0) for _ in range(12)] == [True] * 10 + [False] * 2
    assert limiter.allow("b", 0.0)  # other sources have their own bucket
    assert not limiter.allow("a", 0.05)  # half a token
    assert limiter.allow("a", 0.1)  # one token refilled
    assert [limiter.allow("a", 100.0) for _ in range(11)].count(True) == 10  # never more than the burst


def test_source_table_is_bounded():
    limiter = RateLimiter(rate=1, burst=1, max_sources=3)
    for source in "abcd":
        limiter.allow(source, 0.0)
    assert len(limiter) == 3
    assert limiter.allow("a", 0.0)  # evicted, so it starts with a full bucket again


def test_the_least_recently_seen_sources_are_forgotten_first():
    limiter = RateLimiter(rate=0.001, burst=5, max_sources=8)  # next to no refill in these 11 s
    for n, source in enumerate("abcdefgh"):
        limiter.allow(source, float(n))
    limiter.allow("a", 10.0)  # seen again: now the most recent
    limiter.allow("i", 11.0)  # full: the oldest quarter (b, c) goes
    assert len(limiter) == 7
    assert [limiter.allow("a", 11.0) for _ in range(5)].count(True) == 3  # its bucket was kept (two tokens used)
    assert [limiter.allow("b", 11.0) for _ in range(6)].count(True) == 5  # forgotten: a fresh, full bucket


def test_flooding_source_is_limited_while_another_is_answered():
    core = make_core(site_config(rate_limit_per_source=100.0))
    core.handle_control(packets.map_register([packets.record("10.1.0.0/16", ["198.18.1.1"])], DC1_KEY, proxy=True),
                        ETR1, 4342, T0)
    request = packets.map_request_ecm("10.1.2.3", [ITR], source_port=5000)
    answered = 0
    for i in range(1000):  # 1000 datagrams in 1 s from one source, one request per 10 ms from another
        now = T0 + i / 1000
        core.handle_control(request, FLOODER, 4342, now)
        if i % 10 == 0:
            answered += len(only_replies(core.handle_control(request, ITR, 4342, now)))
    assert answered == 100
    # 1000 sent, 100 (the burst) + ~100 (refilled over the second) let through.
    assert 795 <= core.counters["dropped.rate_limited"] <= 805


def only_replies(effects):
    return [m for _, m in decoded(effects) if isinstance(m, MapReply)]


def test_oversized_datagram_is_dropped_before_decoding():
    core = make_core()
    assert core.handle_control(b"\x30" + bytes(MAX_DATAGRAM), ETR1, 4342, T0) == []
    assert core.counters["dropped.oversized"] == 1
    assert core.handle_control(b"", ETR1, 4342, T0) == []
    assert core.counters["dropped.malformed"] == 1


def test_unexpected_types_are_counted():
    core = make_core()
    reply = MapReply(nonce=1).encode()
    assert core.handle_control(reply, ETR1, 4342, T0) == []
    assert core.handle_control(b"\xf0" + bytes(20), ETR1, 4342, T0) == []
    assert core.counters["dropped.unexpected_type"] == 2


def _valid_messages():
    return [
        packets.map_register([packets.record("10.1.0.0/16", ["198.18.1.1"])], DC1_KEY, proxy=True, want_notify=True),
        packets.map_request_ecm("10.1.2.3", [ITR], subscribe=True, xtr_id=5),
        packets.map_notify_ack(1, [], DC1_KEY),
    ]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_and_random_datagrams_never_raise_or_touch_state_unless_valid(data):
    core = make_core()
    base = data.draw(st.sampled_from(_valid_messages()))
    choice = data.draw(st.integers(0, 2))
    if choice == 0:
        payload = data.draw(st.binary(max_size=200))
    elif choice == 1:  # truncated
        payload = base[: data.draw(st.integers(0, len(base) - 1))]
    else:  # a few flipped bytes
        mutable = bytearray(base)
        for _ in range(data.draw(st.integers(1, 4))):
            mutable[data.draw(st.integers(0, len(base) - 1))] ^= data.draw(st.integers(1, 255))
        payload = bytes(mutable)
    effects = core.handle_control(payload, ETR1, 4342, T0)
    assert len(decoded(effects)) == len(effects)  # whatever it sends is well-formed
    counters = core.counters
    assert counters["received.datagrams"] == 1
    if core.registration_count:  # only a Map-Register that still authenticates may change state
        assert counters["accepted.map_register"] == 1
