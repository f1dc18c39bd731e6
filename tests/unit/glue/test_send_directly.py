"""Flow-mods leave as they are made (glue.compat.send_directly), in order with what Ryu's send
loop still has to write; on a real socket pair, with Ryu's Datapath reduced to what is used."""

from __future__ import annotations

import socket
import ssl

import pytest

from lisp_ryu.glue.compat import send_directly


class GreenSocket:
    """What Ryu's datapath holds: a green socket whose raw socket is `fd`."""

    def __init__(self, raw):
        self.fd = raw
        self.sent = []

    def sendall(self, data):
        self.sent.append(bytes(data))


class Queue:
    def __init__(self):
        self.items = []

    def qsize(self):
        return len(self.items)


class Datapath:
    def __init__(self, sock):
        self.socket = sock
        self.send_q = Queue()

    def send(self, buf, close_socket=False):  # Ryu's: queued for the send loop
        self.send_q.items.append(bytes(buf))
        return True


@pytest.fixture
def pair():
    ours, switch = socket.socketpair()
    ours.setblocking(False)
    switch.settimeout(1.0)
    yield ours, switch
    ours.close()
    switch.close()


def test_a_message_leaves_at_once_when_nothing_waits_before_it(pair):
    ours, switch = pair
    dp = Datapath(GreenSocket(ours))
    assert send_directly(dp)
    assert dp.send(b"flow-mod") is True
    assert switch.recv(100) == b"flow-mod" and dp.send_q.items == []


def test_behind_queued_messages_or_a_write_under_way_it_queues(pair):
    ours, switch = pair
    dp = Datapath(GreenSocket(ours))
    send_directly(dp)
    dp.send_q.items.append(b"older")
    dp.send(b"newer")
    assert dp.send_q.items == [b"older", b"newer"]
    dp.send_q.items.clear()
    dp.socket.writing = True  # the send loop is inside sendall (yielded: the kernel's buffer was full)
    dp.send(b"meanwhile")
    assert dp.send_q.items == [b"meanwhile"]
    dp.socket.writing = False
    dp.socket.sendall(b"x")  # the loop's writes still reach the socket, and say when they are under way
    assert dp.socket.sent == [b"x"] and dp.socket.writing is False


def test_what_the_kernel_does_not_take_follows_through_the_loop_in_order(pair):
    ours, switch = pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    dp = Datapath(GreenSocket(ours))
    send_directly(dp)
    big = bytes(range(256)) * 4096  # 1 MiB: more than the socket buffers hold
    dp.send(big)
    assert len(dp.send_q.items) == 1
    received = b""
    while len(received) < len(big) - len(dp.send_q.items[0]):
        received += switch.recv(65536)
    assert received + dp.send_q.items[0] == big


def test_a_closed_connection_is_left_to_the_send_loop(pair):
    ours, switch = pair
    switch.close()
    dp = Datapath(GreenSocket(ours))
    send_directly(dp)
    dp.send(b"a" * 10)  # the first write may still succeed; the one after meets the reset
    dp.send(b"b" * 10)
    assert dp.send_q.items, "the loop must see the error and end the session"


def test_tls_connections_are_left_as_they_are():
    context = ssl.create_default_context()
    raw = socket.socket()
    try:
        tls = context.wrap_socket(raw, do_handshake_on_connect=False, server_hostname="switch")
        dp = Datapath(tls)
        send = dp.send
        assert send_directly(dp) is False and dp.send == send and dp.socket is tls
    finally:
        raw.close()
