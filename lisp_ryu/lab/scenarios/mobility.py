"""Workload mobility under a continuous ping: how long a moving host is
unreachable, and how fast each xTR reacts to the move.

The scenario (`run`, `lisp-ryu lab mobility`): the lisp-ryu controller drives
the lab; a host of a third site pings the mover (every 10 ms unless told; its IPv6
address with `ipv6`, a dual-stack host's); the mover goes
dc1 -> dc2 -> dc1 ... (`move_host`) with a pause after each move, while a
`Prober` and a `FlowWatch` per site (scenarios/probe.py) record.

Per move the report gives the outage two ways (probes lost x interval, and
the gap: the longest stretch without a reply from the last one before the
move on), the interface swap (the host without link), the time from the
host's arrival at its new port to the first reply (the control plane's
share), and for each xTR role (the new site, the old site, the pinging ITR)
the time from the move to its first and last change of per-EID flows
(cookie owner LOCAL_HOST, MAPPING or any other owner that is not the
pipeline skeleton).  With `tcp`, a paced TCP stream from the pinger to the
mover runs through the moves and the report says how TCP fared
(scenarios/tcpstream.py: retransmission timeouts, tail-loss probes, the
longest stall).  With `foreign`, an ITR unaware of the moves (scenarios/foreign_itr.py:
raw LISP-GPE from the core router to the mover's home RLOC, one datagram every ping
interval) runs through them too, and the report counts what of it never reached the mover.
`plot` draws the ping timeline as a PNG.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from lisp_ryu.lab import controller as lab_controller
from lisp_ryu.lab.build import up
from lisp_ryu.lab.move import Move, move_host
from lisp_ryu.lab.scenarios.foreign_itr import ForeignItr, ForeignOutcome
from lisp_ryu.lab.scenarios.probe import INTERVAL, FlowEvent, FlowWatch, Probe, Prober
from lisp_ryu.lab.scenarios.tcpstream import TcpOutcome, TcpStream
from lisp_ryu.lab.state import HostState, LabError, LabState, read_state
from lisp_ryu.lab.teardown import down

DEFAULT_TOPOLOGY = Path(__file__).resolve().parents[3] / "topologies" / "three-dc.yaml"
PAUSE = 2.0
MOVES = 10
ROLES = ("new_site", "old_site", "itr")


# --------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class Reaction:
    """How one xTR reacted to a move: its per-EID flow changes in the move's window."""

    role: str  # new_site | old_site | itr
    site: str
    first_change_ms: float | None  # from the start of the move; None: no change
    last_change_ms: float | None
    changes: int


@dataclass(frozen=True)
class MoveOutcome:
    index: int  # 1-based
    host: str
    from_site: str
    to_site: str
    started: float
    attached: float
    swap_ms: float
    probes: int  # probes sent in this move's window
    lost: int
    lost_ms: float  # lost probes x interval
    lost_at_ms: tuple[float, ...]  # when each lost probe was sent, ms from the move's start
    unplugged_ms: float  # when the old site's port was gone, ms from the move's start
    gap_ms: float | None  # the longest time without replies from the last one before the move on
    # (from the move's start if the previous move never recovered); None: the
    # pings had not come back by the end of the window
    window_ms: float  # from the move to the next one (the last: to the last probe)
    # From the host's arrival at its new port to the first reply: the control
    # plane's share of the outage (the rest is the interface swap); None: no reply.
    after_attach_ms: float | None
    reactions: tuple[Reaction, ...]
    # When its new vif's port was added at the new site (began, OVS had it), ms from the move's start
    # (negative: before the switchover); None: not known.
    plugged_ms: tuple[float, float] | None = None

    @property
    def recovered(self) -> bool:
        return self.gap_ms is not None

    @property
    def outage_ms(self) -> float:
        """The gap; a move the pings never came back from counts its whole
        window (a lower bound), so it weighs in a median instead of vanishing."""
        return self.window_ms if self.gap_ms is None else self.gap_ms

    def reaction(self, role: str) -> Reaction:
        return next(r for r in self.reactions if r.role == role)


@dataclass(frozen=True)
class MobilityReport:
    lab: str
    host: str
    target: str  # the mover's IP
    pinger: str
    pinger_site: str
    interval: float
    pause: float
    moves: tuple[MoveOutcome, ...]
    probes: tuple[Probe, ...]
    events: tuple[FlowEvent, ...]
    lost_before_moves: int  # after the first reply, before the first move: the path's own loss
    tcp: TcpOutcome | None = None  # a TCP stream from the pinger to the mover through the moves
    foreign: ForeignOutcome | None = None  # an ITR unaware of the moves, tunnelling to the mover's home

    def foreign_lost_in_port_adds(self) -> int:
        """The foreign ITR's datagrams lost while a move's new vif was being added at the site it
        tunnels to: a userspace ovs-vswitchd stops forwarding on all its ports for a few ms when a
        port is added (the lab's cost, as for every host there), not the move's."""
        if self.foreign is None:
            return 0
        windows = [(m.started + m.plugged_ms[0] / 1000.0, m.started + m.plugged_ms[1] / 1000.0)
                   for m in self.moves if m.plugged_ms is not None and m.to_site == self.foreign.site]
        return sum(1 for seq in self.foreign.lost if any(a <= self.foreign.sent[seq] <= b for a, b in windows))

    def foreign_lost_per_move(self) -> tuple[int, ...]:
        """Per move, the foreign ITR's datagrams sent in its window that never arrived."""
        return tuple(len(lost) for lost in self.foreign_lost_at_ms())

    def foreign_lost_at_ms(self) -> tuple[tuple[float, ...], ...]:
        """Per move, when each of the foreign ITR's datagrams lost in its window was sent, ms from
        its switchover; a move's window opens when its new vif is plugged."""
        if self.foreign is None:
            return ()
        starts = [m.started - self.interval if m.plugged_ms is None
                  else min(m.started + m.plugged_ms[0] / 1000.0, m.started - self.interval)
                  for m in self.moves] + [float("inf")]
        sent = self.foreign.sent
        return tuple(tuple((sent[seq] - m.started) * 1000.0 for seq in self.foreign.lost if a <= sent[seq] < b)
                     for m, a, b in zip(self.moves, starts, starts[1:]))

    def summary(self) -> dict:
        """Medians and maxima over the moves (None where nothing was measured)."""
        out = {
            "moves": len(self.moves),
            "recovered": sum(m.recovered for m in self.moves),
            "interval_ms": self.interval * 1000.0,
            "outage_ms": _stats([m.outage_ms for m in self.moves]),
            "lost_ms": _stats([m.lost_ms for m in self.moves]),
            "swap_ms": _stats([m.swap_ms for m in self.moves]),
            "after_attach_ms": _stats([m.after_attach_ms for m in self.moves if m.after_attach_ms is not None]),
            "first_flow_change_ms": {},
            "last_flow_change_ms": {},
            "lost_before_moves": self.lost_before_moves,
            "tcp": None if self.tcp is None else {**asdict(self.tcp), "intact": self.tcp.intact},
            "foreign_itr": None if self.foreign is None else {
                "rloc": self.foreign.rloc, "sent": len(self.foreign.sent), "lost": len(self.foreign.lost),
                "lost_per_move": list(self.foreign_lost_per_move()), "duplicates": self.foreign.duplicates,
                "lost_in_port_adds": self.foreign_lost_in_port_adds()},
        }
        for role in ROLES:
            firsts = [m.reaction(role).first_change_ms for m in self.moves]
            lasts = [m.reaction(role).last_change_ms for m in self.moves]
            out["first_flow_change_ms"][role] = _stats([x for x in firsts if x is not None])
            out["last_flow_change_ms"][role] = _stats([x for x in lasts if x is not None])
            out["first_flow_change_ms"][role]["moves_without_change"] = sum(x is None for x in firsts)
        return out

    def to_json(self) -> str:
        """Summary and per-move outcomes (not the raw probes and events)."""
        return json.dumps({"summary": self.summary(), "moves": [asdict(m) for m in self.moves],
                           "host": self.host, "pinger": self.pinger, "lab": self.lab}, indent=2)


def _stats(values: list[float]) -> dict:
    if not values:
        return {"median": None, "max": None, "min": None, "n": 0}
    return {"median": statistics.median(values), "max": max(values), "min": min(values), "n": len(values)}


# A probe sent this long before a switchover may still be on its way there: it is that move's
# to lose.  One interval at 10 ms; at 1 ms, round trips of 1-3 ms on a loaded 2-core machine
# lost probes sent up to 1.5 ms before the switchover, and with one interval they fell in the
# previous move's window, whose last probe then went unanswered ("never recovered").
IN_FLIGHT = 0.005


def in_flight(interval: float) -> float:
    return max(interval, IN_FLIGHT)


def analyse(moves: list[Move], probes: tuple[Probe, ...], events: tuple[FlowEvent, ...], *,
            interval: float, pinger_site: str) -> tuple[tuple[MoveOutcome, ...], int]:
    """Cut the recording into one window per move (from its start, less the time a probe
    may still be on its way, `in_flight`, to the next move's) and measure each."""
    replies = sorted(p.received for p in probes if p.received is not None)
    first_reply = replies[0] if replies else None
    ahead = in_flight(interval)
    outcomes = []
    for i, mv in enumerate(moves):
        begin = mv.started - ahead
        end = moves[i + 1].started - ahead if i + 1 < len(moves) else float("inf")
        window = [p for p in probes if begin <= p.sent < end]
        lost = sum(p.received is None for p in window)
        before = [r for r in replies if r <= mv.started]
        after = [r for r in replies if mv.started < r < end + ahead]
        gap = None
        recovered = bool(window) and window[-1].received is not None  # replies again by the window's end
        # The silence since a move the pings never came back from is that
        # move's outage: this one's starts at its own start then.
        anchor = before[-1] if before and (i == 0 or outcomes[-1].recovered) else mv.started
        if after and recovered:
            chain = [anchor, *after]
            gap = max(b - a for a, b in zip(chain, chain[1:])) * 1000.0
        arrived = [r for r in after if r > mv.attached]
        after_attach = (arrived[0] - mv.attached) * 1000.0 if arrived and recovered else None
        roles = {"new_site": mv.to_site, "old_site": mv.from_site, "itr": pinger_site}
        reactions = []
        for role in ROLES:
            times = sorted(e.at for e in events
                           if e.site == roles[role] and e.per_eid and mv.started <= e.at < end + ahead)
            reactions.append(Reaction(
                role=role, site=roles[role], changes=len(times),
                first_change_ms=(times[0] - mv.started) * 1000.0 if times else None,
                last_change_ms=(times[-1] - mv.started) * 1000.0 if times else None))
        outcomes.append(MoveOutcome(
            index=i + 1, host=mv.host, from_site=mv.from_site, to_site=mv.to_site, started=mv.started,
            attached=mv.attached, swap_ms=mv.swap_ms, probes=len(window), lost=lost,
            lost_ms=lost * interval * 1000.0, gap_ms=gap,
            lost_at_ms=tuple((p.sent - mv.started) * 1000.0 for p in window if p.received is None),
            unplugged_ms=(mv.unplugged - mv.started) * 1000.0,
            window_ms=((window[-1].sent if window else mv.started) - mv.started) * 1000.0,
            after_attach_ms=after_attach,
            reactions=tuple(reactions),
            plugged_ms=None if mv.plugged is None else tuple((t - mv.started) * 1000.0 for t in mv.plugged)))
    lost_before = 0
    if moves and first_reply is not None:
        since = min(p.sent for p in probes if p.received is not None)
        lost_before = sum(p.received is None for p in probes if since <= p.sent < moves[0].started - ahead)
    return tuple(outcomes), lost_before


# --------------------------------------------------------------------------
# The scenario


@dataclass(frozen=True)
class Cast:
    """Who moves where, and who pings it."""

    mover: HostState
    home: str
    away: str
    pinger: HostState
    target: str  # the mover's address the probes go to (its IPv4 one, or its IPv6 one)


def choose(state: LabState, host: str | None = None, to: str | None = None, pinger: str | None = None,
           ipv6: bool = False) -> Cast:
    """Defaults: the first host of the first site moves to the next site and
    is pinged by the first host of a third site (`ipv6`: both dual-stack, the
    probes to the mover's IPv6 address)."""
    if len(state.lisp_sites) < 3 and pinger is None:
        raise LabError(f"the mobility scenario needs three sites (the mover's two and the pinger's); "
                       f"lab {state.name} has {len(state.lisp_sites)}: use topologies/three-dc.yaml")
    mover = state.host(host) if host else state.hosts[0]
    if to is not None:
        away = state.site(to).name
        if away == mover.site:
            raise LabError(f"host {mover.name} is already at site {away}: choose another site with --to")
    else:
        away = next(s.name for s in state.lisp_sites if s.name != mover.site)
    if pinger is not None:
        p = state.host(pinger)
        if p.site in (mover.site, away) or p.name == mover.name:
            raise LabError(f"the pinger {p.name} is at {p.site}: it must be at a third site, "
                           f"neither {mover.site} nor {away}")
    else:
        p = next((h for h in state.hosts if h.site not in (mover.site, away) and (h.ip6 or not ipv6)), None)
        if p is None:
            raise LabError(f"no {'dual-stack ' if ipv6 else ''}host outside {mover.site} and {away} to ping from")
    if ipv6:
        for role, h in (("mover", mover), ("pinger", p)):
            if h.ip6 is None:
                raise LabError(f"--ipv6: the {role} {h.name} has no IPv6 address: use a dual-stack topology "
                               f"(topologies/three-dc-dualstack.yaml)")
    return Cast(mover=mover, home=mover.site, away=away, pinger=p, target=mover.ip6 if ipv6 else mover.ip)


def run(*, moves: int = MOVES, pause: float = PAUSE, interval: float = INTERVAL, host: str | None = None,
        to: str | None = None, pinger: str | None = None, topology: str | Path = DEFAULT_TOPOLOGY,
        warmup_timeout: float = 20.0, progress: Callable[[str], None] = lambda line: None,
        planned: bool = False, hold: bool = False, tcp: bool = False, ipv6: bool = False,
        foreign: bool = False) -> MobilityReport:
    """Run the scenario on the lab that is up, or bring `topology` up for it
    (and down afterwards); start the controller if none runs (and stop it).
    `planned`: each move is announced with the new port first (`hold`: without it).
    `tcp`: a paced TCP stream from the pinger to the mover runs through the moves too.
    `ipv6`: the probes and the stream go to the mover's IPv6 address (dual-stack hosts).
    `foreign`: an ITR unaware of the moves tunnels to the mover from the core router too."""
    if moves < 1:
        raise LabError(f"--moves must be at least 1, not {moves}")
    state = read_state()
    own_lab = state is None
    if own_lab:
        progress(f"bringing up {topology}")
        state = up(topology)
    try:
        with lab_controller.driving(state, progress):
            return _record(state, choose(state, host, to, pinger, ipv6=ipv6), moves=moves, pause=pause,
                           interval=interval, warmup_timeout=warmup_timeout, progress=progress, planned=planned,
                           hold=hold, tcp=tcp, foreign=foreign)
    finally:
        if own_lab:
            down()


def _record(state: LabState, cast: Cast, *, moves: int, pause: float, interval: float, warmup_timeout: float,
            progress: Callable[[str], None], planned: bool = False, hold: bool = False,
            tcp: bool = False, foreign: bool = False) -> MobilityReport:
    watches = [FlowWatch(s) for s in state.sites]
    done: list[Move] = []
    prober = Prober(cast.pinger.namespace, cast.target, interval)
    stream = TcpStream(cast.pinger.namespace, cast.mover.namespace, cast.target) if tcp else None
    itr = _foreign_itr(state, cast, interval) if foreign else None
    outcome = foreign_outcome = None
    try:
        for w in watches:
            w.start()
        prober.start()
        if not prober.wait_reply(warmup_timeout):
            log = lab_controller.log_path()
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else "(no log)"
            raise LabError(f"no reply from {cast.mover.name} ({cast.target}) to {cast.pinger.name} within "
                           f"{warmup_timeout:.0f} s before any move: is the controller driving the lab? "
                           f"Its log ({log}) ends with:\n{tail}")
        if stream is not None:
            stream.start()
        if itr is not None:
            itr.start()
        time.sleep(min(1.0, pause))  # a stretch of undisturbed pings to compare with
        for i in range(moves):
            dest = cast.away if i % 2 == 0 else cast.home
            mv = move_host(cast.mover.name, dest, planned=planned, hold=hold)
            done.append(mv)
            progress(f"move {i + 1}/{moves}: {mv.host} {mv.from_site} -> {mv.to_site} "
                     f"(port {mv.to_ofport}, no link for {mv.swap_ms:.1f} ms)")
            time.sleep(pause)
        if stream is not None:
            outcome = stream.stop()
            stream = None
        if itr is not None:
            foreign_outcome = itr.stop()
        probes = prober.stop()
    finally:
        if stream is not None:
            stream.stop(timeout=1.0)
        if itr is not None:
            itr.kill()
        prober.stop(linger=0)
        events = tuple(e for w in watches for e in w.stop())
    outcomes, lost_before = analyse(done, probes, events, interval=interval, pinger_site=cast.pinger.site)
    return MobilityReport(lab=state.name, host=cast.mover.name, target=cast.target, pinger=cast.pinger.name,
                          pinger_site=cast.pinger.site, interval=interval, pause=pause, moves=outcomes,
                          probes=probes, events=tuple(sorted(events, key=lambda e: e.at)),
                          lost_before_moves=lost_before, tcp=outcome, foreign=foreign_outcome)


def _foreign_itr(state: LabState, cast: Cast, interval: float) -> ForeignItr:
    """From the first core router, to the mover's home site's first RLOC of the router's reach."""
    router = next((n for n in state.nodes if n.kind == "router"), None)
    if router is None:
        raise LabError("--foreign needs a core router in the lab to send from")
    home = state.site(cast.home)
    return ForeignItr(router.namespace, home.rlocs[0].address, home.name, cast.target, cast.mover.namespace,
                      cast.mover.iid, interval)


# --------------------------------------------------------------------------
# Output


def format_table(report: MobilityReport) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    row = "{:>4}  {:<10} {:>8} {:>5} {:>8} {:>8} {:>9}   {:>9} {:>9} {:>9}"
    lines = [f"{report.host} ({report.target}) pinged from {report.pinger} ({report.pinger_site}) every "
             f"{report.interval * 1000:g} ms; {len(report.moves)} moves, {report.pause:g} s apart", "",
             f"{'':50}reply     first per-EID flow change,", f"{'':50}after     ms after the move at the",
             row.format("move", "from->to", "swap ms", "lost", "lost ms", "gap ms", "attach", "new site", "old site",
                        "ITR")]
    for m in report.moves:
        lines.append(row.format(m.index, f"{m.from_site}->{m.to_site}", f"{m.swap_ms:.1f}", m.lost,
                                f"{m.lost_ms:.1f}", ms(m.gap_ms), ms(m.after_attach_ms),
                                *(ms(m.reaction(r).first_change_ms) for r in ROLES)))
    s = report.summary()
    lines += ["", f"outage (gap; a move never recovered from counts its whole window): median "
              f"{ms(s['outage_ms']['median'])} ms, max {ms(s['outage_ms']['max'])} ms",
              f"lost x interval: median {ms(s['lost_ms']['median'])} ms, max {ms(s['lost_ms']['max'])} ms; "
              f"interface swap: median {ms(s['swap_ms']['median'])} ms; first reply after the host's "
              f"arrival: median {ms(s['after_attach_ms']['median'])} ms",
              "first flow change, median: " + ", ".join(
                  f"{r} {ms(s['first_flow_change_ms'][r]['median'])} ms" for r in ROLES),
              f"pings came back after {s['recovered']} of {s['moves']} moves; "
              f"{report.lost_before_moves} probes lost before the first move"]
    lines += [f"move {m.index}: {m.lost} probes lost, sent at (ms after its start) "
              + ", ".join(f"{t:.1f}" for t in m.lost_at_ms[:20]) + (" ..." if m.lost > 20 else "")
              + f"; the host attached at {m.swap_ms:.1f} ms, its old port was gone at {m.unplugged_ms:.1f} ms"
              for m in report.moves if m.lost_at_ms]
    if report.foreign is not None:
        f = report.foreign
        lines.append(f"ITR unaware of the moves (to {f.rloc}, from the core router): {len(f.lost)} of "
                     f"{len(f.sent)} datagrams lost, per move " + ", ".join(map(str, report.foreign_lost_per_move()))
                     + f"; {f.duplicates} duplicates; {report.foreign_lost_in_port_adds()} of the lost were sent "
                     f"while a new vif was added at {f.site}")
        lines += [f"move {m.index}: {len(at)} of the foreign ITR's datagrams lost, sent at (ms after its start) "
                  + ", ".join(f"{t:.1f}" for t in at[:20]) + (" ..." if len(at) > 20 else "")
                  + ("" if m.plugged_ms is None else
                     f"; its new vif was plugged from {m.plugged_ms[0]:.1f} to {m.plugged_ms[1]:.1f} ms")
                  for m, at in zip(report.moves, report.foreign_lost_at_ms()) if at]
    if report.tcp is not None:
        t = report.tcp
        lines.append(f"TCP stream through the moves: {t.received_bytes} of {t.sent_bytes} bytes"
                     f"{' (' + t.error + ')' if t.error else ''}; {t.rto_events} retransmission timeouts, "
                     f"{t.loss_probes} tail-loss probes, {t.retransmitted_segments} segments retransmitted, "
                     f"longest stall {t.longest_stall_ms:.1f} ms")
    return "\n".join(lines)


def plot(report: MobilityReport, path: str | Path) -> Path:
    """RTT against time, lost probes marked at the bottom, each move a dashed
    line with its interface swap shaded, and the per-EID flow changes of the
    xTRs as ticks at the top; below, a close-up of the recovered move with
    the longest outage (or of the first move if none recovered)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter
    from matplotlib.transforms import blended_transform_factory

    if not report.probes:
        raise LabError("nothing to plot: no probes were sent")
    t0 = report.probes[0].sent
    recovered = [m for m in report.moves if m.recovered]
    focus = max(recovered, key=lambda m: m.gap_ms) if recovered else (report.moves[0] if report.moves else None)
    fig, axes = plt.subplots(2 if focus else 1, 1, figsize=(12, 7.5 if focus else 4), squeeze=False)
    spans = [(axes[0][0], None)]
    if focus:
        spans.append((axes[1][0], (focus.started - t0 - 0.1, focus.started - t0 + 0.3)))
    sites = sorted({e.site for e in report.events})
    colours = dict(zip(sites, ("tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive")))
    for ax, span in spans:
        def inside(x: float) -> bool:
            return span is None or span[0] <= x <= span[1]

        ok = [(p.sent - t0, p.rtt_ms) for p in report.probes if p.received is not None and inside(p.sent - t0)]
        lost = [p.sent - t0 for p in report.probes if p.received is None and inside(p.sent - t0)]
        ax.plot([x for x, _ in ok], [y for _, y in ok], ".", markersize=2 if span is None else 4,
                color="tab:blue", label="echo reply: RTT")
        frame = blended_transform_factory(ax.transData, ax.transAxes)  # x in seconds, y in axes fraction
        ax.plot(lost, [0.03] * len(lost), "x", color="tab:red", markersize=4, transform=frame,
                label=f"lost ({len(lost)})")
        for site in sites:
            at = [e.at - t0 for e in report.events if e.site == site and e.per_eid and inside(e.at - t0)]
            ax.plot(at, [0.9] * len(at), "|", color=colours.get(site, "black"), markersize=10, transform=frame,
                    label=f"flow change at {site}" if at else None)
        for m in report.moves:
            x = m.started - t0
            if not inside(x):
                continue
            ax.axvline(x, color="0.4", linestyle="--", linewidth=0.8)
            ax.axvspan(x, m.attached - t0, color="0.85")
            ax.text(x, 0.99, f" ->{m.to_site}", transform=frame, fontsize=7, va="top")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel("RTT (ms)")
        ax.grid(True, which="major", alpha=0.3)
        if span:
            ax.set_xlim(*span)
            gap = "never came back" if focus.gap_ms is None else f"gap {focus.gap_ms:.0f} ms"
            ax.set_title(f"close-up of move {focus.index} ({focus.from_site} -> {focus.to_site}): {gap}, "
                         f"{focus.lost} lost; shaded: the interface swap ({focus.swap_ms:.0f} ms)", fontsize=9)
        ax.legend(loc="center right", fontsize=7)
    axes[-1][0].set_xlabel("time (s)")
    median = report.summary()["outage_ms"]["median"]
    pair = f"{report.moves[0].from_site} <-> {report.moves[0].to_site}" if report.moves else ""
    axes[0][0].set_title(f"{report.host} ({report.target}) pinged from {report.pinger} every "
                         f"{report.interval * 1000:g} ms while it moves {pair}; outage median "
                         f"{'-' if median is None else f'{median:.0f}'} ms", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
