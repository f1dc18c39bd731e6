"""Commands, processes and kernel objects on this machine, with no knowledge of a lab's layout.

Running a command (in a namespace); finding, signalling and ending
processes by PID; listing the namespaces and root interfaces a name prefix
owns.  Build, teardown, move and the Mininet and benchmark labs share these.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence

from lisp_ryu.lab.state import LabError

log = logging.getLogger("lisp_ryu.lab")

_TIMEOUT = 30.0


class CommandError(LabError):
    """A command the lab ran failed; carries the command line and its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"command failed (exit {returncode}): {' '.join(self.argv)}\n{self.stderr}")


# --------------------------------------------------------------------------
# Running commands


def run(argv: Sequence[str], *, check: bool = True, input: str | None = None,
        timeout: float | None = _TIMEOUT, env: dict | None = None, capture: bool = True) -> subprocess.CompletedProcess:
    """Run a command; on failure raise CommandError with its stderr."""
    log.debug("run: %s", " ".join(argv))
    try:
        proc = subprocess.run(
            list(argv), input=input, text=True, timeout=timeout, env=env,
            stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None,
        )
    except FileNotFoundError:
        raise CommandError(argv, 127, f"{argv[0]}: command not found") from None
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, -1, f"timed out after {timeout}s: {exc.stderr or ''}") from None
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr or "")
    return proc


def run_in(namespace: str | None, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command inside a network namespace (None: the root namespace)."""
    if namespace is None:
        return run(argv, **kwargs)
    return run(["ip", "netns", "exec", namespace, *argv], **kwargs)


# --------------------------------------------------------------------------
# Processes


def terminate(pids: dict[int, str], grace: float = 3.0) -> None:
    """SIGTERM each PID (value: what it is, for the log), SIGKILL those still alive after `grace`."""
    for pid in pids:
        signal_pid(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(process_alive(p) for p in pids):
        time.sleep(0.02)
    for pid in pids:
        if process_alive(pid):
            log.warning("pid %d (%s) ignored SIGTERM: killing", pid, pids[pid])
            signal_pid(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(process_alive(p) for p in pids):
        time.sleep(0.02)


def signal_pid(pid: int, sig: int) -> None:
    """Send a signal; a process already gone is no error."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def process_alive(pid: int) -> bool:
    """True for a live process; a zombie child of ours counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    if state == "Z":
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def comm(pid: int) -> str | None:
    """The process's command name (at most 15 characters); None if it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def read_pid(path: Path) -> int | None:
    """The PID in a pid file; None if there is none to read."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------
# Namespaces and root interfaces by name


def all_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout or ""
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespaces_with_prefix(pfx: str) -> list[str]:
    return [n for n in all_namespaces() if n.startswith(pfx)]


def interfaces(namespace: str | None = None) -> list[str]:
    """The names of the interfaces in a namespace (None: the root one); none if it cannot be read."""
    out = run_in(namespace, ["ip", "-o", "link", "show"], check=False).stdout or ""
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def root_interfaces_with_prefix(pfx: str) -> list[str]:
    return [n for n in interfaces() if n.startswith(pfx)]


def objects_with_prefix(pfx: str) -> list[str]:
    """The namespaces and root-namespace interfaces whose names start with `pfx`."""
    return ([f"netns {n}" for n in namespaces_with_prefix(pfx)]
            + [f"interface {i}" for i in root_interfaces_with_prefix(pfx)])
