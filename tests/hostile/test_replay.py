"""Replay: captured Map-Registers resent byte for byte, and Map-Replies from where no request went.

Map-Server side (in-process, the real `MapServer`): a replayed Map-Register must not revert an RLOC
change, pull a moved workload back, withdraw a re-registered EID, or make the replayer an ETR.
Our xTR's Map-Registers are used as it sends them (sequenced nonces); third-party ETRs are played
with constant (OOR-like zero or fixed) and random nonces.  What legitimate ETRs do (byte-identical
refreshes, an RLOC change, a flap back, a new source that is one of the registered RLOCs) still works.

xTR side: a Map-Reply is taken only from the Map-Resolver asked or from an RLOC of the record it
carries, and only for records covering the EID asked; what is refused is counted and the request
stays pending, so the real answer still lands.
"""

from __future__ import annotations

import ipaddress
import itertools
import random

import pytest
import yaml

from lisp_ryu import config as lisp_config
from lisp_ryu.config import EidPrefixConfig, MapServerConfig, SiteConfig
from lisp_ryu.effects import SendControl
from lisp_ryu.mapserver import MapServer
from lisp_ryu.wire import EncapsulatedControlMessage, Locator, MapNotify, MappingRecord, MapReply, \
    MapRequest, decode_message
from lisp_ryu.wire.prefix import EidPrefix
from lisp_ryu.xtr.core import XtrCore
from support import packets

ip = ipaddress.ip_address
T0 = 1_700_000_000.0
KEY_A, KEY_B = "site-a-key", "site-b-key"
ETR_A, ETR_A2, ETR_B = ip("198.18.1.1"), ip("198.18.1.5"), ip("198.18.2.1")
ATTACKER = ip("203.0.113.66")
ITR = ip("198.18.9.9")


def ms_config() -> MapServerConfig:
    """Site a owns 10.1.0.0/16; both sites accept host routes of 10.10.0.0/16 (iid 42): workloads move."""
    net = ipaddress.ip_network
    sites = (
        SiteConfig("a", KEY_A, (EidPrefixConfig(net("10.1.0.0/16"), 0, False),
                                EidPrefixConfig(net("10.10.0.0/16"), 42, True))),
        SiteConfig("b", KEY_B, (EidPrefixConfig(net("10.2.0.0/16"), 0, False),
                                EidPrefixConfig(net("10.10.0.0/16"), 42, True))),
    )
    return MapServerConfig(sites=sites, notify_retries=3, notify_retry_interval=1.0, registration_ttl=180.0,
                           rate_limit_per_source=1_000_000.0)


def make_ms() -> MapServer:
    counter = itertools.count(0x5000)
    return MapServer(ms_config(), nonces=lambda: next(counter), now=T0)


def rlocs(ms: MapServer, address: str, iid: int = 0) -> list[str]:
    return sorted(str(loc.address) for loc in ms.lookup(iid, ip(address)).locators)


def etrs_of(ms: MapServer, prefix: str) -> list[tuple[str, str]]:
    """(etr key, source) of each ETR registered for `prefix`."""
    for _, net, _, _, etrs in ms.registrations():
        if str(net) == prefix:
            return sorted((e.etr, str(e.source)) for e in etrs)
    return []


def refused(ms: MapServer) -> int:
    return sum(n for name, n in ms.counters.items() if name.startswith("rejected.map_register")
               or name.startswith("rejected.map_register_record"))


def our_xtr(name: str, rloc: str, now_hosts: str = "") -> XtrCore:
    """Our xTR as a site-a ETR with one RLOC: its Map-Registers are what the replayer captures."""
    doc = yaml.safe_load(f"""
xtrs:
  - name: {name}
    dpid: 1
    rlocs: [{{address: {rloc}}}]
    tunnel_port: 100
    eid_prefixes: [{{prefix: 10.1.0.0/16, iid: 0}}]
    map_servers: [{{address: 198.18.0.2, key: {KEY_A}}}]
    {now_hosts}
""")
    counter = itertools.count(1000)
    return XtrCore(lisp_config.parse(doc).xtrs[0], nonces=lambda: next(counter))


def register_payload(effects) -> bytes:
    [send] = [e for e in effects if isinstance(e, SendControl) and e.what.startswith("Map-Register")]
    return send.payload


# --------------------------------------------------------------------------- (a) RLOC change


def test_replay_of_our_xtr_register_does_not_revert_an_rloc_change():
    ms = make_ms()
    old = register_payload(our_xtr("a1", str(ETR_A)).start(10.0))
    ms.handle_control(old, ETR_A, 4342, T0)
    assert rlocs(ms, "10.1.0.1") == [str(ETR_A)]
    # The same xTR (same xTR-ID) comes back with a new RLOC and registers from it.
    new = register_payload(our_xtr("a1", str(ETR_A2)).start(70.0))
    ms.handle_control(new, ETR_A2, 4342, T0 + 60)
    assert rlocs(ms, "10.1.0.1") == [str(ETR_A2)]
    # The old message again, from the old RLOC (spoofed or not) and from a third party.
    for source in (ETR_A, ATTACKER):
        assert ms.handle_control(old, source, 4342, T0 + 120) == []
        assert rlocs(ms, "10.1.0.1") == [str(ETR_A2)]
        assert etrs_of(ms, "10.1.0.0/16")[0][1] == str(ETR_A2)
    assert refused(ms) == 2


def test_replay_of_a_third_party_register_from_another_address_does_not_revert_an_rloc_change():
    """Constant nonces (OOR-like): the replay is caught by where it comes from."""
    ms = make_ms()
    old = packets.map_register([packets.record("10.1.0.0/16", [str(ETR_A)])], KEY_A, xtr_id=7, nonce=0)
    ms.handle_control(old, ETR_A, 4342, T0)
    new = packets.map_register([packets.record("10.1.0.0/16", [str(ETR_A2)])], KEY_A, xtr_id=7, nonce=0)
    ms.handle_control(new, ETR_A2, 4342, T0 + 60)
    assert ms.handle_control(old, ATTACKER, 4342, T0 + 120) == []
    assert rlocs(ms, "10.1.0.1") == [str(ETR_A2)]


def test_replay_of_a_random_nonce_register_from_the_etr_address_does_not_revert_an_rloc_change():
    """Random nonces: the old message is known as one already superseded."""
    ms = make_ms()
    rng = random.Random(5)
    old = packets.map_register([packets.record("10.1.0.0/16", [str(ETR_A)])], KEY_A, xtr_id=7,
                               nonce=rng.getrandbits(64))
    ms.handle_control(old, ETR_A, 4342, T0)
    new = packets.map_register([packets.record("10.1.0.0/16", [str(ETR_A2)])], KEY_A, xtr_id=7,
                               nonce=rng.getrandbits(64))
    ms.handle_control(new, ETR_A, 4342, T0 + 60)
    assert ms.handle_control(old, ETR_A, 4342, T0 + 120) == []
    assert rlocs(ms, "10.1.0.1") == [str(ETR_A2)]


# --------------------------------------------------------------------------- (b) a moved workload


@pytest.mark.parametrize("nonce", ["ours", "constant"])
def test_replay_does_not_pull_a_moved_workload_back(nonce):
    ms = make_ms()
    nonces = itertools.count((0x4C5 << 52) + 1) if nonce == "ours" else itertools.repeat(0)
    host = packets.record("10.10.0.5/32", [str(ETR_A)], iid=42)
    site = packets.record("10.1.0.0/16", [str(ETR_A)])
    before_move = packets.map_register([site, host], KEY_A, xtr_id=7, nonce=next(nonces))
    ms.handle_control(before_move, ETR_A, 4342, T0)
    moved = packets.map_register([packets.record("10.10.0.5/32", [str(ETR_B)], iid=42)], KEY_B, xtr_id=8)
    ms.handle_control(moved, ETR_B, 4342, T0 + 5)
    assert rlocs(ms, "10.10.0.5", iid=42) == [str(ETR_B)]
    # Site a has not registered since: the captured message is its latest one, and still moves nothing.
    for source in (ETR_A, ATTACKER):
        ms.handle_control(before_move, source, 4342, T0 + 10)
        assert rlocs(ms, "10.10.0.5", iid=42) == [str(ETR_B)]
    # Site a's next register (without the host route), then the replay again.
    ms.handle_control(packets.map_register([site], KEY_A, xtr_id=7, nonce=next(nonces)), ETR_A, 4342, T0 + 60)
    ms.handle_control(before_move, ETR_A, 4342, T0 + 70)
    assert rlocs(ms, "10.10.0.5", iid=42) == [str(ETR_B)]
    assert rlocs(ms, "10.1.0.1") == [str(ETR_A)]  # site a itself stays registered
    assert ms.counters["registrations.moved"] == 1


# --------------------------------------------------------------------------- (c) a withdrawal


@pytest.mark.parametrize("nonce", ["ours", "random"])
def test_replayed_withdrawal_does_not_withdraw_a_re_registered_eid(nonce):
    ms = make_ms()
    rng = random.Random(9)
    nonces = itertools.count((0x4C5 << 52) + 1) if nonce == "ours" else iter(lambda: rng.getrandbits(64), None)
    live = packets.record("10.1.0.0/16", [str(ETR_A)])
    gone = packets.record("10.1.0.0/16", [str(ETR_A)], ttl=0)
    ms.handle_control(packets.map_register([live], KEY_A, xtr_id=7, nonce=next(nonces)), ETR_A, 4342, T0)
    withdrawal = packets.map_register([gone], KEY_A, xtr_id=7, nonce=next(nonces))
    ms.handle_control(withdrawal, ETR_A, 4342, T0 + 10)
    assert ms.registration_count == 0
    ms.handle_control(packets.map_register([live], KEY_A, xtr_id=7, nonce=next(nonces)), ETR_A, 4342, T0 + 20)
    for source in (ETR_A, ATTACKER):
        ms.handle_control(withdrawal, source, 4342, T0 + 30)
        assert rlocs(ms, "10.1.0.1") == [str(ETR_A)]


def test_withdrawal_by_xtr_id_from_another_address_is_refused():
    ms = make_ms()
    ms.handle_control(packets.map_register([packets.record("10.1.0.0/16", [str(ETR_A)])], KEY_A, xtr_id=7),
                      ETR_A, 4342, T0)
    # A withdrawal the ETR once sent (nonce 0, never re-sent since), replayed from elsewhere.
    withdrawal = packets.map_register([packets.record("10.1.0.0/16", [str(ETR_A)], ttl=0)], KEY_A, xtr_id=7,
                                      nonce=0)
    ms.handle_control(withdrawal, ATTACKER, 4342, T0 + 10)
    assert rlocs(ms, "10.1.0.1") == [str(ETR_A)]
    ms.handle_control(withdrawal, ETR_A, 4342, T0 + 20)  # from the ETR itself it withdraws
    assert ms.registration_count == 0


# --------------------------------------------------------------------------- (d) a third-party address


@pytest.mark.parametrize("xtr_id", [7, None])
def test_replay_from_a_third_party_address_does_not_make_it_an_etr(xtr_id):
    ms = make_ms()
    message = packets.map_register([packets.record("10.1.0.0/16", [str(ETR_A)])], KEY_A, xtr_id=xtr_id,
                                   want_notify=True)
    ms.handle_control(message, ETR_A, 4342, T0)
    before = etrs_of(ms, "10.1.0.0/16")
    assert ms.handle_control(message, ATTACKER, 4342, T0 + 30) == []  # no Map-Notify to the replayer either
    assert etrs_of(ms, "10.1.0.0/16") == before
    # A forwarded (non-proxy) Map-Request still goes to the ETR.
    [forwarded] = ms.handle_control(packets.map_request_ecm("10.1.2.3", [ITR], nonce=99), ITR, 4342, T0 + 31)
    assert forwarded.destination == ETR_A


# --------------------------------------------------------------------------- what legitimate ETRs do


@pytest.mark.parametrize("nonce", [0, 1])
def test_byte_identical_refreshes_keep_a_constant_nonce_etr_registered(nonce):
    ms = make_ms()
    message = packets.map_register([packets.record("10.1.0.0/16", [str(ETR_A)])], KEY_A, nonce=nonce,
                                   want_notify=True)
    for minute in range(5):
        effects = ms.handle_control(message, ETR_A, 4342, T0 + 60 * minute)
        assert [type(decode_message(e.payload)) for e in effects] == [MapNotify]
    ms.handle_timer(T0 + 4 * 60 + 179)
    assert ms.registration_count == 1
    assert refused(ms) == 0


def test_legitimate_changes_and_flaps_of_third_party_etrs_are_accepted():
    ms = make_ms()
    rng = random.Random(3)
    r1 = [packets.record("10.1.0.0/16", [str(ETR_A)])]
    r2 = [packets.record("10.1.0.0/16", [str(ETR_A2)])]
    # Constant nonce, no xTR-ID: an RLOC change and a flap back, from the ETR's address.
    for records, now in ((r1, T0), (r2, T0 + 60), (r1, T0 + 120)):
        ms.handle_control(packets.map_register(records, KEY_A, nonce=0), ETR_A, 4342, now)
        assert rlocs(ms, "10.1.0.1") == [str(records[0].locators[0].address)]
    # Random nonces with an xTR-ID, the ETR moving to its new RLOC address and back.
    for records, source, now in ((r1, ETR_A, T0 + 130), (r2, ETR_A2, T0 + 190), (r1, ETR_A, T0 + 250)):
        ms.handle_control(packets.map_register(records, KEY_A, xtr_id=9, nonce=rng.getrandbits(64)), source,
                          4342, now)
        assert etrs_of(ms, "10.1.0.0/16")[-1] == (f"xtr:{9:032x}", str(source))
    assert refused(ms) == 0


def test_our_xtr_keeps_registering_across_refreshes_and_a_restart():
    ms = make_ms()
    for start in (0.0, 500.0):  # a controller restart: a new core, later clock
        xtr = our_xtr("a1", str(ETR_A))
        effects = xtr.start(start)
        for step in range(3):
            payload = register_payload(effects)
            [notify] = ms.handle_control(payload, ETR_A, 4342, T0 + start + step)
            effects = xtr.handle_control(notify.payload, ip("198.18.0.2"), 4342, start + step + 0.1)
            effects = xtr.registrar.register(xtr.registrations[0], start + step + 0.5)  # a periodic refresh
    assert refused(ms) == 0
    assert ms.counters["accepted.map_register"] == 6


# --------------------------------------------------------------------------- the xTR and Map-Replies


ITR_CONFIG = """
xtrs:
  - name: itr
    dpid: 1
    rlocs: [{address: 198.18.9.9}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.9.0.0/16, iid: 0}]
    map_servers: [{address: 198.18.0.2, key: k}]
"""
MR = ip("198.18.0.2")


@pytest.fixture
def itr():
    counter = itertools.count(1000)
    return XtrCore(lisp_config.parse(yaml.safe_load(ITR_CONFIG)).xtrs[0], nonces=lambda: next(counter))


def ask(itr, destination: str) -> MapRequest:
    effects = itr.handle_miss(1, 0, ip("10.9.0.10"), ip(destination), b"held", 0.0)
    [send] = [e for e in effects if isinstance(e, SendControl)]
    assert send.destination == MR
    message = decode_message(send.payload)
    assert isinstance(message, EncapsulatedControlMessage)
    return message.message


def reply(request: MapRequest, prefix: str, rloc: str) -> bytes:
    record = MappingRecord.for_prefix(EidPrefix.from_network(ipaddress.ip_network(prefix), 0),
                                      (Locator(ip(rloc)),), ttl=10)
    return MapReply(nonce=request.nonce, records=(record,)).encode()


def cached(itr, address: str):
    return itr.resolver.lookup(0, None, ip(address), 0.5)


def test_map_reply_from_a_third_party_is_refused_and_the_real_one_still_lands(itr):
    request = ask(itr, "10.1.2.3")
    # Whoever learnt the nonce sends the traffic elsewhere (here: to another site's ETR).
    assert itr.handle_control(reply(request, "10.1.0.0/16", str(ETR_B)), ATTACKER, 4342, 0.1) == []
    assert cached(itr, "10.1.2.3") is None
    assert itr.counters["map_reply_refused_source"] == 1
    effects = itr.handle_control(reply(request, "10.1.0.0/16", str(ETR_A)), MR, 4342, 0.2)
    assert [str(loc.address) for loc in cached(itr, "10.1.2.3").value.record.locators] == [str(ETR_A)]
    assert any(getattr(e, "data", None) == b"held" for e in effects)


def test_map_reply_from_the_etr_listed_in_its_record_is_accepted(itr):
    """A Map-Server forwarding the request (no proxy reply): the ETR answers from its own RLOC."""
    request = ask(itr, "10.1.2.3")
    itr.handle_control(reply(request, "10.1.0.0/16", str(ETR_A)), ETR_A, 4342, 0.1)
    assert cached(itr, "10.1.2.3").value.source == str(ETR_A)


def test_map_reply_for_a_prefix_not_covering_the_request_is_refused(itr):
    request = ask(itr, "10.1.2.3")
    itr.handle_control(reply(request, "10.2.0.0/16", str(ETR_B)), MR, 4342, 0.1)
    assert cached(itr, "10.2.0.1") is None and cached(itr, "10.1.2.3") is None
    assert itr.counters["map_reply_refused_prefix"] == 1
    itr.handle_control(reply(request, "10.1.0.0/16", str(ETR_A)), MR, 4342, 0.2)
    assert cached(itr, "10.1.2.3") is not None


def test_map_reply_for_a_prefix_the_etr_does_not_list_itself_in_is_refused(itr):
    request = ask(itr, "10.1.2.3")
    itr.handle_control(reply(request, "10.1.0.0/16", str(ATTACKER)), ETR_A, 4342, 0.1)
    assert cached(itr, "10.1.2.3") is None
    assert itr.counters["map_reply_refused_source"] == 1


# --------------------------------------------------------------------------- across a restart


def test_anti_replay_holds_across_a_map_server_restart():
    """The journal keeps each registration's last nonce ("n"): a replay after a restart is still refused."""
    from lisp_ryu.mapserver import MemoryStore

    store = MemoryStore()
    counter = itertools.count(0x5000)
    ms = MapServer(ms_config(), nonces=lambda: next(counter), now=T0, store=store)
    nonces = itertools.count((0x4C5 << 52) + 1)
    old = packets.map_register([packets.record("10.1.0.0/16", [str(ETR_A)])], KEY_A, xtr_id=7, nonce=next(nonces))
    ms.handle_control(old, ETR_A, 4342, T0)
    new = packets.map_register([packets.record("10.1.0.0/16", [str(ETR_A2)])], KEY_A, xtr_id=7,
                               nonce=next(nonces))
    ms.handle_control(new, ETR_A2, 4342, T0 + 60)
    restarted = MapServer(ms_config(), nonces=lambda: next(counter), now=T0 + 90, store=store)
    assert restarted.handle_control(old, ETR_A, 4342, T0 + 100) == []
    assert rlocs(restarted, "10.1.0.1") == [str(ETR_A2)]
    assert restarted.counters["rejected.map_register.stale-nonce"] == 1


def test_registrations_journalled_without_a_nonce_still_load():
    from lisp_ryu.mapserver import MemoryStore

    store = MemoryStore()
    ms = MapServer(ms_config(), nonces=itertools.count(1).__next__, now=T0, store=store)
    ms.handle_control(packets.map_register([packets.record("10.1.0.0/16", [str(ETR_A)])], KEY_A, xtr_id=7),
                      ETR_A, 4342, T0)
    [entry] = [e for e in ms.state_entries() if e["t"] == "reg"]
    assert entry["n"] == 1
    del entry["n"]  # as written before the key existed
    old_store = MemoryStore()
    old_store.append([entry])
    restarted = MapServer(ms_config(), nonces=itertools.count(1).__next__, now=T0 + 1, store=old_store)
    assert rlocs(restarted, "10.1.0.1") == [str(ETR_A)]
    # Refreshes and changes from the ETR go on as before.
    restarted.handle_control(packets.map_register([packets.record("10.1.0.0/16", [str(ETR_A2)])], KEY_A, xtr_id=7,
                                                  nonce=5), ETR_A, 4342, T0 + 60)
    assert rlocs(restarted, "10.1.0.1") == [str(ETR_A2)]


def test_an_etr_splitting_its_prefixes_over_several_messages_may_resend_an_older_one():
    """Random nonces, one message per prefix: resending an earlier one (a retransmission) only refreshes."""
    ms = make_ms()
    rng = random.Random(11)
    one = packets.map_register([packets.record("10.1.0.0/16", [str(ETR_A)])], KEY_A, xtr_id=7,
                               nonce=rng.getrandbits(64))
    two = packets.map_register([packets.record("10.10.0.9/32", [str(ETR_A)], iid=42)], KEY_A, xtr_id=7,
                               nonce=rng.getrandbits(64))
    for message, now in ((one, T0), (two, T0 + 1), (one, T0 + 2)):
        ms.handle_control(message, ETR_A, 4342, now)
    assert refused(ms) == 0 and ms.registration_count == 2
