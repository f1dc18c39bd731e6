"""The core's side of the replicated store, pure: what a change hands to etcd, and how another node's
change comes in without anybody being told twice (etcd itself: tests/cluster)."""

from __future__ import annotations

import msgpack

from lisp_ryu.mapping.policy import Rule, StaticMapping
from lisp_ryu.mapserver import cluster
from lisp_ryu.mapserver.replica import ReplicaLink
from lisp_ryu.wire import MapNotify

from mapserver_helpers import ETR1, ITR, T0, make_core, net, only
from test_ms_pubsub import XTR_ID, ack, register, subscribe


def node():
    link = ReplicaLink()
    return make_core(store=link), link


def commit(link: ReplicaLink) -> list[tuple[bytes, bytes | None]]:
    """What the message just handled wrote (as etcd would deliver it to the other nodes)."""
    _, writes = link.take()
    return sorted(writes.items())


def test_a_subscription_made_at_a_is_notified_by_b_which_shares_the_next_nonce():
    a, a_link = node()
    b, b_link = node()
    register(a, "10.1.0.0/16", ["198.18.1.1"], xtr_id=1)
    b.apply_replica(commit(a_link), T0)
    confirm = only(subscribe(a, "10.1.2.3", confirm=False), MapNotify)[0][0]
    commit(a_link)  # (the candidate writes nothing)
    ack(a, confirm, None, T0 + 1.5)
    writes = commit(a_link)
    assert [cluster.parse_key(k).kind for k, _ in writes] == ["sub"]
    assert b.apply_replica(writes, T0 + 1.6) == [] and b.subscription_count == 1

    effects = register(b, "10.1.0.0/16", ["198.18.1.2"], xtr_id=1, now=T0 + 10)
    [(notify_effect, notify)] = [(e, m) for e, m in only(effects, MapNotify) if e.destination == ITR]
    [sub_at_a] = a.subscriptions()
    assert notify.nonce == sub_at_a.nonce + 1
    writes = commit(b_link)
    kinds = {cluster.parse_key(k).kind for k, _ in writes}
    assert kinds == {"map", "sub"}  # the change and the nonce it used: one commit
    # A applies B's commit: nothing sent by A, its tables and the nonce follow.
    changed = a.apply_replica(writes, T0 + 10.01)
    assert changed == [(0, net("10.1.0.0/16"))]
    assert a.pending_notifications == 0
    assert next(a.subscriptions()).nonce == notify.nonce
    assert [str(loc.address) for loc in a.lookup(0, net("10.1.0.0/16").network_address).locators] == ["198.18.1.2"]


def test_policy_and_static_mappings_are_written_and_applied_quietly():
    a, a_link = node()
    b, _ = node()
    register(a, "10.1.0.0/16", ["198.18.1.1"])
    subscribe(a, "10.1.2.3")
    replicated = commit(a_link)
    b.apply_replica(replicated, T0 + 2)
    rule = Rule.from_dict({"id": "deny", "iid": 0, "destinations": ["10.1.0.0/16"], "action": "deny"})
    notified = a.set_rule(rule, T0 + 3)
    assert len(notified) == 1  # A's subscriber, told by A
    a.set_static(StaticMapping.from_dict({"iid": 0, "prefix": "10.5.0.0/16", "rlocs": [{"address": "192.0.2.5"}]}),
                 T0 + 3)
    writes = dict(commit(a_link))
    assert cluster.named_key("policy", "deny") in writes and cluster.static_key(0, "10.5.0.0/16") in writes
    assert b.apply_replica(sorted(writes.items()), T0 + 3) == [] and b.pending_notifications == 0
    assert b.policy.rule("deny") == rule
    assert [str(loc.address) for loc in b.lookup(0, net("10.5.1.1/32").network_address).locators] == ["192.0.2.5"]
    assert not b.lookup(0, net("10.1.2.3/32").network_address).locators
    b.apply_replica([(cluster.named_key("policy", "deny"), None)], T0 + 4)
    assert b.policy.rule("deny") is None


def test_an_expiry_is_applied_silently_then_published_by_whoever_must():
    a, a_link = node()
    register(a, "10.1.0.0/16", ["198.18.1.1"])
    subscribe(a, "10.1.2.3")
    [(key, _)] = [(k, v) for k, v in commit(a_link) if k.startswith(b"/lisp/map/")]
    changed = a.apply_replica([(key, None)], T0 + 200)  # the ETR's lease expired: etcd deleted the key
    assert changed == [(0, net("10.1.0.0/16"))] and a.registration_count == 0 and a.pending_notifications == 0
    [(effect, notify)] = only(a.publish_current(changed, T0 + 200), MapNotify)
    assert effect.destination == ITR and notify.records[0].locators == () and notify.records[0].ttl == 0


def test_a_change_never_committed_is_never_retransmitted():
    a, a_link = node()
    register(a, "10.1.0.0/16", ["198.18.1.1"])
    subscribe(a, "10.1.2.3")
    commit(a_link)
    effects = register(a, "10.1.0.0/16", ["198.18.1.9"], now=T0 + 5)
    assert a.pending_notifications == 1
    assert a.unsend(effects) == 1 and a.pending_notifications == 0
    assert a.handle_timer(T0 + 20) == []


def test_values_are_the_journal_entries_a_refresh_does_not_change():
    a, a_link = node()
    register(a, "10.1.0.0/16", ["198.18.1.1"], now=T0)
    first = commit(a_link)
    register(a, "10.1.0.0/16", ["198.18.1.1"], now=T0 + 60)
    assert commit(a_link) == []  # a refresh hands nothing over ...
    register(a, "10.1.0.0/16", ["198.18.1.1"], now=T0 + 130)
    assert commit(a_link) == first  # ... or, re-journalled before its stored expiry, the same bytes: no write
    value = msgpack.unpackb(first[0][1], raw=False)
    assert value["t"] == "reg" and "exp" not in value and value["src"] == str(ETR1)
    assert XTR_ID  # (the subscriber's id keys its subscription: /lisp/sub/.../<xTR-ID hex>)
