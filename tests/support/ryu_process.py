"""The real `lisp-ryu controller` as a child process on loopback ports, for the hostile tests.

Started exactly as a user starts it (`python -m lisp_ryu controller --config FILE ...`), importing
this worktree (PYTHONPATH is passed on), with free loopback ports for REST and OpenFlow; stopped by
its own pid.  Each start costs ~2 s (Ryu's imports), so test files share one per module.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RyuProcess:
    def __init__(self, tmp: Path, config: str, *args: str, openflow_port_option: str = "--ofp-tcp-listen-port"):
        self.tmp = tmp
        self.rest_port = free_port()
        self.of_port = free_port()
        self.config = tmp / "controller.yaml"
        self.config.write_text(config)
        self.log_path = tmp / "controller.log"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        argv = [sys.executable, "-m", "lisp_ryu", "controller", "--config", str(self.config),
                "--wsapi-port", str(self.rest_port), openflow_port_option, str(self.of_port), *args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, cwd=tmp, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_listening(self, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the controller exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            if port in listening_ports():
                return
            time.sleep(0.1)
        raise AssertionError(f"nothing listens on {port} after {timeout} s:\n{self.log()[-3000:]}")

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port}{path}", timeout=timeout) as res:
                return res.status, json.loads(res.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the group is this child only
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def listen_sockets() -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket on this host (IPv4 and IPv6), from /proc."""
    out = []
    for name, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state != "0A":  # LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            raw = bytes.fromhex(addr_hex)
            if width == 8:
                addr = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:  # four little-endian 32-bit words
                addr = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
            out.append((addr, int(port_hex, 16)))
    return out


def listening_ports() -> set[int]:
    return {port for _, port in listen_sockets()}
