"""Everything the mapping system shares lives in etcd (issue 17): subscriptions, policy, RLOC
overrides and static mappings are answered and acted on by every node, and every change is
notified exactly once cluster-wide — by the node that committed it, or, for a lease expiry that
nobody committed, by the holder of the expiry role, also when that holder dies meanwhile.

Nodes, ETRs and subscribing ITRs are real (tests/support/mapserver_nodes.py) on a real 3-member
etcd on loopback.  "Exactly once" is counted at the subscriber: distinct Map-Notify nonces it
heard for a change (each acknowledged, so a retransmission would repeat a nonce, and a second
notifier would add one).
"""

from __future__ import annotations

import time

import pytest

from lisp_ryu.mapping.policy import RlocOverride, Rule, StaticMapping
from support.mapserver_nodes import Client, Node, Subscriber, rlocs_of, wait_until

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(90)]


@pytest.fixture
def nodes(etcd_cluster):
    made: list[Node] = []

    def make(*names: str, **kw) -> list[Node]:
        new = [Node(etcd_cluster.endpoints, name, **kw) for name in names]
        made.extend(new)
        return new

    yield make
    for node in made:
        node.stop()


def publications(heard, rloc=None):
    """The distinct notifications heard (by nonce), optionally only those naming `rloc`."""
    seen = {}
    for port, nonce, records in heard:
        if rloc is None or rlocs_of(records) == rloc:
            seen.setdefault(nonce, port)
    return seen


def test_subscriber_at_a_hears_a_change_at_b_once_from_b(nodes):
    a, b = nodes("a", "b")
    etr, itr = Client(), Subscriber()
    assert etr.register(b, "10.1.0.1/32", "192.0.2.1", nonce=1)
    assert wait_until(lambda: itr.resolve(a, "10.1.0.1", 2) == ["192.0.2.1"])
    itr.subscribe(a, "10.1.0.1", nonce=3)
    assert wait_until(lambda: b.core.subscription_count == 1), "B never saw the subscription made at A"
    sub = next(b.core.subscriptions())
    assert (sub.xtr_id, sub.port) == (itr.xtr_id, itr.port)

    assert etr.register(b, "10.1.0.1/32", "192.0.2.2", nonce=4)
    heard = itr.wait_for(lambda h: rlocs_of(h[2]) == ["192.0.2.2"], timeout=3)
    told = publications(heard, ["192.0.2.2"])
    assert list(told.values()) == [b.port], f"expected one Map-Notify from B, heard {heard}"
    assert wait_until(lambda: b.core.pending_notifications == 0), "B kept retransmitting an acknowledged Notify"
    assert a.core.pending_notifications == 0  # A sent nothing for B's change
    # The nonce B used is shared: A's next publication to this subscriber follows it.
    assert wait_until(lambda: next(a.core.subscriptions()).nonce == next(b.core.subscriptions()).nonce)

    assert etr.register(a, "10.1.0.1/32", "192.0.2.3", nonce=5)
    heard = itr.wait_for(lambda h: rlocs_of(h[2]) == ["192.0.2.3"], timeout=3)
    told = publications(heard, ["192.0.2.3"])
    assert list(told.values()) == [a.port]
    assert list(told)[0] == (list(publications(itr.heard, ["192.0.2.2"]))[0] + 1) & ((1 << 64) - 1)


def test_policy_and_override_set_at_a_shape_b_answers(nodes):
    a, b = nodes("a", "b")
    etr, itr, watcher = Client(), Client(), Subscriber()
    assert etr.register(a, "10.2.0.1/32", ["192.0.2.1", "192.0.2.2"], nonce=1)
    assert wait_until(lambda: sorted(itr.resolve(b, "10.2.0.1", 2)) == ["192.0.2.1", "192.0.2.2"])
    watcher.subscribe(b, "10.2.0.1", nonce=3)
    assert wait_until(lambda: a.core.subscription_count == 1)

    a.change(lambda core, now: core.set_override(
        RlocOverride.from_dict({"id": "drain", "rloc": "192.0.2.2", "priority": 255}), now))
    assert wait_until(lambda: b.core.policy.override("drain") is not None)
    record = itr.resolve(b, "10.2.0.1", 4, record=True)
    priorities = {str(loc.address): loc.priority for loc in record.locators}
    assert priorities == {"192.0.2.1": 1, "192.0.2.2": 255}
    heard = watcher.wait_for(lambda h: True, timeout=3)
    assert list(publications(heard).values()) == [a.port], heard  # the subscriber of B, told by A, once

    a.change(lambda core, now: core.set_rule(Rule.from_dict(
        {"id": "no-10-2", "iid": 0, "destinations": ["10.2.0.0/16"], "action": "deny"}), now))
    assert wait_until(lambda: b.core.policy.rule("no-10-2") is not None)
    record = itr.resolve(b, "10.2.0.1", 5, record=True)
    assert record is not None and not record.locators, "B still answers what A's rule denies"
    a.change(lambda core, now: core.remove_rule("no-10-2", now))
    assert wait_until(lambda: sorted(itr.resolve(b, "10.2.0.1", 6)) == ["192.0.2.1", "192.0.2.2"])
    with pytest.raises(KeyError):
        a.change(lambda core, now: core.remove_rule("no-10-2", now))


def test_static_mapping_at_b_answered_by_a(nodes):
    a, b = nodes("a", "b")
    itr = Client()
    assert not itr.resolve(a, "10.3.0.9", 1)
    b.change(lambda core, now: core.set_static(StaticMapping.from_dict(
        {"iid": 0, "prefix": "10.3.0.0/24", "rlocs": [{"address": "192.0.2.7"}]}), now))
    assert wait_until(lambda: itr.resolve(a, "10.3.0.9", 2) == ["192.0.2.7"]), "A never answered B's static mapping"
    b.change(lambda core, now: core.remove_static(0, __import__("ipaddress").ip_network("10.3.0.0/24"), now))
    assert wait_until(lambda: not itr.resolve(a, "10.3.0.9", 3))


def test_lease_expiry_notifies_subscribers_once(nodes):
    a, b = nodes("a", "b", registration_ttl=2)
    assert wait_until(lambda: a.holder or b.holder), "nobody took the expiry role"
    etr, itr = Client(), Subscriber()
    assert etr.register(a, "10.4.0.1/32", "192.0.2.4", nonce=1)
    assert wait_until(lambda: itr.resolve(b, "10.4.0.1", 2) == ["192.0.2.4"])
    itr.subscribe(b, "10.4.0.1", nonce=3)
    assert wait_until(lambda: a.core.subscription_count == 1)
    # The ETR stops refreshing: its lease expires (2 s, up to twice that across an etcd leader change).
    heard = itr.wait_for(lambda h: rlocs_of(h[2]) == [], timeout=8)
    told = publications(heard, [])
    holder = a if a.holder else b
    assert list(told.values()) == [holder.port], f"expected one withdrawal from the role holder, heard {heard}"
    assert not itr.resolve(a, "10.4.0.1", 4) and not itr.resolve(b, "10.4.0.1", 5)
    assert a.counter("expiry.batches_acted") + b.counter("expiry.batches_acted") == 1


def test_lease_expiry_while_the_role_holder_is_dead_is_notified_once(nodes):
    a, b = nodes("a", "b", registration_ttl=2, role_ttl=5)
    assert wait_until(lambda: a.holder or b.holder)
    holder, other = (a, b) if a.holder else (b, a)
    etr, itr = Client(), Subscriber()
    assert etr.register(other, "10.5.0.1/32", "192.0.2.5", nonce=1)
    itr.subscribe(other, "10.5.0.1", nonce=2)
    assert wait_until(lambda: holder.core.subscription_count == 1)
    killed = time.monotonic()
    holder.crash()  # its role stays held until its lease lapses (5 s): the ETR's lease (2 s) expires before
    assert wait_until(lambda: not other.core.registration_count, timeout=6), "the ETR's lease never expired"
    expired = time.monotonic()
    assert not other.holder, "the role moved before the dead holder's lease lapsed"
    heard = itr.wait_for(lambda h: rlocs_of(h[2]) == [], timeout=12)
    told = publications(heard, [])
    assert list(told.values()) == [other.port], f"expected one withdrawal from the new holder, heard {heard}"
    assert other.holder and other.counter("expiry.takeovers") == 1
    print(f"\nholder killed; lease expired {expired - killed:.1f} s later, nobody holding the role; "
          f"the new holder caught up and notified once")


def test_a_restarted_node_reads_everything_again(nodes, etcd_cluster):
    a, b = nodes("a", "b")
    etr, itr = Client(), Subscriber()
    assert etr.register(b, "10.6.0.1/32", "192.0.2.6", nonce=1)
    itr.subscribe(a, "10.6.0.1", nonce=2)
    a.change(lambda core, now: core.set_override(
        RlocOverride.from_dict({"id": "backup", "rloc": "192.0.2.9", "priority": 9}), now))
    b.change(lambda core, now: core.set_static(StaticMapping.from_dict(
        {"iid": 0, "prefix": "10.7.0.0/16", "rlocs": [{"address": "192.0.2.8"}]}), now))
    assert wait_until(lambda: b.core.subscription_count == 1 and a.core.registration_count == 1)
    a.crash()
    [again] = nodes("a")
    assert again.core.registration_count == 1
    assert again.core.subscription_count == 1
    assert again.core.policy.override("backup") is not None
    assert [(m.iid, str(m.prefix)) for m in again.core.static_mappings()] == [(0, "10.7.0.0/16")]
    assert itr.resolve(again, "10.7.1.1", 3) == ["192.0.2.8"]
    # The subscription made through the old node is notified by whichever node commits a change.
    assert etr.register(again, "10.6.0.1/32", "192.0.2.16", nonce=4)
    heard = itr.wait_for(lambda h: rlocs_of(h[2]) == ["192.0.2.16"], timeout=3)
    assert list(publications(heard, ["192.0.2.16"]).values()) == [again.port]


def test_http_writes_at_one_node_shape_every_node(nodes):
    a, b = nodes("a", "b")
    etr, itr, watcher = Client(), Client(), Subscriber()
    assert etr.register(b, "10.8.0.1/32", "192.0.2.8", nonce=1)
    watcher.subscribe(b, "10.8.0.1", nonce=2)
    assert wait_until(lambda: a.core.subscription_count == 1 and a.core.registration_count == 1)
    status, body = a.write("POST", "/policies", {"id": "deny-8", "iid": 0, "destinations": ["10.8.0.0/16"],
                                                 "action": "deny"})
    assert status == 201 and body["notified_subscribers"] == 1, body
    # Answered once committed: B (and its subscriber, told by A) follow within the replication lag.
    assert wait_until(lambda: not itr.resolve(b, "10.8.0.1", 3), timeout=2), "B still answers what A denied"
    heard = watcher.wait_for(lambda h: True, timeout=3)
    assert list(publications(heard).values()) == [a.port]
    assert b.write("DELETE", "/policies/deny-8")[0] == 200
    assert wait_until(lambda: itr.resolve(a, "10.8.0.1", 4) == ["192.0.2.8"], timeout=2)
    status, body = b.write("PUT", "/static-mappings/0/10.9.0.0/16", {"rlocs": [{"address": "192.0.2.99"}]})
    assert status == 200
    assert wait_until(lambda: itr.resolve(a, "10.9.5.5", 5) == ["192.0.2.99"], timeout=2)
    assert a.write("POST", "/static-mappings", {"iid": 0, "prefix": "10.9.0.0/16",
                                                "rlocs": [{"address": "192.0.2.1"}]})[0] == 409


def test_etcd_down_refuses_writes_and_changes_nothing(nodes, etcd_cluster):
    a, b = nodes("a", "b")
    etcd_cluster.kill(1)
    etcd_cluster.kill(2)
    assert wait_until(lambda: a.health() != "ok", timeout=5)
    status, body = a.write("PUT", "/rloc-overrides/x", {"rloc": "192.0.2.1", "weight": 0})
    assert status == 503, body
    assert a.core.policy.override("x") is None and b.core.policy.override("x") is None


def test_lapsed_subscription_is_deleted_once_by_the_holder(nodes, etcd_cluster):
    import msgpack

    from lisp_ryu.glue.etcd_client import EtcdClient
    from lisp_ryu.mapserver import cluster

    a, b = nodes("a", "b")
    assert wait_until(lambda: a.holder or b.holder)
    key = cluster.sub_key(0, "10.10.0.0/16", f"{0xabc:032x}")
    entry = {"t": "sub", "iid": 0, "net": "10.10.0.0/16", "xid": (0xabc).to_bytes(16, "big"), "sid": 0,
             "rloc": "127.0.0.1", "port": 9, "nonce": 5, "at": time.time(), "exp": time.time() + 1.0, "seids": []}
    client = EtcdClient(etcd_cluster.endpoints)
    client.put(key, msgpack.packb(entry, use_bin_type=True))  # as if an ITR subscribed a while ago
    assert wait_until(lambda: a.core.subscription_count == 1 and b.core.subscription_count == 1)
    assert wait_until(lambda: client.range(key)[1] == [], timeout=5), "the lapsed subscription stayed in etcd"
    client.close()
    assert a.core.subscription_count == 0 and b.core.subscription_count == 0
    # The holder counts the deletion once etcd has done it: the key can be seen gone first (CI,
    # loaded: the counter still read 0).
    deleted = lambda node: node.counter("subscriptions.lapsed_deleted")  # noqa: E731
    assert wait_until(lambda: deleted(a) + deleted(b) >= 1)
    holder, other = (a, b) if a.holder else (b, a)
    assert deleted(holder) == 1 and deleted(other) == 0
