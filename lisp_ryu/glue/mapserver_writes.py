"""Writes on the standalone Map-Server's HTTP endpoint: policy rules, RLOC overrides and static
mappings, with the controller REST API's routes and JSON (`glue.routes`), so a clustered
mapping system is steered at any of its nodes.

A write is a change for the core (`change(core, now)`, the northbound's own calls) that the
server loop runs in its thread: with `--store etcd://` through `ReplicatedStore.call`, and
the answer waits until etcd committed it (every node then answers with it, and this node has
notified the subscribers whose answers changed); with the file journal it is journalled
before the core returns.  Writes need `Authorization: Bearer <token>` (`--token`); without a
token they are refused.

Errors: a bad body 400 naming the field, a wrong or missing token 401/403, an unknown object
404, POST of an existing id 409, a change etcd did not take 503 (nothing changed anywhere).
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any, Callable

from lisp_ryu import schema
from lisp_ryu.mapping.policy import PolicyError, RlocOverride, Rule, StaticMapping, parse_prefix
from lisp_ryu.mapserver import views
from lisp_ryu.wire import MAX_IID

WRITE_METHODS = frozenset({"POST", "PUT", "DELETE"})
#: Largest request body taken (a rule with many prefixes fits easily).
MAX_BODY = 64 << 10

Change = Callable[[Any, float], list]


class WriteError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field

    def body(self) -> dict:
        return {"error": self.message, **({"field": self.field} if self.field else {})}


def authorise(token: str | None, head: str) -> None:
    if not token:
        raise WriteError(403, "writes are disabled: start the Map-Server with --token (or $LISP_RYU_TOKEN)")
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "authorization":
            scheme, _, given = value.strip().partition(" ")
            if scheme.lower() == "bearer" and given:
                if hmac.compare_digest(given.strip().encode(), token.encode()):
                    return
                raise WriteError(403, "wrong bearer token")
    raise WriteError(401, "this request needs 'Authorization: Bearer <token>'")


def body_length(head: str) -> int:
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            value = value.strip()
            if not value.isdigit():
                raise WriteError(400, "Content-Length is not a number")
            return int(value)
    return 0


WRITABLE = ("policies", "rloc-overrides", "static-mappings")
READ_ONLY = ("registrations", "subscriptions", "counters", "sites", "health")


def check_resource(method: str, path: str) -> list[str]:
    """The path's parts under the API when `method` may write there (WriteError 404/405 otherwise)."""
    parts = path[len(views.API_PREFIX) + 1:].split("/") if path.startswith(views.API_PREFIX + "/") else []
    if parts and parts[0] in READ_ONLY:
        raise WriteError(405, f"{method} not allowed: {path} is read-only")
    if not parts or parts[0] not in WRITABLE:
        raise WriteError(404, f"no writable resource {path} ({', '.join(WRITABLE)})")
    return parts


def plan(method: str, path: str, body: bytes) -> tuple[Change, Callable[[int], dict], int]:
    """(the change, its answer given the Map-Notifies it sent, the HTTP status) of a write."""
    parts = check_resource(method, path)
    data = _json(body) if method != "DELETE" else None
    try:
        return _plan(method, parts, data)
    except PolicyError as exc:
        raise WriteError(400, str(exc), getattr(exc, "path", None)) from None


@dataclass(frozen=True)
class _Named:
    """A kind of object named by an id (policy rules, RLOC overrides): how it is read from JSON,
    asked of the policy (`core.policy.<word>(id)`, also what a 409 calls it), answered and
    changed (`core.<set>(obj, now)`, `core.<remove>(id, now)`)."""

    kind: Any  # Rule, RlocOverride: from_dict(data[, id])
    url_id: str  # the URL's id, as a 400 names it
    word: str
    answer: str
    set: str
    remove: str


_NAMED = {
    "policies": _Named(Rule, "rule_id", "rule", "rule", "set_rule", "remove_rule"),
    "rloc-overrides": _Named(RlocOverride, "override_id", "override", "rloc_override", "set_override",
                             "remove_override"),
}


def _plan(method: str, parts: list[str], data: Any) -> tuple[Change, Callable[[int], dict], int]:
    kind, rest = parts[0], parts[1:]
    named = _NAMED.get(kind)
    if named is not None:
        if method == "POST" and not rest:
            obj = named.kind.from_dict(_named(data))
            return _create(lambda core: getattr(core.policy, named.word)(obj.id), f"{named.word} {obj.id!r}",
                           lambda core, now: getattr(core, named.set)(obj, now)), \
                lambda n: {named.answer: obj.to_dict(), "notified_subscribers": n}, 201
        if len(rest) == 1 and method == "PUT":
            obj = named.kind.from_dict(data, schema.identifier(rest[0], named.url_id))
            return lambda core, now: getattr(core, named.set)(obj, now), \
                lambda n: {named.answer: obj.to_dict(), "notified_subscribers": n}, 200
        if len(rest) == 1 and method == "DELETE":
            obj_id = rest[0]
            return lambda core, now: getattr(core, named.remove)(obj_id, now), \
                lambda n: {"deleted": obj_id, "notified_subscribers": n}, 200
    else:
        if method == "POST" and not rest:
            mapping = StaticMapping.from_dict(data)
            return _create(lambda core: _static(core, mapping.iid, mapping.prefix),
                           f"[{mapping.iid}]{mapping.prefix} (a static mapping)",
                           lambda core, now: core.set_static(mapping, now)), \
                lambda n: {"static_mapping": mapping.to_dict(), "notified_subscribers": n}, 201
        if len(rest) == 3 and method in ("PUT", "DELETE"):
            iid = schema.decimal(rest[0], "iid", 0, MAX_IID)
            prefix = parse_prefix(f"{rest[1]}/{rest[2]}", "prefix")
            if method == "DELETE":
                return lambda core, now: core.remove_static(iid, prefix, now), \
                    lambda n: {"deleted": {"iid": iid, "prefix": str(prefix)}, "notified_subscribers": n}, 200
            if not isinstance(data, dict):
                raise WriteError(400, "the body must be a JSON object", "body")
            mapping = StaticMapping.from_dict({"iid": iid, "prefix": str(prefix), **data})
            if (mapping.iid, mapping.prefix) != (iid, prefix):
                raise WriteError(400, f"the body names [{mapping.iid}]{mapping.prefix}, the URL [{iid}]{prefix}",
                                 "prefix")
            return lambda core, now: core.set_static(mapping, now), \
                lambda n: {"static_mapping": mapping.to_dict(), "notified_subscribers": n}, 200
    raise WriteError(405, f"{method} /{'/'.join(parts)} is not a write this endpoint takes")


def _create(exists: Callable[[Any], object], what: str, change: Change) -> Change:
    """POST: 409 when the object exists (checked in the loop, against the state the change meets)."""
    def create(core: Any, now: float) -> list:
        if exists(core):
            raise WriteError(409, f"{what} exists: PUT replaces it")
        return change(core, now)
    return create


def _static(core: Any, iid: int, prefix: Any) -> bool:
    return any(m.iid == iid and m.prefix == prefix for m in core.static_mappings())


def _named(data: Any) -> Any:
    if isinstance(data, dict) and "id" in data:
        schema.identifier(data["id"], "id")
    return data


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as exc:
        raise WriteError(400, f"the body is not JSON: {exc}", "body") from None


def failure(exc: BaseException) -> WriteError:
    """What a change that failed in the loop or in etcd answers."""
    if isinstance(exc, WriteError):
        return exc
    if isinstance(exc, PolicyError):
        return WriteError(400, str(exc), getattr(exc, "path", None))
    if isinstance(exc, KeyError):
        return WriteError(404, f"no such object: {exc.args[0] if exc.args else ''}")
    # NotAcknowledged, Conflict, EtcdUnavailable and the like: etcd did not take it.
    return WriteError(503, f"not committed, nothing changed: {type(exc).__name__}: {exc}")
