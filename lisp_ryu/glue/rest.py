"""The REST API under /lisp/v1/ (Ryu WSGI, JSON): read state, write policy and static intent.

Glue only.  Handlers validate input (the pure `from_dict` constructors name
the bad field), change intent by calling the cores, and hand the effects
the cores return to the application (Map-Notify publications, "recompile
this switch") -- they never build flows.  All routes are declared once in
`glue.routes.ROUTES`; the Ryu controller class and the OpenAPI document
(`lisp_ryu.glue.openapi`) are both generated from it, so they cannot drift.

Errors map to statuses in one place (`_status_of`): invalid input 400 with
the field named, missing/wrong bearer token 401/403, unknown object 404,
an object that already exists on POST 409.  Request bodies, path segments
and query parameters are read with `lisp_ryu.schema`'s readers: a body is
bounded in size and nesting, an id a client creates is refused unless it is
of the URL-safe alphabet (`schema.identifier`), and path segments are
decoded as UTF-8 the way they were encoded, so an object created under any
id can be read and deleted.  401/403 are counted and logged once per source
per interval (`glue.refusals`), not once per request.

Writes need `Authorization: Bearer <rest.token>`; reads need it too when
`rest.protect_reads` is set.  Without a configured token the API is read-only.
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from lisp_ryu.glue import compat

compat.apply()

from ryu.app.wsgi import ControllerBase, Response, WSGIApplication, route  # noqa: E402

from lisp_ryu import schema  # noqa: E402
from lisp_ryu.config import Config, RestConfig  # noqa: E402
from lisp_ryu.flows.model import DesiredState  # noqa: E402
from lisp_ryu.mapping.policy import (  # noqa: E402
    PolicyError,
    RlocOverride,
    Rule,
    StaticMapping,
    parse_prefix,
)
from lisp_ryu.glue import openapi  # noqa: E402
from lisp_ryu.glue.controller import Controller  # noqa: E402
from lisp_ryu.glue import moves, rest_intent  # noqa: E402
from lisp_ryu.glue.moves import NotReady  # noqa: E402
from lisp_ryu.glue.refusals import REFUSALS, Refusals  # noqa: E402
from lisp_ryu.glue.routes import ROUTES, Route  # noqa: E402
from lisp_ryu.glue.xtr_views import map_cache_view, mapping_system_view  # noqa: E402
from lisp_ryu.xtr.mobility import PLANNED_MOVE_MAX_TIMEOUT  # noqa: E402
from lisp_ryu.mapserver import views  # noqa: E402
from lisp_ryu.wire import MAX_IID  # noqa: E402

LOG = logging.getLogger("lisp_ryu.rest")
API = views.API_PREFIX
STATE_FILE = rest_intent.STATE_FILE
MAX_BODY = 1 << 20
MAX_DEPTH = 32  # a rule is a few levels deep; deeper is an attack on the decoder


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An answer other than 2xx, with a message (and the offending field for 400)."""

    def __init__(self, status: int, message: str, field_name: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field_name


class Conflict(Exception):
    """The object to create already exists (409)."""


def _status_of(exc: Exception) -> ApiError:
    """The one place that maps failures to HTTP statuses."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, PolicyError):
        return ApiError(400, str(exc), exc.field)
    if isinstance(exc, Conflict):
        return ApiError(409, str(exc))
    if isinstance(exc, NotReady):
        return ApiError(503, str(exc))
    if isinstance(exc, KeyError):
        return ApiError(404, f"no such object: {exc.args[0]}")
    LOG.exception("REST handler failed")
    return ApiError(500, f"internal error: {type(exc).__name__}")


# --------------------------------------------------------------------------- what the API drives


@dataclass
class XtrHandle:
    """One xTR as the API sees it: its core, what its switch holds, and how to push a change."""

    name: str
    dpid: int
    core: Any  # lisp_ryu.xtr.core.XtrCore
    installed: Callable[[], DesiredState | None]  # None: switch not connected / not reconciled
    push: Callable[[str], None]  # recompile, diff and send (the glue's job)
    problem: Callable[[], str | None] = lambda: None  # why its switch is not as wanted (None: healthy)


@dataclass
class Backend:
    """The cores plus the glue's callbacks; `from_controller` builds it from a running `Controller`."""

    rest: RestConfig
    map_server: Any = None  # lisp_ryu.mapserver.service.MapServer
    run_map_server: Callable[[list], None] = lambda effects: None  # send the Map-Notifies it returns
    xtrs: dict[str, XtrHandle] = field(default_factory=dict)
    ms_clock: Callable[[], float] = time.time  # the Map-Server keeps wall-clock expiries
    xtr_clock: Callable[[], float] = time.monotonic  # the xTR cores run on the monotonic clock
    state_file: str | None = None  # where xTR-side intent (dynamic-EID prefixes) persists
    counters: Callable[[], dict[str, int]] = dict  # the glue's own counters
    # moves.planned_move(iid, eid, to_site, timeout, port, mac) -> summary (KeyError: 404, ValueError: 409)
    planned_move: Callable[..., dict] | None = None
    cancel_move: Callable[[int, Any], dict] | None = None  # moves.cancel_move(iid, eid) (KeyError: 404)
    open_moves: Callable[[], list] | None = None  # moves.open_moves()
    started: float = field(default_factory=time.time)
    refusals: Refusals = field(default_factory=lambda: REFUSALS)  # 401/403: counted, logged rate-limited

    @classmethod
    def from_controller(cls, controller: Controller, config: Config) -> Backend:
        """The API over a running controller, through its public methods only."""
        ms_endpoint = controller.map_server
        xtrs = {}
        for dpid, endpoint in controller.xtrs.items():
            name = endpoint.core.config.name
            xtrs[name] = XtrHandle(name, dpid, endpoint.core, functools.partial(controller.installed, dpid),
                                   functools.partial(controller.request_push, dpid),
                                   functools.partial(controller.problem, dpid))
        data_dir = config.map_server.data_dir if config.map_server is not None else None
        xtr_clocks = [e.clock for e in controller.xtrs.values()]
        return cls(
            rest=config.rest,
            map_server=ms_endpoint.core if ms_endpoint else None,
            run_map_server=functools.partial(controller.run, ms_endpoint) if ms_endpoint else (lambda e: None),
            xtrs=xtrs,
            ms_clock=ms_endpoint.clock if ms_endpoint else time.time,
            xtr_clock=xtr_clocks[0] if xtr_clocks else time.monotonic,
            state_file=os.path.join(data_dir, STATE_FILE) if data_dir else None,
            counters=lambda: dict(controller.counters),
            planned_move=functools.partial(moves.planned_move, controller),
            cancel_move=functools.partial(moves.cancel_move, controller),
            open_moves=functools.partial(moves.open_moves, controller),
        )

    def ms(self) -> Any:
        if self.map_server is None:
            raise ApiError(404, "this controller runs no embedded Map-Server (no map_server: section)")
        return self.map_server

    def xtr(self, name: str) -> XtrHandle:
        try:
            return self.xtrs[name]
        except KeyError:
            raise ApiError(404, f"no xTR named {name!r} (known: {', '.join(sorted(self.xtrs)) or 'none'})") from None

    # -- xTR-side intent that must survive a restart (glue.rest_intent) ----------
    def load_intent(self) -> None:
        rest_intent.load(self.state_file, self.xtrs)

    def save_intent(self) -> None:
        rest_intent.save(self.state_file, self.xtrs)


# --------------------------------------------------------------------------- handlers


class Api:
    """The handlers: one method per route, taking (request body or None, path/query values)."""

    def __init__(self, backend: Backend) -> None:
        self.b = backend

    # -- reads ---------------------------------------------------------------
    def openapi(self, body, **_):
        return openapi.document(ROUTES)

    def health(self, body, **_):
        ms = self.b.map_server
        # "status" says the process answers; "healthy" whether every switch is programmed as
        # its xTR wants (a switch that is connected but whose flows cannot be compiled or
        # installed is not; "problem" says why).
        # The mapping system as each xTR sees it (map-servers registered with, map-resolver used) is
        # reported beside, not folded into "healthy": an xTR with one map-server down still works.
        now = self.b.xtr_clock()
        xtrs = {name: {"dpid": f"{h.dpid:#x}", "connected": h.installed() is not None, "problem": h.problem(),
                       "mapping_system": mapping_system_view(h.core, now)}
                for name, h in sorted(self.b.xtrs.items())}
        for x in xtrs.values():
            x["healthy"] = x["connected"] and x["problem"] is None
        return {
            "status": "ok",
            "healthy": all(x["healthy"] for x in xtrs.values()),
            "uptime_seconds": round(time.time() - self.b.started, 1),
            "map_server": None if ms is None else {"registrations": ms.registration_count,
                                                   "subscriptions": ms.subscription_count},
            "xtrs": xtrs,
        }

    def sites(self, body, **_):
        return views.sites(self.b.ms())

    def registrations(self, body, limit=views.DEFAULT_LIMIT, after=None, **_):
        return _page(views.registrations, self.b.ms(), self.b.ms_clock(), limit, after)

    def subscriptions(self, body, limit=views.DEFAULT_LIMIT, after=None, **_):
        return _page(views.subscriptions, self.b.ms(), self.b.ms_clock(), limit, after)

    def counters(self, body, **_):
        # The Map-Server's shape (as the standalone server serves it) at the top, the xTRs' beside it.
        out: dict[str, Any] = {"counters": {}, "rejects_by_reason": {}}
        if self.b.map_server is not None:
            out.update(views.counters(self.b.map_server))
        out["xtrs"] = {name: dict(sorted(h.core.counters.items())) for name, h in sorted(self.b.xtrs.items())}
        out["controller"] = dict(sorted({**self.b.counters(), **self.b.refusals.counters}.items()))
        return out

    def xtrs(self, body, **_):
        return {"xtrs": [{"name": name, "dpid": f"{h.dpid:#x}", "connected": h.installed() is not None,
                          "rlocs": [str(r.address) for r in h.core.config.rlocs],
                          "map_cache_entries": len(h.core.cache) + len(h.core.sd_cache)}
                         for name, h in sorted(self.b.xtrs.items())]}

    def map_cache(self, body, xtr, limit=views.DEFAULT_LIMIT, **_):
        handle = self.b.xtr(xtr)
        return map_cache_view(handle.core, self.b.xtr_clock(), handle.installed(), limit)

    def list_policies(self, body, **_):
        return views.policies(self.b.ms())

    def get_policy(self, body, rule_id, **_):
        rule = self.b.ms().policy.rule(rule_id)
        if rule is None:
            raise KeyError(f"rule {rule_id}")
        return rule.to_dict()

    def list_overrides(self, body, **_):
        return views.rloc_overrides(self.b.ms())

    def list_static(self, body, **_):
        return views.static_mappings(self.b.ms())

    def list_dynamic(self, body, xtr, **_):
        core = self.b.xtr(xtr).core
        return {"xtr": xtr, "dynamic_eid_prefixes": [{"iid": d.iid, "prefix": str(d.prefix)}
                                                      for d in core.config.dynamic_eid_prefixes]}

    # -- writes: policy and static mappings live in the Map-Server ---------------------
    def _ms_change(self, call: Callable[[Any, float], list]) -> int:
        ms = self.b.ms()
        effects = call(ms, self.b.ms_clock())
        self.b.run_map_server(effects)  # the Map-Notify publications: subscribed ITRs follow at once
        return len(effects)

    def create_policy(self, body, **_):
        rule = Rule.from_dict(_new_id(body))
        if self.b.ms().policy.rule(rule.id) is not None:
            raise Conflict(f"rule {rule.id!r} exists: PUT {API}/policies/{rule.id} replaces it")
        return self._put_rule(rule)

    def put_policy(self, body, rule_id, **_):
        return self._put_rule(Rule.from_dict(body, schema.identifier(rule_id, "rule_id")))

    def _put_rule(self, rule: Rule):
        notified = self._ms_change(lambda ms, now: ms.set_rule(rule, now))
        return {"rule": rule.to_dict(), "notified_subscribers": notified}

    def delete_policy(self, body, rule_id, **_):
        notified = self._ms_change(lambda ms, now: ms.remove_rule(rule_id, now))
        return {"deleted": rule_id, "notified_subscribers": notified}

    def create_override(self, body, **_):
        override = RlocOverride.from_dict(_new_id(body))
        if self.b.ms().policy.override(override.id) is not None:
            raise Conflict(f"override {override.id!r} exists: PUT {API}/rloc-overrides/{override.id} replaces it")
        return self._put_override(override)

    def put_override(self, body, override_id, **_):
        return self._put_override(RlocOverride.from_dict(body, schema.identifier(override_id, "override_id")))

    def _put_override(self, override: RlocOverride):
        notified = self._ms_change(lambda ms, now: ms.set_override(override, now))
        return {"rloc_override": override.to_dict(), "notified_subscribers": notified}

    def delete_override(self, body, override_id, **_):
        notified = self._ms_change(lambda ms, now: ms.remove_override(override_id, now))
        return {"deleted": override_id, "notified_subscribers": notified}

    def create_static(self, body, **_):
        mapping = StaticMapping.from_dict(body)
        if any(m.iid == mapping.iid and m.prefix == mapping.prefix for m in self.b.ms().static_mappings()):
            raise Conflict(f"[{mapping.iid}]{mapping.prefix} has a static mapping: PUT "
                           f"{API}/static-mappings/{mapping.iid}/{mapping.prefix} replaces it")
        return self._put_static(mapping)

    def put_static(self, body, iid, address, length, **_):
        iid_value, prefix = _path_prefix(iid, address, length)
        schema.Node(body, root="body")
        merged = {"iid": iid_value, "prefix": str(prefix), **body}
        mapping = StaticMapping.from_dict(merged)
        if (mapping.iid, mapping.prefix) != (iid_value, prefix):
            raise PolicyError("prefix", f"the body names [{mapping.iid}]{mapping.prefix}, the URL [{iid_value}]{prefix}")
        return self._put_static(mapping)

    def _put_static(self, mapping: StaticMapping):
        notified = self._ms_change(lambda ms, now: ms.set_static(mapping, now))
        return {"static_mapping": mapping.to_dict(), "notified_subscribers": notified}

    def delete_static(self, body, iid, address, length, **_):
        iid_value, prefix = _path_prefix(iid, address, length)
        notified = self._ms_change(lambda ms, now: ms.remove_static(iid_value, prefix, now))
        return {"deleted": {"iid": iid_value, "prefix": str(prefix)}, "notified_subscribers": notified}

    # -- writes: dynamic-EID prefixes are xTR configuration ------------------------------------
    def create_dynamic(self, body, xtr, **_):
        handle = self.b.xtr(xtr)
        item = rest_intent.dynamic_prefix(body, "")
        current = handle.core.config.dynamic_eid_prefixes
        if any(d.iid == item.iid and d.prefix == item.prefix for d in current):
            raise Conflict(f"xTR {xtr} already has dynamic-EID prefix [{item.iid}]{item.prefix}")
        self._set_dynamic(handle, current + (item,), f"dynamic-EID prefix [{item.iid}]{item.prefix} added")
        return {"xtr": xtr, "iid": item.iid, "prefix": str(item.prefix)}

    def delete_dynamic(self, body, xtr, iid, address, length, **_):
        handle = self.b.xtr(xtr)
        iid_value, prefix = _path_prefix(iid, address, length)
        current = handle.core.config.dynamic_eid_prefixes
        kept = tuple(d for d in current if (d.iid, d.prefix) != (iid_value, prefix))
        if len(kept) == len(current):
            raise KeyError(f"dynamic-EID prefix [{iid_value}]{prefix} of xTR {xtr}")
        self._set_dynamic(handle, kept, f"dynamic-EID prefix [{iid_value}]{prefix} removed")
        return {"deleted": {"xtr": xtr, "iid": iid_value, "prefix": str(prefix)}}

    def create_move(self, body, **_):
        """A planned move: the destination prepares, the ITRs replicate until the workload is seen there."""
        node = schema.Node(body, "", root="body").expect(required={"eid", "to_site"},
                                                         optional={"iid", "timeout", "port", "mac"})
        iid = node.get("iid", schema.iid, 0)
        eid = node.get("eid", schema.address)
        to_site = node.get("to_site", schema.string)
        timeout = node.get("timeout", _timeout, None)
        port = node.get("port", schema.openflow_port, None)
        mac = node.get("mac", lambda raw, path: schema.mac(raw, path, unicast=True), None)
        if mac is not None and port is None:
            raise ApiError(400, "mac is the workload's at its new port: give port too", "mac")
        if self.b.planned_move is None:
            raise ApiError(404, "planned moves need the controller that drives the xTRs")
        self.b.xtr(to_site)  # 404 naming the known xTRs
        try:
            return self.b.planned_move(iid, eid, to_site, timeout, port, mac)
        except ValueError as exc:
            raise Conflict(str(exc)) from None

    def list_moves(self, body, **_):
        if self.b.open_moves is None:
            raise ApiError(404, "planned moves need the controller that drives the xTRs")
        return {"moves": self.b.open_moves()}

    def delete_move(self, body, iid, eid, **_):
        if self.b.cancel_move is None:
            raise ApiError(404, "planned moves need the controller that drives the xTRs")
        return self.b.cancel_move(schema.decimal(iid, "iid", 0, MAX_IID), schema.address(eid, "eid"))

    def _set_dynamic(self, handle: XtrHandle, prefixes: tuple, reason: str) -> None:
        handle.core.config = dataclasses.replace(handle.core.config, dynamic_eid_prefixes=prefixes)
        self.b.save_intent()
        LOG.info("xTR %s: %s (REST)", handle.name, reason)
        handle.push(reason)  # the learning flows follow at once


def _timeout(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= PLANNED_MOVE_MAX_TIMEOUT:
        raise schema.InputError(path, f"a number of seconds in (0, {PLANNED_MOVE_MAX_TIMEOUT:g}], not {value!r}")
    return float(value)


def _path_prefix(iid: str, address: str, length: str) -> tuple[int, Any]:
    return schema.decimal(iid, "iid", 0, MAX_IID), parse_prefix(f"{address}/{length}", "prefix")


def _new_id(body: Any) -> Any:
    """A body creating an object: its id, if it names one, must be of the URL-safe alphabet."""
    if isinstance(body, dict) and "id" in body:
        schema.identifier(body["id"], "id")
    return body


# --------------------------------------------------------------------------- the Ryu controller


def _authorise(rest: RestConfig, req: Any, write: bool) -> None:
    if not write and not rest.protect_reads:
        return
    if not rest.token:
        raise ApiError(403, "no rest.token is configured: writes are disabled" if write
                       else "reads are protected but no rest.token is configured")
    header = req.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "this request needs 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(token.strip().encode(), rest.token.encode()):
        raise ApiError(403, "wrong bearer token")


def _json(status: int, payload: Any, extra_headers: dict | None = None) -> Response:
    response = Response(status=status, content_type="application/json",
                        body=json.dumps(payload, indent=1).encode())
    for name, value in (extra_headers or {}).items():
        response.headers[name] = value
    return response


def _page(view: Callable, ms: Any, now: float, limit: int, after: str | None) -> dict:
    """One page of a list view; a cursor that does not parse is the client's error (400 naming it)."""
    try:
        return view(ms, now, limit, after)
    except ValueError as exc:
        raise PolicyError("after", str(exc)) from None


def _query(route_: Route, req: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for param in route_.params:
        if param.where != "query" or param.name not in req.GET:
            continue
        raw = req.GET[param.name]
        if param.schema.get("type") == "integer":
            values[param.name] = schema.decimal(raw, param.name, param.schema.get("minimum", 0),
                                                param.schema.get("maximum", MAX_IID))
        else:
            values[param.name] = raw
    return values


def _path(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Path segments as the client wrote them: the server decoded the %-escapes as Latin-1 (PEP 3333),
    a client encodes as UTF-8 (RFC 3986)."""
    out = {}
    for name, value in kwargs.items():
        try:
            out[name] = value.encode("latin-1").decode("utf-8") if isinstance(value, str) else value
        except (UnicodeEncodeError, UnicodeDecodeError):
            raise PolicyError(name, "is not UTF-8 once its %-escapes are decoded") from None
    return out


def _body(req: Any) -> Any:
    length = req.content_length
    if length is not None and length > MAX_BODY:  # refused before reading a byte of it
        raise PolicyError("body", f"larger than {MAX_BODY} bytes")
    raw = req.body_file.read(MAX_BODY + 1)
    if not raw:
        raise PolicyError("body", "a JSON body is required")
    return schema.json_document(raw, "body", max_bytes=MAX_BODY, max_depth=MAX_DEPTH)


def _where(req: Any) -> str:
    """The request's path for a message, as sent (webob's `req.path` fails on a path that is not UTF-8)."""
    return req.environ.get("RAW_PATH_INFO") or req.environ.get("PATH_INFO", "").encode("latin-1").decode(
        "utf-8", "backslashreplace")


def _dispatch(controller: Any, route_: Route, req: Any, kwargs: dict) -> Response:
    backend: Backend = controller.backend
    try:
        _authorise(backend.rest, req, route_.write)
        body = _body(req) if route_.body is not None else None
        values = {**_path(kwargs), **_query(route_, req)}
        result = getattr(Api(backend), route_.handler)(body, **values)
        return _json(route_.status, result)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON answer with a status
        error = _status_of(exc)
        payload = {"error": error.message}
        if error.field is not None:
            payload["field"] = error.field
        headers = {"WWW-Authenticate": 'Bearer realm="lisp-ryu"'} if error.status == 401 else None
        if error.status in (401, 403):
            backend.refusals.refuse("rest.unauthorised" if error.status == 401 else "rest.forbidden",
                                    req.remote_addr, "REST %s %s from %s refused (%d): %s", req.method, _where(req),
                                    req.remote_addr, error.status, error.message)
        elif error.status < 500:
            # At INFO only for token holders: anybody can make a read fail, and a line per request is a flood.
            LOG.log(logging.INFO if route_.write else logging.DEBUG, "REST %s %s -> %d: %s", req.method,
                    _where(req), error.status, error.message)
        return _json(error.status, payload, headers)


def _make_handler(route_: Route) -> Callable:
    def handler(self, req, **kwargs):
        return _dispatch(self, route_, req, kwargs)

    handler.__name__ = route_.name
    requirements = {p.name: r"\d+" for p in route_.params if p.where == "path" and p.schema.get("type") == "integer"}
    return route(route_.name, route_.path, methods=[route_.method], requirements=requirements or None)(handler)


class LispRestController(ControllerBase):
    """Ryu WSGI controller; its route methods are generated from `ROUTES`."""

    def __init__(self, req, link, data, **config):
        super().__init__(req, link, data, **config)
        self.backend: Backend = data["backend"]


for _route in ROUTES:
    setattr(LispRestController, _route.name, _make_handler(_route))


def _route_regex(route_: Route) -> re.Pattern:
    """What the route matches, as Routes matches it: an integer path parameter takes digits only
    (else a path no route takes was answered 405 naming the very method it was asked with)."""
    integers = {p.name for p in route_.params if p.where == "path" and p.schema.get("type") == "integer"}
    return re.compile("^" + re.sub(r"\\\{(\w+)\\\}", lambda m: r"\d+" if m.group(1) in integers else "[^/]+",
                                   re.escape(route_.path)) + "$")


_ROUTE_REGEXES = [(_route_regex(r), r.method) for r in ROUTES]


class LispRestFallback(ControllerBase):
    """Anything else under the prefix: a JSON 405 (known path, other method) or 404."""

    @route("fallback", API + "/{rest:.*}")
    def fallback(self, req, **_):
        path = _where(req)
        allowed = sorted({method for regex, method in _ROUTE_REGEXES if regex.match(req.environ.get("PATH_INFO", ""))})
        if allowed:
            return _json(405, {"error": f"{req.method} not allowed on {path} (allowed: {', '.join(allowed)})"},
                         {"Allow": ", ".join(allowed)})
        return _json(404, {"error": f"no such resource {path}", "see": f"{API}/openapi.json"})


def register(wsgi: WSGIApplication, backend: Backend) -> None:
    """Mount the API on Ryu's WSGI application (called once by the Ryu app)."""
    backend.load_intent()
    wsgi.register(LispRestController, {"backend": backend})
    wsgi.register(LispRestFallback)  # after the real routes: Routes matches in registration order
    LOG.info("REST API mounted at %s (writes %s, reads %s)", API,
             "need the bearer token" if backend.rest.token else "disabled: no rest.token",
             "need the token" if backend.rest.protect_reads else "open")
