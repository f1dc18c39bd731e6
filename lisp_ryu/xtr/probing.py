"""RLOC probing (RFC 9301 §7.1): which remote RLOCs are down, and the xTR's probes and answers.

An ITR learns that a locator died by sending it RLOC-probes (Map-Requests
with the P bit, straight to the RLOC) and missing the replies.
`RlocTracker` is the bookkeeping, pure and sans-IO: it is told which RLOCs
the map-cache uses (`track`), asked what to send (`poll(now, nonce)`), and
fed the probe replies (`on_reply`).  `Prober` is the xTR's part: it keeps
the tracked set in step with the map-cache, turns due probes into
Map-Requests, and answers the probes other xTRs send us.  Time is a
parameter, jitter comes from an injected RNG, so every schedule is
reproducible in a test.

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
import logging
import random
from dataclasses import dataclass, replace
from typing import Callable, Mapping

from lisp_ryu.effects import DataplaneChanged, Effect, SendControl
from lisp_ryu.wire import LISP_CONTROL_PORT
from lisp_ryu.ratelimit import RateLimiter
from lisp_ryu.wire.prefix import EidPrefix
from lisp_ryu.wire.errors import LispDecodeError
from lisp_ryu.wire.messages import MapReply, MapRequest
from lisp_ryu.wire.records import Locator, MappingRecord, MapRequestRecord
from lisp_ryu.xtr.state import IP_TYPES, XtrState

LOG = logging.getLogger("lisp_ryu.xtr")
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

    def watch(self, rloc: IPAddress, eid: EidPrefix, now: float) -> None:
        """Watch one more RLOC (serving `eid`) until the next `track`; one watched already is left as it is."""
        if rloc not in self._rlocs:
            self._rlocs[rloc] = RlocHealth(rloc, eid, next_probe=now + self._rng.uniform(0.0, self.settings.interval),
                                           since=now)
            self.count("rloc_tracked")

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


MAX_PROBERS = 1024  # ITRs we keep a BFD port towards because they probe us (bounded: anyone may probe)


class Prober:
    """The xTR's RLOC probing: probe the RLOCs the map-cache uses, and answer probes of ours.

    It also remembers which ITRs probed us (`probed_by`, answered probes only,
    forgotten after three of their intervals): an ITR that sends to us may be
    one we never send to, and its BFD session to us needs a port back from
    us (lisp_ryu/flows/failover.py), so they are peers of ours too.
    """

    def __init__(self, state: XtrState, rng: random.Random | None = None):
        self.state = state
        probing = state.config.rloc_probing
        self.health = RlocTracker(
            ProbeSettings(probing.interval, probing.jitter, probing.misses, probing.timeout),
            rng if rng is not None else random.Random(state.xtr_id))  # jitter only: need not be secret
        self._targets_stale = True
        self._answers = RateLimiter(probing.answer_rate, probing.answer_burst, max_sources=4096)
        self._answers_total = RateLimiter(probing.answer_rate_total, probing.answer_rate_total)
        self.probed_by: dict[IPAddress, float] = {}  # ITR RLOC -> when we last answered its probe
        self._probed_by_ttl = max(3 * probing.interval * (1 + probing.jitter), 60.0)

    def targets_changed(self) -> None:
        """The map-cache changed: recompute the tracked RLOCs at the next `sync`."""
        self._targets_stale = True

    def sync_for(self, records, now: float) -> None:
        """The map-cache changed by `records`: a locator of theirs not watched yet is watched at
        once; otherwise the full recount (O(map-cache)) waits for the next `poll`, which does
        it before any probe leaves.  A burst of moves, publications or answers (an
        evacuation) would pay one recount each, and their locators are mostly watched already."""
        self._targets_stale = True
        rlocs = self.state.rlocs
        if not self.state.config.rloc_probing.enabled:
            return
        for record in records:  # (a whole recount here cost ~0.1 s a move at 10,000 entries)
            new = [loc.address for loc in record.locators
                   if loc.reachable and loc.priority != 255 and loc.address not in rlocs
                   and isinstance(loc.address, IP_TYPES) and loc.address not in self.health]
            if not new:
                continue
            try:
                prefix = record.eid_prefix
            except LispDecodeError:  # a source-specific answer: `sync` knows which destination to probe for
                self.sync(now)
                return
            for rloc in new:
                self.health.watch(rloc, prefix, now)

    def sync(self, now: float) -> None:
        """Watch the remote RLOCs the map-cache uses, each with a prefix it serves."""
        if not self._targets_stale:
            return
        self._targets_stale = False
        state = self.state
        if not state.config.rloc_probing.enabled:
            return
        targets: dict[IPAddress, EidPrefix] = {}
        for entry in state.cache.values():
            if entry.negative:
                continue
            record = entry.value.record
            for loc in record.locators:
                if (loc.reachable and loc.priority != 255 and loc.address not in state.rlocs
                        and isinstance(loc.address, IP_TYPES)):
                    old = self.health.get(loc.address)
                    if loc.address not in targets or (old is not None and old.eid == record.eid_prefix):
                        targets[loc.address] = record.eid_prefix  # keep the prefix a tracked RLOC had
        for dest, sd_entry in state.cache.source_specific:  # RLOCs only these use: probe for the destination
            for loc in sd_entry.value.record.locators if not sd_entry.negative else ():
                if (loc.reachable and loc.priority != 255 and loc.address not in state.rlocs
                        and isinstance(loc.address, IP_TYPES)
                        and loc.address not in targets):
                    targets[loc.address] = EidPrefix.from_network(dest, sd_entry.iid)
        self.health.track(targets, now)

    def poll(self, now: float) -> list[Effect]:
        """Send the probes that are due; recompile when an RLOC went down or came back."""
        state = self.state
        self.sync(now)
        effects: list[Effect] = []
        gone = [rloc for rloc, seen in self.probed_by.items() if now - seen > self._probed_by_ttl]
        for rloc in gone:
            del self.probed_by[rloc]
        if gone:
            effects.append(DataplaneChanged(f"no longer probed by {', '.join(map(str, gone))}"))
        if not state.config.rloc_probing.enabled:
            return effects
        transitions, probes = self.health.poll(now, state.nonce)
        for probe in probes:
            request = MapRequest(nonce=probe.nonce, probe=True, records=(MapRequestRecord.for_prefix(probe.eid),),
                                 itr_rlocs=state.rlocs)
            effects.append(SendControl(probe.rloc, LISP_CONTROL_PORT, request.encode(),
                                       f"RLOC-probe of {probe.rloc} for {probe.eid}"))
        state.count("rloc_probe_sent", len(probes))
        for t in transitions:
            LOG.warning("%s: RLOC %s is down (%s)", state.config.name, t.rloc, t.reason)
        if transitions:
            effects.insert(0, DataplaneChanged(", ".join(f"RLOC {t.rloc} down" for t in transitions)))
        return effects

    def on_reply(self, reply: MapReply, source: IPAddress, now: float) -> list[Effect]:
        """Only the RLOC's liveness is taken from a probe reply, never its records."""
        self.state.count("probe_reply_received")
        transition = self.health.on_reply(reply.nonce, now)
        if transition is None:
            return []
        LOG.info("%s: RLOC %s is up again (%s, reply from %s)", self.state.config.name, transition.rloc,
                 transition.reason, source)
        return [DataplaneChanged(f"RLOC {transition.rloc} up")]

    def answer(self, request: MapRequest, source: IPAddress, reply_port: int, destination: IPAddress | None,
               now: float) -> list[Effect]:
        """Answer an RLOC-probe, and only when that gives nothing away.

        * It must be addressed to one of our RLOCs (`destination`, from the
          socket it arrived on; None only where the caller cannot tell).
        * The reply goes back to the probe's source, which must be one of its
          ITR-RLOCs: we never send a reply to a third party (no reflection).
        * Rate-limited per requester and in total.
        * It names exactly a prefix we register: a prober learns that the
          mapping it already holds is alive, never a more-specific, a
          covering prefix, another instance-ID or another EID we serve.
        """
        state = self.state
        if destination is not None and destination not in state.rlocs:
            state.count("probe_not_for_local_rloc")
            return []
        if source not in request.itr_rlocs:
            state.count("probe_source_not_an_itr_rloc")
            return []
        if not self._answers.allow(source, now) or not self._answers_total.allow("all", now):
            state.count("probe_rate_limited")
            return []
        probed = destination if destination is not None else state.rlocs[0]
        ours = {r.eid_prefix: r for r in state.local_records()}
        records = []
        for rec in request.records:
            try:
                mine = ours.get(rec.eid_prefix)
            except LispDecodeError:
                state.count("probe_bad_record")
                continue
            if mine is None:
                state.count("probe_not_our_prefix")
                continue
            records.append(MappingRecord(mine.eid, mine.eid_mask_len, tuple(
                Locator(l.address, l.priority, l.weight, l.multicast_priority, l.multicast_weight,
                        local=True, probed=l.address == probed, reachable=True)
                for l in mine.locators), mine.ttl, mine.action, True, mine.map_version))
        if not records:
            return []
        reply = MapReply(nonce=request.nonce, records=tuple(records), probe=True)
        state.count("probe_answered")
        effects: list[Effect] = [SendControl(source, reply_port, reply.encode(),
                                             f"RLOC-probe reply for {records[0].eid_prefix}")]
        if source in self.probed_by or len(self.probed_by) < MAX_PROBERS:
            if source not in self.probed_by:
                effects.append(DataplaneChanged(f"probed by {source}: a BFD peer"))
            self.probed_by[source] = now
        return effects

