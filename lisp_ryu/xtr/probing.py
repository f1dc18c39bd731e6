"""RLOC health: which remote RLOCs to probe when, and which are down.

RFC 9301 §7.1: an ITR learns that a locator died by sending it RLOC-probes
(Map-Requests with the P bit, straight to the RLOC) and missing the replies.
This module is the bookkeeping only, pure and sans-IO like the cores: the
xTR core tells it which RLOCs its map-cache uses (`track`), asks it what to
send (`poll(now, nonce)`), and feeds it the probe replies (`on_reply`).
Time is a parameter, jitter comes from an injected RNG, so every schedule
is reproducible in a test.

Rules, and why:

* Each tracked RLOC is probed every `interval` seconds, each gap stretched
  or shrunk by up to `jitter` (a fraction) so that many xTRs started
  together do not probe in lock-step; the first probe of a newly tracked
  RLOC comes at a random point of its first interval for the same reason.
* A probe is *missed* when no reply with its nonce arrived within
  `timeout` (at most the shortest gap, so each probe is settled before the
  next leaves).  After `misses` consecutive misses the RLOC is
  down; one good reply brings it back.  So a dead RLOC is noticed between
  `(misses - 1) * interval + timeout` and `misses * interval * (1 + jitter)
  + timeout` after it died.
* Down RLOCs keep being probed at the same pace, so recovery is noticed.
* Replies are matched by the 64-bit nonce of the outstanding probe only: a
  multihomed ETR may answer from another of its addresses, and the nonce is
  what an off-path attacker cannot guess.  A late reply (after its timeout)
  counts for nothing.
* An RLOC nobody tracks is up: health only ever removes locators that were
  probed and failed.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, replace
from typing import Callable, Mapping

from lisp_ryu.wire.prefix import EidPrefix

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class ProbeSettings:
    """How often to probe and how many silent probes make an RLOC down."""

    interval: float = 10.0
    jitter: float = 0.1  # each gap is interval * (1 +/- jitter)
    misses: int = 3
    timeout: float = 2.0

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError(f"interval must be positive, got {self.interval}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if self.misses < 1:
            raise ValueError(f"misses must be at least 1, got {self.misses}")
        shortest_gap = self.interval * (1 - self.jitter)
        if not 0 < self.timeout <= shortest_gap:
            # so a probe's fate is settled before the next one to the same RLOC leaves
            raise ValueError(f"timeout must be in (0, interval x (1 - jitter) = {shortest_gap:g}], got {self.timeout}")

    @property
    def detection_bound(self) -> float:
        """The nominal time to notice a dead RLOC: interval x misses."""
        return self.interval * self.misses


@dataclass(frozen=True)
class RlocHealth:
    """What we know of one remote RLOC."""

    rloc: IPAddress
    eid: EidPrefix  # the map-cache prefix the probe asks about (the ETR answers only for its own)
    up: bool = True
    missed: int = 0  # consecutive unanswered probes
    next_probe: float = 0.0
    nonce: int | None = None  # the outstanding probe
    reply_due: float = 0.0  # when the outstanding probe counts as missed
    since: float = 0.0  # when `up` last changed (or tracking began)


@dataclass(frozen=True)
class Probe:
    """Send an RLOC-probe for `eid` to `rloc` with this nonce."""

    rloc: IPAddress
    eid: EidPrefix
    nonce: int


@dataclass(frozen=True)
class Transition:
    """An RLOC went down or came back up."""

    rloc: IPAddress
    up: bool
    at: float
    reason: str


class RlocTracker:
    """The health of every RLOC the map-cache uses; see the module docstring."""

    def __init__(self, settings: ProbeSettings, rng: random.Random):
        self.settings = settings
        self._rng = rng
        self._rlocs: dict[IPAddress, RlocHealth] = {}
        self._by_nonce: dict[int, IPAddress] = {}
        self.counters: dict[str, int] = {}

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    # ---- queries -------------------------------------------------------------

    def __contains__(self, rloc: object) -> bool:
        return rloc in self._rlocs

    def __len__(self) -> int:
        return len(self._rlocs)

    def get(self, rloc: IPAddress) -> RlocHealth | None:
        return self._rlocs.get(rloc)

    def is_up(self, rloc: IPAddress) -> bool:
        health = self._rlocs.get(rloc)
        return health is None or health.up

    def down(self) -> frozenset[IPAddress]:
        return frozenset(r for r, h in self._rlocs.items() if not h.up)

    def outstanding(self) -> frozenset[int]:
        """Nonces of probes awaiting a reply (the core keeps its nonces distinct from them)."""
        return frozenset(self._by_nonce)

    def next_deadline(self) -> float | None:
        """The earliest probe to send or reply to give up on."""
        times = [h.next_probe for h in self._rlocs.values()]
        times += [h.reply_due for h in self._rlocs.values() if h.nonce is not None]
        return min(times) if times else None

    # ---- what to watch -----------------------------------------------------------

    def track(self, targets: Mapping[IPAddress, EidPrefix], now: float) -> None:
        """Watch exactly these RLOCs (each with an EID-prefix it serves); forget the others.

        A tracked RLOC keeps its state; its EID-prefix is replaced only when
        the old one no longer maps to it.
        """
        for rloc in [r for r in self._rlocs if r not in targets]:
            health = self._rlocs.pop(rloc)
            if health.nonce is not None:
                self._by_nonce.pop(health.nonce, None)
            self.count("rloc_untracked")
        for rloc, eid in targets.items():
            health = self._rlocs.get(rloc)
            if health is None:
                first = now + self._rng.uniform(0.0, self.settings.interval)
                self._rlocs[rloc] = RlocHealth(rloc, eid, next_probe=first, since=now)
                self.count("rloc_tracked")
            elif health.eid != eid:
                self._rlocs[rloc] = replace(health, eid=eid)

    # ---- time and replies ------------------------------------------------------------

    def poll(self, now: float, nonce: Callable[[], int]) -> tuple[list[Transition], list[Probe]]:
        """Give up on probes whose reply is overdue, then start the probes that are due."""
        transitions: list[Transition] = []
        probes: list[Probe] = []
        s = self.settings
        for rloc in sorted(self._rlocs, key=lambda a: (a.version, int(a))):
            health = self._rlocs[rloc]
            if health.nonce is not None and health.reply_due <= now:
                self._by_nonce.pop(health.nonce, None)
                self.count("probe_missed")
                health = replace(health, nonce=None, missed=health.missed + 1)
                if health.up and health.missed >= s.misses:
                    health = replace(health, up=False, since=now)
                    self.count("rloc_down")
                    transitions.append(Transition(rloc, False, now, f"{health.missed} probes unanswered"))
            if health.next_probe <= now:  # the previous probe is settled: timeout <= the shortest gap
                value = nonce()
                gap = s.interval * (1.0 + self._rng.uniform(-s.jitter, s.jitter))
                health = replace(health, nonce=value, reply_due=now + s.timeout, next_probe=now + gap)
                self._by_nonce[value] = rloc
                probes.append(Probe(rloc, health.eid, value))
                self.count("probe_sent")
            self._rlocs[rloc] = health
        return transitions, probes

    def on_reply(self, nonce: int, now: float) -> Transition | None:
        """A probe reply arrived: the RLOC answers.  Returns the transition if it was down."""
        rloc = self._by_nonce.pop(nonce, None)
        if rloc is None:
            self.count("probe_reply_unknown_nonce")  # late, forged, or for an RLOC no longer used
            return None
        health = self._rlocs[rloc]
        self.count("probe_reply_matched")
        if health.up:
            self._rlocs[rloc] = replace(health, nonce=None, missed=0)
            return None
        self._rlocs[rloc] = replace(health, nonce=None, missed=0, up=True, since=now)
        self.count("rloc_up")
        return Transition(rloc, True, now, "probe answered")
