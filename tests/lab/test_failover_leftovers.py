"""`failover.leftovers` (and the lab's BFD mesh members) on canned dumps (the formats ovs-ofctl 3.1 and ovs-vsctl print): no lab needed."""

from __future__ import annotations

from types import SimpleNamespace

import yaml

from lisp_ryu.lab import controller as lab_controller
from lisp_ryu.lab.scenarios import failover

PORTS = """OFPST_PORT_DESC reply (OF1.3) (xid=0x2):
 1(h1): addr:02:4c:68:01:00:0a
 100(lisp0): addr:aa:bb:cc:dd:ee:ff
 1000(lf6c97f8fe): addr:aa:bb:cc:dd:ee:01
 1001(lf095a523e): addr:aa:bb:cc:dd:ee:02
 LOCAL(br-int): addr:aa:bb:cc:dd:ee:03
"""
FLOWS = """ cookie=0x1, duration=1s, table=0, n_packets=0, n_bytes=0, priority=300,in_port=1000 actions=goto_table:2
 cookie=0x4, duration=1s, table=1, n_packets=0, n_bytes=0, priority=3080,ip,metadata=0x2a/0xffffff,nw_dst=10.3.0.0/16 actions=group:7
"""
GROUPS = """OFPST_GROUP_DESC reply (OF1.3) (xid=0x2):
 group_id=7,type=ff,bucket=watch_port:1001,actions=set_field:0x2a->tun_id,set_field:198.18.4.2->tun_dst,output:100,bucket=watch_port:1000,actions=set_field:0x2a->tun_id,set_field:198.18.3.2->tun_dst,output:100,bucket=watch_port:100,actions=set_field:0x2a->tun_id,set_field:198.18.4.2->tun_dst,output:100
"""
BFD = ('lf6c97f8fe,"dst_port=4341 exts=gpe key=16777215 local_ip=198.18.1.2 packet_type=legacy_l3 remote_ip=198.18.3.2",'
       '"diagnostic=""No Diagnostic"" flap_count=1 forwarding=true remote_state=up state=up",\n'
       'lf095a523e,"dst_port=4341 exts=gpe key=16777215 local_ip=198.18.1.2 packet_type=legacy_l3 remote_ip=198.18.4.2",'
       '"diagnostic=""No Diagnostic"" flap_count=1 forwarding=true remote_state=up state=up",\n')


# Port 1 holds h1; ports 2-4 are reserved for hosts of other sites (configured host ports, nothing plugged).
RESERVED = {"h1": 1, "h3": 2, "h5": 3, "h6": 4}
# What the pipeline installs on a reserved port before a host moves in (INFRA cookies, as ovs-ofctl prints them).
DORMANT = """ cookie=0x100002add7dd9ee, duration=12.084s, table=0, n_packets=0, n_bytes=0, priority=150,ip,in_port=4,nw_src=10.1.0.0/16 actions=meter:2,CONTROLLER:65535
 cookie=0x100002a00000000, duration=12.084s, table=0, n_packets=0, n_bytes=0, priority=100,ip,in_port=4 actions=write_metadata:0x2a/0xffffff,goto_table:1
 cookie=0x10000002c4b1c2e, duration=12.084s, table=0, n_packets=0, n_bytes=0, priority=120,icmp6,in_port=3,icmp_type=135 actions=write_metadata:0x2a/0xffffff,goto_table:3
"""


def lab(monkeypatch, flows=FLOWS, groups=GROUPS, bfd=BFD):
    dumps = {"dump-ports-desc": PORTS, "dump-flows": flows, "dump-groups": groups}
    monkeypatch.setattr(failover, "ofctl", lambda site, command, *a, **k: dumps[command])
    monkeypatch.setattr(failover, "vsctl", lambda site, *a, **k: bfd)
    return SimpleNamespace(sites=[SimpleNamespace(name="dc1", host_ports={"h1": 1}, reserved_ports=RESERVED,
                                                  rlocs=[SimpleNamespace(address="198.18.1.2")])])


def two_sites(monkeypatch, dc1_flows, dc3_bfd):
    """dc1 (198.18.1.2) with a BFD port to dc3 (198.18.3.2); dc3 with `dc3_bfd` and no flows to dc1."""
    dc1_bfd = BFD.splitlines()[0] + "\n"
    dumps = {"dc1": {"dump-ports-desc": PORTS, "dump-flows": dc1_flows, "dump-groups": ""},
             "dc3": {"dump-ports-desc": PORTS, "dump-flows": "", "dump-groups": ""}}
    monkeypatch.setattr(failover, "ofctl", lambda site, command, *a, **k: dumps[site][command])
    monkeypatch.setattr(failover, "vsctl", lambda site, *a, **k: dc1_bfd if site == "dc1" else dc3_bfd)
    return SimpleNamespace(sites=[
        SimpleNamespace(name="dc1", host_ports={"h1": 1}, reserved_ports=RESERVED,
                        rlocs=[SimpleNamespace(address="198.18.1.2")]),
        SimpleNamespace(name="dc3", host_ports={}, reserved_ports={}, rlocs=[SimpleNamespace(address="198.18.3.2")])])


TO_DC3 = (" cookie=0x4, duration=1s, table=1, n_packets=0, n_bytes=0, priority=3080,ip,metadata=0x2a/0xffffff,"
          "nw_dst=10.3.0.0/16 actions=set_field:0x2a->tun_id,set_field:198.18.3.2->tun_dst,output:100\n")
BACK = ('lf11111111,"dst_port=4341 exts=gpe key=16777215 local_ip=198.18.3.2 packet_type=legacy_l3 '
        'remote_ip=198.18.1.2","diagnostic=""No Diagnostic"" flap_count=1 forwarding=true remote_state=up state=up",\n')


def test_a_port_only_the_far_end_sends_through_is_kept_and_needs_its_port_back(monkeypatch):
    # dc3 never sends to dc1: its port back is there for dc1's session, not stale.
    assert failover.leftovers(two_sites(monkeypatch, TO_DC3, BACK)) == []
    problems = failover.leftovers(two_sites(monkeypatch, TO_DC3, ""))
    assert len(problems) == 1 and "lf6c97f8fe has no port back from dc3" in problems[0]
    problems = failover.leftovers(two_sites(monkeypatch, "", BACK))  # neither end tunnels to the other
    assert sorted(p.split(":")[0] for p in problems if "no flow uses at either end" in p) == ["dc1", "dc3"]


def test_ports_between_two_sites_of_the_mesh_are_kept_unused(monkeypatch):
    """With `failover.mesh` our xTRs keep ports towards each other from the start, used or not."""
    assert failover.leftovers(two_sites(monkeypatch, "", BACK), mesh={"dc1", "dc3"}) == []
    problems = failover.leftovers(two_sites(monkeypatch, "", BACK), mesh={"dc1"})  # dc3 is not in it
    assert sorted(p.split(":")[0] for p in problems if "no flow uses at either end" in p) == ["dc1", "dc3"]


def test_mesh_sites_are_the_xtrs_with_failover_and_an_ovsdb_unless_they_opt_out(tmp_path):
    def xtr(n: int, **extra) -> dict:
        return {"name": f"dc{n}", "dpid": n, "tunnel_port": 100, "rlocs": [{"address": f"198.18.{n}.2"}],
                "eid_prefixes": [{"prefix": f"10.{n}.0.0/16"}], "map_servers": [{"address": "198.18.0.2", "key": "k"}],
                **extra}

    path = tmp_path / "controller.yaml"
    path.write_text(yaml.safe_dump({"xtrs": [
        xtr(1, ovsdb="unix:/a"),
        xtr(2, ovsdb="unix:/b", failover={"mesh": False}),
        xtr(3, ovsdb="unix:/c", failover={"enabled": False}),
        xtr(4),
        xtr(5, ovsdb="unix:/e", failover={"grace": 2})]}))
    assert lab_controller.mesh_sites(path) == {"dc1", "dc5"}
    assert lab_controller.mesh_sites(tmp_path / "absent.yaml") == set()


def test_a_clean_site_has_no_leftovers(monkeypatch):
    assert failover.leftovers(lab(monkeypatch)) == []


def test_dangling_ports_and_groups_and_orphans_are_named(monkeypatch):
    flows = FLOWS.replace("group:7", "group:8") + FLOWS.splitlines()[0].replace("1000", "1005") + "\n"
    problems = failover.leftovers(lab(monkeypatch, flows=flows))
    assert any("port 1005 does not exist" in p for p in problems)
    assert any("group 8 is used but missing" in p for p in problems)
    assert any("group 7 is used by nothing" in p for p in problems)


def test_a_bfd_port_nothing_uses_or_that_is_down_is_named(monkeypatch):
    bfd = BFD.replace("198.18.4.2\"", "198.18.9.9\"").replace("remote_state=up state=up", "remote_state=down state=down", 1)
    problems = failover.leftovers(lab(monkeypatch, bfd=bfd))
    assert any("lf095a523e leads to an RLOC no flow uses" in p for p in problems)
    assert any("lf6c97f8fe is not up" in p for p in problems)


def test_flows_waiting_on_a_configured_but_unplugged_host_port_are_not_leftovers(monkeypatch):
    assert failover.leftovers(lab(monkeypatch, flows=FLOWS + DORMANT)) == []


def test_real_stale_flows_on_missing_ports_are_still_named(monkeypatch):
    stale = (
        # a host's own flow (LOCAL_HOST) left on a reserved port it no longer has
        " cookie=0x200002a12345678, duration=1s, table=0, n_packets=0, n_bytes=0, "
        "priority=200,ip,in_port=4,nw_src=10.1.0.10 actions=goto_table:1\n"
        # delivery to a reserved port nothing is plugged into
        " cookie=0x100002a00000001, duration=1s, table=1, n_packets=0, n_bytes=0, "
        "priority=3000,ip,metadata=0x2a/0xffffff,nw_dst=10.1.0.11 actions=output:3\n"
        # the pipeline's flow on a missing port the configuration does not name
        " cookie=0x100002add7dd9ee, duration=1s, table=0, n_packets=0, n_bytes=0, "
        "priority=150,ip,in_port=9,nw_src=10.1.0.0/16 actions=meter:2,CONTROLLER:65535\n"
    )
    problems = failover.leftovers(lab(monkeypatch, flows=FLOWS + DORMANT + stale))
    assert len(problems) == 3, problems
    assert any("port 4 does not exist" in p and "0x200002a12345678" in p for p in problems)
    assert any("port 3 does not exist" in p and "output:3" in p for p in problems)
    assert any("port 9 does not exist" in p for p in problems)
