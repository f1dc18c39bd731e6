"""The OpenAPI 3 document of the REST API, generated from `lisp_ryu.glue.rest.ROUTES`.

Routes come from the one table the Ryu controller is generated from, so a
route cannot exist without being documented; the request schemas below
describe what the pure `from_dict` validators accept (a unit test posts the
examples through the real API).
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from lisp_ryu.wire import MAX_IID, TTL_ONE_DAY

_PREFIX = {"type": "string", "description": "an IP prefix, e.g. 10.2.0.0/16 (a bare address is a host prefix)"}
_IID = {"type": "integer", "minimum": 0, "maximum": MAX_IID, "description": "instance-ID (tenant)"}
_ID = {"type": "string", "pattern": r"^[A-Za-z0-9._-]{1,64}$"}  # schema.identifier: what POST and PUT accept

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"},
                       "field": {"type": "string", "description": "the offending field (400 only)"}},
    },
    "Object": {"type": "object", "description": "JSON object; see the summary of the operation"},
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok"]}, "uptime_seconds": {"type": "number"},
                       "map_server": {"type": "object", "nullable": True}, "xtrs": {"type": "object"}},
    },
    "Rule": {
        "type": "object",
        "description": "Reachability rule. Rules of the request's instance-ID are evaluated in (priority, id) "
                       "order; the first whose destination, source and ITR conditions hold decides; none: allow. "
                       "Deny makes the Map-Resolver answer that requester with a negative Map-Reply, action "
                       "Drop/Policy-Denied.",
        "required": ["iid", "destinations", "action"],
        "additionalProperties": False,
        "properties": {
            "id": {**_ID, "description": "required on POST; taken from the URL on PUT"},
            "iid": _IID,
            "destinations": {"type": "array", "minItems": 1, "items": _PREFIX},
            "sources": {"type": "array", "items": _PREFIX,
                        "description": "source EID groups (empty: any source)"},
            "itr_rlocs": {"type": "array", "items": _PREFIX, "description": "requesting ITR RLOCs (empty: any)"},
            "action": {"type": "string", "enum": ["allow", "deny"]},
            "priority": {"type": "integer", "minimum": 0, "maximum": 65535, "default": 100},
            "description": {"type": "string", "maxLength": 256},
        },
        "example": {"id": "no-dc1-to-dc2", "iid": 42, "sources": ["10.1.0.0/16"], "destinations": ["10.2.0.0/16"],
                    "action": "deny", "priority": 10},
    },
    "RlocOverride": {
        "type": "object",
        "description": "Priority and/or weight for one RLOC address (wherever it appears) or for every RLOC "
                       "of one site; an RLOC override beats a site override. Weight 0 drains an RLOC.",
        "additionalProperties": False,
        "properties": {
            "id": {**_ID, "description": "required on POST; taken from the URL on PUT"},
            "rloc": {"type": "string", "description": "RLOC address (give rloc or site)"},
            "site": {"type": "string", "description": "site name (give rloc or site)"},
            "priority": {"type": "integer", "minimum": 0, "maximum": 255},
            "weight": {"type": "integer", "minimum": 0, "maximum": 255},
        },
        "example": {"id": "drain-dc3-a", "rloc": "198.18.3.2", "weight": 0},
    },
    "StaticMapping": {
        "type": "object",
        "description": "EID prefix in an instance-ID -> RLOCs, answered by the Map-Server. Longest prefix wins "
                       "against registrations; on the same prefix a registration wins.",
        "required": ["rlocs"],
        "additionalProperties": False,
        "properties": {
            "iid": {**_IID, "description": "required on POST; taken from the URL on PUT"},
            "prefix": {**_PREFIX, "description": "required on POST; taken from the URL on PUT"},
            "ttl_minutes": {"type": "integer", "minimum": 1, "default": TTL_ONE_DAY},
            "rlocs": {"type": "array", "minItems": 1, "maxItems": 64, "items": {
                "type": "object", "required": ["address"], "additionalProperties": False,
                "properties": {"address": {"type": "string"},
                               "priority": {"type": "integer", "minimum": 0, "maximum": 255, "default": 1},
                               "weight": {"type": "integer", "minimum": 0, "maximum": 255, "default": 100}}}},
        },
        "example": {"iid": 42, "prefix": "192.0.2.0/24", "rlocs": [{"address": "198.18.1.2", "priority": 1,
                                                                     "weight": 100}]},
    },
    "Move": {
        "type": "object",
        "required": ["eid", "to_site"],
        "additionalProperties": False,
        "properties": {"iid": {**_IID, "default": 0},
                       "eid": {"type": "string", "description": "the workload's address (an EID host route)"},
                       "to_site": {"type": "string", "description": "the xTR it moves to (xtrs[].name)"},
                       "timeout": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 3600, "default": 10,
                                   "description": "seconds the window lasts if the workload is not seen there"},
                       "port": {"type": "integer", "minimum": 1, "maximum": 4294967040,
                                "description": "the OpenFlow port of the workload's new vif at to_site, plugged "
                                               "already: the switch delivers its traffic there from now on (no "
                                               "packet waits for the controller); without it, to_site holds the "
                                               "traffic in the controller until the workload appears"},
                       "mac": {"type": "string", "description": "the workload's MAC at the new port (with port; "
                                                                "default: its MAC at the old site)"}},
        "example": {"iid": 42, "eid": "10.1.0.10", "to_site": "dc3", "port": 7},
    },
    "DynamicEidPrefix": {
        "type": "object",
        "required": ["prefix"],
        "additionalProperties": False,
        "properties": {"iid": {**_IID, "default": 0}, "prefix": _PREFIX},
        "example": {"iid": 42, "prefix": "10.20.0.0/16"},
    },
}

_ERRORS = {
    "400": "invalid input; `field` names the offending field",
    "401": "no bearer token given",
    "403": "wrong bearer token, or no token configured",
    "404": "no such object",
    "409": "the object exists already",
}


def openapi_path(path: str) -> str:
    """Routes' `{name}` is already OpenAPI's syntax; strip any `{name:regex}` requirement."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def document(routes: Iterable[Any], *, protect_reads: bool | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0 document for `routes` (lisp_ryu.glue.rest.Route values)."""
    paths: dict[str, dict] = {}
    for r in routes:
        op: dict[str, Any] = {
            "operationId": r.name,
            "summary": r.summary,
            "parameters": [{"name": p.name, "in": p.where, "required": p.where == "path", "schema": p.schema,
                            "description": p.description} for p in r.params],
            "responses": {
                str(r.status): {"description": "success", "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{r.response}"}}}},
            },
        }
        codes = ["400", "404"] if (r.body or r.params) else []
        if r.write:
            codes += ["401", "403"]
            op["security"] = [{"bearer": []}]
        if r.handler.startswith("create_"):
            codes.append("409")
        for code in sorted(set(codes)):
            op["responses"][code] = _error(_ERRORS[code])
        if r.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{r.body}"}}}}
        paths.setdefault(openapi_path(r.path), {})[r.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "lisp-ryu",
            "version": "1",
            "description": "LISP control plane for Open vSwitch: mapping state, policies, static mappings. "
                           "Writes need `Authorization: Bearer <rest.token>`; reads too when "
                           "rest.protect_reads is set.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
