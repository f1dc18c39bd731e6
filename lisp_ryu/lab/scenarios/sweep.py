"""Probing many workloads at once from one namespace, and each one's outage.

`SweepProber` sends ICMP echo requests round-robin to every target, one
target every `interval / len(targets)` seconds, so each target is probed
once per `interval` at a steady packet rate (a slot missed under load is
skipped, not sent in a burst).  The hosts' kernels answer; the receive time
of each reply is the kernel's timestamp.  `outage` turns one target's probes
and the start of its move into the longest reply gap around the move, as
scenarios/mobility.py does for one host.

The prober runs in a process of its own: in the process that drives the
moves, the 32 switchover threads held the GIL so that a probe was sent up
to 70 ms late (measured: each target's longest gap between two sends was
95-130 ms at a 50 ms interval), and every late send lengthened the reply
gap counted as that workload's outage.
"""

from __future__ import annotations

import math
import multiprocessing
import random
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass

from lisp_ryu.glue.netns import run_in_netns
from lisp_ryu.lab.scenarios.probe import Probe, echo_replies, echo_request, icmp_socket, probe_index

RECEIVE_BUFFER = 8 << 20  # replies of a whole burst must not drop at our own socket
REPORT_EVERY = 0.02  # the probing process hands what it sent and received over this often (seconds)


class SweepProber:
    """ICMP echo to each of `targets` every `interval` seconds from `namespace`.

    The probes are sent and the replies read by a child process (`start`);
    the send times and kernel receive times it records come back over a pipe
    to a thread here, which files them for `probes` and the others."""

    def __init__(self, namespace: str, targets: list[str], interval: float):
        if not targets:
            raise ValueError("no targets to probe")
        self.namespace = namespace
        self.targets = list(targets)
        self.interval = interval
        self.ident = random.getrandbits(16)
        self._sent: list[list[float]] = [[] for _ in self.targets]
        self._received: list[dict[int, float]] = [{} for _ in self.targets]
        self._context = multiprocessing.get_context("fork")  # the child needs only the socket made here
        self._stop_sending = self._context.Event()
        self._stop_receiving = self._context.Event()
        self._process = None
        self._reader: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.send_errors = 0

    def start(self) -> None:
        self._sock = run_in_netns(self.namespace, lambda: icmp_socket(RECEIVE_BUFFER))
        ours, theirs = self._context.Pipe(duplex=False)
        self._process = self._context.Process(
            target=_probe, name="sweep-prober", daemon=True,
            args=(self._sock, self.targets, self.interval, self.ident, theirs, self._stop_sending,
                  self._stop_receiving))
        self._process.start()
        theirs.close()
        self._reader = threading.Thread(target=self._file, args=(ours,), name="sweep-reader", daemon=True)
        self._reader.start()

    def stop(self, linger: float = 0.5) -> None:
        """Stop sending, wait `linger` s for late replies, stop receiving (again: nothing)."""
        if self._process is None or self._stop_receiving.is_set():
            return
        self._stop_sending.set()
        time.sleep(linger)
        self._stop_receiving.set()
        self._process.join(timeout=5.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._reader.join(timeout=5.0)
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

    def _file(self, pipe) -> None:
        """What the child reports, in its order (a probe's send before its reply), until it ends."""
        while True:
            try:
                batch = pipe.recv()
            except (EOFError, OSError):
                return
            if isinstance(batch, int):  # the child's last word: how many sends failed
                self.send_errors = batch
                continue
            for i, at, seq16 in batch:
                if seq16 < 0:
                    self._sent[i].append(at)
                    continue
                index = probe_index(len(self._sent[i]), seq16)
                if index >= 0:
                    self._received[i].setdefault(index, at)


def _probe(sock: socket.socket, targets: list[str], interval: float, ident: int, pipe, stop_sending,
           stop_receiving) -> None:
    """The child: a sending and a receiving thread; what they record goes back every REPORT_EVERY s,
    as (target, send time, -1) and (target, kernel receive time, 16-bit sequence number)."""
    records: deque = deque()
    index = {ip: i for i, ip in enumerate(targets)}
    payload = b"lisp-ryu evacuation probe".ljust(56, b".")
    errors = [0]

    def send() -> None:
        n, step = len(targets), interval / len(targets)
        counts = [0] * n
        start = time.monotonic()
        k = 0  # the next slot; target k % n
        while not stop_sending.is_set():
            due = int((time.monotonic() - start) / step)
            if due - k > n:  # more than a round behind: skip, keeping each target's rate
                k = due - n
            while k <= due:
                i = k % n
                packet = echo_request(ident, counts[i], payload)
                counts[i] += 1
                records.append((i, time.time(), -1))  # before the reply can be read
                try:
                    sock.sendto(packet, (targets[i], 0))
                except OSError:
                    errors[0] += 1  # counted lost: the probe has no reply
                k += 1
            delay = start + k * step - time.monotonic()
            if delay > 0:
                stop_sending.wait(delay)

    def receive() -> None:
        for source, at, seq16 in echo_replies(sock, stop_receiving, ident):
            i = index.get(source)
            if i is not None:
                records.append((i, at, seq16))

    threads = [threading.Thread(target=receive, daemon=True), threading.Thread(target=send, daemon=True)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(REPORT_EVERY)
        _report(records, pipe)
    _report(records, pipe)
    pipe.send(errors[0])
    pipe.close()


def _report(records: deque, pipe) -> None:
    batch = []
    while records:
        batch.append(records.popleft())
    if batch:
        pipe.send(batch)


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
