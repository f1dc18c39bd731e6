"""The xTR core as a state machine: real codec bytes in, effects out, time injected."""

import ipaddress
import itertools

import pytest

from lisp_ryu import config
from lisp_ryu.effects import DataplaneChanged, PacketOut, RegisterChanges, SendControl
from lisp_ryu.plan import RemoteAction, RemoteEntry, Rloc
from lisp_ryu.wire import auth
from lisp_ryu.wire.prefix import EidPrefix
from lisp_ryu.wire.ecm import EncapsulatedControlMessage
from lisp_ryu.wire.control import decode_message
from lisp_ryu.wire.messages import MapNotify, MapNotifyAck, MapRegister, MapReply, MapRequest
from lisp_ryu.wire.records import Action, Locator, MappingRecord, MapRequestRecord
from lisp_ryu.xtr import mobility as xtr_mobility
from lisp_ryu.xtr.core import XtrCore
from support.effects import as_the_glue_runs

ip = ipaddress.ip_address
MS = ip("198.18.0.2")
RLOC = ip("198.18.1.2")
KEY = "s3cret"

CONFIG = """
xtrs:
  - name: dc1
    dpid: 1
    rlocs: [{address: 198.18.1.2}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}]
    map_servers: [{address: 198.18.0.2, key: s3cret}]
    gateways: [{subnet: 10.1.0.0/16, ip: 10.1.0.1, mac: "02:00:00:00:01:01", iid: 42}]
    hosts: [{ip: 10.1.0.10, mac: "02:00:00:01:00:0a", port: 1, iid: 42}]
    dynamic_eid_prefixes: [{prefix: 10.0.0.0/8, iid: 42}]
"""


@pytest.fixture
def xtr():
    import yaml

    cfg = config.parse(yaml.safe_load(CONFIG)).xtrs[0]
    counter = itertools.count(1000)
    return XtrCore(cfg, nonces=lambda: next(counter))


def sends(effects):
    return [e for e in effects if isinstance(e, SendControl)]


def requests(effects):
    return [e for e in sends(effects) if e.what.startswith("Map-Request")]


def test_start_registers_signed_with_want_map_notify(xtr):
    effects = xtr.start(0.0)
    assert isinstance(effects[0], DataplaneChanged)
    (send,) = sends(effects)
    assert (send.destination, send.port) == (MS, 4342)
    reg = decode_message(send.payload)
    assert isinstance(reg, MapRegister) and reg.want_map_notify
    assert auth.verify(send.payload, KEY)
    (record,) = reg.records
    assert str(record.eid_prefix) == "[42]10.1.0.0/16"
    assert [loc.address for loc in record.locators] == [RLOC]
    assert reg.xtr_id == xtr.xtr_id


def notify_for(payload, key=KEY):
    reg = decode_message(payload)
    notify = MapNotify(nonce=reg.nonce, records=reg.records, xtr_id=reg.xtr_id, site_id=reg.site_id)
    return auth.sign(notify, key, 1).encode()


def test_register_retries_with_backoff_until_notify_then_waits_interval(xtr):
    first = sends(xtr.start(0.0))[0]
    assert xtr.next_deadline() == pytest.approx(1.0)
    second = sends(xtr.handle_timer(1.0))[0]
    assert xtr.next_deadline() == pytest.approx(3.0)  # backed off to 2 s
    assert decode_message(second.payload).nonce != decode_message(first.payload).nonce
    assert xtr.handle_control(notify_for(second.payload), MS, 4342, 1.5) == []
    assert xtr.registrations[0].registered
    assert xtr.next_deadline() == pytest.approx(61.5)


def test_notify_with_bad_key_is_rejected_and_counted(xtr):
    send = sends(xtr.start(0.0))[0]
    xtr.handle_control(notify_for(send.payload, key="wrong"), MS, 4342, 0.5)
    assert not xtr.registrations[0].registered
    assert xtr.counters["map_notify_bad_auth"] == 1


def miss(xtr, dst="10.2.0.20", now=0.0, data=b"packet"):
    return xtr.handle_miss(1, 42, ip("10.1.0.10"), ip(dst), data, now)


def request_of(send):
    ecm = decode_message(send.payload)
    assert isinstance(ecm, EncapsulatedControlMessage)
    return ecm, ecm.message


def reply_for(request, prefix="10.2.0.0/16", locators=(Locator(ip("198.18.2.2")),), ttl=10, action=Action.NO_ACTION):
    record = MappingRecord.for_prefix(EidPrefix.from_network(prefix, 42), locators, ttl=ttl, action=action)
    return MapReply(nonce=request.nonce, records=(record,)).encode()


def test_miss_sends_ecm_map_request_and_holds_packets(xtr):
    (send,) = sends(miss(xtr, data=b"p1"))
    assert miss(xtr, data=b"p2") == []  # second packet is held, no second request
    ecm, request = request_of(send)
    assert (send.destination, ecm.inner_source, ecm.inner_destination) == (MS, RLOC, ip("10.2.0.20"))
    assert str(request.records[0].eid_prefix) == "[42]10.2.0.20/32"
    assert request.itr_rlocs == (RLOC,)
    assert str(EidPrefix.from_wire(32, request.source_eid)) == "[42]10.1.0.10/32"
    effects = xtr.handle_control(reply_for(request), MS, 4342, 0.2)
    assert isinstance(effects[0], DataplaneChanged)
    assert [e.data for e in effects if isinstance(e, PacketOut)] == [b"p1", b"p2"]
    (remote,) = xtr.plan().remotes
    assert (str(remote.prefix), remote.action, remote.rlocs[0].address) == ("10.2.0.0/16", RemoteAction.ENCAP,
                                                                           ip("198.18.2.2"))


def test_reply_covering_other_pending_destinations_releases_them(xtr):
    (a,) = sends(miss(xtr, "10.2.0.20", data=b"a"))
    (b,) = sends(miss(xtr, "10.2.0.30", data=b"b"))
    effects = xtr.handle_control(reply_for(request_of(a)[1]), MS, 4342, 0.1)
    assert [e.data for e in effects if isinstance(e, PacketOut)] == [b"a", b"b"]
    # b's own reply is still expected by its nonce, and re-injects nothing twice.
    later = xtr.handle_control(reply_for(request_of(b)[1]), MS, 4342, 0.2)
    assert [e for e in later if isinstance(e, PacketOut)] == []
    assert xtr.resolutions == {}
    # A reply nobody asked for is ignored and counted.
    assert xtr.handle_control(reply_for(request_of(b)[1]), MS, 4342, 0.3) == []
    assert xtr.counters["map_reply_unknown_nonce"] == 1


def test_lost_replies_retry_then_give_up_with_hold_down(xtr):
    miss(xtr)
    assert len(requests(xtr.handle_timer(1.0))) == 1
    assert len(requests(xtr.handle_timer(2.0))) == 1
    assert requests(xtr.handle_timer(3.0)) == []
    assert xtr.counters["resolution_failed"] == 1
    assert miss(xtr, now=4.0) == []  # hold-down: no request storm
    assert len(sends(miss(xtr, now=8.5))) == 1


def test_ipv6_destination_with_ipv4_rlocs_uses_the_host_as_inner_source(xtr):
    (send,) = sends(xtr.handle_miss(1, 42, ip("2001:db8:1::10"), ip("2001:db8:2::20"), b"v6", 0.0))
    ecm, request = request_of(send)
    assert ecm.inner_source == ip("2001:db8:1::10") and request.itr_rlocs == (RLOC,)


def test_negative_reply_becomes_negative_entry_with_its_action(xtr):
    (send,) = sends(miss(xtr, "10.9.0.1"))
    xtr.handle_control(reply_for(request_of(send)[1], "10.8.0.0/13", (), 1, Action.DROP_POLICY_DENIED), MS, 4342, 0)
    (remote,) = xtr.plan().remotes
    assert remote.action is RemoteAction.DROP and str(remote.prefix) == "10.8.0.0/13"


def test_entries_expire_with_their_ttl(xtr):
    (send,) = sends(miss(xtr))
    xtr.handle_control(reply_for(request_of(send)[1], ttl=1), MS, 4342, 10.0)
    assert xtr.next_deadline() <= 70.0
    effects = xtr.handle_timer(70.0)
    assert any(isinstance(e, DataplaneChanged) for e in effects)
    assert xtr.plan().remotes == ()


def test_publication_updates_cache_and_is_acknowledged(xtr):
    (send,) = sends(miss(xtr))
    xtr.handle_control(reply_for(request_of(send)[1]), MS, 4342, 0.0)
    moved = MappingRecord.for_prefix(EidPrefix.from_network("10.2.0.0/16", 42), (Locator(ip("198.18.3.2")),))
    notify = auth.sign(MapNotify(nonce=777, records=(moved,), xtr_id=xtr.xtr_id, site_id=xtr.site_id), KEY, 1)
    effects = xtr.handle_control(notify.encode(), MS, 4342, 1.0)
    assert isinstance(effects[0], DataplaneChanged)
    (ack_send,) = sends(effects)
    ack = decode_message(ack_send.payload)
    assert isinstance(ack, MapNotifyAck) and ack.nonce == 777 and auth.verify(ack_send.payload, KEY)
    assert xtr.plan().remotes[0].rlocs[0].address == ip("198.18.3.2")


def test_forwarded_request_is_answered_by_the_etr_at_the_inner_source_port(xtr):
    request = MapRequest(nonce=5, records=(MapRequestRecord.for_prefix(EidPrefix.from_network("10.1.0.10/32", 42)),),
                         itr_rlocs=(ip("198.18.2.2"),))
    ecm = EncapsulatedControlMessage(message=request, inner_source=ip("198.18.2.2"),
                                     inner_destination=ip("10.1.0.10"), inner_source_port=40000)
    (send,) = sends(xtr.handle_control(ecm.encode(), MS, 4342, 0))
    assert (send.destination, send.port) == (ip("198.18.2.2"), 40000)
    reply = decode_message(send.payload)
    assert reply.nonce == 5 and str(reply.records[0].eid_prefix) == "[42]10.1.0.0/16"


def test_rloc_probe_is_answered_with_probe_bit(xtr):
    request = MapRequest(nonce=9, probe=True, itr_rlocs=(ip("198.18.2.2"),),
                         records=(MapRequestRecord.for_prefix(EidPrefix.from_network("10.1.0.0/16", 42)),))
    (send,) = sends(xtr.handle_control(request.encode(), ip("198.18.2.2"), 4342, 0))
    reply = decode_message(send.payload)
    assert reply.probe and reply.records[0].locators[0].local


def test_request_for_foreign_prefix_is_not_answered(xtr):
    request = MapRequest(nonce=9, itr_rlocs=(ip("198.18.2.2"),),
                         records=(MapRequestRecord.for_prefix(EidPrefix.from_network("10.7.0.0/16", 42)),))
    assert xtr.handle_control(request.encode(), MS, 4342, 0) == []


def test_smr_triggers_one_smr_invoked_request_per_hold_down(xtr):
    (send,) = sends(miss(xtr))
    xtr.handle_control(reply_for(request_of(send)[1]), MS, 4342, 0.0)
    smr = MapRequest(nonce=1, smr=True, itr_rlocs=(ip("198.18.2.2"),),
                     records=(MapRequestRecord.for_prefix(EidPrefix.from_network("10.2.0.0/16", 42)),))
    (again,) = sends(xtr.handle_control(smr.encode(), ip("198.18.2.2"), 4342, 1.0))
    assert request_of(again)[1].smr_invoked
    assert sends(xtr.handle_control(smr.encode(), ip("198.18.2.2"), 4342, 1.1)) == []
    assert xtr.counters["smr_rate_limited"] == 1


def test_garbage_is_counted_never_raised(xtr):
    for junk in (b"", b"\x10", b"\xff" * 40, bytes(range(64))):
        assert xtr.handle_control(junk, MS, 4342, 0) == []
    assert xtr.counters["decode_errors"] == 4


def test_adopted_flows_keep_the_data_plane_and_are_re_resolved(xtr):
    from lisp_ryu.flows.compiler import compile_plan
    from lisp_ryu.flows.readback import remotes_installed

    entry = RemoteEntry(42, ipaddress.ip_network("10.2.0.0/16"), RemoteAction.ENCAP, (Rloc(ip("198.18.2.2")),))
    before = xtr.plan()
    installed = compile_plan(before.__class__(**{**before.__dict__, "remotes": (entry,)}))
    effects = xtr.adopt(remotes_installed(installed), 0.0)
    assert compile_plan(xtr.plan()) == installed
    (send,) = requests(effects)
    assert str(request_of(send)[1].records[0].eid_prefix) == "[42]10.2.0.0/16"  # subscribes to all of it


def test_sha256_map_server_gets_sha256_registers():
    import yaml

    cfg = config.parse(yaml.safe_load(CONFIG.replace("key: s3cret}", "key: s3cret, algorithm: sha256}"))).xtrs[0]
    (send,) = sends(XtrCore(cfg, nonces=itertools.count(1).__next__).start(0.0))
    reg = decode_message(send.payload)
    assert reg.algorithm_id == auth.AuthAlgorithm.HMAC_SHA_256_128 and len(reg.authentication_data) == 32
    assert auth.verify(send.payload, KEY)


# ---- mobility -----------------------------------------------------------------------

H1 = ip("10.1.0.10")
VISITOR = ip("10.2.0.77")
DC2 = ip("198.18.2.2")


def registered_prefixes(effects):
    return [[str(r.eid_prefix) for r in decode_message(e.payload).records]
            for e in sends(effects) if e.what.startswith("Map-Register")]


def test_arriving_workload_is_learned_registered_at_once_and_reinjected(xtr):
    xtr.start(0.0)
    effects = xtr.handle_host_seen(5, VISITOR, "02:00:00:02:00:4d", b"garp", 3.0)
    assert isinstance(effects[0], DataplaneChanged) and effects[-1] == PacketOut(5, b"garp")
    # The Map-Register is built when the glue asks, after the switches' flows, not before them.
    assert RegisterChanges() in effects and not sends(effects)
    effects = as_the_glue_runs(xtr, effects, 3.0)
    assert registered_prefixes(effects) == [["[42]10.1.0.0/16", "[42]10.2.0.77/32"]]
    hosts = {h.ip: h for h in xtr.plan().hosts}
    assert hosts[VISITOR].port == 5 and hosts[VISITOR].mac == "02:00:00:02:00:4d"
    # Seen again (a second packet raced the flows): no new registration.
    assert registered_prefixes(as_the_glue_runs(xtr, xtr.handle_host_seen(5, VISITOR, "02:00:00:02:00:4d", b"x",
                                                                          3.1), 3.1)) == []


def test_sources_outside_dynamic_prefixes_are_not_learned(xtr):
    assert xtr.handle_host_seen(5, ip("192.168.9.9"), "02:00:00:00:00:09", b"x", 0.0) == []
    assert xtr.counters["learn_outside_dynamic_prefixes"] == 1


def moved_notify(xtr, eid="10.1.0.10/32", rloc=DC2, nonce=4242):
    record = MappingRecord.for_prefix(EidPrefix.from_network(eid, 42), (Locator(rloc),))
    return auth.sign(MapNotify(nonce=nonce, records=(record,), xtr_id=xtr.xtr_id, site_id=xtr.site_id), KEY, 1)


def test_departure_removes_local_state_redirects_and_solicits(xtr):
    xtr.start(0.0)
    # We talk to dc3 (an ITR that may be sending to h1): it must get an SMR.
    (send,) = sends(miss(xtr, "10.3.0.5"))
    xtr.handle_control(reply_for(request_of(send)[1], "10.3.0.0/16", (Locator(ip("198.18.3.2")),)), MS, 4342, 1.0)
    effects = xtr.handle_control(moved_notify(xtr).encode(), MS, 4342, 2.0)
    assert isinstance(effects[0], DataplaneChanged)
    plan = xtr.plan()
    assert H1 not in {h.ip for h in plan.hosts}
    assert [(r.ip, r.rloc) for r in plan.redirects] == [(H1, DC2)]
    assert any(str(r.prefix) == "10.1.0.10/32" and r.rlocs[0].address == DC2 for r in plan.remotes)
    smrs = [e for e in sends(effects) if e.what.startswith("SMR")]
    assert [s.destination for s in smrs] == [ip("198.18.3.2")]
    smr = decode_message(smrs[0].payload)
    assert smr.smr and str(smr.records[0].eid_prefix) == "[42]10.1.0.10/32"
    assert any(isinstance(decode_message(e.payload), MapNotifyAck) for e in sends(effects))
    # The redirect ends after its lifetime.
    xtr.handle_timer(2.0 + xtr_mobility.REDIRECT_LIFETIME)
    assert xtr.plan().redirects == ()


def test_the_redirect_follows_a_workload_that_moves_on_again(xtr):
    """h1 left dc1 for dc2, then left dc2 for dc3 (the controller tells dc1 directly): what still
    arrives at dc1 for it goes to dc3, not through dc2 (whose own redirect ends sooner or later too)."""
    xtr.start(0.0)
    dc3 = ip("198.18.3.2")
    record = MappingRecord.for_prefix(EidPrefix.from_network("10.1.0.10/32", 42), (Locator(DC2),))
    xtr.moved_elsewhere(record, "dc2", 1.0)
    until = xtr.departed[(42, H1)].until
    effects = xtr.moved_elsewhere(MappingRecord.for_prefix(record.eid_prefix, (Locator(dc3),)), "dc3", 5.0)
    assert any(isinstance(e, DataplaneChanged) for e in effects)
    assert [(r.ip, r.rloc) for r in xtr.plan().redirects] == [(H1, dc3)]
    assert xtr.departed[(42, H1)].until == until  # it ends when it would have


def test_notify_echoing_our_own_mapping_changes_nothing(xtr):
    xtr.start(0.0)
    effects = xtr.handle_control(moved_notify(xtr, rloc=RLOC).encode(), MS, 4342, 1.0)
    assert not any(isinstance(e, DataplaneChanged) for e in effects)
    assert H1 in {h.ip for h in xtr.plan().hosts}


def test_a_workload_that_comes_back_is_served_and_registered_again(xtr):
    xtr.start(0.0)
    xtr.handle_control(moved_notify(xtr).encode(), MS, 4342, 1.0)
    effects = as_the_glue_runs(xtr, xtr.handle_host_seen(1, H1, "02:00:00:01:00:0a", b"back", 5.0), 5.0)
    assert registered_prefixes(effects) == [["[42]10.1.0.0/16", "[42]10.1.0.10/32"]]
    plan = xtr.plan()
    assert plan.redirects == ()
    assert H1 in {h.ip for h in plan.hosts}
    assert not any(str(r.prefix) == "10.1.0.10/32" for r in plan.remotes)


def test_compiled_mobility_plan_walks_correctly(xtr):
    from lisp_ryu.flows.compiler import compile_plan
    from support.simulate import walk

    xtr.start(0.0)
    state = compile_plan(xtr.plan())
    visitor = {"in_port": 5, "eth_type": 0x0800, "ipv4_src": str(VISITOR), "ipv4_dst": "10.1.0.10"}
    assert walk(state, visitor).ports == ["controller"]  # unknown source in a dynamic prefix: learn
    xtr.handle_host_seen(5, VISITOR, "02:00:00:02:00:4d", b"x", 1.0)
    state = compile_plan(xtr.plan())
    assert walk(state, visitor).ports == [1]  # now known: routed to the local host h1
    xtr.handle_control(moved_notify(xtr).encode(), MS, 4342, 2.0)
    state = compile_plan(xtr.plan())
    arriving = {"in_port": 100, "tunnel_id": 42, "eth_type": 0x0800, "ipv4_dst": "10.1.0.10"}
    (d,) = walk(state, arriving).deliveries
    assert d.port == 100 and d.packet["tun_ipv4_dst"] == str(DC2)  # redirected back out of the tunnel


def test_publication_before_the_map_reply_releases_held_packets(xtr):
    (send,) = sends(miss(xtr, data=b"first"))
    request = request_of(send)[1]
    record = MappingRecord.for_prefix(EidPrefix.from_network("10.2.0.0/16", 42), (Locator(DC2),))
    notify = auth.sign(MapNotify(nonce=request.nonce + 1, records=(record,), xtr_id=xtr.xtr_id,
                                 site_id=xtr.site_id), KEY, 1)
    effects = xtr.handle_control(notify.encode(), MS, 4342, 0.05)
    assert isinstance(effects[0], DataplaneChanged)
    assert [e.data for e in effects if isinstance(e, PacketOut)] == [b"first"]
    # The Map-Reply that follows is still recognised, and re-injects nothing twice.
    later = xtr.handle_control(reply_for(request), MS, 4342, 0.06)
    assert [e for e in later if isinstance(e, PacketOut)] == []
    assert "map_reply_unknown_nonce" not in xtr.counters
    # And no retry fires for it.
    assert requests(xtr.handle_timer(5.0)) == []


def test_configured_host_outside_own_prefixes_is_registered_as_a_host_route():
    """After a move the lab lists the host at its new site; a restart must register it there."""
    import yaml

    text = CONFIG.replace('hosts: [{ip: 10.1.0.10,', 'hosts: [{ip: 10.2.0.77, mac: "02:00:00:02:00:4d", port: 3, iid: 42}, {ip: 10.1.0.10,')
    cfg = config.parse(yaml.safe_load(text)).xtrs[0]
    (send,) = sends(XtrCore(cfg, nonces=itertools.count(1).__next__).start(0.0))
    assert [str(r.eid_prefix) for r in decode_message(send.payload).records] == ["[42]10.1.0.0/16", "[42]10.2.0.77/32"]


def test_an_smr_from_the_old_site_for_a_workload_that_arrived_here_is_not_re_resolved(xtr):
    """Soak seed 20: the old site solicits every xTR in its map-cache, the new site included; the new
    site must not ask for (and subscribe to, and cache) a mapping of its own host pointing back at it."""
    xtr.start(0.0)
    (send,) = sends(miss(xtr))  # the covering 10.2.0.0/16 of the old site is cached here
    xtr.handle_control(reply_for(request_of(send)[1]), MS, 4342, 0.0)
    xtr.handle_host_seen(5, VISITOR, "02:00:00:02:00:4d", b"garp", 3.0)
    smr = MapRequest(nonce=1, smr=True, itr_rlocs=(DC2,),
                     records=(MapRequestRecord.for_prefix(EidPrefix.from_network(f"{VISITOR}/32", 42)),))
    assert requests(xtr.handle_control(smr.encode(), DC2, 4342, 3.1)) == []
    assert xtr.counters["smr_for_local_host"] == 1
    # Another EID of the old site is still re-resolved.
    smr = MapRequest(nonce=2, smr=True, itr_rlocs=(DC2,),
                     records=(MapRequestRecord.for_prefix(EidPrefix.from_network("10.2.0.78/32", 42)),))
    assert len(requests(xtr.handle_control(smr.encode(), DC2, 4342, 3.2))) == 1


def test_hosts_with_a_mac_are_the_local_hosts_with_it(xtr):
    """A workload's addresses by its MAC (glue.moves asks once per arrival) answer as a scan of
    `local_hosts` would: configured hosts, learned ones over them, departed ones gone, in address order."""
    from lisp_ryu.plan import LocalHost
    from lisp_ryu.xtr.state import Departure

    state = xtr.state
    mac = "02:00:00:01:00:0a"  # the configured host 10.1.0.10's

    def reference(m):
        return tuple((h.iid, h.ip) for h in xtr.local_hosts() if h.mac.lower() == m.lower())

    assert xtr.hosts_with_mac(mac.upper()) == reference(mac) == ((42, ip("10.1.0.10")),)
    state.dynamic_hosts[(42, ip("fd00:1::a"))] = LocalHost(42, ip("fd00:1::a"), mac, 3)
    state.dynamic_hosts[(42, ip("10.1.0.9"))] = LocalHost(42, ip("10.1.0.9"), mac, 3)
    state.dynamic_hosts[(7, ip("10.1.0.10"))] = LocalHost(7, ip("10.1.0.10"), "02:00:00:00:00:07", 4)
    assert xtr.hosts_with_mac(mac) == reference(mac) == (
        (42, ip("10.1.0.9")), (42, ip("10.1.0.10")), (42, ip("fd00:1::a")))
    state.dynamic_hosts[(42, ip("10.1.0.10"))] = LocalHost(42, ip("10.1.0.10"), "02:00:00:00:00:99", 5)  # re-learned
    state.departed[(42, ip("10.1.0.9"))] = Departure(ip("198.18.2.2"), 99.0)
    assert xtr.hosts_with_mac(mac) == reference(mac) == ((42, ip("fd00:1::a")),)
    assert xtr.hosts_with_mac("02:00:00:00:00:99") == reference("02:00:00:00:00:99") == ((42, ip("10.1.0.10")),)
    assert xtr.hosts_with_mac("02:00:00:00:00:01") == ()


def test_a_publication_naming_a_host_here_twice_departs_it_once(xtr):
    """Each record is checked against the hosts here as it comes: the second copy of the same
    /32 finds it gone already, and the ITRs get one SMR, not two."""
    xtr.start(0.0)
    (send,) = sends(miss(xtr, "10.3.0.5"))
    xtr.handle_control(reply_for(request_of(send)[1], "10.3.0.0/16", (Locator(ip("198.18.3.2")),)), MS, 4342, 1.0)
    record = MappingRecord.for_prefix(EidPrefix.from_network("10.1.0.10/32", 42), (Locator(DC2),))
    notify = auth.sign(MapNotify(nonce=4242, records=(record, record), xtr_id=xtr.xtr_id, site_id=xtr.site_id), KEY, 1)
    effects = xtr.handle_control(notify.encode(), MS, 4342, 2.0)
    assert [e.destination for e in sends(effects) if e.what.startswith("SMR")] == [ip("198.18.3.2")]
    assert xtr.state.counters["dynamic_eid_departed"] == 1
    assert [(r.ip, r.rloc) for r in xtr.plan().redirects] == [(H1, DC2)]
