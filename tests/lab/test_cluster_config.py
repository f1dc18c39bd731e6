"""What the lab writes for the nodes of a clustered mapping system (pure: nothing is started)."""

from pathlib import Path

import pytest

from lisp_ryu import config
from lisp_ryu.lab import build, cluster, controller_config, topology_load

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "topologies" / "three-dc-cluster.yaml"


def planned():
    t = topology_load.load(CLUSTER)
    return build.plan(t, pfx="lx-", directory=Path("/nonexistent"), topology_path=str(CLUSTER))


def test_each_node_points_at_its_own_etcd_member_first(monkeypatch):
    monkeypatch.setattr(cluster, "etcd_available", lambda: True)
    state = planned()
    urls = {n["name"]: cluster.store_url(state, n["name"]) for n in state.map_server_nodes}
    assert urls["ms2"] == "etcd://198.18.11.2:2379,198.18.10.2:2379,198.18.12.2:2379"
    for node in state.map_server_nodes:
        section = controller_config.map_server_section(state, node, store=urls[node["name"]])
        ms = config.parse({"map_server": section}).map_server
        assert ms.store == urls[node["name"]] and ms.data_dir is None  # etcd holds the state
        assert str(ms.listen[0]) == node["address"]
        assert sorted(e.split(":")[0] for e in ms.store[len("etcd://"):].split(",")) == sorted(
            n["address"] for n in state.map_server_nodes)


def test_without_etcd_each_node_keeps_a_file_journal(monkeypatch):
    monkeypatch.setattr(cluster, "etcd_available", lambda: False)
    state = planned()
    node = state.map_server_nodes[0]
    assert cluster.store_url(state, node["name"]) is None
    ms = config.parse({"map_server": controller_config.map_server_section(state, node)}).map_server
    assert ms.store is None and ms.data_dir.endswith("/ms1/map-server-data")


def test_xtrs_register_with_every_node_and_resolve_in_order():
    cfg = config.parse(controller_config.build(planned()))
    assert cfg.map_server is None  # no embedded Map-Server
    for xtr in cfg.xtrs:
        assert [str(m.address) for m in xtr.map_servers] == ["198.18.10.2", "198.18.11.2", "198.18.12.2"]
        assert [str(a) for a in xtr.map_resolvers] == ["198.18.10.2", "198.18.11.2", "198.18.12.2"]


def test_an_unknown_node_is_named_with_the_nodes_there_are():
    with pytest.raises(cluster.LabError, match="no Map-Server node 'ms9' .*ms1, ms2, ms3"):
        cluster._node(planned(), "ms9")
