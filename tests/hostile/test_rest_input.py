"""Hostile requests against the controller's REST API, on Ryu's real WSGI application (in-process, webob).

Deep JSON, oversized bodies, ids that cannot travel in a URL, a token guessed over and over, a
`limit` of a billion, a damaged intent file: each is a 400 (or a skipped entry) that names the
problem, counted and logged without a traceback, and never one log line per request.
"""

from __future__ import annotations

import itertools
import json
import logging
import types

import pytest
import yaml

from lisp_ryu import config
from lisp_ryu.glue import rest
from lisp_ryu.glue.refusals import Refusals
from lisp_ryu.glue.ryu_app import CONFIG_ENV  # noqa: F401  (the app module imports: the glue the API mounts on)
from lisp_ryu.mapping.policy import Rule
from lisp_ryu.mapserver import MemoryStore
from lisp_ryu.mapserver.service import MapServer
from ryu.app.wsgi import WSGIApplication
from webob import Request

TOKEN = "t0ken"
T0 = 1_700_000_000.0
CONFIG = """
map_server:
  sites:
    - {name: dc1, key: k1, eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}]}
rest: {token: t0ken}
xtrs:
  - name: dc1
    dpid: 1
    rlocs: [{address: 198.18.1.2}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}]
    map_servers: [{address: 198.18.0.2, key: k1}]
    map_resolvers: [198.18.0.2]
"""
DENY = {"iid": 42, "destinations": ["10.1.0.0/16"], "action": "deny"}


class Api:
    def __init__(self, tmp_path, before_register=lambda backend: None):
        doc = yaml.safe_load(CONFIG)
        doc["map_server"]["data_dir"] = str(tmp_path)
        cfg = config.parse(doc)
        counter = itertools.count(1)
        self.ms = MapServer(cfg.map_server, nonces=lambda: next(counter), now=T0, store=MemoryStore())
        core = types.SimpleNamespace(config=cfg.xtrs[0], counters={}, cache=[], sd_cache=[])
        self.pushes = []
        handle = rest.XtrHandle("dc1", 1, core, lambda: None, self.pushes.append)
        self.refusals = Refusals(logging.getLogger("lisp_ryu"))
        self.backend = rest.Backend(rest=cfg.rest, map_server=self.ms, xtrs={"dc1": handle},
                                    ms_clock=lambda: T0, state_file=str(tmp_path / rest.STATE_FILE),
                                    refusals=self.refusals)
        before_register(self.backend)
        self.wsgi = WSGIApplication()
        rest.register(self.wsgi, self.backend)

    def call(self, method, path, body=None, token=TOKEN, raw=None, source="192.0.2.7"):
        req = Request.blank(path, method=method, environ={"REMOTE_ADDR": source})
        if token:
            req.headers["Authorization"] = f"Bearer {token}"
        if body is not None or raw is not None:
            req.body = raw if raw is not None else json.dumps(body).encode()
            req.content_type = "application/json"
        res = req.get_response(self.wsgi)
        return res.status_int, (json.loads(res.body) if res.body else None)


@pytest.fixture
def api(tmp_path):
    return Api(tmp_path)


def no_traceback(caplog):
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


def test_deeply_nested_json_is_a_400_naming_the_depth(api, caplog):
    for depth in (100_000, 1_000, 40):
        status, answer = api.call("POST", "/lisp/v1/policies", raw=b"[" * depth + b"]" * depth)
        assert status == 400, answer
        assert answer["field"] == "body" and "nested" in answer["error"], answer
    nested = {"id": "n", **DENY, "sources": [[[["10.1.0.0/16"]]]]}  # shallow enough: the reader names the field
    assert api.call("POST", "/lisp/v1/policies", nested)[1]["field"] == "sources[0]"
    no_traceback(caplog)


def test_a_body_larger_than_the_bound_is_refused_before_it_is_read(api, caplog):
    status, answer = api.call("POST", "/lisp/v1/policies", raw=b" " * (rest.MAX_BODY + 1))
    assert status == 400 and answer["field"] == "body" and str(rest.MAX_BODY) in answer["error"]
    req = Request.blank("/lisp/v1/policies", method="POST", environ={"REMOTE_ADDR": "192.0.2.7"})
    req.headers["Authorization"] = f"Bearer {TOKEN}"
    req.environ["CONTENT_LENGTH"] = str(10 ** 12)  # a lie: the body is never read
    req.environ["wsgi.input"] = types.SimpleNamespace(read=lambda *a: pytest.fail("the body was read"))
    res = req.get_response(api.wsgi)
    assert res.status_int == 400 and json.loads(res.body)["field"] == "body"
    no_traceback(caplog)


@pytest.mark.parametrize("rule_id", ["räksmörgås", "ид", "a b", "a/b", "a:b", "x" * 65, "", 7, ["a"]])
def test_ids_outside_the_alphabet_are_refused_at_create(api, rule_id):
    status, answer = api.call("POST", "/lisp/v1/policies", {"id": rule_id, **DENY})
    assert (status, answer["field"]) == (400, "id"), answer
    assert list(api.ms.policy.rules) == []


def test_an_id_in_the_url_outside_the_alphabet_is_refused_at_put(api):
    status, answer = api.call("PUT", "/lisp/v1/policies/r%C3%A4k", DENY)
    assert (status, answer["field"]) == (400, "rule_id"), answer
    status, answer = api.call("PUT", "/lisp/v1/rloc-overrides/%C3%A9", {"rloc": "198.18.1.2", "weight": 1})
    assert (status, answer["field"]) == (400, "override_id"), answer


def test_every_id_of_the_alphabet_round_trips(api):
    rule_id = "Az09-_.x"
    assert api.call("POST", "/lisp/v1/policies", {"id": rule_id, **DENY})[0] == 201
    assert api.call("GET", f"/lisp/v1/policies/{rule_id}")[1]["id"] == rule_id
    assert api.call("DELETE", f"/lisp/v1/policies/{rule_id}")[0] == 200
    assert list(api.ms.policy.rules) == []


def test_an_existing_non_ascii_id_can_be_read_and_deleted(api):
    """Created before the alphabet was enforced (it is in the store): reachable by its URL-encoded id."""
    api.ms.set_rule(Rule.from_dict({"id": "räk", **DENY}), T0)
    status, rule = api.call("GET", "/lisp/v1/policies/r%C3%A4k")
    assert status == 200 and rule["id"] == "räk"
    assert api.call("DELETE", "/lisp/v1/policies/r%C3%A4k")[0] == 200
    assert list(api.ms.policy.rules) == []
    status, answer = api.call("GET", "/lisp/v1/policies/%FF")  # not UTF-8 at all
    assert (status, answer["field"]) == (400, "rule_id"), answer
    status, answer = api.call("GET", "/lisp/v1/nothing/%FF")
    assert status == 404 and "\\xff" in answer["error"], answer


def test_limit_has_a_hard_maximum(api):
    status, answer = api.call("GET", "/lisp/v1/registrations?limit=1000000000")
    assert (status, answer["field"]) == (400, "limit"), answer
    assert api.call("GET", "/lisp/v1/registrations?limit=" + "9" * 5000)[1]["field"] == "limit"
    assert api.call("GET", "/lisp/v1/registrations?limit=10")[0] == 200


def test_wrong_tokens_are_logged_once_per_source_and_counted(api, caplog):
    caplog.set_level(logging.DEBUG)
    for _ in range(50):
        assert api.call("POST", "/lisp/v1/policies", {"id": "x", **DENY}, token="guess")[0] == 403
        assert api.call("DELETE", "/lisp/v1/policies/x", token=None)[0] == 401
    assert api.call("POST", "/lisp/v1/policies", {"id": "x", **DENY}, token="guess", source="192.0.2.8")[0] == 403
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(lines) == 3, [r.getMessage() for r in lines]  # 403 and 401 from .7, 403 from .8
    assert all(r.levelno == logging.WARNING for r in lines)
    assert "192.0.2.7" in lines[0].getMessage()
    counters = api.call("GET", "/lisp/v1/counters")[1]["controller"]
    assert counters["rest.forbidden"] == 51 and counters["rest.unauthorised"] == 50


def test_a_damaged_intent_file_is_logged_and_its_good_entries_kept(tmp_path, caplog):
    (tmp_path / rest.STATE_FILE).write_text(json.dumps({"dynamic_eid_prefixes": {
        "dc1": [{"iid": 42, "prefix": "10.1.5.0/24"}, {"iid": "x", "prefix": "10.1.6.0/24"},
                {"prefix": "10.1.7.0/33"}, "junk", {"iid": 42, "prefix": "10.1.8.0/24"}],
        "gone": [{"iid": 1, "prefix": "10.9.0.0/16"}]}}))
    api = Api(tmp_path)
    kept = [str(d.prefix) for d in api.backend.xtrs["dc1"].core.config.dynamic_eid_prefixes]
    assert kept == ["10.1.5.0/24", "10.1.8.0/24"]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "dynamic_eid_prefixes.dc1[1].iid" in messages and "dynamic_eid_prefixes.dc1[3]" in messages
    assert not [r for r in caplog.records if r.exc_info]
    assert (tmp_path / (rest.STATE_FILE + ".damaged")).read_bytes() == (tmp_path / rest.STATE_FILE).read_bytes()


@pytest.mark.parametrize("content", [b"[]", b'{"dynamic_eid_prefixes": []}', b"\xff\xfe", b"{" * 100_000])
def test_an_unreadable_intent_file_does_not_stop_the_controller(tmp_path, caplog, content):
    (tmp_path / rest.STATE_FILE).write_bytes(content)
    api = Api(tmp_path)
    assert api.call("GET", "/lisp/v1/health")[0] == 200
    assert any(rest.STATE_FILE in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.exc_info]
    assert (tmp_path / (rest.STATE_FILE + ".damaged")).read_bytes() == content
