"""The Map-Server's state as JSON-ready dicts: one shape for the standalone
server's HTTP endpoint, the Ryu REST API and `lisp-ryu show`.

Times are wall-clock seconds (what the core keeps); `expires_in` is relative
to the `now` the caller passes, so a table reads "expires in 42 s".
"""

from __future__ import annotations

import ipaddress
import json
import re
from itertools import islice
from typing import Any, Iterator

from lisp_ryu.wire import Locator, MappingRecord

from .service import MapServer
from .state import EtrRegistration, Subscription

API_PREFIX = "/lisp/v1"
#: Rows a list page holds unless asked otherwise, and at most whatever is asked.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def locator(loc: Locator) -> dict[str, Any]:
    return {
        "address": str(loc.address),
        "priority": loc.priority,
        "weight": loc.weight,
        "reachable": loc.reachable,
    }


def _etr(reg: EtrRegistration, now: float) -> dict[str, Any]:
    record = reg.record  # (kept encoded: decoded once per row)
    return {
        "etr": reg.etr,
        "source": f"{reg.source}:{reg.port}",
        "xtr_id": f"{reg.xtr_id:032x}" if reg.xtr_id is not None else None,
        "site_id": reg.site_id,
        "proxy_reply": reg.proxy_reply,
        "record_ttl_minutes": record.ttl,
        "locators": [locator(loc) for loc in record.locators],
        "registered_at": reg.registered_at,
        "expires_in": round(reg.expires - now, 3),
    }


def _record(record: MappingRecord) -> dict[str, Any]:
    return {"ttl_minutes": record.ttl, "locators": [locator(loc) for loc in record.locators]}


# ---- paged lists -------------------------------------------------------------------
# A page is {"total", "limit", <rows>, "next"}: `next` is the `after` of the following page
# (null on the last), the key of its last row.  Keys, not offsets: a page follows the one
# before it even when prefixes come and go in between, and finding its place costs the
# depth of the prefix trie, not the rows before it.


def page_limit(limit: int | str | None) -> int:
    """The rows a page holds: DEFAULT_LIMIT if unset, never more than MAX_LIMIT; ValueError if negative."""
    if limit is None:
        return DEFAULT_LIMIT
    limit = int(limit)
    if limit < 0:
        raise ValueError("limit must be a non-negative integer")
    return min(limit, MAX_LIMIT)


_CURSOR = re.compile(r"\[(\d{1,10})\]([0-9A-Fa-f.:]+/\d{1,3})(?:,([0-9a-f]{32}))?")


def cursor_text(key: tuple) -> str:
    """A row's key as the `next`/`after` text: "[IID]PREFIX", with ",XTR-ID" for a subscription."""
    return f"[{key[0]}]{key[1]}" + (f",{key[2]:032x}" if len(key) == 3 else "")


def parse_cursor(text: str, subscription: bool = False) -> tuple:
    """An `after` value back into its key: (iid, prefix), or (iid, prefix, xTR-ID) for subscriptions.

    ValueError says what is wrong (the REST layer and the standalone server answer 400).
    """
    match = _CURSOR.fullmatch(text) if len(text) < 100 else None
    if match is None or bool(match.group(3)) != subscription:
        shape = "[IID]PREFIX,XTR-ID (32 hex digits)" if subscription else "[IID]PREFIX"
        raise ValueError(f"after must be the `next` of the previous page, {shape}")
    iid = int(match.group(1))
    if iid >= 1 << 24:
        raise ValueError("after: instance-ID out of range")
    try:
        net = ipaddress.ip_network(match.group(2))
    except ValueError as exc:
        raise ValueError(f"after: {exc}") from None
    return (iid, net, int(match.group(3), 16)) if subscription else (iid, net)


def _registration_row(iid, net, site, record, etrs, now):
    return {"iid": iid, "prefix": str(net), "site": site, "mapping": _record(record),
            "etrs": [_etr(reg, now) for reg in etrs]}


def registration_rows(core: MapServer, now: float, after: tuple | None, count: int) -> list[tuple[tuple, dict]]:
    """Up to `count` (key, row) pairs after the key `after` (None: from the start)."""
    return [((iid, net), _registration_row(iid, net, site, record, etrs, now))
            for iid, net, site, record, etrs in islice(core.registrations(after), count)]


#: Before every subscription: the first key in (iid, family, address, length, xTR-ID) order.
_FIRST_SUBSCRIPTION = (0, ipaddress.IPv4Network("0.0.0.0/0"), -1)


def subscription_rows(core: MapServer, now: float, after: tuple | None, count: int) -> list[tuple[tuple, dict]]:
    return [((sub.iid, sub.prefix, sub.xtr_id), _subscription(sub, now))
            for sub in islice(core.subscriptions(after or _FIRST_SUBSCRIPTION), count)]


def _page(name: str, rows_of, total: int, core: MapServer, now: float, limit, after, subscription: bool):
    limit = page_limit(limit)
    key = parse_cursor(after, subscription) if isinstance(after, str) and after else None
    rows = rows_of(core, now, key, limit + 1)  # one more says whether a next page exists
    return {"total": total, "limit": limit, name: [row for _, row in rows[:limit]],
            "next": cursor_text(rows[limit - 1][0]) if len(rows) > limit and limit else None}


def registrations(core: MapServer, now: float, limit: int | str | None = DEFAULT_LIMIT,
                  after: str | None = None) -> dict[str, Any]:
    """One page of registered prefixes in prefix order, with their merged mapping and ETRs.

    `limit` is capped at MAX_LIMIT; `after` is the `next` of the page before.
    ValueError (for a 400) on a negative limit or a malformed `after`.
    """
    return _page("registrations", registration_rows, core.registration_count, core, now, limit, after, False)


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


def subscriptions(core: MapServer, now: float, limit: int | str | None = DEFAULT_LIMIT,
                  after: str | None = None) -> dict[str, Any]:
    """One page of subscriptions in (iid, prefix, xTR-ID) order; as `registrations`."""
    return _page("subscriptions", subscription_rows, core.subscription_count, core, now, limit, after, True)


def page_chunks(name: str, core: MapServer, now: float, limit: int | str | None, after: str | None,
                step: int = 50) -> Iterator[bytes]:
    """The JSON of one page (`registrations` or `subscriptions`) in pieces of `step` rows.

    Each piece is built when asked for and finds its place again from the last key
    sent, so a server can hand out the pieces between other work while the table
    changes.  Arguments are checked before the first piece: ValueError as the page
    functions.
    """
    subscription = name == "subscriptions"
    rows_of = subscription_rows if subscription else registration_rows
    limit = page_limit(limit)
    key = parse_cursor(after, subscription) if after else None
    total = core.subscription_count if subscription else core.registration_count
    return _chunks(name, rows_of, core, now, limit, key, total, step)


def _chunks(name, rows_of, core, now, limit, key, total, step) -> Iterator[bytes]:
    yield f'{{"total": {total}, "limit": {limit}, "{name}": ['.encode()
    left, sent = limit, 0
    while left > 0:
        rows = rows_of(core, now, key, min(step, left))
        if rows:
            key = rows[-1][0]
            yield (b", " if sent else b"") + _dumps([row for _, row in rows])[1:-1].encode()
            sent += len(rows)
        if len(rows) < min(step, left):
            key = None  # the table ended on this page
            break
        left -= len(rows)
    else:
        if not sent or not rows_of(core, now, key, 1):
            key = None
    yield f'], "next": {_dumps(cursor_text(key) if key else None)}}}'.encode()


_dumps = json.JSONEncoder(separators=(", ", ": ")).encode


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
    return _sites(core, core.registrations_by_site())


def sites_chunks(core: MapServer) -> Iterator[bytes]:
    """`sites` as JSON in pieces (b"" until the last), as the paged views are served.  Counting
    is one cheap pass (`registrations_by_site`), so there is one piece."""
    yield json.dumps(sites(core), indent=1).encode()


def _sites(core: MapServer, registered: dict[str, int]) -> dict[str, Any]:
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
