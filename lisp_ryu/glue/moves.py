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
from typing import Any, Callable

# The controller (glue.controller) calls these with itself and its endpoints; they are typed
# loosely because importing it here would close an import cycle.
Controller = ControlEndpoint = IPAddress = Any

LOG = logging.getLogger("lisp_ryu")


def host_arrived(controller: "Controller", here: "ControlEndpoint", record) -> None:
    """A workload (`record`: its new mapping) appeared at `here`: the xTR it left redirects at
    once, `here` gets the mappings that xTR held (the workload's replies), and the ITRs sending
    to it follow (issue 20).

    Each step is deferred (`controller.defer`, the hub's spawn under Ryu) so that what the
    step before it pushed, the new site's flows first, leaves before the next is compiled."""
    prefix = record.eid_prefix
    where = here.core.config.name
    others = [e for e in controller.xtrs.values() if e is not here]
    left = [e for e in others if e.core.is_here(prefix.instance_id, prefix.address)]

    def follow(endpoint: "ControlEndpoint") -> None:
        _guarded(controller, endpoint, lambda: endpoint.core.moved_elsewhere(record, where, endpoint.clock()))

    def seed(old: "ControlEndpoint") -> None:
        _guarded(controller, here, lambda: here.core.seed(list(old.core.cache), old.core.config.name, here.clock()))

    for endpoint in left:  # the old site first: its redirect makes every ITR's path work again
        controller.defer(lambda e=endpoint: follow(e))
    for endpoint in left:  # the replies of the workload, from its new site
        controller.defer(lambda e=endpoint: seed(e))
    for endpoint in others:
        if endpoint not in left:
            controller.defer(lambda e=endpoint: follow(e))


def _guarded(controller: "Controller", endpoint: "ControlEndpoint", step: Callable[[], list]) -> None:
    try:
        effects = step()
    except Exception:  # a core bug: counted and logged, the other steps still run
        controller.count("core_exceptions")
        LOG.exception("%s: error following a move", endpoint.name)
        return
    controller.run(endpoint, effects)


def planned_move(controller: "Controller", iid: int, eid: "IPAddress", to_site: str,
                 timeout: float | None = None) -> dict:
    """Prepare a planned move of `eid` to the xTR named `to_site` (draft-ietf-lisp-predictive-rlocs).

    The destination holds the EID's traffic until the workload appears there and resolves
    beforehand what its old site talks to; every other xTR this controller drives replicates
    the EID's traffic to the old and the new RLOC until its map-cache follows the move.
    Raises KeyError (no such site, or no site holds the EID) and ValueError (already there).
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
    old_rloc, new_rloc = old.core.state.rlocs[0], dest.core.state.rlocs[0]
    prefetch = tuple((entry.iid, entry.value.record.eid_prefix.network) for entry in old.core.cache
                     if not entry.negative)
    controller.run(dest, dest.core.expect(iid, eid, dest.clock(), timeout, prefetch=prefetch))
    itrs = []
    for endpoint in xtrs:
        if endpoint is dest or endpoint is old:
            continue
        controller.run(endpoint, endpoint.core.replicate(iid, eid, old_rloc, new_rloc, endpoint.clock(), timeout))
        itrs.append(endpoint.core.config.name)
    controller.count("planned_moves")
    LOG.info("planned move of [%d]%s: %s (%s) -> %s (%s); replicating at %s", iid, eid, old.core.config.name,
             old_rloc, to_site, new_rloc, ", ".join(itrs) or "no other xTR")
    return {"iid": iid, "eid": str(eid), "from_site": old.core.config.name, "to_site": to_site,
            "old_rloc": str(old_rloc), "new_rloc": str(new_rloc), "replicating_at": itrs}
