"""The controller with real cores, the real compiler and encoder; only the switch and the sockets are fakes.

Two xTRs (dc1, dc2) and the embedded Map-Server talk through `support.underlay`
in real bytes; each xTR's switch is a `FakeSwitch` that keeps the tables the
flow-mods build.  Time moves only when a test moves the clock.
"""

from __future__ import annotations

import ipaddress

import pytest
import yaml
from ryu.ofproto import ofproto_v1_3

from lisp_ryu import config
from lisp_ryu.flows.compiler import compile_plan
from lisp_ryu.flows.diff import diff
from lisp_ryu.flows.model import DesiredState, Flow, Output
from lisp_ryu.glue.controller import MAX_WAIT, Controller
from support.underlay import Barrier, FakeSwitch, PacketOutMsg, StatsRequest, Underlay, ipv4_frame

ip = ipaddress.ip_address
IID = 42

CONFIG = """
map_server:
  listen: 198.18.0.2:4342
  sites:
    - {name: dc1, key: k1, eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}]}
    - {name: dc2, key: k2, eid_prefixes: [{prefix: 10.2.0.0/16, iid: 42}]}
xtrs:
  - name: dc1
    dpid: 1
    rlocs: [{address: 198.18.1.2}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}]
    map_servers: [{address: 198.18.0.2, key: k1}]
    map_resolvers: [198.18.0.2]
    hosts:
      - {ip: 10.1.0.10, mac: "02:00:00:01:00:0a", port: 1, iid: 42}
      - {ip: 10.1.0.11, mac: "02:00:00:01:00:0b", port: 2, iid: 42}
  - name: dc2
    dpid: 2
    rlocs: [{address: 198.18.2.2, weight: 50}, {address: 198.18.2.6, weight: 50}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.2.0.0/16, iid: 42}]
    map_servers: [{address: 198.18.0.2, key: k2}]
    map_resolvers: [198.18.0.2]
    hosts: [{ip: 10.2.0.10, mac: "02:00:00:02:00:0a", port: 1, iid: 42}]
"""


def make_config(tmp_path=None, drop_host: str | None = None):
    doc = yaml.safe_load(CONFIG)
    if tmp_path is not None:
        doc["map_server"]["data_dir"] = str(tmp_path / "ms")
    if drop_host:
        doc["xtrs"][0]["hosts"] = [h for h in doc["xtrs"][0]["hosts"] if h["ip"] != drop_host]
    return config.parse(doc)


class Site:
    """A controller built from the configuration, on the underlay, with its switches."""

    def __init__(self, cfg, underlay: Underlay | None = None, holds: dict[int, DesiredState] | None = None):
        self.underlay = underlay or Underlay()
        self.controller = self.underlay.bind(Controller.from_config(
            cfg, open_socket=self.underlay.open_socket, clock=self.underlay.clock, wall_clock=self.underlay.clock))
        self.switches = {dpid: self.underlay.connect(self.controller, dpid, (holds or {}).get(dpid))
                         for dpid in (1, 2)}
        self.controller.start()
        self.underlay.settle()

    def core(self, dpid):
        return self.controller.xtrs[dpid].core

    def compiled(self, dpid) -> DesiredState:
        return compile_plan(self.core(dpid).plan())

    def miss(self, dpid, src, dst, payload=b"held"):
        frame = ipv4_frame(src, dst, payload)
        self.switches[dpid].packet_in(self.controller, 1, frame, iid=IID)
        return frame


@pytest.fixture
def site():
    return Site(make_config())


def test_connect_reads_the_tables_then_push_installs_the_compiled_plan(site):
    for dpid, switch in site.switches.items():
        kinds = [m.kind for m in switch.messages if isinstance(m, StatsRequest)]
        assert kinds == ["flows", "groups", "meters"]
        assert switch.held() == site.compiled(dpid) and switch.held().flows
        assert isinstance(switch.messages[-1], Barrier)  # every push ends with a barrier
        assert site.controller.installed(dpid) == switch.held()
    assert site.core(1).registrations[0].registered and site.core(2).registrations[0].registered


def test_a_connected_switch_sends_packet_ins_but_no_port_status(site):
    """Nothing acts on port-status messages; an evacuation's hundreds of port changes made the
    switch send, and Ryu parse, one each.  Packet-ins keep the switch's default reasons."""
    ofp = ofproto_v1_3
    for switch in site.switches.values():
        config = switch.async_config
        assert config is not None and switch.messages.index(config) < min(
            i for i, m in enumerate(switch.messages) if isinstance(m, StatsRequest))
        assert config.port_status == [0, 0]
        assert config.packet_in == [1 << ofp.OFPR_NO_MATCH | 1 << ofp.OFPR_ACTION, 0]
        assert config.flow_removed[0] == 0b1111 and config.flow_removed[1] == 0


def test_a_change_pushes_only_the_difference(site):
    switch = site.switches[1]
    before = switch.held()
    switch.clear()
    site.miss(1, "10.1.0.10", "10.2.0.10")
    site.underlay.settle()
    after = site.compiled(1)
    assert switch.held() == after and after != before
    ops = diff(before, after)
    assert 0 < len(switch.mods()) == len(ops)
    # A select group over dc2's two RLOCs, sent before the flow that uses it.
    [group] = after.groups
    assert [b.weight for b in group.buckets] == [50, 50]
    kinds = [type(m).__name__ for m in switch.mods()]
    assert kinds.index("GroupMod") < kinds.index("OFPFlowMod")
    assert all(kind == "add" for kind, _ in switch.flow_mods())


def test_the_held_packet_goes_back_after_the_map_reply_and_after_its_flows(site):
    switch = site.switches[1]
    switch.clear()
    frame = site.miss(1, "10.1.0.10", "10.2.0.10")
    assert switch.packet_outs == []  # held while the Map-Request is out
    assert site.underlay.in_flight  # ... which is on the wire
    site.underlay.settle()
    [out] = switch.packet_outs
    assert (out.in_port, out.data) == (1, frame)
    [packet_out] = [m for m in switch.messages if isinstance(m, PacketOutMsg)]
    assert [a.port for a in packet_out.actions] == [switch.ofproto.OFPP_TABLE]  # re-enters the pipeline
    position = switch.messages.index(packet_out)
    assert position > max(switch.messages.index(m) for m in switch.mods())
    assert isinstance(switch.messages[position - 1], Barrier)
    assert site.controller.counters["packets_reinjected"] == 1


def test_reconcile_after_a_restart_sends_the_minimal_diff_and_adopts_remote_mappings(site):
    site.miss(1, "10.1.0.10", "10.2.0.10")
    site.underlay.settle()
    held = site.switches[1].held()
    foreign = Flow(0, 5, (("in_port", 9),), actions=(Output(1),), cookie=0)  # not ours: never touched
    held_with_foreign = DesiredState(held.flows | {foreign}, held.groups, held.meters)

    # The controller restarts with one host fewer; the switch kept its tables.
    underlay = Underlay()
    controller = underlay.bind(Controller.from_config(make_config(drop_host="10.1.0.11"),
                                                      open_socket=underlay.open_socket))
    controller.start()  # before any switch connects, as in the Ryu app
    switch = underlay.connect(controller, 1, held_with_foreign)
    other = underlay.connect(controller, 2, site.switches[2].held())
    core = controller.xtrs[1].core
    wanted = compile_plan(core.plan())
    stale = {f for f in held.flows if f not in wanted.flows}
    assert stale and all(("ipv4_dst", "10.1.0.11") in f.match or ("in_port", 2) in f.match
                         or "02:00:00:01:00:0b" in str(f.match) for f in stale), stale
    assert {(kind, f.key) for kind, f in switch.flow_mods()} == {("delete", f.key) for f in stale}
    assert switch.held() == DesiredState(wanted.flows | {foreign}, wanted.groups, wanted.meters)
    assert other.mods() == []  # nothing changed there: nothing sent
    # The mapping the switch still forwards with was adopted, and is being re-resolved.
    entry = core.cache.get(IID, ipaddress.ip_network("10.2.0.0/16"))
    assert entry is not None and entry.value.source == "adopted from the switch"
    assert core.counters["map_cache_adopted"] == 1
    underlay.settle()  # the answer replaces it; the flows stay as they were
    assert core.cache.get(IID, ipaddress.ip_network("10.2.0.0/16")).value.source == "198.18.2.2"  # dc2 answered
    assert switch.held() == DesiredState(wanted.flows | {foreign}, wanted.groups, wanted.meters)


def test_reconciliation_waits_for_every_part_of_the_replies():
    underlay = Underlay()
    controller = underlay.bind(Controller.from_config(make_config(), open_socket=underlay.open_socket))
    switch = FakeSwitch(1, holds=compile_plan(controller.xtrs[1].core.plan()))
    controller.switch_connected(switch)
    requests = {m.kind: m.xid for m in switch.messages if isinstance(m, StatsRequest)}
    flows = list(switch.flows.values())
    controller.stats_reply(1, requests["flows"], "flows", flows[:3], True)
    controller.stats_reply(1, requests["groups"], "groups", [], False)
    controller.stats_reply(1, requests["meters"], "meters", list(switch.meters.values()), False)
    assert controller.installed(1) is None  # the flow reply has more parts
    controller.stats_reply(1, 999, "flows", flows[3:], False)  # not ours to wait for: ignored
    assert controller.installed(1) is None
    controller.stats_reply(1, requests["flows"], "flows", flows[3:], False)
    assert controller.installed(1) == switch.held()
    assert switch.mods() == []  # it held exactly the plan


def test_a_switch_not_in_the_configuration_is_left_alone(site):
    stranger = FakeSwitch(7)
    assert site.controller.switch_connected(stranger) is False
    assert stranger.messages == [] and 7 not in site.controller.sessions


def test_a_disconnected_switch_gets_nothing_until_it_is_back(site):
    site.controller.switch_disconnected(1)
    switch = site.switches[1]
    switch.clear()
    site.miss(1, "10.1.0.10", "10.2.0.10")  # the packet-in raced the disconnect
    site.underlay.settle()
    assert switch.messages == [] and site.controller.installed(1) is None
    back = site.underlay.connect(site.controller, 1, switch.held())
    assert back.held() == site.compiled(1)
    assert [kind for kind, _ in back.flow_mods()] and all(kind == "add" for kind, _ in back.flow_mods())


def test_sockets_on_every_rloc_and_the_map_server_restores_registrations(tmp_path):
    first = Site(make_config(tmp_path))
    receivers = {e.name: set(e.receivers) for e in first.controller.endpoints}
    assert receivers == {"map-server": {None}, "xtr dc1": {ip("198.18.1.2")},
                         "xtr dc2": {ip("198.18.2.2"), ip("198.18.2.6")}}
    assert first.controller.map_server.core.registration_count == 2
    # A restart reads the registrations back from data_dir before any xTR re-registers.
    again = Controller.from_config(make_config(tmp_path), open_socket=Underlay().open_socket,
                                   wall_clock=first.underlay.clock)
    assert again.map_server.core.registration_count == 2


def test_a_failed_send_is_counted_and_the_retry_goes_out(site):
    controller, clock = site.controller, site.underlay.clock
    sock = controller.xtrs[1].receivers[ip("198.18.1.2")]
    sock.fail_with = OSError(101, "Network is unreachable")
    sent = controller.counters["control_sent"]
    site.miss(1, "10.1.0.10", "10.2.0.10")
    assert controller.counters["control_send_errors"] == 1 and controller.counters["control_sent"] == sent
    assert not site.underlay.in_flight and site.switches[1].packet_outs == []
    sock.fail_with = None
    clock.now = controller.xtrs[1].core.next_deadline()  # the Map-Request's retry
    controller.run_timers()
    site.underlay.settle()
    assert [p.data for p in site.switches[1].packet_outs] == [ipv4_frame("10.1.0.10", "10.2.0.10", b"held")]


def test_timers_run_when_their_deadline_comes(site):
    controller, clock = site.controller, site.underlay.clock
    assert 0 < controller.next_wait() <= MAX_WAIT
    due = min(e.core.next_deadline() for e in controller.endpoints if e.core.next_deadline() is not None)
    sent = controller.counters["control_sent"]
    clock.now = due
    assert controller.next_wait() == 0
    controller.run_timers()
    assert controller.counters["control_sent"] > sent


def test_packet_ins_that_are_not_for_resolution_are_counted(site):
    switch = site.switches[1]
    switch.packet_in(site.controller, 1, b"\x00" * 20, iid=IID)
    switch.packet_in(site.controller, 1, ipv4_frame("10.1.0.10", "224.0.0.5"), iid=IID)
    assert site.controller.counters["packet_in_not_ip"] == 1
    assert site.controller.counters["packet_in_not_routable"] == 1
    assert not site.underlay.in_flight
