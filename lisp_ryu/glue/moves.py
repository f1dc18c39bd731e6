"""Moves across the xTRs one controller drives: what it can do at once because it drives them all.

A core knows only its own switch; the controller knows every xTR it drives,
so when a workload appears at one of them it tells the one it left, the
ITRs sending to it and the new site itself (the old site's mappings) right
away, instead of after the Map-Server's round trip.  The mapping system
stays the truth: it still gets the registration, publishes the move to its
subscribers (ours confirm what they did; other controllers' and other
implementations' xTRs learn it only that way) and SMRs go out as usual.
A planned move (draft-ietf-lisp-predictive-rlocs) is announced here too.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from ipaddress import ip_network
from typing import Any, Callable

from lisp_ryu.flows.pipeline import Table
from lisp_ryu.flows.replicate import expect_cookie
from lisp_ryu.xtr.mobility import PLANNED_MOVE_TIMEOUT

# The controller (glue.controller) calls these with itself and its endpoints; they are typed
# loosely because importing it here would close an import cycle.
Controller = ControlEndpoint = IPAddress = Any

LOG = logging.getLogger("lisp_ryu")
# In a burst of arrivals (input queued), a site is seeded from the same old site at most once
# this often (seconds): each seed walks the old site's whole map-cache, and between two
# arrivals of a burst it gains only the host routes of the workloads leaving it.
SEED_AGAIN = 1.0
# Workloads arriving within BURST_WINDOW seconds of each other, BURST_ARRIVALS or more: a burst
# (an evacuation), whose pushes wait and leave together (`Arrivals.in_burst`).  One move is one
# arrival, whatever addresses the workload has (a dual-stack one's IPv4 and IPv6 EIDs are learned
# one after the other): its pushes leave at once.
BURST_WINDOW = 0.1
BURST_ARRIVALS = 2
# A planned move's answer also says whether the destination's switch forwarded a packet for the
# workload by the move's own flow (`delivering`): it reads that flow's counter every
# DELIVERY_POLL seconds for at most DELIVERY_WAIT.
DELIVERY_WAIT = 0.1
DELIVERY_POLL = 0.025


class NotReady(Exception):
    """What was asked needs a switch that is not connected and reconciled (503: retry later)."""


class Arrivals:
    """Workloads learned at one xTR of this controller, told to the others in batches.

    Telling an xTR costs a compile and diff of its switch (a few ms at a few
    thousand flows) and its flow-mods, about the same for one move or many.
    So what arrives while the last batch waits for its turn joins it: a burst
    of arrivals (an evacuation) costs a push per xTR per batch, not one per
    arrival and xTR, and a lone move still goes at once."""

    def __init__(self, controller: "Controller", clock: Callable[[], float] = time.monotonic) -> None:
        self.controller = controller
        self.pending: list[tuple["ControlEndpoint", Any, list]] = []  # (here, record, the xTRs it left)
        self.seeded: dict[tuple[int, int], float] = {}  # (id(here), id(old)) -> when here was last seeded from old
        self.clock = clock
        # (when, which workload) of the arrivals at most BURST_WINDOW ago
        self._recent: deque[tuple[float, tuple]] = deque()

    def in_burst(self) -> bool:
        """Workloads are arriving in a burst: BURST_ARRIVALS or more within BURST_WINDOW.

        The controller's other sign of a burst, input queued behind the event being handled,
        comes late here: while each arrival is handled alone (three pushes, ~10 ms on a
        loaded machine), its successors wait in the switch's socket, unseen, and the queue
        the controller can see grows by one or two an arrival (measured: the first 22 of an
        evacuation's 200 handled one by one over 240 ms while the rest queued)."""
        now, recent = self.clock(), self._recent
        while recent and recent[0][0] < now - BURST_WINDOW:
            recent.popleft()
        return len(recent) >= BURST_ARRIVALS and len({w for _, w in recent}) >= BURST_ARRIVALS

    def seed(self, here: "ControlEndpoint", records) -> list:
        """Workloads (`records`) just appeared at `here`: the mappings their old sites' map-caches
        held, copied into `here`'s (the workloads' replies find them), as effects that join the
        arrival's own push: the new site's flows leave once, complete."""
        effects: list = []
        burst = self.controller.busy()
        for old in _unique(e for record in records for e in self.left(here, record)):
            pair, now = (id(here), id(old)), here.clock()
            if burst and now - self.seeded.get(pair, -SEED_AGAIN) < SEED_AGAIN:
                continue  # a burst from the same site: seeded moments ago (what old learned since is its leavers)
            self.seeded[pair] = now
            _guarded(self.controller, here, lambda old=old: here.core.seed(
                list(old.core.cache), old.core.config.name, now, old.core.owned_mappings()), effects)
        return effects

    def companions(self, here: "ControlEndpoint", mac: str) -> tuple:
        """The (iid, address) pairs other xTRs of this controller hold as their own for the machine
        with this MAC: where a workload with that MAC appears, they have come with it (a VM's NIC
        carries all its addresses), and `XtrCore.handle_host_seen` learns them at once."""
        return tuple(key for e in self.controller.xtrs.values() if e is not here
                     for key in e.core.hosts_with_mac(mac))

    def left(self, here: "ControlEndpoint", record) -> list:
        """The other xTRs of this controller that still hold the workload as their own."""
        prefix = record.eid_prefix
        return [e for e in self.controller.xtrs.values()
                if e is not here and e.core.is_here(prefix.instance_id, prefix.address)]

    def add(self, here: "ControlEndpoint", arrived: list) -> None:
        """Workloads appeared at `here` (seeded and pushed already), each (record: its new mapping,
        workload: its MAC, the same for each of its addresses; those of one packet-in are told
        together): the xTR they left redirects and the ITRs sending to them follow (issue 20).

        A lone move is told at once, before anything else runs: a yield to the hub here
        cost 2-5 ms of outage on a loaded host (the switches' replies, other processes' turns),
        while the others' compiles cost well under one.  While input is queued (a burst, an
        evacuation: `controller.busy`), it is deferred (`controller.defer`, the datagram
        pump's turn under Ryu) and the arrivals that come meanwhile join it."""
        first = not self.pending
        for record, workload in arrived:
            self.pending.append((here, record, self.left(here, record)))
            self._recent.append((self.clock(), (id(here), workload or id(record))))
        if first and self.pending:
            if self.controller.busy():
                self.controller.defer(self._tell_others)
            else:
                self._tell_others()

    def _tell_others(self) -> None:
        """The old sites first (their redirects make every ITR's path work again, ours and
        other implementations'), then every other xTR sending to the workloads, without a
        yield between: a move is over only when both are in place, and whatever else the hub
        runs in a yield (the switches' replies, other processes' turns) would only delay it."""
        batch, self.pending = self.pending, []
        controller = self.controller
        for endpoint in _unique(e for _, _, left in batch for e in left):
            _follow(controller, endpoint, [(here, record) for here, record, left in batch if endpoint in left])
        for endpoint in controller.xtrs.values():
            moved = [(here, record) for here, record, left in batch if endpoint is not here and endpoint not in left]
            if moved:
                _follow(controller, endpoint, moved)


def _unique(endpoints) -> list:
    return list({id(e): e for e in endpoints}.values())


def _follow(controller: "Controller", endpoint: "ControlEndpoint", moved: list) -> None:
    """`endpoint` departs or follows each (here, record) of `moved`; its switch is pushed once."""
    effects: list = []
    for here, record in moved:
        where = here.core.config.name
        _guarded(controller, endpoint, lambda: endpoint.core.moved_elsewhere(record, where, endpoint.clock()),
                 effects)
    controller.run(endpoint, effects)


def _guarded(controller: "Controller", endpoint: "ControlEndpoint", step: Callable[[], list],
             into: list | None = None) -> None:
    """Run `step` (a core call); its effects are carried out, or added to `into`."""
    try:
        effects = step()
    except Exception:  # a core bug: counted and logged, the other steps still run
        controller.count("core_exceptions")
        LOG.exception("%s: error following a move", endpoint.name)
        return
    if into is not None:
        into += effects
    else:
        controller.run(endpoint, effects)


def planned_move(controller: "Controller", iid: int, eid: "IPAddress", to_site: str,
                 timeout: float | None = None, port: int | None = None, mac: str | None = None) -> dict:
    """Prepare a planned move of `eid` to the xTR named `to_site` (draft-ietf-lisp-predictive-rlocs).

    The destination delivers the EID's traffic to `port` (the workload's new vif, plugged
    already; `mac` defaults to the workload's MAC at its old site, which a live migration
    keeps) or, without a port, holds it until the workload appears there; it resolves
    beforehand what the workload talks to from the old site: its map-cache and its own hosts.
    Every other xTR this controller drives replicates the EID's traffic to the old and the new
    RLOC until its map-cache follows the move; each of the two sites sends on to the other what
    other ITRs (which know nothing of the move) tunnel to the workload there.
    Raises KeyError (no such site, or no site holds the EID), ValueError (already there, or a
    port the destination uses otherwise) and NotReady (the destination's switch is not
    connected and reconciled: nothing could be held there, so the orchestrator must not start
    the migration yet).  An ITR whose switch is away replicates once it is back
    (reconciliation pushes it); the answer names it.

    It answers once the switches hold the move and the destination has the mappings it asked
    for: the orchestrator starts the migration on the answer, and a switchover before an ITR
    replicates loses what it still sends to the old site only, one before the destination can
    encapsulate the workload's replies has them wait in its controller (`installed` false: not
    confirmed within PREPARE_WAIT, `Controller.confirm`).
    """
    xtrs = controller.xtrs.values()
    dest = next((e for e in xtrs if e.core.config.name == to_site), None)
    if dest is None:
        raise KeyError(f"no xTR named {to_site!r}")
    old = next((e for e in xtrs if e.core.is_here(iid, eid)), None)
    if old is None:
        raise KeyError(f"no site of this controller holds [{iid}]{eid}")
    if old is dest:
        raise ValueError(f"[{iid}]{eid} is already at {to_site}")
    if controller.installed(dest.dpid) is None:
        raise NotReady(f"the switch of {to_site} (dpid {dest.dpid:#x}) is not connected and reconciled yet: "
                       "the move cannot be prepared there; retry when GET /lisp/v1/health says it is connected")
    if port is not None:
        _check_port(dest, port)
        mac = mac or next((h.mac for h in old.core.local_hosts() if (h.iid, h.ip) == (iid, eid)), None)
        if mac is None:
            raise ValueError(f"{old.core.config.name} does not know [{iid}]{eid}'s MAC: give mac with port")
    old_rloc, new_rloc = preferred_rloc(old.core.config), preferred_rloc(dest.core.config)
    # What the workload talks to from its old site: the old site's map-cache and its own hosts
    # and prefixes (not the workload itself).
    prefetch = tuple((entry.iid, entry.value.record.eid_prefix.network) for entry in old.core.cache
                     if not entry.negative)
    prefetch += tuple((r.eid_prefix.instance_id, r.eid_prefix.network) for r in old.core.local_records()
                      if (r.eid_prefix.instance_id, r.eid_prefix.network) != (iid, ip_network(eid)))
    # Each of the two sites sends on to the other what ITRs tunnel to the workload there, but not
    # what this controller's xTRs do: they send both sites a copy themselves.  One whose switch is
    # away still forwards by its old flows, to one site only: its traffic is sent on (once back,
    # it replicates too, and the workload gets duplicates rather than nothing).
    def replicating(here: "ControlEndpoint") -> tuple:
        return tuple(r for e in xtrs if e is not here
                     and (e is old or e is dest or controller.installed(e.dpid) is not None) for r in e.core.state.rlocs)

    # Each site's RLOCs, best first: a copy to a site whose preferred RLOC is down takes the next.
    old_site, new_site = ranked_rlocs(old.core.config), ranked_rlocs(dest.core.config)
    controller.run(dest, dest.core.expect(iid, eid, dest.clock(), timeout, prefetch=prefetch, old_rloc=old_rloc,
                                          port=port, mac=mac, replicated_by=replicating(dest), old_site=old_site))
    controller.run(old, old.core.leave(iid, eid, new_rloc, old.clock(), timeout, replicated_by=replicating(old),
                                       new_site=new_site))
    itrs, away, involved = [], [], [dest.dpid, old.dpid]
    for endpoint in xtrs:
        if endpoint is dest or endpoint is old:
            continue
        controller.run(endpoint, endpoint.core.replicate(iid, eid, old_rloc, new_rloc, endpoint.clock(), timeout,
                                                         sites=(old_site, new_site)))
        itrs.append(endpoint.core.config.name)
        involved.append(endpoint.dpid)
        if controller.installed(endpoint.dpid) is None:
            away.append(endpoint.core.config.name)
    controller.count("planned_moves")
    LOG.info("planned move of [%d]%s: %s (%s) -> %s (%s); replicating at %s", iid, eid, old.core.config.name,
             old_rloc, to_site, new_rloc, ", ".join(itrs) or "no other xTR")
    if away:
        LOG.warning("planned move of [%d]%s: the switches of %s are not connected: they replicate once back",
                    iid, eid, ", ".join(away))
    controller.planned.add(iid, eid, old.core.config.name, to_site, port, mac,  # a restart takes it up again
                           PLANNED_MOVE_TIMEOUT if timeout is None else timeout)
    installed = controller.confirm(involved, also=lambda: not dest.core.resolving(prefetch))
    return {"iid": iid, "eid": str(eid), "from_site": old.core.config.name, "to_site": to_site,
            "old_rloc": str(old_rloc), "new_rloc": str(new_rloc), "replicating_at": itrs,
            **({} if port is None else {"port": port, "mac": mac}),
            "not_connected": away, "installed": installed,
            "delivering": delivering(controller, dest, iid, eid) if installed else None}


def cancel_move(controller: "Controller", iid: int, eid: "IPAddress") -> dict:
    """Call off the planned move of `eid` (DELETE /lisp/v1/moves/{iid}/{eid}): its migration failed
    or was aborted, and the workload stays where it is.  Every xTR's part ends at once, as at the
    window's end: the ITRs send to the old site only, the destination no longer delivers to the
    announced port (which the orchestrator may give another workload) and drops what it held.
    KeyError: no move of the EID is open (404).  Answers once the switches confirmed it (`installed`)."""
    ended = []
    for endpoint in controller.xtrs.values():
        effects = endpoint.core.cancel_move(iid, eid)
        if effects:
            ended.append(endpoint)
            controller.run(endpoint, effects)
    controller.planned.remove(iid, eid)
    if not ended:
        raise KeyError(f"no planned move of [{iid}]{eid} is open")
    controller.count("planned_moves_cancelled")
    LOG.info("planned move of [%d]%s called off at %s", iid, eid, ", ".join(e.core.config.name for e in ended))
    return {"iid": iid, "eid": str(eid), "ended_at": [e.core.config.name for e in ended],
            "installed": controller.confirm([e.dpid for e in ended])}


def open_moves(controller: "Controller") -> list[dict]:
    """The planned moves whose window is open (GET /lisp/v1/moves), as the xTRs take part in them:
    the old site, the destination (the announced port, the packets it holds), the ITRs that replicate,
    and the seconds left of the longest window among them."""
    found: dict = {}
    for endpoint in controller.xtrs.values():
        state, now, name = endpoint.core.state, endpoint.clock(), endpoint.core.config.name
        for role, table in (("to_site", state.expected), ("from_site", state.leaving), ("itr", state.replicating)):
            for (iid, ip), move in table.items():
                entry = found.setdefault((iid, ip), {"iid": iid, "eid": str(ip), "from_site": None, "to_site": None,
                                                     "replicating_at": [], "seconds_left": 0.0})
                entry["seconds_left"] = max(entry["seconds_left"], round(max(0.0, move.until - now), 3))
                if role == "itr":
                    entry["replicating_at"].append(name)
                    continue
                entry[role] = name
                if role == "to_site":
                    entry.update(port=move.at.port if move.at else None, held=len(move.held))
    return [found[key] for key in sorted(found, key=lambda k: (k[0], k[1].version, k[1]))]


def preferred_rloc(config) -> "IPAddress":
    """The RLOC a planned move names for a site (an xTR's configuration): the first of `ranked_rlocs`."""
    return ranked_rlocs(config)[0]


def ranked_rlocs(config) -> tuple:
    """A site's RLOCs (an xTR's configuration) best first, as its registration ranks them: by
    priority, the first listed among equals; 255 (not for unicast) only if it has no other."""
    usable = [r for r in config.rlocs if r.priority != 255] or list(config.rlocs)
    return tuple(r.address for r in sorted(usable, key=lambda r: r.priority))


def delivering(controller: "Controller", dest: "ControlEndpoint", iid: int, eid: "IPAddress") -> bool | None:
    """Whether the destination's switch forwarded a packet for `eid` by the move's own flow (its
    decapsulation flow: to the new port, or to the controller to hold) within DELIVERY_WAIT: an
    ITR's copies arrive there, and the switch's data plane uses the new flow, not the one it
    cached before the barrier (glue.flow_counters).  False: no traffic for the workload
    meanwhile, the switch still forwards it as before, or its counter lags (a flow OVS changed
    in place); None: its switch is not connected."""
    session = controller.sessions.get(dest.dpid)
    if session is None:
        return None
    owner = expect_cookie(iid, eid)
    for _ in range(round(DELIVERY_WAIT / DELIVERY_POLL)):
        reading = controller.flow_counters.ask(session.datapath, Table.DECAP, owner)
        if not controller.wait_until(lambda: reading.packets is not None, DELIVERY_POLL):
            controller.flow_counters.forget(reading)
        elif reading.packets:
            return True
        else:
            controller.wait_until(lambda: False, DELIVERY_POLL)
    return False


def _check_port(dest: "ControlEndpoint", port: int) -> None:
    """The port announced for a workload arriving at `dest` must be free for it there: not the
    tunnel's, not the native network's, not another host's (ValueError: 409)."""
    config = dest.core.config
    if port in (config.tunnel_port, config.native_port):
        raise ValueError(f"port {port} of {config.name} is its {'tunnel' if port == config.tunnel_port else 'native'}"
                         " port, not a workload's")
    taken = next((h for h in dest.core.local_hosts() if h.port == port), None)
    if taken is not None:
        raise ValueError(f"port {port} of {config.name} is host [{taken.iid}]{taken.ip}'s ({taken.mac})")
