"""Static flows from a topology (pure), checked by OVS's own flow parser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lisp_ryu.lab import static_flows, topology_load

ROOT = Path(__file__).resolve().parents[2]
TWO_DC = topology_load.load(ROOT / "topologies" / "two-dc.yaml")
THREE_DC = topology_load.load(ROOT / "topologies" / "three-dc.yaml")
COOKIE = f"cookie={static_flows.STATIC_COOKIE:#x}"


def flows_matching(flows: list[str], *parts: str) -> list[str]:
    return [f for f in flows if all(p in f for p in parts)]


def test_encap_sends_remote_prefixes_to_the_remote_rloc_with_the_iid():
    flows = static_flows.site_flows(TWO_DC, "dc1")
    (encap,) = flows_matching(flows, "in_port=1,ip,nw_dst=10.2.0.0/16")
    assert "priority=116" in encap  # 100 + prefix length: longer prefixes win
    assert encap.endswith("actions=set_field:42->tun_id,set_field:198.18.2.2->tun_dst,output:100")
    assert "tun_src" not in encap  # single-homed: the tunnel port has local_ip=RLOC


def test_decap_sets_both_macs_for_each_local_host():
    flows = static_flows.site_flows(TWO_DC, "dc2")
    (decap,) = flows_matching(flows, "in_port=100,tun_id=42,ip,nw_dst=10.2.0.11")
    assert decap.endswith("actions=set_field:02:4c:67:02:00:01->eth_src,set_field:02:4c:68:02:00:0b->eth_dst,output:2")


def test_arp_responder_answers_gateway_local_hosts_and_remote_prefixes():
    flows = static_flows.site_flows(TWO_DC, "dc1")
    arp = flows_matching(flows, "in_port=1,arp,arp_op=1")
    targets = sorted(re.search(r"arp_tpa=(\S+?) ", f).group(1) for f in arp)
    assert targets == ["10.1.0.1", "10.1.0.11", "10.2.0.0/16"]
    for f in arp:
        assert f.endswith(",IN_PORT") and "set_field:2->arp_op" in f


def test_multihomed_site_picks_its_source_rloc_and_others_pick_its_first_rloc():
    dc3 = static_flows.site_flows(THREE_DC, "dc3")
    for f in flows_matching(dc3, "tun_dst"):
        assert "set_field:198.18.3.2->tun_src" in f
    dc1 = static_flows.site_flows(THREE_DC, "dc1")
    (to_dc3,) = flows_matching(dc1, "in_port=1,ip,nw_dst=10.3.0.0/16")
    assert "set_field:198.18.3.2->tun_dst" in to_dc3


def test_every_flow_is_tagged_and_unambiguous():
    for t in (TWO_DC, THREE_DC):
        for site, flows in static_flows.all_flows(t).items():
            assert all(f.startswith(COOKIE + ",table=0,priority=") for f in flows)
            matches = [f.split(" actions=")[0] for f in flows]
            assert len(matches) == len(set(matches)), f"{site}: two flows with the same match and priority"


@pytest.mark.skipif(shutil.which("ovs-ofctl") is None, reason="ovs-ofctl (openvswitch-switch) is not installed")
@pytest.mark.parametrize("t", [TWO_DC, THREE_DC], ids=["two-dc", "three-dc"])
def test_ovs_parses_every_flow_as_openflow13(t, tmp_path):
    for site, flows in static_flows.all_flows(t).items():
        path = tmp_path / f"{site}.flows"
        path.write_text("\n".join(flows) + "\n")
        out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "parse-flows", str(path)],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "chosen protocol: OXM-OpenFlow13" in out.stdout
        assert out.stdout.count("OFPT_FLOW_MOD (OF1.3)") == len(flows)
