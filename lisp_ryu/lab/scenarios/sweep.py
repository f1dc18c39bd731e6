"""Probing many workloads at once from one namespace, and each one's outage.

`SweepProber` sends ICMP echo requests round-robin to every target, one
target every `interval / len(targets)` seconds, so each target is probed
once per `interval` at a steady packet rate (a slot missed under load is
skipped, not sent in a burst).  The hosts' kernels answer; the receive time
of each reply is the kernel's timestamp.  `outage` turns one target's probes
and the start of its move into the longest reply gap around the move, as
scenarios/mobility.py does for one host.
"""

from __future__ import annotations

import math
import random
import socket
import threading
import time
from dataclasses import dataclass

from lisp_ryu.glue.netns import run_in_netns
from lisp_ryu.lab.scenarios.probe import Probe, echo_replies, echo_request, icmp_socket, probe_index

RECEIVE_BUFFER = 8 << 20  # replies of a whole burst must not drop at our own socket


class SweepProber:
    """ICMP echo to each of `targets` every `interval` seconds from `namespace`."""

    def __init__(self, namespace: str, targets: list[str], interval: float):
        if not targets:
            raise ValueError("no targets to probe")
        self.namespace = namespace
        self.targets = list(targets)
        self.interval = interval
        self.ident = random.getrandbits(16)
        self._index = {ip: i for i, ip in enumerate(self.targets)}
        self._payload = b"lisp-ryu evacuation probe".ljust(56, b".")
        self._sent: list[list[float]] = [[] for _ in self.targets]
        self._received: list[dict[int, float]] = [{} for _ in self.targets]
        self._stop_sending = threading.Event()
        self._stop_receiving = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sock: socket.socket | None = None
        self.send_errors = 0

    def start(self) -> None:
        self._sock = run_in_netns(self.namespace, lambda: icmp_socket(RECEIVE_BUFFER))
        self._threads = [threading.Thread(target=self._receive, name="sweep-rx", daemon=True),
                         threading.Thread(target=self._send, name="sweep-tx", daemon=True)]
        for t in self._threads:
            t.start()

    def stop(self, linger: float = 0.5) -> None:
        """Stop sending, wait `linger` s for late replies, stop receiving (again: nothing)."""
        if self._sock is not None and not self._stop_receiving.is_set():
            self._stop_sending.set()
            self._threads[1].join()
            time.sleep(linger)
            self._stop_receiving.set()
            self._threads[0].join()
            self._sock.close()

    def probes(self, target: int) -> tuple[Probe, ...]:
        sent = list(self._sent[target])
        received = self._received[target]
        return tuple(Probe(i, t, received.get(i)) for i, t in enumerate(sent))

    def first_reply_after(self, target: int, since: float) -> float | None:
        """When the first reply from `target` after `since` arrived (time.time()), or None."""
        return min((t for t in list(self._received[target].values()) if t > since), default=None)

    def replied_since(self, since: float) -> list[bool]:
        """Per target: has a reply arrived after `since` (time.time())?"""
        return [any(t > since for t in list(r.values())) for r in self._received]

    def _send(self) -> None:
        n = len(self.targets)
        step = self.interval / n
        start = time.monotonic()
        k = 0  # the next slot; target k % n
        while not self._stop_sending.is_set():
            due = int((time.monotonic() - start) / step)
            if due - k > n:  # more than a round behind: skip, keeping each target's rate
                k = due - n
            while k <= due:
                i = k % n
                sent = self._sent[i]
                packet = echo_request(self.ident, len(sent), self._payload)
                sent.append(time.time())
                try:
                    self._sock.sendto(packet, (self.targets[i], 0))
                except OSError:
                    self.send_errors += 1  # counted lost: the probe has no reply
                k += 1
            delay = start + k * step - time.monotonic()
            if delay > 0:
                self._stop_sending.wait(delay)

    def _receive(self) -> None:
        for source, at, seq16 in echo_replies(self._sock, self._stop_receiving, self.ident):
            i = self._index.get(source)
            if i is None:
                continue
            index = probe_index(len(self._sent[i]), seq16)
            if index >= 0:
                self._received[i].setdefault(index, at)


@dataclass(frozen=True)
class Outage:
    """One workload's outage around its move."""

    host: str
    started: float  # its move's start (time.time())
    gap_ms: float | None  # longest time without a reply, from the last one before the move on; None: not recovered
    window_ms: float  # from the move to the last probe sent to it
    lost: int  # probes sent from one interval before the move on that were never answered
    recovered: bool

    @property
    def outage_ms(self) -> float:
        """The gap; a workload that never answered again counts its whole window (a lower bound)."""
        return self.window_ms if self.gap_ms is None else self.gap_ms


def outage(host: str, probes: tuple[Probe, ...], started: float, *, interval: float,
           until: float = math.inf, tail: float = 0.5) -> Outage:
    """The longest reply gap from the last reply before `started` to `until`.

    Recovered: a probe sent in the window's last `tail` seconds was answered
    (replies after the move that stop again do not count)."""
    window = [p for p in probes if started - interval <= p.sent < until]
    replies = sorted(p.received for p in probes if p.received is not None and p.received < until + interval)
    before = [r for r in replies if r <= started]
    after = [r for r in replies if r > started]
    last_sent = window[-1].sent if window else started
    recovered = any(p.received is not None for p in window if p.sent >= last_sent - tail) and bool(after)
    gap = None
    if recovered:
        chain = [before[-1] if before else started, *after]
        gap = max(b - a for a, b in zip(chain, chain[1:])) * 1000.0
    return Outage(host=host, started=started, gap_ms=gap, window_ms=(last_sent - started) * 1000.0,
                  lost=sum(p.received is None for p in window), recovered=recovered)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]
