"""Control datagrams are handled one at a time, and what one datagram pushed to a switch leaves
before the next is handled (lisp_ryu/glue/ryu_app.py, DatagramPump).

Ryu writes OpenFlow from a green thread per switch, woken through the hub's
timers; the hub fires them only after serving every readable socket.  The
switch here is that: a queue and a send loop, as Ryu's Datapath has.
Soak seed 20 lost the first ping after a move because seven xTRs' Map-Notifies
were all handled (each push recompiling a plan) before any flow-mod left.
"""

from __future__ import annotations

import eventlet
import pytest
from eventlet.green import socket

from lisp_ryu.glue.ryu_app import DatagramPump


class Switch:
    """Ryu's Datapath as far as sending goes: send() queues, a green thread writes."""

    def __init__(self, name: str, log: list):
        self.name, self.log = name, log
        self.queue = eventlet.queue.LightQueue()
        eventlet.spawn(self._send_loop)

    def send(self, what: str) -> None:
        self.queue.put(what)

    def _send_loop(self) -> None:
        while True:
            self.log.append(("sent", self.name, self.queue.get()))


@pytest.fixture
def sockets():
    made = []

    def make():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_a_burst_of_datagrams_to_several_xtrs_pushes_each_switch_before_the_next_datagram(sockets):
    log: list = []
    switches = {name: Switch(name, log) for name in ("s1", "s2", "s3")}

    def handle(endpoint, payload, host, port, local):
        log.append(("handled", endpoint, payload.decode()))
        switches[endpoint].send(f"flows for {payload.decode()}")  # the push

    receivers = {name: sockets() for name in switches}
    sender = sockets()
    for name, sock in receivers.items():  # the burst: every socket readable before anything runs
        sender.sendto(f"notify {name}".encode(), sock.getsockname())
    eventlet.sleep(0.05)

    pump = DatagramPump(handle)
    threads = [eventlet.spawn(pump.receive_loop, name, sock, None) for name, sock in receivers.items()]
    threads.append(eventlet.spawn(pump.work_loop))
    eventlet.sleep(0.2)
    for t in threads:
        t.kill()

    assert len(log) == 6, log
    for i in range(0, 6, 2):  # each datagram's flows leave before the next datagram is handled
        (kind, name, payload), (kind2, name2, sent) = log[i], log[i + 1]
        assert (kind, kind2, name) == ("handled", "sent", name2) and sent == f"flows for {payload}", log


def test_a_handler_error_does_not_stop_the_worker(sockets):
    seen = []

    def handle(endpoint, payload, host, port, local):
        seen.append(payload)
        if payload == b"bad":
            raise RuntimeError("a bug")

    sock, sender = sockets(), sockets()
    pump = DatagramPump(handle)
    threads = [eventlet.spawn(pump.receive_loop, "x", sock, None), eventlet.spawn(pump.work_loop)]
    for payload in (b"bad", b"good"):
        sender.sendto(payload, sock.getsockname())
    eventlet.sleep(0.1)
    for t in threads:
        t.kill()
    assert seen == [b"bad", b"good"]


def test_map_registers_notifies_and_acks_are_handled_before_what_was_read_with_them(sockets):
    seen = []

    def handle(endpoint, payload, host, port, local):
        seen.append(payload[0] >> 4)

    sock, sender = sockets(), sockets()
    # Map-Request, Map-Reply, Map-Notify-Ack, ECM, then a Map-Notify and a Map-Register: all read at once.
    for kind in (1, 2, 5, 8, 4, 3):
        sender.sendto(bytes((kind << 4,)) + b"\x00" * 11, sock.getsockname())
    eventlet.sleep(0.05)
    pump = DatagramPump(handle)
    reader = eventlet.spawn(pump.receive_loop, "x", sock, None)
    eventlet.sleep(0.05)  # everything queued before the worker starts
    worker = eventlet.spawn(pump.work_loop)
    eventlet.sleep(0.1)
    for t in (reader, worker):
        t.kill()
    assert seen == [5, 4, 3, 1, 2, 8]  # an Ack left unread makes its Map-Server retransmit


def test_the_worker_holds_no_more_than_the_backlog(sockets):
    pump = DatagramPump(lambda *a: None, backlog=4)
    for i in range(10):
        try:
            pump.queue.put_nowait(("x", bytes((1 << 4,)), "h", 1, None))
        except Exception:
            break
    pump.next_item()
    assert len(pump._urgent) + len(pump._other) <= 4


def test_deferred_steps_run_before_datagrams_and_wake_a_waiting_worker(sockets):
    log: list = []
    switch = Switch("s1", log)

    def handle(endpoint, payload, host, port, local):
        log.append(("handled", payload.decode()))

    sock = sockets()
    pump = DatagramPump(handle)
    threads = [eventlet.spawn(pump.receive_loop, "x", sock, None), eventlet.spawn(pump.work_loop)]
    eventlet.sleep(0.02)  # the worker waits on an empty queue
    pump.defer(lambda: switch.send("old site"))
    eventlet.sleep(0.02)
    assert log == [("sent", "s1", "old site")]
    # Datagrams read, then two steps deferred: the steps first, each one's flows out before the next.
    pump.queue.put(("x", b"notify", "h", 1, None))  # wakes the worker, which has not run yet
    pump.defer(lambda: switch.send("itr a"))
    pump.defer(lambda: switch.send("itr b"))
    eventlet.sleep(0.05)
    for t in threads:
        t.kill()
    assert log[1:] == [("sent", "s1", "itr a"), ("sent", "s1", "itr b"), ("handled", "notify")]
