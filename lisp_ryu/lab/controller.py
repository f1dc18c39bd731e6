"""Run the lisp-ryu controller for a lab: config from the lab state, log and PID in the lab dir.

The demo, the tests and `lisp-ryu lab controller start` use this, so the
controller a user sees in the lab is started exactly the way they would
start it by hand (`lisp-ryu controller --config FILE`), as its own process.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import json
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import replace
from typing import Callable, Iterator

import yaml

from lisp_ryu import config as config_mod
from lisp_ryu.lab import controller_config
from lisp_ryu.lab.processes import process_alive
from lisp_ryu.lab.running import ofctl, vsctl
from lisp_ryu.lab.state import LabError, LabState, lab_dir, read_state, write_state

DEFAULT_REST_HOST = "127.0.0.1"  # what `lisp-ryu controller` gives ryu-manager unless told otherwise
DEFAULT_REST_PORT = 8080  # ryu-manager's --wsapi-port default
CONFIG_FILE = "controller.yaml"
LOG_FILE = "controller.log"
PID_FILE = "controller.pid"


def config_path() -> Path:
    return lab_dir() / CONFIG_FILE


def log_path() -> Path:
    return lab_dir() / LOG_FILE


def pid_path() -> Path:
    return lab_dir() / PID_FILE


def write_config(state: LabState, doc: dict | None = None, **options) -> Path:
    """Write the controller's configuration: the lab's own (`options` go to the builder), or
    `doc`, an edited one (the benches add hosts and EIDs), checked as `lisp-ryu controller` will."""
    path = config_path()
    if doc is None:
        doc = controller_config.build(state, **options)
    else:
        config_mod.parse(doc, source="<edited lab controller config>")
    # The lab's own writes (planned moves) need a REST token: one per lab, in this root-only file.
    doc.setdefault("rest", {"token": secrets.token_hex(16)})
    path.touch(mode=0o600)
    path.write_text("# written by lisp-ryu lab from the lab state; schema: lisp_ryu/config.py\n"
                    + yaml.safe_dump(doc, sort_keys=False))
    return path


_token_read: tuple[tuple, str | None] = ((), None)  # (the configuration file's identity, its token)


def rest_token() -> str | None:
    """The REST token of the lab's controller (from the configuration the lab wrote).

    Read again only when the file changed: parsing the whole configuration took ~12 ms for
    a small lab and ~90 ms with 200 hosts, per call, which was most of each announcement of
    a planned evacuation (200 of them)."""
    global _token_read
    path = config_path()
    try:
        st = path.stat()
        identity = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
        if identity == _token_read[0]:
            return _token_read[1]
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    token = ((doc.get("rest") or {}).get("token")) if isinstance(doc, dict) else None
    _token_read = (identity, token)
    return token


def running_pid() -> int | None:
    try:
        pid = int(pid_path().read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if process_alive(pid) else None  # a crashed child is a zombie: gone, not running


def start(state: LabState, *, extra_args: tuple[str, ...] = (), doc: dict | None = None,
          **options) -> subprocess.Popen:
    """Start the controller listening where the lab's switches connect, on the lab's
    configuration or on `doc`; returns the process."""
    if running_pid() is not None:
        raise LabError(f"a controller is already running for this lab (pid {running_pid()}): "
                       "`lisp-ryu lab controller stop` first")
    config = write_config(state, doc, **options)
    log = open(log_path(), "ab")
    argv = [sys.executable, "-m", "lisp_ryu", "controller", "--config", str(config),
            # The lab's switches reach the controller on the management bridge's address; the
            # controller listens there only (its own default is loopback).
            "--ofp-listen-host", state.controller, "--ofp-tcp-listen-port", str(state.controller_port), *extra_args]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    log.close()
    pid_path().write_text(f"{proc.pid}\n")
    # Where its REST API listens, in the state file: `lisp-ryu show` and `lab status` look there.
    current = read_state() or state
    write_state(replace(current, controller_rest=rest_url(extra_args)))
    return proc


def rest_url(extra_args: tuple[str, ...] = ()) -> str:
    """The REST API base URL of a controller started with ryu-manager options `extra_args`."""
    found = {"--wsapi-host": DEFAULT_REST_HOST, "--wsapi-port": str(DEFAULT_REST_PORT)}
    args = list(extra_args)
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in found:
            if eq:
                found[name] = value
            elif i + 1 < len(args):
                found[name] = args[i + 1]
    host = found["--wsapi-host"]
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{found['--wsapi-port']}"


def health(state: LabState, timeout: float = 2.0) -> tuple[dict | None, str | None]:
    """The running controller's /lisp/v1/health, or (None, why not)."""
    if running_pid() is None:
        return None, "no controller is running for this lab"
    url = state.controller_rest
    if not url:
        return None, "the lab state does not record the controller's REST address"
    try:
        with urllib.request.urlopen(f"{url}/lisp/v1/health", timeout=timeout) as response:
            return json.loads(response.read()), None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"cannot read {url}/lisp/v1/health: {reason}"


def planned_move(state: LabState, iid: int, eid: str, to_site: str, timeout: float | None = None,
                 port: int | None = None) -> dict:
    """POST /lisp/v1/moves to the lab's controller: announce a planned move (LabError if refused);
    `port`: the workload's new OpenFlow port at `to_site`, plugged already."""
    body = {"iid": iid, "eid": eid, "to_site": to_site, **({} if timeout is None else {"timeout": timeout}),
            **({} if port is None else {"port": port})}
    return _write(state, "POST", "moves", body, f"the planned move of {eid} to {to_site}")


def cancel_move(state: LabState, iid: int, eid: str) -> dict:
    """DELETE /lisp/v1/moves/IID/EID: call a planned move off (LabError if refused: none open)."""
    return _write(state, "DELETE", f"moves/{iid}/{eid}", None, f"calling off the planned move of {eid}")


def _write(state: LabState, method: str, resource: str, body: dict | None, what: str) -> dict:
    """A write to the lab controller's REST API, with its token; the answer, or LabError saying `what` failed."""
    if not state.controller_rest:
        raise LabError("the lab state does not record the controller's REST address: is a controller running?")
    headers = {"Content-Type": "application/json"}
    token = rest_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{state.controller_rest}/lisp/v1/{resource}", method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=5.0) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise LabError(f"the controller refused {what}: {exc.code} {exc.read().decode(errors='replace')}") from exc
    except OSError as exc:
        raise LabError(f"cannot reach the controller at {state.controller_rest}: {exc}") from exc


def stop(grace: float = 5.0) -> bool:
    """Stop the lab's controller if one runs; True if one was stopped."""
    pid = running_pid()
    if pid is None:
        pid_path().unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not process_alive(pid):
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
    pid_path().unlink(missing_ok=True)
    return True


def wait_ready(state: LabState, timeout: float = 30.0) -> None:
    """Until this controller has every switch connected and reconciled, every xTR registered
    with a map-server (a PxTR registers nothing) and every switch holds the controller's flows.

    Asked of the controller itself (GET /lisp/v1/health): a lab driven before keeps the last
    controller's flows in its switches and its lines in the log, so those said "ready" while
    a restarted controller had no switch yet (a planned move announced then was prepared
    nowhere).  A controller without a REST address in the lab state is judged by its log.
    Also until each site has its BFD ports towards the others (`failover.mesh`): the controller
    makes them in the background after its first push, and a userspace switch adding a tunnel
    port loses a few ms of tunnelled traffic (a first ping after "ready" was lost)."""
    deadline = time.monotonic() + timeout
    waiting = [s.name for s in state.sites]
    mesh: set[str] | None = None  # the xTRs keeping BFD ports towards each other, read once
    rest = (read_state() or state).controller_rest
    while time.monotonic() < deadline:
        if running_pid() is None:
            log = log_path().read_text(errors="replace") if log_path().exists() else ""
            raise LabError(f"the controller exited; its log ({log_path()}) ends with:\n{_tail(log)}")
        waiting = _not_ready(state, rest)
        if not waiting:
            waiting = [s.name for s in state.sites
                       if "CONTROLLER" not in ofctl(s.name, "dump-flows", "table=1", state=state)]
        if not waiting:
            mesh = mesh_sites() if mesh is None else mesh
            waiting = _mesh_pending(state, mesh)
        if not waiting:
            return
        time.sleep(0.2)
    raise LabError(f"the controller did not take over {', '.join(waiting)} within {timeout:.0f} s; "
                   f"its log ({log_path()}) ends with:\n{_tail(log_path().read_text(errors='replace'))}")


def mesh_sites(config_file: Path | None = None) -> set[str]:
    """The xTRs of the controller's configuration (default: the lab's) that keep BFD ports towards
    each other from the start (`failover.mesh`, on by default, with failover and an OVSDB); none
    without the file."""
    path = config_path() if config_file is None else Path(config_file)
    if not path.exists():
        return set()
    return {x.name for x in config_mod.load(str(path)).xtrs
            if x.ovsdb is not None and x.failover.enabled and x.failover.mesh}


def _mesh_pending(state: LabState, mesh: set[str]) -> list[str]:
    """The sites of the BFD `mesh` still without a port (numbered by OVS) towards some other site's RLOC."""
    sites = [s for s in state.sites if s.name in mesh]
    out = []
    for s in sites:
        want = {str(r.address) for o in sites if o is not s for r in o.rlocs
                if any(ipaddress.ip_address(r.address).version == ipaddress.ip_address(m.address).version
                       for m in s.rlocs)}
        listing = vsctl(s.name, "--bare", "--format=csv", "--no-headings", "--columns=ofport,options", "find",
                        "interface", f"external_ids:lisp-ryu-xtr={s.name}", state=state)
        have = {m.group(2) for m in re.finditer(r"^(\d+),.*remote_ip=([0-9a-fA-F.:]+)", listing, re.M)
                if int(m.group(1)) > 0}
        if want - have:
            out.append(s.name)
    return out


def _not_ready(state: LabState, rest: str | None) -> list[str]:
    """The sites whose xTR is not connected, reconciled and registered yet (as the controller says)."""
    if rest is None:
        log = log_path().read_text(errors="replace") if log_path().exists() else ""
        return [s.name for s in state.sites if not s.is_pxtr and f"{s.name}: registered" not in log]
    token = rest_token()  # reads may be protected (rest.protect_reads)
    request = urllib.request.Request(f"{rest}/lisp/v1/health",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=2.0) as response:
            health = json.loads(response.read())
    except (OSError, ValueError):
        return [s.name for s in state.sites]  # not listening yet
    ours = time.time() - pid_path().stat().st_mtime if pid_path().exists() else None  # how long ago we started it
    uptime = health.get("uptime_seconds")
    if ours is not None and isinstance(uptime, (int, float)) and uptime > ours + 5.0:
        raise LabError(f"{rest} is answered by a controller up {uptime:.0f} s, not the one this lab started "
                       f"{ours:.0f} s ago: another lab's or a stale controller holds that REST "
                       "port; stop it, or give this one another (--wsapi-port)")
    xtrs = health.get("xtrs", {})
    out = []
    for s in state.sites:
        x = xtrs.get(s.name)
        servers = [] if s.is_pxtr else (x or {}).get("mapping_system", {}).get("map_servers", [])
        if x is None or not x.get("connected") or (servers and not any(m.get("registered") for m in servers)):
            out.append(s.name)
    return out


@contextmanager
def driving(state: LabState, progress: Callable[[str], object] = lambda line: None) -> Iterator[None]:
    """The lab driven by a ready controller for the block: the one running, or one started for
    it (and stopped after it), as the scenarios need."""
    own = running_pid() is None
    if own:
        progress(f"starting the controller (log {log_path()})")
        start(state)
    try:
        wait_ready(state)
        yield
    finally:
        if own:
            stop()


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.splitlines()[-lines:])
