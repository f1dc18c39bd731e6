"""A controller restart: the xTR takes back from its switch's flows where the workloads are.

The restarted core knows its configuration only; the switch still delivers to
the workloads learned since (and no longer to the configured ones that left).
What the flows say is read back (flows.readback) and taken over before the
first push, which would otherwise delete it.  And a configured host that left
stays away once its redirect ends, until it is seen here again.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import replace

import pytest
import yaml

from lisp_ryu import config
from lisp_ryu.effects import HostArrived, RegisterChanges
from lisp_ryu.flows.compiler import compile_plan
from lisp_ryu.flows.readback import hosts_installed, remotes_installed
from lisp_ryu.plan import LocalHost, RemoteAction, RemoteEntry, Rloc
from lisp_ryu.wire.control import decode_message
from lisp_ryu.wire.prefix import EidPrefix
from lisp_ryu.wire.records import Locator, MappingRecord
from lisp_ryu.xtr import mobility
from lisp_ryu.xtr.core import XtrCore
from support.effects import as_the_glue_runs
from unit.xtr.test_core import CONFIG

ip = ipaddress.ip_address
CONFIGURED = ip("10.1.0.10")  # configured here, port 1
VISITOR = LocalHost(42, ip("10.2.0.77"), "02:00:00:02:00:4d", 5)  # learned before the restart
VISITOR6 = LocalHost(42, ip("fd00:2::77"), "02:00:00:02:00:4d", 5)
DC2 = ip("198.18.2.2")


def core() -> XtrCore:
    """test_core's dc1 (10.1.0.10 configured on port 1, learning 10.0.0.0/8), learning fd00::/16 too."""
    doc = yaml.safe_load(CONFIG)
    xtr = doc["xtrs"][0]
    xtr["gateways"].append({"subnet": "fd00::/16", "ip": "fd00:1::1", "mac": "02:00:00:00:01:01", "iid": 42})
    xtr["dynamic_eid_prefixes"].append({"prefix": "fd00::/16", "iid": 42})
    counter = itertools.count(1000)
    return XtrCore(config.parse(doc).xtrs[0], nonces=lambda: next(counter))


def switch_of(xtr: XtrCore, hosts=(), remotes=()):
    """What a switch holds that `xtr` programmed with `hosts` learned and `remotes` cached."""
    plan = xtr.plan()
    return compile_plan(replace(plan, hosts=plan.hosts + tuple(hosts), remotes=plan.remotes + tuple(remotes)))


def test_the_hosts_a_switch_delivers_to_read_back_whole():
    xtr = core()
    installed = switch_of(xtr, hosts=(VISITOR, VISITOR6))
    configured = LocalHost(42, CONFIGURED, "02:00:00:01:00:0a", 1)
    assert hosts_installed(installed) == [configured, VISITOR, VISITOR6]
    assert remotes_installed(installed) == []  # delivery flows are not map-cache entries


def test_a_learned_workload_is_taken_back_registered_and_told_to_the_other_xtrs():
    xtr = core()
    xtr.start(0.0)
    installed = switch_of(xtr, hosts=(VISITOR, VISITOR6))
    effects = xtr.adopt_hosts(hosts_installed(installed), remotes_installed(installed), 1.0)
    assert compile_plan(xtr.plan()) == installed  # the first push deletes nothing
    assert RegisterChanges() in effects
    assert sorted(str(e.record.eid_prefix) for e in effects if isinstance(e, HostArrived)) == \
        ["[42]10.2.0.77/32", "[42]fd00:2::77/128"]
    registered = [str(r.eid_prefix) for e in as_the_glue_runs(xtr, effects, 1.0) if getattr(e, "what", "")
                  .startswith("Map-Register") for r in decode_message(e.payload).records]
    assert "[42]10.2.0.77/32" in registered and "[42]fd00:2::77/128" in registered
    assert xtr.counters["dynamic_eid_adopted"] == 2
    # The switch reconnects later (the controller stayed up): nothing new.
    assert xtr.adopt_hosts(hosts_installed(installed), [], 2.0) == []


def test_a_host_outside_the_dynamic_prefixes_is_not_taken_back():
    xtr = core()
    stranger = LocalHost(42, ip("192.168.9.9"), "02:00:00:09:09:09", 6)
    installed = switch_of(xtr, hosts=(stranger,))
    assert xtr.adopt_hosts(hosts_installed(installed), [], 1.0) == []
    assert stranger not in xtr.plan().hosts
    assert xtr.counters["adopt_host_outside_dynamic_prefixes"] == 1


def test_a_configured_host_the_switch_sends_elsewhere_is_not_claimed():
    xtr = core()
    xtr.start(0.0)
    gone = RemoteEntry(42, ipaddress.ip_network("10.1.0.10/32"), RemoteAction.ENCAP, (Rloc(DC2),))
    plan = xtr.plan()
    installed = compile_plan(replace(plan, hosts=(), remotes=(gone,)))  # it left before the restart
    effects = xtr.adopt_hosts(hosts_installed(installed), remotes_installed(installed), 1.0)
    assert effects and not any(isinstance(e, HostArrived) for e in effects)
    plan = xtr.plan()
    assert CONFIGURED not in {h.ip for h in plan.hosts}
    assert [(r.ip, r.rloc) for r in plan.redirects] == [(CONFIGURED, DC2)]
    assert xtr.counters["configured_host_found_departed"] == 1


def test_a_configured_host_still_delivered_to_stays_and_nothing_changes():
    xtr = core()
    xtr.start(0.0)
    installed = switch_of(xtr)
    assert xtr.adopt_hosts(hosts_installed(installed), remotes_installed(installed), 1.0) == []
    assert CONFIGURED in {h.ip for h in xtr.plan().hosts}


@pytest.mark.parametrize("comes_back", [False, True])
def test_a_configured_host_that_left_stays_away_after_its_redirect_until_seen_here(comes_back):
    """Its redirect ends after REDIRECT_LIFETIME; before, the configuration then placed it here
    again: its old site delivered its own hosts' traffic for it to the port it had left."""
    xtr = core()
    xtr.start(0.0)
    xtr.moved_elsewhere(MappingRecord.for_prefix(EidPrefix(CONFIGURED, 32, 42), (Locator(DC2),)), "dc2", 1.0)
    assert not xtr.is_here(42, CONFIGURED)
    xtr.handle_timer(2.0 + mobility.REDIRECT_LIFETIME)
    plan = xtr.plan()
    assert plan.redirects == () and CONFIGURED not in {h.ip for h in plan.hosts}
    assert not xtr.is_here(42, CONFIGURED)
    assert all(r.eid_prefix.mask_len != 32 for r in xtr.local_records())
    if comes_back:
        as_the_glue_runs(xtr, xtr.handle_host_seen(1, CONFIGURED, "02:00:00:01:00:0a", b"garp", 100.0), 100.0)
        assert xtr.is_here(42, CONFIGURED) and CONFIGURED in {h.ip for h in xtr.plan().hosts}
