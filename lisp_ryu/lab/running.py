"""A lab that is up, as other code reaches it: its state, the lock lab operations
take, commands in its nodes, OVS's own tools against one site's daemons, and
whether it is still what its state file says (`status`)."""

from __future__ import annotations

import fcntl
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from lisp_ryu.lab import topology as topo
from lisp_ryu.lab.ovs import DAEMONS, ovs_env
from lisp_ryu.lab.processes import all_namespaces, comm, process_alive, run, run_in
from lisp_ryu.lab.state import LabError, LabState, lab_dir, read_state, state_path


def load_state() -> LabState:
    state = read_state()
    if state is None:
        raise LabError(f"no lab is up (no {state_path()}): run `lisp-ryu lab up TOPOLOGY`")
    return state


@contextmanager
def locked() -> Iterator[Path]:
    """One lab operation at a time per lab directory."""
    directory = lab_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield directory


def exec_in(node: str, argv: Sequence[str], *, state: LabState | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run a command in the namespace of a lab node (host, site, router, map-server)."""
    state = state or load_state()
    return run_in(state.namespace_of(node), argv, **kwargs)


def ofctl(site: str, command: str, *args: str, bridge: str = topo.BR_INT, input: str | None = None,
          state: LabState | None = None) -> str:
    """`ovs-ofctl -O OpenFlow13 COMMAND <site's bridge> ARGS` against the site's own daemon."""
    s = (state or load_state()).site(site)
    return run(["ovs-ofctl", "-O", "OpenFlow13", command, s.mgmt_socket(bridge), *args],
               input=input, env=ovs_env(s.run_dir)).stdout


def appctl(site: str, *args: str, state: LabState | None = None) -> str:
    """`ovs-appctl` against the site's ovs-vswitchd (tnl/neigh/show, ovs/route/show, ...)."""
    s = (state or load_state()).site(site)
    return run(["ovs-appctl", "-t", s.vswitchd_ctl, *args], env=ovs_env(s.run_dir)).stdout


def vsctl(site: str, *args: str, state: LabState | None = None) -> str:
    """`ovs-vsctl` against the site's ovsdb-server."""
    s = (state or load_state()).site(site)
    return run(["ovs-vsctl", f"--db={s.db}", "--timeout=10", *args], env=ovs_env(s.run_dir)).stdout


# --------------------------------------------------------------------------
# status


@dataclass(frozen=True)
class SiteStatus:
    name: str
    namespace_present: bool
    daemons: dict[str, bool]  # daemon -> running
    controller_connected: bool | None  # None: could not ask
    flows: int | None


@dataclass(frozen=True)
class LabStatus:
    state: LabState
    sites: tuple[SiteStatus, ...]
    missing_namespaces: tuple[str, ...]

    @property
    def healthy(self) -> bool:
        return (self.state.status == "up" and not self.missing_namespaces
                and all(s.namespace_present and all(s.daemons.values()) for s in self.sites))


def status() -> LabStatus | None:
    """What the state file says and whether it is still true; None if no lab."""
    state = read_state()
    if state is None:
        return None
    present = set(all_namespaces())
    sites = []
    for s in state.sites:
        daemons = {d: process_alive(pid) and comm(pid) == d for d, pid in s.pids.items()} or {d: False for d in DAEMONS}
        connected = flows = None
        if all(daemons.values()):
            try:
                connected = vsctl(s.name, "get", "controller", topo.BR_INT, "is_connected", state=state).strip() == "true"
                agg = ofctl(s.name, "dump-aggregate", state=state)
                flows = int(agg.split("flow_count=")[1].split()[0]) if "flow_count=" in agg else None
            except LabError:
                pass
        sites.append(SiteStatus(name=s.name, namespace_present=s.namespace in present, daemons=daemons,
                                controller_connected=connected, flows=flows))
    missing = tuple(n for n in state.namespaces if n not in present)
    return LabStatus(state=state, sites=tuple(sites), missing_namespaces=missing)
