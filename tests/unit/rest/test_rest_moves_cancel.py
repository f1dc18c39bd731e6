"""GET /lisp/v1/moves and DELETE /lisp/v1/moves/{iid}/{eid}: the open planned moves, and calling one off.

A live migration can fail or be aborted after the orchestrator announced it: the workload stays
where it is, and the announced port may soon be another workload's.  Before, the move stayed
open until its window ended (up to an hour): the destination delivered the workload's traffic to
that port all along.  Same three xTRs as test_rest_moves.py.
"""

from __future__ import annotations

import ipaddress
import json

import pytest

from lisp_ryu.glue.mapserver_cli import format_table
from lisp_ryu.glue.planned_journal import PLANNED_FILE, PlannedJournal
from unit.rest.test_rest_moves import DC1, DC2, EID, held, planned_flows, three_site_lab, to_eid
from unit.rest.test_rest_moves_port import decap_at_dc2


@pytest.fixture
def lab(tmp_path):
    lab = three_site_lab(tmp_path)
    lab.controller.planned = PlannedJournal.in_data_dir(str(tmp_path))  # as Controller.from_config gives it
    lab.miss("dc3", "10.3.0.10", EID)
    return lab


def announce(lab, **extra):
    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2", "timeout": 30,
                                                         **extra})
    assert status == 202, answer
    return answer


def test_the_open_moves_are_listed_with_every_xtrs_part(lab):
    assert lab.call("GET", "/lisp/v1/moves") == (200, {"moves": []})
    announce(lab, port=5)
    status, body = lab.call("GET", "/lisp/v1/moves")
    assert status == 200
    (move,) = body["moves"]
    assert {k: move[k] for k in ("iid", "eid", "from_site", "to_site", "replicating_at", "port", "held")} == \
        {"iid": 42, "eid": EID, "from_site": "dc1", "to_site": "dc2", "replicating_at": ["dc3"], "port": 5, "held": 0}
    assert 29 < move["seconds_left"] <= 30
    # `lisp-ryu show moves` asks with the page size it asks every resource with
    status, paged = lab.call("GET", "/lisp/v1/moves?limit=100")
    assert status == 200 and paged == body
    table = format_table("moves", body).splitlines()
    assert table[-1].split() == ["42", EID, "dc1", "dc2", "5", "0", "dc3", f"{move['seconds_left']:.1f}"]


def test_a_move_called_off_ends_everywhere_at_once(lab, tmp_path):
    announce(lab, port=5)
    assert decap_at_dc2(lab).ports == [5]
    status, answer = lab.call("DELETE", f"/lisp/v1/moves/42/{EID}")
    assert status == 200, answer
    assert sorted(answer["ended_at"]) == ["dc1", "dc2", "dc3"] and answer["installed"] is True
    for name in ("dc1", "dc2", "dc3"):
        assert planned_flows(held(lab, name)) == [], name
    assert [d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries] == [DC1]  # the old site only
    assert 5 not in decap_at_dc2(lab).ports  # the announced port gets nothing of it any more
    assert lab.call("GET", "/lisp/v1/moves") == (200, {"moves": []})
    assert json.loads((tmp_path / PLANNED_FILE).read_text())["planned_moves"] == []  # a restart does not bring it back
    status, answer = lab.call("DELETE", f"/lisp/v1/moves/42/{EID}")
    assert status == 404 and "no planned move" in answer["error"]


def test_what_the_destination_held_is_dropped_and_counted(lab):
    announce(lab)  # no port: dc2 holds what arrives for the workload
    dc2 = lab.cores["dc2"]  # a packet the switch sent it (decapsulated, for the workload)
    dc2.hold(42, ipaddress.ip_address(EID), b"\x00" * 60, 1.0)
    assert lab.call("GET", "/lisp/v1/moves")[1]["moves"][0]["held"] == 1
    assert lab.call("DELETE", f"/lisp/v1/moves/42/{EID}")[0] == 200
    assert dc2.counters["planned_move_held_dropped"] == 1 and dc2.counters["planned_move_cancelled"] == 1


@pytest.mark.parametrize("path, field", [("/lisp/v1/moves/42/10.1.0.300", "eid"),
                                         (f"/lisp/v1/moves/{1 << 24}/10.1.0.10", "iid")])
def test_a_bad_iid_or_eid_is_a_400_naming_it(lab, path, field):
    status, answer = lab.call("DELETE", path)
    assert status == 400 and answer.get("field") == field, answer


def test_an_iid_that_is_no_number_is_no_resource(lab):
    """Not a 405 saying DELETE is not allowed and DELETE is (the fallback matched what Routes does not)."""
    status, answer = lab.call("DELETE", "/lisp/v1/moves/x/10.1.0.10")
    assert status == 404 and "no such resource" in answer["error"], answer
    assert lab.call("DELETE", "/lisp/v1/static-mappings/x/10.9.0.0/16")[0] == 404


def test_calling_a_move_off_needs_the_token(lab):
    announce(lab, port=5)
    assert lab.call("DELETE", f"/lisp/v1/moves/42/{EID}", token=None)[0] == 401
    assert [d.packet["tun_ipv4_dst"] for d in sorted(to_eid(lab, "dc3").deliveries,
                                                     key=lambda d: d.packet["tun_ipv4_dst"])] == [DC1, DC2]
