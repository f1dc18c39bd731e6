"""A clustered mapping system in the lab (issue 17): one standalone Map-Server per node namespace.

With `map_server.nodes` in the topology, `lab up` starts in each node's
namespace an etcd member on the node's underlay address (client 2379, peer
2380; the members form one etcd cluster), waits until that cluster has a
leader, then starts a `lisp-ryu mapserver` per node on the same address with
`--store etcd://<its own member>,<the others> --node-id NAME`: one
replicated mapping system, every node active (its own config file under the
lab dir, its log beside it, its introspection HTTP on the namespace's own
loopback, 127.0.0.1:4380).  Its own member comes first so that reads and
the watch stay inside the namespace while it lives.  Without an `etcd`
binary the nodes fall back to file journals (independent copies every ETR
registers to), said in the log and in `lab status`.  The controller runs no
embedded Map-Server: every xTR registers with every node and resolves
through them in order (lisp_ryu/lab/controller_config.py).

`lisp-ryu lab kill NODE [--etcd]` sends SIGKILL to a node's Map-Server (or
etcd member); `lab revive NODE [--etcd]` starts it again with the same
config and data.  Child processes get this process's environment, so
PYTHONPATH picks the same lisp_ryu.  `lab down` ends them with everything
else in the lab's namespaces.
"""

from __future__ import annotations

import http.client
import json
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

from lisp_ryu.glue.netns import run_in_netns
from lisp_ryu.lab import controller_config
from lisp_ryu.lab.processes import process_alive, read_pid, signal_pid
from lisp_ryu.lab.state import LabError, LabState, read_state

log = logging.getLogger("lisp_ryu.lab")

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
HTTP_PORT = 4380
HTTP = f"127.0.0.1:{HTTP_PORT}"  # in the node's namespace: its own loopback
READY = "lisp-ryu mapserver: udp"  # what the Map-Server prints once it serves
_log_offset: dict[tuple[str, str], int] = {}  # where each process's log stood when we started it


@dataclass(frozen=True)
class NodeStatus:
    name: str
    address: str
    namespace: str
    map_server_pid: int | None  # None: not running
    etcd_pid: int | None  # None: not running (or no etcd installed)
    store: str  # "etcd://..." the Map-Server replicates through, or "file journal"
    #: The Map-Server's own word (its /lisp/v1/health): "ok", "degraded: etcd store (...)";
    #: "down" when it is not running, "no answer: ..." when it runs but does not answer.
    map_server_health: str = "down"
    #: The etcd member's /health: "ok", "no leader"/"unhealthy: ...", "down", or "" without etcd.
    etcd_health: str = ""

    @property
    def healthy(self) -> bool:
        return self.map_server_health == "ok" and self.etcd_health in ("ok", "")


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


def etcd_endpoints(state: LabState, first: str | None = None) -> list[str]:
    """The lab's etcd cluster: ADDR:2379 of every node, node `first`'s own member first."""
    nodes = sorted(state.map_server_nodes, key=lambda n: n["name"] != first)
    return [f"{n['address']}:{ETCD_CLIENT_PORT}" for n in nodes]


def store_url(state: LabState, name: str) -> str | None:
    """`--store` of node `name`'s Map-Server: its own member, then the others; None without etcd."""
    if not etcd_available():
        return None
    return "etcd://" + ",".join(etcd_endpoints(state, first=name))


def start_all(state: LabState, etcd_timeout: float = 20.0) -> None:
    """Start every node's etcd member, wait for the cluster to elect a leader, then every
    Map-Server on it, and wait until each serves."""
    if etcd_available():
        for node in state.map_server_nodes:
            start(state, node["name"], etcd=True)
        wait_etcd(state, timeout=etcd_timeout)
    else:
        log.warning("no etcd binary at %s (Debian etcd-server): the Map-Server nodes keep file journals, "
                    "independent copies every ETR registers to, not one replicated mapping system", ETCD)
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
        store = store_url(state, name)
        section = controller_config.map_server_section(state, node, store=store)
        config.write_text("# written by lisp-ryu lab for a clustered mapping system node\n"
                          + yaml.safe_dump({"map_server": section}, sort_keys=False))
        argv = [sys.executable, "-m", "lisp_ryu", "mapserver", "--config", str(config), "--http", HTTP]
        if store:
            argv += ["--node-id", name]
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


def _get_json(namespace: str, port: int, path: str, timeout: float = 1.0) -> tuple[int, dict]:
    """GET http://127.0.0.1:PORT/PATH inside `namespace` (a node's loopback): (status, JSON body)."""

    def fetch() -> tuple[int, dict]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            connection.close()

    return run_in_netns(namespace, fetch)


def etcd_health(state: LabState, name: str) -> str:
    """A node's etcd member: "ok" (it is in a cluster with a leader), else why not."""
    if running(state, name, "etcd") is None:
        return "down"
    try:
        _, body = _get_json(state.namespace_of(name), ETCD_CLIENT_PORT, "/health")
    except (OSError, ValueError) as exc:
        return f"no answer: {exc}"
    if str(body.get("health")) == "true":
        return "ok"
    return f"unhealthy: {body.get('reason') or 'no leader'}"


def map_server_health(state: LabState, name: str) -> str:
    """A node's Map-Server's health view: "ok", or "degraded: etcd store (...)" and the like."""
    if running(state, name, "mapserver") is None:
        return "down"
    try:
        _, body = _get_json(state.namespace_of(name), HTTP_PORT, "/lisp/v1/health")
    except (OSError, ValueError) as exc:
        return f"no answer: {exc}"
    return "ok" if body.get("status") == "ok" else str(body.get("store") or body.get("status"))


def wait_etcd(state: LabState, timeout: float = 20.0, names: list[str] | None = None) -> None:
    """Until every node's etcd member (or those of `names`) says its cluster has a leader (or one
    exited: its log says why)."""
    deadline = time.monotonic() + timeout
    waiting = {n: "not asked yet" for n in (names or [n["name"] for n in state.map_server_nodes])}
    while waiting and time.monotonic() < deadline:
        for name in list(waiting):
            if running(state, name, "etcd") is None:
                logfile = node_dir(state, name) / "etcd.log"
                text = logfile.read_text(errors="replace") if logfile.exists() else ""
                raise LabError(f"{name}: the etcd member exited; {logfile} ends with:\n"
                               + "\n".join(text.splitlines()[-10:]))
            waiting[name] = etcd_health(state, name)
            if waiting[name] == "ok":
                del waiting[name]
        if waiting:
            time.sleep(0.1)
    if waiting:
        raise LabError(f"the lab's etcd cluster has no leader after {timeout:.0f} s: "
                       + "; ".join(f"{n}: {why}" for n, why in waiting.items()))


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
    if etcd:
        wait_etcd(state, timeout=15.0, names=[name])  # back in the cluster, a leader known
    else:
        wait_listening(state, name)
    return pid


def status(state: LabState) -> list[NodeStatus]:
    out = []
    for n in state.map_server_nodes:
        name = n["name"]
        out.append(NodeStatus(name, n["address"], state.namespace_of(name), running(state, name, "mapserver"),
                              running(state, name, "etcd"), store_url(state, name) or "file journal",
                              map_server_health(state, name), etcd_health(state, name) if etcd_available() else ""))
    return out


def _state() -> LabState:
    state = read_state()
    if state is None:
        raise LabError("no lab is up")
    return state
