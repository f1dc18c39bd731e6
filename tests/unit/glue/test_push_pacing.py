"""Pushes under a burst of events: a lone change is pushed at once; changes that come
less than one push's planning time (compile and diff) after the last push wait and leave together."""

from __future__ import annotations

import pytest
import yaml

from lisp_ryu import config
from lisp_ryu.flows.compiler import compile_plan
from lisp_ryu.glue.controller import Controller
from support.underlay import Clock, Underlay

CONFIG = """
map_server:
  listen: 198.18.0.2:4342
  sites:
    - {name: dc1, key: k1, eid_prefixes: [{prefix: 10.0.0.0/8, iid: 42, accept_more_specifics: true}]}
xtrs:
  - name: dc1
    dpid: 1
    rlocs: [{address: 198.18.1.2}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}]
    hosts: [{ip: 10.1.0.10, mac: "02:00:00:01:00:0a", port: 1, iid: 42}]
    dynamic_eid_prefixes: [{prefix: 10.0.0.0/8, iid: 42}]
    map_servers: [{address: 198.18.0.2, key: k1}]
"""


@pytest.fixture
def lab(monkeypatch):
    clock = Clock(100.0)
    underlay = Underlay(clock)
    ctl = underlay.bind(Controller.from_config(config.parse(yaml.safe_load(CONFIG)), open_socket=underlay.open_socket,
                                               clock=underlay.clock, wall_clock=underlay.clock))
    switch = underlay.connect(ctl, 1)
    ctl.start()
    underlay.settle()
    pushes = []
    real_push = ctl.push

    def push(dpid, reason, timer=None):  # each push's compile and diff take 50 ms of the (fake) clock
        pushes.append(reason)
        real_push(dpid, reason, timer)
        clock.advance(0.05)
        return 0.05

    monkeypatch.setattr(ctl, "push", push)
    return ctl, switch, clock, pushes


def arrive(ctl, k):
    """A workload's first packet on port 10 + k: learned, its flows wanted."""
    frame = (bytes.fromhex("024c67000101") + bytes.fromhex(f"0200000200{k:02x}") + b"\x08\x00"
             + bytes.fromhex("4500001c00004000400100000a0100" + f"{20 + k:02x}" + "0a010001")
             + bytes.fromhex("0800f7ff00000000"))
    ctl.packet_in(1, 0, 10 + k, 0, frame)


def test_a_burst_is_pushed_once_per_hold_off_and_a_lone_change_at_once(lab):
    ctl, switch, clock, pushes = lab
    arrive(ctl, 0)
    assert len(pushes) == 1  # the first leaves at once
    for k in range(1, 6):
        clock.advance(0.001)
        arrive(ctl, k)
    assert len(pushes) == 1 and ctl.counters["pushes_deferred"] == 5
    assert ctl.next_wait() == pytest.approx(0.045)
    ctl.run_timers()  # not yet: the hold-off is one push's duration
    assert len(pushes) == 1
    clock.advance(0.05)
    ctl.run_timers()
    assert len(pushes) == 2 and pushes[1].startswith("5 changes")
    assert switch.held() == compile_plan(ctl.xtrs[1].core.plan())
    assert {h.port for h in ctl.xtrs[1].core.plan().hosts} >= {10, 11, 12, 13, 14, 15}
    clock.advance(1.0)  # a quiet spell: the next change leaves at once
    arrive(ctl, 6)
    assert len(pushes) == 3 and switch.held() == compile_plan(ctl.xtrs[1].core.plan())


def test_a_packet_reinjected_while_its_push_waits_leaves_after_that_push(lab):
    """Re-injected before its host's flows, a packet meets the learning flow again and comes
    straight back; so it waits for the deferred push and follows its flow-mods."""
    ctl, switch, clock, pushes = lab
    arrive(ctl, 0)
    assert len(switch.packet_outs) == 1  # a lone arrival: pushed, then re-injected at once
    clock.advance(0.001)
    switch.clear()
    arrive(ctl, 1)  # deferred: its push waits, and so does its packet
    arrive(ctl, 1)  # the host's next packet: known now, its flows still missing
    assert len(pushes) == 1 and switch.packet_outs == []
    assert ctl.counters["packets_held_for_push"] == 2
    clock.advance(0.1)
    ctl.run_timers()
    assert len(pushes) == 2
    kinds = [type(m).__name__ for m in switch.messages]
    first_out = kinds.index("PacketOutMsg")
    assert "OFPFlowMod" in kinds[:first_out] and "OFPFlowMod" not in kinds[first_out:]
    assert [p.in_port for p in switch.packet_outs] == [11, 11]
    assert any(dict(f.match).get("in_port") == 11 for f in switch.held().flows)  # what they now meet


def test_reinjections_held_for_a_push_are_bounded(lab, monkeypatch):
    from lisp_ryu.glue import controller as controller_mod
    monkeypatch.setattr(controller_mod, "MAX_HELD_REINJECTIONS", 3)
    ctl, switch, clock, pushes = lab
    arrive(ctl, 0)
    clock.advance(0.001)
    for _ in range(5):
        arrive(ctl, 1)
    assert ctl.counters["packets_held_for_push"] == 3
    assert ctl.counters["packets_held_for_push_dropped"] == 2
    clock.advance(0.1)
    ctl.run_timers()
    assert len([p for p in switch.packet_outs if p.in_port == 11]) == 3
    assert ctl.sessions[1].reinject == []


def test_a_push_costs_its_cpu_time_not_the_wall_time_it_waited_for_a_core():
    """The hold-off follows what waiting saves: the CPU of compiling and diffing.  A push whose
    process lost the core for 0.5 s meanwhile (the switches busy on the same cores) costs its CPU."""
    clock = Clock(100.0)
    underlay = Underlay(clock)
    ctl = underlay.bind(Controller.from_config(config.parse(yaml.safe_load(CONFIG)), open_socket=underlay.open_socket,
                                               clock=underlay.clock, wall_clock=underlay.clock))
    underlay.connect(ctl, 1)
    ctl.start()
    underlay.settle()
    core = ctl.xtrs[1].core
    real_plan = core.plan

    def preempted_plan():
        clock.advance(0.5)  # the process waited half a second for a core
        return real_plan()

    core.plan = preempted_plan
    assert ctl.push(1, "a change", clock) < 0.05
