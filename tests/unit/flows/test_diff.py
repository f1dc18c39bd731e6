"""Desired-state diffs: exact, minimal, make-before-break, and idempotent."""

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisp_ryu import plan as pt
from lisp_ryu.flows import compiler as c
from lisp_ryu.flows.diff import AddFlow, AddGroup, AddMeter, DeleteFlow, DeleteGroup, apply, diff
from lisp_ryu.flows.model import DesiredState

ip = ipaddress.ip_address
RLOCS = [ip(f"198.18.{i}.2") for i in range(1, 6)]


@st.composite
def plans(draw):
    entries = {}
    for _ in range(draw(st.integers(0, 12))):
        iid = draw(st.sampled_from([0, 42, 7]))
        plen = draw(st.integers(8, 32))
        addr = draw(st.integers(0, 2**32 - 1))
        prefix = ipaddress.ip_network((addr >> (32 - plen) << (32 - plen), plen))
        action = draw(st.sampled_from(list(pt.RemoteAction)))
        rlocs = tuple(pt.Rloc(r, draw(st.integers(1, 3)), draw(st.integers(0, 100)))
                      for r in draw(st.lists(st.sampled_from(RLOCS), unique=True, max_size=3)))
        entries[(iid, prefix)] = pt.RemoteEntry(iid, prefix, action, rlocs)
    return pt.XtrPlan(tunnel_port=100, host_ports=(pt.HostPort(1, 42),), remotes=tuple(entries.values()),
                     miss_rate_pps=draw(st.sampled_from([50, 100])))


@settings(max_examples=150, deadline=None)
@given(plans(), plans())
def test_diff_reaches_desired_and_reapplying_changes_nothing(before, after):
    installed = c.compile_plan(before)
    desired = c.compile_plan(after)
    ops = diff(installed, desired)
    assert apply(installed, ops) == desired
    assert diff(desired, desired) == []


@settings(max_examples=100, deadline=None)
@given(plans(), plans())
def test_change_and_revert_give_identical_table(before, after):
    a, b = c.compile_plan(before), c.compile_plan(after)
    assert apply(apply(a, diff(a, b)), diff(b, a)) == a


@settings(max_examples=100, deadline=None)
@given(plans(), plans())
def test_make_before_break_order(before, after):
    ops = diff(c.compile_plan(before), c.compile_plan(after))
    kinds = [type(op) for op in ops]
    rank = {AddMeter: 0, AddGroup: 1, AddFlow: 2, DeleteFlow: 3, DeleteGroup: 4}
    ranks = [rank.get(k, 5) for k in kinds]
    assert ranks == sorted(ranks)


def test_one_mapping_change_touches_only_its_flow():
    entry = pt.RemoteEntry(42, ipaddress.ip_network("10.2.0.0/16"), pt.RemoteAction.ENCAP, (pt.Rloc(RLOCS[0]),))
    other = pt.RemoteEntry(42, ipaddress.ip_network("10.3.0.0/16"), pt.RemoteAction.ENCAP, (pt.Rloc(RLOCS[1]),))
    base = pt.XtrPlan(tunnel_port=100, host_ports=(pt.HostPort(1, 42),), remotes=(entry, other))
    moved = pt.XtrPlan(tunnel_port=100, host_ports=(pt.HostPort(1, 42),),
                      remotes=(pt.RemoteEntry(42, entry.prefix, entry.action, (pt.Rloc(RLOCS[2]),)), other))
    ops = diff(c.compile_plan(base), c.compile_plan(moved))
    assert len(ops) == 1 and isinstance(ops[0], AddFlow)
    assert ops[0].flow.match_dict()["ipv4_dst"] == ("10.2.0.0", "255.255.0.0")


def test_from_empty_switch_everything_is_added_and_removal_deletes_all():
    desired = c.compile_plan(pt.XtrPlan(tunnel_port=100, host_ports=(pt.HostPort(1, 42),)))
    ops = diff(DesiredState(), desired)
    assert all(isinstance(op, (AddFlow, AddMeter)) for op in ops)
    back = diff(desired, DesiredState())
    assert {type(op) for op in back} <= {DeleteFlow, DeleteGroup, type(back[-1])}
    assert apply(desired, back) == DesiredState()


def test_flows_and_entries_keep_their_equality_through_a_cached_hash_and_a_pickle():
    """Hashes are cached per object (plan.cached_hash); equal objects made apart still compare
    and hash equal, and a pickle (string hashes differ between processes) carries no hash."""
    import pickle

    entry = pt.RemoteEntry(42, ipaddress.ip_network("10.3.0.0/16"), pt.RemoteAction.ENCAP, (pt.Rloc(RLOCS[0]),))
    twin = pt.RemoteEntry(42, ipaddress.ip_network("10.3.0.0/16"), pt.RemoteAction.ENCAP, (pt.Rloc(RLOCS[0]),))
    assert hash(entry) == hash(twin) and entry == twin and len({entry, twin}) == 1
    flows = c.compile_plan(pt.XtrPlan(tunnel_port=100, remotes=(entry,))).flows
    again = pickle.loads(pickle.dumps(flows))
    assert again == flows and {hash(f) for f in again} == {hash(f) for f in flows}
    assert all("_hash" not in pickle.loads(pickle.dumps(f)).__dict__ for f in flows)
    assert all(f.key_hash == hash(f.key) for f in flows)  # compile's duplicate check cached it
    assert all("_key_hash" not in pickle.loads(pickle.dumps(f)).__dict__ for f in flows)


def test_a_memoised_run_of_flows_pickles_as_its_flows_without_the_hashes_of_this_process():
    import pickle

    from lisp_ryu.flows.model import FlowSet

    entry = pt.RemoteEntry(42, ipaddress.ip_network("10.3.0.0/16"), pt.RemoteAction.ENCAP, (pt.Rloc(RLOCS[0]),))
    run, _groups = c._remote_compiled(entry, None, c._context(100, None, None, None, ()))
    assert isinstance(run, FlowSet) and run.as_set == frozenset(run)
    assert run.key_hashes == {f.key_hash for f in run}
    again = pickle.loads(pickle.dumps(run))
    assert isinstance(again, FlowSet) and again == run and "_key_hashes" not in again.__dict__


@pytest.mark.parametrize("second_rloc", [RLOCS[1], RLOCS[0]])
def test_two_entries_that_make_one_flow_key_are_refused(second_rloc):
    """Across memoised runs too: the same prefix twice (other RLOC, or the very same entry)."""
    prefix = ipaddress.ip_network("10.3.0.0/16")
    first = pt.RemoteEntry(42, prefix, pt.RemoteAction.ENCAP, (pt.Rloc(RLOCS[0]),))
    second = pt.RemoteEntry(42, prefix, pt.RemoteAction.ENCAP, (pt.Rloc(second_rloc),))
    with pytest.raises(c.CompileError, match="two flows share"):
        c.compile_plan(pt.XtrPlan(tunnel_port=100, remotes=(first, second)))


@settings(max_examples=60, deadline=None)
@given(plans(), plans())
def test_a_memoised_compile_after_any_change_equals_a_fresh_one(before, after):
    """The compiler memoises per entry, host and configuration: compiling `after` once `before`
    was compiled gives what compiling it in a fresh process would (the caches cleared)."""
    c.compile_plan(before)
    memoised = c.compile_plan(after)
    for cache in (c._remote_compiled, c._host_flows, c._infrastructure, c._context):
        cache.cache_clear()
    assert memoised == c.compile_plan(after)
