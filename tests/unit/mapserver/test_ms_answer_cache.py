"""The fast path's answer cache never answers what the registrations no longer say.

Two cores live through the same random history: registrations and
withdrawals of host routes and covering prefixes, workloads moving between
sites, ETRs joining a prefix, expiry, static mappings, rules and RLOC
overrides, all interleaved with Map-Requests for a small set of hosts, so
the cache is hit, refilled and invalidated over and over.  One answers
through the server loop's fast path with a tiny cache (it also overflows),
the other decodes every request in full.  After every step both must have
sent the same datagrams to the same places and counted the same.
"""

from __future__ import annotations

import ipaddress
import itertools
import random

import pytest

from lisp_ryu.mapping.policy import RlocOverride, Rule, StaticMapping
from lisp_ryu.mapserver import MapServer
from lisp_ryu.mapserver.answer_cache import MISSED_SLOTS, AnswerCache
from lisp_ryu.wire import decode_message

from mapserver_helpers import DC1_KEY, DC2_KEY, ETR1, ETR1B, ETR2, ITR, T0, site_config
from support import packets

ETR2B = ipaddress.ip_address("198.18.2.2")
SITES = {"dc1": (DC1_KEY, (ETR1, ETR1B)), "dc2": (DC2_KEY, (ETR2, ETR2B))}
RLOCS = ["198.18.1.1", "198.18.1.2", "198.18.2.1", "198.18.2.2", "198.18.3.3"]
HOSTS = [("10.10.0.1", 42), ("10.10.0.2", 42), ("10.10.0.3", 42), ("10.10.1.7", 42), ("10.10.200.9", 42),
         ("10.1.0.1", 0), ("10.1.9.9", 0), ("2001:db8:1::5", 0)]
# (prefix, iid, sites that may register it): dc1 owns 10.1.0.0/16 and 2001:db8:1::/48 exactly,
# both sites register anything inside 10.10.0.0/16 in instance 42.
PREFIXES = [("10.10.0.1/32", 42, ("dc1", "dc2")), ("10.10.0.2/32", 42, ("dc1", "dc2")),
            ("10.10.0.0/24", 42, ("dc1", "dc2")), ("10.10.0.0/16", 42, ("dc1", "dc2")),
            ("10.10.1.0/24", 42, ("dc1", "dc2")), ("10.1.0.0/16", 0, ("dc1",)), ("2001:db8:1::/48", 0, ("dc1",))]
STATICS = [(42, "10.10.0.0/28"), (42, "10.10.0.2/32"), (0, "10.1.0.0/24")]


def core(*, quick: bool) -> MapServer:
    nonces = itertools.count(0x5000)
    return MapServer(site_config(), nonces=lambda: next(nonces), now=T0, quick_path=quick, answer_cache_size=4)


def sent(effects):
    return [(str(e.destination), e.port, e.payload) for e in effects]


def ask_fast(server: MapServer, payload: bytes, now: float):
    """What the server loop does: the fast path, then `handle_control` when it declines."""
    quick = server.reply_quickly(payload, ITR, now)
    if quick is None:
        return sent(server.handle_control(payload, ITR, 4342, now))
    reply, rloc, port = quick
    return [(str(ipaddress.ip_address(rloc)), port, reply)] if reply else []


def ask_full(server: MapServer, payload: bytes, now: float):
    return sent(server.handle_control(payload, ITR, 4342, now))


def random_step(rng: random.Random, nonce: int):
    """One change as (name, function of (core, now) -> effects), or a request as ("request", payload)."""
    kind = rng.choices(["register", "withdraw", "static", "unstatic", "rule", "override", "unpolicy", "time",
                        "request"], weights=[8, 3, 1, 1, 0.5, 0.5, 2, 2, 50])[0]
    if kind == "request":
        eid, iid = rng.choice(HOSTS)
        key = (iid, ipaddress.ip_address(eid).packed)  # the cache's key for it
        return kind, (packets.map_request_ecm(eid, [ITR], iid=iid, nonce=nonce, source_port=61000), key)
    if kind in ("register", "withdraw"):
        prefix, iid, owners = rng.choice(PREFIXES)
        site = rng.choice(owners)
        key, etrs = SITES[site]
        etr = rng.choice(etrs)
        rlocs = rng.sample(RLOCS, rng.randint(1, 2))
        record = packets.record(prefix, rlocs, iid=iid, ttl=0 if kind == "withdraw" else 1440,
                                priority=rng.choice([1, 2]), weight=rng.choice([50, 100]))
        message = packets.map_register([record], key, nonce=nonce, proxy=rng.random() < 0.8)
        return kind, lambda server, now: server.handle_control(message, etr, 4342, now)
    if kind == "static":
        iid, prefix = rng.choice(STATICS)
        mapping = StaticMapping.from_dict({"iid": iid, "prefix": prefix, "rlocs": [
            {"address": rng.choice(RLOCS), "priority": 1, "weight": 100}]})
        return kind, lambda server, now: server.set_static(mapping, now)
    if kind == "unstatic":
        iid, prefix = rng.choice(STATICS)
        return kind, lambda server, now: (server.remove_static(iid, ipaddress.ip_network(prefix), now)
                                          if any(m.iid == iid and str(m.prefix) == prefix
                                                 for m in server.static_mappings()) else [])
    if kind == "rule":
        rule = Rule.from_dict({"id": "deny-some", "iid": 42, "destinations": ["10.10.0.0/24"], "action": "deny"})
        return kind, lambda server, now: server.set_rule(rule, now)
    if kind == "override":
        override = RlocOverride.from_dict({"id": "prefer", "rloc": rng.choice(RLOCS), "priority": 3})
        return kind, lambda server, now: server.set_override(override, now)
    if kind == "unpolicy":
        def clear(server: MapServer, now: float):
            effects = []
            if server.policy.rule("deny-some") is not None:
                effects += server.remove_rule("deny-some", now)
            if any(o.id == "prefer" for o in server.policy.overrides):
                effects += server.remove_override("prefer", now)
            return effects
        return kind, clear
    return kind, lambda server, now: server.handle_timer(now)  # "time": the clock jumps; expiry may run


@pytest.mark.parametrize("seed", range(12))
def test_fast_answers_follow_every_change(seed):
    rng = random.Random(seed)
    fast, full = core(quick=True), core(quick=False)
    now = T0
    hits = 0
    for step in range(800):
        kind, action = random_step(rng, step + 1)
        now += rng.uniform(30, 120) if kind == "time" else 0.01
        if kind == "request":
            payload, key = action
            hits += key in fast._state.answers.records
            assert ask_fast(fast, payload, now) == ask_full(full, payload, now), f"seed {seed} step {step}"
        else:
            assert sent(action(fast, now)) == sent(action(full, now)), f"seed {seed} step {step}: {kind}"
        assert fast.counters == full.counters, f"seed {seed} step {step}: {kind}"
    assert fast.counters.get("sent.map_reply", 0) > 50
    assert fast._state.answers.flushes > 0 and hits > 10  # the cache was used, refilled and emptied


def test_a_refresh_that_changes_nothing_keeps_the_cached_answers():
    server = core(quick=True)
    register = packets.map_register([packets.record("10.1.0.0/16", ["198.18.1.1"])], DC1_KEY, proxy=True)
    server.handle_control(register, ETR1, 4342, T0)
    for nonce in (6, 7):  # in on the second miss
        ask_fast(server, packets.map_request_ecm("10.1.0.1", [ITR], nonce=nonce), T0 + 1)
    assert len(server._state.answers) == 1
    server.handle_control(register, ETR1, 4342, T0 + 60)  # the ETR's periodic refresh
    assert len(server._state.answers) == 1 and server._state.answers.flushes == 0
    server.handle_control(packets.map_register([packets.record("10.1.0.0/16", ["198.18.1.9"])], DC1_KEY, proxy=True),
                          ETR1, 4342, T0 + 61)
    assert len(server._state.answers) == 0
    [(_, _, reply)] = ask_fast(server, packets.map_request_ecm("10.1.0.1", [ITR], nonce=8), T0 + 62)
    assert [str(loc.address) for loc in decode_message(reply).records[0].locators] == ["198.18.1.9"]


def remember(cache: AnswerCache, iid: int, packed: bytes, record: bytes) -> None:
    for _ in range(2):
        cache.offer((iid, packed), record)


def test_a_host_gets_in_on_its_second_miss():
    cache = AnswerCache(capacity=8)
    cache.offer((0, b"\x0a\x00\x00\x01"), b"record")
    assert len(cache) == 0
    cache.offer((0, b"\x0a\x00\x00\x01"), b"record")
    assert cache.records == {(0, b"\x0a\x00\x00\x01"): b"record"}


def test_a_host_route_forgets_only_its_own_answer():
    cache = AnswerCache(capacity=8)
    for last in (1, 2, 3):
        remember(cache, 42, bytes([10, 10, 0, last]), b"record")
    cache.forget(42, ipaddress.ip_network("10.10.0.2/32"))
    assert sorted(cache.records) == [(42, bytes([10, 10, 0, 1])), (42, bytes([10, 10, 0, 3]))]
    cache.forget(0, ipaddress.ip_network("10.10.0.3/32"))  # another instance: nothing of ours
    assert len(cache) == 2 and cache.flushes == 0
    cache.forget(42, ipaddress.ip_network("10.10.0.0/24"))
    assert len(cache) == 0 and cache.flushes == 1


def test_the_cache_is_bounded_and_keeps_copies():
    cache = AnswerCache(capacity=2)
    record = bytes(range(40))
    remember(cache, 0, b"\x0a\x00\x00\x01", record)
    kept = cache.records[(0, b"\x0a\x00\x00\x01")]
    assert kept == record and kept is not record
    remember(cache, 0, b"\x0a\x00\x00\x02", record)
    remember(cache, 0, b"\x0a\x00\x00\x03", record)  # full: emptied, then this one kept
    assert list(cache.records) == [(0, b"\x0a\x00\x00\x03")] and cache.flushes == 1
    with pytest.raises(ValueError, match="capacity"):
        AnswerCache(capacity=0)


def test_hosts_missed_once_are_forgotten_after_a_sweep():
    cache = AnswerCache(capacity=8)
    first = (0, b"\x0a\x00\x00\x01")
    cache.offer(first, b"record")
    others = ((1, n.to_bytes(4, "big")) for n in range(MISSED_SLOTS))
    swept = False
    while not swept:  # other hosts' first misses, up to the sweep (slots they share let them in early)
        cache.offer(next(others), b"other")
        swept = cache._first_misses == 0
    cache.offer(first, b"record")
    assert first not in cache.records  # a first miss again
    cache.offer(first, b"record")
    assert first in cache.records


def test_an_etr_that_stops_asking_for_proxy_replies_gets_the_requests_again():
    server = core(quick=True)
    record = packets.record("10.1.0.0/16", ["198.18.1.1"])
    server.handle_control(packets.map_register([record], DC1_KEY, proxy=True), ETR1, 4342, T0)
    request = packets.map_request_ecm("10.1.0.1", [ITR], nonce=7)
    for _ in range(2):
        [(to, _, _)] = ask_fast(server, request, T0 + 1)
        assert to == str(ITR)
    assert len(server._state.answers) == 1
    server.handle_control(packets.map_register([record], DC1_KEY, proxy=False), ETR1, 4342, T0 + 2)
    [(to, _, forwarded)] = ask_fast(server, request, T0 + 3)
    assert to == str(ETR1) and forwarded == request  # the same record, now answered by the ETR itself


def test_the_counters_view_shows_the_cache_and_a_rate_limited_source_fills_nothing():
    from lisp_ryu.mapserver import views

    server = core(quick=True)
    server.handle_control(packets.map_register([packets.record("10.1.0.0/16", ["198.18.1.1"])], DC1_KEY, proxy=True),
                          ETR1, 4342, T0)
    for nonce in range(5):  # a miss, a miss that lets it in, three hits
        ask_fast(server, packets.map_request_ecm("10.1.0.1", [ITR], nonce=nonce), T0 + 1)
    assert views.counters(server)["answer_cache"] == {"entries": 1, "capacity": 4, "hits": 3, "misses": 2,
                                                      "flushes": 0}
    server.limiter = type(server.limiter)(rate=1.0, burst=1)
    for nonce in range(3):  # the first is answered, the others dropped before they are offered
        ask_fast(server, packets.map_request_ecm("10.1.0.2", [ITR], nonce=nonce), T0 + 2)
    assert server.answer_cache["misses"] == 3 and server.counters["dropped.rate_limited"] == 2
