"""A controller restart inside a planned move's window: each xTR takes its part up again.

The REST tests' three xTRs (dc1 holds 10.1.0.10, dc2 learns hosts, dc3 talks to it): the move
to dc2 is announced with the new port, then the controller restarts while the switches keep
their tables.  The open moves are kept in data_dir (glue.planned_journal); the restarted
controller's first push to each switch leaves the move's flows as they were.  Before, that push
deleted them, and the switchover that followed was an unplanned move.
"""

from __future__ import annotations

import json

import pytest

from lisp_ryu.glue.planned_journal import PLANNED_FILE, PlannedJournal
from unit.rest.test_rest_moves import DC1, DC2, EID, held, planned_flows, three_site_lab, to_eid
from unit.rest.test_rest_moves_port import decap_at_dc2


def with_journal(lab, tmp_path):
    """As `Controller.from_config` gives it with the Map-Server's data_dir (the REST tests' lab
    builds its controller by hand)."""
    lab.controller.planned = PlannedJournal.in_data_dir(str(tmp_path))
    return lab


def announced(tmp_path):
    lab = with_journal(three_site_lab(tmp_path), tmp_path)
    lab.miss("dc3", "10.3.0.10", EID)
    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2", "port": 5,
                                                         "timeout": 30})
    assert status == 202 and answer["installed"], answer
    return lab


def restarted(tmp_path, before):
    """A new controller on the same configuration and data_dir; each switch holds what it held."""
    lab = with_journal(three_site_lab(tmp_path, start=False), tmp_path)
    lab.controller.start()
    lab.switches = {dpid: lab.underlay.connect(lab.controller, dpid, state) for dpid, state in before.items()}
    lab.underlay.settle()
    return lab


def tables(lab):
    return {dpid: switch.held() for dpid, switch in lab.switches.items()}


def test_a_restart_inside_the_window_keeps_every_part_of_the_move(tmp_path):
    lab = announced(tmp_path)
    before = tables(lab)
    moves = json.loads((tmp_path / PLANNED_FILE).read_text())["planned_moves"]
    assert [(m["eid"], m["from_site"], m["to_site"], m["port"]) for m in moves] == [(EID, "dc1", "dc2", 5)]

    after = restarted(tmp_path, before)
    for name in ("dc1", "dc2", "dc3"):
        assert set(planned_flows(held(after, name))) == set(planned_flows(before[after.cores[name].config.dpid])), name
    assert sorted(d.packet["tun_ipv4_dst"] for d in to_eid(after, "dc3").deliveries) == [DC1, DC2]
    assert decap_at_dc2(after).ports == [5]
    assert after.controller.counters["planned_move_parts_taken_up"] == 3


def test_without_the_journal_the_first_push_ends_the_move(tmp_path):
    """What the journal is for: the restarted controller knows nothing of the move."""
    lab = announced(tmp_path)
    before = tables(lab)
    (tmp_path / PLANNED_FILE).unlink()
    after = restarted(tmp_path, before)
    assert all(planned_flows(held(after, name)) == [] for name in ("dc1", "dc2", "dc3"))
    assert [d.packet["tun_ipv4_dst"] for d in to_eid(after, "dc3").deliveries] == [DC1]


def test_a_workload_that_arrived_before_the_restart_is_not_expected_again(tmp_path):
    from unit.rest.test_rest_moves import arrive_at_dc2

    lab = announced(tmp_path)
    arrive_at_dc2(lab)
    before = tables(lab)
    after = restarted(tmp_path, before)
    assert all(planned_flows(held(after, name)) == [] for name in ("dc1", "dc2", "dc3"))
    assert [d.packet["tun_ipv4_dst"] for d in to_eid(after, "dc3").deliveries] == [DC2]


@pytest.mark.parametrize("damage", ["{not json", '{"planned_moves": 7}', '[1, 2]'])
def test_a_damaged_file_is_logged_and_no_move_is_taken_up(tmp_path, caplog, damage):
    (tmp_path / PLANNED_FILE).write_text(damage)
    assert PlannedJournal.in_data_dir(str(tmp_path)).moves == []
    assert "cannot read the planned moves" in caplog.text


def test_damaged_and_closed_entries_are_left_out_the_rest_kept(tmp_path, caplog):
    good = {"iid": 42, "eid": EID, "from_site": "dc1", "to_site": "dc2", "port": 5, "mac": "02:00:00:01:00:0a",
            "until": 2000.0}
    items = [good, {**good, "eid": "10.1.0.300"}, {**good, "port": "5"}, {**good, "iid": 1 << 24},
             {k: v for k, v in good.items() if k != "mac"}, {**good, "eid": "10.1.0.11", "until": 999.0}]
    (tmp_path / PLANNED_FILE).write_text(json.dumps({"planned_moves": items}))
    journal = PlannedJournal(str(tmp_path / PLANNED_FILE), clock=lambda: 1000.0)
    assert journal.moves == [good]
    assert caplog.text.count("is damaged") == 4


def test_a_journal_that_cannot_be_written_leaves_the_move_going(tmp_path, caplog):
    journal = PlannedJournal(str(tmp_path / "file-not-dir" / PLANNED_FILE))
    (tmp_path / "file-not-dir").write_text("in the way")
    journal.add(42, EID, "dc1", "dc2", 5, None, 10.0)
    assert journal.moves and "cannot keep the planned moves" in caplog.text
