"""The replicated mapping store against a real 3-member etcd cluster on loopback.

Figures are printed (run with -s to see them): replication lag, commit latency, role failover.
"""

from __future__ import annotations

import threading
import time

import pytest

from lisp_ryu.glue.etcd_client import EtcdClient, EtcdUnavailable
from lisp_ryu.glue.etcd_store import Conflict, EtcdStore, NotAcknowledged
from lisp_ryu.mapserver import cluster

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(40)]


def rotate(endpoints, n):
    return endpoints[n:] + endpoints[:n]


def open_store(stores, endpoints, node, **kw):
    store = EtcdStore(endpoints, node, **kw).start()
    stores.append(store)
    assert store.health.acknowledging, store.health
    return store


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def wait_until(predicate, timeout=5.0, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def key(i, etr="xtr:0a"):
    return cluster.map_key(42, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32", etr)


def test_a_write_at_node_a_reaches_node_b_replica(etcd_cluster, stores):
    seen: dict[bytes, float] = {}

    def on_change(batch):
        now = time.monotonic()
        for change in batch.changes:
            seen.setdefault(change.key, now)

    a = open_store(stores, etcd_cluster.endpoints, "a")
    b = open_store(stores, rotate(etcd_cluster.endpoints, 1), "b", on_change=on_change)
    n = 500
    started, acked = {}, {}
    for i in range(n):
        k = key(i)
        started[k] = time.monotonic()
        last = a.commit({k: cluster.pack({"rlocs": ["198.18.0.1"], "i": i})}).result(5)
        acked[k] = time.monotonic()
    assert wait_until(lambda: len(seen) >= n)
    # Each replica is its watch's image: A's own last write reaches it by the watch too, and
    # may not have yet when B has seen it (the one extra key of a CI run).
    assert wait_until(lambda: a.revision >= last.revision and b.revision >= last.revision)
    commit_ms = [(acked[k] - started[k]) * 1e3 for k in started]
    lag_ms = [max(0.0, seen[k] - acked[k]) * 1e3 for k in started]
    lag_from_start_ms = [(seen[k] - started[k]) * 1e3 for k in started]
    print(f"\n{n} sequential commits at A: commit p50 {pct(commit_ms, 50):.2f} ms p99 {pct(commit_ms, 99):.2f} ms; "
          f"seen at B after A's ack: p50 {pct(lag_ms, 50):.2f} ms p99 {pct(lag_ms, 99):.2f} ms "
          f"(after A's submit: p50 {pct(lag_from_start_ms, 50):.2f} p99 {pct(lag_from_start_ms, 99):.2f} ms)")
    assert b.image.digest() == a.image.digest()

    # Pipelined: many commits in flight are grouped into few transactions.
    txns = a.counters.get("commit.txns", 0)
    t0 = time.monotonic()
    futures = [a.commit({key(n + i): cluster.pack(i)}) for i in range(n)]
    for f in futures:
        f.result(10)
    elapsed = time.monotonic() - t0
    print(f"{n} pipelined commits: {n / elapsed:.0f} commits/s in {a.counters['commit.txns'] - txns} transactions")
    assert wait_until(lambda: len(seen) >= 2 * n)


def test_every_acknowledged_write_survives_a_killed_member(etcd_cluster, stores):
    a = open_store(stores, etcd_cluster.endpoints, "a", timeout=0.5)
    acked: dict[bytes, bytes] = {}
    ack_times: list[float] = []
    failed = 0
    stop = threading.Event()

    def writer():
        nonlocal failed
        i = 0
        while not stop.is_set():
            k, v = key(i), cluster.pack(i)
            i += 1
            try:
                a.commit({k: v}).result(5)
                acked[k] = v
                ack_times.append(time.monotonic())
            except (NotAcknowledged, EtcdUnavailable):
                failed += 1
                time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert wait_until(lambda: len(acked) >= 100)
        victim = etcd_cluster.leader()
        etcd_cluster.kill(victim)
        at_kill = len(acked)
        assert wait_until(lambda: len(acked) >= at_kill + 200, timeout=10), (len(acked), failed, a.health)
    finally:
        stop.set()
        thread.join(10)
    gap = max(b - a for a, b in zip(ack_times, ack_times[1:]))
    print(f"\nkilled member {victim} (the leader): {len(acked)} writes acknowledged, {failed} refused/failed, "
          f"longest time without an acknowledgement {gap * 1e3:.0f} ms")
    survivors = [m.endpoint for m in etcd_cluster.members if m.alive]
    _, kvs = EtcdClient(survivors).read_prefix(cluster.map_prefix(42))
    stored = {kv.key: kv.value for kv in kvs}
    assert all(stored.get(k) == v for k, v in acked.items())
    b = open_store(stores, survivors, "b")
    assert all(b.get(k) == v for k, v in acked.items())


def test_losing_quorum_stops_acknowledging_then_recovers(etcd_cluster, stores):
    lines = []
    a = open_store(stores, etcd_cluster.endpoints, "a", timeout=0.5, on_health=lambda line, view: lines.append(line))
    k = key(1)
    a.commit({k: b"before"}).result(5)
    assert wait_until(lambda: a.get(k) == b"before")
    etcd_cluster.kill(1)
    etcd_cluster.kill(2)
    t0 = time.monotonic()
    with pytest.raises((EtcdUnavailable, NotAcknowledged)):
        a.commit({key(2): b"during"}).result(5)
    failed_after = time.monotonic() - t0
    assert wait_until(lambda: a.health.state == "degraded", timeout=3)
    with pytest.raises(NotAcknowledged):  # fails fast now
        a.commit({key(3): b"during"}).result(0.1)
    assert a.get(k) == b"before"  # the replica still answers
    etcd_cluster.restart(1, wait=False)
    etcd_cluster.restart(2, wait=False)
    t1 = time.monotonic()
    assert wait_until(lambda: a.health.acknowledging, timeout=10), a.health
    recovered = time.monotonic() - t1
    a.commit({key(4): b"after"}).result(5)
    assert wait_until(lambda: a.get(key(4)) == b"after")
    print(f"\nquorum lost: commit failed after {failed_after * 1e3:.0f} ms; "
          f"acknowledging again {recovered * 1e3:.0f} ms after the members restarted")
    assert any("not acknowledging" in line for line in lines) and any("again" in line for line in lines)


def test_a_replica_behind_the_compaction_reads_again(etcd_cluster, stores):
    a = open_store(stores, etcd_cluster.endpoints, "a")
    for i in range(20):
        a.commit({key(i): cluster.pack(i)}).result(5)
    b = EtcdStore(rotate(etcd_cluster.endpoints, 2), "b").start()
    assert wait_until(lambda: b.image.digest() == a.image.digest())
    b.stop()
    paused = b.image
    # While b is away: changes, deletions, then a compaction past b's revision.
    for i in range(10):
        a.commit({key(i): cluster.pack(-i - 1), key(100 + i): b"new", key(10 + i): None}).result(5)
    client = EtcdClient(etcd_cluster.endpoints)
    client.compact(client.range(b"/lisp/")[0])
    batches = []
    b2 = open_store(stores, rotate(etcd_cluster.endpoints, 2), "b", image=paused, on_change=batches.append)
    assert wait_until(lambda: b2.image.digest() == a.image.digest())
    assert b2.counters.get("replica.compacted") == 1 and b2.counters.get("replica.full_reads") == 1
    assert len(batches) == 1 and batches[0].reread
    assert len(batches[0].changes) == 30  # 10 changed, 10 new, 10 deleted
    # And without a compaction, a resumed replica just follows the watch.
    b2.stop()
    a.commit({key(500): b"x"}).result(5)
    b3 = open_store(stores, etcd_cluster.endpoints, "b", image=b2.image)
    assert wait_until(lambda: b3.get(key(500)) == b"x")
    assert "replica.full_reads" not in b3.counters


def test_a_refresh_costs_no_write_and_expiry_is_the_lease(etcd_cluster, stores):
    expired = []
    a = open_store(stores, etcd_cluster.endpoints, "a")
    b = open_store(stores, rotate(etcd_cluster.endpoints, 1), "b",
                   on_change=lambda batch: batch.origin is None and expired.append(batch))
    writes = {key(i, "xtr:0b"): cluster.pack({"rloc": "198.18.0.2"}) for i in range(10)}
    first = a.register("dc2", "xtr:0b", 2, writes).result(5)
    # A refresh is compared with the node's replica, its watch's image: B's must have A's commit
    # first (a CI run refreshed at B before its watch brought it, and B wrote the 10 keys again).
    assert wait_until(lambda: a.revision >= first.revision and b.revision >= first.revision)
    client = EtcdClient(etcd_cluster.endpoints)
    before = client.range(b"/lisp/")[0]
    for i in range(30):  # 3 s of refreshes, at both nodes (an ETR registers with every Map-Server)
        result = (a if i % 2 else b).register("dc2", "xtr:0b", 2, writes).result(5)
        assert result.written == 0 and result.unchanged == 10
        time.sleep(0.1)
    assert client.range(b"/lisp/")[0] == before  # no revision: no write
    keepalives = a.counters.get("session.keepalives", 0) + b.counters.get("session.keepalives", 0)
    print(f"\n30 refreshes over 3 s (lease TTL 2 s): 0 writes, {keepalives} lease keep-alives")
    assert len(client.range(cluster.map_prefix(42), b"/lisp/map/0000000043")[1]) == 10
    # The ETR stops refreshing: its lease expires and etcd deletes its keys, once, by no node.
    t0 = time.monotonic()
    assert wait_until(lambda: expired and not a.image.digest().keys() & writes.keys(), timeout=6)
    print(f"expired {time.monotonic() - t0:.2f} s after the last refresh")
    assert {c.key for batch in expired for c in batch.changes} >= writes.keys()


def test_the_role_moves_when_its_holder_dies(etcd_cluster, stores):
    a = open_store(stores, etcd_cluster.endpoints, "a")
    b = open_store(stores, rotate(etcd_cluster.endpoints, 1), "b")
    ra, rb = a.role("expiry", ttl=1), b.role("expiry", ttl=1)
    assert wait_until(lambda: ra.holder or rb.holder, timeout=3)
    time.sleep(0.3)
    assert ra.holder != rb.holder  # exactly one
    holder, other = (a, b) if ra.holder else (b, a)
    held, waiting = (ra, rb) if ra.holder else (rb, ra)
    fence = held.fence()
    other.commit({key(1): b"fenced"}, expects=[fence]).result(5)  # the holder's fence holds
    holder.stop(resign=False)  # dies: no resignation, no keep-alive; the lease must lapse
    t0 = time.monotonic()
    assert wait_until(lambda: waiting.holder, timeout=5)
    failover = time.monotonic() - t0
    print(f"\nrole failover after the holder died: {failover * 1e3:.0f} ms (lease TTL 1 s)")
    with pytest.raises(Conflict):  # the dead holder's fence no longer passes
        other.commit({key(2): b"stale"}, expects=[fence]).result(5)
    other.commit({key(3): b"ok"}, expects=[waiting.fence()]).result(5)


def test_a_watch_on_a_hung_member_is_replaced(etcd_cluster, stores):
    leader = etcd_cluster.leader()
    hung = (leader + 1) % 3  # a follower: the cluster keeps committing
    a = open_store(stores, rotate(etcd_cluster.endpoints, leader), "a")
    a.commit({key(1): b"1"}).result(5)
    for attempt in range(5):  # on a loaded machine the first endpoint may time out once and b start elsewhere
        b = open_store(stores, rotate(etcd_cluster.endpoints, hung), f"b{attempt}", timeout=0.5, max_lag=0.5)
        assert wait_until(lambda: b.get(key(1)) == b"1")
        if wait_until(lambda: b._watch is not None and b._watch.endpoint == etcd_cluster.endpoints[hung],
                      timeout=2):
            break
        b.stop()
    else:
        pytest.fail("b's watch never settled on its first endpoint")
    etcd_cluster.pause(hung)  # b's watch (and first endpoint) hangs: open, silent
    try:
        t0 = time.monotonic()
        a.commit({key(2): b"2"}).result(5)
        assert wait_until(lambda: b.get(key(2)) == b"2", timeout=8), (b.health, b.counters)
        print(f"\na hung member's watch replaced: the replica caught up in {time.monotonic() - t0:.2f} s")
        assert b.counters.get("replica.stalled_watches", 0) >= 1
        assert wait_until(lambda: b.health.acknowledging, timeout=3)
    finally:
        etcd_cluster.resume(hung)
