"""A real N-member etcd cluster on loopback, for the tests of the replicated mapping store.

Each member is Debian's `etcd` 3.4 on free loopback ports (client and peer; on 127.0.0.1, or
each on its own loopback address with `hosts`, as the benchmark puts them), its data
directory on tmpfs (/dev/shm) when there is one, with short Raft timers
(`--heartbeat-interval 50 --election-timeout 500`) so that a cluster is up in about a
second and a lost leader is replaced within one.  Members are killed (SIGKILL) and
restarted by pid; `stop()` ends every member this object started, and only those.

    with EtcdCluster(3) as cluster:
        cluster.endpoints            # ["127.0.0.1:PORT", ...]
        cluster.kill(1); cluster.restart(1)

The pytest fixture `etcd_cluster` (see tests/cluster/conftest.py) skips when no `etcd`
binary is installed (`make test` installs etcd-server).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


PREFIX = "lisp-ryu-etcd-"


def _remove_orphans(root: Path) -> None:
    """Data directories left by a test run that was killed (named after its pid, now dead)."""
    for path in root.glob(f"{PREFIX}*-*"):
        pid = path.name[len(PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child: SIGKILL when the process that started it dies (a killed test run leaves no
    member behind).  Linux prctl(PR_SET_PDEATHSIG); tied to the starting thread."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


def available() -> bool:
    return os.access(ETCD, os.X_OK)


def _free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    host: str = "127.0.0.1"
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    def __init__(self, size: int = 3, base: Path | None = None, hosts: list[str] | None = None,
                 heartbeat_ms: int = 50, election_ms: int = 500) -> None:
        """`hosts`: one loopback address per member (default: all on 127.0.0.1)."""
        self.heartbeat_ms, self.election_ms = heartbeat_ms, election_ms
        if not available():
            raise RuntimeError(f"no etcd binary at {ETCD} (Debian etcd-server)")
        root = base or (Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir()))
        _remove_orphans(root)
        self.base = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root))
        self.token = f"lisp-ryu-{uuid.uuid4().hex[:12]}"
        hosts = list(hosts or ["127.0.0.1"] * size)
        if len(hosts) != size:
            raise ValueError(f"{size} members, {len(hosts)} hosts")
        self.members = []
        for i, host in enumerate(hosts):
            client, peer = _free_ports(2, host)
            self.members.append(Member(f"m{i}", client, peer, self.base / f"m{i}", self.base / f"m{i}.log", host))
        self.initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 15.0) -> "EtcdCluster":
        try:
            for i in range(len(self.members)):
                self._spawn(i, state="new")
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, i: int, state: str) -> None:
        m = self.members[i]
        argv = [
            ETCD, "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", f"http://{m.endpoint}",
            "--advertise-client-urls", f"http://{m.endpoint}",
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-token", self.token,
            "--initial-cluster-state", state,
            "--heartbeat-interval", str(self.heartbeat_ms), "--election-timeout", str(self.election_ms),
            "--logger", "zap", "--log-level", "warn",
        ]
        # etcd reads ETCD_* variables as flags: start from a clean environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        with open(m.log_path, "ab") as log:
            m.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env=env, start_new_session=True, preexec_fn=_die_with_parent)

    def kill(self, i: int) -> None:
        """SIGKILL member i by its pid (no clean shutdown)."""
        m = self.members[i]
        if m.alive:
            os.kill(m.proc.pid, signal.SIGKILL)
            m.proc.wait(5)

    def pause(self, i: int) -> None:
        """SIGSTOP member i: its connections stay open and say nothing (a hung member)."""
        os.kill(self.members[i].proc.pid, signal.SIGSTOP)

    def resume(self, i: int) -> None:
        os.kill(self.members[i].proc.pid, signal.SIGCONT)

    def restart(self, i: int, wait: bool = True, timeout: float = 10.0) -> None:
        """Start member i again on its data directory (it rejoins with what it had)."""
        self.kill(i)
        self._spawn(i, state="existing")
        if wait:
            self.wait_member(i, timeout)

    def stop(self) -> None:
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                try:
                    os.kill(m.proc.pid, signal.SIGCONT)
                    os.kill(m.proc.pid, signal.SIGKILL)
                    m.proc.wait(5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "EtcdCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ state

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def health(self, i: int, timeout: float = 0.5) -> bool:
        """Member i answers /health with a leader (a quorum read goes through)."""
        m = self.members[i]
        if not m.alive:
            return False
        try:
            with urllib.request.urlopen(f"http://{m.endpoint}/health", timeout=timeout) as res:
                return json.loads(res.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def wait_member(self, i: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.members[i]
            if not m.alive:
                raise RuntimeError(f"etcd member {m.name} exited:\n{self.log(i)[-2000:]}")
            if self.health(i):
                return
            time.sleep(0.05)
        raise TimeoutError(f"etcd member {self.members[i].name} not healthy after {timeout} s:\n"
                           f"{self.log(i)[-2000:]}")

    def wait_healthy(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        for i, m in enumerate(self.members):
            if m.proc is not None:
                self.wait_member(i, max(0.1, deadline - time.monotonic()))

    def leader(self) -> int | None:
        """Index of the member that is leader now, if one answers."""
        for i, m in enumerate(self.members):
            if not m.alive:
                continue
            try:
                req = urllib.request.Request(f"http://{m.endpoint}/v3/maintenance/status", data=b"{}")
                with urllib.request.urlopen(req, timeout=0.5) as res:
                    status = json.loads(res.read())
            except (OSError, ValueError):
                continue
            leader_id = status.get("leader")
            if leader_id and leader_id == status.get("header", {}).get("member_id"):
                return i
        return None

    def metrics(self, i: int, timeout: float = 2.0) -> dict[str, float]:
        """Member i's Prometheus metrics (/metrics): name{labels} -> value, for counting etcd's own
        writes (etcd_mvcc_put_total, etcd_mvcc_delete_total, etcd_mvcc_txn_total ...)."""
        with urllib.request.urlopen(f"http://{self.members[i].endpoint}/metrics", timeout=timeout) as res:
            text = res.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    continue
        return out

    def log(self, i: int) -> str:
        try:
            return self.members[i].log_path.read_text(errors="replace")
        except OSError:
            return ""
