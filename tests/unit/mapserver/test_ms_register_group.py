"""Map-Registers read in one batch by the server loop share one journal write (one fsync).

Each Map-Register used to be written and fsynced by itself before its
Map-Notify went out: with a data directory on disk, most of the time of a
burst of registrations.  The loop now handles consecutive Map-Registers of a
batch with the write held back, writes them once, and only then sends their
Map-Notifies and publications; if that write fails the core rolls all of
them back and nothing is acknowledged.  Any other datagram in the batch is
handled after the held write, so nothing sees a change that is not durable.
"""

from __future__ import annotations

import errno
import socket
import time

import pytest

from lisp_ryu.glue.mapserver_loop import StandaloneServer
from lisp_ryu.mapserver import MemoryStore
from lisp_ryu.wire import MapNotify, MapReply, decode_message

from mapserver_helpers import DC1_KEY, T0, make_core
from support import packets


class Store(MemoryStore):
    """A store in memory that says when it was written, and can be made to fail like a full disk."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self.writes: list[int] = []  # entries per append

    def append(self, entries) -> None:
        if self.failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.writes.append(len(entries))
        super().append(entries)

    def probe(self) -> None:
        if self.failing:
            raise OSError(errno.ENOSPC, "No space left on device")


def registers(count: int, first: int = 1) -> list[bytes]:
    return [packets.map_register([packets.record(f"10.10.{n}.0/24", ["198.18.1.1"], iid=42)], DC1_KEY,
                                 nonce=n, proxy=True, want_notify=True) for n in range(first, first + count)]


@pytest.fixture
def loop():
    store = Store()
    core = make_core(store=store)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    client.bind(("127.0.0.1", 0))
    client.settimeout(0.5)
    server = StandaloneServer(core, udp, clock=lambda: T0 + 1)

    def send(*payloads: bytes) -> None:
        for payload in payloads:
            client.sendto(payload, udp.getsockname())
        time.sleep(0.05)
        server._receive()

    def received() -> list:
        out = []
        while True:
            try:
                out.append(decode_message(client.recv(65535)))
            except socket.timeout:
                return out

    try:
        yield core, store, send, received, client.getsockname()[1]
    finally:
        udp.close()
        client.close()


def test_a_burst_of_map_registers_is_written_once_then_acknowledged(loop):
    core, store, send, received, _ = loop
    send(*registers(6))
    assert store.writes == [6]  # one append (one fsync) for the six
    notifies = received()
    assert sorted(m.nonce for m in notifies if isinstance(m, MapNotify)) == [1, 2, 3, 4, 5, 6]
    assert core.registration_count == 6


def test_anything_else_in_the_batch_is_handled_after_the_held_write(loop):
    core, store, send, received, port = loop
    request = packets.map_request_ecm("10.10.1.7", ["127.0.0.1"], iid=42, nonce=77, source_port=port)
    send(*registers(2), request, *registers(3, first=3))
    assert store.writes == [2, 3]  # written before the request was handled, and at the end
    messages = received()
    assert sorted(m.nonce for m in messages if isinstance(m, MapNotify)) == [1, 2, 3, 4, 5]
    [reply] = [m for m in messages if isinstance(m, MapReply)]
    assert reply.nonce == 77 and reply.records[0].locators  # the registration it saw was durable


def test_when_the_held_write_fails_nothing_is_acknowledged_and_all_is_rolled_back(loop):
    core, store, send, received, _ = loop
    send(*registers(1))
    assert received() and core.registration_count == 1
    store.failing = True
    send(*registers(4, first=2))
    assert received() == []  # no Map-Notify for what is not durable
    assert core.registration_count == 1  # the acknowledged state
    assert core.counters["store.rollbacks"] == 1
