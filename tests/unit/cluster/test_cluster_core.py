"""The pure core of the replicated mapping store: keys, the replica image, write planning,
ETR sessions, health (no etcd here; tests/cluster has the real-etcd ones)."""

from __future__ import annotations

import pytest

from lisp_ryu.mapserver import cluster
from lisp_ryu.mapserver.cluster import (
    Change,
    Delete,
    Expect,
    Health,
    Image,
    Put,
    RawEvent,
    SchemaKeyError,
    Sessions,
    parse_key,
    plan,
)


# --------------------------------------------------------------------------- keys


def test_keys_round_trip():
    key = cluster.map_key(42, "10.1.0.5/32", "xtr:00ff")
    assert key == b"/lisp/map/0000000042/10.1.0.5/32/xtr:00ff"
    assert parse_key(key) == cluster.ParsedKey("map", 42, "10.1.0.5/32", "xtr:00ff")
    assert key.startswith(cluster.map_prefix(42)) and not key.startswith(cluster.map_prefix(4))
    v6 = cluster.sub_key(0, "2001:db8::/32", "xtr:01")
    assert parse_key(v6) == cluster.ParsedKey("sub", 0, "2001:db8::/32", "xtr:01")
    assert parse_key(cluster.etr_key("dc1", "rloc:198.18.0.1")) == cluster.ParsedKey(
        "etr", name="rloc:198.18.0.1", site="dc1")
    assert parse_key(cluster.static_key(7, "10.9.0.0/16")) == cluster.ParsedKey("static", 7, "10.9.0.0/16")
    for kind in ("policy", "override", "role", "node"):
        assert parse_key(cluster.named_key(kind, "x")) == cluster.ParsedKey(kind, name="x")


@pytest.mark.parametrize("make", [
    lambda: cluster.map_key(1, "10.0.0.0", "e"),        # no length
    lambda: cluster.map_key(1, "10.0.0.0/x", "e"),
    lambda: cluster.map_key(-1, "10.0.0.0/8", "e"),
    lambda: cluster.map_key(1, "10.0.0.0/8", "a/b"),    # a slash in a component
    lambda: cluster.etr_key("", "e"),
    lambda: cluster.named_key("map", "x"),
])
def test_bad_key_components_are_refused(make):
    with pytest.raises(SchemaKeyError):
        make()


@pytest.mark.parametrize("key", [b"/other/x", b"/lisp/map/1/2", b"/lisp/etr/only", b"/lisp/nope/x", b"\xff"])
def test_keys_outside_the_schema_are_refused(key):
    with pytest.raises(SchemaKeyError):
        parse_key(key)


# --------------------------------------------------------------------------- the image

K1, K2 = cluster.map_key(1, "10.0.0.1/32", "e1"), cluster.map_key(1, "10.0.0.2/32", "e1")
MARK_A = cluster.named_key("node", "a")


def put(key, value, rev, lease=0):
    return RawEvent("PUT", key, value, rev, lease)


def delete(key, rev):
    return RawEvent("DELETE", key, b"", rev)


def test_events_become_one_batch_per_revision_with_its_origin():
    image = Image()
    assert image.load(1, []) is None
    batches = image.apply([put(K1, b"x", 2), put(MARK_A, b"\x01", 2), put(K2, b"y", 3), delete(K1, 4)])
    assert [(b.revision, b.origin) for b in batches] == [(2, "a"), (3, None), (4, None)]
    assert batches[0].changes == (Change(K1, None, b"x"),)
    assert batches[2].changes == (Change(K1, b"x", None),)
    assert image.revision == 4 and image.digest() == {K2: b"y"}


def test_a_resumed_watch_replays_nothing_twice():
    image = Image()
    image.load(1, [])
    image.apply([put(K1, b"x", 2), put(K2, b"y", 2)])
    again = image.apply([put(K1, b"x", 2), put(K2, b"y", 2), put(K1, b"z", 3)])
    assert [b.revision for b in again] == [3]
    assert image.digest() == {K1: b"z", K2: b"y"}


def test_a_rewrite_of_the_same_value_is_no_change():
    image = Image()
    image.load(1, [(K1, b"x", 1, 0)])
    assert image.apply([put(K1, b"x", 2), put(MARK_A, b"", 2)]) == []
    assert image.revision == 2


def test_progress_notification_moves_the_revision():
    image = Image()
    image.load(5, [])
    assert image.apply([], header_revision=9) == [] and image.revision == 9


def test_a_reread_reports_the_difference_once():
    image = Image()
    first = image.load(3, [(K1, b"x", 2, 0), (K2, b"y", 3, 0), (MARK_A, b"", 3, 0)])
    assert first.reread and first.changes == (Change(K1, None, b"x"), Change(K2, None, b"y"))
    batch = image.load(10, [(K1, b"x2", 8, 0), (MARK_A, b"", 10, 0)])
    assert batch.reread and batch.origin is None and batch.revision == 10
    assert set(batch.changes) == {Change(K1, b"x", b"x2"), Change(K2, b"y", None)}
    assert image.load(10, [(K1, b"x2", 8, 0)]) is None


# --------------------------------------------------------------------------- planning


def test_only_what_differs_is_written():
    held = {K1: (b"x", 7)}
    p = plan(held.get, {K1: b"x", K2: b"y", cluster.map_key(1, "10.0.0.3/32", "e"): None}, {K1: 7, K2: 7})
    assert p.ops == (Put(K2, b"y", 7),) and p.unchanged == 2
    assert plan(held.get, {K1: b"x"}, {K1: 8}).ops == (Put(K1, b"x", 8),)  # a new lease is a change
    assert plan(held.get, {K1: None}).ops == (Delete(K1),)
    assert plan(held.get, {K1: b"x"}, {K1: 7}, [Expect(K2, 0)]).expects == (Expect(K2, 0),)


# --------------------------------------------------------------------------- sessions and health


def test_a_refresh_renews_the_lease_at_most_every_third_of_its_ttl():
    sessions, etr = Sessions(), cluster.etr_key("dc1", "e1")
    assert sessions.on_refresh(etr, 0.0) == "open"
    sessions.opened(etr, 99, 9, 0.0)
    assert [sessions.on_refresh(etr, t) for t in (1.0, 2.9, 3.0)] == ["none", "none", "keepalive"]
    sessions.renewed(etr, 3.0)
    assert sessions.on_refresh(etr, 5.0) == "none"
    sessions.lost(etr)
    assert sessions.on_refresh(etr, 5.0) == "open"


def test_health_logs_each_transition_once():
    health = Health()
    assert not health.acknowledging
    assert "acknowledging" in health.success(1.0)
    assert health.success(2.0) is None
    line = health.failure(3.0, "timed out")
    assert "not acknowledging" in line and not health.acknowledging
    assert health.failure(4.0, "still") is None
    assert health.view(5.0) == {"state": "degraded", "reason": "still", "for_s": 2.0, "acknowledging": False}
    assert "again" in health.success(6.0) and health.acknowledging


def test_a_replica_that_stops_following_is_reported_after_max_lag():
    lag = cluster.LagCheck(max_lag=1.0)
    assert lag.observe(10, 10, 0.0) is None
    assert lag.observe(12, 10, 0.1) is None  # behind, but not for long
    assert lag.observe(15, 11, 0.9) is None
    assert "has not reached revision 12" in lag.observe(15, 11, 1.2)
    assert lag.observe(15, 12, 1.3) is None  # caught up with 12; 15 was seen at 0.9
    assert lag.observe(15, 14, 2.0) is not None
    assert lag.observe(20, 20, 2.1) is None and not lag.pending
