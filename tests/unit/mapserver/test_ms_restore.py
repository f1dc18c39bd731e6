"""Restoring in bulk (`Journal.restore_registrations`) gives exactly the state that replaying each stored
registration through `Registry.upsert` gives: the reference below is that per-entry path.

Everything observable is compared: registrations with their ETRs, merged records and the bytes a Map-Reply
carries, subscriptions, policy, static mappings, expiry timers, counters, lookups and answered datagrams, and
what expiring later does.  Entries the bulk reader does not read itself (non-canonical text or bytes, odd
EIDs, bad or disallowed entries) go through the journal too.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import os
import shutil
import struct
from dataclasses import replace

import msgpack
import pytest

from lisp_ryu.config import EidPrefixConfig, MapServerConfig, SiteConfig
from lisp_ryu.mapping.policy import RlocOverride, Rule, StaticMapping
from lisp_ryu.mapserver import FileStore, MapServer, MemoryStore
from lisp_ryu.mapserver import journal as journal_mod
from lisp_ryu.mapserver import snapshot_rows
from lisp_ryu.mapserver.journal import BAD_STORED_ENTRY, Journal, StoredRegistrations
from lisp_ryu.mapserver.state import as_answer, key_prefix, prefix_key, record_bytes, record_from_bytes
from lisp_ryu.mapserver.store import _as_read as as_read
from lisp_ryu.wire import (
    Action,
    EidPrefix,
    InstanceIdAddress,
    Locator,
    MappingRecord,
    TTL_INFINITE,
)

from mapserver_helpers import DC1_KEY, DC2_KEY, ETR1, ETR1B, ETR2, ITR, T0, acked, net
from support import packets

ip = ipaddress.ip_address
DC3_KEY = "dc3-secret"
ETR3 = ip("198.18.3.1")
ETR6 = ip("2001:db8:ff::1")
RESTART = T0 + 100  # the ttl=1 registration (60 s) has expired by then, the 180 s ones not


def config() -> MapServerConfig:
    sites = (
        SiteConfig("dc1", DC1_KEY, (
            EidPrefixConfig(net("10.1.0.0/16"), 0, True),
            EidPrefixConfig(net("10.5.0.0/16"), 0, False),
            EidPrefixConfig(net("10.10.0.0/16"), 42, True),
            EidPrefixConfig(net("2001:db8:1::/48"), 0, True),
        )),
        SiteConfig("dc2", DC2_KEY, (
            EidPrefixConfig(net("10.2.0.0/16"), 0, True),
            EidPrefixConfig(net("10.10.0.0/16"), 42, True),
            EidPrefixConfig(net("2001:db8:2::/48"), 7, True),
        ), xtr_ids=(0xD2,)),
        SiteConfig("dc3", DC3_KEY, (EidPrefixConfig(net("10.3.0.0/16"), 0, True),)),
    )
    return MapServerConfig(sites=sites, notify_retries=3, notify_retry_interval=1.0, registration_ttl=180.0,
                           rate_limit_per_source=1e9)


def replay_one_at_a_time(journal: Journal, entries, now: float, registry) -> None:
    """The reference: registrations restored as before the bulk path, one `Registry.upsert` each."""
    state = registry._state
    for entry in entries:
        try:
            reg = journal_mod.registration_from_entry(entry)
        except BAD_STORED_ENTRY:
            state.count("restore.bad_entries")
            continue
        site = state.sites.get(reg.site)
        if reg.expires <= now:
            state.count("restore.expired")
            continue
        if site is None or not registry.site_allows(site, reg.iid, reg.prefix)[0]:
            state.count("restore.no_longer_allowed")
            continue
        entry_state = state.registered.get(reg.iid, reg.prefix)
        if entry_state is not None and entry_state.site != reg.site:
            state.count("restore.conflicting_site")
            continue
        registry.upsert(reg, now)
        if reg.xtr_id is not None:
            state.xtr_sites[reg.xtr_id] = reg.site
        state.count("restore.registrations")


def reference_core(*args, **kwargs) -> MapServer:
    """A core whose restore replays registrations through the reference; the same core otherwise."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Journal, "restore_registrations", replay_one_at_a_time)
        return MapServer(*args, **kwargs)


def start(core_class, store, now=RESTART):
    counter = itertools.count(0x5000)
    return core_class(config(), nonces=lambda: next(counter), now=now, store=store)


# ---------------------------------------------------------------------------------------------- the workload


def xtr_record(prefix, rlocs, iid=0, ttl=1440, **fields):
    """A record as lisp-ryu's own xTR registers it: L bit on its RLOCs, A bit on the record."""
    locators = tuple(Locator(ip(r), priority=1, weight=50, local=True) for r in rlocs)
    return MappingRecord.for_prefix(packets.eid(prefix, iid), locators, ttl=ttl, authoritative=True, **fields)


def register(core, records, key, source, now, **kw):
    return core.handle_control(packets.map_register(records, key, **kw), source, 4342, now)


def populate(core: MapServer) -> None:
    """Several sites, merged ETRs, proxy and not, instance-IDs, IPv6, moves, withdrawals, refreshes, expiries,
    subscriptions, a policy rule, an RLOC override and static mappings."""
    hosts = [f"10.1.{n // 200}.{n % 200 + 1}" for n in range(120)]
    for batch in range(6):  # host routes of dc1: plain records and xTR-style ones, proxy and not
        chunk = hosts[batch * 20:(batch + 1) * 20]
        records = [packets.record(h, ["198.18.1.1"]) if n % 3 else xtr_record(h, ["198.18.1.1", "198.18.1.9"])
                   for n, h in enumerate(chunk)]
        register(core, records, DC1_KEY, ETR1, T0 + batch, proxy=batch % 2 == 0)
    # One prefix, three ETRs of dc1: merged (xTR-IDs 1 and 2, and one keyed by its RLOC).
    register(core, [replace(packets.record("10.1.5.0/24", ["198.18.1.1", "198.18.1.7"]), map_version=3)], DC1_KEY,
             ETR1, T0, proxy=True, xtr_id=1)
    register(core, [replace(packets.record("10.1.5.0/24", ["198.18.1.2", "198.18.1.7"], ttl=30), map_version=3)],
             DC1_KEY, ETR1B, T0 + 10, xtr_id=2)
    register(core, [xtr_record("10.1.5.0/24", ["198.18.1.3"])], DC1_KEY, ETR1B, T0 + 20)
    # Unusual but valid records: an action, a map-version, unreachable and probed RLOCs, an infinite TTL.
    odd = (
        MappingRecord.for_prefix(packets.eid("10.1.6.0/24"), (Locator(ip("198.18.1.4"), reachable=False),),
                                 action=Action.NATIVELY_FORWARD, map_version=7),
        MappingRecord.for_prefix(packets.eid("10.1.7.0/24"), (Locator(ip("198.18.1.5"), probed=True),),
                                 ttl=TTL_INFINITE),
        MappingRecord.for_prefix(packets.eid("10.1.8.0/24"), (Locator(ip("2001:db8:ff::1"), priority=2),
                                                                 Locator(ip("198.18.1.6"), weight=0))),
    )
    register(core, odd, DC1_KEY, ETR1, T0 + 2, proxy=True)
    register(core, [packets.record("10.5.0.0/16", ["198.18.1.1"])], DC1_KEY, ETR1, T0 + 3, proxy=True)
    # Instance 42: a covering prefix of dc2, host routes of dc1 inside it, one of which moves to dc2.
    register(core, [packets.record("10.10.0.0/16", ["198.18.2.1"], iid=42)], DC2_KEY, ETR2, T0, proxy=True,
             xtr_id=0xD2)
    register(core, [packets.record("10.10.0.5/32", ["198.18.1.1"], iid=42),
                    xtr_record("10.10.0.6/32", ["198.18.1.1"], iid=42)], DC1_KEY, ETR1, T0 + 5, proxy=True)
    register(core, [packets.record("10.10.0.6/32", ["198.18.2.1"], iid=42)], DC2_KEY, ETR2, T0 + 6, xtr_id=0xD2)
    # IPv6, in instance 0 and 7.
    register(core, [packets.record("2001:db8:1::5/128", ["198.18.1.1"]),
                    xtr_record("2001:db8:1:2::/64", ["2001:db8:ff::1"])], DC1_KEY, ETR6, T0 + 7, proxy=True)
    register(core, [packets.record("2001:db8:2::/48", ["198.18.2.1"], iid=7),
                    xtr_record("2001:db8:2::9/128", ["198.18.2.2"], iid=7)], DC2_KEY, ETR2, T0 + 8, proxy=True)
    # Lifetimes from the Record TTL: one gone by the restart, one outliving the 180 s ones.
    register(core, [packets.record("10.2.7.0/24", ["198.18.2.1"], ttl=1)], DC2_KEY, ETR2, T0,
             use_ttl_for_timeout=True, proxy=True)
    register(core, [packets.record("10.2.8.0/24", ["198.18.2.1"], ttl=5)], DC2_KEY, ETR2, T0,
             use_ttl_for_timeout=True)
    # Withdrawn, and refreshed (the journal holds the older entries too).
    register(core, [packets.record("10.1.9.9/32", ["198.18.1.1"])], DC1_KEY, ETR1, T0 + 1)
    register(core, [packets.record("10.1.9.9/32", ["198.18.1.1"], ttl=0)], DC1_KEY, ETR1, T0 + 2)
    register(core, [packets.record(h, ["198.18.1.8"]) for h in hosts[:10]], DC1_KEY, ETR1, T0 + 30, proxy=True)
    register(core, [packets.record("10.3.0.0/16", ["198.18.3.1"])], DC3_KEY, ETR3, T0 + 4, proxy=True, xtr_id=3)
    # Subscriptions, with and without a source EID.
    for eid, xtr_id, source_eid in (("10.1.0.1", 0xA, None), ("10.2.8.1", 0xB, "10.1.0.2"),
                                    ("10.1.5.1", 0xD2, None)):
        acked(core, core.handle_control(packets.map_request_ecm(eid, [ITR], subscribe=True, xtr_id=xtr_id, nonce=9,
                                                                source_eid=source_eid), ITR, 4342, T0 + 9), T0 + 9)
    core.handle_timer(T0 + 10)  # subscriptions are journalled together, a moment later
    # Policy and static mappings.
    core.set_rule(Rule.from_dict({"id": "deny", "iid": 0, "destinations": ["10.2.8.0/24"],
                                  "sources": ["10.1.0.0/24"], "action": "deny"}), T0 + 11)
    core.set_override(RlocOverride.from_dict({"id": "w", "rloc": "198.18.1.7", "weight": 3}), T0 + 11)
    core.set_static(StaticMapping.from_dict({"iid": 0, "prefix": "192.0.2.0/24",
                                             "rlocs": [{"address": "198.18.7.1"}]}), T0 + 12)
    core.set_static(StaticMapping.from_dict({"iid": 0, "prefix": "10.1.0.0/28",
                                             "rlocs": [{"address": "198.18.7.2"}]}), T0 + 12)


def stored_entry(record, net_text=None, iid=0, site="dc1", etr="rloc:198.18.1.1", src="198.18.1.1", **fields):
    """A registration entry as the core journals one (fields overridable, to make it odd)."""
    entry = {"t": "reg", "iid": iid, "net": net_text or str(record.eid_prefix.network), "etr": etr, "site": site,
             "rec": record_bytes(record), "src": src, "port": 4342, "proxy": True, "kid": 0, "alg": 1,
             "at": T0 + 50, "exp": T0 + 230, "xid": None, "sid": None}
    entry.update(fields)
    return entry


def with_reserved_bit(rec: bytes, at: int, bit: int = 0x01) -> bytes:
    """`rec` with a reserved bit set: byte 7 bit 0 (ACT word), byte 8 bit 0x10 (Map-Version word), byte 20 bit 0
    (the first locator's unused flags)."""
    return rec[:at] + bytes([rec[at] | bit]) + rec[at + 1:]


def odd_entries() -> list[dict]:
    """Entries the bulk reader leaves to the codec and `ipaddress`, and entries the restore must drop."""
    plain = packets.record("10.1.70.1/32", ["198.18.1.1"])
    rec = record_bytes(plain)
    return [
        # Non-canonical prefix text: a second ETR of an existing prefix, and the same ETR again.
        stored_entry(packets.record("2001:db8:1::5/128", ["198.18.1.2"]), "2001:0db8:0001::5/128",
                     etr="rloc:198.18.1.2", src="198.18.1.2"),
        stored_entry(packets.record("10.1.0.3/32", ["198.18.1.1"]), "10.1.0.3/255.255.255.255"),
        stored_entry(packets.record("2001:db8:1::6/128", ["198.18.1.1"]), "2001:DB8:1::6/128"),
        # Reserved bits set: in the record head, the Map-Version word and a locator's unused flags.
        stored_entry(plain, rec=with_reserved_bit(rec, 7)),
        stored_entry(packets.record("10.1.70.2/32", ["198.18.1.1"]),
                     rec=with_reserved_bit(record_bytes(packets.record("10.1.70.2/32", ["198.18.1.1"])), 8, 0x10)),
        stored_entry(packets.record("10.1.70.3/32", ["198.18.1.1"]),
                     rec=with_reserved_bit(record_bytes(packets.record("10.1.70.3/32", ["198.18.1.1"])), 20)),
        # A record naming another prefix than the entry's, host bits past the mask, an instance-ID not
        # the entry's, instance 0 in an LCAF, an instance-ID range.
        stored_entry(packets.record("10.1.71.1/32", ["198.18.1.1"]), "10.1.71.0/24"),
        stored_entry(MappingRecord(ip("10.1.72.9"), 24, (Locator(ip("198.18.1.1")),)), "10.1.72.0/24"),
        stored_entry(packets.record("10.10.0.77/32", ["198.18.1.1"], iid=42), "10.10.0.77/32", iid=0),
        stored_entry(packets.record("10.10.0.78/32", ["198.18.1.1"]), "10.10.0.78/32", iid=42),
        stored_entry(MappingRecord(InstanceIdAddress(0, ip("10.1.73.1")), 32, (Locator(ip("198.18.1.1")),)),
                     "10.1.73.1/32"),
        stored_entry(MappingRecord(InstanceIdAddress(42, ip("10.10.0.79"), 24), 32, (Locator(ip("198.18.1.1")),)),
                     "10.10.0.79/32", iid=42),
        stored_entry(packets.record("10.10.0.80/32", ["198.18.1.1"], iid=42), iid=42 + (1 << 30)),
        # Fields of other types than the core writes, converted as before.
        stored_entry(packets.record("10.10.0.81/32", ["198.18.1.1"], iid=42), iid=42.0, port=4342.0),
        stored_entry(packets.record("10.1.79.1/32", ["198.18.1.1"]), iid=False, proxy=1, at=int(T0 + 50)),
        # Bad entries (each its own ETR: of several entries for one key only the last one counts).
        stored_entry(plain, etr="bad-1", rec=b"\x00" * 5),
        stored_entry(plain, etr="bad-2", rec=rec + b"\x00"),
        stored_entry(plain, etr="bad-3", rec=rec.hex()),
        stored_entry(plain, "not a prefix", etr="bad-4"),
        stored_entry(plain, b"10.1.70.1/32", etr="bad-5"),
        stored_entry(plain, "10.1.70.01/32", etr="bad-10"),
        stored_entry(plain, etr="bad-6", src="nowhere"),
        stored_entry(plain, etr="bad-7", port="x"),
        stored_entry(plain, etr="bad-8", iid="zero"),
        {k: v for k, v in stored_entry(plain, etr="bad-9").items() if k != "exp"},
        # Expired, of an unknown site, outside the site, and a prefix another site holds already.
        stored_entry(packets.record("10.1.75.1/32", ["198.18.1.1"]), exp=RESTART - 1),
        stored_entry(packets.record("10.1.76.1/32", ["198.18.1.1"]), site="gone"),
        stored_entry(packets.record("10.2.77.1/32", ["198.18.1.1"])),
        stored_entry(packets.record("10.5.1.0/24", ["198.18.1.1"])),
        stored_entry(packets.record("10.10.0.5/32", ["198.18.2.1"], iid=42), iid=42, site="dc2",
                     etr="rloc:198.18.2.1", src="198.18.2.1"),
    ]


# ---------------------------------------------------------------------------------------------- comparing


def probes():
    """(iid, EID) pairs in and around everything registered, and far from it."""
    addresses = [(0, f"10.1.{n // 200}.{n % 200 + k}") for n in range(0, 130, 3) for k in (0, 1)]
    addresses += [(0, a) for a in ("10.1.5.77", "10.1.6.1", "10.1.7.1", "10.1.8.1", "10.1.9.9", "10.5.3.3",
                                   "10.2.7.1", "10.2.8.1", "10.3.0.1", "10.1.70.1", "10.1.71.5", "10.1.72.1",
                                   "192.0.2.5", "10.1.0.5", "172.16.0.1", "2001:db8:1::5", "2001:db8:1::6",
                                   "2001:db8:1:2::1", "2001:db8:1:3::1", "2001:db8:9::1")]
    addresses += [(42, a) for a in ("10.10.0.5", "10.10.0.6", "10.10.0.7", "10.10.0.79", "10.11.0.1")]
    addresses += [(7, a) for a in ("2001:db8:2::9", "2001:db8:2::10", "2001:db8:3::1")]
    return [(iid, ip(a)) for iid, a in addresses]


def observable(core: MapServer) -> dict:
    """Everything a restored core shows, or acts on later."""
    table = [(iid, prefix, entry.site, entry.proxy, entry.record, entry.record_bytes or record_bytes(entry.record))
             for iid, prefix, entry in core._state.registered]
    requesters = (None, (ip("10.1.0.9"), ITR), (ip("10.1.0.9"), ip("198.18.9.8")))
    return {
        "registrations": list(core.registrations()),
        "table": table,
        "subscriptions": list(core.subscriptions()),
        "policy": core.policy,
        "static": list(core.static_mappings()),
        "counters": dict(core.counters),
        "deadline": core.next_deadline(),
        # What has a live timer (one per key; an entry armed before a refresh fires early and re-arms,
        # so its time, like superseded heap entries and sequence numbers, is the heap's business).
        "timers": sorted(repr(slot) for slot in core._state.armed),
        "xtr_sites": dict(core._state.xtr_sites),
        "lookups": [core.lookup(iid, eid, *(who or ())) for iid, eid in probes() for who in requesters],
    }


def answered(core: MapServer, now: float) -> list:
    """The datagrams sent for a Map-Request to every probe, through the fast path and the full one."""
    sent = []
    for quick in (True, False):
        core.quick_path = quick
        for n, (iid, eid) in enumerate(probes()):
            payload = packets.map_request_ecm(str(eid), [ITR], iid=iid, nonce=n, source_port=61000)
            sent.append([(e.destination, e.port, e.payload) for e in core.handle_control(payload, ITR, 4342, now)])
    core.quick_path = True
    return sent


def later(core: MapServer) -> list:
    """What expiring does afterwards: the effects of each timer run and the registrations left."""
    seen = []
    for now in (RESTART + 30, T0 + 181, T0 + 231, T0 + 301, T0 + 400):
        seen.append((now, [(e.destination, e.port, e.payload) for e in core.handle_timer(now)],
                     list(core.registrations()), dict(core.counters)))
    return seen


def assert_same(bulk: MapServer, reference: MapServer) -> None:
    bulk._state.registered.check_invariants()
    for _, _, entry in bulk._state.registered:  # a stored answer is exactly the encoded merged record
        assert entry.record_bytes in (b"", record_bytes(entry.record))
    want, got = observable(reference), observable(bulk)
    for name in want:
        assert got[name] == want[name], name
    assert answered(bulk, RESTART + 1) == answered(reference, RESTART + 1)
    assert later(bulk) == later(reference)


# ---------------------------------------------------------------------------------------------- tests


def lived(kind: str, tmp_path):
    """A core that went through the workload, and how a restart opens its store again."""
    store = MemoryStore() if kind == "memory" else FileStore(str(tmp_path))
    live = start(MapServer, store, now=T0)
    populate(live)
    if kind == "memory":
        return live, lambda: store
    store.close()
    return live, lambda: FileStore(str(tmp_path))


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_bulk_restore_equals_one_upsert_at_a_time_and_the_live_core(kind, tmp_path):
    live, reopen = lived(kind, tmp_path)
    bulk = start(MapServer, reopen())
    reference = start(reference_core, reopen())
    assert bulk.counters["restore.registrations"] == 136 and bulk.counters["restore.expired"] == 1

    live.handle_timer(RESTART)  # what expired while the server was down
    assert list(bulk.registrations()) == list(live.registrations())
    assert list(bulk.subscriptions()) == list(live.subscriptions())
    assert [bulk.lookup(iid, eid) for iid, eid in probes()] == [live.lookup(iid, eid) for iid, eid in probes()]
    assert_same(bulk, reference)


def test_bulk_restore_of_a_snapshot_plus_odd_journal_entries_equals_the_reference():
    store = MemoryStore()
    live = start(MapServer, store, now=T0)
    populate(live)
    store.snapshot(live.state_entries())
    register(live, [packets.record("10.1.0.1/32", ["198.18.1.3"])], DC1_KEY, ETR1, T0 + 40, proxy=True)
    store.append(odd_entries())
    store.append([{"t": "unreg", "iid": 0, "net": "10.1.0.2/32", "etr": "rloc:198.18.1.1"}, {"t": "what"}, [1]])
    bulk = start(MapServer, store)
    reference = start(reference_core, store)
    counters = bulk.counters
    assert counters["restore.bad_entries"] == 10 and counters["restore.unknown_entries"] == 2
    assert (counters["restore.no_longer_allowed"], counters["restore.conflicting_site"]) == (5, 1)
    assert_same(bulk, reference)


def test_bulk_restore_of_an_unordered_snapshot_like_the_benchmark_equals_the_reference(tmp_path):
    from lisp_ryu.mapserver.store import write_snapshot

    eids = [ipaddress.IPv4Address(0x0A010000 + (n * 7919) % (1 << 16)) for n in range(3000)]
    entries = [stored_entry(packets.record(f"{eid}/32", ["198.18.1.1"]), at=RESTART - 10, exp=RESTART + 170)
               for eid in eids]
    write_snapshot(str(tmp_path), entries)
    bulk = start(MapServer, FileStore(str(tmp_path)))
    reference = start(reference_core, FileStore(str(tmp_path)))
    assert bulk.registration_count == 3000
    # A plain record is its own answer: the stored bytes are reused, not encoded again.
    assert all(entry.record_bytes for _, _, entry in bulk._state.registered)
    assert_same(bulk, reference)


@pytest.mark.parametrize("odd", [{"iid": float("inf"), "src": "nowhere"}, {"iid": float("inf"), "rec": b""},
                                 {"port": float("inf"), "net": "garbage"}, {"port": float("inf")}, {"iid": 0.5}])
def test_entries_of_odd_types_are_counted_and_skipped_not_fatal(odd):
    store = MemoryStore()
    store.append([stored_entry(packets.record("10.1.80.1/32", ["198.18.1.1"]), **odd)])
    bulk, reference = start(MapServer, store), start(reference_core, store)
    # Counted as bad (inf is no int) or read as int() reads it (0.5 -> 0): never a failed restart.
    assert bulk.counters.get("restore.bad_entries", 0) + bulk.registration_count == 1
    assert observable(bulk) == observable(reference)


def records_to_read():
    """Records in every form a Map-Register can bring that the bulk reader reads itself."""
    for iid, prefix in ((0, "10.1.2.0/24"), (0, "10.1.2.3/32"), (0, "0.0.0.0/0"), (42, "10.10.0.5/32"),
                        (0, "2001:db8:1::/48"), (7, "2001:db8:2::9/128")):
        for action, authoritative, map_version in ((Action.NO_ACTION, False, 0), (Action.NO_ACTION, True, 4095),
                                                   (Action.DROP_POLICY_DENIED, False, 1),
                                                   (Action.DROP_AUTH_FAILURE, True, 0)):
            for bits in ((False, False, True), (True, False, True), (False, True, False), (True, True, True)):
                local, probed, reachable = bits
                locators = (Locator(ip("198.18.1.1"), 3, 20, 4, 5, local, probed, reachable),
                            Locator(ip("2001:db8:ff::2")))
                for chosen in (locators, locators[:1], ()):
                    yield iid, prefix, MappingRecord.for_prefix(
                        EidPrefix.from_network(prefix, iid), chosen, ttl=77, action=action,
                        authoritative=authoritative, map_version=map_version)


def test_the_bulk_reader_reads_records_as_the_codec_and_answers_asas_answer():
    reader = StoredRegistrations()
    for iid, prefix, record in records_to_read():
        rec = record_bytes(record)
        network = ipaddress.ip_network(prefix)
        read = reader._read_record(rec, str(network), iid)
        assert read is not None, record
        key, answer_bytes = read
        assert key == prefix_key(network) and key_prefix(key) == network
        decoded = record_from_bytes(rec)
        answer = as_answer(decoded, iid, network)
        assert answer_bytes == record_bytes(answer)
        assert (answer_bytes is rec) == (answer is decoded)  # an answer already: the same bytes, shared
    assert len(reader._locators) < 20  # locator sets are read once and shared


def test_the_bulk_reader_leaves_other_forms_to_the_codec():
    reader = StoredRegistrations()
    rec = record_bytes(packets.record("10.1.2.3/32", ["198.18.1.1"]))
    assert reader._read_record(rec, "10.1.2.3/32", 0) is not None
    cases = [(rec, "10.1.2.3/31", 0), (rec, "10.1.2.03/32", 0), (rec, "10.1.2.3/32", 42), (rec, b"10.1.2.3/32", 0)]
    odd_bytes = (rec[:-1], rec + b"\x00", rec[:11], rec.hex(), with_reserved_bit(rec, 7),
                 with_reserved_bit(rec, 8, 0x10), with_reserved_bit(rec, 20))
    cases += [(odd, "10.1.2.3/32", 0) for odd in odd_bytes]
    for odd_rec, text, iid in cases:
        assert reader._read_record(odd_rec, text, iid) is None, (odd_rec, text, iid)


def expanded(items):
    """Snapshot items as entries: a group of rows as the registration entries it holds."""
    for item in items:
        entry = msgpack.unpackb(item, raw=False) if isinstance(item, bytes) else item
        if entry.get("t") == snapshot_rows.GROUP:
            yield from snapshot_rows.expand(entry)
        else:
            yield entry


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_a_compaction_writes_registrations_as_rows_per_context(kind, tmp_path):
    """A snapshot holds registrations as rows, one group per ETR context (the message's shared fields
    once), and a journal entry is joined from parts (`EntryEncoder`); both must read back as exactly
    what `state_entries` says, for registrations made by Map-Register and restored ones alike."""
    live, reopen = lived(kind, tmp_path)
    restored = start(MapServer, reopen())
    regs = [reg for *_, etrs in live.registrations() for reg in etrs]
    assert len(regs) > 100
    encoder = journal_mod.EntryEncoder()
    for reg in regs:
        assert msgpack.unpackb(encoder.encode(reg), raw=False) == as_read(journal_mod.registration_entry(reg))
    for core in (live, restored):  # the same entries (a snapshot's order means nothing)
        items = list(core._journal.stored_state())
        groups = [e for e in map(msgpack.unpackb, items) if e["t"] == snapshot_rows.GROUP]
        held = [reg for *_, etrs in core.registrations() for reg in etrs]
        assert len(groups) == len({id(reg.context) for reg in held}) < len(held)
        assert sum(len(g["rows"]) for g in groups) == snapshot_rows.WIDTH * len(held)
        assert sorted(expanded(items), key=lambda e: repr(sorted(e.items()))) == sorted(
            (as_read(e) for e in core.state_entries()), key=lambda e: repr(sorted(e.items())))
    compacted = MemoryStore()
    compacted.snapshot(live._journal.stored_state())
    again = start(MapServer, compacted)
    assert list(again.registrations()) == list(restored.registrations())
    assert list(again.subscriptions()) == list(restored.subscriptions())
    assert_same(again, start(reference_core, compacted))


OLD_STORE = os.path.join(os.path.dirname(__file__), "fixtures", "old_store")


def expected_text(core: MapServer) -> str:
    """The counters and a digest of everything else `observable` shows, as fixtures/old_store keeps them."""
    seen = observable(core)
    seen["counters"] = sorted(seen["counters"].items())
    text = "".join(f"{name}: {seen[name]!r}\n" for name in sorted(seen))
    return f"counters: {seen['counters']!r}\nsha256: {hashlib.sha256(text.encode()).hexdigest()}\n"


def test_a_store_written_before_rows_restores_as_then_and_is_rewritten_in_rows(tmp_path):
    """fixtures/old_store was written by the store before snapshots held rows (a snapshot of one map per
    registration, then a journal with odd entries: fixtures/make_old_store.py.txt), and
    expected.txt is what restoring it showed then.  It restores the same now, and once compacted into
    rows, restores the same again (but the counts of what the compaction left out)."""
    directory, old = str(tmp_path / "data"), str(tmp_path / "old")
    for copy in (directory, old):
        shutil.copytree(OLD_STORE, copy, ignore=shutil.ignore_patterns("expected.txt"))
    with open(os.path.join(directory, "snapshot.msgpack"), "rb") as fh:
        assert struct.unpack_from(">4sI", fh.read(8)) == (b"LRS\x02", 2)
    store = FileStore(directory)
    core = start(MapServer, store)
    with open(os.path.join(OLD_STORE, "expected.txt")) as fh:
        assert expected_text(core) == fh.read()
    store.snapshot(core._journal.stored_state())
    store.close()
    assert_same(core, start(reference_core, FileStore(old)))
    with open(os.path.join(directory, "snapshot.msgpack"), "rb") as fh:
        assert struct.unpack_from(">4sI", fh.read(8)) == (b"LRS\x02", 3)
    again = start(MapServer, FileStore(directory))
    want, got = observable(start(MapServer, FileStore(old))), observable(again)
    live = sum(len(etrs) for *_, etrs in again.registrations())  # (148 restored: one replaced another)
    assert got.pop("counters")["restore.registrations"] == live == 147
    want.pop("counters")
    assert got == want
    assert_same(again, start(reference_core, FileStore(directory)))


def test_rows_odd_or_damaged_and_journal_entries_over_them_restore_as_the_reference():
    """A snapshot in rows with odd and damaged groups, then journal entries that replace a row in place,
    withdraw rows, withdraw one and register it again (it then comes last), and add an ETR to a row's
    prefix: the same state as one `upsert` per registration in that order."""
    store = MemoryStore()
    live = start(MapServer, store, now=T0)
    populate(live)
    plain = packets.record("10.1.90.1/32", ["198.18.1.1"])
    context = {k: v for k, v in stored_entry(plain).items() if k in snapshot_rows.CONTEXT_KEYS}
    row = [0, prefix_key(net("10.1.90.1/32")), record_bytes(plain), T0 + 50, T0 + 230, 7]
    damaged = [
        {"t": "regs", **context, "rows": row + row[:4]},  # a cut row
        {"t": "regs", **context, "rows": "not rows"},
        {"t": "regs", **{**context, "src": "nowhere"}, "rows": row},
        {"t": "regs", **context, "etr": "bad-key", "rows": [0, b"\x0a\x01\x5a\x01\x21", *row[2:]]},
        {"t": "regs", **context, "etr": "bad-mask", "rows": [0, b"\x0a\x01\x5a\x00\x18", *row[2:]]},
        {"t": "regs", **context, "etr": "int-times", "rows": [0, row[1], row[2], int(T0 + 50), int(T0 + 230), 7]},
        {"t": "regs", **context, "etr": "float-iid", "rows": [0.0, *row[1:]]},
    ]
    # (Groups after an entry, as those of `grouped` are, would be read as the entries they hold.)
    store.snapshot([*live._journal.stored_state(), *damaged, *snapshot_rows.grouped(odd_entries())])
    assert len(store.snapshot_entries) > 10
    register(live, [packets.record("10.1.0.1/32", ["198.18.1.3"])], DC1_KEY, ETR1, T0 + 40, proxy=True)
    store.append([{"t": "unreg", "iid": 0, "net": "10.1.0.2/32", "etr": "rloc:198.18.1.1"},
                  {"t": "unreg", "iid": 0, "net": "10.1.0.3/32", "etr": "rloc:198.18.1.1"},
                  stored_entry(packets.record("10.1.0.3/32", ["198.18.1.4"]), at=T0 + 60),
                  stored_entry(packets.record("10.1.0.4/32", ["198.18.1.5"]), etr="rloc:198.18.1.5",
                               src="198.18.1.5")])
    bulk = start(MapServer, store)
    reference = start(reference_core, store)
    assert bulk.counters["restore.bad_entries"] == 10 + 4  # odd_entries' and: cut, not rows, src, key
    etrs = {str(prefix): [r.etr for r in regs] for _, prefix, _, _, regs in bulk.registrations()}
    assert "10.1.0.2/32" not in etrs and etrs["10.1.0.4/32"] == ["rloc:198.18.1.1", "rloc:198.18.1.5"]
    # The good row of a cut group; rows of other types read as entries of those types are.
    assert etrs["10.1.90.1/32"] == [context["etr"], "int-times", "float-iid"]
    assert_same(bulk, reference)


def test_a_map_registers_records_are_kept_as_the_codec_encodes_them_and_answered_as_as_answer():
    """The registry keeps a record's bytes sliced from the Map-Register where they are already in the
    form `record_bytes` makes (else encodes it again), and answers a record that is its own answer
    with its bytes, both read with the record forms seen before: the same bytes as the codec's."""
    from lisp_ryu.wire import MapRegister

    core = start(MapServer, MemoryStore(), now=T0)
    registry = core._registry
    forms = list(records_to_read())
    for n, (iid, prefix, record) in enumerate(forms):
        payload = packets.map_register([record], DC2_KEY if iid == 7 else DC1_KEY, nonce=n + 1)
        message = MapRegister.decode(payload)
        prefixes = [(iid, record.eid_prefix.network)]
        assert registry._recs(payload, message, prefixes) == [record_bytes(record)]
        at = payload.index(record_bytes(record))
        for odd in (7, 8, 20):  # a reserved bit set in the message: the record is encoded again, without it
            if len(record.locators) or odd != 20:
                changed = with_reserved_bit(payload, at + odd, 0x10 if odd == 8 else 0x01)
                assert registry._recs(changed, message, prefixes) == [record_bytes(record)]
                assert registry._recs(changed, message, prefixes)[0] != changed[at:at + len(record_bytes(record))]
        if prefix in ("0.0.0.0/0",):
            continue  # no site may register it
        core.handle_control(payload, ETR1, 4342, T0 + 1)
        entry = core._state.registered.get(iid, ipaddress.ip_network(prefix))
        assert entry is not None, prefix
        answer = as_answer(record, iid, ipaddress.ip_network(prefix))
        assert entry.record_bytes == record_bytes(answer)
        assert (entry.record_bytes is entry.regs()[0].rec) == (answer is record)
    # Several records in one message, and the same again with a locator the slicer does not read.
    records = [packets.record(f"10.1.3.{n}/32", ["198.18.1.1", "2001:db8:ff::2"]) for n in range(1, 6)]
    payload = packets.map_register(records, DC1_KEY, nonce=999)
    message = MapRegister.decode(payload)
    prefixes = [(0, r.eid_prefix.network) for r in records]
    assert registry._recs(payload, message, prefixes) == [record_bytes(r) for r in records]
    assert registry._forms.register_records(payload, len(records)) is not None
    locator = Locator(InstanceIdAddress(5, ip("198.18.1.1"), 32))
    odd = [replace(records[0], locators=(locator,)), *records[1:]]
    payload = packets.map_register(odd, DC1_KEY, nonce=1000)
    assert registry._forms.register_records(payload, len(odd)) is None
    assert registry._recs(payload, MapRegister.decode(payload), prefixes) == [record_bytes(r) for r in odd]


def test_rows_of_both_families_in_one_group_are_each_judged_in_their_own():
    """An IPv6 prefix whose first bits spell an allowed IPv4 prefix (0a01:: and 10.1.0.0/16) is not
    allowed by it, nor the reverse: the verdict a row reuses is of its own family and instance-ID."""
    entries = [stored_entry(packets.record(prefix, ["198.18.1.1"], iid=iid)) | {"iid": iid}
               for prefix, iid in (("10.1.0.1/32", 0), ("10.1.0.2/32", 0), ("a01::1/128", 0), ("a01::2/128", 0),
                                   ("2001:db8:1::1/128", 0), ("32.1.13.184/32", 0), ("10.10.0.1/32", 42),
                                   ("10.1.0.3/32", 42), ("10.1.0.4/32", 0))]
    store = MemoryStore()
    store.snapshot(snapshot_rows.grouped(entries))
    assert len(store.snapshot_entries) == 1  # one group: the same context
    bulk, reference = start(MapServer, store), start(reference_core, store)
    assert [(iid, str(prefix)) for iid, prefix, *_ in bulk.registrations()] == [
        (0, "10.1.0.1/32"), (0, "10.1.0.2/32"), (0, "10.1.0.4/32"), (0, "2001:db8:1::1/128"), (42, "10.10.0.1/32")]
    assert bulk.counters["restore.no_longer_allowed"] == 4
    assert_same(bulk, reference)


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_predictive_rlocs_registered_as_a_replication_list_are_answered_and_restored_as_registered(kind, tmp_path):
    """A third-party ETR registering a roaming EID's predictive RLOCs (draft-ietf-lisp-predictive-rlocs:
    a Replication List Entry, RFC 8060 LCAF 13, with the plain RLOC behind it): every Map-Reply carries
    the locator-set byte for byte as registered, before and after a restart and a compaction."""
    from lisp_ryu.wire import ReplicationList, RleEntry, decode_message

    rle = ReplicationList((RleEntry(ip("198.18.1.1")), RleEntry(ip("198.18.2.1")), RleEntry(ip("2001:db8:ff::2"))))
    record = MappingRecord.for_prefix(packets.eid("10.1.7.7/32"), (
        Locator(rle, priority=1, weight=100, reachable=True),
        Locator(ip("198.18.1.1"), priority=2, weight=100, reachable=True)), ttl=1)
    store = MemoryStore() if kind == "memory" else FileStore(str(tmp_path / "ms"))

    def answer(core, nonce):
        payload = packets.map_request_ecm("10.1.7.7", [ITR], nonce=nonce, source_port=61000)
        [effect] = core.handle_control(payload, ITR, 4342, T0 + 2)
        reply = decode_message(effect.payload)
        [answered] = reply.records
        return answered

    core = start(MapServer, store, now=T0)
    register(core, [record], DC1_KEY, ETR1, T0 + 1, proxy=True)
    assert answer(core, 1).locators == record.locators
    restarted = start(MapServer, store, now=T0 + 1)
    assert answer(restarted, 2).locators == record.locators
    compacted = MemoryStore()  # the snapshot a compaction writes: registrations as rows
    compacted.snapshot(restarted._journal.stored_state())
    assert answer(start(MapServer, compacted, now=T0 + 1), 3).locators == record.locators
