"""The Map-Server's state as JSON-ready dicts: one shape for the standalone
server's HTTP endpoint, the Ryu REST API and `lisp-ryu show`.

Times are wall-clock seconds (what the core keeps); `expires_in` is relative
to the `now` the caller passes, so a table reads "expires in 42 s".
"""

from __future__ import annotations

from typing import Any

from lisp_ryu.wire import Locator, MappingRecord

from .service import MapServer
from .state import EtrRegistration, Subscription

API_PREFIX = "/lisp/v1"
DEFAULT_LIMIT = 1000


def locator(loc: Locator) -> dict[str, Any]:
    return {
        "address": str(loc.address),
        "priority": loc.priority,
        "weight": loc.weight,
        "reachable": loc.reachable,
    }


def _etr(reg: EtrRegistration, now: float) -> dict[str, Any]:
    return {
        "etr": reg.etr,
        "source": f"{reg.source}:{reg.port}",
        "xtr_id": f"{reg.xtr_id:032x}" if reg.xtr_id is not None else None,
        "site_id": reg.site_id,
        "proxy_reply": reg.proxy_reply,
        "record_ttl_minutes": reg.record.ttl,
        "locators": [locator(loc) for loc in reg.record.locators],
        "registered_at": reg.registered_at,
        "expires_in": round(reg.expires - now, 3),
    }


def _record(record: MappingRecord) -> dict[str, Any]:
    return {"ttl_minutes": record.ttl, "locators": [locator(loc) for loc in record.locators]}


def registrations(core: MapServer, now: float, limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    """Registered prefixes (at most `limit`, in prefix order) with their merged mapping and ETRs."""
    items = []
    for iid, net, site, record, etrs in core.registrations():
        if len(items) >= limit:
            break
        items.append({
            "iid": iid,
            "prefix": str(net),
            "site": site,
            "mapping": _record(record),
            "etrs": [_etr(reg, now) for reg in etrs],
        })
    return {"total": core.registration_count, "registrations": items}


def _subscription(sub: Subscription, now: float) -> dict[str, Any]:
    return {
        "iid": sub.iid,
        "prefix": str(sub.prefix),
        "xtr_id": f"{sub.xtr_id:032x}",
        "site_id": sub.site_id,
        "itr_rloc": f"{sub.itr_rloc}:{sub.port}",
        "nonce": f"{sub.nonce:016x}",
        "subscribed_at": sub.subscribed_at,
        "expires_in": round(sub.expires - now, 3),
    }


def subscriptions(core: MapServer, now: float, limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    items = []
    for sub in core.subscriptions():
        if len(items) >= limit:
            break
        items.append(_subscription(sub, now))
    return {"total": core.subscription_count, "subscriptions": items}


def counters(core: MapServer, extra: dict[str, int] | None = None) -> dict[str, Any]:
    """All counters, plus the messages turned away grouped by reason ("rejected.map_register.auth-mismatch")."""
    merged = dict(core.counters)
    for name, value in (extra or {}).items():
        merged[name] = merged.get(name, 0) + value
    rejects = {name.split(".", 1)[1]: value for name, value in sorted(merged.items())
               if name.startswith(("rejected.", "dropped."))}
    return {
        "counters": dict(sorted(merged.items())),
        "rejects_by_reason": rejects,
        "registrations": core.registration_count,
        "subscriptions": core.subscription_count,
        "pending_notifications": core.pending_notifications,
        "answer_cache": core.answer_cache,
    }


def health(core: MapServer) -> dict[str, Any]:
    """"ok", or "degraded: cannot write journal (ENOSPC)" while registrations are refused (answers go on)."""
    store = core.store_health
    return {"status": "ok" if store == "ok" else "degraded", "store": store,
            "map_server": {"registrations": core.registration_count, "subscriptions": core.subscription_count}}


def sites(core: MapServer) -> dict[str, Any]:
    """Configured sites (never their keys) with how many of their prefixes are registered now."""
    registered: dict[str, int] = {}
    for _iid, _net, site, _record, _etrs in core.registrations():
        registered[site] = registered.get(site, 0) + 1
    return {"sites": [{
        "name": site.name,
        "eid_prefixes": [{"iid": p.iid, "prefix": str(p.prefix), "accept_more_specifics": p.accept_more_specifics}
                         for p in site.eid_prefixes],
        "registered_prefixes": registered.get(site.name, 0),
    } for site in core.config.sites]}


def policies(core: MapServer) -> dict[str, Any]:
    """Reachability rules in evaluation order (first match wins; no match allows)."""
    return {"evaluation": "first-match by (priority, id); default allow",
            "rules": [rule.to_dict() for rule in core.policy.rules]}


def rloc_overrides(core: MapServer) -> dict[str, Any]:
    return {"rloc_overrides": [o.to_dict() for o in core.policy.overrides]}


def static_mappings(core: MapServer) -> dict[str, Any]:
    return {"precedence": "longest prefix wins; on the same prefix a registration beats a static mapping",
            "static_mappings": [m.to_dict() for m in core.static_mappings()]}
