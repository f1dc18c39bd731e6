"""A paced TCP stream between two lab hosts, and how TCP fared: retransmission timeouts,
tail-loss probes, retransmitted segments and the longest stall at the receiver.

The sender writes `chunk` bytes every `interval` seconds (a steady flow, not a bulk
transfer that would fill the userspace datapath), the receiver reads and discards.
The kernel's counters of the sender's namespace (`/proc/net/netstat`, TcpExt
TCPTimeouts and TCPLossProbes) count what happened to it; read before and after,
their difference is this stream's (nothing else speaks TCP in a lab host).  The
sender's own `TCP_INFO` gives its total retransmissions.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass

from lisp_ryu.glue.netns import run_in_netns
from lisp_ryu.lab.scenarios.probe import family_of
from lisp_ryu.lab.state import LabError

PORT = 7013
CHUNK = 1024
INTERVAL = 0.001
_TCPI_TOTAL_RETRANS = 100  # offset of tcpi_total_retrans in struct tcp_info (linux/tcp.h)


@dataclass(frozen=True)
class TcpOutcome:
    sent_bytes: int
    received_bytes: int
    rto_events: int  # TcpExt TCPTimeouts of the sender's namespace over the stream
    loss_probes: int  # TcpExt TCPLossProbes
    retransmitted_segments: int  # the sender's tcpi_total_retrans
    longest_stall_ms: float  # the longest time the receiver got nothing
    error: str | None = None  # the connection failed

    @property
    def intact(self) -> bool:
        return self.error is None and self.received_bytes == self.sent_bytes


def netstat(namespace: str) -> dict[str, int]:
    """TcpExt counters of a namespace."""
    out = subprocess.run(["ip", "netns", "exec", namespace, "cat", "/proc/net/netstat"], capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise LabError(f"cannot read /proc/net/netstat in {namespace}: {out.stderr.strip()}")
    lines = out.stdout.splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return dict(zip(names.split()[1:], (int(v) for v in values.split()[1:])))
    return {}


class TcpStream:
    """From `client_ns` to `server_ip`:PORT served in `server_ns`, started by `start`, ended by `stop`."""

    def __init__(self, client_ns: str, server_ns: str, server_ip: str, *, port: int = PORT, chunk: int = CHUNK,
                 interval: float = INTERVAL):
        self.client_ns, self.server_ns, self.server_ip = client_ns, server_ns, server_ip
        self.port, self.chunk, self.interval = port, chunk, interval
        self._stop = threading.Event()
        self._sent = 0
        self._received = 0
        self._arrivals: list[float] = []
        self._error: str | None = None
        self._threads: list[threading.Thread] = []
        self._client: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._before: dict[str, int] = {}

    def start(self) -> None:
        def listen() -> socket.socket:
            s = socket.socket(family_of(self.server_ip), socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.server_ip, self.port))
            s.listen(1)
            return s

        def connect() -> socket.socket:
            return socket.create_connection((self.server_ip, self.port), timeout=10)

        self._listener = run_in_netns(self.server_ns, listen)
        self._client = run_in_netns(self.client_ns, connect)
        self._client.settimeout(None)
        conn, _ = self._listener.accept()
        self._before = netstat(self.client_ns)
        self._threads = [threading.Thread(target=self._receive, args=(conn,), name="tcp-rx", daemon=True),
                         threading.Thread(target=self._send, name="tcp-tx", daemon=True)]
        for t in self._threads:
            t.start()

    def _send(self) -> None:
        payload = b"x" * self.chunk
        start = time.monotonic()
        slot = 0
        try:
            while not self._stop.is_set():
                delay = start + slot * self.interval - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                self._client.sendall(payload)
                self._sent += len(payload)
                slot = max(slot + 1, int((time.monotonic() - start) / self.interval) + 1)
            self._client.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._error = f"sending: {exc}"

    def _receive(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                self._received += len(data)
                self._arrivals.append(time.monotonic())
        except OSError as exc:
            self._error = self._error or f"receiving: {exc}"
        finally:
            conn.close()

    def stop(self, timeout: float = 30.0) -> TcpOutcome:
        """Stop sending, wait until the receiver has everything (or `timeout`), and report."""
        self._stop.set()
        self._threads[1].join(timeout)
        self._threads[0].join(timeout)
        info = self._client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        (total_retrans,) = struct.unpack_from("I", info, _TCPI_TOTAL_RETRANS)
        after = netstat(self.client_ns)
        self._client.close()
        self._listener.close()
        gaps = [b - a for a, b in zip(self._arrivals, self._arrivals[1:])]
        return TcpOutcome(
            sent_bytes=self._sent, received_bytes=self._received,
            rto_events=after.get("TCPTimeouts", 0) - self._before.get("TCPTimeouts", 0),
            loss_probes=after.get("TCPLossProbes", 0) - self._before.get("TCPLossProbes", 0),
            retransmitted_segments=total_retrans,
            longest_stall_ms=max(gaps, default=0.0) * 1000.0, error=self._error)
