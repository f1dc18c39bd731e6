"""JSON views of an xTR for the REST API: its map-cache and the flows each entry produced.

Kept apart from the handlers because they read the compiled desired state
(`compile_plan`) the way an operator reads `ovs-ofctl dump-flows`.
"""

from __future__ import annotations

import math
from typing import Any

from lisp_ryu.flows.compiler import compile_plan
from lisp_ryu.flows.model import DesiredState, Flow, GroupAction, Move, Output, SetField
from lisp_ryu.flows.pipeline import Owner, Table, cookie
from lisp_ryu.mapserver import views


def map_cache_view(core: Any, now: float, installed: DesiredState | None, limit: int = views.DEFAULT_LIMIT) -> dict:
    """Each map-cache entry with its TTL left and the flows (and groups) it produced.

    The flows are the compiled desired state for the entry (matched by its
    cookie, `cookie(Owner.MAPPING, iid, prefix)`); `installed` says whether the
    switch holds each one as compiled.
    """
    desired = compile_plan(core.plan())
    held = installed.flows if installed is not None else frozenset()
    groups = {g.group_id: g for g in desired.groups}
    entries = []
    # Plain entries, then source-specific ones (`source_prefix` set; their cookie names "source->prefix").
    listed = [(entry, str(entry.eid), None) for entry in core.cache]
    listed += [(entry, str(dest), str(entry.eid)) for dest, entry in core.sd_cache]
    for entry, prefix, source_prefix in listed:
        if len(entries) >= limit:
            break
        record = entry.value.record
        owner = cookie(Owner.MAPPING, entry.iid, prefix if source_prefix is None else f"{source_prefix}->{prefix}")
        flows = sorted((f for f in desired.flows if f.cookie == owner), key=lambda f: (f.table, -f.priority))
        used = [groups[a.group_id] for f in flows for a in f.actions if isinstance(a, GroupAction)]
        entries.append({
            "iid": entry.iid,
            "prefix": prefix,
            "source_prefix": source_prefix,
            "negative": entry.negative,
            "action": record.action.name.lower().replace("_", "-"),
            "ttl_left": None if math.isinf(entry.expires_at) else round(entry.expires_at - now, 3),
            "expired": entry.expired(now),
            "source": entry.value.source,
            "locators": [views.locator(loc) for loc in record.locators],
            "flows": [{"text": flow_text(f), "cookie": f"{f.cookie:#x}", "installed": f in held} for f in flows],
            "groups": [{"group_id": g.group_id, "type": g.type,
                        "buckets": [{"weight": b.weight, "actions": _actions(b.actions)} for b in g.buckets]}
                       for g in used],
        })
    return {"xtr": core.config.name, "total": len(core.cache) + len(core.sd_cache), "connected": installed is not None,
            "entries": entries}


def mapping_system_view(core: Any, now: float) -> dict:
    """Each map-server (registered? answering?) and map-resolver (up, down, recovering; which is used).

    `unreachable` lists the addresses of both kinds that do not answer now.
    """
    servers = [{"address": str(r.server.address), "registered": r.registered, "reachable": r.reachable,
                "unanswered_registers": r.unanswered,
                "last_notify_ago": None if r.last_notify is None else round(now - r.last_notify, 3)}
               for r in getattr(core, "registrations", ())]  # test doubles of a core may have none
    state = getattr(core, "state", None)
    resolvers = [] if state is None else [{"address": str(r.address), "state": r.state, "active": i == state.active_resolver and r.up,
                  "timeouts": r.timeouts, "since_s": None if r.up and r.since == 0.0 else round(now - r.since, 3)}
                 for i, r in enumerate(state.resolvers)]
    unreachable = sorted({s["address"] for s in servers if not s["reachable"]}
                         | {r["address"] for r in resolvers if r["state"] != "up"})
    return {"map_servers": servers, "map_resolvers": resolvers, "unreachable": unreachable}


def _actions(actions: tuple) -> str:
    parts = []
    for a in actions:
        if isinstance(a, Output):
            parts.append(f"output:{a.port}")
        elif isinstance(a, SetField):
            parts.append(f"set_field:{a.value}->{a.field}")
        elif isinstance(a, GroupAction):
            parts.append(f"group:{a.group_id}")
        elif isinstance(a, Move):
            parts.append(f"move:{a.src}->{a.dst}")
        else:
            parts.append(type(a).__name__.lower())
    return ",".join(parts) or "drop"


def flow_text(flow: Flow) -> str:
    """A flow the way `ovs-ofctl dump-flows` spells it, roughly (for humans and tests)."""
    fields = []
    for name, value in flow.match:
        if isinstance(value, tuple):
            value = f"{value[0]}/{value[1]}"
        fields.append(f"{name}={value}")
    table = Table(flow.table).name.lower() if flow.table in Table._value2member_map_ else flow.table
    goto = f",goto:{flow.goto}" if flow.goto is not None else ""
    return f"table={table} priority={flow.priority} {','.join(fields)} actions={_actions(flow.actions)}{goto}"
