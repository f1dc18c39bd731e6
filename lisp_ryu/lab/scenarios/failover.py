"""RLOC failover under a continuous ping: cut a multihomed site's best RLOC and time the recovery.

The scenario: site dc3 has two RLOCs; `failover_topology` makes one of them
(`PRIMARY`, 198.18.4.2 on br-phy1) priority 1 and the other priority 2, so
every ITR tunnels to the primary.  A host of another site pings a dc3 host
every 10 ms (`probe.Prober`, exact send and receive times) while the
lab cuts the primary's underlay link: `ip link set <if> down` on the core
router's end, inside its namespace.  The ITR's probes to the primary go
unanswered, the RLOC is declared down after `misses` probes, the encap flow
moves to the priority-2 RLOC and the ping recovers.  Then the link comes
back, the next probe is answered and the flow returns to the primary.

Why the primary is the site's *second* link: the lab routes everything a
site sends through its first link (see lisp_ryu/lab/topology.py), so
cutting the first link would also cut dc3's replies and its control
traffic; cutting the second one breaks exactly the path towards the
primary RLOC, which is what probing must detect.

Per cycle the outcome gives the outage (from the cut to the send time of
the first answered ping after it; the ping interval bounds its error), the
time until the ITR's switch reported its encap flow changed (an OpenFlow
flow monitor: detection + reprogramming, with no ping granularity), and
the same for the return after the link is restored.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from lisp_ryu.lab import topology_load
from lisp_ryu.lab.running import exec_in, ofctl
from lisp_ryu.lab.scenarios.probe import FlowWatch, Probe, Prober
from lisp_ryu.lab.state import LabError, LabState

SITE = "dc3"
PRIMARY = "198.18.4.2"
# Short enough for a test, long enough that a loaded 2-CPU machine answers every probe in time.
PROBING = {"interval": 0.5, "jitter": 0.1, "misses": 3, "timeout": 0.2}
INTERVAL = 0.01


def failover_topology(src: Path, dest: Path, *, site: str = SITE, primary: str = PRIMARY) -> Path:
    """Rewrite the topology file `src` into `dest`: `site`'s RLOC `primary` at priority 1, its others at 2."""
    doc = yaml.safe_load(Path(src).read_text())
    entry = next((s for s in doc["sites"] if s["name"] == site), None)
    if entry is None or len(entry["rlocs"]) < 2 or primary not in [str(r["address"]) for r in entry["rlocs"]]:
        raise LabError(f"{src}: site {site} needs at least two RLOCs, one of them {primary}")
    for r in entry["rlocs"]:
        r["priority"] = 1 if str(r["address"]) == primary else 2
        r["weight"] = 100
    Path(dest).write_text(yaml.safe_dump(doc, sort_keys=False))
    return Path(dest)


@dataclass(frozen=True)
class LinkEnd:
    """The far end (a router's interface) of the underlay link that carries one RLOC."""

    node: str
    ifname: str


def rloc_link(state: LabState, site: str, rloc: str) -> LinkEnd:
    t = topology_load.load(state.topology)
    for port in t.rloc_ports(site):
        if str(port.rloc.address) == rloc:
            return LinkEnd(port.peer.node, port.peer.ifname)
    raise LabError(f"site {site} has no RLOC {rloc}")


def set_link(state: LabState, end: LinkEnd, up: bool) -> float:
    """Take the link down or up at its far end; returns when (time.time()) the command returned."""
    exec_in(end.node, ["ip", "link", "set", end.ifname, "up" if up else "down"], state=state)
    return time.time()


def encap_rloc(state: LabState, itr: str, prefix: str) -> str | None:
    """The RLOC the ITR's encap flow for `prefix` tunnels to now (single-RLOC flows only)."""
    for line in ofctl(itr, "dump-flows", "table=1", state=state).splitlines():
        if f"nw_dst={prefix}" in line:
            m = re.search(r"set_field:([0-9.]+)->tun_dst", line)
            return m.group(1) if m else None
    return None


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass(frozen=True)
class FailoverOutcome:
    cut_at: float
    restored_at: float
    outage_ms: float | None  # cut -> first answered ping sent after it; None: never recovered
    lost: int  # pings sent after the cut that got no reply
    flow_moved_ms: float | None  # cut -> the ITR's switch reports its encap flow changed
    flow_back_ms: float | None  # restore -> the encap flow changed back
    lost_after_restore: int  # pings lost between the restore and the end of the cycle
    answered_after_restore: int


def _first_flow_change(events, site: str, since: float) -> float | None:
    times = [e.at for e in events if e.site == site and e.at >= since and e.table == 1
             and e.per_eid and e.event in ("ADDED", "MODIFIED") and "tun_dst" in e.flow]
    return min(times) if times else None


def outcome(probes: tuple[Probe, ...], events, itr: str, cut_at: float, restored_at: float,
            end: float) -> FailoverOutcome:
    """What one cut/restore cycle did to the ping and to the ITR's flows."""
    after_cut = [p for p in probes if cut_at <= p.sent < restored_at]
    first = next((p for p in after_cut if p.received is not None), None)
    after_restore = [p for p in probes if restored_at <= p.sent < end]
    moved = _first_flow_change(events, itr, cut_at)
    back = _first_flow_change(events, itr, restored_at)
    return FailoverOutcome(
        cut_at=cut_at, restored_at=restored_at,
        outage_ms=None if first is None else (first.sent - cut_at) * 1000.0,
        lost=sum(1 for p in after_cut if p.received is None and (first is None or p.sent < first.sent)),
        flow_moved_ms=None if moved is None or moved > restored_at else (moved - cut_at) * 1000.0,
        flow_back_ms=None if back is None else (back - restored_at) * 1000.0,
        lost_after_restore=sum(1 for p in after_restore if p.received is None),
        answered_after_restore=sum(1 for p in after_restore if p.received is not None),
    )


def run(state: LabState, *, cycles: int = 1, pinger: str = "h1", target: str = "h5", site: str = SITE,
        primary: str = PRIMARY, prefix: str = "10.3.0.0/16", timeout: float = 20.0,
        settle: float = 1.0) -> list[FailoverOutcome]:
    """Cut and restore `site`'s primary RLOC link `cycles` times under a ping from `pinger` to `target`.

    The controller must be running with probing on (see PROBING).  Each cycle
    waits until the ITR's flow moved away from the primary (or `timeout`),
    lets the ping run `settle` s on the backup, restores the link, waits for
    the flow to come back and lets the ping run `settle` s more.
    """
    itr = state.host(pinger).site
    end = rloc_link(state, site, primary)
    outcomes = []
    watch = FlowWatch(state.site(itr))
    watch.start()
    prober = Prober(state.host(pinger).namespace, state.host(target).ip, INTERVAL)
    try:
        prober.start()
        if not prober.wait_reply(timeout):
            raise LabError(f"{pinger} gets no reply from {target} before any cut")
        wait_for(lambda: encap_rloc(state, itr, prefix) == primary, timeout,
                 f"{itr} to tunnel {prefix} to the primary RLOC {primary}")
        time.sleep(settle)
        marks = []
        for _ in range(cycles):
            # The flow came back right after a probe: without this, every cut would land at the
            # same phase of the probe schedule and the measured detection time would be biased.
            time.sleep(random.uniform(0.0, PROBING["interval"]))
            cut_at = set_link(state, end, up=False)
            try:
                wait_for(lambda: encap_rloc(state, itr, prefix) not in (primary, None), timeout,
                         f"{itr} to move {prefix} off {primary} after the cut")
                time.sleep(settle)
            finally:
                restored_at = set_link(state, end, up=True)
            wait_for(lambda: encap_rloc(state, itr, prefix) == primary, timeout,
                     f"{itr} to move {prefix} back to {primary} after the restore")
            time.sleep(settle)
            marks.append((cut_at, restored_at, time.time()))
    finally:
        probes = prober.stop()
        events = watch.stop()
    for cut_at, restored_at, stop in marks:
        outcomes.append(outcome(probes, events, itr, cut_at, restored_at, stop))
    return outcomes
