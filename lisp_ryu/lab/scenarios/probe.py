"""Real-time recorders the scenarios share, both on the wall clock (`time.time()`)
that a `Move` uses too.

  * `Prober`: ICMP (or ICMPv6) echo requests from inside a namespace, with the
    send time of each and the kernel's receive timestamp of its reply, so a
    lost probe is known exactly (ping's output gives neither for lost ones).
  * `FlowWatch`: an OpenFlow flow monitor on a site's br-int
    (`ovs-ofctl monitor watch:`): the switch pushes every flow change as it
    happens, so the first change after an event is seen without polling.
"""

from __future__ import annotations

import ipaddress
import random
import re
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Iterator

from lisp_ryu.flows.pipeline import Owner, cookie_owner
from lisp_ryu.lab import topology as topo
from lisp_ryu.glue.netns import run_in_netns
from lisp_ryu.lab.ovs import ovs_env
from lisp_ryu.lab.state import LabError, SiteState
from lisp_ryu.wire.ecm import internet_checksum

INTERVAL = 0.01
# Flows that belong to an EID (a local host, a mapping, a redirect), not the
# pipeline skeleton (INFRA) or the gateway ARP answers (GATEWAY).
_SKELETON = frozenset({Owner.INFRA, Owner.GATEWAY})
_SO_TIMESTAMPNS = 35  # <asm-generic/socket.h>; Python's socket module lacks it
_ICMP_ECHO_REPLY, _ICMP_ECHO_REQUEST = 0, 8
_ICMP6_ECHO_REQUEST, _ICMP6_ECHO_REPLY = 128, 129


# --------------------------------------------------------------------------
# Probing


@dataclass(frozen=True)
class Probe:
    seq: int  # 0, 1, 2 ... (on the wire modulo 65536)
    sent: float  # time.time() at sending
    received: float | None  # kernel receive time of its reply; None: lost

    @property
    def rtt_ms(self) -> float | None:
        return None if self.received is None else (self.received - self.sent) * 1000.0


def family_of(address: str) -> socket.AddressFamily:
    """AF_INET or AF_INET6 for an address literal (ValueError if it is none)."""
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def icmp_socket(receive_buffer: int | None = None, family: int = socket.AF_INET) -> socket.socket:
    """A raw ICMP (AF_INET) or ICMPv6 (AF_INET6) socket with kernel receive times
    (`received_at`), in the calling namespace."""
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    sock = socket.socket(family, socket.SOCK_RAW, proto)
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(0.1)
    return sock


def received_at(ancillary: list) -> float:
    """When the kernel took the packet in (SO_TIMESTAMPNS), else now: a reply's time that does
    not include how long the prober's thread waited for the GIL."""
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(value) >= 16:
            sec, nsec = struct.unpack("qq", value[:16])
            return sec + nsec / 1e9
    return time.time()


def echo_replies(sock: socket.socket, stop: threading.Event, ident: int) -> Iterator[tuple[str, float, int]]:
    """(source address, kernel receive time, 16-bit sequence number) of each echo reply to our
    `ident` read from `sock` (an `icmp_socket`), until `stop` is set or the socket is closed.
    An ICMPv6 socket's data starts at the ICMPv6 header; an ICMP socket's at the IPv4 header."""
    v6 = sock.family == socket.AF_INET6
    reply_type = _ICMP6_ECHO_REPLY if v6 else _ICMP_ECHO_REPLY
    while not stop.is_set():
        try:
            data, ancillary, _, source = sock.recvmsg(2048, socket.CMSG_SPACE(16))
        except (socket.timeout, BlockingIOError):
            continue
        except OSError:
            return  # closed
        at = received_at(ancillary)
        icmp = data if v6 else data[(data[0] & 0x0F) * 4:]
        if len(icmp) < 8 or icmp[0] != reply_type:
            continue
        reply_ident, seq16 = struct.unpack("!HH", icmp[4:8])
        if reply_ident == ident:
            yield source[0], at, seq16


def probe_index(sent: int, seq16: int) -> int:
    """The latest of `sent` probes (numbered from 0) with this 16-bit sequence number; -1: none."""
    last = sent - 1
    return last - ((last - seq16) & 0xFFFF)


def echo_request(ident: int, seq: int, payload: bytes, family: int = socket.AF_INET) -> bytes:
    """An echo request; ICMPv6's checksum covers a pseudo-header the kernel fills in (RFC 3542:
    a raw ICMPv6 socket always computes it), so it leaves it 0."""
    if family == socket.AF_INET6:
        return struct.pack("!BBHHH", _ICMP6_ECHO_REQUEST, 0, 0, ident, seq & 0xFFFF) + payload
    header = struct.pack("!BBHHH", _ICMP_ECHO_REQUEST, 0, 0, ident, seq & 0xFFFF)
    return struct.pack("!BBHHH", _ICMP_ECHO_REQUEST, 0, internet_checksum(header + payload), ident, seq & 0xFFFF) + payload


class Prober:
    """ICMP echo every `interval` seconds from a namespace to `target` (IPv4 or IPv6).

    One thread sends on a fixed schedule (a slot missed under load is
    skipped, not sent in a burst), one receives; the socket lives in the
    namespace, the threads do not need to.
    """

    def __init__(self, namespace: str, target: str, interval: float = INTERVAL):
        self.namespace = namespace
        self.target = target
        self.family = family_of(target)
        self._target = ipaddress.ip_address(target)
        self.interval = interval
        self.ident = random.getrandbits(16)
        self._payload = b"lisp-ryu mobility probe".ljust(56, b".")
        self._sent: list[float] = []
        self._received: dict[int, float] = {}
        self._stop_sending = threading.Event()
        self._stop_receiving = threading.Event()
        self._first_reply = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sock: socket.socket | None = None
        self.send_errors = 0

    def start(self) -> None:
        self._sock = run_in_netns(self.namespace, lambda: icmp_socket(family=self.family))
        self._threads = [threading.Thread(target=self._receive, name="probe-rx", daemon=True),
                         threading.Thread(target=self._send, name="probe-tx", daemon=True)]
        for t in self._threads:
            t.start()

    def wait_reply(self, timeout: float) -> bool:
        """Until the first reply arrives (the path is resolved); False on timeout."""
        return self._first_reply.wait(timeout)

    def stop(self, linger: float = 0.5) -> tuple[Probe, ...]:
        """Stop sending, wait `linger` seconds for late replies, return all
        probes; again (or before `start`) it only returns them."""
        if self._sock is not None and not self._stop_receiving.is_set():
            self._stop_sending.set()
            self._threads[1].join()
            time.sleep(linger)
            self._stop_receiving.set()
            self._threads[0].join()
            self._sock.close()
        return self.probes()

    def probes(self) -> tuple[Probe, ...]:
        sent = list(self._sent)
        return tuple(Probe(i, t, self._received.get(i)) for i, t in enumerate(sent))

    def __enter__(self) -> "Prober":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop(linger=0)

    def _send(self) -> None:
        start = time.monotonic()
        slot = 0
        while not self._stop_sending.is_set():
            delay = start + slot * self.interval - time.monotonic()
            if delay > 0 and self._stop_sending.wait(delay):
                break
            packet = echo_request(self.ident, len(self._sent), self._payload, self.family)
            self._sent.append(time.time())
            try:
                self._sock.sendto(packet, (self.target, 0))
            except OSError:
                self.send_errors += 1  # counted lost: the probe has no reply
            slot = max(slot + 1, int((time.monotonic() - start) / self.interval) + 1)

    def _receive(self) -> None:
        for source, at, seq16 in echo_replies(self._sock, self._stop_receiving, self.ident):
            index = probe_index(len(self._sent), seq16)
            if index >= 0 and (source == self.target or _same_address(source, self._target)):
                self._received.setdefault(index, at)
                self._first_reply.set()


def _same_address(source: str, target: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """An IPv6 source may be spelt differently from the target (zeros, case)."""
    try:
        return ipaddress.ip_address(source.split("%")[0]) == target
    except ValueError:
        return False


# --------------------------------------------------------------------------
# Watching flows


@dataclass(frozen=True)
class FlowEvent:
    site: str
    at: float  # time.time() when the switch's notification was read
    event: str  # ADDED, DELETED, MODIFIED
    table: int
    cookie: int
    flow: str  # match and actions as ovs-ofctl prints them

    @property
    def per_eid(self) -> bool:
        """A flow owned by an EID (local host, mapping, redirect...), not the skeleton."""
        owner = cookie_owner(self.cookie)
        return owner is not None and owner not in _SKELETON


_EVENT_RE = re.compile(r"event=(\w+).*?\btable=(\d+)\s+cookie=(0x[0-9a-fA-F]+|\d+)\s*(.*)")


def parse_monitor_line(site: str, at: float, line: str) -> FlowEvent | None:
    """One `ovs-ofctl monitor` update line -> FlowEvent; None for other lines."""
    m = _EVENT_RE.search(line)
    if m is None:
        return None
    return FlowEvent(site=site, at=at, event=m.group(1), table=int(m.group(2)), cookie=int(m.group(3), 0),
                     flow=m.group(4).strip())


class FlowWatch:
    """Flow changes of one site's br-int as the switch reports them.

    The monitor request asks for no initial dump (`!initial`); the switch's
    reply to it is the sign that the monitor is in place.  Updates come on
    ovs-ofctl's stderr, the reply on stdout: both are read as one stream.
    """

    def __init__(self, site: SiteState):
        self.site = site
        self.events: list[FlowEvent] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._output: list[str] = []

    def start(self, timeout: float = 5.0) -> None:
        argv = ["ovs-ofctl", "-O", "OpenFlow13", "monitor", self.site.mgmt_socket(topo.BR_INT), "watch:!initial"]
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=ovs_env(self.site.run_dir), stdin=subprocess.DEVNULL)
        self._thread = threading.Thread(target=self._read, name=f"flow-watch-{self.site.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise LabError(f"site {self.site.name}: `{' '.join(argv)}` did not start within {timeout:.0f} s: "
                           f"{''.join(self._output).strip() or 'no output'}")

    def stop(self) -> tuple[FlowEvent, ...]:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=3)
        return tuple(self.events)

    def _read(self) -> None:
        for line in iter(self._proc.stdout.readline, ""):
            at = time.time()
            if not self._ready.is_set():
                self._output.append(line)
                if "FLOW_MONITOR reply" in line:
                    self._ready.set()
                continue
            event = parse_monitor_line(self.site.name, at, line)
            if event is not None:
                self.events.append(event)
        self._proc.stdout.close()
