"""Evacuation: N workloads leave one site for another at once (a rack drained
for maintenance), probed all the while from a third site.

The topology is generated (`topology`): three sites around a core router
and the Map-Server, N workloads at the source site and a bystander (b1)
that stays there, one resident host at the destination and the prober at
the third.  `run` (`lisp-ryu lab evacuation`) drives it with the lisp-ryu
controller and its embedded Map-Server: the prober (scenarios/sweep.py)
pings every workload once per interval; first a few single moves of one workload (there and back: the
baseline, one move's outage under the same probing), then every workload
of the source site moves at once (lisp_ryu/lab/evacuate.py); when each has
answered again, every switch's flows are checked for stale entries
(scenarios/stale.py) until clean or `settle` runs out.

The bystander is probed too: what it loses moved nothing and involved no
mapping change, so it is what the lab's own switches cost while the others
move (the old site's OVS handles hundreds of ports going down and away).
"""

from __future__ import annotations

import ipaddress
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from lisp_ryu.lab import controller as lab_controller
from lisp_ryu.lab.build import up
from lisp_ryu.lab.evacuate import evacuate
from lisp_ryu.lab.move import move_host
from lisp_ryu.lab.scenarios import stale
from lisp_ryu.lab.scenarios.sweep import Outage, SweepProber, outage, percentile
from lisp_ryu.lab.state import LabError, LabState, read_state
from lisp_ryu.lab.teardown import down

SOURCE, DESTINATION, PROBER_SITE = "dc1", "dc2", "dc3"
PROBER = "p3"
BYSTANDER = "b1"  # stays at the source site: the evacuation's cost to a workload that does not move
SINGLE_MOVES = 2  # there and back: the workload is home again for the evacuation
PAUSE = 1.5
RECOVERY_TIMEOUT = 30.0
SETTLE = 10.0


def interval_for(workloads: int) -> float:
    """Each workload's probe interval: 10 ms, longer past 40 workloads so the
    prober sends at most 4,000 probes a second (each crosses two userspace
    switches each way, and the lab's switches and controller share two cores)."""
    return max(0.01, workloads / 4_000)


def topology(workloads: int, *, name: str = "evacuation", management_subnet: str = "198.19.0.0/24",
             port: int = 6653) -> dict:
    """A three-site topology with `workloads` hosts (w1, w2, ...) and the bystander (b1) at dc1, one at
    dc2 (r2) and the prober (p3) at dc3."""
    if workloads < 1:
        raise LabError(f"an evacuation needs at least one workload, not {workloads}")
    net = ipaddress.ip_network(management_subnet)
    first = ipaddress.ip_address("10.1.0.10")
    if workloads > 60_000:
        raise LabError(f"{workloads} workloads do not fit 10.1.0.0/16")
    return {
        "name": name,
        "management": {"subnet": str(net), "controller": str(net.network_address + 1), "port": port},
        "map_server": {"name": "ms", "address": "198.18.0.2", "key": "lisp-lab-key"},
        "underlay": {"routers": [{"name": "core"}], "links": [
            {"core": "198.18.0.1/24", "ms": "198.18.0.2/24"},
            *({"core": f"198.18.{i}.1/24", f"dc{i}": f"198.18.{i}.2/24"} for i in (1, 2, 3))]},
        "sites": [{"name": f"dc{i}", "dpid": i, "rlocs": [{"address": f"198.18.{i}.2"}],
                   "eid_prefixes": [{"prefix": f"10.{i}.0.0/16", "iid": 42, "gateway": f"10.{i}.0.1"}]}
                  for i in (1, 2, 3)],
        "hosts": [{"name": f"w{k + 1}", "site": SOURCE, "address": f"{first + k}/16"} for k in range(workloads)]
        + [{"name": BYSTANDER, "site": SOURCE, "address": f"{first + workloads}/16"},
           {"name": "r2", "site": DESTINATION, "address": "10.2.0.10/16"},
           {"name": PROBER, "site": PROBER_SITE, "address": "10.3.0.10/16"}],
    }


def write_topology(workloads: int, path: str | Path, **options) -> Path:
    import yaml

    path = Path(path)
    path.write_text(yaml.safe_dump(topology(workloads, **options), sort_keys=False))
    return path


# --------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class EvacuationReport:
    lab: str
    from_site: str
    to_site: str
    prober: str
    interval: float  # each workload's probe interval
    baseline: tuple[Outage, ...]  # the single moves, one after another
    outages: tuple[Outage, ...]  # one per workload of the evacuation
    prepared_s: float  # plugging in every new interface before the switchovers
    spread_ms: float  # from the first switchover to the last gratuitous ARP
    recovered_after_s: float | None  # from the evacuation's start until every workload answered; None: never
    stale: tuple[str, ...]  # stale or missing flows left after `settle`
    clean_after_s: float | None  # from the end of probing until the tables were clean; None: not within settle
    notes: tuple[str, ...]  # what the leftovers check found that is not a stale flow (BFD ports)
    lost_probes_before: int  # probes unanswered before the first move, after every workload answered once
    bystander: Outage | None = None  # the workload that stays at the source site, from the evacuation's start
    planned: bool = False  # each move announced with its new port first (POST /lisp/v1/moves)

    def summary(self) -> dict:
        outages = [o.outage_ms for o in self.outages]
        single = [o.outage_ms for o in self.baseline]
        return {
            "workloads": len(self.outages),
            "planned": self.planned,
            "recovered": sum(o.recovered for o in self.outages),
            "lost_workloads": sum(not o.recovered for o in self.outages),
            "interval_ms": self.interval * 1000.0,
            "outage_ms": {"p50": percentile(outages, 50), "p99": percentile(outages, 99),
                          "max": max(outages, default=None)},
            "lost_probes": sum(o.lost for o in self.outages),
            "baseline_ms": statistics.median(single) if single else None,
            "baseline_moves": [o.outage_ms for o in self.baseline],
            "prepared_s": self.prepared_s,
            "spread_ms": self.spread_ms,
            "recovered_after_s": self.recovered_after_s,
            "stale_flows": len(self.stale),
            "clean_after_s": self.clean_after_s,
            "lost_probes_before": self.lost_probes_before,
            "bystander_ms": self.bystander.outage_ms if self.bystander is not None else None,
        }

    def to_json(self) -> str:
        return json.dumps({"summary": self.summary(), "outages": [asdict(o) for o in self.outages],
                           "baseline": [asdict(o) for o in self.baseline], "stale": list(self.stale),
                           "notes": list(self.notes)}, indent=2)


def format_report(report: EvacuationReport) -> str:
    s = report.summary()

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    o = s["outage_ms"]
    lines = [f"{s['workloads']} workloads evacuated {report.from_site} -> {report.to_site}"
             + (" as planned moves (announced with their new ports)" if report.planned else "")
             + f", each probed from {report.prober} every {s['interval_ms']:g} ms",
             f"  new interfaces plugged in {report.prepared_s:.1f} s; switchovers within {report.spread_ms:.0f} ms",
             f"  outage per workload: p50 {ms(o['p50'])} ms, p99 {ms(o['p99'])} ms, max {ms(o['max'])} ms; "
             f"{s['lost_probes']} probes lost",
             f"  one move alone (baseline, median of {len(report.baseline)}): {ms(s['baseline_ms'])} ms "
             f"({', '.join(ms(x) for x in s['baseline_moves'])})",
             f"  answering again: {s['recovered']} of {s['workloads']}"
             + (f", all within {report.recovered_after_s:.2f} s" if report.recovered_after_s is not None else ""),
             f"  stale flows: {s['stale_flows']}" + (f" (clean {report.clean_after_s:.1f} s after probing ended)"
                                                    if report.clean_after_s is not None else "")]
    lines += [f"    {line}" for line in report.stale[:20]]
    if report.bystander is not None:
        lines.append(f"  {report.bystander.host}, staying at {report.from_site}: longest gap {ms(s['bystander_ms'])} ms "
                     f"(no move, no mapping change: what the lab's switches cost meanwhile)")
    worst = sorted(report.outages, key=lambda x: -x.outage_ms)[:5]
    lines.append("  longest: " + ", ".join(f"{x.host} {ms(x.outage_ms)} ms" + ("" if x.recovered else " (lost)")
                                           for x in worst))
    lines += [f"  note: {n}" for n in report.notes]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# The scenario


def run(*, workloads: int | None = None, interval: float | None = None, single_moves: int = SINGLE_MOVES,
        planned: bool = False, from_site: str = SOURCE, to_site: str = DESTINATION, prober: str = PROBER,
        topology_file: str | Path | None = None, recovery_timeout: float = RECOVERY_TIMEOUT,
        settle: float = SETTLE, warmup_timeout: float = 30.0,
        progress: Callable[[str], None] = lambda line: None) -> EvacuationReport:
    """Run on the lab that is up (its hosts at `from_site` are the workloads), or
    bring up the generated topology of `workloads` hosts (or `topology_file`) and
    take it down afterwards; start a controller if none runs (and stop it)."""
    state = read_state()
    own_lab = state is None
    if own_lab:
        if topology_file is None:
            import tempfile

            tmp = Path(tempfile.mkdtemp(prefix="evacuation-"))
            topology_file = write_topology(workloads or 20, tmp / "evacuation.yaml")
        progress(f"bringing up {topology_file}")
        started = time.monotonic()
        state = up(topology_file)
        progress(f"lab up in {time.monotonic() - started:.1f} s: {len(state.hosts)} hosts")
    try:
        with lab_controller.driving(state, progress):
            return _record(read_state() or state, from_site=from_site, to_site=to_site, prober=prober,
                           interval=interval, single_moves=single_moves, planned=planned,
                           recovery_timeout=recovery_timeout, settle=settle, warmup_timeout=warmup_timeout,
                           progress=progress)
    finally:
        if own_lab:
            down()


def _record(state: LabState, *, from_site: str, to_site: str, prober: str, interval: float | None,
            single_moves: int, planned: bool, recovery_timeout: float, settle: float, warmup_timeout: float,
            progress: Callable[[str], None]) -> EvacuationReport:
    at_source = [h for h in state.hosts if h.site == from_site]
    movers = [h for h in at_source if h.name != BYSTANDER]
    bystander = next((h for h in at_source if h.name == BYSTANDER), None)
    p = state.host(prober)
    if not movers:
        raise LabError(f"site {from_site} has no hosts to evacuate")
    if p.site in (from_site, to_site):
        raise LabError(f"the prober {p.name} is at {p.site}: it must be at a third site")
    interval = interval or interval_for(len(movers))
    watched = movers + ([bystander] if bystander is not None else [])
    sweep = SweepProber(p.namespace, [h.ip for h in watched], interval)
    sweep.start()
    try:
        began = time.time()
        deadline = time.monotonic() + warmup_timeout
        while not all(sweep.replied_since(began)):
            if time.monotonic() > deadline:
                silent = [h.name for h, ok in zip(watched, sweep.replied_since(began)) if not ok]
                raise LabError(f"{len(silent)} of {len(watched)} workloads never answered {p.name} within "
                               f"{warmup_timeout:.0f} s before any move ({', '.join(silent[:10])}): is the "
                               f"controller driving the lab? (log {lab_controller.log_path()})")
            time.sleep(0.1)
        quiet_since = time.time()
        time.sleep(1.0)
        index = {h.name: i for i, h in enumerate(movers)}
        singles = []
        for k in range(single_moves):
            mover = movers[0]
            dest = to_site if k % 2 == 0 else from_site
            mv = move_host(mover.name, dest, planned=planned)
            progress(f"single move {k + 1}/{single_moves}: {mv.host} {mv.from_site} -> {mv.to_site}")
            singles.append(mv)
            time.sleep(PAUSE)
        if single_moves % 2:  # the baseline's workload stays where it went; the others leave
            movers_now = [h for h in movers if h.name != movers[0].name]
        else:
            movers_now = movers
        first_move = singles[0].started if singles else time.time()
        lost_before = sum(pr.received is None for i in range(len(watched)) for pr in sweep.probes(i)
                          if quiet_since <= pr.sent < first_move - interval)
        progress(f"evacuating {len(movers_now)} workloads {from_site} -> {to_site}"
                 + (" (planned)" if planned else ""))
        ev = evacuate(from_site, to_site, [h.name for h in movers_now], planned=planned)
        progress(f"switchovers done within {ev.spread_ms:.0f} ms (interfaces prepared in {ev.prepared_s:.1f} s)")
        start = min(m.started for m in ev.moves)
        recovered_at = _wait_recovered(sweep, [index[m.host] for m in ev.moves], ev.moves, recovery_timeout)
        time.sleep(1.0)  # replies after recovery: a workload that answers once and stops again is not recovered
        sweep.stop()
        settled = time.monotonic()
        problems, notes, clean_at = _settle(read_state() or ev.state, settle)
        clean_after = None if clean_at is None else clean_at - settled
    finally:
        sweep.stop(linger=0)
    baseline = tuple(outage(mv.host, sweep.probes(index[mv.host]), mv.started, interval=interval,
                            until=singles[k + 1].started if k + 1 < len(singles) else start)
                     for k, mv in enumerate(singles))
    outages = tuple(outage(mv.host, sweep.probes(index[mv.host]), mv.started, interval=interval)
                    for mv in ev.moves)
    stayed = None if bystander is None else outage(bystander.name, sweep.probes(len(movers)), start, interval=interval)
    return EvacuationReport(
        lab=state.name, from_site=from_site, to_site=to_site, prober=p.name, interval=interval, baseline=baseline,
        outages=outages, prepared_s=ev.prepared_s, spread_ms=ev.spread_ms,
        recovered_after_s=None if recovered_at is None else recovered_at - start, stale=tuple(problems),
        clean_after_s=clean_after, notes=tuple(notes), lost_probes_before=lost_before, bystander=stayed,
        planned=planned)


def _wait_recovered(sweep: SweepProber, indices: list[int], moves, timeout: float) -> float | None:
    """Until every moved workload has answered since its own move; returns
    when the last of them first did (time.time()), or None on timeout.  (The
    lab's evacuation returns seconds after the switchovers, once the old
    pairs are deleted: when this looks is not when they recovered.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        firsts = [sweep.first_reply_after(i, m.started) for i, m in zip(indices, moves)]
        if all(t is not None for t in firsts):
            return max(firsts)
        time.sleep(0.05)
    return None


def _settle(state: LabState, settle: float) -> tuple[list[str], list[str], float | None]:
    """Check every switch until no stale flow is left or `settle` runs out: the
    problems left, the notes (BFD ports behind the mappings), and when it was clean."""
    from lisp_ryu.lab.scenarios import failover

    began = time.monotonic()
    while True:
        problems = stale.check(state)
        leftovers = failover.leftovers(state, lab_controller.mesh_sites())
        problems += [x for x in leftovers if "BFD port" not in x]
        if not problems or time.monotonic() - began > settle:
            notes = [x for x in leftovers if "BFD port" in x]
            return problems, notes, (time.monotonic() if not problems else None)
        time.sleep(0.5)
