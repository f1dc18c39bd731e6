"""Capture packets on a lab interface and decode them with tshark.

The demo and the lab tests use it to show and check what crosses the
underlay: tcpdump writes a pcap inside the namespace (it starts faster than
tshark), tshark `-V` decodes it with Wireshark's LISP dissector.
"""

from __future__ import annotations

import select
import signal
import subprocess
import time
from pathlib import Path

from lisp_ryu.lab.state import LabError
from lisp_ryu.wire import LISP_DATA_PORT

LISP_DATA_HEADER = "Locator/ID Separation Protocol (Data)"


# BPF clauses for LISP-GPE data on UDP 4341 over an IPv4 underlay (udp[8..15] is the GPE header,
# the inner packet starts at udp[16]).  Since failover in the switch, BFD travels on the same port
# as LISP-GPE with instance-ID 0xFFFFFF (flows/failover.py BFD_KEY) and an inner IPv4 packet, so
# "udp port 4341" alone can catch BFD; with `failover.mesh` BFD runs between our xTRs from the
# start, so it is there before any data.
GPE_DATA = ("((udp[12:4] & 0xffffff00) != 0 and (udp[12:4] & 0xffffff00) != 0xffffff00)")  # an instance's data, not BFD
GPE_INNER_IPV6 = "(udp[16] & 0xf0) = 0x60"  # an inner IPv6 packet (BFD's is IPv4)


class Capture:
    """`with Capture(ns, iface, "udp port 4341", pcap, count=1): ...`, then decode(pcap).

    Entering returns once tcpdump is listening, so nothing sent afterwards is
    missed; leaving waits (up to `timeout`) for `count` packets, then stops.
    """

    def __init__(self, namespace: str | None, interface: str, bpf: str, pcap: Path | str, *,
                 count: int = 1, timeout: float = 5.0):
        self.namespace = namespace
        self.interface = interface
        self.bpf = bpf
        self.pcap = Path(pcap)
        self.count = count
        self.timeout = timeout
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "Capture":
        argv = ["tcpdump", "-i", self.interface, "-n", "-U", "-c", str(self.count), "-w", str(self.pcap), self.bpf]
        if self.namespace:
            argv = ["ip", "netns", "exec", self.namespace, *argv]
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 5.0
        seen = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self._proc.stderr], [], [], 0.1)
            if ready:
                line = self._proc.stderr.readline()
                seen += line
                if "listening on" in line:
                    return self
                if not line and self._proc.poll() is not None:
                    break
        self._stop()
        raise LabError(f"tcpdump on {self.interface} (netns {self.namespace}) did not start: {seen.strip()}")

    def __exit__(self, *exc) -> None:
        self.wait()

    def wait(self) -> int:
        """Wait for the packets (or the timeout); returns how many were captured."""
        if self._proc is not None:
            try:
                self._proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self._stop()
            self._proc.stderr.close()
            self._proc = None
        return len(decode(self.pcap, "-T", "fields", "-e", "frame.number").split()) if self.pcap.exists() else 0

    def _stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # tcpdump flushes and exits
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def decode(pcap: Path | str, *args: str) -> str:
    """tshark's decode of a pcap (`-V` unless other output options are given);
    UDP 4341 is decoded as LISP data explicitly."""
    argv = ["tshark", "-r", str(pcap), "-n", "-d", f"udp.port=={LISP_DATA_PORT},lisp-data", *(args or ("-V",))]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise LabError(f"tshark failed on {pcap}: {proc.stderr.strip()}")
    return proc.stdout


def lisp_header_lines(decoded: str) -> list[str]:
    """From `tshark -V` output of one packet: the outer IP and UDP summary
    lines, the LISP data header section and the inner IP summary line."""
    lines = decoded.splitlines()
    out: list[str] = []
    inside = False
    for line in lines:
        if not inside and line.startswith(("Internet Protocol", "User Datagram Protocol")):
            out.append(line)
            continue
        if line.startswith(LISP_DATA_HEADER):
            inside = True
            out.append(line)
            continue
        if inside:
            if line and not line.startswith(" "):
                out.append(line)  # the next layer: "Internet Protocol Version 4, Src: ..., Dst: ..."
                break
            out.append(line)
    return out
