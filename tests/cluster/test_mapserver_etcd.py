"""Map-Servers sharing registrations through a real 3-member etcd (issue 17).

Each node is the real server loop (`StandaloneServer`) around a real core and the real
`ReplicatedStore`/`EtcdStore`, on its own loopback UDP port, in a thread of the test process:
the ETRs and ITRs are UDP sockets.  In-process rather than `lisp-ryu mapserver` processes:
three nodes then cost no interpreter start-ups on the 2 shared cores, and a node "dies" by its
loop and store stopping without resigning anything (what kill -9 leaves in etcd: the ETRs'
leases, alive until their hold time).  The CLI wiring has its own process test below.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time

import pytest

import yaml

from lisp_ryu.config import parse
from lisp_ryu.glue.mapserver_loop import StandaloneServer
from lisp_ryu.glue.mapserver_replica import ReplicatedStore
from lisp_ryu.mapserver.replica import ReplicaLink
from lisp_ryu.mapserver.service import MapServer
from lisp_ryu.wire import MapNotify, MapReply, decode_message
from support import packets

pytestmark = pytest.mark.etcd

CONFIG = """\
map_server:
  rate_limit_per_source: 1000000
  sites:
    - name: dc1
      key: dc1-secret
      eid_prefixes:
        - {prefix: 10.0.0.0/8, accept_more_specifics: true}
"""


class Node:
    def __init__(self, endpoints: list[str], name: str) -> None:
        self.name = name
        config = parse(yaml.safe_load(CONFIG)).map_server
        self.link = ReplicaLink()
        self.core = MapServer(config, nonces=iter(range(1, 1 << 62)).__next__, now=time.time(), store=self.link)
        self.replica = ReplicatedStore(endpoints, name, self.link, timeout=0.5)
        self.replica.start(self.core)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        self.port = udp.getsockname()[1]
        self.server = StandaloneServer(self.core, udp, replica=self.replica)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def crash(self) -> None:
        """Gone without a word: the loop stops, the store's threads stop, nothing resigned."""
        self.server.stop()
        self.replica.store.stop(resign=False)
        self.thread.join(3)
        self.server.udp.close()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.stop()
            self.thread.join(3)
            self.server.udp.close()
        self.replica.stop()

    def health(self) -> str:
        return self.core.store_health


class Client:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def ask(self, node: Node, payload: bytes, timeout: float = 1.0):
        self.sock.sendto(payload, ("127.0.0.1", node.port))
        self.sock.settimeout(timeout)
        try:
            return decode_message(self.sock.recv(65535))
        except socket.timeout:
            return None

    def register(self, node: Node, eid: str, rloc: str, nonce: int, timeout: float = 1.0):
        reply = self.ask(node, packets.map_register([packets.record(eid, [rloc])], "dc1-secret", nonce=nonce, proxy=True,
                                                    want_notify=True, xtr_id=0xE7 + self.port), timeout)
        return isinstance(reply, MapNotify) and reply.nonce == nonce

    def resolve(self, node: Node, eid: str, nonce: int, timeout: float = 1.0) -> list[str]:
        reply = self.ask(node, packets.map_request_ecm(eid, ["127.0.0.1"], nonce=nonce, source_port=self.port),
                         timeout)
        if not isinstance(reply, MapReply) or reply.nonce != nonce:
            return []
        return [str(loc.address) for loc in reply.records[0].locators]


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
