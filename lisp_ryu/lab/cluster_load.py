"""Load on a lab's clustered mapping system, from inside a lab namespace (issue 17's failure tests).

`RegistrationLoad` is an ETR registering a fresh EID every 1/rate s, each with one node in
turn (a third-party ETR that knows one Map-Server: what it registered elsewhere reaches
the others only through the store), asking for a Map-Notify and a proxy reply; it records
which EIDs a node acknowledged, and which node.  An acknowledgement is the claim that the
registration is durable, so each one is a registration the surviving nodes must answer.

`RequestLoad` is an ITR asking for EIDs at a steady rate, one Map-Resolver at a time in
order and moving to the next when one stays silent for `timeout` s, as the xTR does
(lisp_ryu/xtr/resolution.py); the longest time a request waited for its answer is the
failover gap a client saw.

`ask(...)` asks one node for a list of EIDs and says which were not answered with the
expected RLOC.  All of them open their UDP socket inside the namespace (glue/netns.py) and
run on a thread of the calling process; nothing here sends anywhere but the lab's nodes.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import random
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from lisp_ryu.glue.netns import open_udp_socket
from lisp_ryu.wire import (
    LISP_CONTROL_PORT,
    AuthAlgorithm,
    EidPrefix,
    EncapsulatedControlMessage,
    Locator,
    MapNotify,
    MappingRecord,
    MapRegister,
    MapReply,
    MapRequest,
    MapRequestRecord,
    decode_message,
    sign,
)
from lisp_ryu.wire.errors import LispDecodeError

log = logging.getLogger("lisp_ryu.lab")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Eid = tuple[int, IPAddress]  # (instance-ID, host address)


def _open(namespace: str | None, bind: str) -> socket.socket:
    sock = open_udp_socket(namespace, (bind, 0))
    sock.setblocking(False)
    return sock


def _reply_for(data: bytes) -> MapReply | None:
    try:
        message = decode_message(data)
    except LispDecodeError:
        return None
    return message if isinstance(message, MapReply) else None


def map_request(eid: Eid, itr_rloc: IPAddress, port: int, nonce: int) -> bytes:
    """A Map-Request for one host EID inside an ECM, its answer due at (itr_rloc, port)."""
    iid, address = eid
    prefix = EidPrefix(address, address.max_prefixlen, iid)
    request = MapRequest(nonce=nonce, records=(MapRequestRecord.for_prefix(prefix),), itr_rlocs=(itr_rloc,))
    return EncapsulatedControlMessage(message=request, inner_source=itr_rloc, inner_destination=address,
                                      inner_source_port=port).encode()


def answers_with(reply: MapReply, eid: Eid, rloc: IPAddress) -> bool:
    """The reply maps `eid` (a record covering it) to `rloc`."""
    iid, address = eid
    for record in reply.records:
        try:
            prefix = record.eid_prefix
            network = prefix.network
        except (ValueError, TypeError, AttributeError):
            continue  # not an IP prefix
        if prefix.instance_id == iid and address in network and any(loc.address == rloc for loc in record.locators):
            return True
    return False


@dataclass
class Ack:
    node: IPAddress
    sent: float
    acknowledged: float


class RegistrationLoad:
    """A fresh EID registered every 1/`rate` s with the next node (see the module docstring)."""

    def __init__(self, namespace: str | None, bind: str, rloc: str, key: str, nodes: Iterable[str],
                 eids: Iterable[Eid], rate: float = 20.0, xtr_id: int | None = None, ttl_minutes: int = 10,
                 port: int = LISP_CONTROL_PORT) -> None:
        self.port = port
        self.namespace, self.bind = namespace, bind
        self.rloc = ipaddress.ip_address(rloc)
        self.key = key
        self.nodes = [ipaddress.ip_address(n) for n in nodes]
        self._eids = iter(eids)
        self.interval = 1.0 / rate
        self.xtr_id = xtr_id if xtr_id is not None else random.getrandbits(128)
        self.ttl_minutes = ttl_minutes
        self.sent: dict[Eid, tuple[IPAddress, float]] = {}
        self.acknowledged: dict[Eid, Ack] = {}
        self._by_nonce: dict[int, Eid] = {}
        self._nonces = itertools.count(random.getrandbits(40) << 16)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.rejected = 0  # datagrams that were not a Map-Notify of ours

    def start(self) -> "RegistrationLoad":
        self._sock = _open(self.namespace, self.bind)
        self._thread = threading.Thread(target=self._run, name="registration-load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._sock.close()

    def acked(self, older_than: float = 0.0) -> dict[Eid, Ack]:
        """What was acknowledged at least `older_than` s ago."""
        now = time.monotonic()
        with self._lock:
            return {e: a for e, a in self.acknowledged.items() if now - a.acknowledged >= older_than}

    def _register(self, eid: Eid, node: IPAddress) -> None:
        iid, address = eid
        nonce = next(self._nonces)
        record = MappingRecord.for_prefix(EidPrefix(address, address.max_prefixlen, iid),
                                          (Locator(self.rloc, priority=1, weight=100),), ttl=self.ttl_minutes)
        message = MapRegister(nonce=nonce, records=(record,), proxy_map_reply=True, want_map_notify=True,
                              xtr_id=self.xtr_id, site_id=0)
        data = sign(message, self.key, AuthAlgorithm.HMAC_SHA_256_128).encode()
        with self._lock:
            self._by_nonce[nonce] = eid
            self.sent[eid] = (node, time.monotonic())
        self._sock.sendto(data, (str(node), self.port))

    def _run(self) -> None:
        turn = itertools.cycle(self.nodes)
        next_at = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_at:
                eid = next(self._eids, None)
                if eid is None:
                    break
                self._register(eid, next(turn))
                next_at += self.interval
            readable, _, _ = select.select([self._sock], [], [], max(0.0, min(0.05, next_at - now)))
            if readable:
                self._receive()
        end = time.monotonic() + 1.0  # the last Map-Notifies
        while time.monotonic() < end and not self._stop.is_set():
            if select.select([self._sock], [], [], 0.05)[0]:
                self._receive()

    def _receive(self) -> None:
        while True:
            try:
                data, source = self._sock.recvfrom(65535)
            except BlockingIOError:
                return
            try:
                message = decode_message(data)
            except LispDecodeError:
                message = None
            now = time.monotonic()
            with self._lock:
                eid = self._by_nonce.get(message.nonce) if isinstance(message, MapNotify) else None
                if eid is None:
                    self.rejected += 1
                elif eid not in self.acknowledged:
                    self.acknowledged[eid] = Ack(ipaddress.ip_address(source[0]), self.sent[eid][1], now)


@dataclass
class Request:
    eid: Eid
    issued: float
    answered: float | None = None
    resolvers: list[IPAddress] = field(default_factory=list)  # where each attempt went
    positive: bool = False


class RequestLoad:
    """Map-Requests at `rate`/s for EIDs `pick()` gives, with Map-Resolver failover (module docstring)."""

    def __init__(self, namespace: str | None, bind: str, resolvers: Iterable[str],
                 pick: Callable[[], tuple[Eid, IPAddress] | None], rate: float = 20.0, timeout: float = 1.0,
                 attempts: int = 6, port: int = LISP_CONTROL_PORT) -> None:
        self.server_port = port
        self.namespace, self.bind = namespace, bind
        self.itr_rloc = ipaddress.ip_address(bind)
        self.resolvers = [ipaddress.ip_address(r) for r in resolvers]
        self.pick = pick
        self.interval = 1.0 / rate
        self.timeout = timeout
        self.attempts = attempts
        self.active = 0
        self.requests: list[Request] = []
        self.expected: dict[int, IPAddress] = {}
        self._pending: dict[int, tuple[Request, float]] = {}  # nonce -> (request, deadline)
        self._nonces = itertools.count(random.getrandbits(40) << 16)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._drain_until = 0.0

    def start(self) -> "RequestLoad":
        self._sock = _open(self.namespace, self.bind)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, name="request-load", daemon=True)
        self._thread.start()
        return self

    def stop(self, drain: float = 3.0) -> None:
        """Stop asking; wait up to `drain` s for what is in flight."""
        self._drain_until = time.monotonic() + drain
        self._stop.set()
        if self._thread is not None:
            self._thread.join(drain + 5)
        self._sock.close()

    def gap(self) -> tuple[float, Request | None]:
        """The longest time a request waited for its answer (an unanswered one: until now)."""
        now = time.monotonic()
        with self._lock:
            waits = [((r.answered or now) - r.issued, r) for r in self.requests]
        return max(waits, key=lambda w: w[0]) if waits else (0.0, None)

    def _send(self, request: Request, now: float) -> None:
        nonce = next(self._nonces)
        resolver = self.resolvers[self.active]
        request.resolvers.append(resolver)
        self._pending[nonce] = (request, now + self.timeout)
        self.expected[nonce] = resolver
        self._sock.sendto(map_request(request.eid, self.itr_rloc, self.port, nonce), (str(resolver), self.server_port))

    def _run(self) -> None:
        next_at = time.monotonic()
        expected_rloc: dict[int, IPAddress] = {}
        while True:
            now = time.monotonic()
            if self._stop.is_set():
                if not self._pending or now > self._drain_until:
                    return
            elif now >= next_at:
                picked = self.pick()
                next_at += self.interval
                if picked is not None:
                    eid, rloc = picked
                    request = Request(eid, now)
                    with self._lock:
                        self.requests.append(request)
                    expected_rloc[id(request)] = rloc
                    self._send(request, now)
            for nonce, (request, deadline) in list(self._pending.items()):
                if now >= deadline:  # silent: the next Map-Resolver, at once
                    del self._pending[nonce]
                    if self.resolvers[self.active] == self.expected[nonce]:
                        self.active = (self.active + 1) % len(self.resolvers)
                    if len(request.resolvers) < self.attempts:
                        self._send(request, now)
            wait = max(0.0, min(0.01, next_at - now))
            if select.select([self._sock], [], [], wait)[0]:
                self._receive(expected_rloc)

    def _receive(self, expected_rloc: dict[int, IPAddress]) -> None:
        while True:
            try:
                data, _ = self._sock.recvfrom(65535)
            except BlockingIOError:
                return
            reply = _reply_for(data)
            if reply is None or reply.nonce not in self._pending:
                continue
            request, _ = self._pending.pop(reply.nonce)
            with self._lock:
                if request.answered is None:
                    request.answered = time.monotonic()
                    request.positive = answers_with(reply, request.eid, expected_rloc[id(request)])


def ask(namespace: str | None, bind: str, node: str, eids: dict[Eid, IPAddress], timeout: float = 1.0,
        rate: float = 2000.0, retries: int = 2, server_port: int = LISP_CONTROL_PORT) -> dict[Eid, str]:
    """Ask `node` for each EID; the ones not answered with their expected RLOC, and why."""
    sock = _open(namespace, bind)
    port = sock.getsockname()[1]
    itr = ipaddress.ip_address(bind)
    wrong: dict[Eid, str] = {}
    try:
        left = dict(eids)
        for _ in range(retries + 1):
            if not left:
                break
            nonces = {}
            for i, eid in enumerate(left):
                nonce = random.getrandbits(63)
                nonces[nonce] = eid
                sock.sendto(map_request(eid, itr, port, nonce), (node, server_port))
                if i % 50 == 49:
                    time.sleep(50 / rate)  # a burst the node's rate limit and socket buffer take
            deadline = time.monotonic() + timeout
            while nonces and time.monotonic() < deadline:
                if not select.select([sock], [], [], 0.05)[0]:
                    continue
                while True:
                    try:
                        data, _ = sock.recvfrom(65535)
                    except BlockingIOError:
                        break
                    reply = _reply_for(data)
                    eid = nonces.pop(reply.nonce, None) if reply is not None else None
                    if eid is None:
                        continue
                    if answers_with(reply, eid, left[eid]):
                        del left[eid]
                        wrong.pop(eid, None)
                    else:
                        wrong[eid] = f"answered without {left[eid]}: {reply.records}"
            for eid in nonces.values():
                wrong.setdefault(eid, "no answer")
    finally:
        sock.close()
    return {eid: wrong.get(eid, "no answer") for eid in left}
