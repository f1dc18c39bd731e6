"""RLOC health: the pure tracker, and the xTR core probing, failing over and answering probes.

Time is a parameter and jitter comes from a seeded RNG: no sleeps, no clocks.
"""

import ipaddress
import itertools
import random

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lisp_ryu import config
from lisp_ryu.effects import DataplaneChanged, SendControl
from lisp_ryu.flows.compiler import compile_plan
from lisp_ryu.flows.model import GroupAction, SetField
from lisp_ryu.flows.pipeline import Owner, Table, cookie_owner
from lisp_ryu.wire.control import decode_message
from lisp_ryu.wire.messages import MapReply, MapRequest
from lisp_ryu.wire.prefix import EidPrefix
from lisp_ryu.wire.records import Action, Locator, MappingRecord, MapRequestRecord
from lisp_ryu.xtr.core import XtrCore
from lisp_ryu.xtr.probing import ProbeSettings, RlocTracker

ip = ipaddress.ip_address
A, B, C = ip("198.18.3.2"), ip("198.18.4.2"), ip("198.18.5.2")
EID = EidPrefix.from_network("10.3.0.0/16", 42)
MS = ip("198.18.0.2")


def tracker(seed=1, **kw):
    defaults = dict(interval=1.0, jitter=0.1, misses=3, timeout=0.5)
    return RlocTracker(ProbeSettings(**{**defaults, **kw}), random.Random(seed))


def nonces(start=1):
    counter = itertools.count(start)
    return lambda: next(counter)


def run_until(t, until, nonce, answer=lambda probe: False, step=None):
    """Drive the tracker by its own deadlines up to `until`; return (transitions, probes sent)."""
    transitions, sent = [], []
    while (deadline := t.next_deadline()) is not None and deadline <= until:
        changes, probes = t.poll(deadline, nonce)
        transitions += changes
        sent += [(deadline, p) for p in probes]
        for p in probes:
            if answer(p):
                change = t.on_reply(p.nonce, deadline + 0.001)
                if change:
                    transitions.append(change)
    return transitions, sent


# ---- the tracker ---------------------------------------------------------------------


def test_settings_reject_a_timeout_longer_than_the_shortest_gap():
    with pytest.raises(ValueError, match="timeout"):
        ProbeSettings(interval=1.0, jitter=0.5, timeout=0.6)
    with pytest.raises(ValueError, match="misses"):
        ProbeSettings(misses=0)
    assert ProbeSettings(interval=2.0, misses=3, timeout=1.0).detection_bound == 6.0


def test_new_rloc_is_up_and_first_probed_within_one_interval():
    t = tracker()
    t.track({A: EID}, now=100.0)
    assert t.is_up(A) and A in t
    assert 100.0 <= t.next_deadline() <= 101.0
    changes, probes = t.poll(t.next_deadline(), nonces())
    assert changes == [] and [(p.rloc, p.eid, p.nonce) for p in probes] == [(A, EID, 1)]
    assert t.outstanding() == {1}


def test_answered_probes_keep_the_rloc_up():
    t = tracker()
    t.track({A: EID}, 0.0)
    transitions, sent = run_until(t, 30.0, nonces(), answer=lambda p: True)
    assert transitions == [] and t.is_up(A) and len(sent) >= 25
    assert t.counters["probe_reply_matched"] == len(sent)


def test_rloc_goes_down_after_the_configured_number_of_missed_probes_and_comes_back_on_a_reply():
    t = tracker(misses=3)
    t.track({A: EID}, 0.0)
    transitions, sent = run_until(t, 30.0, nonces())
    (down,) = transitions
    assert not down.up and not t.is_up(A) and t.down() == {A}
    # Down exactly at the third probe's timeout.
    assert down.at == pytest.approx(sent[2][0] + 0.5)
    assert t.counters["probe_missed"] >= 3
    # Down RLOCs are still probed; the first answer brings it back.
    transitions, _ = run_until(t, 32.0, nonces(100), answer=lambda p: True)
    (up,) = transitions
    assert up.up and up.reason == "probe answered" and t.is_up(A) and t.get(A).missed == 0


def test_a_reply_between_misses_resets_the_count():
    t = tracker(misses=2)
    t.track({A: EID}, 0.0)
    answers = itertools.cycle([False, True])  # never two misses in a row
    transitions, _ = run_until(t, 20.0, nonces(), answer=lambda p: next(answers))
    assert transitions == [] and t.is_up(A)


def test_late_and_unknown_replies_count_for_nothing():
    t = tracker()
    t.track({A: EID}, 0.0)
    _, probes = t.poll(t.next_deadline(), nonces())
    t.poll(t.get(A).reply_due, nonces(50))  # its timeout passes unanswered
    assert t.on_reply(probes[0].nonce, 5.0) is None
    assert t.on_reply(424242, 5.0) is None
    assert t.counters["probe_reply_unknown_nonce"] == 2 and t.get(A).missed == 1


def test_untracked_rlocs_are_forgotten_with_their_outstanding_probe():
    t = tracker()
    t.track({A: EID, B: EID}, 0.0)
    t.poll(2.0, nonces())
    t.track({B: EID}, 2.1)
    assert A not in t and t.is_up(A)  # untracked means up: health only removes what failed
    assert len(t.outstanding()) == 1


def test_the_probed_prefix_of_a_tracked_rloc_follows_the_cache():
    t = tracker()
    t.track({A: EID}, 0.0)
    other = EidPrefix.from_network("10.3.1.0/24", 42)
    t.track({A: other}, 1.0)
    assert t.get(A).eid == other


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), death=st.floats(0.0, 20.0),
       interval=st.floats(0.2, 5.0), misses=st.integers(1, 5), jitter=st.floats(0.0, 0.3))
def test_a_dead_rloc_is_noticed_within_the_documented_bounds(seed, death, interval, misses, jitter):
    """The RLOC dies at `death`: probes sent before are answered, later ones are not."""
    timeout = interval * (1 - jitter) / 2
    t = tracker(seed, interval=interval, misses=misses, jitter=jitter, timeout=timeout)
    t.track({A: EID}, 0.0)
    nonce = nonces()
    transitions, gaps, last = [], [], None
    while (deadline := t.next_deadline()) is not None and deadline <= death + interval * (misses + 2) * 2:
        changes, probes = t.poll(deadline, nonce)
        transitions += changes
        for p in probes:
            if last is not None:
                gaps.append(deadline - last)
            last = deadline
            if deadline < death:
                t.on_reply(p.nonce, deadline)
    assert all(interval * (1 - jitter) - 1e-9 <= g <= interval * (1 + jitter) + 1e-9 for g in gaps)
    (down,) = [x for x in transitions if not x.up]
    detection = down.at - death
    assert (misses - 1) * interval * (1 - jitter) + timeout - 1e-9 <= detection
    assert detection <= misses * interval * (1 + jitter) + timeout + 1e-9


# ---- the core: probing its map-cache and failing over ------------------------------------

CONFIG = """
xtrs:
  - name: dc1
    dpid: 1
    rlocs: [{address: 198.18.1.2}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}]
    map_servers: [{address: 198.18.0.2, key: s3cret}]
    hosts: [{ip: 10.1.0.10, mac: "02:00:00:01:00:0a", port: 1, iid: 42}]
    rloc_probing: {interval: 1.0, jitter: 0.1, misses: 2, timeout: 0.4}
"""


def core(text=CONFIG, seed=7):
    cfg = config.parse(yaml.safe_load(text)).xtrs[0]
    return XtrCore(cfg, nonces=nonces(1000), rng=random.Random(seed))


def resolve(x, locators, now=0.0, prefix="10.3.0.0/16"):
    asked = ipaddress.ip_network(prefix)[10]  # the reply must cover what was asked
    (send,) = [e for e in x.handle_miss(1, 42, ip("10.1.0.10"), asked, b"p", now)
               if isinstance(e, SendControl)]
    request = decode_message(send.payload).message
    record = MappingRecord.for_prefix(EidPrefix.from_network(prefix, 42), locators, ttl=60)
    return x.handle_control(MapReply(nonce=request.nonce, records=(record,)).encode(), MS, 4342, now)


def probes_in(effects):
    out = []
    for e in effects:
        if isinstance(e, SendControl) and e.what.startswith("RLOC-probe of"):
            out.append((e.destination, decode_message(e.payload)))
    return out


def advance(x, until, answered=frozenset()):
    """Run the core's timer to `until`, answering probes to RLOCs in `answered` (by real bytes)."""
    effects = []
    while (deadline := x.next_deadline()) is not None and deadline <= until:
        out = x.handle_timer(deadline)
        effects += out
        for rloc, request in probes_in(out):
            if rloc in answered:
                reply = MapReply(nonce=request.nonce, probe=True, records=())
                effects += x.handle_control(reply.encode(), rloc, 4342, deadline + 0.001)
    return effects


def encap_targets(x):
    """{RLOC: bucket weight} the compiled encap flow for 10.3.0.0/16 sends to."""
    state = compile_plan(x.plan())
    (flow,) = [f for f in state.flows if f.table == Table.ROUTE and cookie_owner(f.cookie) is Owner.MAPPING]
    groups = {g.group_id: g for g in state.groups}
    group = next((groups[a.group_id] for a in flow.actions if isinstance(a, GroupAction)), None)
    buckets = group.buckets if group else [type("B", (), {"weight": None, "actions": flow.actions})]
    return {ip(a.value): b.weight for b in buckets for a in b.actions
            if isinstance(a, SetField) and a.field == "tun_ipv4_dst"}


def test_core_probes_the_rlocs_of_its_map_cache_directly_with_the_p_bit_and_the_cached_prefix():
    x = core()
    resolve(x, (Locator(A), Locator(B, priority=2)))
    assert set(x.health.counters) >= {"rloc_tracked"} and A in x.health and B in x.health
    probes = probes_in(x.handle_timer(1.0))
    assert {rloc for rloc, _ in probes} == {A, B}
    for rloc, request in probes:
        assert isinstance(request, MapRequest) and request.probe and not request.smr
        assert request.records[0].eid_prefix == EID
        assert request.itr_rlocs == (ip("198.18.1.2"),)


def test_a_move_told_directly_watches_a_new_rloc_at_once_and_recounts_known_ones_at_the_next_poll():
    """moved_elsewhere (the controller telling an ITR of a move) must not recount the whole
    map-cache per move (an evacuation is hundreds; at 10,000 entries a recount cost ~0.1 s),
    yet a locator never seen is watched at once."""
    x = core()
    resolve(x, (Locator(A),))
    resolve(x, (Locator(B),), prefix="10.4.0.0/16")
    host = EidPrefix.from_network("10.3.0.10/32", 42)
    moved = MappingRecord.for_prefix(host, (Locator(B),), ttl=1)
    x.moved_elsewhere(moved, "dc4", 0.1)  # B is watched already: no recount yet
    assert x.prober._targets_stale and A in x.health and B in x.health
    x.moved_elsewhere(MappingRecord.for_prefix(host, (Locator(C),), ttl=1), "dc5", 0.2)
    assert C in x.health and x.prober._targets_stale  # a new locator: watched at once, no recount
    x.moved_elsewhere(moved, "dc4", 0.3)
    assert x.prober._targets_stale
    probes = probes_in(x.handle_timer(1.5))  # the poll recounts before probing
    assert not x.prober._targets_stale and {rloc for rloc, _ in probes} <= {A, B, C}


def test_best_priority_rloc_down_moves_traffic_to_the_next_priority_and_back():
    x = core()
    resolve(x, (Locator(A, priority=1), Locator(B, priority=2)))
    assert encap_targets(x) == {A: None}
    effects = advance(x, 10.0, answered={B})
    assert any(isinstance(e, DataplaneChanged) and "down" in e.reason for e in effects)
    assert encap_targets(x) == {B: None}
    assert x.health.down() == {A}
    # A answers again: traffic returns at once.
    effects = advance(x, 20.0, answered={A, B})
    assert any(isinstance(e, DataplaneChanged) and "up" in e.reason for e in effects)
    assert encap_targets(x) == {A: None}


def test_failover_renormalises_the_weights_of_the_remaining_same_priority_rlocs():
    x = core()
    resolve(x, (Locator(A, weight=50), Locator(B, weight=25), Locator(C, weight=25)))
    assert encap_targets(x) == {A: 50, B: 25, C: 25}
    advance(x, 10.0, answered={B, C})
    targets = encap_targets(x)
    assert targets == {B: 25, C: 25}  # a select group: each now carries half
    assert {r: w / sum(targets.values()) for r, w in targets.items()} == {B: 0.5, C: 0.5}
    advance(x, 20.0, answered={C})
    assert encap_targets(x) == {C: None}  # one left: a plain encap flow, no group


def test_when_every_rloc_is_down_the_entry_keeps_them_rather_than_dropping():
    x = core()
    resolve(x, (Locator(A, priority=1), Locator(B, priority=2)))
    advance(x, 10.0, answered=set())
    assert x.health.down() == {A, B}
    assert encap_targets(x) == {A: None}


def test_probe_replies_never_change_the_map_cache():
    x = core()
    resolve(x, (Locator(A),))
    before = x.plan()
    while not (probes := probes_in(x.handle_timer(x.next_deadline()))):
        pass
    ((rloc, request),) = probes
    forged = MappingRecord.for_prefix(EID, (Locator(ip("203.0.113.66")),), ttl=60)
    x.handle_control(MapReply(nonce=request.nonce, probe=True, records=(forged,)).encode(), rloc, 4342, 1.5)
    assert x.plan() == before


def test_expired_entries_stop_being_probed():
    x = core()
    resolve(x, (Locator(A),))
    advance(x, 3601.0, answered={A})  # the TTL is 60 minutes
    assert x.plan().remotes == () and A not in x.health
    assert probes_in(x.handle_timer(3700.0)) == []


def test_probing_can_be_switched_off():
    x = core(CONFIG.replace("rloc_probing: {interval: 1.0, jitter: 0.1, misses: 2, timeout: 0.4}",
                            "rloc_probing: {enabled: false}"))
    resolve(x, (Locator(A),))
    assert probes_in(advance(x, 100.0)) == [] and len(x.health) == 0


def test_config_rejects_a_timeout_longer_than_the_gap():
    with pytest.raises(config.ConfigError, match=r"xtrs\[0\]\.rloc_probing\.timeout"):
        core(CONFIG.replace("timeout: 0.4", "timeout: 0.95"))
    with pytest.raises(config.ConfigError, match=r"rloc_probing\.every"):
        core(CONFIG.replace("misses: 2,", "misses: 2, every: 3,"))


# ---- the core as the probed ETR ------------------------------------------------------------

ITR = ip("198.18.2.2")
OWN = ip("198.18.1.2")


def probe(prefix="10.1.0.0/16", iid=42, itr=ITR, nonce=9):
    return MapRequest(nonce=nonce, probe=True, itr_rlocs=(itr,),
                      records=(MapRequestRecord.for_prefix(EidPrefix.from_network(prefix, iid)),)).encode()


def answers(x, payload, source=ITR, destination=OWN, now=0.0):
    return [e for e in x.handle_control(payload, source, 4342, now, destination=destination)
            if isinstance(e, SendControl)]


def test_probe_of_a_local_rloc_is_answered_to_its_source_with_the_probed_locator_marked():
    x = core()
    (send,) = answers(x, probe())
    assert (send.destination, send.port) == (ITR, 4342)
    reply = decode_message(send.payload)
    assert isinstance(reply, MapReply) and reply.probe and reply.nonce == 9
    (record,) = reply.records
    assert record.eid_prefix == EidPrefix.from_network("10.1.0.0/16", 42)
    ((loc),) = record.locators
    assert loc.address == OWN and loc.local and loc.probed and loc.reachable


def test_probe_addressed_to_someone_else_is_not_answered():
    x = core()
    assert answers(x, probe(), destination=ip("198.18.9.9")) == []
    assert x.counters["probe_not_for_local_rloc"] == 1


def test_probe_replies_are_never_reflected_to_a_third_party():
    x = core()
    assert answers(x, probe(itr=ip("203.0.113.7"))) == []
    assert x.counters["probe_source_not_an_itr_rloc"] == 1


@pytest.mark.parametrize("prefix,iid", [
    ("10.1.0.10/32", 42),  # a more-specific: would reveal whether a host is here
    ("10.0.0.0/8", 42),  # a covering prefix: a fishing expedition
    ("10.1.0.0/16", 7),  # another tenant's instance-ID
    ("10.2.0.0/16", 42),  # somebody else's
])
def test_probes_learn_nothing_beyond_the_exact_prefix_the_prober_holds(prefix, iid):
    x = core()
    assert answers(x, probe(prefix, iid)) == []
    assert x.counters["probe_not_our_prefix"] == 1


def test_probe_answers_are_rate_limited_per_requester():
    x = core()
    sent = [len(answers(x, probe(nonce=n), now=0.0)) for n in range(100)]
    burst = int(x.config.rloc_probing.answer_burst)
    assert sum(sent) == burst and x.counters["probe_rate_limited"] == 100 - burst
    # Another requester is not starved by the first, and tokens come back with time.
    assert answers(x, probe(itr=ip("198.18.7.2")), source=ip("198.18.7.2"), now=0.0)
    assert answers(x, probe(), now=1.0)


def test_two_cores_probe_each_other_through_real_bytes_and_stay_up():
    """dc1 caches dc2's prefix; every probe crosses as bytes to dc2's core and its reply comes back."""
    itr = core()
    etr = core(CONFIG.replace("name: dc1", "name: dc2").replace("198.18.1.2", "198.18.2.2")
               .replace("10.1.0", "10.2.0").replace("02:00:00:01:00:0a", "02:00:00:02:00:0a"))
    resolve(itr, (Locator(ip("198.18.2.2")),), prefix="10.2.0.0/16")
    sent = 0
    while (deadline := itr.next_deadline()) is not None and deadline <= 30.0:
        for e in itr.handle_timer(deadline):
            if isinstance(e, SendControl) and e.what.startswith("RLOC-probe"):
                sent += 1
                for reply in [r for r in etr.handle_control(e.payload, OWN, 4342, deadline, destination=e.destination)
                              if not isinstance(r, DataplaneChanged)]:  # the prober became a BFD peer
                    assert isinstance(reply, SendControl) and reply.destination == OWN
                    itr.handle_control(reply.payload, e.destination, 4342, deadline + 0.001, destination=OWN)
    assert sent >= 20 and itr.health.down() == frozenset()
    assert etr.counters["probe_answered"] == sent
    assert itr.health.counters["probe_reply_matched"] == sent


# ---- native-forward negatives go to the PETR ------------------------------------------------


def negative(x, prefix="10.9.0.0/16", action=Action.NATIVELY_FORWARD):
    (send,) = [e for e in x.handle_miss(1, 42, ip("10.1.0.10"), ip("10.9.0.1"), b"p", 0.0)
               if isinstance(e, SendControl)]
    request = decode_message(send.payload).message
    record = MappingRecord.for_prefix(EidPrefix.from_network(prefix, 42), (), ttl=15, action=action)
    x.handle_control(MapReply(nonce=request.nonce, records=(record,)).encode(), MS, 4342, 0.0)
    state = compile_plan(x.plan())
    (flow,) = [f for f in state.flows if f.table == Table.ROUTE and cookie_owner(f.cookie) is Owner.MAPPING]
    return flow


def test_native_forward_negative_is_tunnelled_to_the_petr():
    x = core(CONFIG + "    petr: 198.18.9.2\n")
    flow = negative(x)
    fields = {a.field: a.value for a in flow.actions if isinstance(a, SetField)}
    assert fields["tun_ipv4_dst"] == "198.18.9.2" and fields["tunnel_id"] == 42
    assert fields["tun_ipv4_src"] == "198.18.1.2"


def test_native_forward_negative_without_petr_uses_the_native_port_else_drops():
    from lisp_ryu.flows.model import Output

    assert negative(core(CONFIG + "    native_port: 7\n")).actions == (Output(7),)
    assert negative(core()).actions == ()


def test_drop_negatives_are_dropped_even_with_a_petr():
    assert negative(core(CONFIG + "    petr: 198.18.9.2\n"), action=Action.DROP_POLICY_DENIED).actions == ()


def test_petr_and_native_port_are_checked_against_the_xtrs_own_rlocs_and_ports():
    with pytest.raises(config.ConfigError, match=r"xtrs\[0\]\.petr: 198.18.1.2 is one of this xTR's own RLOCs"):
        core(CONFIG + "    petr: 198.18.1.2\n")
    with pytest.raises(config.ConfigError, match=r"xtrs\[0\]\.native_port"):
        core(CONFIG + "    native_port: 100\n")


def test_an_itr_that_probes_us_becomes_a_bfd_peer_until_it_stops():
    """Its BFD session to us needs a port back from us, even if we never send to it."""
    x = core()
    effects = x.handle_control(probe(), ITR, 4342, 0.0, destination=OWN)
    assert any(isinstance(e, DataplaneChanged) for e in effects)
    assert ITR in x.plan().peers
    effects = x.handle_control(probe(nonce=10), ITR, 4342, 1.0, destination=OWN)
    assert not any(isinstance(e, DataplaneChanged) for e in effects)  # known already: no push
    ttl = x.prober._probed_by_ttl
    assert any(isinstance(e, DataplaneChanged) for e in x.prober.poll(1.0 + ttl + 1))
    assert ITR not in x.plan().peers


def test_a_probe_that_is_not_answered_makes_no_peer():
    x = core()
    x.handle_control(probe("10.2.0.0/16"), ITR, 4342, 0.0, destination=OWN)
    assert ITR not in x.plan().peers


def test_a_move_in_a_large_map_cache_remakes_only_its_own_plan_entry_and_keeps_the_rlocs_counted():
    """An ITR's map-cache of thousands: a move changes one entry, and the plan's other entries are
    the same objects (the compiler's per-entry memo then hits); measured at 10,000 entries, remaking
    them all cost ~0.5 s of the controller per move.  The RLOCs the flows may tunnel to (the BFD
    ports' peers) follow entries coming and going."""
    x = core()
    resolve(x, (Locator(A),))
    for i in range(300):
        record = MappingRecord.for_prefix(EidPrefix.from_network(f"10.9.{i // 200}.{i % 200}/32", 42),
                                          (Locator(A if i % 2 else B),), ttl=60)
        x.resolver.cache_record(record, record.eid_prefix, "test", 0.0)
    before = {(r.prefix, r.source): r for r in x.plan().remotes}
    assert x.plan().peers == (A, B)
    host = EidPrefix.from_network("10.9.0.7/32", 42)
    x.moved_elsewhere(MappingRecord.for_prefix(host, (Locator(C),), ttl=1), "dc5", 0.1)
    after = {(r.prefix, r.source): r for r in x.plan().remotes}
    assert after.keys() == before.keys() and len(after) == 301
    changed = [key for key in after if after[key] is not before[key]]
    assert changed == [(ipaddress.ip_network("10.9.0.7/32"), None)]
    assert after[changed[0]].rlocs[0].address == C and x.plan().peers == (A, B, C)
    x.resolver.cache_record(MappingRecord.for_prefix(host, (Locator(A),), ttl=60), host, "test", 0.2)
    assert x.plan().peers == (A, B)  # C's only entry went back to A


def test_a_redirect_goes_to_the_new_sites_best_rloc_and_the_next_while_probing_calls_it_down():
    """The record of a move lists its RLOCs in any order: the old site's redirect takes the best
    priority (lowest, RFC 9300), not the first listed, then the next while that one does not
    answer its probes (the map-cache's copy of the move has them probed), and back again."""
    from lisp_ryu.wire import auth
    from lisp_ryu.wire.messages import MapNotify

    x = core(CONFIG.replace("map_servers: [{address: 198.18.0.2, key: s3cret}]",
                            "map_servers: [{address: 198.18.0.2, key: s3cret}]\n"
                            "    dynamic_eid_prefixes: [{prefix: 10.0.0.0/8, iid: 42}]"))
    x.start(0.0)
    best, second = ip("198.18.4.2"), ip("198.18.3.2")
    record = MappingRecord.for_prefix(EidPrefix.from_network("10.1.0.10/32", 42),
                                      (Locator(second, priority=2), Locator(best, priority=1)))
    notify = auth.sign(MapNotify(nonce=4242, records=(record,), xtr_id=x.xtr_id, site_id=x.site_id), "s3cret", 1)
    x.handle_control(notify.encode(), MS, 4342, 1.0)
    (redirect,) = x.plan().redirects
    assert (redirect.rloc, redirect.site) == (best, (best, second))
    advance(x, 6.0, answered={second})
    assert not x.prober.health.is_up(best) and x.prober.health.is_up(second)
    (redirect,) = x.plan().redirects
    assert (redirect.rloc, redirect.site) == (second, (best, second))
    advance(x, 10.0, answered={best, second})
    assert [r.rloc for r in x.plan().redirects] == [best]
