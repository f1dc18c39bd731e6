"""The Map-Server's fast path answers exactly as the full path does, and is taken where it should be.

Two cores get the same registrations, static mappings and rules; one answers
with the fast path (the default), the other decodes every request in full.
Every request must produce the same datagrams to the same place and the
same counters, whether it went through `handle_control` or the server
loop's `reply_quickly`.
"""

from __future__ import annotations

import ipaddress

import pytest

from lisp_ryu.mapping.policy import Rule, StaticMapping
from lisp_ryu.wire import MapReply, decode_message

from mapserver_helpers import DC1_KEY, DC2_KEY, ETR1, ETR2, ITR, T0, make_core, site_config
from support import packets

ITR6 = ipaddress.ip_address("2001:db8:ff::9")
REQUESTS = [  # (EID, instance-ID, ITR-RLOC, source EID)
    ("10.1.2.3", 0, ITR, None),  # registered /16, proxy reply
    ("10.1.2.3", 0, ITR6, None),  # answered to an IPv6 ITR-RLOC
    ("10.2.0.9", 0, ITR, None),  # registered without proxy: forwarded to the ETR
    ("10.10.0.5", 42, ITR, "10.10.0.9"),  # a host route in instance 42, source EID in an IID LCAF
    ("10.10.0.6", 42, ITR, None),  # inside the configured range, not registered: negative
    ("10.3.0.1", 0, ITR, None),  # outside every site: negative
    ("2001:db8:1::5", 0, ITR6, None),  # IPv6 EID
    ("192.0.2.5", 0, ITR, None),  # static mapping only
]


def build(quick: bool):
    core = make_core(site_config(rate_limit_per_source=1_000_000.0))
    core.quick_path = quick
    for records, key, source, proxy in [
        ([packets.record("10.1.0.0/16", ["198.18.1.1"]), packets.record("2001:db8:1::/48", ["198.18.1.1"])],
         DC1_KEY, ETR1, True),
        ([packets.record("10.2.0.0/16", ["198.18.2.1", "198.18.2.2"])], DC2_KEY, ETR2, False),
        ([packets.record("10.10.0.5/32", ["198.18.1.1"], iid=42)], DC1_KEY, ETR1, True),
    ]:
        core.handle_control(packets.map_register(records, key, proxy=proxy), source, 4342, T0)
    assert core.registration_count == 4
    core.set_static(StaticMapping.from_dict({"iid": 0, "prefix": "192.0.2.0/24",
                                             "rlocs": [{"address": "198.18.7.1", "priority": 1, "weight": 100}]}), T0)
    return core


def ecm(eid, iid, itr, source_eid, nonce=0x1234):
    return packets.map_request_ecm(eid, [itr], iid=iid, nonce=nonce, source_port=61000, source_eid=source_eid)


def sent(effects):
    return [(str(e.destination), e.port, e.payload) for e in effects]


def through_handle_control(core, payload, itr, now):
    return sent(core.handle_control(payload, itr, 4342, now))


def through_server_loop(core, payload, itr, now):
    """What `StandaloneServer._receive` does: the fast path first, `handle_control` when it declines."""
    quick = core.reply_quickly(payload, itr, now)
    if quick is None:
        return sent(core.handle_control(payload, itr, 4342, now))
    reply, rloc, port = quick
    return [(str(ipaddress.ip_address(rloc)), port, reply)] if reply else []


def answer_all(core, entry, now=T0 + 1):
    return [entry(core, ecm(eid, iid, itr, source, nonce=n), itr, now)
            for n, (eid, iid, itr, source) in enumerate(REQUESTS)]


@pytest.mark.parametrize("entry", [through_handle_control, through_server_loop])
def test_fast_path_answers_and_counts_as_the_full_path(entry):
    quick, full = build(True), build(False)
    assert answer_all(quick, entry) == answer_all(full, through_handle_control)
    assert quick.counters == full.counters
    assert quick.counters["sent.map_reply"] >= 4 and quick.counters["sent.map_request_forwarded"] == 1


def test_fast_path_is_taken_for_registered_eids_only(monkeypatch):
    core = build(True)
    decoded = []
    full_path = core._on_ecm
    monkeypatch.setattr(core, "_on_ecm", lambda payload, *rest: decoded.append(payload) or full_path(payload, *rest))
    answer_all(core, through_handle_control)
    eids = [str(decode_message(p).message.records[0].eid_prefix.address) for p in decoded]
    assert eids == ["10.10.0.6", "10.3.0.1", "192.0.2.5"]  # negatives and the static mapping


def test_a_change_of_the_registration_is_answered_at_once():
    core = build(True)
    first = through_server_loop(core, ecm("10.1.2.3", 0, ITR, None), ITR, T0 + 1)
    core.handle_control(packets.map_register([packets.record("10.1.0.0/16", ["198.18.1.9"])], DC1_KEY, proxy=True),
                        ETR1, 4342, T0 + 2)
    second = through_server_loop(core, ecm("10.1.2.3", 0, ITR, None), ITR, T0 + 3)
    [reply] = [decode_message(payload) for _, _, payload in second]
    assert isinstance(reply, MapReply) and first != second
    assert [str(loc.address) for loc in reply.records[0].locators] == ["198.18.1.9"]


@pytest.mark.parametrize("entry", [through_handle_control, through_server_loop])
def test_with_policy_or_a_more_specific_static_mapping_the_full_path_answers(entry):
    quick, full = build(True), build(False)
    for core in (quick, full):
        core.set_static(StaticMapping.from_dict({"iid": 0, "prefix": "10.1.2.0/24", "rlocs": [
            {"address": "198.18.7.7", "priority": 1, "weight": 100}]}), T0)
    assert answer_all(quick, entry) == answer_all(full, through_handle_control)
    for core in (quick, full):
        core.set_rule(Rule.from_dict({"id": "r", "iid": 0, "destinations": ["10.1.2.0/24", "2001:db8:1::/48"],
                                      "action": "deny"}), T0)
    denied = answer_all(quick, entry, T0 + 2)
    assert denied == answer_all(full, through_handle_control, T0 + 2)
    assert decode_message(denied[0][0][2]).records[0].locators == ()  # the rule shaped the answer
    assert quick.counters == full.counters


def test_the_rate_limit_applies_to_fast_path_answers():
    quick, full = build(True), build(False)
    for core in (quick, full):
        core.limiter = type(core.limiter)(rate=1.0, burst=3)
    payload = ecm("10.1.2.3", 0, ITR, None)
    answers = [through_server_loop(quick, payload, ITR, T0 + 1) for _ in range(5)]
    assert [len(a) for a in answers] == [1, 1, 1, 0, 0]
    assert answers == [through_handle_control(full, payload, ITR, T0 + 1) for _ in range(5)]
    assert quick.counters == full.counters and quick.counters["dropped.rate_limited"] == 2


@pytest.mark.parametrize("with_rule", [False, True])
def test_a_restored_server_knows_its_policy_and_static_mappings_before_answering_fast(with_rule):
    from lisp_ryu.mapserver import MemoryStore

    store = MemoryStore()
    first = make_core(site_config(rate_limit_per_source=1_000_000.0), store=store)
    first.handle_control(packets.map_register([packets.record("10.1.0.0/16", ["198.18.1.1"])], DC1_KEY, proxy=True),
                         ETR1, 4342, T0)
    first.set_static(StaticMapping.from_dict({"iid": 0, "prefix": "10.1.2.0/24", "rlocs": [
        {"address": "198.18.7.7", "priority": 1, "weight": 100}]}), T0)
    if with_rule:
        first.set_rule(Rule.from_dict({"id": "r", "iid": 0, "destinations": ["10.1.3.0/24"], "action": "deny"}), T0)
    restored = make_core(site_config(rate_limit_per_source=1_000_000.0), store=store)
    denied = [] if with_rule else ["198.18.1.1"]
    for eid, rlocs in (("10.1.2.3", ["198.18.7.7"]), ("10.1.3.3", denied), ("10.1.4.4", ["198.18.1.1"])):
        [(_, _, payload)] = through_server_loop(restored, ecm(eid, 0, ITR, None), ITR, T0 + 1)
        assert [str(loc.address) for loc in decode_message(payload).records[0].locators] == rlocs, eid


def test_the_loop_peer_addresses_are_the_addresses_the_core_knows():
    """The server loop hands the core senders hashed once (`peer_address`): equal to, and hashed as,
    `ipaddress` addresses, so a sender's rate-limit bucket is one whichever path charged it."""
    from lisp_ryu.glue.mapserver_loop import peer_address

    for text in ("198.18.1.9", "127.0.0.1", "2001:db8:ff::9", "::1"):
        peer, plain = peer_address(text), ipaddress.ip_address(text)
        assert peer == plain and hash(peer) == hash(plain) and str(peer) == text and peer.packed == plain.packed
        assert {plain: 1}[peer] == 1 and {peer: 1}[plain] == 1
    core = build(True)
    core.limiter = type(core.limiter)(rate=1.0, burst=3)
    payload = ecm("10.1.2.3", 0, ITR, None)
    assert through_handle_control(core, payload, ITR, T0 + 1)  # charged to ITR as `ipaddress` makes it
    peer = peer_address(str(ITR))
    answers = [through_server_loop(core, payload, peer, T0 + 1) for _ in range(3)]
    assert [len(a) for a in answers] == [1, 1, 0]  # the same bucket: 3 tokens in all
