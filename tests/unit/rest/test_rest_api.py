"""The REST API on Ryu's real WSGI application, driven in-process with webob (no sockets).

Behind it: a real Map-Server core and two real xTR cores behind the real
controller, wired in memory through real codec bytes (`support.underlay`), so
a policy written over REST is followed through to the Map-Notify an ITR
receives, the flows it compiles and the switch that holds them.
"""

from __future__ import annotations

import ipaddress
import itertools
import json

import pytest
import yaml

from lisp_ryu import config
from lisp_ryu.flows.compiler import compile_plan
from lisp_ryu.glue import rest
from lisp_ryu.glue.controller import Controller
from lisp_ryu.glue.ryu_app import CONFIG_ENV  # noqa: F401  (the app module imports: the glue the API mounts on)
from lisp_ryu.mapserver import MemoryStore
from lisp_ryu.mapserver.service import MapServer
from lisp_ryu.xtr.core import XtrCore
from ryu.app.wsgi import WSGIApplication
from support.underlay import Clock, Underlay, ipv4_frame
from webob import Request

ip = ipaddress.ip_address
TOKEN = "t0ken"
MS = ip("198.18.0.2")
T0 = 1_700_000_000.0

CONFIG = """
map_server:
  sites:
    - {name: dc1, key: k1, eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}]}
    - {name: dc2, key: k2, eid_prefixes: [{prefix: 10.2.0.0/16, iid: 42}]}
    - {name: dc3, key: k3, eid_prefixes: [{prefix: 10.3.0.0/16, iid: 42}]}
rest: {token: t0ken}
xtrs:
  - name: dc1
    dpid: 1
    rlocs: [{address: 198.18.1.2}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}]
    map_servers: [{address: 198.18.0.2, key: k1}]
    map_resolvers: [198.18.0.2]
    hosts: [{ip: 10.1.0.10, mac: "02:00:00:01:00:0a", port: 1, iid: 42}]
  - name: dc3
    dpid: 3
    rlocs: [{address: 198.18.3.2, weight: 50}, {address: 198.18.4.2, weight: 50}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.3.0.0/16, iid: 42}]
    map_servers: [{address: 198.18.0.2, key: k3}]
    map_resolvers: [198.18.0.2]
    hosts: [{ip: 10.3.0.10, mac: "02:00:00:03:00:0a", port: 1, iid: 42}]
"""


class Lab:
    """The cores behind the real controller, on the in-memory underlay, and the WSGI app in front."""

    def __init__(self, tmp_path, protect_reads=False, token=TOKEN, config_text=CONFIG):
        doc = yaml.safe_load(config_text)
        doc["rest"] = {"token": token, "protect_reads": protect_reads} if token else {}
        doc["map_server"]["data_dir"] = str(tmp_path)  # where the REST intent persists
        cfg = config.parse(doc)
        counter = itertools.count(1)
        self.clock = Clock(T0)
        self.store = MemoryStore()
        self.ms = MapServer(cfg.map_server, nonces=lambda: next(counter), now=T0, store=self.store)
        self.cores = {x.name: XtrCore(x, nonces=lambda: next(counter)) for x in cfg.xtrs}
        self.underlay = Underlay(self.clock)
        self.controller = Controller()
        # Waiting lets the rest run, as Ryu's hub does: what is in flight arrives meanwhile, until
        # the condition holds.
        self.controller.wait_until = lambda condition, timeout: (self.underlay.settle(until=condition),
                                                                 condition())[1]
        self.underlay.attach(self.controller, "map-server", self.ms, [MS])
        for core in self.cores.values():
            self.underlay.attach(self.controller, f"xtr {core.config.name}", core,
                                 [r.address for r in core.config.rlocs], dpid=core.config.dpid,
                                 clock=lambda: self.now - T0)  # the xTR cores run on the monotonic clock
        self.backend = rest.Backend.from_controller(self.controller, cfg)
        self.pushes: list[tuple[str, str]] = []
        for name, handle in self.backend.xtrs.items():
            handle.push = lambda reason, name=name, push=handle.push: (self.pushes.append((name, reason)),
                                                                       push(reason))
        self.wsgi = WSGIApplication()
        rest.register(self.wsgi, self.backend)

    @property
    def now(self):
        return self.clock.now

    def start(self):
        self.controller.start()
        self.switches = {core.config.dpid: self.underlay.connect(self.controller, core.config.dpid)
                         for core in self.cores.values()}
        self.underlay.settle()

    def miss(self, xtr, src, dst):
        core = self.cores[xtr]
        self.switches[core.config.dpid].packet_in(self.controller, 1, ipv4_frame(src, dst), iid=42)
        self.underlay.settle()

    # -- HTTP ---------------------------------------------------------------------------
    def call(self, method, path, body=None, token=TOKEN, raw=None):
        req = Request.blank(path, method=method)
        if token:
            req.headers["Authorization"] = f"Bearer {token}"
        if body is not None or raw is not None:
            req.body = raw if raw is not None else json.dumps(body).encode()
            req.content_type = "application/json"
        res = req.get_response(self.wsgi)
        self.underlay.settle()  # what the request sent (Map-Notify publications) reaches its peers
        return res.status_int, (json.loads(res.body) if res.body else None)


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    lab.start()
    return lab


def cache_entry(lab, xtr, prefix):
    status, data = lab.call("GET", f"/lisp/v1/xtrs/{xtr}/map-cache")
    assert status == 200
    return next((e for e in data["entries"] if e["prefix"] == prefix), None)


DENY = {"id": "no-dc1-to-dc3", "iid": 42, "sources": ["10.1.0.0/16"], "destinations": ["10.3.0.0/16"],
        "action": "deny"}


def test_every_route_is_in_the_openapi_document(lab):
    status, doc = lab.call("GET", "/lisp/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    from lisp_ryu.glue.openapi import openapi_path

    mounted = set()
    for r in lab.wsgi.mapper.matchlist:
        if r.name == "fallback":
            continue  # the JSON 404/405 for everything else under the prefix
        for method in r.conditions["method"]:
            mounted.add((openapi_path(r.routepath), method.lower()))
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert mounted == documented
    assert len(mounted) == len(rest.ROUTES)
    # Every request schema has an example that the API accepts (checked in test_examples_are_accepted).
    for name in ("Rule", "RlocOverride", "StaticMapping", "DynamicEidPrefix"):
        assert "example" in doc["components"]["schemas"][name]


def test_openapi_document_is_valid_openapi_3(lab):
    validator = pytest.importorskip("openapi_spec_validator")
    _, doc = lab.call("GET", "/lisp/v1/openapi.json")
    validator.validate(doc)


def test_examples_are_accepted(lab):
    from lisp_ryu.glue.openapi import SCHEMAS

    assert lab.call("POST", "/lisp/v1/policies", SCHEMAS["Rule"]["example"])[0] == 201
    assert lab.call("POST", "/lisp/v1/rloc-overrides", SCHEMAS["RlocOverride"]["example"])[0] == 201
    assert lab.call("POST", "/lisp/v1/static-mappings", SCHEMAS["StaticMapping"]["example"])[0] == 201
    assert lab.call("POST", "/lisp/v1/xtrs/dc1/dynamic-eid-prefixes", SCHEMAS["DynamicEidPrefix"]["example"])[0] == 201


def test_reads(lab):
    lab.miss("dc1", "10.1.0.10", "10.3.0.10")
    status, health = lab.call("GET", "/lisp/v1/health", token=None)
    assert status == 200 and health["status"] == "ok" and set(health["xtrs"]) == {"dc1", "dc3"}
    assert all(x["connected"] for x in health["xtrs"].values())
    _, sites = lab.call("GET", "/lisp/v1/sites")
    assert [s["name"] for s in sites["sites"]] == ["dc1", "dc2", "dc3"]
    assert "key" not in sites["sites"][0]
    _, regs = lab.call("GET", "/lisp/v1/registrations?limit=1")
    assert regs["total"] == 2 and len(regs["registrations"]) == 1
    _, subs = lab.call("GET", "/lisp/v1/subscriptions")
    assert subs["total"] == 1 and subs["subscriptions"][0]["prefix"] == "10.3.0.10/32"
    _, counters = lab.call("GET", "/lisp/v1/counters")
    assert counters["counters"]["received.map_register"] == 2  # the standalone server's shape
    assert "rejects_by_reason" in counters
    assert counters["xtrs"]["dc1"]["map_request_sent"] == 1
    entry = cache_entry(lab, "dc1", "10.3.0.0/16")
    assert entry["ttl_left"] == pytest.approx(1440 * 60, abs=1) and not entry["negative"]
    # Two RLOCs at 50/50: one flow into a select group with two buckets.
    [flow] = entry["flows"]
    assert "group:" in flow["text"] and flow["cookie"].startswith("0x4")
    [group] = entry["groups"]
    assert [b["weight"] for b in group["buckets"]] == [50, 50]
    assert lab.call("GET", "/lisp/v1/xtrs/nope/map-cache")[0] == 404
    assert lab.call("GET", "/lisp/v1/registrations?limit=x") == (400, {"error": "limit: not an integer: 'x'",
                                                                       "field": "limit"})


def test_deny_over_rest_reaches_the_itr_flows_and_removal_restores_them(lab):
    lab.miss("dc1", "10.1.0.10", "10.3.0.10")
    assert cache_entry(lab, "dc1", "10.3.0.0/16")["locators"]
    status, body = lab.call("POST", "/lisp/v1/policies", DENY)
    assert status == 201 and body["notified_subscribers"] == 1
    entry = cache_entry(lab, "dc1", "10.3.0.0/16")
    assert entry["negative"] and entry["action"] == "drop-policy-denied"
    [flow] = entry["flows"]
    assert flow["text"].endswith("actions=drop")
    assert lab.call("GET", "/lisp/v1/policies/no-dc1-to-dc3")[1]["action"] == "deny"
    assert lab.call("POST", "/lisp/v1/policies", DENY)[0] == 409
    status, body = lab.call("DELETE", "/lisp/v1/policies/no-dc1-to-dc3")
    assert status == 200 and body["notified_subscribers"] == 1
    entry = cache_entry(lab, "dc1", "10.3.0.0/16")
    assert not entry["negative"] and "group:" in entry["flows"][0]["text"]
    assert lab.call("DELETE", "/lisp/v1/policies/no-dc1-to-dc3")[0] == 404


def test_weight_override_over_rest_moves_the_itr_to_the_other_rloc(lab):
    lab.miss("dc1", "10.1.0.10", "10.3.0.10")
    status, _ = lab.call("PUT", "/lisp/v1/rloc-overrides/drain", {"rloc": "198.18.3.2", "weight": 0})
    assert status == 200
    entry = cache_entry(lab, "dc1", "10.3.0.0/16")
    assert [(l["address"], l["weight"]) for l in entry["locators"]] == [("198.18.3.2", 0), ("198.18.4.2", 50)]
    [flow] = entry["flows"]
    assert "set_field:198.18.4.2->tun_ipv4_dst" in flow["text"] and "198.18.3.2" not in flow["text"]
    assert entry["groups"] == []
    assert lab.call("GET", "/lisp/v1/rloc-overrides")[1]["rloc_overrides"][0]["weight"] == 0
    lab.call("DELETE", "/lisp/v1/rloc-overrides/drain")
    assert len(cache_entry(lab, "dc1", "10.3.0.0/16")["groups"]) == 1


def test_static_mapping_over_rest(lab):
    body = {"iid": 42, "prefix": "192.0.2.0/24", "rlocs": [{"address": "198.18.3.2"}]}
    assert lab.call("POST", "/lisp/v1/static-mappings", body)[0] == 201
    assert lab.call("POST", "/lisp/v1/static-mappings", body)[0] == 409
    lab.miss("dc1", "10.1.0.10", "192.0.2.7")
    entry = cache_entry(lab, "dc1", "192.0.2.0/24")
    assert [l["address"] for l in entry["locators"]] == ["198.18.3.2"]
    status, _ = lab.call("PUT", "/lisp/v1/static-mappings/42/192.0.2.0/24",
                         {"rlocs": [{"address": "198.18.4.2", "weight": 10}]})
    assert status == 200
    assert [l["address"] for l in cache_entry(lab, "dc1", "192.0.2.0/24")["locators"]] == ["198.18.4.2"]
    assert lab.call("PUT", "/lisp/v1/static-mappings/42/192.0.2.0/24",
                    {"prefix": "192.0.3.0/24", "rlocs": [{"address": "198.18.4.2"}]})[0] == 400
    assert lab.call("DELETE", "/lisp/v1/static-mappings/42/192.0.2.0/24")[0] == 200
    assert lab.call("DELETE", "/lisp/v1/static-mappings/42/192.0.2.0/24")[0] == 404
    assert lab.call("GET", "/lisp/v1/static-mappings")[1]["static_mappings"] == []


def test_dynamic_eid_prefixes_change_the_learning_flows_and_persist(lab, tmp_path):
    status, _ = lab.call("POST", "/lisp/v1/xtrs/dc1/dynamic-eid-prefixes", {"iid": 42, "prefix": "10.20.0.0/16"})
    assert status == 201
    assert ("dc1", "dynamic-EID prefix [42]10.20.0.0/16 added") in lab.pushes
    # The controller pushed the learning flows to dc1's switch.
    assert lab.switches[1].held() == compile_plan(lab.cores["dc1"].plan())
    assert any(("ipv4_src", ("10.20.0.0", "255.255.0.0")) in f.match for f in lab.switches[1].held().flows)
    core = lab.cores["dc1"]
    assert [str(d.prefix) for d in core.plan().dynamic_prefixes] == ["10.20.0.0/16"]
    assert lab.call("POST", "/lisp/v1/xtrs/dc1/dynamic-eid-prefixes", {"iid": 42, "prefix": "10.20.0.0/16"})[0] == 409
    # A restarted controller re-applies it.
    again = Lab(tmp_path)
    assert [str(d.prefix) for d in again.cores["dc1"].config.dynamic_eid_prefixes] == ["10.20.0.0/16"]
    assert lab.call("DELETE", "/lisp/v1/xtrs/dc1/dynamic-eid-prefixes/42/10.20.0.0/16")[0] == 200
    assert lab.call("GET", "/lisp/v1/xtrs/dc1/dynamic-eid-prefixes")[1]["dynamic_eid_prefixes"] == []
    assert lab.call("DELETE", "/lisp/v1/xtrs/dc1/dynamic-eid-prefixes/42/10.20.0.0/16")[0] == 404


def test_policy_changes_persist_in_the_map_server_store(lab):
    lab.call("POST", "/lisp/v1/policies", DENY)
    restarted = MapServer(lab.ms.config, nonces=lambda: 1, now=T0, store=lab.store)
    assert [r.id for r in restarted.policy.rules] == ["no-dc1-to-dc3"]


@pytest.mark.parametrize("method, path, body, field", [
    ("POST", "/lisp/v1/policies", {**DENY, "iid": "x"}, "iid"),
    ("POST", "/lisp/v1/policies", {**DENY, "destinations": ["10.3.0.0/33"]}, "destinations[0]"),
    ("POST", "/lisp/v1/policies", {k: v for k, v in DENY.items() if k != "action"}, "action"),
    ("PUT", "/lisp/v1/policies/a", {**DENY, "id": "b"}, "id"),
    ("POST", "/lisp/v1/rloc-overrides", {"id": "o", "rloc": "198.18.3.2", "weight": -1}, "weight"),
    ("POST", "/lisp/v1/rloc-overrides", {"id": "o", "site": "nowhere", "weight": 1}, "site"),
    ("POST", "/lisp/v1/static-mappings", {"iid": 42, "prefix": "192.0.2.0/24", "rlocs": [{"address": "x"}]},
     "rlocs[0].address"),
    ("DELETE", "/lisp/v1/static-mappings/42/192.0.2.1/24", None, "prefix"),
    ("POST", "/lisp/v1/xtrs/dc1/dynamic-eid-prefixes", {"prefix": "10.20.0.0/16", "vlan": 3}, "vlan"),
])
def test_invalid_input_is_400_naming_the_field(lab, method, path, body, field):
    status, answer = lab.call(method, path, body)
    assert status == 400, answer
    assert answer["field"] == field and answer["error"]


def test_bad_json_and_missing_body_are_400(lab):
    assert lab.call("POST", "/lisp/v1/policies", raw=b"{nope")[1]["field"] == "body"
    req = Request.blank("/lisp/v1/policies", method="POST")
    req.headers["Authorization"] = f"Bearer {TOKEN}"
    res = req.get_response(lab.wsgi)
    assert res.status_int == 400 and json.loads(res.body)["field"] == "body"


def test_writes_need_the_bearer_token(lab):
    status, body = lab.call("POST", "/lisp/v1/policies", DENY, token=None)
    assert status == 401 and "Bearer" in body["error"]
    assert lab.call("POST", "/lisp/v1/policies", DENY, token="wrong")[0] == 403
    assert lab.call("DELETE", "/lisp/v1/policies/x", token=None)[0] == 401
    assert lab.call("GET", "/lisp/v1/policies", token=None)[0] == 200  # reads open by default
    assert list(lab.ms.policy.rules) == []


def test_protected_reads_and_read_only_without_token(tmp_path):
    protected = Lab(tmp_path / "a", protect_reads=True)
    assert protected.call("GET", "/lisp/v1/registrations", token=None)[0] == 401
    assert protected.call("GET", "/lisp/v1/registrations")[0] == 200
    read_only = Lab(tmp_path / "b", token=None)
    assert read_only.call("GET", "/lisp/v1/policies", token=None)[0] == 200
    status, body = read_only.call("POST", "/lisp/v1/policies", DENY, token="anything")
    assert status == 403 and "no rest.token" in body["error"]


def test_unknown_paths_are_404_and_wrong_methods_405(lab):
    assert lab.call("GET", "/lisp/v1/nothing")[0] == 404
    assert lab.call("GET", "/lisp/v1/policies/missing")[0] == 404
    status, body = lab.call("PATCH", "/lisp/v1/policies/x", {})
    assert status == 405 and "DELETE, GET, PUT" in body["error"]


def test_show_formats_every_resource_of_the_api(lab):
    from lisp_ryu.glue.mapserver_cli import SHOW_CHOICES, format_table

    lab.miss("dc1", "10.1.0.10", "10.3.0.10")
    lab.call("POST", "/lisp/v1/policies", DENY)
    lab.call("PUT", "/lisp/v1/rloc-overrides/o", {"site": "dc3", "priority": 2})
    lab.call("POST", "/lisp/v1/static-mappings", {"iid": 42, "prefix": "192.0.2.0/24",
                                                  "rlocs": [{"address": "198.18.3.2"}]})
    for what in SHOW_CHOICES:
        path = "/lisp/v1/xtrs/dc1/map-cache" if what == "map-cache" else f"/lisp/v1/{what}"
        status, data = lab.call("GET", path)
        assert status == 200, what
        text = format_table(what, data)
        assert text, what
    assert "drop-policy-denied" in format_table("map-cache", lab.call("GET", "/lisp/v1/xtrs/dc1/map-cache")[1])



def test_registrations_page_with_the_same_cursor_as_the_standalone_view(lab):
    """The controller's REST pages registrations as `lisp-ryu mapserver --http` does: `next` feeds `after`."""
    _, first = lab.call("GET", "/lisp/v1/registrations?limit=1")
    assert first["total"] == 2 and len(first["registrations"]) == 1 and first["next"]
    _, second = lab.call("GET", f"/lisp/v1/registrations?limit=1&after={first['next']}")
    assert len(second["registrations"]) == 1 and second["next"] is None
    assert first["registrations"][0]["prefix"] != second["registrations"][0]["prefix"]
    status, body = lab.call("GET", "/lisp/v1/registrations?after=nonsense")
    assert status == 400 and body["field"] == "after"
