"""Registrations by Map-Register: their rate, the stall a refresh round causes, their memory; against OOR.

Open Overlay Router 1.3.0 in Map-Server mode (`make oor`, run from where it
was extracted) and `lisp-ryu mapserver` (with a data directory, as deployed)
run in the same private network namespace, one after the other, fresh each
time, interleaved over the rounds (quick: 1, else 3); the best round of each
counts, as in the other benchmarks.  Per round and server:

1. N /32 EIDs (quick: 20k, else 100k) are registered by Map-Registers of 100
   records each, with the M bit, 8 in flight, each acknowledged by its
   Map-Notify: records/s (`registers_per_s.*.fresh`).
2. A closed-loop Map-Request client (the one of `bench_mapserver`, 16 in
   flight, 4096 registered EIDs over and over) runs for 5 s (quick: 2): requests/s
   (`requests_per_s_vs_oor`).  Every answer is checked (a Map-Reply mapping the EID
   asked for to the RLOC registered): wrong and lost ones are counted per server.
   The server's CPU time per answer over the same window is reported too
   (`cpu_us_per_request`): steadier than the rate when the machine is busy.
3. It keeps running while every registration is refreshed by the same
   Map-Registers with new nonces, as ETRs do every minute:
   records/s (`registers_per_s.*.refresh`), and the longest time the
   client got no answer meanwhile (`max_silence_ms.refresh_*`).
4. The server's resident size then, less its size before step 1, per
   registration (`memory_bytes_per_live_registration.*`): registrations made
   by Map-Register and refreshed once.

Goals (issue 18) that are absolute, not ratios, are in each figure's detail
(`goal`).  `make bench` runs 100k; the 1M figures (`bench/bench_registration.py
--quick --size 1000000`: one round, ~2 minutes of Map-Registers per server)
are opt-in.  Without root (no namespace) or without OOR the figures of our
server alone are reported, baselines NaN, with a line saying why.
"""

from __future__ import annotations

import ipaddress
import math
import multiprocessing
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OOR_ROOT = os.environ.get("LISP_RYU_OOR_ROOT", os.path.join(REPO, ".cache", "oor", "root"))  # as tests/interop
KEY = "bench-key"
CONFIG = """\
map_server:
  rate_limit_per_source: 1000000000
  sites:
    - name: bench
      key: {key}
      eid_prefixes:
        - {{prefix: 10.0.0.0/8, accept_more_specifics: true}}
""".format(key=KEY)
OOR_CONFIG = """\
debug = 0
operating-mode = MS
control-iface = lo
lisp-site {{
    eid-prefix = 10.0.0.0/8
    key-type = 1
    key = {key}
    iid = 0
    accept-more-specifics = true
}}
""".format(key=KEY)
RECORDS_PER_MESSAGE = 100
REGISTER_WINDOW = 8
REQUEST_WINDOW = 16
STEADY_S = 5.0  # quick: 2
OURS_PORT, OOR_PORT = 4343, 4342  # OOR binds 0.0.0.0:4342 whatever it is told
READY = re.compile(r"udp 127\.0\.0\.1:(\d+)")

if __package__ in (None, ""):  # run as a script: the repository root holds the `bench` package
    sys.path.insert(0, REPO)
# The same registered EIDs and the same Map-Requests for them as the Map-Server bench.
from bench.bench_mapserver import HOT_EIDS, NONCE_AT_ECM, _eid, _packets, _requests  # noqa: E402


def _oor_binary() -> tuple[str, str] | None:
    binary = os.path.join(OOR_ROOT, "usr", "sbin", "oor")
    libdir = os.path.join(OOR_ROOT, "usr", "lib", "x86_64-linux-gnu")
    return (binary, libdir) if os.path.isfile(binary) else None


def _messages(size: int, round_: int) -> list[bytes]:
    """Signed Map-Registers of 100 records each, every message with its own nonce (round_ picks them)."""
    from dataclasses import replace

    from lisp_ryu.wire import MapRegister, sign

    packets = _packets()
    template = record = packets.record("10.0.0.1/32", ["198.18.0.1"])
    out = []
    for first in range(0, size, RECORDS_PER_MESSAGE):
        records = tuple(replace(template, eid=ipaddress.IPv4Address(_eid(n)))
                        for n in range(first, min(first + RECORDS_PER_MESSAGE, size)))
        message = MapRegister(nonce=(round_ << 40) | (first + 1), records=records, proxy_map_reply=True,
                              want_map_notify=True)
        out.append(sign(message, KEY).encode())
    del record
    return out


# ------------------------------------------------------------------------------------------ namespace


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def _socket(netns: str | None) -> socket.socket:
    if netns is None:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    from lisp_ryu.glue.netns import run_in_netns

    return run_in_netns(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))


# ------------------------------------------------------------------------------------------ servers


class Server:
    def __init__(self, kind: str, netns: str | None, workdir: str) -> None:
        self.kind = kind
        self.netns = netns
        self.workdir = os.path.join(workdir, kind)
        os.makedirs(self.workdir)
        self.proc: subprocess.Popen | None = None
        self.port = OURS_PORT if kind == "ours" else OOR_PORT

    def start(self) -> "Server":
        if self.kind == "ours":
            config = os.path.join(self.workdir, "ms.yaml")
            with open(config, "w") as fh:
                fh.write(CONFIG)
            argv = [sys.executable, "-m", "lisp_ryu", "mapserver", "--config", config, "--listen",
                    f"127.0.0.1:{self.port if self.netns else 0}", "--http", "off", "--data-dir",
                    os.path.join(self.workdir, "data"), "--log-level", "WARNING"]
            if self.netns:
                argv += ["--netns", self.netns]
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
            ready, _, _ = select.select([self.proc.stdout], [], [], 60)
            line = self.proc.stdout.readline() if ready else ""
            match = READY.search(line)
            if not match:
                raise RuntimeError(f"lisp-ryu mapserver did not start: {line!r}")
            self.port = int(match.group(1))
        else:
            binary, libdir = _oor_binary()  # type: ignore[misc]
            with open(os.path.join(self.workdir, "oor.conf"), "w") as fh:
                fh.write(OOR_CONFIG)
            shutil.copy2(binary, os.path.join(self.workdir, "lo-oor"))
            shutil.copytree(libdir, os.path.join(self.workdir, "lib"), symlinks=True)
            # A private /tmp (its API socket and id file), as tests/interop/test_oor.py runs it.
            script = ('mount --bind "$0" /tmp && export LD_LIBRARY_PATH=/tmp/lib && '
                      'exec stdbuf -oL -eL /tmp/lo-oor -f /tmp/oor.conf')
            self.log = open(os.path.join(self.workdir, "log"), "w+b")
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.netns, "bash", "-c", script, self.workdir],
                                         stdout=self.log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 20
            seen = b""
            while b"started..." not in seen:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"OOR did not start: {seen[-500:]!r}")
                time.sleep(0.1)
                with open(self.log.name, "rb") as fh:
                    seen = fh.read()
            with open(f"/proc/{self.proc.pid}/comm") as fh:  # `ip netns exec` and bash exec'd into it
                if "oor" not in fh.read():
                    raise RuntimeError("OOR is not the process started")
        return self

    def cpu_s(self) -> float:
        """CPU time the server has used (user and system): a rate that a busy machine cannot bend much."""
        with open(f"/proc/{self.proc.pid}/stat") as fh:  # type: ignore[union-attr]
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as fh:  # type: ignore[union-attr]
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr, getattr(self, "log", None)):
            if stream is not None:
                stream.close()


# ------------------------------------------------------------------------------------------ clients


def _register(sock: socket.socket, port: int, messages: list[bytes]) -> dict:
    """Closed loop: REGISTER_WINDOW Map-Registers in flight, each done when its Map-Notify (same nonce) comes.

    From one socket for both rounds: an ETR refreshes from the address and port it registered from."""
    target = ("127.0.0.1", port)
    pending: dict[bytes, int] = {}
    sent = acked = lost = 0
    started = time.monotonic()
    while acked + lost < len(messages):
        while len(pending) < REGISTER_WINDOW and sent < len(messages):
            message = messages[sent]
            sock.sendto(message, target)
            pending[message[4:12]] = sent
            sent += 1
        ready, _, _ = select.select([sock], [], [], 2.0)
        if not ready:
            lost += len(pending)
            pending.clear()
            continue
        while True:
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                break
            if data[0] >> 4 == 4 and pending.pop(data[4:12], None) is not None:
                acked += 1
    elapsed = time.monotonic() - started
    records = acked * RECORDS_PER_MESSAGE
    return {"records_per_s": records / elapsed, "seconds": elapsed, "lost_messages": lost,
            "started": started, "finished": started + elapsed}


def _ask(netns: str | None, port: int, registered: int, stop, out) -> None:
    """Closed-loop Map-Request client (a child process): the time of every answer, until `stop` is set."""
    sock = _socket(netns)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    payloads = _requests(sock.getsockname()[1], registered, HOT_EIDS)
    sock.setblocking(False)
    target = ("127.0.0.1", port)
    in_flight: dict[int, float] = {}
    answers: list[float] = []
    # Every distinct answer per request (the reply without its nonce), counted: checked after the run.
    replies: dict[tuple[int, bytes], int] = {}
    count = len(payloads)
    sent = lost = 0
    monotonic = time.monotonic
    while not stop.is_set():
        while len(in_flight) < REQUEST_WINDOW:
            payload = payloads[sent % len(payloads)]
            sock.sendto(payload[:NONCE_AT_ECM] + sent.to_bytes(8, "big") + payload[NONCE_AT_ECM + 8:], target)
            in_flight[sent] = monotonic()
            sent += 1
        ready, _, _ = select.select([sock], [], [], 0.2)
        if not ready:
            lost += len(in_flight)
            in_flight.clear()
            continue
        while True:
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                break
            nonce = int.from_bytes(data[4:12], "big")
            if in_flight.pop(nonce, None) is not None:
                answers.append(monotonic())
                key = (nonce % count, data[:4] + data[12:])
                replies[key] = replies.get(key, 0) + 1
    out.put({"answers": answers, "lost": lost, "wrong": _wrong_answers(replies, registered)})


def _wrong_answers(replies: dict[tuple[int, bytes], int], registered: int) -> int:
    """Answers that are not a Map-Reply mapping the EID asked for (as `_requests` chose it) to the one
    RLOC it was registered with: each distinct reply decoded once, counted as often as it came."""
    from lisp_ryu.wire import LispDecodeError, MapReply, decode_message

    expected_rloc = ipaddress.ip_address("198.18.0.1")
    wrong = 0
    for (index, reply), times in replies.items():
        eid = ipaddress.IPv4Address(_eid((index * 104729) % registered))  # as `_requests` picks it
        try:
            message = decode_message(reply[:4] + bytes(8) + reply[4:])
        except LispDecodeError:
            wrong += times
            continue
        good = (isinstance(message, MapReply) and len(message.records) == 1
                and message.records[0].eid_prefix.address == eid
                and [loc.address for loc in message.records[0].locators] == [expected_rloc])
        wrong += 0 if good else times
    return wrong


def _one(server: Server, netns: str | None, size: int, fresh: list[bytes], refresh: list[bytes],
         steady_s: float = STEADY_S) -> dict:
    """One fresh server: register, ask, refresh while asking, measure."""
    server.start()
    try:
        time.sleep(0.5)
        rss_before = server.rss_kib()
        etr = _socket(netns)
        etr.bind(("127.0.0.1", 0))
        etr.setblocking(False)
        registered = _register(etr, server.port, fresh)
        context = multiprocessing.get_context("fork")
        stop, out = context.Event(), context.Queue()
        asker = context.Process(target=_ask, args=(netns, server.port, size, stop, out))
        asker.start()
        try:
            time.sleep(0.5)  # warm-up
            steady_from, cpu_from = time.monotonic(), server.cpu_s()
            time.sleep(steady_s)
            steady_to, cpu_to = time.monotonic(), server.cpu_s()
            refreshed = _register(etr, server.port, refresh)
            time.sleep(0.3)
            stop.set()
            asked = out.get(timeout=60)
        finally:
            asker.join(timeout=10)
            if asker.is_alive():
                asker.kill()
        rss_after = server.rss_kib()
        etr.close()
    finally:
        server.stop()
    answers = asked["answers"]
    answered = sum(1 for t in answers if steady_from <= t < steady_to)
    steady = answered / (steady_to - steady_from)
    # The longest gap between answers while the refresh ran (and across its start and end).
    start, end = refreshed["started"], refreshed["finished"]
    times = [t for t in answers if start <= t <= end]
    before = [t for t in answers if t < start]
    after = [t for t in answers if t > end]
    edges = ([before[-1]] if before else [start]) + times + ([after[0]] if after else [end])
    silence = max((b - a for a, b in zip(edges, edges[1:])), default=end - start)
    return {
        "fresh": registered["records_per_s"], "refresh": refreshed["records_per_s"],
        "refresh_s": refreshed["seconds"], "lost_registers": registered["lost_messages"] + refreshed["lost_messages"],
        "requests_per_s": steady, "silence_ms": 1000 * silence, "lost_requests": asked["lost"],
        "wrong_answers": asked["wrong"], "cpu_us_per_request": 1e6 * (cpu_to - cpu_from) / max(answered, 1),
        "bytes_per_registration": 1024 * (rss_after - rss_before) / size,
    }


def _label(size: int) -> str:
    return f"{size // 1_000_000}m" if size >= 1_000_000 else f"{size // 1000}k"


def run(quick: bool = False, size: int | None = None) -> dict[str, dict]:
    size = size or (20_000 if quick else 100_000)
    rounds = 1 if quick else 3
    why_not = None
    if os.geteuid() != 0:
        why_not = "not root: no network namespace, so no OOR"
    elif _oor_binary() is None:
        why_not = f"Open Overlay Router not extracted at {OOR_ROOT} (run `make oor`)"
    elif shutil.which("stdbuf") is None:
        why_not = "stdbuf is not installed"
    if why_not:
        print(f"bench_registration: OOR baseline skipped: {why_not}", file=sys.stderr)
    fresh, refresh = _messages(size, 1), _messages(size, 2)
    netns = None if os.geteuid() != 0 else f"lo-benchreg-{os.getpid() % 0x10000:04x}"
    results: dict[str, list[dict]] = {"ours": [], "oor": []}
    with tempfile.TemporaryDirectory(prefix="bench-registration-") as tmp:
        if netns:
            _run("ip", "netns", "add", netns)
        try:
            if netns:
                _run("ip", "-n", netns, "link", "set", "lo", "up")
            for n in range(rounds):
                kinds = ("ours",) if why_not else (("oor", "ours") if n % 2 else ("ours", "oor"))
                for kind in kinds:
                    results[kind].append(_one(Server(kind, netns, os.path.join(tmp, str(n))), netns, size, fresh,
                                              refresh, 2.0 if quick else STEADY_S))
        finally:
            if netns:
                subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=30)
    return _figures(size, results, why_not)


def _best(runs: list[dict], name: str, lowest: bool = False) -> float:
    if not runs:
        return math.nan
    values = [r[name] for r in runs]
    return min(values) if lowest else max(values)


def _figures(size: int, results: dict[str, list[dict]], why_not: str | None) -> dict[str, dict]:
    ours, oor = results["ours"], results["oor"]
    label = _label(size)
    note = {"oor": f"skipped: {why_not}"} if why_not else {}

    def figure(name: str, unit: str, lowest: bool, target: float | None, **extra) -> dict:
        value, base = _best(ours, name, lowest), _best(oor, name, lowest)
        ratio = value / base if base and not math.isnan(base) else math.nan
        out = {"value": value, "unit": unit, "baseline": base, "ratio": ratio,
               "target": None if why_not else target, "runs": [round(r[name], 1) for r in ours],
               "oor_runs": [round(r[name], 1) for r in oor], **note, **extra}
        if lowest:
            out["target_is_max"] = True
        return out

    return {
        f"mapserver.max_silence_ms.refresh_{label}": figure(
            "silence_ms", "ms", True, None, goal="<= 30 ms (absolute)", refresh_s=[round(r["refresh_s"], 2) for r in ours],
            lost_requests=[r["lost_requests"] for r in ours]),
        f"mapserver.registers_per_s.{label}.fresh": figure("fresh", "records/s", False, None),
        f"mapserver.registers_per_s.{label}.refresh": figure("refresh", "records/s", False, 0.5),
        f"mapserver.requests_per_s_vs_oor.{label}": figure(
            "requests_per_s", "req/s", False, 1.0, wrong_answers=[r["wrong_answers"] for r in ours],
            oor_wrong_answers=[r["wrong_answers"] for r in oor], lost_requests=[r["lost_requests"] for r in ours],
            oor_lost_requests=[r["lost_requests"] for r in oor],
            cpu_us_per_request=[round(r["cpu_us_per_request"], 2) for r in ours],
            oor_cpu_us_per_request=[round(r["cpu_us_per_request"], 2) for r in oor]),
        f"mapserver.memory_bytes_per_live_registration.{label}": figure(
            "bytes_per_registration", "B", True, None, goal="<= 1024 B (absolute)"),
    }


if __name__ == "__main__":
    import argparse

    sys.path.insert(0, REPO)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, 20k registrations unless --size")
    parser.add_argument("--size", type=int, help="registrations (1000000: the 1M figures, minutes per round)")
    args = parser.parse_args()
    from bench.__main__ import print_table

    print_table(run(quick=args.quick, size=args.size))
