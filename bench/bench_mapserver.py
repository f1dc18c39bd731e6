"""Map-Requests answered per second by the standalone Map-Server over UDP on loopback.

The server (`lisp-ryu mapserver`, a subprocess) starts from a data directory
holding N registered /32 EID prefixes (written as a snapshot, so start-up
also measures restoring N registrations).  A load generator in another
process keeps a window of ECM-encapsulated Map-Requests in flight for
registered EIDs and times each Map-Reply by its nonce.  It cycles through
HOT_EIDS of them, spread over the whole table, as a resolver's clients keep
asking for the same destinations; the Map-Server's answer cache holds them
all.  At the large size a second load asks for a new EID every time, so
that no answer is ever cached: the worst case, reported beside the main
figure without a target.  The baseline, run in
the same invocation against the same generator, is a minimal Python UDP echo
server: the most a one-threaded Python UDP server can answer on this machine.
Each server gets 3 loads in a row (quick: 1) and the best counts, for the
echo as for the Map-Server, as the other benchmarks take the least disturbed
of several runs (back-to-back loads vary; bench/README.md says how much).

Figures: requests/s at 10k and 1M prefixes (quick: 10k and 100k) as a ratio
of the echo ceiling (target 0.5), their p50/p99 latency against the echo's,
the start-up time per restored registration (against merely unpacking the
snapshot), how much more a request costs at the large size than at 10k
(target at most 1.5), and the memory a registration takes in the server
(resident size growth from the small to the large table, against its bytes
in the snapshot; measured just after the restore).  Last, in this process,
how long a journal compaction stops the server with 100k registrations that
came by Map-Register (quick: 20k), against encoding every entry again (what
a compaction would cost without the entries encoded on arrival).

The datagrams are built with the tests' packet builders (tests/support/packets.py):
`_packets()` puts tests/ on the import path for them.
"""

from __future__ import annotations

import ipaddress
import multiprocessing
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import time


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
CONFIG = """\
map_server:
  rate_limit_per_source: 1000000000
  sites:
    - name: bench
      key: bench-key
      eid_prefixes:
        - {prefix: 10.0.0.0/8, accept_more_specifics: true}
"""
WINDOW = 16
#: Distinct EIDs asked for in the main figures, over and over: a resolver's hot set of destinations.
HOT_EIDS = 4096
NONCE_AT_REPLY = 4  # Map-Reply: type word, then the nonce
NONCE_AT_ECM = 4 + 20 + 8 + 4  # ECM header, inner IPv4, inner UDP, Map-Request type word
READY = re.compile(r"udp 127\.0\.0\.1:(\d+)")


def _eid(n: int) -> int:
    """The n-th registered EID: spread over 10.0.0.0/8 so the trie has real depth."""
    return 0x0A000000 + (n * 7919) % (1 << 24)


def _packets():
    """The tests' packet builders (`support.packets`), importable once tests/ is on the path."""
    if TESTS not in sys.path:
        sys.path.insert(0, TESTS)
    from support import packets

    return packets


def _snapshot_entries(count: int):
    from lisp_ryu.mapserver.state import record_bytes

    packets = _packets()
    template = record_bytes(packets.record("10.0.0.1/32", ["198.18.0.1"]))
    address_at = template.index(bytes([10, 0, 0, 1]))
    base = {"t": "reg", "iid": 0, "etr": "rloc:198.18.0.1", "site": "bench", "src": "198.18.0.1", "port": 4342,
            "proxy": True, "kid": 0, "alg": 1, "at": time.time(), "exp": time.time() + 86400, "xid": None, "sid": None}
    for n in range(count):
        value = _eid(n)
        rec = template[:address_at] + value.to_bytes(4, "big") + template[address_at + 4:]
        yield {**base, "net": f"{ipaddress.IPv4Address(value)}/32", "rec": rec}


def _requests(source_port: int, count: int, distinct: int) -> list[bytes]:
    """ECM Map-Requests for registered EIDs, zero inner UDP checksum so the nonce can be patched in."""
    from lisp_ryu.wire import EncapsulatedControlMessage, MapRequest, MapRequestRecord

    packets = _packets()
    loopback = ipaddress.ip_address("127.0.0.1")
    out = []
    for i in range(min(distinct, count)):
        eid = ipaddress.IPv4Address(_eid((i * 104729) % count))
        request = MapRequest(nonce=0, records=(MapRequestRecord.for_prefix(packets.eid(f"{eid}/32")),),
                             itr_rlocs=(loopback,))
        ecm = EncapsulatedControlMessage(message=request, inner_source=loopback, inner_destination=eid,
                                         inner_source_port=source_port, zero_udp_checksum=True)
        out.append(ecm.encode())
    return out


def _generate(port: int, registered: int, total: int, seconds: float, distinct: int, results) -> None:
    """Closed loop: keep WINDOW requests in flight, time each answer by its nonce (runs in a child process)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    payloads = _requests(sock.getsockname()[1], registered, distinct)
    target = ("127.0.0.1", port)
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    sent = lost = answered = 0
    warmup = min(2000, total // 10)
    started = None
    deadline = time.monotonic() + seconds
    sock.setblocking(False)
    while answered + lost < total + warmup and time.monotonic() < deadline:
        while len(sent_at) < WINDOW and sent < total + warmup:
            payload = payloads[sent % len(payloads)]
            nonce = sent.to_bytes(8, "big")
            sock.sendto(payload[:NONCE_AT_ECM] + nonce + payload[NONCE_AT_ECM + 8:], target)
            sent_at[sent] = time.perf_counter()
            sent += 1
        ready, _, _ = select.select([sock], [], [], 0.5)
        if not ready:  # answers lost (buffer overflow): count them and refill the window
            lost += len(sent_at)
            sent_at.clear()
            continue
        while True:
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                break
            at = NONCE_AT_REPLY if data[0] >> 4 == 2 else NONCE_AT_ECM
            nonce = int.from_bytes(data[at:at + 8], "big")
            t0 = sent_at.pop(nonce, None)
            if t0 is None:
                continue
            answered += 1
            if nonce >= warmup:
                if started is None:
                    started = t0
                latencies.append(time.perf_counter() - t0)
    finished = time.perf_counter()
    elapsed = finished - (started or finished)
    latencies.sort()
    results.put({
        "answered": len(latencies),
        "lost": lost,
        "rate": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else float("nan"),
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else float("nan"),
    })


def _echo(ready) -> None:
    """The baseline: receive a datagram, send it back. Nothing a UDP server can do is cheaper."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    ready.put(sock.getsockname()[1])
    while True:
        data, address = sock.recvfrom(65535)
        sock.sendto(data, address)


def _load(port: int, registered: int, total: int, seconds: float, distinct: int = HOT_EIDS) -> dict:
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    generator = context.Process(target=_generate, args=(port, registered, total, seconds, distinct, results))
    generator.start()
    try:
        return results.get(timeout=seconds + 60)
    finally:
        generator.join(timeout=10)
        if generator.is_alive():
            generator.kill()


def _best_load(rounds: int, port: int, registered: int, total: int, seconds: float) -> dict:
    """The least disturbed of `rounds` loads against one server (the highest rate), with every rate."""
    runs = [_load(port, registered, total, seconds) for _ in range(rounds)]
    best = max(runs, key=lambda r: r["rate"])
    return {**best, "rates": [round(r["rate"]) for r in runs]}


def _echo_baseline(rounds: int, total: int, seconds: float) -> dict:
    context = multiprocessing.get_context("fork")
    ready = context.Queue()
    server = context.Process(target=_echo, args=(ready,), daemon=True)
    server.start()
    try:
        return _best_load(rounds, ready.get(timeout=10), HOT_EIDS, total, seconds)
    finally:
        server.kill()
        server.join()


def _mapserver(size: int, rounds: int, total: int, seconds: float, no_repeat: bool) -> dict:
    from lisp_ryu.mapserver.snapshot_rows import grouped
    from lisp_ryu.mapserver.store import write_snapshot
    from lisp_ryu.mapserver.store_format import read_snapshot

    with tempfile.TemporaryDirectory(prefix="bench-mapserver-") as tmp:
        config = os.path.join(tmp, "ms.yaml")
        with open(config, "w") as fh:
            fh.write(CONFIG)
        data_dir = os.path.join(tmp, "data")
        write_snapshot(data_dir, grouped(_snapshot_entries(size)))  # as a compaction writes them: in rows
        unpack_started = time.perf_counter()  # the floor of any restore: just reading the snapshot
        with open(os.path.join(data_dir, "snapshot.msgpack"), "rb") as fh:
            read_snapshot(fh.read())  # checksum included
        unpack_s = time.perf_counter() - unpack_started
        argv = [sys.executable, "-m", "lisp_ryu", "mapserver", "--config", config, "--listen", "127.0.0.1:0",
                "--http", "off", "--data-dir", data_dir, "--log-level", "WARNING"]
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 60 + size * 0.0005)
            line = proc.stdout.readline() if ready else ""
            match = READY.search(line)
            if not match:
                raise RuntimeError(f"mapserver with {size} registrations did not start: {line!r}")
            restore_s = time.perf_counter() - started
            rss_kib = _rss_kib(proc.pid)
            if f"registrations {size}" not in line:
                raise RuntimeError(f"expected {size} restored registrations: {line.strip()}")
            port = int(match.group(1))
            result = _best_load(rounds, port, size, total, seconds)
            if no_repeat:  # then the worst case for the answer cache: every request for an EID not asked before
                cold = _load(port, size, total, seconds, distinct=total + total // 10)
                result["cold_rate"] = cold["rate"]
            result["restore_s"] = restore_s
            result["unpack_s"] = unpack_s
            result["rss_kib"] = rss_kib
            result["snapshot_bytes"] = os.path.getsize(os.path.join(data_dir, "snapshot.msgpack"))
            return result
        finally:
            proc.kill()
            proc.wait()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def _compaction(size: int) -> dict:
    """Seconds one compaction stops the Map-Server for, with `size` registrations that came by
    Map-Register (so each holds its entry encoded), against encoding every entry again: both
    write the same snapshot file to the same disk."""
    import ipaddress as ip

    from lisp_ryu import config as config_mod
    from lisp_ryu.mapserver.service import MapServer
    from lisp_ryu.mapserver.store import FileStore

    packets = _packets()

    with tempfile.TemporaryDirectory(prefix="bench-compaction-") as tmp:
        config = os.path.join(tmp, "ms.yaml")
        with open(config, "w") as fh:
            fh.write(CONFIG)
        store = FileStore(os.path.join(tmp, "data"))
        store.load()
        core = MapServer(config_mod.load(config).map_server, nonces=lambda: 1, now=time.time(), store=store)
        etr, now = ip.ip_address("198.18.0.1"), time.time()
        for first in range(0, size, 100):  # 100 records per Map-Register, as an ETR with many EIDs sends
            records = [packets.record(f"{ip.IPv4Address(_eid(n))}/32", ["198.18.0.1"])
                       for n in range(first, min(first + 100, size))]
            core.handle_control(packets.map_register(records, "bench-key", proxy=True), etr, 4342, now)
        if core.registration_count != size:
            raise RuntimeError(f"expected {size} registrations, have {core.registration_count}")
        timings = {}
        for name, entries in (("joined", core._journal.stored_state), ("encoded", core.state_entries)):
            started = time.perf_counter()
            store.snapshot(entries())
            timings[name] = time.perf_counter() - started
        store.close()
        return timings


def _label(size: int) -> str:
    return f"{size // 1_000_000}m" if size >= 1_000_000 else f"{size // 1000}k"


def run(quick: bool = False) -> dict[str, dict]:
    sizes = (10_000, 100_000) if quick else (10_000, 1_000_000)
    total = 20_000 if quick else 100_000  # requests measured per run (after a warm-up)
    seconds = 30.0 if quick else 90.0  # and never longer than this
    rounds = 1 if quick else 3  # loads per server, the best one counted (back-to-back runs vary)
    echo = _echo_baseline(rounds, total, seconds)
    figures: dict[str, dict] = {}
    rates = {}
    results = {}
    for size in sizes:
        result = results[size] = _mapserver(size, rounds, total, seconds, no_repeat=size == sizes[-1])
        label = _label(size)
        rates[size] = result["rate"]
        figures[f"mapserver.requests_per_s.{label}"] = {
            "value": result["rate"], "unit": "req/s", "baseline": echo["rate"],
            "ratio": result["rate"] / echo["rate"], "target": 0.5,
            "answered": result["answered"], "lost": result["lost"], "distinct_eids": HOT_EIDS,
            "rates": result["rates"], "echo_rates": echo["rates"],
        }
        if "cold_rate" in result:
            figures[f"mapserver.requests_per_s_no_repeat.{label}"] = {
                "value": result["cold_rate"], "unit": "req/s", "baseline": echo["rate"],
                "ratio": result["cold_rate"] / echo["rate"], "target": None, "distinct_eids": total + total // 10,
            }
        for quantile in ("p50", "p99"):
            value, base = result[f"{quantile}_ms"], echo[f"{quantile}_ms"]
            figures[f"mapserver.latency_{quantile}_ms.{label}"] = {
                "value": value, "unit": "ms", "baseline": base, "ratio": value / base, "target": None,
                "target_is_max": True,
            }
        restore_us, unpack_us = 1e6 * result["restore_s"] / size, 1e6 * result["unpack_s"] / size
        figures[f"mapserver.restore_us_per_registration.{label}"] = {
            "value": restore_us, "unit": "us", "baseline": unpack_us, "ratio": restore_us / unpack_us,
            "target": None, "target_is_max": True,
        }
    small, large = sizes
    # Memory a registration costs the server: the growth of its resident size from the small table to
    # the large one, against the bytes the same registration takes in the snapshot file.
    per_registration = 1024 * (results[large]["rss_kib"] - results[small]["rss_kib"]) / (large - small)
    stored = (results[large]["snapshot_bytes"] - results[small]["snapshot_bytes"]) / (large - small)
    figures[f"mapserver.memory_bytes_per_registration.{_label(large)}"] = {
        "value": per_registration, "unit": "B", "baseline": stored, "ratio": per_registration / stored,
        "target": None, "target_is_max": True, "rss_mib": results[large]["rss_kib"] // 1024,
    }
    compaction_size = 20_000 if quick else 100_000
    compaction = _compaction(compaction_size)
    figures[f"mapserver.compaction_s.{_label(compaction_size)}"] = {
        "value": compaction["joined"], "unit": "s", "baseline": compaction["encoded"],
        "ratio": compaction["joined"] / compaction["encoded"], "target": None, "target_is_max": True,
        "note": "the Map-Server answers nothing meanwhile; baseline: encoding every entry again",
    }
    growth = rates[small] / rates[large]
    figures[f"mapserver.cost_growth.{_label(small)}_to_{_label(large)}"] = {
        "value": growth, "unit": "x", "baseline": 1.0, "ratio": growth, "target": 1.5, "target_is_max": True,
    }
    return figures


if __name__ == "__main__":
    from bench.__main__ import main

    raise SystemExit(main([*sys.argv[1:], "bench_mapserver"]))
