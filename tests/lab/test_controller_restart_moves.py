"""End to end: a controller restart after workloads moved, on a configuration written before.

Lab: prefix rs-, management 198.19.223.0/24, controller port 6741; the controller runs on the
configuration the lab had when it came up (h1 configured at dc1, port 1), as an operator's file
would, with redirects of 3 s (`redirect_seconds`).  h1 moves to dc2 (learned there) under pings
from h2 (dc1, its old site) and h5 (dc3).  Before, the old site claimed h1 again once its redirect
ended (delivering h2's traffic to the port h1 had left), and a restarted controller deleted dc2's
flows for h1 and claimed it at dc1: every probe lost from then on.
"""

from __future__ import annotations

import time

import pytest

from lisp_ryu.lab import controller as lab_controller
from lisp_ryu.lab import controller_config
from lisp_ryu.lab.move import move_host
from lisp_ryu.lab.running import load_state
from lisp_ryu.lab.scenarios import stale
from lisp_ryu.lab.scenarios.probe import Prober

from conftest import controller_lab, dump_lab_on_failure, private_lab

pytestmark = [pytest.mark.lab]

REDIRECT = 3.0  # seconds: xtrs[].redirect_seconds here
INTERVAL = 0.01
# Probes at 10 ms lost to the move itself (an unplanned move loses 10-30 ms) and, at most, one
# more move's worth while the controller is away (the switches forward by their flows meanwhile).
MAX_LOST_MOVE = 5
MAX_LOST_RESTART = 5


@pytest.fixture(scope="module")
def lab(tmp_path_factory, module_monkeypatch):
    env, copy = private_lab(tmp_path_factory, module_monkeypatch, "restart-moves", "rs-", "three-dc.yaml",
                            "198.19.223.0/24", 6741)
    module_monkeypatch.setattr(lab_controller, "start", _on_the_first_configuration(lab_controller.start))
    with controller_lab(env, copy) as state:
        yield state


def _on_the_first_configuration(start):
    """The controller always starts on the configuration of the lab as it came up."""
    first = {}

    def on_first(state, **options):
        if "doc" not in first:
            doc = controller_config.build(state)
            for xtr in doc["xtrs"]:
                xtr["redirect_seconds"] = REDIRECT
            first["doc"] = doc
        return start(state, doc=first["doc"], **options)

    return on_first


@pytest.fixture(autouse=True)
def flows_on_failure(request, lab):
    yield
    dump_lab_on_failure(request, lab)


def lost_between(probes, start: float, end: float) -> int:
    return sum(1 for p in probes if start <= p.sent < end and p.received is None)


def test_a_moved_workload_stays_reachable_after_its_redirect_and_through_a_restart(lab):
    state = load_state()
    h1, h2, h5 = state.host("h1"), state.host("h2"), state.host("h5")
    probers = {name: Prober(h.namespace, h1.ip, INTERVAL) for name, h in (("h2", h2), ("h5", h5))}
    for p in probers.values():
        p.start()
    try:
        assert all(p.wait_reply(20) for p in probers.values())
        moved_at = time.time()
        state = move_host("h1", "dc2").state
        time.sleep(REDIRECT + 2.0)  # dc1's redirect for h1 ends: h1 stays away from dc1
        assert stale.check(state) == []
        restarted_at = time.time()
        assert lab_controller.stop()
        lab_controller.start(state)
        lab_controller.wait_ready(state)
        time.sleep(REDIRECT + 2.0)
        assert stale.check(state) == []
        back_at = time.time()
        state = move_host("h1", "dc1").state  # and home again: learned at its configured port
        time.sleep(2.0)
        assert stale.check(state) == []
    finally:
        probes = {name: p.stop() for name, p in probers.items()}
    for name, got in probes.items():
        assert lost_between(got, moved_at + 0.5, restarted_at) == 0, name  # through the redirect's end
        assert lost_between(got, moved_at, moved_at + 0.5) <= MAX_LOST_MOVE, name
        assert lost_between(got, restarted_at, back_at) <= MAX_LOST_RESTART, name
        assert lost_between(got, back_at + 0.5, back_at + 2.0) == 0, name
    log = lab_controller.log_path().read_text(errors="replace")
    assert "dynamic EID [42]10.1.0.10 (02:4c:68:01:00:0a) on port" in log and "taken back from the switch" in log


def test_a_planned_move_loses_nothing_when_the_controller_is_killed_inside_its_window(lab):
    """The move is announced, the controller is killed (SIGKILL) and started again, then the
    workload switches over: the restarted controller's xTRs took their parts up again from the
    journal (glue.planned_journal) before their first push; before, that push deleted them and the
    switchover lost 12 probes at 1 ms."""
    state = load_state()
    h1, h5 = state.host("h1"), state.host("h5")
    home, away = h1.site, ("dc2" if h1.site == "dc1" else "dc1")

    def kill_and_restart():
        pid = lab_controller.running_pid()
        assert lab_controller.stop(grace=0)  # SIGKILL: nothing is saved on the way out
        while lab_controller.process_alive(pid):
            time.sleep(0.01)
        lab_controller.start(load_state())
        lab_controller.wait_ready(load_state())

    prober = Prober(h5.namespace, h1.ip, 0.001)
    prober.start()
    try:
        assert prober.wait_reply(20)
        moved = move_host("h1", away, planned=True, before_switchover=kill_and_restart)
        time.sleep(2.0)
    finally:
        probes = prober.stop()
    lost = [p for p in probes if p.received is None and p.sent > moved.started - 1.0]
    assert lost == [], [round(p.sent - moved.started, 3) for p in lost]
    state = load_state()
    assert stale.check(state) == []
    log = lab_controller.log_path().read_text(errors="replace")
    assert log.count("taken up again after a restart") >= 3, log[-3000:]
    move_host("h1", home)
