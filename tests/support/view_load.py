"""A real `lisp-ryu mapserver` preloaded with many registrations, and the clients that load its views.

The registrations are written as a snapshot before the process starts (as
bench/bench_mapserver.py does), so a test gets 100k+ of them in seconds.
The resolver is probed by a closed-loop Map-Request client that notes the
longest silence between two answers: what an xTR sees while someone reads
the views.
"""

from __future__ import annotations

import ipaddress
import os
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from support import packets

READY = re.compile(r"udp 127\.0\.0\.1:(\d+) http http://127\.0\.0\.1:(\d+)")
REPO = Path(__file__).resolve().parents[2]
CONFIG = """\
map_server:
  rate_limit_per_source: 1000000000
  sites:
    - name: load
      key: load-key
      eid_prefixes:
        - {prefix: 10.0.0.0/8, accept_more_specifics: true}
"""


def eid(n: int) -> ipaddress.IPv4Address:
    """The n-th registered EID: spread over 10.0.0.0/8 so the trie has real depth (n < 2**24)."""
    return ipaddress.IPv4Address(0x0A000000 + (n * 7919) % (1 << 24))


def snapshot_entries(count: int):
    from lisp_ryu.mapserver.state import record_bytes

    template = record_bytes(packets.record("10.0.0.1/32", ["198.18.0.1"]))
    address_at = template.index(bytes([10, 0, 0, 1]))
    now = time.time()
    base = {"t": "reg", "iid": 0, "etr": "rloc:198.18.0.1", "site": "load", "src": "198.18.0.1", "port": 4342,
            "proxy": True, "kid": 0, "alg": 1, "at": now, "exp": now + 86400, "xid": None, "sid": None}
    for n in range(count):
        packed = eid(n).packed
        yield {**base, "net": f"{eid(n)}/32", "rec": template[:address_at] + packed + template[address_at + 4:]}


class LoadedServer:
    """The process, started on ephemeral loopback ports with `count` registrations restored."""

    def __init__(self, workdir: Path, count: int) -> None:
        from lisp_ryu.mapserver.store import write_snapshot

        self.count = count
        config = workdir / "ms.yaml"
        config.write_text(CONFIG)
        data_dir = workdir / "data"
        write_snapshot(str(data_dir), snapshot_entries(count))
        self.log = workdir / "mapserver.log"
        argv = [sys.executable, "-m", "lisp_ryu", "mapserver", "--config", str(config), "--listen", "127.0.0.1:0",
                "--http", "127.0.0.1:0", "--data-dir", str(data_dir), "--log-level", "INFO"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=REPO)
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else ""
        match = READY.search(line)
        if not match or f"registrations {count}" not in line:
            self.kill()
            raise RuntimeError(f"mapserver did not start with {count} registrations: {line!r}\n"
                               f"{self.log.read_text()[-2000:]}")
        self.port, self.http_port = int(match.group(1)), int(match.group(2))
        self.url = f"http://127.0.0.1:{self.http_port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()


class Prober:
    """Closed loop, one Map-Request in flight: the longest time between two answers is the stall."""

    def __init__(self, server: LoadedServer, distinct: int = 1024) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        self.target = ("127.0.0.1", server.port)
        self.requests = [packets.map_request_ecm(str(eid(n * 97 % server.count)), ["127.0.0.1"], nonce=n + 1,
                                                 source_port=port) for n in range(distinct)]
        self.sent = 0

    def run(self, done, limit: float, pace: float = 0.001) -> dict:
        """Probe until `done()` is true or `limit` seconds pass; the gaps between answers, in seconds.

        A request at most every `pace` seconds: the probe must not take the CPU the server
        and the view reader share on a small machine.
        """
        answers = lost = 0
        longest = 0.0
        started = last = time.monotonic()
        while not done() and last - started < limit:
            wait = last + pace - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.sock.sendto(self.requests[self.sent % len(self.requests)], self.target)
            self.sent += 1
            ready, _, _ = select.select([self.sock], [], [], 5.0)
            now = time.monotonic()
            if not ready:
                lost += 1
                continue
            self.sock.recv(65535)
            answers += 1
            longest = max(longest, now - last)
            last = now
        return {"answers": answers, "lost": lost, "longest_gap_s": round(longest, 4),
                "seconds": round(time.monotonic() - started, 2)}

    def close(self) -> None:
        self.sock.close()


#: Reads every page of a list resource, following `next`; prints what it saw as one JSON line.
PAGER = r"""
import json, sys, time, urllib.parse, urllib.request
base, resource, limit = sys.argv[1], sys.argv[2], sys.argv[3]
after, rows, pages, biggest, keys, started = None, 0, 0, 0, set(), time.monotonic()
while True:
    url = f"{base}/lisp/v1/{resource}?limit={limit}"
    if after:
        url += "&after=" + urllib.parse.quote(after)
    with urllib.request.urlopen(url, timeout=60) as response:
        data = json.load(response)
    items = data[resource]
    rows += len(items); pages += 1; biggest = max(biggest, len(items))
    keys.update((i["iid"], i["prefix"]) for i in items)
    after = data.get("next")
    if not after:
        break
print(json.dumps({"rows": rows, "distinct": len(keys), "pages": pages, "biggest_page": biggest,
                  "total": data["total"], "seconds": round(time.monotonic() - started, 2)}))
"""


def pager(server: LoadedServer, resource: str = "registrations", limit: int = 10_000_000) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PAGER, server.url, resource, str(limit)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def idle_connections(server: LoadedServer, count: int) -> list[socket.socket]:
    """Connections that never finish a request: half of them say nothing, half stop mid-line."""
    socks = []
    for n in range(count):
        sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=5)
        if n % 2:
            sock.sendall(b"GET /lisp/v1/regis")
        socks.append(sock)
    return socks
