"""Legitimate Map-Requests answered while spoofed sources flood the standalone Map-Server (loopback only).

The server (`lisp-ryu mapserver`, a subprocess, with a data directory on
disk so journal writes cost what they cost) holds a few registered EIDs.  A
legitimate ITR on 127.0.0.1 asks for them at `LEGIT_RATE` requests/s and
counts the Map-Replies.  Meanwhile a flooder process sends `FLOOD_RATE`
datagrams/s from `SOURCES` sockets bound to addresses of 127.1.0.0/16 (the
whole 127/8 is local on Linux: nothing leaves the host), each inside the
default per-source rate limit, of one kind per run:

    map_request   plain Map-Requests (the fast path)
    negative      plain Map-Requests for EIDs nobody registered (the full path each)
    subscribe     subscribing Map-Requests, a new xTR-ID each (a journal write each, before)
    register      Map-Registers that fail authentication
    notify_ack    Map-Notify-Acks matching nothing

Those are the messages a spoofer can send without a key that make the
server do work or hold state.  Figure: the share of legitimate requests
answered under the flood, against the share without it (target >= 0.9).
"""

from __future__ import annotations

import multiprocessing
import os
import select
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
KEY = "bench-key"
CONFIG = f"""\
map_server:
  sites:
    - name: bench
      key: {KEY}
      eid_prefixes:
        - {{prefix: 10.0.0.0/8, accept_more_specifics: true}}
"""
KINDS = ("map_request", "negative", "subscribe", "register", "notify_ack")
LEGIT_RATE = 200
FLOOD_RATE = 10_000
SOURCES = 1000
EIDS = 50


def _packets():
    if TESTS not in sys.path:
        sys.path.insert(0, TESTS)
    from support import packets

    return packets


def _flood_datagrams(kind: str, source: str, index: int) -> bytes:
    packets = _packets()
    eid = f"10.0.{index % EIDS}.1"
    if kind == "map_request":
        return packets.map_request_ecm(eid, [source], nonce=index)
    if kind == "negative":  # inside the site's configured prefix, never registered: a computed negative answer
        return packets.map_request_ecm(f"10.77.{index % 250}.{index // 250 % 250 + 1}", [source], nonce=index)
    if kind == "subscribe":
        return packets.map_request_ecm(eid, [source], nonce=index, subscribe=True, xtr_id=(1 << 100) + index,
                                       site_id=1)
    if kind == "register":
        return packets.map_register([packets.record(f"10.9.{index % 250}.0/24", [source])], "wrong-key",
                                    nonce=index, want_notify=True)
    return packets.map_notify_ack((1 << 62) + index, [], None)


def _flooder(kind: str, port: int, seconds: float, ready) -> None:
    socks, payloads = [], []
    for i in range(SOURCES):
        address = f"127.1.{i // 250}.{i % 250 + 1}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((address, 0))
        sock.setblocking(False)
        socks.append(sock)
        payloads.append([_flood_datagrams(kind, address, i * 16 + k) for k in range(16)])
    ready.set()
    tick = 0.01
    per_tick = int(FLOOD_RATE * tick)
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < seconds:
        for _ in range(per_tick):
            i = sent % SOURCES
            try:
                socks[i].sendto(payloads[i][(sent // SOURCES) % 16], ("127.0.0.1", port))
            except OSError:
                pass
            sent += 1
        ahead = started + sent / FLOOD_RATE - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)


def _legit(port: int, seconds: float) -> float:
    """Send LEGIT_RATE requests/s for `seconds` from 127.0.0.1; the share answered (1 s of grace at the end)."""
    packets = _packets()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    own_port = sock.getsockname()[1]
    total = int(LEGIT_RATE * seconds)
    requests = [packets.map_request_ecm(f"10.0.{n % EIDS}.1", ["127.0.0.1"], nonce=n + 1, source_port=own_port)
                for n in range(total)]
    answered: set[bytes] = set()
    started = time.monotonic()
    for n, payload in enumerate(requests):
        while True:
            wait = started + n / LEGIT_RATE - time.monotonic()
            if wait <= 0:
                break
            if select.select([sock], [], [], wait)[0]:
                answered.add(sock.recv(65535)[4:12])
        sock.sendto(payload, ("127.0.0.1", port))
    end = time.monotonic() + 1.0
    while len(answered) < total and (left := end - time.monotonic()) > 0:
        if select.select([sock], [], [], left)[0]:
            answered.add(sock.recv(65535)[4:12])
    sock.close()
    return len(answered) / total


def _register(port: int) -> None:
    packets = _packets()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    records = [packets.record(f"10.0.{n}.1/32", ["127.0.0.2"]) for n in range(EIDS)]
    sock.sendto(packets.map_register(records, KEY, proxy=True, want_notify=True), ("127.0.0.1", port))
    if not select.select([sock], [], [], 5)[0]:
        raise RuntimeError("no Map-Notify for the bench's registrations")
    sock.close()


def _run_server(tmp: str):
    from bench.bench_mapserver import READY

    config = os.path.join(tmp, "ms.yaml")
    with open(config, "w") as fh:
        fh.write(CONFIG)
    argv = [sys.executable, "-m", "lisp_ryu", "mapserver", "--config", config, "--listen", "127.0.0.1:0",
            "--http", "off", "--data-dir", os.path.join(tmp, "data"), "--log-level", "ERROR"]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO, env=env)
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    match = READY.search(line)
    if not match:
        proc.kill()
        raise RuntimeError(f"mapserver did not start: {line!r}")
    return proc, int(match.group(1))


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` so far (Linux /proc), else None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def measure(kinds=KINDS, seconds: float = 4.0, cpu: dict[str, float] | None = None) -> dict[str, float]:
    """{"none": share answered without a flood, kind: share answered under that flood}; `cpu` gets the
    server's CPU use (cores) over each legitimate run."""
    shares = {}
    context = multiprocessing.get_context("fork")
    for kind in ("none", *kinds):
        with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
            proc, port = _run_server(tmp)
            try:
                _register(port)
                flooder = None
                if kind != "none":
                    ready = context.Event()
                    flooder = context.Process(target=_flooder, args=(kind, port, seconds + 1.5, ready))
                    flooder.start()
                    ready.wait(30)
                    time.sleep(0.5)  # the flood is on before the first legitimate request
                used, started = _cpu_seconds(proc.pid), time.monotonic()
                shares[kind] = _legit(port, seconds)
                after = _cpu_seconds(proc.pid)
                if cpu is not None and used is not None and after is not None:
                    cpu[kind] = (after - used) / (time.monotonic() - started)
                if flooder is not None:
                    flooder.join(10)
            finally:
                proc.kill()
                proc.wait()
    return shares


def run(quick: bool = False) -> dict[str, dict]:
    cpu: dict[str, float] = {}
    shares = measure(seconds=2.0 if quick else 4.0, cpu=cpu)
    base = shares["none"]
    return {f"mapserver.legit_answered_under_flood.{kind}": {
        "value": shares[kind], "unit": "share", "baseline": base, "ratio": shares[kind] / base if base else 0.0,
        "target": 0.9, "flood": f"{FLOOD_RATE} datagrams/s from {SOURCES} spoofed 127.1/16 sources",
        "legitimate": f"{LEGIT_RATE} requests/s", "server_cpu_cores": cpu.get(kind),
        "server_cpu_cores_without_flood": cpu.get("none")} for kind in KINDS}


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    for name, figure in run(quick="--quick" in sys.argv).items():
        load = figure["server_cpu_cores"]
        print(f"{name}: {figure['value']:.3f} (without flood {figure['baseline']:.3f})"
              + (f", server CPU {load:.2f} cores" if load is not None else ""))
