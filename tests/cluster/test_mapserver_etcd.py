"""Map-Servers sharing registrations through a real 3-member etcd (issue 17).

Nodes, ETRs and ITRs: tests/support/mapserver_nodes.py (real server loops, cores and stores
in threads of the test process, real UDP on loopback).
"""

from __future__ import annotations

import statistics
import time

import pytest

from support.mapserver_nodes import Client, Node

pytestmark = pytest.mark.etcd


@pytest.fixture
def nodes(etcd_cluster):
    made: list[Node] = []

    def make(n: int) -> list[Node]:
        for i in range(n):
            made.append(Node(etcd_cluster.endpoints, f"n{i}"))
        return made

    yield make
    for node in made:
        node.stop()


def test_registered_at_a_answered_by_b_with_lag(etcd_cluster, nodes):
    a, b = nodes(2)
    etr, itr = Client(), Client()
    lags = []
    for i in range(300):
        eid = f"10.{1 + i // 250}.{i % 250}.1/32"
        assert etr.register(a, eid, "192.0.2.1", nonce=i + 1)
        acked = time.perf_counter()
        while not itr.resolve(b, eid.split("/")[0], nonce=i + 1, timeout=0.5):
            assert time.perf_counter() - acked < 2, f"{eid} not answered by node B"
        lags.append((time.perf_counter() - acked) * 1000)
    lags.sort()
    p50, p99 = statistics.median(lags), lags[int(len(lags) * 0.99) - 1]
    print(f"\nreplication lag (Map-Notify from A -> Map-Reply from B), {len(lags)} registrations: "
          f"p50 {p50:.2f} ms p99 {p99:.2f} ms max {lags[-1]:.2f} ms")
    assert b.core.registration_count == 300


def test_refresh_writes_nothing(etcd_cluster, nodes):
    a, b = nodes(2)
    etr = Client()
    assert etr.register(a, "10.1.0.1/32", "192.0.2.1", nonce=1)
    time.sleep(0.2)
    revision = a.replica.store.revision
    for n in range(2, 12):  # refreshes: other nonces, same content
        assert etr.register(a, "10.1.0.1/32", "192.0.2.1", nonce=n)
    time.sleep(0.3)
    assert a.replica.store.revision == revision
    assert b.replica.store.revision == revision
    assert a.replica.counters.get("commits.unchanged") == 10
    # A change is written, once.
    assert etr.register(a, "10.1.0.1/32", "192.0.2.2", nonce=20)
    deadline = time.time() + 2
    itr = Client()
    while itr.resolve(b, "10.1.0.1", 21) != ["192.0.2.2"]:
        assert time.time() < deadline
    assert a.replica.store.revision > revision


def test_node_crash_loses_nothing_acknowledged(etcd_cluster, nodes):
    a, b = nodes(2)
    etr, itr = Client(), Client()
    acked = [f"10.3.{i}.1" for i in range(100) if etr.register(a, f"10.3.{i}.1/32", "192.0.2.3", nonce=i + 1)]
    a.crash()
    assert len(acked) == 100
    missing = [e for i, e in enumerate(acked) if itr.resolve(b, e, nonce=i + 1) != ["192.0.2.3"]]
    assert not missing
    # The ETR registers with B now: B acknowledges.
    assert etr.register(b, "10.3.200.1/32", "192.0.2.3", nonce=500)


def test_etcd_member_killed_during_registrations(etcd_cluster, nodes):
    a, b = nodes(2)
    etr, itr = Client(), Client()
    acked = []
    for i in range(200):
        if i == 50:
            etcd_cluster.kill(0)
        eid = f"10.4.{i}.1"
        if etr.register(a, f"{eid}/32", "192.0.2.4", nonce=i + 1):
            acked.append(eid)
    assert len(acked) >= 150  # a few may go unacknowledged while the client moves to another member
    time.sleep(0.5)
    missing = [e for i, e in enumerate(acked) if itr.resolve(b, e, nonce=i + 1) != ["192.0.2.4"]]
    assert not missing
    print(f"\netcd member killed: {len(acked)}/200 acknowledged, all answered by node B")


def test_quorum_lost_then_recovered(etcd_cluster, nodes):
    a, b = nodes(2)
    etr, itr = Client(), Client()
    assert etr.register(a, "10.5.0.1/32", "192.0.2.5", nonce=1)
    time.sleep(0.2)
    etcd_cluster.kill(1)
    etcd_cluster.kill(2)
    deadline = time.time() + 5
    while a.health() == "ok" or b.health() == "ok":
        assert time.time() < deadline, "health never said degraded"
        time.sleep(0.05)
    assert a.health().startswith("degraded: etcd store")
    assert not etr.register(a, "10.5.0.2/32", "192.0.2.5", nonce=2, timeout=0.5)
    assert not etr.register(b, "10.5.0.2/32", "192.0.2.5", nonce=3, timeout=0.5)
    assert itr.resolve(a, "10.5.0.1", 4) == ["192.0.2.5"]
    assert itr.resolve(b, "10.5.0.1", 5) == ["192.0.2.5"]
    assert not itr.resolve(b, "10.5.0.2", 6)  # nothing unacknowledged shows anywhere
    etcd_cluster.restart(1)
    etcd_cluster.restart(2)
    deadline = time.time() + 10
    while not etr.register(a, "10.5.0.2/32", "192.0.2.5", nonce=7, timeout=0.3):
        assert time.time() < deadline, "never acknowledged again"
    assert a.health() == "ok"
    deadline = time.time() + 2
    while itr.resolve(b, "10.5.0.2", 8) != ["192.0.2.5"]:
        assert time.time() < deadline
