"""Packet-ins queued in a burst are handled back to back, a slice at a time
(lisp_ryu/glue/ryu_app.py, LispApp._on_packet_in).

A lone packet-in (a single move) yields after its handling, so what it pushed
leaves before anything else runs.  In a burst (an evacuation), yielding after
each let the datagram worker and the timer loop take a turn per arrival, and
the arrivals waited in Ryu's event queue for hundreds of milliseconds; never
yielding while more waited kept the pushes and the other xTRs' part of the
moves back until the last arrival.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from ryu.lib import hub

from lisp_ryu.glue import ryu_app


class Controller:
    def __init__(self, busy: bool):
        self._busy, self.seen = busy, []

    def busy(self) -> bool:
        return self._busy

    def packet_in(self, dpid, table_id, in_port, metadata, data, tunnel_id, cookie):
        self.seen.append((dpid, in_port, data))


def packet_in_event(port: int):
    msg = SimpleNamespace(datapath=SimpleNamespace(id=2), table_id=0, match={"in_port": port, "metadata": 42},
                          data=b"\x00" * 42, cookie=0)
    return SimpleNamespace(msg=msg)


@pytest.fixture
def sleeps(monkeypatch):
    calls = []
    monkeypatch.setattr(ryu_app.hub, "sleep", lambda seconds=0: calls.append(seconds))
    return calls


def app(busy: bool, queued: int, slice_began: float = float("-inf")):
    made = ryu_app.LispApp.__new__(ryu_app.LispApp)
    made._slice_began = slice_began
    made.controller = Controller(busy)
    made.events = hub.Queue(128)
    for k in range(queued):
        made.events.put((packet_in_event(10 + k), None))
    return made


@pytest.mark.parametrize("busy, queued, yields", [(True, 3, False), (True, 0, True), (False, 3, True),
                                                   (False, 0, True)])
def test_a_packet_in_yields_unless_more_wait_in_a_burst(sleeps, busy, queued, yields):
    a = app(busy, queued, slice_began=time.monotonic())
    a._on_packet_in(packet_in_event(1))
    assert a.controller.seen == [(2, 1, b"\x00" * 42)]
    assert sleeps == ([0] if yields else [])


def test_a_burst_yields_once_a_slice_is_over_and_starts_the_next(sleeps):
    a = app(True, 5, slice_began=time.monotonic() - ryu_app.PACKET_IN_SLICE - 0.001)
    a._on_packet_in(packet_in_event(1))
    assert sleeps == [0]  # the slice was over: the others get their turn
    a._on_packet_in(packet_in_event(2))
    assert sleeps == [0]  # a new slice began with that yield
