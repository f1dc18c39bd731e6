"""Evacuate a site: many hosts leave it for another site at once, as an
orchestrator drains a rack for maintenance (`lisp-ryu lab evacuate`).

Each host moves as `lab move` moves one (lisp_ryu/lab/move.py: a new vif
plugged in at the destination first, then the switchover keeping address,
MAC, routes, ARP cache and sockets, a gratuitous ARP, the old port last),
but the steps are batched so that the switchovers, the only part a workload
feels, happen together: every new vif is made first (one OVSDB transaction
of taps, one `ip -batch` moving them into the hosts), then all hosts switch
over at once from a pool of threads, then the old ports go in one transaction.  Hosts whose
switchover failed are put back; the others stay moved.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lisp_ryu.lab import topology as topo
from lisp_ryu.lab.move import (INCOMING_IFNAME, PRECOPY, Move, _Migration, _state_after_move, announce_move,
                               host_packet_socket, reannounce)
from lisp_ryu.lab.ovs import host_port_args, tap_to_host
from lisp_ryu.lab.processes import CommandError, interfaces, run_in
from lisp_ryu.lab.rtnetlink import RouteSocket
from lisp_ryu.lab.running import load_state, locked, vsctl
from lisp_ryu.lab.state import HostState, LabError, LabState, SiteState, write_state
from lisp_ryu.xtr.mobility import PLANNED_MOVE_MAX_TIMEOUT, PLANNED_MOVE_TIMEOUT

log = logging.getLogger("lisp_ryu.lab")

WORKERS = 32  # concurrent switchovers: an orchestrator's parallelism, not one per host
ANNOUNCE_ALLOWANCE = 0.25  # seconds per announcement the windows allow for those that follow it


@dataclass(frozen=True)
class Evacuation:
    from_site: str
    to_site: str
    moves: tuple[Move, ...]
    prepared_s: float  # new vifs (ports) for every host, before the first switchover
    spread_ms: float  # from the first switchover's start to the last one's gratuitous ARP
    state: LabState


def evacuate(from_site: str, to_site: str, hosts: list[str] | None = None, *, planned: bool = False,
             hold: bool = False, workers: int = WORKERS) -> Evacuation:
    """Move `hosts` (default: every host) of `from_site` to `to_site` at once.

    `planned`: each move is announced to the controller first (POST
    /lisp/v1/moves with the new port; without it if `hold`), as `lab move --planned` does for one."""
    began = time.monotonic()
    with locked():
        state = load_state()
        if state.status != "up":
            raise LabError(f"the lab is {state.status}, not up: wait for `lisp-ryu lab up` or run `lisp-ryu lab down`")
        old, new = state.site(from_site), state.site(to_site)
        if old.name == new.name:
            raise LabError(f"evacuating {from_site} to itself: choose another site with --to")
        for s in (old, new):
            if s.is_pxtr:
                raise LabError(f"site {s.name} is a PxTR: hosts move between LISP sites "
                               f"({', '.join(x.name for x in state.lisp_sites)})")
        movers = _movers(state, old, hosts)
        ports = _allocate_ports(new, movers, state)
        migrations = [_Migration(state, h, old, new, ports[h.name]) for h in movers]
        try:
            plug_began = time.time()
            _plug_all(state, old, new, migrations, workers)
            plugged = (plug_began, time.time())
        except LabError as exc:
            failures = _put_back(migrations)
            raise LabError(f"evacuating {old.name} to {new.name} failed before any switchover; every host stays at "
                           f"{old.name}: {exc}" + "".join(f"\n{f}" for f in failures)) from exc
        if planned:  # announced once the new ports are there, as an orchestrator does just before
            # the switchovers (plugging 200 takes ~9 s).  Each window covers the announcements after
            # it too: one answers once the switches confirmed its flows (~45-90 ms each for 200 on
            # 2 cores), and with the controller's default window (10 s) the first of 200 ended before
            # the switchovers and those moves went unplanned (p50 0.7 s instead of 0.1 s).
            window = min(PLANNED_MOVE_TIMEOUT + ANNOUNCE_ALLOWANCE * len(migrations), PLANNED_MOVE_MAX_TIMEOUT)
            try:
                for m in migrations:
                    announce_move(state, m.h, new, None if hold else m.ofport, timeout=window)
                time.sleep(PRECOPY)  # after the last announcement as after a single one
            except LabError as exc:
                failures = _put_back(migrations)
                raise LabError(f"announcing the planned moves to {new.name} failed before any switchover; every host "
                               f"stays at {old.name}: {exc}" + "".join(f"\n{f}" for f in failures)) from exc
        prepared = time.monotonic() - began
        try:
            with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="switchover") as pool:
                outcomes = list(pool.map(_switch_over, migrations))
            done = [(m, o) for m, o in zip(migrations, outcomes) if not isinstance(o, LabError)]
            failed = [(m, o) for m, o in zip(migrations, outcomes) if isinstance(o, LabError)]
            problems = [f"{m.h.name}: {o}" for m, o in failed]
            problems += _put_back([m for m, _ in failed])
            moved = state
            for m, _ in done:
                moved = _state_after_move(moved, m.h.name, old.name, new.name, m.ofport)
            write_state(moved)
            problems += _unplug_all(moved, old, [m for m, _ in done])
            unplugged = time.time()
            reannounce([(m.h, m.packet_socket, o[2]) for m, o in done])
        finally:
            for m in migrations:
                m.close()
    result = tuple(Move(host=m.h.name, from_site=old.name, to_site=new.name, from_ofport=m.h.ofport,
                        to_ofport=m.ofport, started=o[0], attached=o[1], announced=o[2],
                        unplugged=unplugged, state=moved, plugged=plugged)
                   for m, o in done)
    spread = (max(mv.announced for mv in result) - min(mv.started for mv in result)) * 1000.0 if result else 0.0
    log.info("evacuated %d hosts from %s to %s: prepared in %.1f s, switchovers within %.1f ms",
             len(result), old.name, new.name, prepared, spread)
    if problems:
        raise LabError(f"evacuating {old.name} to {new.name}: {len(done)} of {len(migrations)} hosts moved; "
                       + "\n".join(problems))
    return Evacuation(from_site=old.name, to_site=new.name, moves=result, prepared_s=prepared, spread_ms=spread,
                      state=moved)


def _movers(state: LabState, old: SiteState, hosts: list[str] | None) -> list[HostState]:
    if hosts is None:
        movers = [h for h in state.hosts if h.site == old.name]
        if not movers:
            raise LabError(f"site {old.name} has no hosts to evacuate")
        return movers
    movers = [state.host(name) for name in dict.fromkeys(hosts)]
    elsewhere = [f"{h.name} (at {h.site})" for h in movers if h.site != old.name]
    if elsewhere:
        raise LabError(f"not at {old.name}: {', '.join(elsewhere)}")
    return movers


def _allocate_ports(site: SiteState, movers: list[HostState], state: LabState) -> dict[str, int]:
    """Each mover's reserved port at the site if it is free, else the lowest
    free host port: from one look at the switch, not one per host."""
    used = set(site.host_ports.values()) | {site.tunnel_ofport}
    out = vsctl(site.name, "--format=csv", "--data=bare", "--no-headings", "--columns=name,ofport",
                "list", "interface", state=state)
    names = set()
    for line in out.splitlines():
        name, _, ofport = line.partition(",")
        names.add(name.strip())
        if ofport.strip().lstrip("-").isdigit():
            used.add(int(ofport))
    clash = sorted(h.name for h in movers if h.name in names)
    if clash:
        raise LabError(f"site {site.name} already has ports named {', '.join(clash)}")
    ports: dict[str, int] = {}
    for h in movers:
        reserved = site.reserved_ports.get(h.name)
        if reserved is not None and reserved not in used:
            ports[h.name] = reserved
            used.add(reserved)
    free = (n for n in map(topo.host_ofport, range(1, topo.MAX_HOSTS_PER_SITE + 1)) if n not in used)
    for h in movers:
        if h.name not in ports:
            number = next(free, None)
            if number is None:
                raise LabError(f"site {site.name}: no free br-int host port for {h.name} "
                               f"below {topo.HOST_OFPORT_LIMIT}")
            ports[h.name] = number
    return ports


def _plug_all(state: LabState, old: SiteState, new: SiteState, migrations: list[_Migration], workers: int) -> None:
    """Every new vif at once: the ports (taps, `ovs.host_port_args`) in one transaction at
    the new br-int, which returns once ovs-vswitchd has them, each tap moved into its host in
    one `ip -batch` in the new site's namespace, then each host's sockets for its switchover.
    A failure leaves what was made to `_put_back` (closing a port's tap removes it)."""
    if not migrations:
        return
    transaction = []
    for m in migrations:
        transaction += host_port_args(m.h.name, m.ofport)
    vsctl(new.name, *transaction, state=state)
    _check_ports(new, {m.h.name: m.ofport for m in migrations}, state)
    run_in(new.namespace, ["ip", "-batch", "-"],
           input="".join(tap_to_host(m.h.name, m.h.namespace, INCOMING_IFNAME, m.h.mac) + "\n" for m in migrations))

    def sockets(m: _Migration) -> None:
        m.net = RouteSocket(m.h.namespace)
        m.outgoing = m.net.link(topo.HOST_IFNAME).index
        m.incoming = m.net.link(INCOMING_IFNAME).index
        m.packet_socket = host_packet_socket(m.h, INCOMING_IFNAME)
        m.prepare_switchover()

    # Entering a namespace waits for an RCU grace period: many at once overlap them.
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="plug") as pool:
        list(pool.map(sockets, migrations))


def _check_ports(site: SiteState, want: dict[str, int], state: LabState) -> None:
    out = vsctl(site.name, "--format=csv", "--data=bare", "--no-headings", "--columns=name,ofport,error",
                "list", "interface", state=state)
    got = {}
    for line in out.splitlines():
        name, ofport, error = (line.split(",", 2) + ["", ""])[:3]
        if name in want and error.strip():
            raise LabError(f"site {site.name}: OVS could not open port {name}: {error.strip()}")
        got[name] = ofport.strip()
    wrong = [f"{name} got {got.get(name) or 'no port'}, wanted {number}" for name, number in want.items()
             if got.get(name) != str(number)]
    if wrong:
        raise LabError(f"site {site.name}: " + "; ".join(wrong[:5]) + (" ..." if len(wrong) > 5 else ""))


def _switch_over(m: _Migration) -> tuple[float, float, float] | LabError:
    try:
        return m.switch_over()
    except LabError as exc:
        return exc


def _put_back(migrations: list[_Migration]) -> list[str]:
    """Undo each half-done move; what could not be undone, one line per host."""
    problems = []
    for m in migrations:
        try:
            m.put_back()
        except LabError as exc:
            problems.append(f"putting {m.h.name} back at {m.old.name} failed: {exc}; `lisp-ryu lab down` removes the lab")
    return problems


# The interface group the old pairs' site ends join to be deleted in one request.
LEAVING_GROUP = 4242


def _unplug_all(state: LabState, old: SiteState, migrations: list[_Migration]) -> list[str]:
    """The old ports in one transaction (ovs-vswitchd closes their taps, and the taps go).  Old
    veths whose site ends are left (a Mininet lab's first links) go in one request: a group
    deleted at once shares its RCU grace periods (one at a time, each waited for its own: ~45
    ms a pair, 9 s for 200; from 32 threads at once, tried, they held the kernel's rtnl lock
    so long that every switch stopped forwarding for seconds).  Then each host's limbo
    bridge, one by one (one per namespace).  What failed, one line each."""
    if not migrations:
        return []
    transaction = []
    for m in migrations:
        transaction += ["--", "--if-exists", "del-port", topo.BR_INT, m.h.name]
    try:
        vsctl(old.name, *transaction, state=state)
    except LabError as exc:
        return [f"removing the old ports at {old.name} failed: {exc}"]
    problems = []
    try:
        present = set(interfaces(old.namespace))
        leaving = [m.h.name for m in migrations if m.h.name in present]
        if leaving:
            run_in(old.namespace, ["ip", "-batch", "-"],
                   input="".join(f"link set dev {name} group {LEAVING_GROUP}\n" for name in leaving))
            run_in(old.namespace, ["ip", "link", "del", "group", str(LEAVING_GROUP)])
    except CommandError as exc:
        problems.append(f"deleting the old pairs at {old.name} at once failed ({exc}); one by one instead")
    for m in migrations:
        try:
            m.remove_old_link()
        except LabError as exc:
            problems.append(f"{m.h.name}: {exc}")
    return problems
