"""The one table of REST routes: the Ryu controller (`glue.rest`) and the OpenAPI document
(`glue.openapi`) are both generated from it, so a route cannot exist undocumented.
"""

from __future__ import annotations

from dataclasses import dataclass

from lisp_ryu.mapserver import views

API = views.API_PREFIX
MAX_LIMIT = 10_000  # items in one answer: the views are built on the controller's one thread (list views cap at views.MAX_LIMIT)


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" | "query"
    schema: dict
    description: str = ""


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str  # Routes syntax: {name} is a path parameter
    handler: str  # method of `Api`
    summary: str
    write: bool = False
    body: str | None = None  # schema name in lisp_ryu.glue.openapi.SCHEMAS
    response: str = "Object"
    status: int = 200
    params: tuple[Param, ...] = ()


_LIMIT = Param("limit", "query", {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT,
                                  "default": views.DEFAULT_LIMIT},
               "at most this many items")
_AFTER = Param("after", "query", {"type": "string"},
               "start after this key: the `next` of the previous page ('[IID]PREFIX', for subscriptions "
               "'[IID]PREFIX,XTR-ID')")
_XTR = Param("xtr", "path", {"type": "string"}, "xTR name (xtrs[].name in the configuration)")
_RULE = Param("rule_id", "path", {"type": "string"}, "rule id")
_OVR = Param("override_id", "path", {"type": "string"}, "override id")
_IID = Param("iid", "path", {"type": "integer", "minimum": 0}, "instance-ID")
_EID = Param("eid", "path", {"type": "string"}, "the workload's address, e.g. 10.1.0.10")
_PREFIX = (_IID,
           Param("address", "path", {"type": "string"}, "prefix address, e.g. 10.2.0.0"),
           Param("length", "path", {"type": "integer", "minimum": 0}, "prefix length, e.g. 16"))
_PREFIX_PATH = "{iid}/{address}/{length}"

ROUTES: tuple[Route, ...] = (
    Route("openapi", "GET", f"{API}/openapi.json", "openapi", "This API as an OpenAPI 3 document"),
    Route("health", "GET", f"{API}/health", "health", "Liveness, and which switches are connected", response="Health"),
    Route("sites", "GET", f"{API}/sites", "sites", "Configured Map-Server sites and their EID prefixes"),
    Route("registrations", "GET", f"{API}/registrations", "registrations",
          "Registered EID prefixes with merged mapping and ETRs, a page at a time", params=(_LIMIT, _AFTER)),
    Route("subscriptions", "GET", f"{API}/subscriptions", "subscriptions", "RFC 9437 subscriptions, a page at a time",
          params=(_LIMIT, _AFTER)),
    Route("counters", "GET", f"{API}/counters", "counters",
          "Counters: Map-Server per message type and rejects by reason, each xTR, the controller"),
    Route("xtrs", "GET", f"{API}/xtrs", "xtrs", "The xTRs this controller drives"),
    Route("map_cache", "GET", f"{API}/xtrs/{{xtr}}/map-cache", "map_cache",
          "An xTR's map-cache: TTL left and the flows each entry produced", params=(_XTR, _LIMIT)),
    Route("list_policies", "GET", f"{API}/policies", "list_policies", "Reachability rules, in evaluation order"),
    Route("create_policy", "POST", f"{API}/policies", "create_policy", "Add a rule (409 if the id exists)",
          write=True, body="Rule", status=201),
    Route("get_policy", "GET", f"{API}/policies/{{rule_id}}", "get_policy", "One rule", params=(_RULE,)),
    Route("put_policy", "PUT", f"{API}/policies/{{rule_id}}", "put_policy", "Add or replace a rule",
          write=True, body="Rule", params=(_RULE,)),
    Route("delete_policy", "DELETE", f"{API}/policies/{{rule_id}}", "delete_policy", "Remove a rule",
          write=True, params=(_RULE,)),
    Route("list_overrides", "GET", f"{API}/rloc-overrides", "list_overrides", "RLOC priority/weight overrides"),
    Route("create_override", "POST", f"{API}/rloc-overrides", "create_override",
          "Add an RLOC override (409 if the id exists)", write=True, body="RlocOverride", status=201),
    Route("put_override", "PUT", f"{API}/rloc-overrides/{{override_id}}", "put_override",
          "Add or replace an RLOC override", write=True, body="RlocOverride", params=(_OVR,)),
    Route("delete_override", "DELETE", f"{API}/rloc-overrides/{{override_id}}", "delete_override",
          "Remove an RLOC override", write=True, params=(_OVR,)),
    Route("list_static", "GET", f"{API}/static-mappings", "list_static", "Static mappings"),
    Route("create_static", "POST", f"{API}/static-mappings", "create_static",
          "Add a static mapping (409 if the prefix has one)", write=True, body="StaticMapping", status=201),
    Route("put_static", "PUT", f"{API}/static-mappings/{_PREFIX_PATH}", "put_static",
          "Add or replace the static mapping of a prefix", write=True, body="StaticMapping", params=_PREFIX),
    Route("delete_static", "DELETE", f"{API}/static-mappings/{_PREFIX_PATH}", "delete_static",
          "Remove a static mapping", write=True, params=_PREFIX),
    Route("list_dynamic", "GET", f"{API}/xtrs/{{xtr}}/dynamic-eid-prefixes", "list_dynamic",
          "An xTR's dynamic-EID prefixes (hosts appearing in them are learned)", params=(_XTR,)),
    Route("create_dynamic", "POST", f"{API}/xtrs/{{xtr}}/dynamic-eid-prefixes", "create_dynamic",
          "Add a dynamic-EID prefix (409 if present)", write=True, body="DynamicEidPrefix", status=201,
          params=(_XTR,)),
    Route("create_move", "POST", f"{API}/moves", "create_move",
          "A planned move (draft-ietf-lisp-predictive-rlocs): the destination site delivers the workload's traffic "
          "to its new port (`port`), or holds it until it arrives there, every other xTR sends it to the old and "
          "the new RLOC until its map-cache follows (404: no such site or EID, 409: already there or the port is "
          "another's, 503: the destination's switch is not connected yet)",
          write=True, body="Move", status=202),
    Route("list_moves", "GET", f"{API}/moves", "list_moves",
          "The planned moves whose window is open: the old site, the destination (the announced port, the packets "
          "it holds), the xTRs that replicate, the seconds left"),
    Route("delete_move", "DELETE", f"{API}/moves/{{iid}}/{{eid}}", "delete_move",
          "Call a planned move off (its migration failed or was aborted; the workload stays where it is): every "
          "xTR's part ends at once, what the destination held is dropped (404: no move of the EID is open)",
          write=True, params=(_IID, _EID)),
    Route("delete_dynamic", "DELETE", f"{API}/xtrs/{{xtr}}/dynamic-eid-prefixes/{_PREFIX_PATH}", "delete_dynamic",
          "Remove a dynamic-EID prefix", write=True, params=(_XTR, *_PREFIX)),
)
