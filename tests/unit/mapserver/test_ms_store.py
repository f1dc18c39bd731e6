"""Persistence: what a core records rebuilds the same answers in a new core, with or without files."""

import ipaddress
import os

import msgpack
import pytest

from lisp_ryu.mapserver import FileStore, MemoryStore, StoreError
from lisp_ryu.mapserver import journal as journal_mod
from lisp_ryu.mapserver import store_format

from mapserver_helpers import DC1_KEY, DC2_KEY, ETR1, ETR2, ITR, T0, acked, make_core, site_config
from support import packets

XTR_ID = 0xABC


def populate(core):
    core.handle_control(packets.map_register([packets.record("10.1.0.0/16", ["198.18.1.1"])], DC1_KEY, proxy=True,
                                             xtr_id=1), ETR1, 4342, T0)
    core.handle_control(packets.map_register([packets.record("10.1.0.0/16", ["198.18.1.2"])], DC1_KEY, proxy=True,
                                             xtr_id=2), ipaddress.ip_address("198.18.1.2"), 4342, T0 + 100)
    core.handle_control(packets.map_register([packets.record("10.10.0.5/32", ["198.18.2.1"], iid=42)], DC2_KEY),
                        ETR2, 4342, T0)
    acked(core, core.handle_control(packets.map_request_ecm("10.1.2.3", [ITR], subscribe=True, xtr_id=XTR_ID,
                                                            nonce=9), ITR, 4342, T0), T0)
    core.handle_timer(T0 + 1)  # subscriptions are journalled together, a moment later


def answers(core):
    probes = [(0, "10.1.2.3"), (42, "10.10.0.5"), (0, "10.2.0.1"), (0, "192.0.2.1")]
    return [core.lookup(iid, ipaddress.ip_address(a)) for iid, a in probes]


def test_memory_store_round_trip_gives_the_same_answers_and_expiries():
    store = MemoryStore()
    core = make_core(store=store)
    populate(core)
    again = make_core(store=store, now=T0 + 120)
    assert answers(again) == answers(core)
    assert list(again.subscriptions()) == list(core.subscriptions())
    assert again.next_deadline() == T0 + 180  # ETR 1's expiry survived the restart
    assert "sent.map_notify" not in again.counters  # restoring tells nobody anything
    again.handle_timer(T0 + 180)
    assert [str(loc.address) for loc in again.lookup(0, ipaddress.ip_address("10.1.0.1")).locators] == ["198.18.1.2"]
    assert again.counters["restore.registrations"] == 3
    assert again.counters["restore.subscriptions"] == 1


def test_entries_expired_while_down_are_dropped():
    store = MemoryStore()
    populate(make_core(store=store))
    again = make_core(store=store, now=T0 + 250)
    assert again.registration_count == 1  # only ETR 2's registration (registered at T0 + 100) is alive
    assert again.counters["restore.expired"] == 2


def test_registrations_the_new_config_no_longer_allows_are_dropped():
    store = MemoryStore()
    populate(make_core(store=store))
    config = site_config()
    only_dc1 = config.__class__(**{**config.__dict__, "sites": config.sites[:1]})
    again = make_core(only_dc1, store=store, now=T0 + 1)
    assert again.counters["restore.no_longer_allowed"] == 1
    assert again.lookup(42, ipaddress.ip_address("10.10.0.5")).locators == ()


def test_withdrawal_and_move_are_journalled():
    store = MemoryStore()
    core = make_core(store=store)
    core.handle_control(packets.map_register([packets.record("10.10.0.5/32", ["198.18.1.1"], iid=42)], DC1_KEY),
                        ETR1, 4342, T0)
    core.handle_control(packets.map_register([packets.record("10.10.0.5/32", ["198.18.2.1"], iid=42)], DC2_KEY),
                        ETR2, 4342, T0 + 1)
    core.handle_control(packets.map_register([packets.record("10.1.0.0/16", ["198.18.1.1"])], DC1_KEY),
                        ETR1, 4342, T0 + 2)
    core.handle_control(packets.map_register([packets.record("10.1.0.0/16", ["198.18.1.1"], ttl=0)], DC1_KEY),
                        ETR1, 4342, T0 + 3)
    again = make_core(store=store, now=T0 + 4)
    [(iid, prefix, site, _, _)] = list(again.registrations())
    assert (iid, str(prefix), site) == (42, "10.10.0.5/32", "dc2")


def test_file_store_round_trip(tmp_path):
    store = FileStore(str(tmp_path))
    core = make_core(store=store)
    populate(core)
    store.close()
    again = make_core(store=FileStore(str(tmp_path)), now=T0 + 120)
    assert answers(again) == answers(core)
    assert list(again.subscriptions()) == list(core.subscriptions())


def test_torn_journal_tail_is_dropped_and_appending_continues(tmp_path):
    store = FileStore(str(tmp_path))
    core = make_core(store=store)
    populate(core)
    store.close()
    journal = tmp_path / "journal-0.msgpack"
    whole = journal.read_bytes()
    torn = store_format.frame(msgpack.packb({"t": "reg", "iid": 0, "net": "10.1.0.0/16", "etr": "x",
                                             "rec": b"\x00" * 40}))
    journal.write_bytes(whole + torn[: len(torn) // 2])  # killed in the middle of a write
    store = FileStore(str(tmp_path))
    again = make_core(store=store, now=T0 + 1)
    assert store.repaired_bytes == len(torn) // 2
    assert journal.read_bytes() == whole
    assert answers(again) == answers(core)
    again.handle_control(packets.map_register([packets.record("10.2.0.0/16", ["198.18.2.1"])], DC2_KEY), ETR2, 4342,
                         T0 + 2)
    store.close()
    third = make_core(store=FileStore(str(tmp_path)), now=T0 + 3)
    assert third.registration_count == again.registration_count == 3


def test_compaction_writes_a_snapshot_and_starts_a_new_journal(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_mod, "COMPACT_MIN_ENTRIES", 5)
    store = FileStore(str(tmp_path))
    core = make_core(store=store)
    for second in range(6):  # changes of one registration: the journal grows, the state does not
        rloc = "198.18.1.1" if second % 2 else "198.18.1.2"  # (identical refreshes would journal nothing)
        core.handle_control(packets.map_register([packets.record("10.1.0.0/16", [rloc])], DC1_KEY),
                            ETR1, 4342, T0 + second)
    core.handle_timer(T0 + 6)
    assert core.counters["store.snapshots"] == 1
    assert sorted(os.listdir(tmp_path)) == ["journal-1.msgpack", "snapshot.msgpack"]  # made before the rename
    core.handle_control(packets.map_register([packets.record("10.2.0.0/16", ["198.18.2.1"])], DC2_KEY), ETR2, 4342,
                        T0 + 7)
    assert sorted(os.listdir(tmp_path)) == ["journal-1.msgpack", "snapshot.msgpack"]
    store.close()
    again = make_core(store=FileStore(str(tmp_path)), now=T0 + 8)
    assert again.registration_count == 2
    assert again.next_deadline() == T0 + 5 + 180


def test_stale_journal_and_temp_file_from_a_crash_during_compaction_are_ignored(tmp_path):
    store = FileStore(str(tmp_path))
    core = make_core(store=store)
    populate(core)
    stale = (tmp_path / "journal-0.msgpack").read_bytes()
    store.snapshot(core.state_entries())  # generation 1
    store.close()
    (tmp_path / "journal-0.msgpack").write_bytes(stale + stale)  # as if the unlink never happened
    (tmp_path / "snapshot.msgpack.tmp").write_bytes(b"half a snapshot")
    again = make_core(store=FileStore(str(tmp_path)), now=T0 + 120)
    assert answers(again) == answers(core)
    assert not (tmp_path / "journal-0.msgpack").exists()


def test_unreadable_snapshot_is_a_clear_error(tmp_path):
    (tmp_path / "snapshot.msgpack").write_bytes(b"\xc1 not msgpack")
    with pytest.raises(StoreError, match="snapshot"):
        FileStore(str(tmp_path)).load()


def test_bad_entries_are_counted_not_fatal():
    store = MemoryStore(journal=[{"t": "reg", "iid": 0}, {"t": "what"}, {"t": "reg", "iid": 0, "net": "10.1.0.0/16",
                                                                          "etr": "e", "rec": b"junk"}])
    core = make_core(store=store)
    assert core.registration_count == 0
    assert core.counters["restore.bad_entries"] == 2
    assert core.counters["restore.unknown_entries"] == 1


def test_one_message_is_one_durable_write_whatever_it_changes():
    store = MemoryStore()
    core = make_core(store=store)
    records = [packets.record(f"10.10.{i}.0/24", ["198.18.1.1"], iid=42) for i in range(50)]
    core.handle_control(packets.map_register(records, DC1_KEY), ETR1, 4342, T0)
    assert (store.appends, len(store.journal)) == (1, 50)


def test_expiry_costs_no_write_and_still_holds_after_a_restart():
    store = MemoryStore()
    core = make_core(store=store)
    core.handle_control(packets.map_register([packets.record("10.1.0.0/16", ["198.18.1.1"])], DC1_KEY), ETR1, 4342,
                        T0)
    writes = store.appends
    core.handle_timer(T0 + 180)
    assert core.registration_count == 0 and store.appends == writes
    assert make_core(store=store, now=T0 + 181).registration_count == 0


def test_a_snapshot_of_encoded_entries_is_the_same_file_as_of_dicts(tmp_path):
    entries = [{"t": "reg", "n": n, "b": n.to_bytes(4, "big"), "f": n / 3} for n in range(70000)]  # > 65535: a 32-bit array
    as_dicts, as_bytes = FileStore(str(tmp_path / "a")), FileStore(str(tmp_path / "b"))
    as_dicts.snapshot(entries)
    as_bytes.snapshot([msgpack.packb(e, use_bin_type=True) if e["n"] % 2 else e for e in entries])
    written = (tmp_path / "a" / "snapshot.msgpack").read_bytes()
    assert written == (tmp_path / "b" / "snapshot.msgpack").read_bytes()
    payload = msgpack.packb(entries, use_bin_type=True)
    assert written == store_format.snapshot_header(1, payload) + payload
