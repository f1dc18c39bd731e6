"""Planned moves whose window is open, kept on disk, so that a controller restart inside one loses nothing.

A planned move lives in the xTR cores (the copies an ITR makes, the destination's delivery to the
new port, the old site's sending on) and in the switches' flows.  A restarted controller knows
nothing of it: its first push to each switch deleted the move's flows, and the switchover that
followed was an unplanned move (12 probes at 1 ms lost in the lab, where a planned one loses 0).
So each move the REST API prepared is written to `PLANNED_FILE` in the Map-Server's data_dir
(where the REST intent lives too), and when a switch reconnects after a restart its xTR takes its
part of every move still open up again, before that first push.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import time
from typing import Any, Callable

from lisp_ryu.glue.moves import preferred_rloc, ranked_rlocs
from lisp_ryu.mapserver.store import _atomic_write

Controller = ControlEndpoint = Any  # glue.controller's: typed loosely, importing it would close a cycle

LOG = logging.getLogger("lisp_ryu")
PLANNED_FILE = "planned-moves.json"
MAX_FILE_BYTES = 1 << 22  # 4 MiB: far above what the moves of any window hold


class PlannedJournal:
    """The open planned moves ({iid, eid, from_site, to_site, port, mac, until: wall clock}) and,
    for this run, the xTRs that took their part of each up again."""

    def __init__(self, path: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path, self.clock = path, clock
        self.moves: list[dict] = self._read() if path else []
        self.taken_up: set[tuple[int, int, str]] = set()  # (dpid, iid, eid)

    @classmethod
    def in_data_dir(cls, data_dir: str | None) -> PlannedJournal:
        return cls(os.path.join(data_dir, PLANNED_FILE) if data_dir else None)

    def add(self, iid: int, eid: Any, from_site: str, to_site: str, port: int | None, mac: str | None,
            timeout: float) -> None:
        """A move prepared now, open for `timeout` seconds; it replaces an earlier one of the EID."""
        now = self.clock()
        self.moves = [m for m in self.moves if m["until"] > now and (m["iid"], m["eid"]) != (iid, str(eid))]
        self.moves.append({"iid": iid, "eid": str(eid), "from_site": from_site, "to_site": to_site, "port": port,
                           "mac": mac, "until": round(now + timeout, 3)})
        self._write()

    def remove(self, iid: int, eid: Any) -> None:
        """The move of the EID was called off."""
        kept = [m for m in self.moves if (m["iid"], m["eid"]) != (iid, str(eid))]
        if len(kept) != len(self.moves):
            self.moves = kept
            self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            _atomic_write(self.path, json.dumps({"planned_moves": self.moves}, indent=1).encode())
        except OSError as exc:  # the move goes on; only a restart inside its window would lose it
            LOG.error("%s: cannot keep the planned moves (%s): a controller restart inside their windows "
                      "would end them", self.path, exc.strerror or exc)

    def _read(self) -> list[dict]:
        """The moves in the file, still open; a damaged file or entry is logged and left out."""
        try:
            with open(self.path, "rb") as fh:
                data = json.loads(fh.read(MAX_FILE_BYTES + 1) or b"{}")
            items = data.get("planned_moves", []) if isinstance(data, dict) else None
            if not isinstance(items, list):
                raise ValueError("no list of planned_moves")
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            LOG.error("%s: cannot read the planned moves (%s): none is taken up again", self.path, exc)
            return []
        now, moves = self.clock(), []
        for i, item in enumerate(items):
            try:
                move = _checked(item)
            except (KeyError, TypeError, ValueError) as exc:
                LOG.error("%s: planned_moves[%d] is damaged (%s): left out", self.path, i, exc)
                continue
            if move["until"] > now:
                moves.append(move)
        return moves


def _checked(item: dict) -> dict:
    """One move as written, or an error (KeyError, TypeError, ValueError) saying what is wrong."""
    iid, port, mac, until = item["iid"], item["port"], item["mac"], item["until"]
    if type(iid) is not int or not 0 <= iid < 1 << 24:
        raise ValueError(f"iid {iid!r}")
    if port is not None and (type(port) is not int or not 0 < port < 0xFFFFFF00):
        raise ValueError(f"port {port!r}")
    if mac is not None and not isinstance(mac, str):
        raise ValueError(f"mac {mac!r}")
    if not isinstance(until, (int, float)) or isinstance(until, bool):
        raise ValueError(f"until {until!r}")
    if not isinstance(item["from_site"], str) or not isinstance(item["to_site"], str):
        raise ValueError("site names")
    return {"iid": iid, "eid": str(ipaddress.ip_address(item["eid"])), "from_site": item["from_site"],
            "to_site": item["to_site"], "port": port, "mac": mac, "until": float(until)}


def take_up(controller: Controller, endpoint: ControlEndpoint) -> list:
    """`endpoint`'s part of every open planned move, once per run, as its switch is reconciled
    (`Controller.stats_reply`, after the xTR took back where the workloads are, before the first
    push): the destination delivers again (unless the workload is there already), the old site sends
    on (unless the workload left it), every other xTR makes its copies.  Returns the effects."""
    journal = controller.planned
    effects: list = []
    by_name = {e.core.config.name: e for e in controller.xtrs.values()}
    for move in journal.moves:
        left, key = move["until"] - journal.clock(), (endpoint.dpid, move["iid"], move["eid"])
        old, dest = by_name.get(move["from_site"]), by_name.get(move["to_site"])
        if left <= 0 or key in journal.taken_up or old is None or dest is None or old is dest:
            continue
        journal.taken_up.add(key)
        iid, eid, core, now = move["iid"], ipaddress.ip_address(move["eid"]), endpoint.core, endpoint.clock()
        others = tuple(r for e in by_name.values() if e is not endpoint for r in e.core.state.rlocs)
        if endpoint is dest:
            if core.is_here(iid, eid):
                continue  # it arrived before the restart
            part = core.expect(iid, eid, now, left, old_rloc=preferred_rloc(old.core.config), port=move["port"],
                               mac=move["mac"], replicated_by=others, old_site=ranked_rlocs(old.core.config))
        elif endpoint is old:
            if not core.is_here(iid, eid):
                continue  # it left before the restart
            part = core.leave(iid, eid, preferred_rloc(dest.core.config), now, left, replicated_by=others,
                              new_site=ranked_rlocs(dest.core.config))
        else:
            part = core.replicate(iid, eid, preferred_rloc(old.core.config), preferred_rloc(dest.core.config), now,
                                  left, sites=(ranked_rlocs(old.core.config), ranked_rlocs(dest.core.config)))
        controller.count("planned_move_parts_taken_up")
        LOG.info("%s: planned move of [%d]%s (%s -> %s) taken up again after a restart, %.1f s of its window left",
                 core.config.name, iid, eid, move["from_site"], move["to_site"], left)
        effects += part
    return effects
