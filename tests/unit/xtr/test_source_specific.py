"""Source-specific policy end to end in memory: a real Map-Server and a real xTR core exchange
real bytes through the controller (`support.underlay`); the xTR's compiled flows are walked by
the pipeline model.  Time is injected.

h1 (10.1.0.10) and h2 (10.1.0.11) sit behind one ITR (dc1); a rule denies h1 -> dc2.
"""

import ipaddress
import itertools

import pytest
import yaml

from lisp_ryu import config
from lisp_ryu.config import EidPrefixConfig, MapServerConfig, SiteConfig
from lisp_ryu.effects import DataplaneChanged, PacketOut
from lisp_ryu.flows.compiler import compile_plan
from lisp_ryu.flows.pipeline import Table, prefix_priority
from support.simulate import walk
from lisp_ryu.glue.controller import Controller
from lisp_ryu.mapping.policy import Rule
from lisp_ryu.mapping.sourcedest import SourceDestKey, record_key
from lisp_ryu.mapserver import MapServer
from lisp_ryu.wire import Action, Locator, MapNotify, MappingRecord, MapRequest, MapRequestRecord, auth
from lisp_ryu.xtr.core import XtrCore
from support.underlay import Clock, Underlay, ipv4_frame

from support import packets

ip = ipaddress.ip_address
net = ipaddress.ip_network
MS, ITR, ETR2 = ip("198.18.0.2"), ip("198.18.1.2"), ip("198.18.2.2")
H1, H2, H3 = ip("10.1.0.10"), ip("10.1.0.11"), ip("10.1.0.12")
DST = ip("10.2.0.10")
IID = 42
DC1_KEY, DC2_KEY = "dc1-key", "dc2-key"

XTR_CONFIG = """
xtrs:
  - name: dc1
    dpid: 1
    rlocs: [{address: 198.18.1.2}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}]
    map_servers: [{address: 198.18.0.2, key: dc1-key}]
    gateways: [{subnet: 10.1.0.0/16, ip: 10.1.0.1, mac: "02:00:00:00:01:01", iid: 42}]
    hosts:
      - {ip: 10.1.0.10, mac: "02:00:00:01:00:0a", port: 1, iid: 42}
      - {ip: 10.1.0.11, mac: "02:00:00:01:00:0b", port: 2, iid: 42}
      - {ip: 10.1.0.12, mac: "02:00:00:01:00:0c", port: 3, iid: 42}
"""

DENY_H1 = Rule.from_dict({"id": "h1-to-dc2", "iid": IID, "sources": ["10.1.0.10/32"],
                          "destinations": ["10.2.0.0/16"], "action": "deny"})


class World:
    """One Map-Server and one xTR behind the real controller on the in-memory underlay; `now` moves only when told."""

    def __init__(self) -> None:
        ms_config = MapServerConfig(sites=(
            SiteConfig("dc1", DC1_KEY, (EidPrefixConfig(net("10.1.0.0/16"), IID),)),
            SiteConfig("dc2", DC2_KEY, (EidPrefixConfig(net("10.2.0.0/16"), IID),)),
        ), rate_limit_per_source=1e6, negative_ttl_minutes=15,
            registration_ttl=3600.0)  # dc2 never refreshes: it must outlive a 15-minute jump
        counter = itertools.count(0x7000)
        self.clock = Clock(100.0)
        self.ms = MapServer(ms_config, nonces=lambda: next(counter), now=self.now)
        xtr_counter = itertools.count(1000)
        self.xtr = XtrCore(config.parse(yaml.safe_load(XTR_CONFIG)).xtrs[0], nonces=lambda: next(xtr_counter))
        self.underlay = Underlay(self.clock)  # anything sent to dc2's ETR has no peer here
        self.controller = Controller()
        self.ms_endpoint = self.underlay.attach(self.controller, "map-server", self.ms, [MS])
        self.underlay.attach(self.controller, "xtr dc1", self.xtr, [ITR], dpid=1)
        self.switch = self.underlay.connect(self.controller, 1)
        self.controller.start()
        self.underlay.settle()
        register = packets.map_register([packets.record("10.2.0.0/16", [str(ETR2)], iid=IID)], DC2_KEY, proxy=True)
        self.run(self.ms.handle_control(register, ETR2, 4342, self.now))

    @property
    def now(self) -> float:
        return self.clock.now

    @property
    def packet_outs(self) -> list[PacketOut]:
        return self.switch.packet_outs

    def run(self, effects) -> None:
        """Carry out the Map-Server's effects and deliver until nothing is left in flight."""
        self.controller.run(self.ms_endpoint, effects)
        self.underlay.settle()

    def miss(self, source, destination=DST):
        self.switch.packet_in(self.controller, 1, ipv4_frame(source, destination, b"packet"), iid=IID)
        self.underlay.settle()

    def timer(self, now: float) -> None:
        self.clock.now = now
        self.controller.run_timers()
        self.underlay.settle()

    def walk(self, source, destination=DST, in_port=None):
        port = {H1: 1, H2: 2, H3: 3}[source] if in_port is None else in_port
        return walk(compile_plan(self.xtr.plan()), {"in_port": port, "eth_type": 0x0800, "ipv4_src": str(source),
                                                    "ipv4_dst": str(destination)})


def verdict(trace) -> str:
    """What the ITR's flows did with a packet: "tunnel", "controller" or "drop"."""
    if trace.dropped:
        return "drop"
    [delivery] = trace.deliveries
    if delivery.port == "controller":
        return "controller"
    assert delivery.port == 100 and delivery.packet["tun_ipv4_dst"] == str(ETR2)
    return "tunnel"


@pytest.fixture
def world():
    return World()


def sd_entries(xtr):
    return {(str(entry.eid), str(dest)): entry for dest, entry in xtr.sd_cache}


def test_without_source_rules_everything_stays_plain(world):
    world.miss(H1)
    assert len(world.xtr.sd_cache) == 0 and world.xtr.cache.get(IID, net("10.2.0.0/16")) is not None
    assert verdict(world.walk(H1)) == verdict(world.walk(H2)) == "tunnel"


def test_denied_host_drops_while_its_neighbour_behind_the_same_itr_tunnels(world):
    world.ms.set_rule(DENY_H1, world.now)
    world.miss(H1)
    # h1's answer is keyed by (h1, dc2); nothing covers other sources yet: their packets still ask.
    assert set(sd_entries(world.xtr)) == {("10.1.0.10/32", "10.2.0.0/16")}
    assert world.xtr.cache.get(IID, net("10.2.0.0/16")) is None
    assert verdict(world.walk(H1)) == "drop"
    assert verdict(world.walk(H2)) == "controller"
    assert world.xtr.lookup(IID, H2, DST, world.now) is None
    world.miss(H2)
    # h2's answer covers the widest source prefix around it that misses h1: 10.1.0.11/32.
    entries = sd_entries(world.xtr)
    assert set(entries) == {("10.1.0.10/32", "10.2.0.0/16"), ("10.1.0.11/32", "10.2.0.0/16")}
    assert entries[("10.1.0.10/32", "10.2.0.0/16")].value.record.action == Action.DROP_POLICY_DENIED
    assert [loc.address for loc in entries[("10.1.0.11/32", "10.2.0.0/16")].value.record.locators] == [ETR2]
    assert verdict(world.walk(H1)) == "drop"
    assert verdict(world.walk(H2)) == "tunnel"
    assert verdict(world.walk(H3)) == "controller"  # h3 (10.1.0.12/30 side) asks for itself
    world.miss(H3)
    assert ("10.1.0.12/30", "10.2.0.0/16") in sd_entries(world.xtr)
    assert verdict(world.walk(H3)) == "tunnel"
    # The held packets went back each time.
    assert len(world.packet_outs) == 3


def test_removing_the_rule_publishes_a_plain_answer_that_restores_every_host(world):
    world.ms.set_rule(DENY_H1, world.now)
    world.miss(H1)
    world.miss(H2)  # the subscription now remembers h2 as its source
    assert verdict(world.walk(H1)) == "drop"
    world.run(world.ms.remove_rule(DENY_H1.id, world.now + 1))
    # The plain record replaced every source-specific entry for that destination, h1's included.
    assert len(world.xtr.sd_cache) == 0 and world.xtr.cache.get(IID, net("10.2.0.0/16")) is not None
    assert verdict(world.walk(H1)) == verdict(world.walk(H2)) == "tunnel"


def test_adding_the_rule_after_a_plain_answer_withdraws_it_for_every_host(world):
    world.miss(H1)
    assert verdict(world.walk(H2)) == "tunnel"
    world.run(world.ms.set_rule(DENY_H1, world.now + 1))
    assert world.xtr.cache.get(IID, net("10.2.0.0/16")) is None
    assert verdict(world.walk(H1)) == "drop"
    assert verdict(world.walk(H2)) == "controller"  # no longer covered by a plain entry: asks
    world.miss(H2)
    assert verdict(world.walk(H2)) == "tunnel"


def test_a_published_change_reaches_every_host_that_asked_and_the_others_ask_again(world):
    world.ms.set_rule(DENY_H1, world.now)
    world.miss(H2)
    world.miss(H1)  # the subscription remembers h2 and h1
    # h3's entry came from elsewhere (the Map-Server does not know h3 asked): it may be stale.
    h3_key = SourceDestKey(IID, net("10.1.0.12/32"), net("10.2.0.0/16"))
    mask_len, eid = h3_key.to_wire()
    world.xtr.resolver.cache_source_specific(MappingRecord(eid, mask_len, (Locator(ETR2),), ttl=10), h3_key, "test",
                                             world.now)
    requests = world.xtr.counters["map_request_sent"]
    # dc2 moves to a new RLOC: the publication carries h1's answer (still denied) and h2's (the new RLOC).
    register = packets.map_register([packets.record("10.2.0.0/16", ["198.18.2.9"], iid=IID)], DC2_KEY, proxy=True)
    world.run(world.ms.handle_control(register, ETR2, 4342, world.now + 1))
    assert set(sd_entries(world.xtr)) == {("10.1.0.10/32", "10.2.0.0/16"), ("10.1.0.11/32", "10.2.0.0/16")}
    assert verdict(world.walk(H1)) == "drop"
    assert world.walk(H2).deliveries[0].packet["tun_ipv4_dst"] == "198.18.2.9"
    assert world.xtr.counters["map_request_sent"] == requests  # nobody had to ask
    # h3's entry is gone: h3 asks again.
    assert verdict(world.walk(H3)) == "controller"


def test_subscription_confirmations_do_not_evict_other_hosts(world):
    world.ms.set_rule(DENY_H1, world.now)
    world.miss(H1)
    world.miss(H2)  # confirmed by a Map-Notify carrying h2's record: h1's entry must stay
    world.miss(H3)
    assert len(world.xtr.sd_cache) == 3
    assert world.xtr.counters["map_request_sent"] == 3  # one resolution per host, no ping-pong


def test_source_specific_entries_expire_with_their_ttl(world):
    world.ms.set_rule(DENY_H1, world.now)
    world.miss(H1)
    world.miss(H2)
    deny_expiry = world.now + 15 * 60  # negative_ttl_minutes
    assert world.xtr.next_deadline() <= deny_expiry
    world.timer(deny_expiry)
    assert set(sd_entries(world.xtr)) == {("10.1.0.11/32", "10.2.0.0/16")}
    assert world.xtr.counters["map_cache_expired"] == 1
    assert verdict(world.walk(H1)) == "controller"  # asks again, and is denied again
    world.miss(H1)
    assert verdict(world.walk(H1)) == "drop"


def test_the_longer_destination_wins_over_a_source_specific_shorter_one(world):
    """Longest destination first, then longest source: in the core's lookup and in the flows."""
    xtr, now = world.xtr, world.now
    wide = SourceDestKey(IID, net("10.1.0.0/16"), net("10.2.0.0/16"))
    mask_len, eid = wide.to_wire()
    xtr.resolver.cache_source_specific(MappingRecord(eid, mask_len, (), ttl=10, action=Action.DROP_POLICY_DENIED),
                                       wide, "test", now)
    narrow = MappingRecord.for_prefix(packets.eid("10.2.5.0/24", IID), (Locator(ETR2),), ttl=10)
    xtr.resolver.cache_record(narrow, narrow.eid_prefix, "test", now)
    assert xtr.lookup(IID, H1, ip("10.2.5.1"), now).value.record == narrow
    assert xtr.lookup(IID, H1, DST, now).value.record.action == Action.DROP_POLICY_DENIED
    assert verdict(world.walk(H1, ip("10.2.5.1"))) == "tunnel"
    assert verdict(world.walk(H1, DST)) == "drop"


def test_a_source_specific_destination_inside_a_plain_one_sends_uncovered_sources_to_the_controller(world):
    xtr, now = world.xtr, world.now
    covering = MappingRecord.for_prefix(packets.eid("10.0.0.0/8", IID), (Locator(ETR2),), ttl=10)
    xtr.resolver.cache_record(covering, covering.eid_prefix, "test", now)
    key = SourceDestKey(IID, net("10.1.0.10/32"), net("10.2.0.0/16"))
    mask_len, eid = key.to_wire()
    xtr.resolver.cache_source_specific(MappingRecord(eid, mask_len, (), ttl=10, action=Action.DROP_POLICY_DENIED),
                                       key, "test", now)
    assert xtr.lookup(IID, H2, DST, now) is None  # not the /8: h2 must ask for itself
    assert verdict(world.walk(H2)) == "controller"
    assert verdict(world.walk(H2, ip("10.3.0.1"))) == "tunnel"  # outside 10.2.0.0/16 the /8 holds
    state = compile_plan(xtr.plan())
    [punt] = [f for f in state.flows if f.table == Table.ROUTE and f.meter is not None
              and dict(f.match).get("ipv4_dst") == ("10.2.0.0", "255.255.0.0")]
    assert punt.priority == prefix_priority(net("10.2.0.0/16"))


def test_smr_drops_source_specific_entries_so_each_host_re_resolves(world):
    world.ms.set_rule(DENY_H1, world.now)
    world.miss(H1)
    smr = MapRequest(nonce=99, smr=True, records=(MapRequestRecord.for_prefix(packets.eid("10.2.0.0/16", IID)),),
                     itr_rlocs=(ETR2,))
    effects = world.xtr.handle_control(smr.encode(), ETR2, 4342, world.now + 1)
    assert any(isinstance(e, DataplaneChanged) for e in effects)
    assert len(world.xtr.sd_cache) == 0


def test_publications_carry_the_source_dest_records_on_the_wire(world):
    world.ms.set_rule(DENY_H1, world.now)
    world.miss(H1)
    register = packets.map_register([packets.record("10.2.0.0/16", ["198.18.2.9"], iid=IID)], DC2_KEY, proxy=True)
    effects = world.ms.handle_control(register, ETR2, 4342, world.now + 1)
    [notify] = [MapNotify.decode(e.payload) for e in effects if e.destination == ITR]
    assert auth.verify(notify.encode(), DC1_KEY)
    [record] = notify.records
    assert record_key(record) == SourceDestKey(IID, net("10.1.0.10/32"), net("10.2.0.0/16"))
    assert record.action == Action.DROP_POLICY_DENIED
