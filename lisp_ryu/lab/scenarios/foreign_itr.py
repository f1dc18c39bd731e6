"""An ITR that knows nothing of moves, and what of its traffic reached the workload.

Another implementation's ITR, or another controller's, keeps tunnelling to the RLOC its
map-cache holds while a workload moves: no planned move is announced to it, so it does not
replicate.  Here it is a child process in a lab namespace whose address is no xTR's RLOC
(the core router's): every `interval` it sends one LISP-GPE datagram (RFC 9305: UDP 4341,
flags I and P, next protocol IPv4 or IPv6, the instance-ID) to one fixed RLOC, its inner
packet a UDP datagram from SOURCE_EID to the workload carrying a sequence number.  A child
process in the workload's namespace counts what arrives; its socket stays through the moves,
as the workload's own do.  Sent and received are matched by sequence number: what never came
is lost, what came twice a duplicate (a planned move's copies, expected).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import cached_property

from lisp_ryu.lab.state import LabError

PORT = 9913  # the workload's receiving UDP port
SOURCE_EID = {4: "10.250.0.1", 6: "fd00:fa::1"}  # the foreign site's host: in no lab prefix

_SENDER = r"""
import json, select, socket, struct, sys, time
rloc, target, source, iid, interval, port = sys.argv[1:7]
iid, interval, port = int(iid), float(interval), int(port)
outer = socket.AF_INET6 if ":" in rloc else socket.AF_INET
inner = socket.AF_INET6 if ":" in target else socket.AF_INET
src, dst = socket.inet_pton(inner, source), socket.inet_pton(inner, target)

def fold(total):
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total

def ones(data):
    data += b"\0" * (len(data) % 2)
    return fold(sum(struct.unpack("!%dH" % (len(data) // 2), data)))

def packet(seq):
    body = struct.pack("!Id", seq, time.time())
    udp = struct.pack("!HHHH", 40000, port, 8 + len(body), 0) + body
    if inner == socket.AF_INET:
        head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), seq & 0xFFFF, 0, 64, 17, 0, src, dst)
        head = head[:10] + struct.pack("!H", ~ones(head) & 0xFFFF) + head[12:]
        return bytes([0x0C, 0, 0, 0x01]) + iid.to_bytes(3, "big") + b"\0" + head + udp
    pseudo = src + dst + struct.pack("!IxxxB", len(udp), 17)
    checksum = ~ones(pseudo + udp) & 0xFFFF or 0xFFFF  # mandatory over IPv6
    udp = udp[:6] + struct.pack("!H", checksum) + udp[8:]
    head = struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, src, dst)
    return bytes([0x0C, 0, 0, 0x02]) + iid.to_bytes(3, "big") + b"\0" + head + udp

sock = socket.socket(outer, socket.SOCK_DGRAM)
sent = []
start = time.monotonic()
print("sending", flush=True)
while True:
    seq = len(sent)
    sent.append(time.time())
    try:
        sock.sendto(packet(seq), (rloc, 4341))
    except OSError:
        pass  # a full buffer or no route for a moment: that datagram is lost, as on a wire
    wait = max(0.0, start + (seq + 1) * interval - time.monotonic())
    if select.select([sys.stdin], [], [], wait)[0]:
        break
print(json.dumps(sent), flush=True)
"""

_RECEIVER = r"""
import json, select, socket, struct, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
sock = socket.socket(family, socket.SOCK_DGRAM)
sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", int(sys.argv[2])))
print("ready", flush=True)
seen = []
while True:
    ready = select.select([sock, sys.stdin], [], [])[0]
    if sock in ready:
        seen.append(struct.unpack("!I", sock.recv(64)[:4])[0])
    if sys.stdin in ready:
        break
print(json.dumps(seen), flush=True)
"""


@dataclass(frozen=True)
class ForeignOutcome:
    rloc: str  # where the ITR tunnelled, all along
    site: str  # the lab site holding `rloc`
    sent: tuple[float, ...]  # per sequence number, when it was sent (time.time())
    received: tuple[int, ...]  # the sequence numbers that arrived, in order, duplicates included

    @cached_property
    def lost(self) -> tuple[int, ...]:
        return tuple(sorted(set(range(len(self.sent))) - set(self.received)))

    @property
    def duplicates(self) -> int:
        return len(self.received) - len(set(self.received))


class ForeignItr:
    """From `namespace`, to `target` (the workload, in `target_namespace`) through `rloc` in
    instance `iid`, one datagram every `interval`: `start`, then `stop` for the outcome."""

    def __init__(self, namespace: str, rloc: str, site: str, target: str, target_namespace: str, iid: int,
                 interval: float = 0.001) -> None:
        version = ipaddress.ip_address(target).version
        self.argv = (rloc, target, SOURCE_EID[version], str(iid), str(interval), str(PORT))
        self.namespace = namespace
        self.target_namespace = target_namespace
        self.rloc = rloc
        self.site = site
        self._sender: subprocess.Popen | None = None
        self._receiver: subprocess.Popen | None = None

    def start(self) -> None:
        self._receiver = self._spawn(self.target_namespace, _RECEIVER, self.argv[1], str(PORT))
        self._expect(self._receiver, "ready")
        self._sender = self._spawn(self.namespace, _SENDER, *self.argv)
        self._expect(self._sender, "sending")

    def stop(self, linger: float = 0.3) -> ForeignOutcome:
        """Stop sending, give what is on its way `linger` seconds, stop counting."""
        try:
            sent = json.loads(self._finish(self._sender))
            time.sleep(linger)
            received = json.loads(self._finish(self._receiver))
        finally:
            self.kill()
        return ForeignOutcome(rloc=self.rloc, site=self.site, sent=tuple(sent), received=tuple(received))

    def kill(self) -> None:
        for proc in (self._sender, self._receiver):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()

    @staticmethod
    def _spawn(namespace: str, script: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-c", script, *args],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def _expect(self, proc: subprocess.Popen, word: str) -> None:
        line = proc.stdout.readline().strip()
        if line != word:
            self.kill()
            raise LabError(f"the foreign ITR's {'sender' if word == 'sending' else 'receiver'} did not start: "
                           f"{line or proc.stderr.read().strip()}")

    @staticmethod
    def _finish(proc: subprocess.Popen) -> str:
        proc.stdin.close()
        line = proc.stdout.readline()
        if not line:
            raise LabError(f"the foreign ITR's child ended without its record: {proc.stderr.read().strip()}")
        return line
