"""The controller configuration the lab writes for topologies/internet.yaml (pure: nothing is built)."""

from pathlib import Path

from lisp_ryu import config
from lisp_ryu.lab import build, controller_config, topology as topo
from lisp_ryu.lab import topology_load
from lisp_ryu.xtr.state import stable_id

ROOT = Path(__file__).resolve().parents[2]
INTERNET = ROOT / "topologies" / "internet.yaml"


def planned():
    t = topology_load.load(INTERNET)
    return build.plan(t, pfx="lx-", directory=Path("/nonexistent"), topology_path=str(INTERNET))


def test_pxtr_gets_its_native_port_and_proxy_section_and_every_site_the_petr():
    doc = controller_config.build(planned())
    cfg = config.parse(doc)
    xtrs = {x.name: x for x in cfg.xtrs}
    px = xtrs["px"]
    assert px.native_port == topo.NATIVE_OFPORT and px.eid_prefixes == () and px.hosts == ()
    assert px.proxy.iid == 42 and [str(p) for p in px.proxy.prefixes] == ["10.1.0.0/16", "10.2.0.0/16"]
    assert str(px.proxy.address) == "198.18.19.2" and px.proxy.next_hop_mac == "02:4c:6c:12:13:01"
    assert px.petr is None
    for name in ("dc1", "dc2"):
        assert str(xtrs[name].petr) == "198.18.9.2" and xtrs[name].proxy is None


def test_map_server_binds_the_pxtr_xtr_id_and_keeps_native_forward_for_the_rest():
    cfg = config.parse(controller_config.build(planned())).map_server
    sites = {s.name: s for s in cfg.sites}
    assert sites["px"].eid_prefixes == () and sites["px"].xtr_ids == (stable_id("xtr:px", 128),)
    assert sites["px"].key == "lisp-lab-key-px"
    assert cfg.negative_action == "native-forward"  # what 203.0.113.10 gets: the sites' PETR takes it
