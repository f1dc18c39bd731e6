"""Open Overlay Router 1.3.0 as a third-party ETR registering to two of our clustered Map-Servers (issue 17).

Two `lisp-ryu mapserver --store etcd://...` processes share a real 3-member etcd cluster (on
loopback) and listen in one namespace (`lo-lrcl-*`); OOR runs as an xTR in another
(`lo-oorc-*`) with both as its map-servers (HMAC-SHA-1, proxy-reply) and both as its
map-resolvers.  Both nodes must accept its registration and confirm it with a Map-Notify OOR
verifies, and both must answer a Map-Request for its EIDs with its RLOC; with one node
killed -9, the other still does.  OOR and the namespaces come from tests/interop/test_oor.py.
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lisp_ryu.lab import cluster_load
from support.etcd_cluster import EtcdCluster, available
from test_oor import (OUR_MS_CONFIG, READY, START_TIMEOUT, Link, Oor, _assert_torn_down, _namespaces, _unavailable,
                      oor_xtr_config)

pytestmark = [pytest.mark.interop, pytest.mark.slow, pytest.mark.etcd]

NODES = {"msa": "198.18.201.10", "msb": "198.18.201.11"}
ITR = "198.18.201.12"
OOR_RLOC = "198.18.201.2"
CONFIG = OUR_MS_CONFIG  # the same site (key, 10.81.0.0/16) as the single-node interop test


@pytest.fixture(autouse=True)
def _require_oor():
    reason = _unavailable()
    if reason:
        if os.environ.get("LISP_RYU_REQUIRE_INTEROP") == "1":
            pytest.fail(f"LISP_RYU_REQUIRE_INTEROP=1 but {reason}")
        pytest.skip(reason)


class ClusterNode:
    """`lisp-ryu mapserver --store etcd://... --node-id NAME --netns NS`, LISP on `address`:4342."""

    def __init__(self, name: str, address: str, netns: str, endpoints: list[str], workdir: Path) -> None:
        workdir.mkdir(parents=True)
        (workdir / "mapserver.yaml").write_text(CONFIG)
        self.name, self.address = name, address
        self.log_path = workdir / "mapserver.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lisp_ryu", "mapserver", "--config", str(workdir / "mapserver.yaml"),
                 "--listen", f"{address}:4342", "--netns", netns, "--http", "127.0.0.1:0",
                 "--store", "etcd://" + ",".join(endpoints), "--node-id", name],
                stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        match = READY.search(line)
        if not match:
            self.stop()
            raise RuntimeError(f"{name} did not start: {line!r}\n{self.log_path.read_text()}")
        self.url = match.group(1)

    def get(self, resource: str) -> dict:
        with urllib.request.urlopen(f"{self.url}/lisp/v1/{resource}", timeout=10) as response:
            return json.load(response)

    def registered(self, prefix: str, rloc: str) -> dict | None:
        for entry in self.get("registrations").get("registrations", []):
            if entry["prefix"] == prefix and rloc in [loc["address"] for loc in entry["mapping"]["locators"]]:
                return entry
        return None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture
def cluster_and_oor(tmp_path):
    if not available():
        pytest.skip("no etcd binary (Debian etcd-server)")
    before = _namespaces()
    etcd = EtcdCluster(3)
    link = Link("lo-lrcl", "lo-oorc", "lo-c0", "lo-o0", [*NODES.values(), ITR], [OOR_RLOC])
    nodes: list[ClusterNode] = []
    oor = None
    try:
        etcd.start()
        link.__enter__()
        for name, address in NODES.items():
            nodes.append(ClusterNode(name, address, link.left, etcd.endpoints, tmp_path / name))
        oor = Oor(link.right, tmp_path / "oor", oor_xtr_config([NODES["msa"], NODES["msb"]], proxy=True, iface="lo-o0"))
        oor.start("Starting xTR")
        yield link, nodes, oor
    finally:
        if oor is not None:
            oor.stop()
        for node in nodes:
            node.stop()
        link.__exit__()
        etcd.stop()
        _assert_torn_down(before, link)


def test_oor_registers_with_two_clustered_map_servers_and_both_answer_for_it(cluster_and_oor):
    link, nodes, oor = cluster_and_oor
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not all(n.registered("10.81.0.0/16", OOR_RLOC) for n in nodes):
        time.sleep(0.2)
    for node in nodes:
        entry = node.registered("10.81.0.0/16", OOR_RLOC)
        assert entry is not None, (node.name, oor.log(), node.log_path.read_text()[-3000:])
        assert entry["site"] == "oor" and [e["proxy_reply"] for e in entry["etrs"]] == [True]
        counters = node.get("counters")["counters"]
        assert counters.get("accepted.map_register", 0) >= 1, (node.name, counters)  # its own SHA-1 check
        assert node.get("health")["status"] == "ok"
    # Each node's Map-Notify verified on OOR's side (it logs one confirmation per map-server).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum("confirms correct registration of 10.81.0.0/16" in line
                                              for line in oor.lines) < 2:
        time.sleep(0.2)
    confirmations = [line for line in oor.lines if "confirms correct registration of 10.81.0.0/16" in line]
    assert len(confirmations) >= 2, oor.log()

    eids = {(0, ipaddress.ip_address(e)): ipaddress.ip_address(OOR_RLOC) for e in ("10.81.0.5", "10.81.200.1")}
    for node in nodes:
        assert cluster_load.ask(link.left, ITR, node.address, eids) == {}, node.name

    # One node dies without a word: the other still answers for OOR.
    nodes[0].stop(signal.SIGKILL)
    assert cluster_load.ask(link.left, ITR, nodes[1].address, eids) == {}
    assert nodes[1].registered("10.81.0.0/16", OOR_RLOC) is not None
