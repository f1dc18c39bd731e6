"""A clustered mapping system in the lab (issue 17): one standalone Map-Server per node namespace.

With `map_server.nodes` in the topology, `lab up` starts in each node's
namespace a `lisp-ryu mapserver` on the node's underlay address (its own
config file and data_dir under the lab dir, its log beside them, its
introspection HTTP on the namespace's own loopback, 127.0.0.1:4380), and an
etcd member on the same address (client 2379, peer 2380; the members form
one etcd cluster, which the store integration will point the Map-Servers at;
skipped when no `etcd` binary is installed).  The controller runs no
embedded Map-Server: every xTR registers with every node and resolves
through them in order (lisp_ryu/lab/controller_config.py).

`lisp-ryu lab kill NODE [--etcd]` sends SIGKILL to a node's Map-Server (or
etcd member); `lab revive NODE [--etcd]` starts it again with the same
config and data.  Child processes get this process's environment, so
PYTHONPATH picks the same lisp_ryu.  `lab down` ends them with everything
else in the lab's namespaces.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from lisp_ryu.lab import controller_config
from lisp_ryu.lab.processes import process_alive, read_pid, signal_pid
from lisp_ryu.lab.state import LabError, LabState, read_state

log = logging.getLogger("lisp_ryu.lab")

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
HTTP = "127.0.0.1:4380"  # in the node's namespace: its own loopback
READY = "lisp-ryu mapserver: udp"  # what the Map-Server prints once it serves
_log_offset: dict[tuple[str, str], int] = {}  # where each process's log stood when we started it


@dataclass(frozen=True)
class NodeStatus:
    name: str
    address: str
    namespace: str
    map_server_pid: int | None  # None: not running
    etcd_pid: int | None  # None: not running (or no etcd installed)


def _node(state: LabState, name: str) -> dict:
    for node in state.map_server_nodes:
        if node["name"] == name:
            return node
    names = ", ".join(n["name"] for n in state.map_server_nodes) or "none: this lab has no clustered mapping system"
    raise LabError(f"no Map-Server node {name!r} (nodes: {names})")


def node_dir(state: LabState, name: str) -> Path:
    return Path(state.lab_dir) / name


def _pid_file(state: LabState, name: str, what: str) -> Path:
    return node_dir(state, name) / f"{what}.pid"


def running(state: LabState, name: str, what: str) -> int | None:
    pid = read_pid(_pid_file(state, name, what))
    return pid if pid is not None and process_alive(pid) else None


def etcd_available() -> bool:
    return os.access(ETCD, os.X_OK)


def etcd_endpoints(state: LabState) -> list[str]:
    """Where the store integration finds the lab's etcd cluster: ADDR:2379 of every node."""
    return [f"{n['address']}:{ETCD_CLIENT_PORT}" for n in state.map_server_nodes]


def start_all(state: LabState) -> None:
    """Start every node's etcd member, then every Map-Server, and wait until each listens."""
    if etcd_available():
        for node in state.map_server_nodes:
            start(state, node["name"], etcd=True)
    for node in state.map_server_nodes:
        start(state, node["name"])
    for node in state.map_server_nodes:
        wait_listening(state, node["name"])


def start(state: LabState, name: str, *, etcd: bool = False) -> int:
    """Start a node's Map-Server (or etcd member); returns its pid."""
    node = _node(state, name)
    what = "etcd" if etcd else "mapserver"
    pid = running(state, name, what)
    if pid is not None:
        raise LabError(f"{name}: its {what} is already running (pid {pid})")
    directory = node_dir(state, name)
    directory.mkdir(parents=True, exist_ok=True)
    namespace = state.namespace_of(name)
    env = dict(os.environ)
    if etcd:
        if not etcd_available():
            raise LabError(f"no etcd binary at {ETCD} (Debian etcd-server)")
        argv = _etcd_argv(state, node, existing=(directory / "etcd-data").exists())
        env = {k: v for k, v in env.items() if not k.startswith("ETCD")}  # etcd reads ETCD_* as flags
    else:
        config = directory / "mapserver.yaml"
        config.write_text("# written by lisp-ryu lab for a clustered mapping system node\n"
                          + yaml.safe_dump({"map_server": controller_config.map_server_section(state, node)},
                                           sort_keys=False))
        argv = [sys.executable, "-m", "lisp_ryu", "mapserver", "--config", str(config), "--http", HTTP]
    logfile = directory / f"{what}.log"
    _log_offset[name, what] = logfile.stat().st_size if logfile.exists() else 0
    with open(logfile, "ab") as out:
        # `ip netns exec` execs the command: the pid is the Map-Server's (or etcd's) own.
        proc = subprocess.Popen(["ip", "netns", "exec", namespace, *argv], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    _pid_file(state, name, what).write_text(f"{proc.pid}\n")
    log.info("%s: %s started (pid %d) in %s", name, what, proc.pid, namespace)
    return proc.pid


def _etcd_argv(state: LabState, node: dict, existing: bool) -> list[str]:
    address = node["address"]
    cluster = ",".join(f"{n['name']}=http://{n['address']}:{ETCD_PEER_PORT}" for n in state.map_server_nodes)
    return [ETCD, "--name", node["name"], "--data-dir", str(node_dir(state, node["name"]) / "etcd-data"),
            "--listen-client-urls", f"http://{address}:{ETCD_CLIENT_PORT},http://127.0.0.1:{ETCD_CLIENT_PORT}",
            "--advertise-client-urls", f"http://{address}:{ETCD_CLIENT_PORT}",
            "--listen-peer-urls", f"http://{address}:{ETCD_PEER_PORT}",
            "--initial-advertise-peer-urls", f"http://{address}:{ETCD_PEER_PORT}",
            "--initial-cluster", cluster, "--initial-cluster-token", f"lisp-ryu-lab-{state.name}",
            "--initial-cluster-state", "existing" if existing else "new",
            "--heartbeat-interval", "50", "--election-timeout", "500", "--logger", "zap", "--log-level", "warn"]


def wait_listening(state: LabState, name: str, timeout: float = 15.0) -> None:
    """Until the node's Map-Server logs that it serves (or exits: then its log says why)."""
    logfile = node_dir(state, name) / "mapserver.log"
    deadline = time.monotonic() + timeout
    start_size = _log_offset.get((name, "mapserver"), 0)
    while time.monotonic() < deadline:
        text = logfile.read_text(errors="replace") if logfile.exists() else ""
        if READY in text[start_size:]:
            return
        if running(state, name, "mapserver") is None:
            raise LabError(f"{name}: the Map-Server exited; {logfile} ends with:\n" + "\n".join(text.splitlines()[-10:]))
        time.sleep(0.1)
    raise LabError(f"{name}: the Map-Server did not start listening within {timeout:.0f} s (see {logfile})")


def kill(name: str, *, etcd: bool = False) -> int:
    """SIGKILL a node's Map-Server (or etcd member), as a crash would; returns the pid killed."""
    state = _state()
    _node(state, name)
    what = "etcd" if etcd else "mapserver"
    pid = running(state, name, what)
    if pid is None:
        raise LabError(f"{name}: its {what} is not running")
    signal_pid(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    log.info("%s: %s (pid %d) killed", name, what, pid)
    return pid


def revive(name: str, *, etcd: bool = False) -> int:
    """Start a killed node's Map-Server (or etcd member) again, on its own config and data."""
    state = _state()
    pid = start(state, name, etcd=etcd)
    if not etcd:
        wait_listening(state, name)
    return pid


def status(state: LabState) -> list[NodeStatus]:
    return [NodeStatus(n["name"], n["address"], state.namespace_of(n["name"]), running(state, n["name"], "mapserver"),
                       running(state, n["name"], "etcd")) for n in state.map_server_nodes]


def _state() -> LabState:
    state = read_state()
    if state is None:
        raise LabError("no lab is up")
    return state
