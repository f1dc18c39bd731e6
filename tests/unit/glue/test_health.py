"""Health tells the truth: a switch whose flows cannot be compiled or installed is unhealthy, says why
(in the controller's `problem`, in /lisp/v1/health, in the log once per distinct error), and the
other switches are programmed regardless."""

from __future__ import annotations

import logging

import pytest

from lisp_ryu.flows import compiler
from lisp_ryu.glue import rest

from test_controller import Site, make_config


@pytest.fixture
def broken_dc1(monkeypatch):
    """dc1's plans fail to compile; dc2's compile as usual."""
    real = compiler.compile_plan

    def compile_plan(plan):
        if plan.tunnel_source is not None and str(plan.tunnel_source) == "198.18.1.2":
            raise compiler.CompileError("two flows share table/priority/match (test)")
        return real(plan)

    monkeypatch.setattr("lisp_ryu.glue.controller.compile_plan", compile_plan)


def test_a_switch_that_cannot_be_compiled_is_unhealthy_and_the_others_are_programmed(broken_dc1, caplog):
    with caplog.at_level(logging.ERROR, logger="lisp_ryu"):
        site = Site(make_config())
        for reason in ("retry", "retry again"):
            site.controller.request_push(1, reason)
    assert "cannot compile its flows: two flows share" in site.controller.problem(1)
    assert site.controller.problem(2) is None
    assert site.switches[2].held() == site.compiled(2)  # dc2 programmed in full
    assert site.switches[1].held().flows == frozenset()  # dc1 left as it was
    said = [r for r in caplog.records if "unhealthy" in r.getMessage()]
    assert len(said) == 1 and "dc1" in said[0].getMessage()  # once, not per retry
    assert site.controller.counters["compile_errors"] >= 3


def test_health_reports_the_reason_and_clears_when_the_plan_compiles_again(broken_dc1, monkeypatch):
    site = Site(make_config())
    api = rest.Api(rest.Backend.from_controller(site.controller, make_config()))
    health = api.health(None)
    assert health["status"] == "ok" and health["healthy"] is False
    assert health["xtrs"]["dc1"]["healthy"] is False and "cannot compile" in health["xtrs"]["dc1"]["problem"]
    dc2 = dict(health["xtrs"]["dc2"])
    assert dc2.pop("mapping_system")["unreachable"] == []  # every map-server and map-resolver answers
    assert dc2 == {"dpid": "0x2", "connected": True, "problem": None, "healthy": True}
    monkeypatch.setattr("lisp_ryu.glue.controller.compile_plan", compiler.compile_plan)
    site.controller.request_push(1, "fixed")
    assert site.controller.problem(1) is None and api.health(None)["healthy"] is True
    assert site.switches[1].held() == site.compiled(1)


def test_a_refused_flow_mod_makes_the_switch_unhealthy_until_it_reconnects():
    site = Site(make_config())
    site.controller.openflow_error(2, 5, 6, 77)
    assert "OpenFlow error type 5 code 6" in site.controller.problem(2)
    site.underlay.connect(site.controller, 2, site.switches[2].held())
    site.underlay.settle()
    assert site.controller.problem(2) is None
