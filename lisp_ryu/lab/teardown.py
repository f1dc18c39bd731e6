"""Remove everything a lab made: by its state file, and by PID files and name
prefix, so `down` also cleans up after a crash or a lost state file."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from lisp_ryu.lab.ovs import DAEMONS
from lisp_ryu.lab.processes import (
    all_namespaces,
    cmdline,
    comm,
    namespaces_with_prefix,
    objects_with_prefix,
    process_alive,
    read_pid,
    root_interfaces_with_prefix,
    run,
    terminate,
)
from lisp_ryu.lab.running import locked
from lisp_ryu.lab.state import LabError, LabState, prefix, read_state

log = logging.getLogger("lisp_ryu.lab")


def down() -> list[str]:
    """Remove everything the lab made: from the state file, then by name
    prefix (so it also cleans up after a crash or a lost state file).
    Returns what was removed; raises if anything is left."""
    with locked() as directory:
        try:
            state = read_state()
        except LabError as exc:
            log.warning("%s", exc)
            state = None
        pfx = state.prefix if state else prefix()
        return teardown(state, pfx, directory)


def teardown(state: LabState | None, pfx: str, directory: Path) -> list[str]:
    """`down`'s work, under the lock the caller holds (`up` calls it to undo a failed build)."""
    removed: list[str] = []
    run_dirs = {Path(s.run_dir) for s in state.sites} if state else set()
    run_dirs |= {p.parent for p in directory.glob("*/ovs-vswitchd.pid")}
    run_dirs |= {p.parent for p in directory.glob("*/ovsdb-server.pid")}
    # Clustered mapping system nodes (lisp_ryu/lab/cluster.py): their config, data, logs, pids.
    run_dirs |= {p.parent for p in directory.glob("*/mapserver.pid")}
    run_dirs |= {p.parent for p in directory.glob("*/conf.db")}
    namespaces = set(state.namespaces if state else ()) | set(namespaces_with_prefix(pfx))
    namespaces &= set(all_namespaces())

    # 1. Processes: the OVS daemons by their pid files, then anything still
    #    running inside a lab namespace (lab exec leftovers, captures).
    pids: dict[int, str] = {}
    for rd in run_dirs:
        for daemon in DAEMONS:
            pid = read_pid(rd / f"{daemon}.pid")
            if pid and comm(pid) == daemon[:15]:
                pids[pid] = f"{daemon} ({rd.name})"
    for namespace in namespaces:
        out = run(["ip", "netns", "pids", namespace], check=False).stdout or ""
        for word in out.split():
            if word.isdigit() and int(word) != os.getpid():
                pids.setdefault(int(word), f"{comm(int(word)) or 'process'} in {namespace}")
    controller = read_pid(directory / "controller.pid")  # lisp_ryu.lab.controller's, in the root namespace
    if controller and process_alive(controller) and b"lisp" in cmdline(controller):
        pids.setdefault(controller, "lisp-ryu controller")
    removed += [f"process {pid}: {what}" for pid, what in sorted(pids.items())]
    terminate(pids)

    # 2. Namespaces (their veths and OVS taps go with them), then the root
    #    namespace's bridge and veth peers.
    for namespace in sorted(namespaces):
        run(["ip", "netns", "delete", namespace], check=False)
        removed.append(f"netns {namespace}")
    root_ifs = set(state.root_interfaces if state else ()) | set(root_interfaces_with_prefix(pfx))
    for iface in sorted(root_ifs):
        if run(["ip", "link", "del", iface], check=False).returncode == 0:
            removed.append(f"interface {iface}")

    # 3. Files: run directories, the state file and the lab controller's config, log and pid.
    for rd in sorted(run_dirs):
        if rd.parent == directory and rd.exists():
            shutil.rmtree(rd, ignore_errors=True)
            removed.append(f"run dir {rd}")
    ms_data = directory / "map-server-data"  # the lab controller's embedded Map-Server store
    if ms_data.is_dir():
        shutil.rmtree(ms_data, ignore_errors=True)
        removed.append(f"map-server data {ms_data}")
    for leftover in (directory / "state.json", directory / "state.tmp", directory / "controller.pid",
                     directory / "controller.yaml", directory / "controller.log"):
        if leftover.exists():
            leftover.unlink()
            removed.append(f"state {leftover}")

    left = objects_with_prefix(pfx) + [f"process {p}" for p in pids if process_alive(p)]
    if left:
        raise LabError(f"teardown left: {', '.join(left)}")
    for item in removed:
        log.info("removed %s", item)
    return removed
