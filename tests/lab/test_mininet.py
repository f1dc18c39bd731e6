"""The same lab under Mininet, driven through Mininet's API (no CLI)."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

from lisp_ryu.lab import ovs, processes, running

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("lisp_topo", ROOT / "mininet" / "lisp_topo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("mnexec") is None, reason="mnexec (Debian package mininet) is not installed")
def test_mininet_hosts_ping_across_sites_and_stop_cleanly():
    lisp_topo = load_script()
    net, state = lisp_topo.build(ROOT / "topologies" / "two-dc.yaml")
    pids: list[int] = []
    try:
        pids = [processes.read_pid(Path(s.run_dir) / f"{d}.pid") for s in state.sites for d in ovs.DAEMONS]
        assert all(pids) and all(processes.process_alive(p) for p in pids)
        h1, h2, h3, h4 = (net[n] for n in ("h1", "h2", "h3", "h4"))
        assert h3.IP() == "10.2.0.10"
        # Mininet's own ping (what `h1 ping h3` / `pingall` use): across and within sites.
        assert net.ping([h1, h3], timeout="2") == 0
        assert net.ping([h2, h4, h1], timeout="2") == 0
        # ... and it went through the LISP-GPE encap flow, not some other path.
        out = running.ofctl("dc1", "dump-flows", "in_port=1,ip,nw_dst=10.2.0.0/16", state=state)
        assert "set_field:198.18.2.2->tun_dst" in out
        assert int(re.search(r"n_packets=(\d+)", out).group(1)) >= 1
    finally:
        lisp_topo.stop(net, state)
    assert not any(processes.process_alive(p) for p in pids if p)
    assert not Path(state.lab_dir).exists()
