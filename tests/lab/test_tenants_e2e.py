"""Two tenants (instance-IDs 42 and 7) reusing the same EID prefixes and addresses at six sites behind
two underlay routers (topologies/six-dc-two-tenants.yaml), driven by the real controller.

Every same-tenant pair is answered on the first ping; packets for an address both tenants use reach
the sender's tenant's host only (counted in the receivers' namespaces); after a host moves across
routers both still hold; and the controller reports every switch healthy.
"""

from __future__ import annotations

import re

import pytest

from lisp_ryu.lab import controller as lab_controller
from lisp_ryu.lab import move as lab_move
from lisp_ryu.lab.evacuate import evacuate
from lisp_ryu.lab.scenarios import mobility
from support.tenant_checks import first_ping_failures, isolation_failures, first_ping

from conftest import controller_lab, dump_lab_on_failure, private_lab
from test_planned_move_e2e import planned_leftovers

pytestmark = [pytest.mark.lab]
REST_PORT = 8241


@pytest.fixture(scope="module")
def lab(tmp_path_factory, module_monkeypatch):
    env, topo_file = private_lab(tmp_path_factory, module_monkeypatch, "tenants", "ln-", "six-dc-two-tenants.yaml",
                                 "198.19.240.0/24", 6711)
    with controller_lab(env, topo_file, extra_args=("--wsapi-port", str(REST_PORT))) as state:
        yield state


@pytest.fixture(autouse=True)
def flows_on_failure(request, lab):
    yield
    dump_lab_on_failure(request, lab)


def test_every_same_tenant_pair_answers_the_first_ping(lab):
    assert first_ping_failures(lab) == []


def test_an_address_both_tenants_use_reaches_the_senders_tenant_only(lab):
    assert isolation_failures(lab) == []


def test_the_controller_reports_every_switch_healthy(lab):
    health, why = lab_controller.health(lab_move.load_state())
    assert health is not None, why
    assert health["healthy"], health
    assert set(health["xtrs"]) == {s.name for s in lab.sites}


def test_a_move_across_routers_keeps_tenants_apart(lab):
    moved = lab_move.move("a1", "dc5")  # tenant 42's 10.1.0.10 leaves dc1 (r1) for dc5 (r2); b1 stays
    assert moved.host("a1").site == "dc5" and moved.host("b1").site == "dc1"
    # The first packets after the move: the mapping system and the old site redirect them.
    for src in ("a2", "a6"):
        assert first_ping(moved, src, "10.1.0.10") or first_ping(moved, src, "10.1.0.10"), src
    assert isolation_failures(moved) == []
    assert first_ping_failures(moved) == []


def test_lab_status_and_show_find_the_controller_without_a_url(lab):
    import json
    import subprocess
    import sys

    status = subprocess.run([sys.executable, "-m", "lisp_ryu", "lab", "status"], capture_output=True, text=True)
    assert status.returncode == 0, status.stdout + status.stderr
    assert ", healthy" in status.stdout and f"REST http://127.0.0.1:{REST_PORT}" in status.stdout, status.stdout
    assert "UNHEALTHY" not in status.stdout
    show = subprocess.run([sys.executable, "-m", "lisp_ryu", "show", "health", "--json"], capture_output=True,
                          text=True, env={k: v for k, v in __import__("os").environ.items() if k != "LISP_RYU_URL"})
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout)["healthy"] is True


def test_planned_moves_in_the_second_tenant_lose_nothing_and_keep_tenants_apart(lab):
    """Tenant 7's b1 (10.1.0.10) moves dc1 <-> dc5 as planned moves, announced with its new
    port, under b6's 1 ms ping; tenant 42's a1 holds the same address and sits at dc5 since
    the move above, so the destination has that address as a local host in the other tenant."""
    assert lab_move.load_state().host("a1").site == "dc5"
    log = lab_controller.log_path()
    offset = len(log.read_text(errors="replace"))
    report = mobility.run(moves=4, pause=1.0, interval=0.001, host="b1", to="dc5", pinger="b6", planned=True)
    table = mobility.format_table(report)
    print(table)
    assert all(m.recovered for m in report.moves), table
    assert [m.lost for m in report.moves] == [0] * 4, table
    # Tenant 7's arrivals, each delivered by the switch to the announced port: nothing held.
    arrivals = re.findall(r"planned move of \[(\d+)\]\S+: arrived; (\d+) held packets delivered",
                          log.read_text(errors="replace")[offset:])
    assert arrivals == [("7", "0")] * 4, arrivals
    moved = lab_move.load_state()
    assert moved.host("b1").site == "dc1" and moved.host("a1").site == "dc5"
    assert isolation_failures(moved) == []
    assert first_ping_failures(moved) == []
    assert planned_leftovers(moved) == []


def test_both_tenants_same_address_planned_together_to_one_site(lab):
    """a1 (tenant 42) and b1 (tenant 7), one address, leave dc1 for dc3 together as planned
    moves announced with their ports: each tenant's traffic reaches its own host there."""
    if lab_move.load_state().host("a1").site != "dc1":
        lab_move.move("a1", "dc1")
    done = evacuate("dc1", "dc3", ["a1", "b1"], planned=True)
    assert sorted(m.host for m in done.moves) == ["a1", "b1"]
    moved = lab_move.load_state()
    assert moved.host("a1").site == moved.host("b1").site == "dc3"
    for src in ("a2", "a6", "b2", "b6"):  # a and b pingers each reach only their own tenant's 10.1.0.10
        assert first_ping(moved, src, "10.1.0.10") or first_ping(moved, src, "10.1.0.10"), src
    assert isolation_failures(moved) == []
    assert first_ping_failures(moved) == []
    assert planned_leftovers(moved) == []
