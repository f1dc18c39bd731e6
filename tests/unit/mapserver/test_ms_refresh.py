"""The refresh shortcut (`Registry.refresh`): an identical Map-Register only moves expiries on.

A Map-Register that differs from one handled in full only by its nonce (and
so its authentication data) is recognised from its bytes, authenticated,
checked for freshness and then only extends what it registered: nothing
decoded, nothing journalled.  Anything else it could change (RLOCs,
priority, weight, Record TTL, flags, map-version, the A bit, the source
address or port, the xTR-ID, the key or algorithm) takes the full path.
The randomised test at the end runs one history through a core with the
shortcut and one without: both must send the same datagrams, hold the same
registrations with the same expiries, and expire them at the same times.
"""

from __future__ import annotations

import ipaddress
import itertools
import random

import pytest

from lisp_ryu.mapserver import MapServer, MemoryStore
from lisp_ryu.wire import AuthAlgorithm, Locator, MappingRecord

from mapserver_helpers import DC1_KEY, DC2_KEY, ETR1, ETR1B, ETR2, T0, make_core, net, site_config
from support import packets

ip = ipaddress.ip_address
SEQUENCED = 0x4C5 << 52  # our xTR's nonces (freshness.SEQUENCE_TAG): they only grow


def record(prefix="10.1.0.0/16", rlocs=("198.18.1.1",), **fields):
    locators = tuple(Locator(ip(r), priority=fields.pop("priority", 1), weight=fields.pop("weight", 100))
                     for r in rlocs)
    return MappingRecord.for_prefix(packets.eid(prefix, fields.pop("iid", 0)), locators, ttl=fields.pop("ttl", 1440),
                                    **fields)


def register(core, records, *, key=DC1_KEY, source=ETR1, port=4342, now=T0, **kw):
    return core.handle_control(packets.map_register(records, key, **kw), source, port, now)


def shortcuts(core) -> int:
    return core.counters.get("refreshed.map_register", 0)


def registration(core, prefix="10.1.0.0/16", iid=0):
    [(_, _, _, _, regs)] = [r for r in core.registrations() if r[1] == net(prefix) and r[0] == iid]
    return regs


def test_an_identical_refresh_takes_the_shortcut_writes_nothing_and_moves_the_expiry_on():
    store = MemoryStore()
    core = make_core(store=store)
    register(core, [record()], nonce=1, proxy=True)
    journalled = len(store.journal)
    [reg] = registration(core)
    assert reg.expires == T0 + 180
    register(core, [record()], nonce=2, proxy=True, now=T0 + 60)
    assert shortcuts(core) == 1 and core.counters["accepted.map_register"] == 2
    assert len(store.journal) == journalled  # nothing written
    [reg] = registration(core)
    assert (reg.registered_at, reg.expires, reg.nonce) == (T0 + 60, T0 + 240, 2)
    assert len(core._state.timers) == 1  # no timer per refresh
    assert core.handle_timer(T0 + 181) == [] and core.registration_count == 1  # the old expiry is not the end
    assert len(core._state.timers) == 1  # re-armed once, at the new expiry
    core.handle_timer(T0 + 240)
    assert core.registration_count == 0 and core.counters["registrations.expired"] == 1


def test_a_refresh_byte_for_byte_also_takes_the_shortcut():
    store = MemoryStore()
    core = make_core(store=store)
    payload = packets.map_register([record()], DC1_KEY, nonce=7)
    core.handle_control(payload, ETR1, 4342, T0)
    journalled = len(store.journal)
    core.handle_control(payload, ETR1, 4342, T0 + 1)
    assert shortcuts(core) == 1 and len(store.journal) == journalled


CHANGES = {
    "rloc": dict(records=[record(rlocs=("198.18.1.7",))]),
    "another rloc": dict(records=[record(rlocs=("198.18.1.1", "198.18.1.7"))]),
    "priority": dict(records=[record(priority=2)]),
    "weight": dict(records=[record(weight=50)]),
    "record ttl": dict(records=[record(ttl=60)]),
    "map-version": dict(records=[record(map_version=5)]),
    "authoritative": dict(records=[record(authoritative=True)]),
    "another record": dict(records=[record(), record("2001:db8:1::/48")]),
    "withdrawal": dict(records=[record(ttl=0)]),
    "proxy flag": dict(proxy=False),
    "want-map-notify": dict(want_notify=True),
    "ttl for timeout": dict(use_ttl_for_timeout=True),
    "xtr-id": dict(xtr_id=9),
    "site-id": dict(xtr_id=8, site_id=3),
    "source": dict(source=ETR1B),
    "port": dict(port=4343),
    "algorithm": dict(algorithm=AuthAlgorithm.HMAC_SHA_256_128),
    "key id": dict(key_id=1),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_refresh_that_changes_anything_takes_the_full_path(change):
    base = dict(records=[record()], proxy=True, xtr_id=8, site_id=0)
    fields = {**base, **CHANGES[change]}
    if change == "source":
        fields["records"] = [record(rlocs=("198.18.1.1", "198.18.1.2"))]  # a new source among its RLOCs
        base["records"] = fields["records"]
    store, reference_store = MemoryStore(), MemoryStore()
    core, reference = make_core(store=store), make_core(store=reference_store)
    reference._registry.refresh_shortcut = False
    for server in (core, reference):
        register(server, base["records"], **{k: v for k, v in base.items() if k != "records"}, nonce=1)
    journalled = len(store.journal)
    effects = [register(server, fields["records"], **{k: v for k, v in fields.items() if k != "records"}, nonce=2,
                        now=T0 + 10) for server in (core, reference)]
    assert shortcuts(core) == 0
    assert len(store.journal) > journalled
    assert [(e.destination, e.port, e.payload) for e in effects[0]] == \
        [(e.destination, e.port, e.payload) for e in effects[1]]
    assert list(core.registrations()) == list(reference.registrations())


def test_the_shortcut_answers_with_the_same_map_notify_as_the_full_path():
    core, reference = make_core(), make_core()
    reference._registry.refresh_shortcut = False
    for algorithm in (AuthAlgorithm.HMAC_SHA_1_96, AuthAlgorithm.HMAC_SHA_256_128):
        records = [record(), record("2001:db8:1::/48", ("198.18.1.1", "198.18.1.2"))]
        for n, server in itertools.product(range(3), (core, reference)):
            effects = register(server, records, nonce=10 + n, want_notify=True, xtr_id=5, algorithm=algorithm,
                               now=T0 + n)
            server.last = [(e.destination, e.port, e.payload) for e in effects]
        assert core.last == reference.last and len(core.last) == 1
    assert shortcuts(core) == 4  # the second and third message of each algorithm


def test_a_refresh_is_still_checked_for_freshness():
    core = make_core()
    register(core, [record()], nonce=SEQUENCED + 100)
    register(core, [record()], nonce=SEQUENCED + 200, now=T0 + 60)
    assert shortcuts(core) == 1
    # An older message resent (captured in between): refused even though identical but for its nonce.
    assert register(core, [record()], nonce=SEQUENCED + 150, now=T0 + 61) == []
    assert core.counters["rejected.map_register.stale-nonce"] == 1
    assert registration(core)[0].nonce == SEQUENCED + 200
    # A wrong key never refreshes.
    payload = bytearray(packets.map_register([record()], DC1_KEY, nonce=SEQUENCED + 300))
    payload[-1] ^= 1  # inside the record: the key of the shortcut no longer matches -> full path -> rejected
    core.handle_control(bytes(payload), ETR1, 4342, T0 + 62)
    assert register(core, [record()], key=DC2_KEY, nonce=SEQUENCED + 300, now=T0 + 63) == []
    assert core.counters["rejected.map_register.auth-mismatch"] >= 1
    assert registration(core)[0].expires == T0 + 240


def test_a_registration_changed_since_is_not_refreshed_by_the_shortcut():
    core = make_core()
    register(core, [record(), record("2001:db8:1::/48")], nonce=1)
    register(core, [record("2001:db8:1::/48", ("198.18.1.9",))], nonce=2, now=T0 + 1)  # one record changed since
    register(core, [record(), record("2001:db8:1::/48")], nonce=3, now=T0 + 2)  # back: a change, full path
    assert shortcuts(core) == 0
    assert [str(loc.address) for loc in registration(core, "2001:db8:1::/48")[0].record.locators] == ["198.18.1.1"]
    register(core, [record(), record("2001:db8:1::/48")], nonce=4, now=T0 + 3)
    assert shortcuts(core) == 1
    # Withdrawn, then the identical message again: registers anew, in full.
    register(core, [record("2001:db8:1::/48", ttl=0)], nonce=5, now=T0 + 4)
    register(core, [record(), record("2001:db8:1::/48")], nonce=6, now=T0 + 5)
    assert shortcuts(core) == 1 and core.registration_count == 2


def test_a_stored_expiry_about_to_lapse_is_journalled_again_so_a_restart_keeps_live_registrations():
    store = MemoryStore()
    core = make_core(store=store)
    register(core, [record()], nonce=1)
    journalled = len(store.journal)
    for n in range(1, 8):  # every 60 s, as RFC 9301 says: the stored expiry (180 s) is renewed when a third is left
        register(core, [record()], nonce=1 + n, now=T0 + 60 * n)
    assert shortcuts(core) == 7
    assert 0 < len(store.journal) - journalled < 7
    again = make_core(store=store, now=T0 + 7 * 60 + 59)  # down until just before the next refresh
    [reg] = registration(again)
    assert reg.expires >= T0 + 7 * 60 + 60


def test_an_etr_among_several_moves_to_the_front_of_the_merged_record_as_in_full():
    core, reference = make_core(), make_core()
    reference._registry.refresh_shortcut = False
    for server in (core, reference):
        register(server, [record(rlocs=("198.18.1.1",))], nonce=1, xtr_id=1)
        register(server, [record(rlocs=("198.18.1.2",))], source=ETR1B, nonce=2, xtr_id=2, now=T0 + 1)
        register(server, [record(rlocs=("198.18.1.1",))], nonce=3, xtr_id=1, now=T0 + 2)
    assert shortcuts(core) == 1
    assert list(core.registrations()) == list(reference.registrations())
    assert core.lookup(0, ip("10.1.0.1")) == reference.lookup(0, ip("10.1.0.1"))


# ---------------------------------------------------------------------------------------------- randomised

SITES = {"dc1": (DC1_KEY, (ETR1, ETR1B)), "dc2": (DC2_KEY, (ETR2, ip("198.18.2.2")))}
PREFIXES = [("10.10.0.1/32", 42, ("dc1", "dc2")), ("10.10.0.0/24", 42, ("dc1", "dc2")),
            ("10.1.0.0/16", 0, ("dc1",)), ("10.2.0.0/16", 0, ("dc2",))]
RLOCS = ["198.18.1.1", "198.18.1.2", "198.18.2.1", "198.18.2.2"]


def history(seed: int, steps: int = 300):
    """Map-Registers drawn from a small pool (so most repeat), with changes, withdrawals, moves and time."""
    rng = random.Random(seed)
    pool = []
    for _ in range(12):
        site = rng.choice(list(SITES))
        key, etrs = SITES[site]
        chosen = [p for p in PREFIXES if site in p[2]]
        records = []
        for prefix, iid, _ in rng.sample(chosen, rng.randint(1, len(chosen))):
            records.append(record(prefix, rng.sample(RLOCS, rng.randint(1, 2)), iid=iid,
                                  ttl=rng.choice([1440, 1440, 3, 0]), weight=rng.choice([100, 50])))
        pool.append(dict(records=records, key=key, source=rng.choice(etrs), proxy=rng.random() < 0.5,
                         want_notify=rng.random() < 0.5, xtr_id=rng.choice([None, 1, 2]),
                         use_ttl_for_timeout=rng.random() < 0.2))
    now = T0
    for _ in range(steps):
        now += rng.choice([0.0, 1.0, 20.0, 61.0])
        if rng.random() < 0.1:
            yield "timer", now, None
            continue
        message = dict(rng.choice(pool))
        message["nonce"] = rng.choice([1, 2, rng.getrandbits(64), SEQUENCED + int((now - T0) * 1000)])
        yield "register", now, message


def observe(core: MapServer, now: float):
    return [(iid, prefix, site, record, list(regs))  # (bookkeeping fields are not compared)
            for iid, prefix, site, record, regs in core.registrations()], core.next_deadline() is None


@pytest.mark.parametrize("seed", range(12))
def test_the_shortcut_changes_nothing_but_the_work_done(seed):
    store = MemoryStore()
    fast = MapServer(site_config(), nonces=itertools.count(0x5000).__next__, now=T0, store=store)
    full = MapServer(site_config(), nonces=itertools.count(0x5000).__next__, now=T0, store=MemoryStore())
    full._registry.refresh_shortcut = False
    for step, (kind, now, message) in enumerate(history(seed)):
        if kind == "timer":
            got = [fast.handle_timer(now), full.handle_timer(now)]
        else:
            got = [register(server, **message, now=now) for server in (fast, full)]
        assert [(e.destination, e.port, e.payload) for e in got[0]] == \
            [(e.destination, e.port, e.payload) for e in got[1]], f"seed {seed} step {step}"
        assert observe(fast, now) == observe(full, now), f"seed {seed} step {step}"
        counted = {k: v for k, v in fast.counters.items() if k != "refreshed.map_register"}
        assert counted == full.counters, f"seed {seed} step {step}"
        for probe in ("10.10.0.1", "10.10.0.7", "10.1.2.3", "10.2.2.2"):
            iid = 42 if probe.startswith("10.10") else 0
            assert fast.lookup(iid, ip(probe)) == full.lookup(iid, ip(probe))
    end = now + 90_000  # and everything expires at the same moments (a day at most: Record TTL 1440 minutes)
    for later in range(int(now) + 1, int(end), 300):
        assert [e.payload for e in fast.handle_timer(later)] == [e.payload for e in full.handle_timer(later)]
        assert observe(fast, later) == observe(full, later)
    assert fast.registration_count == full.registration_count == 0
    assert shortcuts(fast) > 0 or seed  # the pool repeats: the shortcut is taken (at least for seed 0)
