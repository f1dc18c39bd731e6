"""Map-Server nodes on a real etcd, and the ETRs and ITRs that talk to them, for tests/cluster.

Each `Node` is the real server loop (`StandaloneServer`) around a real core and the real
`ReplicatedStore`/`EtcdStore`, on its own loopback UDP port, in a thread of the test process.
In-process rather than `lisp-ryu mapserver` processes: several nodes then cost no interpreter
start-ups on the shared cores, and a node "dies" by its loop and store stopping without
resigning anything (what kill -9 leaves in etcd: the ETRs' leases, alive until their hold
time, and a held role, alive until its lease lapses).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import yaml

from lisp_ryu.config import parse
from lisp_ryu.glue.mapserver_loop import StandaloneServer
from lisp_ryu.glue.mapserver_replica import ReplicatedStore
from lisp_ryu.mapserver.replica import ReplicaLink
from lisp_ryu.mapserver.service import MapServer
from lisp_ryu.wire import MapNotify, MapReply, decode_message
from support import packets

KEY = "dc1-secret"
TOKEN = "cluster-token"
CONFIG = """\
map_server:
  rate_limit_per_source: 1000000
  registration_ttl: {ttl}
  sites:
    - name: dc1
      key: dc1-secret
      eid_prefixes:
        - {{prefix: 10.0.0.0/8, accept_more_specifics: true}}
"""


class Node:
    def __init__(self, endpoints: list[str], name: str, *, registration_ttl: float = 180.0, role_ttl: int = 2,
                 tick: float = 0.2) -> None:
        self.name = name
        config = parse(yaml.safe_load(CONFIG.format(ttl=registration_ttl))).map_server
        self.link = ReplicaLink()
        self.core = MapServer(config, nonces=iter(range(1 << 40, 1 << 62)).__next__, now=time.time(),
                              store=self.link)
        self.replica = ReplicatedStore(endpoints, name, self.link, timeout=0.5, role_ttl=role_ttl, tick=tick)
        self.replica.start(self.core)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        self.port = udp.getsockname()[1]
        self.http = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.http.bind(("127.0.0.1", 0))
        self.http.listen(16)
        self.url = f"http://127.0.0.1:{self.http.getsockname()[1]}/lisp/v1"
        self.server = StandaloneServer(self.core, udp, self.http, replica=self.replica, token=TOKEN)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def crash(self) -> None:
        """Gone without a word: the loop stops, the store's threads stop, nothing resigned.  The loop
        goes first, as in a real process: it reads the replica's inbox, which the replica's stop closes
        (the other way round, the loop's thread died on the closed socket: EBADF)."""
        self.server.stop()
        self._end()
        self.replica.stop(resign=False)

    def _end(self) -> None:
        self.server.udp.sendto(b"", ("127.0.0.1", self.port))  # wakes the loop up
        self.thread.join(3)
        self.server.udp.close()
        self.http.close()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.stop()
            self._end()
        self.replica.stop()

    def write(self, method: str, path: str, body=None, token: str = TOKEN) -> tuple[int, dict]:
        """An HTTP write of the northbound (policies, rloc-overrides, static-mappings) at this node."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def health(self) -> str:
        return self.core.store_health

    def change(self, call, timeout: float = 3.0):
        """A northbound change made at this node (in its loop); returns once etcd committed it."""
        return self.replica.call(call).result(timeout)

    @property
    def holder(self) -> bool:
        return self.replica.holder

    def counter(self, name: str) -> int:
        return self.replica.counters.get(name, 0)


class Client:
    """An ETR or ITR: a UDP socket on loopback."""

    def __init__(self, xtr_id: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.xtr_id = xtr_id if xtr_id is not None else 0xE7 + self.port

    def ask(self, node: Node, payload: bytes, timeout: float = 1.0):
        self.sock.sendto(payload, ("127.0.0.1", node.port))
        self.sock.settimeout(timeout)
        try:
            return decode_message(self.sock.recv(65535))
        except socket.timeout:
            return None

    def register(self, node: Node, eid: str, rloc: str | list[str], nonce: int, timeout: float = 1.0) -> bool:
        rlocs = [rloc] if isinstance(rloc, str) else rloc
        reply = self.ask(node, packets.map_register([packets.record(eid, rlocs)], KEY, nonce=nonce, proxy=True,
                                                    want_notify=True, xtr_id=self.xtr_id), timeout)
        return isinstance(reply, MapNotify) and reply.nonce == nonce

    def resolve(self, node: Node, eid: str, nonce: int, timeout: float = 1.0, record: bool = False):
        reply = self.ask(node, packets.map_request_ecm(eid, ["127.0.0.1"], nonce=nonce, source_port=self.port),
                         timeout)
        if not isinstance(reply, MapReply) or reply.nonce != nonce:
            return None if record else []
        if record:
            return reply.records[0]
        return [str(loc.address) for loc in reply.records[0].locators]


class Subscriber(Client):
    """An ITR subscribed (RFC 9437) through one node: it acknowledges every Map-Notify to whichever
    node sent it, and keeps what it heard: (sending node's port, nonce, records)."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[tuple[int, int, tuple]] = []

    def subscribe(self, node: Node, eid: str, nonce: int, timeout: float = 3.0) -> None:
        self.sock.sendto(packets.map_request_ecm(eid, ["127.0.0.1"], nonce=nonce, source_port=self.port,
                                                 subscribe=True, xtr_id=self.xtr_id), ("127.0.0.1", node.port))
        deadline = time.monotonic() + timeout
        confirmed = False
        while not confirmed and time.monotonic() < deadline:
            for port, message in self._receive(deadline - time.monotonic()):
                # (Its nonce is the request's only when signed: an unsigned one carries the server's.)
                if isinstance(message, MapNotify) and port == node.port:
                    confirmed = True
        assert confirmed, f"no Map-Notify confirming the subscription from node {node.name}"

    def _receive(self, timeout: float) -> list[tuple[int, object]]:
        got = []
        self.sock.settimeout(max(0.01, timeout))
        try:
            data, (_, port) = self.sock.recvfrom(65535)
        except socket.timeout:
            return got
        message = decode_message(data)
        if isinstance(message, MapNotify):
            # Unsigned: no ETR registered this xTR-ID, so no site key signs what it is sent.
            self.sock.sendto(packets.map_notify_ack(message.nonce, message.records, None), ("127.0.0.1", port))
        got.append((port, message))
        return got

    def listen(self, seconds: float) -> list[tuple[int, int, tuple]]:
        """Map-Notifies heard within `seconds` (each acknowledged): (node port, nonce, records)."""
        deadline = time.monotonic() + seconds
        new = []
        while time.monotonic() < deadline:
            for port, message in self._receive(deadline - time.monotonic()):
                if isinstance(message, MapNotify):
                    new.append((port, message.nonce, message.records))
        self.heard += new
        return new

    def wait_for(self, predicate, timeout: float) -> list[tuple[int, int, tuple]]:
        """Listen until a heard Map-Notify satisfies `predicate`, then one more second for anything
        that should not come (a duplicate, a retransmission); all heard."""
        deadline = time.monotonic() + timeout
        heard: list = []
        while time.monotonic() < deadline:
            heard += self.listen(0.1)
            if any(predicate(h) for h in heard):
                heard += self.listen(1.2)
                return heard
        return heard


def rlocs_of(records: tuple) -> list[str]:
    return sorted(str(loc.address) for record in records for loc in record.locators)


def wait_until(predicate, timeout: float = 5.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
