"""Held-open connections against the controller's REST API (the real process, on loopback).

The attack: open more idle TCP connections than eventlet's WSGI pool holds (1,024) and keep them.
Before: no socket timeout, so they were held for ever, the accept loop waited for a free slot and a
legitimate GET never answered.  Now the pool is capped (--wsapi-max-connections) and full means the
oldest connection is closed to make room; idle ones are closed after --wsapi-socket-timeout.
"""

from __future__ import annotations

import resource
import select
import socket
import time

import pytest

from support.ryu_process import RyuProcess

HELD = 1100  # more than eventlet's default pool of 1,024
TIMEOUT = 2.0
ARGS = ("--wsapi-socket-timeout", str(TIMEOUT))


@pytest.fixture(scope="module", autouse=True)
def enough_descriptors():
    """The test holds HELD sockets, and so does the controller (a child: it inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(HELD + 200, hard if hard != resource.RLIM_INFINITY else HELD + 200)
    if want < 300 + 200:  # more than the pool's cap (256) is the least that shows anything
        pytest.skip(f"needs 500 file descriptors, the hard limit is {hard}")
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield want - 200  # what the test may hold (HELD where the limit allows: more than eventlet's 1,024)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def controller(tmp_path_factory, enough_descriptors):
    ryu = RyuProcess(tmp_path_factory.mktemp("rest-conn"), "rest: {token: t0ken}\n", *ARGS)
    try:
        ryu.wait_listening(ryu.rest_port)
        assert ryu.get("/lisp/v1/health")[0] == 200
        yield ryu
    finally:
        ryu.stop()


def hold(port: int, count: int, budget: float = 4.0) -> list[socket.socket]:
    """`count` connections that never send a byte, kept when established.

    Opened in small batches: the listen backlog is short, and a connection the full backlog
    cannot take only reaches the server's accept() at the next SYN-ACK retry, seconds later.
    """
    pending = []
    for i in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        pending.append(s)
        if i % 20 == 19:
            time.sleep(0.03)
    held = []
    deadline = time.monotonic() + budget
    while pending and time.monotonic() < deadline:
        poller = select.poll()
        by_fd = {s.fileno(): s for s in pending}
        for fd in by_fd:
            poller.register(fd, select.POLLOUT)
        for fd, _ in poller.poll(200):
            s = by_fd[fd]
            pending.remove(s)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                held.append(s)
            else:
                s.close()
    for s in pending:
        s.close()
    return held


def closed_by_peer(s: socket.socket) -> bool:
    poller = select.poll()
    poller.register(s, select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        return s.recv(1) == b""
    except OSError:
        return True


def test_held_connections_do_not_starve_a_legitimate_get(controller, enough_descriptors):
    held = hold(controller.rest_port, enough_descriptors)
    try:
        assert len(held) >= 0.95 * enough_descriptors, f"only {len(held)} connections held"
        start = time.monotonic()
        status, body = controller.get("/lisp/v1/health", timeout=5.0)
        answered = time.monotonic() - start
        assert status == 200 and body["status"] == "ok"
        assert answered < 3.0, f"the GET took {answered:.1f} s"
        # The oldest were closed to make room, and the rest once idle for the timeout.
        deadline = time.monotonic() + TIMEOUT + 4.0
        while time.monotonic() < deadline:
            still_open = [s for s in held if not closed_by_peer(s)]
            if not still_open:
                break
            time.sleep(0.2)
        still_open = [s for s in held if not closed_by_peer(s)]
        assert not still_open, f"{len(still_open)} of {len(held)} idle connections still open"
    finally:
        for s in held:
            s.close()
    _, counters = controller.get("/lisp/v1/counters")
    assert counters["controller"].get("rest.connections_evicted", 0) >= 1, counters["controller"]
    log = controller.log()
    assert "Traceback" not in log
    assert log.count("REST connections") <= 2, "the evictions must be logged rate-limited, not one line each"
