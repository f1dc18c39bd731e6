"""When the lab calls its controller ready (lisp_ryu/lab/controller.py `_not_ready`): as the
controller's GET /lisp/v1/health says, not as the last controller's flows and log lines did,
and only if it is the controller this lab started."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest

from lisp_ryu.lab import controller as lab_controller
from lisp_ryu.lab import state as lab_state
from lisp_ryu.lab.state import LabError
from support.json_server import json_server

HEALTH = {}  # what the stand-in controller's GET /lisp/v1/health answers


@pytest.fixture
def rest(monkeypatch, tmp_path):
    monkeypatch.setenv(lab_state.LAB_DIR_ENV, str(tmp_path / "lab"))
    (tmp_path / "lab").mkdir()
    lab_controller.pid_path().write_text("12345\n")  # this lab started its controller just now
    with json_server(lambda: HEALTH) as (url, _server):
        yield url


LAB = SimpleNamespace(sites=[SimpleNamespace(name="dc1", is_pxtr=False), SimpleNamespace(name="px", is_pxtr=True)])


def xtr(connected: bool, registered: bool | None) -> dict:
    servers = [] if registered is None else [{"address": "198.18.0.2", "registered": registered}]
    return {"connected": connected, "mapping_system": {"map_servers": servers}}


def test_ready_only_when_every_switch_is_connected_and_every_xtr_registered(rest):
    HEALTH.clear()
    HEALTH.update(uptime_seconds=0.5, xtrs={"dc1": xtr(False, False), "px": xtr(True, False)})
    assert lab_controller._not_ready(LAB, rest) == ["dc1"]
    HEALTH["xtrs"]["dc1"] = xtr(True, False)
    assert lab_controller._not_ready(LAB, rest) == ["dc1"]  # connected, not registered yet
    HEALTH["xtrs"]["dc1"] = xtr(True, True)
    assert lab_controller._not_ready(LAB, rest) == []  # a PxTR registers nothing
    del HEALTH["xtrs"]["px"]
    assert lab_controller._not_ready(LAB, rest) == ["px"]  # a site this controller does not drive


def test_nothing_listening_is_not_ready_yet(rest):
    assert lab_controller._not_ready(LAB, "http://127.0.0.1:9") == ["dc1", "px"]


def test_an_older_controller_on_the_port_is_named(rest):
    HEALTH.clear()
    HEALTH.update(uptime_seconds=3600.0, xtrs={"dc1": xtr(True, True), "px": xtr(True, None)})
    with pytest.raises(LabError, match="answered by a controller up 3600 s, not the one this lab started"):
        lab_controller._not_ready(LAB, rest)
    old = time.time() - 4000  # this lab's own controller, started long ago (driving one that runs)
    os.utime(lab_controller.pid_path(), (old, old))
    assert lab_controller._not_ready(LAB, rest) == []
