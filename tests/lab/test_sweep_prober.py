"""The evacuation's prober (lab/scenarios/sweep.py) sends from a process of its own.

It probes loopback addresses here: the kernel answers every echo, so each
probe must come back and be filed under its target, in order, whatever the
parent process does meanwhile (its threads here keep the GIL busy, as the
evacuation's 32 switchover threads do).
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from lisp_ryu.lab.scenarios.sweep import SweepProber

pytestmark = pytest.mark.lab  # a raw ICMP socket needs root

TARGETS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
INTERVAL = 0.02


def _spin(stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1


def test_every_probe_is_sent_by_a_child_process_and_filed_under_its_target():
    prober = SweepProber(None, TARGETS, INTERVAL)
    stop = threading.Event()
    spinners = [threading.Thread(target=_spin, args=(stop,), daemon=True) for _ in range(4)]
    began = time.time()
    prober.start()
    try:
        assert prober._process.pid != os.getpid()
        for t in spinners:
            t.start()
        time.sleep(1.0)
    finally:
        stop.set()
        prober.stop(linger=0.2)
    prober.stop(linger=0)  # again: nothing
    assert not prober._process.is_alive()
    assert prober.replied_since(began) == [True, True, True]
    for i in range(len(TARGETS)):
        probes = prober.probes(i)
        assert len(probes) >= 0.5 / INTERVAL, f"{TARGETS[i]}: only {len(probes)} probes in 1 s"
        assert [p.seq for p in probes] == list(range(len(probes)))
        assert all(a.sent <= b.sent for a, b in zip(probes, probes[1:]))
        lost = [p.seq for p in probes if p.received is None]
        assert not lost, f"{TARGETS[i]}: loopback left probes {lost} unanswered"
        assert all(p.received >= p.sent for p in probes)
        assert prober.first_reply_after(i, began) == min(p.received for p in probes)
    assert prober.send_errors == 0
