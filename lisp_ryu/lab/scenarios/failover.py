"""RLOC failover under a 1 ms prober: cut a multihomed site's best RLOC and time the recovery.

The scenario: site dc3 has two RLOCs; `failover_topology` makes one of them
(`PRIMARY`, 198.18.4.2 on br-phy1) priority 1 and the other priority 2, so
every ITR tunnels to the primary.  A host of another site sends an ICMP echo
every 1 ms (`probe.Prober`, exact send and receive times, the rate kept
while replies are missing) to a dc3 host while the lab cuts the primary's
underlay link: `ip link set <if> down` on the core router's end, inside its
namespace.  With failover in the switch (the default: BFD ports and
fast-failover groups, lisp_ryu/flows/failover.py) the ITR's BFD session to
the primary times out and its FF group moves to the priority-2 RLOC, with
no controller involved; with `failover={"enabled": False}` RLOC probing has
to notice (misses x interval) and the controller rewrites the flow.  Then
the link comes back and traffic returns to the primary.

Why the primary is the site's *second* link: the lab routes everything a
site sends through its first link (see lisp_ryu/lab/topology.py), so
cutting the first link would also cut dc3's replies and its control
traffic; cutting the second one breaks exactly the path towards the
primary RLOC, which is what BFD (or probing) must detect.

Per cycle the outcome gives the outage (from the cut to the send time of
the first answered probe after it: the reply gap, at 1 ms), when the ITR's
data plane chose another RLOC (`ovs-appctl ofproto/trace` of a packet of
the ping, polled: it follows FF bucket liveness as forwarding does), and
the same for the return after the link is restored.  `leftovers` dumps
every site's flows, groups and ports afterwards and names anything stale.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import yaml

from lisp_ryu.flows.pipeline import Owner, cookie_owner
from lisp_ryu.glue.failover_ports import MARK
from lisp_ryu.lab import topology_load
from lisp_ryu.lab.running import appctl, exec_in, ofctl, vsctl
from lisp_ryu.lab.scenarios.probe import Probe, Prober
from lisp_ryu.lab.state import LabError, LabState

SITE = "dc3"
PRIMARY = "198.18.4.2"
# RLOC probing for a run without failover in the switch (the old way; the figures' baseline):
# short enough for a test, long enough that a loaded 2-CPU machine answers every probe in time.
PROBING = {"interval": 0.5, "jitter": 0.1, "misses": 3, "timeout": 0.2}
INTERVAL = 0.001
POLL = 0.02
# A restored link's first milliseconds: 3 probes sent 0.2-2.1 ms after `ip link set up` went
# unanswered in 1 of ~40 cycles on a loaded machine (8 once in CI), while the ITR was still on
# the backup and no flow changed (the return came 1.6 s later).  Kept apart from the return's.
LINK_UP_MS = 50.0
FAST_DETECTION_MS = 1000  # a BFD session's detection time at its fast interval (3 x 75 ms), with margin


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


_TUNNEL_DST = re.compile(r"tnl_push\(.*?ipv[46]\(src=[^,]+,dst=([0-9a-fA-F.:]+)")


def active_rloc(state: LabState, pinger: str, target_ip: str) -> str | None:
    """The RLOC the pinger's xTR tunnels a packet to `target_ip` to now, as its datapath would
    (the first, if it sends copies: `tunnel_destinations`)."""
    return next(iter(tunnel_destinations(state, pinger, target_ip)), None)


def tunnel_destinations(state: LabState, pinger: str, target_ip: str) -> list[str]:
    """Every RLOC the pinger's xTR tunnels a packet to `target_ip` to now (a planned move's
    replication sends several copies), as its datapath would.

    `ofproto/trace` runs the packet through the OpenFlow tables, groups
    included, with the liveness of every watched port as forwarding sees it,
    and prints the datapath actions: each tunnel header's destination is an RLOC.
    """
    host = state.host(pinger)
    packet = (f"in_port={host.ofport},ip,dl_src={host.mac},dl_dst={host.gateway_mac},"
              f"nw_src={host.ip},nw_dst={target_ip},nw_ttl=64")
    out = appctl(host.site, "ofproto/trace", "br-int", packet, state=state)
    actions = next((line for line in out.splitlines() if line.startswith("Datapath actions:")), "")
    return _TUNNEL_DST.findall(actions)


def bfd_ports(state: LabState) -> dict[str, str]:
    """Every BFD port the controller made, "site/port" -> its bfd_status (ovs-vsctl's words)."""
    out = {}
    for site in state.sites:
        listing = vsctl(site.name, "--bare", "--format=csv", "--no-headings", "--columns=name,bfd_status",
                        "find", "interface", f"external_ids:{MARK}={site.name}", state=state)
        for line in listing.splitlines():
            name, _, status = line.partition(",")
            out[f"{site.name}/{name}"] = status
    return out


def bfd_up(state: LabState, site: str, remote: str) -> bool:
    """`site`'s BFD session(s) towards `remote` are up."""
    listing = vsctl(site, "--bare", "--format=csv", "--no-headings", "--columns=bfd_status", "find", "interface",
                    f"external_ids:{MARK}={site}", f"external_ids:lisp-ryu-remote={remote}", state=state)
    return bool(listing.strip()) and all(re.search(r"(?<![_a-z])state=up", line) for line in listing.splitlines())


def armed(state: LabState) -> bool:
    """Failover in the switch is ready: every BFD port's session is up (True if there are none)
    and each would notice a dead peer quickly (`detection_slow`)."""
    return (all(re.search(r"(?<![_a-z])state=up", status) for status in bfd_ports(state).values())
            and not any(detection_slow(state, site.name) for site in state.sites))


def detection_slow(state: LabState, site: str) -> list[str]:
    """`site`'s BFD sessions that are up but would take more than FAST_DETECTION_MS to see their
    peer die.  A session that just came up still runs on the peer's slow pre-up interval (1 s or
    more, RFC 5880 6.8.3) until the peer's next packet brings the fast one: a cut then took
    2.9 s to notice instead of 225 ms (3 x 75 ms).  OVS prints each session's next detection."""
    return slow_sessions(appctl(site, "bfd/show", state=state))


def slow_sessions(bfd_show: str) -> list[str]:
    """The up sessions in `ovs-appctl bfd/show` output whose next detection is over FAST_DETECTION_MS away."""
    slow = []
    for block in re.split(r"^---- ", bfd_show, flags=re.M)[1:]:
        detect = re.search(r"Detect Time: now ([+-]\d+)ms", block)
        if "Local Session State: up" in block and detect and int(detect.group(1)) > FAST_DETECTION_MS:
            slow.append(block.split()[0])
    return slow


def bfd_remotes(state: LabState, site: str) -> set[str]:
    """The RLOCs `site` has a BFD port of ours towards (whatever their sessions' state)."""
    listing = vsctl(site, "--bare", "--format=csv", "--no-headings", "--columns=options",
                    "find", "interface", f"external_ids:{MARK}={site}", state=state)
    return set(re.findall(r"remote_ip=([0-9a-fA-F.:]+)", listing))


def armed_towards(state: LabState, site: str, rlocs: Iterable[str]) -> bool:
    """`site` has a BFD port towards each of `rlocs` and every BFD session of the lab is up.

    `armed` alone only speaks of the ports that exist: the controller makes a
    site's ports towards a peer shortly after its map-cache entry, so just
    after the first packet `armed` can be true of the older ports (another
    peer's) while the ones a cut is about to test are not even there yet.
    """
    return set(rlocs) <= bfd_remotes(state, site) and armed(state)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until `predicate()`; returns when (time.time()) it was first seen true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.time()
        time.sleep(POLL)
    raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass(frozen=True)
class FailoverOutcome:
    cut_at: float
    restored_at: float
    outage_ms: float | None  # cut -> first answered probe sent after it (the reply gap); None: never recovered
    lost: int  # probes sent after the cut that got no reply before the first answered one
    moved_ms: float | None  # cut -> the ITR's datapath tunnels to another RLOC (ofproto/trace, polled)
    back_ms: float | None  # restore -> it tunnels to the primary again
    bfd_up_ms: float | None  # restore -> the ITR's BFD session to the primary is up (what `back_ms` follows)
    lost_after_restore: int  # probes lost between the restore and the end of the cycle
    answered_after_restore: int
    lost_after_restore_ms: tuple[float, ...] = ()  # when each of those was sent, ms after the restore

    @property
    def lost_at_link_up(self) -> int:
        """Probes lost as the link came up (sent within LINK_UP_MS of the restore, before the
        return): the ITR still tunnels to the backup then, so these are the underlay's own."""
        window = min(LINK_UP_MS, self.back_ms if self.back_ms is not None else LINK_UP_MS)
        return sum(1 for t in self.lost_after_restore_ms if t < window)

    @property
    def lost_at_return(self) -> int:
        """Probes lost after the link came up: the return to the primary and the time after it."""
        return self.lost_after_restore - self.lost_at_link_up


def outcome(probes: tuple[Probe, ...], cut_at: float, moved_at: float | None, restored_at: float,
            back_at: float | None, end: float, bfd_up_at: float | None = None) -> FailoverOutcome:
    """What one cut/restore cycle did to the probes and to the ITR's choice of RLOC."""
    after_cut = [p for p in probes if cut_at <= p.sent < restored_at]
    first = next((p for p in after_cut if p.received is not None), None)
    after_restore = [p for p in probes if restored_at <= p.sent < end]
    return FailoverOutcome(
        cut_at=cut_at, restored_at=restored_at,
        outage_ms=None if first is None else (first.sent - cut_at) * 1000.0,
        lost=sum(1 for p in after_cut if p.received is None and (first is None or p.sent < first.sent)),
        moved_ms=None if moved_at is None else (moved_at - cut_at) * 1000.0,
        back_ms=None if back_at is None else (back_at - restored_at) * 1000.0,
        bfd_up_ms=None if bfd_up_at is None else (bfd_up_at - restored_at) * 1000.0,
        lost_after_restore=sum(1 for p in after_restore if p.received is None),
        answered_after_restore=sum(1 for p in after_restore if p.received is not None),
        lost_after_restore_ms=tuple(round((p.sent - restored_at) * 1000.0, 1)
                                    for p in after_restore if p.received is None),
    )


def run(state: LabState, *, cycles: int = 1, pinger: str = "h1", target: str = "h5", site: str = SITE,
        primary: str = PRIMARY, timeout: float = 20.0, settle: float = 1.0,
        phase: float = 0.1) -> list[FailoverOutcome]:
    """Cut and restore `site`'s primary RLOC link `cycles` times under a 1 ms prober from `pinger` to `target`.

    Each cycle waits a random fraction of `phase` (so cuts land at every
    point of the BFD or probe schedule), cuts, waits until the ITR tunnels
    elsewhere (or `timeout`), lets the probes run `settle` s on the backup,
    restores the link, waits until the ITR tunnels to the primary again and
    lets the probes run `settle` s more.
    """
    end = rloc_link(state, site, primary)
    target_ip = state.host(target).ip
    outcomes = []
    prober = Prober(state.host(pinger).namespace, target_ip, INTERVAL)
    try:
        prober.start()
        if not prober.wait_reply(timeout):
            raise LabError(f"{pinger} gets no reply from {target} before any cut")
        wait_for(lambda: active_rloc(state, pinger, target_ip) == primary, timeout,
                 f"{pinger}'s xTR to tunnel to {target} through the primary RLOC {primary}")
        # The BFD sessions come up about a second after their ports: until then the FF group's
        # last bucket (the flow-based port) carries the traffic and a cut would find nothing armed.
        wait_for(lambda: armed(state), timeout, f"every BFD session up ({bfd_ports(state)})")
        time.sleep(settle)
        marks = []
        for _ in range(cycles):
            time.sleep(random.uniform(0.0, phase))
            cut_at = set_link(state, end, up=False)
            try:
                moved_at = wait_for(lambda: active_rloc(state, pinger, target_ip) not in (primary, None), timeout,
                                    f"{pinger}'s xTR to tunnel off {primary} after the cut")
                time.sleep(settle)
            finally:
                restored_at = set_link(state, end, up=True)
            seen: dict[str, float] = {}

            def back() -> bool:  # the return, and the ITR's BFD session to the primary, whichever first
                now = time.time()
                if "bfd" not in seen and bfd_up(state, state.host(pinger).site, primary):
                    seen["bfd"] = now
                if "back" not in seen and active_rloc(state, pinger, target_ip) == primary:
                    seen["back"] = now
                return len(seen) == 2

            wait_for(back, timeout, f"{pinger}'s xTR to tunnel to {primary} again after the restore")
            wait_for(lambda: armed(state), timeout, "every BFD session up again after the restore")
            time.sleep(settle)
            marks.append((cut_at, moved_at, restored_at, seen["back"], time.time(), seen["bfd"]))
    finally:
        probes = prober.stop()
    for cut_at, moved_at, restored_at, back_at, stop, bfd_at in marks:
        outcomes.append(outcome(probes, cut_at, moved_at, restored_at, back_at, stop, bfd_at))
    return outcomes


# --------------------------------------------------------------------------
# Nothing stale: every site's tables and ports after a scenario


_PORT_DESC = re.compile(r"^\s*(\d+)\(([^)]+)\):", re.M)
_PORT_REFS = re.compile(r"(?:in_port=|output:|watch_port:)(\d+)")
_IN_PORT = re.compile(r"(?<![_a-z])in_port=(\d+)")
_COOKIE = re.compile(r"cookie=(0x[0-9a-fA-F]+)")


def _dormant(text: str, port: int, configured: set[int]) -> bool:
    """A flow that only waits for a configured host port that is not plugged (yet): fine.

    The controller's configuration names a host port for every lab host at
    every site (`host_ports`, SiteState.reserved_ports), so a host can move
    in and be learned in its tenant; the pipeline's own (INFRA) flows
    classify and learn on each of them before anything is plugged there.
    Such a flow matches the port (in_port=) and never sends to it.  A flow of
    any other owner on a missing port (a host's own flows left behind), one
    that outputs to or watches a missing port, or any flow on a missing port
    the configuration does not name, is stale.
    """
    m = _COOKIE.search(text)
    if port not in configured or m is None or cookie_owner(int(m.group(1), 16)) is not Owner.INFRA:
        return False
    refs = _PORT_REFS.findall(text)
    return refs.count(str(port)) == 1 and str(port) in _IN_PORT.findall(text)
_GROUP_REFS = re.compile(r"(?:group:|watch_group:)(\d+)")
_TUN_DSTS = re.compile(r"set_field:([0-9a-fA-F.:]+)->tun_(?:ipv6_)?dst")


def leftovers(state: LabState, mesh: Iterable[str] = ()) -> list[str]:
    """What is stale or dangling on any site, one line each; empty when all is clean.

    Per site: a flow or bucket naming a port the bridge does not have
    (except the pipeline's flows for a configured host port that nothing
    is plugged into: `_dormant`), a flow or group naming a missing group, a
    group nothing uses; a BFD port of ours that neither end uses (no flow or
    group of the site tunnels to its remote RLOC, nor does the lab site that
    holds that RLOC tunnel back to its local one: run this after
    `failover.grace`) unless it joins two sites of the controller's BFD
    `mesh` (`lab.controller.mesh_sites`: they keep ports towards each other, used or not),
    a BFD port towards a lab site that has no port back, a BFD port whose
    session is not up (the scenario ends with every link up) or that OVS
    could not open.
    """
    mesh = set(mesh)
    problems = []
    owner = {r.address: site.name for site in state.sites for r in site.rlocs}
    destinations: dict[str, set[str]] = {}
    ports: dict[str, list[tuple[str, str | None, str | None, str]]] = {}
    for site in state.sites:
        problems += _site_leftovers(state, site, destinations)
        bfd = vsctl(site.name, "--bare", "--format=csv", "--no-headings", "--columns=name,options,bfd_status,error",
                    "find", "interface", f"external_ids:{MARK}={site.name}", state=state)
        ports[site.name] = []
        for line in bfd.splitlines():
            local = re.search(r"local_ip=([0-9a-fA-F.:]+)", line)
            remote = re.search(r"remote_ip=([0-9a-fA-F.:]+)", line)
            ports[site.name].append((line.split(",", 1)[0], local and local.group(1), remote and remote.group(1), line))
    pairs = {(name, local, remote) for name, listed in ports.items() for _, local, remote, _ in listed}
    for name, listed in ports.items():
        for port, local, remote, line in listed:
            far = owner.get(remote or "")
            used = (remote in destinations[name] or (far is not None and local in destinations.get(far, set()))
                    or (name in mesh and far in mesh))
            if not used:
                problems.append(f"{name}: BFD port {port} leads to an RLOC no flow uses at either end: {line}")
            if far is not None and (far, remote, local) not in pairs:
                problems.append(f"{name}: BFD port {port} has no port back from {far}: {line}")
            if not re.search(r"(?<![_a-z])state=up", line):
                problems.append(f"{name}: BFD port {port} is not up: {line}")
    return problems


def _site_leftovers(state: LabState, site, destinations: dict[str, set[str]]) -> list[str]:
    """A site's dangling ports and groups; records the RLOCs its flows and groups tunnel to."""
    problems = []
    name = site.name
    configured = set(site.reserved_ports.values()) | set(site.host_ports.values())
    ports = {int(n) for n, _ in _PORT_DESC.findall(ofctl(name, "dump-ports-desc", state=state))}
    flows = [line for line in ofctl(name, "dump-flows", state=state).splitlines() if "actions=" in line]
    groups = {}
    for line in ofctl(name, "dump-groups", state=state).splitlines():
        m = re.search(r"group_id=(\d+)", line)
        if m:
            groups[int(m.group(1))] = line
    for text in flows + list(groups.values()):
        for port in _PORT_REFS.findall(text):
            if int(port) not in ports and not _dormant(text, int(port), configured):
                problems.append(f"{name}: port {port} does not exist: {text.strip()}")
    used: set[int] = set()
    for text in flows:
        used.update(int(g) for g in _GROUP_REFS.findall(text))
    for gid, text in groups.items():
        used.update(int(g) for g in _GROUP_REFS.findall(text.split("group_id=")[1].split(",", 1)[1]))
    for gid in used - groups.keys():
        problems.append(f"{name}: group {gid} is used but missing")
    for gid in groups.keys() - used:
        problems.append(f"{name}: group {gid} is used by nothing: {groups[gid]}")
    destinations[name] = set(_TUN_DSTS.findall("\n".join(flows + list(groups.values()))))
    return problems
