"""Evacuation: every workload of a site moves to another at once (issue 20).

The pure parts (the generated topology, the per-workload outage, the stale-flow
check on real dump lines) run anywhere; the end-to-end test (marked lab)
brings up the generated topology with 24 workloads at dc1, drives it with the
real controller, evacuates dc1 to dc2 under a prober at dc3 that pings every
workload every 10 ms, and requires every workload to answer again and no
stale flow anywhere afterwards.  No timing is asserted.  Lab: prefix ev-,
management 198.19.221.0/24, controller port 6661.
"""

from __future__ import annotations

import pytest
import yaml

from lisp_ryu.lab import topology as topo
from lisp_ryu.lab import topology_load
from lisp_ryu.lab.scenarios import evacuation, stale
from lisp_ryu.lab.scenarios.probe import Probe
from lisp_ryu.lab.scenarios.sweep import outage, percentile

from conftest import LabEnv, controller_lab, lab_unavailable

WORKLOADS = 24


# --------------------------------------------------------------------------
# Pure parts


def test_generated_topology_loads_with_host_ports_past_the_tunnel_port(tmp_path):
    path = evacuation.write_topology(150, tmp_path / "t.yaml")
    t = topology_load.load(path)
    ports = [h.ofport for h in t.hosts_of("dc1")]
    assert len(ports) == 151 and len(set(ports)) == 151  # the workloads and the bystander
    assert topo.TUNNEL_OFPORT not in ports and topo.NATIVE_OFPORT not in ports
    assert max(ports) < topo.HOST_OFPORT_LIMIT
    # Every workload has a port reserved at the destination, none of them the tunnel's.
    reserved = t.reserved_ports("dc2")
    assert all(reserved[h.name] not in (topo.TUNNEL_OFPORT, topo.NATIVE_OFPORT) for h in t.hosts_of("dc1"))
    assert len(set(reserved.values())) == len(reserved) == len(t.hosts)
    assert {h.name: h.site for h in t.hosts if not h.name.startswith("w")} == {"b1": "dc1", "r2": "dc2", "p3": "dc3"}


def test_host_ports_step_over_the_tunnel_and_native_ports():
    assert [topo.host_ofport(n) for n in (1, 99, 100, 101)] == [1, 99, 102, 103]
    with pytest.raises(ValueError):
        topo.host_ofport(topo.MAX_HOSTS_PER_SITE + 1)


def test_too_many_hosts_at_one_site_is_a_clear_error(tmp_path):
    doc = evacuation.topology(topo.MAX_HOSTS_PER_SITE + 1)
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(topo.TopologyError, match="more than"):
        topology_load.load(tmp_path / "t.yaml")


def probes(times, lost=()):
    return tuple(Probe(i, t, None if i in lost else t + 0.001) for i, t in enumerate(times))


def test_outage_is_the_longest_reply_gap_around_the_move():
    sent = [i * 0.01 for i in range(300)]  # 3 s at 10 ms
    o = outage("w1", probes(sent, lost=set(range(100, 130))), started=1.0, interval=0.01)
    assert o.recovered and o.lost == 30
    assert o.gap_ms == pytest.approx(310.0, abs=0.5)  # last reply 0.991, next 1.301


def test_a_workload_that_never_answers_again_counts_its_whole_window():
    sent = [i * 0.01 for i in range(300)]
    o = outage("w1", probes(sent, lost=set(range(100, 300))), started=1.0, interval=0.01)
    assert not o.recovered and o.gap_ms is None
    assert o.outage_ms == pytest.approx(1990.0)


def test_answers_that_stop_again_are_not_a_recovery():
    sent = [i * 0.01 for i in range(300)]
    o = outage("w1", probes(sent, lost=set(range(100, 120)) | set(range(150, 300))), started=1.0, interval=0.01)
    assert not o.recovered


def test_percentile_is_nearest_rank():
    values = list(range(1, 201))
    assert percentile(values, 50) == 100 and percentile(values, 99) == 198 and percentile(values, 100) == 200
    assert percentile([], 99) is None


# Real lines of a 200-workload evacuation dc1 -> dc2 (dc3 pings), one host each.
DC1 = """\
 cookie=0x500002a56a730bb, duration=39.171s, table=2, n_packets=0, n_bytes=0, priority=19999,ip,tun_id=0x2a,nw_dst=10.1.0.10 actions=set_field:0x2a->tun_id,set_field:198.18.1.2->tun_src,set_field:198.18.2.2->tun_dst,output:100
 cookie=0x500002a56a730bb, duration=39.171s, table=2, n_packets=0, n_bytes=0, priority=20000,ip,tun_id=0x2a,in_port=100,nw_dst=10.1.0.10 actions=set_field:0x2a->tun_id,set_field:198.18.1.2->tun_src,set_field:198.18.2.2->tun_dst,IN_PORT
"""
DC2 = """\
 cookie=0x200002a56a730bb, duration=49.641s, table=0, n_packets=1418, n_bytes=138964, priority=200,ip,in_port=2,nw_src=10.1.0.10 actions=write_metadata:0x2a/0xffffff,goto_table:1
 cookie=0x200002a56a730bb, duration=49.642s, table=1, n_packets=0, n_bytes=0, priority=20000,ip,metadata=0x2a/0xffffff,nw_dst=10.1.0.10 actions=set_field:02:4c:67:01:00:01->eth_src,set_field:02:4c:68:01:00:0a->eth_dst,output:2
 cookie=0x200002a56a730bb, duration=49.646s, table=2, n_packets=1418, n_bytes=119112, priority=20000,ip,tun_id=0x2a,nw_dst=10.1.0.10 actions=set_field:02:4c:67:01:00:01->eth_src,set_field:02:4c:68:01:00:0a->eth_dst,output:2
"""
DC3 = """\
 cookie=0x400002aae13fd60, duration=41.999s, table=1, n_packets=2533, n_bytes=248234, priority=5160,ip,metadata=0x2a/0xffffff,nw_dst=10.1.0.10 actions=set_field:0x2a->tun_id,set_field:198.18.3.2->tun_src,set_field:198.18.2.2->tun_dst,output:100
"""
W1 = stale.Placement(name="w1", iid=42, addresses=("10.1.0.10",), mac="02:4c:68:01:00:0a", site="dc2", port=2)


def site_tables(dc1=DC1, dc2=DC2, dc3=DC3, groups3=""):
    return [stale.SiteTables("dc1", frozenset({"198.18.1.2"}), frozenset({100}), dc1, ""),
            stale.SiteTables("dc2", frozenset({"198.18.2.2"}), frozenset({100}), dc2, ""),
            stale.SiteTables("dc3", frozenset({"198.18.3.2"}), frozenset({100, 1000}), dc3, groups3)]


def test_a_clean_evacuation_has_no_stale_flow():
    assert stale.find(site_tables(), [W1]) == []


def test_old_site_delivery_and_old_classification_are_stale():
    old = (" cookie=0x200002a56a730bb, table=0, priority=200,ip,in_port=1,nw_src=10.1.0.10 "
           "actions=write_metadata:0x2a/0xffffff,goto_table:1\n"
           " cookie=0x200002a56a730bb, table=2, priority=20000,ip,tun_id=0x2a,nw_dst=10.1.0.10 "
           "actions=set_field:02:4c:67:01:00:01->eth_src,set_field:02:4c:68:01:00:0a->eth_dst,output:1\n")
    problems = stale.find(site_tables(dc1=DC1 + old), [W1])
    assert len(problems) == 2
    assert any("delivers w1 to local port 1" in p for p in problems)
    assert any("takes w1 for a local host on port 1" in p for p in problems)


def test_a_mapping_or_a_group_bucket_pointing_at_the_old_rloc_is_stale():
    old = DC3.replace("198.18.2.2->tun_dst", "198.18.1.2->tun_dst")
    assert "tunnels w1 to 198.18.1.2" in stale.find(site_tables(dc3=old), [W1])[0]
    via_group = (" cookie=0x400002aae13fd60, table=1, priority=5160,ip,metadata=0x2a/0xffffff,nw_dst=10.1.0.10 "
                 "actions=group:7\n")
    group = ("OFPST_GROUP_DESC reply (OF1.3) (xid=0x2):\n group_id=7,type=ff,bucket=watch_port:1000,"
             "actions=set_field:0x2a->tun_id,set_field:198.18.1.2->tun_dst,output:1000,bucket=watch_port:100,"
             "actions=set_field:0x2a->tun_id,set_field:198.18.2.2->tun_dst,output:100\n")
    (problem,) = stale.find(site_tables(dc3=via_group, groups3=group), [W1])
    assert "tunnels w1 to 198.18.1.2" in problem


def test_other_tenants_flows_for_the_same_address_are_not_the_hosts():
    other = DC1.replace("tun_id=0x2a", "tun_id=0x7").replace("198.18.2.2->tun_dst", "198.18.1.9->tun_dst")
    assert stale.find(site_tables(dc1=other), [W1]) == []


def test_a_host_of_another_tenant_at_the_same_address_is_not_taken_for_the_mover():
    """Tenants share addresses: the tenant-7 host at dc1 port 1 classified there is not w1 (tenant 42)."""
    other = (" cookie=0x200000756a730bb, table=0, priority=200,ip,in_port=1,nw_src=10.1.0.10 "
             "actions=write_metadata:0x7/0xffffff,goto_table:1\n")
    assert stale.find(site_tables(dc1=DC1 + other), [W1]) == []
    ours = other.replace("0x200000756a730bb", "0x200002a56a730bb").replace("metadata:0x7/", "metadata:0x2a/")
    assert any("takes w1 for a local host on port 1" in p for p in stale.find(site_tables(dc1=DC1 + ours), [W1]))


def test_missing_delivery_at_the_new_site_and_leftover_planned_moves_are_reported():
    problems = stale.find(site_tables(dc2=""), [W1])
    assert problems == ["dc2: no flow delivers w1 (10.1.0.10) to its port 2"]
    planned = " cookie=0x600002a56a730bb, table=2, priority=30000,ip,tun_id=0x2a,nw_dst=10.1.0.99 actions=CONTROLLER:65535\n"
    assert any("planned-move flow" in p for p in stale.find(site_tables(dc2=DC2 + planned), [W1]))


# --------------------------------------------------------------------------
# End to end


@pytest.fixture(scope="module")
def lab(tmp_path_factory, module_monkeypatch):
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("evacuation")
    env = LabEnv(module_monkeypatch, tmp / "run", "ev-")
    path = evacuation.write_topology(WORKLOADS, tmp / "evacuation.yaml", management_subnet="198.19.221.0/24",
                                     port=6661)
    with controller_lab(env, path) as state:
        yield state


@pytest.mark.lab
def test_every_workload_answers_again_after_an_evacuation_and_no_flow_is_stale(lab):
    report = evacuation.run(single_moves=0, settle=10.0)
    text = evacuation.format_report(report)
    print(text)
    assert len(report.outages) == WORKLOADS, text
    # The bystander stayed at dc1 and was probed throughout: it answers, and the report says what it lost.
    assert report.bystander is not None and report.bystander.host == "b1" and report.bystander.recovered, text
    assert "b1, staying at dc1" in text
    assert [o.host for o in report.outages if not o.recovered] == [], text
    assert report.stale == (), text
    # Every workload is where the lab says, and the lab says dc2.
    from lisp_ryu.lab.state import read_state

    assert {h.site for h in read_state().hosts if h.name.startswith("w")} == {"dc2"}
    assert read_state().host("b1").site == "dc1"
    # Nothing of the old attachments is left: no old pair at dc1 (deleted together), no interface
    # in a workload but its eth0 (the old one and its limbo bridge are gone).
    from lisp_ryu.lab import processes

    state = read_state()
    at_dc1 = processes.run_in(state.site("dc1").namespace, ["ip", "-o", "link", "show"]).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in at_dc1.splitlines()}
    assert not {h.name for h in state.hosts if h.name.startswith("w")} & names, names
    for h in state.hosts:
        links = processes.run_in(h.namespace, ["ip", "-o", "link", "show"]).stdout
        assert sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines()) == ["eth0", "lo"], h.name


@pytest.mark.lab
def test_a_planned_evacuation_back_loses_no_workload_and_leaves_no_planned_move_flow(lab):
    """The workloads go back dc2 -> dc1, each move announced first (POST /lisp/v1/moves), as an
    orchestrator draining a rack would: announced once the new ports are plugged in, so no
    window (10 s) runs out while 24 (or 200) interfaces are prepared."""
    report = evacuation.run(single_moves=0, settle=10.0, planned=True, from_site="dc2", to_site="dc1")
    text = evacuation.format_report(report)
    print(text)
    assert len(report.outages) == WORKLOADS + 1, text  # r2, dc2's resident host, goes too
    assert [o.host for o in report.outages if not o.recovered] == [], text
    assert report.stale == (), text
