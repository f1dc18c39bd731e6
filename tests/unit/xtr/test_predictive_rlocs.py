"""An ITR given predictive RLOCs (draft-ietf-lisp-predictive-rlocs) by another vendor's Map-Server or ETR.

The mapping's best locator is a Replication List Entry (RFC 8060 LCAF 13): every packet goes to
each RLOC in it, an OpenFlow group of type ALL, one bucket per RLOC.  Before, the ITR skipped the
RLE: it used the plain locators behind it alone, or dropped the EID's traffic when it had none.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import replace

import pytest
import yaml

from lisp_ryu import config
from lisp_ryu.effects import PacketOut
from lisp_ryu.flows.compiler import compile_plan
from lisp_ryu.flows.readback import remotes_installed
from lisp_ryu.flows.model import GroupAction, Output, SetField
from lisp_ryu.flows.pipeline import Table
from lisp_ryu.plan import FailoverPort, RemoteAction, RemoteEntry, Rloc
from lisp_ryu.wire import auth
from lisp_ryu.wire.address import InstanceIdAddress
from lisp_ryu.wire.locator_lists import ReplicationList, RleEntry
from lisp_ryu.wire.messages import MapNotify
from lisp_ryu.wire.prefix import EidPrefix
from lisp_ryu.wire.records import Locator, MappingRecord
from lisp_ryu.xtr.core import XtrCore, replication_targets

import test_core
from test_core import KEY, MS, miss, reply_for, request_of, sends

ip = ipaddress.ip_address
OLD, NEW, V6 = ip("198.18.2.2"), ip("198.18.3.3"), ip("2001:db8::3")


@pytest.fixture
def xtr():
    """dc1 of test_core: instance 42, its Map-Server and Map-Resolver at MS."""
    cfg = config.parse(yaml.safe_load(test_core.CONFIG)).xtrs[0]
    counter = itertools.count(1000)
    return XtrCore(cfg, nonces=lambda: next(counter))


def rle(*addresses, priority=1, reachable=True):
    return Locator(ReplicationList(tuple(RleEntry(a) for a in addresses)), priority=priority, reachable=reachable)


def test_the_best_locator_being_a_replication_list_means_a_copy_to_each_of_its_rlocs():
    assert replication_targets((rle(OLD, NEW), Locator(OLD, priority=2))) == (OLD, NEW)
    # Equal priority: the RLE wins over a plain locator whatever the order; two RLEs add up, each RLOC once.
    assert replication_targets((Locator(OLD), rle(NEW, V6))) == (NEW, V6)
    assert replication_targets((rle(OLD, NEW), rle(NEW, V6))) == (OLD, NEW, V6)
    # A better plain locator, or an RLE that cannot be used, leaves the ordinary choice.
    assert replication_targets((Locator(OLD, priority=1), rle(OLD, NEW, priority=2))) == ()
    assert replication_targets((rle(OLD, NEW, priority=255), Locator(OLD, priority=2))) == ()
    assert replication_targets((rle(OLD, NEW, reachable=False), Locator(OLD, priority=2))) == ()
    no_ip = Locator(ReplicationList((RleEntry(InstanceIdAddress(5, OLD)),)))
    assert replication_targets((no_ip, Locator(NEW, priority=2))) == ()
    assert replication_targets((rle(OLD, priority=3), Locator(NEW, priority=255))) == (OLD,)


def test_an_answer_with_predictive_rlocs_replicates_every_packet_held_or_not(xtr):
    (send,) = sends(miss(xtr, data=b"first"))
    effects = xtr.handle_control(reply_for(request_of(send)[1], locators=(rle(OLD, NEW), Locator(OLD, priority=2))),
                                 MS, 4342, 0.1)
    assert [e.data for e in effects if isinstance(e, PacketOut)] == [b"first"]  # re-injected into the flows below
    (remote,) = xtr.plan().remotes
    assert (remote.action, remote.replicate, remote.rlocs) == (RemoteAction.ENCAP, (OLD, NEW), ())
    state = compile_plan(xtr.plan())
    [flow] = [f for f in state.flows if f.table == Table.ROUTE and f.match_dict().get("ipv4_dst")
              == ("10.2.0.0", "255.255.0.0")]
    [action] = flow.actions
    assert isinstance(action, GroupAction)
    [group] = [g for g in state.groups if g.group_id == action.group_id]
    assert group.type == "all"
    sent_to = [[a.value for a in b.actions if isinstance(a, SetField) and a.field == "tun_ipv4_dst"]
               for b in group.buckets]
    assert sent_to == [[str(OLD)], [str(NEW)]]
    for bucket in group.buckets:
        assert SetField("tunnel_id", 42) in bucket.actions and isinstance(bucket.actions[-1], Output)
    # Only the plain locator behind the RLE is probed and BFD-watched (the ETRs of a replication
    # that do not hold the EID drop their copies: nothing to fail over between).
    assert xtr.plan().peers == (OLD,)


def test_when_the_mapping_settles_the_replication_ends(xtr):
    """The Map-Server publishes the EID at its new RLOC alone (the move is over): one group less."""
    (send,) = sends(miss(xtr))
    xtr.handle_control(reply_for(request_of(send)[1], locators=(rle(OLD, NEW),)), MS, 4342, 0.1)
    assert [g.type for g in compile_plan(xtr.plan()).groups] == ["all"]
    settled = MappingRecord.for_prefix(EidPrefix.from_network("10.2.0.0/16", 42), (Locator(NEW),))
    notify = auth.sign(MapNotify(nonce=778, records=(settled,), xtr_id=xtr.xtr_id, site_id=xtr.site_id), KEY, 1)
    xtr.handle_control(notify.encode(), MS, 4342, 1.0)
    (remote,) = xtr.plan().remotes
    assert (remote.replicate, [r.address for r in remote.rlocs]) == ((), [NEW])
    assert not compile_plan(xtr.plan()).groups


def test_a_replication_compiles_with_bfd_failover_ports_and_is_adopted_back_after_a_restart(xtr):
    entry = RemoteEntry(42, ipaddress.ip_network("10.2.0.0/16"), RemoteAction.ENCAP, replicate=(OLD, NEW, V6))
    plain = RemoteEntry(42, ipaddress.ip_network("10.3.0.0/16"), RemoteAction.ENCAP, (Rloc(OLD), Rloc(NEW)))
    base = xtr.plan()
    for ports in ((), (FailoverPort(OLD, 7, "lisp-bfd-1"), FailoverPort(NEW, 8, "lisp-bfd-2"))):
        plan = replace(base, remotes=(entry, plain), failover_ports=ports)
        state = compile_plan(plan)
        alls = [g for g in state.groups if g.type == "all"]
        assert len(alls) == 1 and len(alls[0].buckets) == 3
        assert len({g.group_id for g in state.groups}) == len(state.groups)  # no id shared with the plain entry's
        adopted = {e.prefix: e for e in remotes_installed(state)}
        assert adopted[entry.prefix].replicate == (OLD, NEW, V6)
        assert not adopted[plain.prefix].replicate
    # Adoption after a restart keeps the switch replicating until the re-resolution answers.
    xtr.adopt([entry], 0.0)
    (remote,) = xtr.plan().remotes
    assert remote.replicate == (OLD, NEW, V6)


def test_an_etr_answering_with_only_its_predictive_rlocs_is_believed(xtr):
    """A Map-Reply straight from an ETR must name the ETR among its RLOCs: inside an RLE counts."""
    (send,) = sends(miss(xtr))
    xtr.handle_control(reply_for(request_of(send)[1], locators=(rle(NEW, OLD),)), OLD, 4342, 0.1)
    (remote,) = xtr.plan().remotes
    assert remote.replicate == (NEW, OLD)
    assert xtr.counters.get("map_reply_refused_source", 0) == 0


def test_this_xtrs_own_rloc_in_the_list_gets_no_copy(xtr):
    """The EID may be predicted to come here: while it is not, a copy to ourselves has no one to go to."""
    own = ip("198.18.1.2")
    (send,) = sends(miss(xtr))
    xtr.handle_control(reply_for(request_of(send)[1], locators=(rle(OLD, own, NEW),)), MS, 4342, 0.1)
    (remote,) = xtr.plan().remotes
    assert remote.replicate == (OLD, NEW)
    (send,) = sends(miss(xtr, dst="10.5.0.1"))
    xtr.handle_control(reply_for(request_of(send)[1], prefix="10.5.0.0/16", locators=(rle(own),)), MS, 4342, 0.2)
    [alone] = [r for r in xtr.plan().remotes if str(r.prefix) == "10.5.0.0/16"]
    assert (alone.replicate, alone.rlocs) == ((), ())
    [flow] = [f for f in compile_plan(xtr.plan()).flows
              if f.match_dict().get("ipv4_dst") == ("10.5.0.0", "255.255.0.0")]
    assert flow.actions == ()  # dropped here, not tunnelled back in
