"""Controller: how long a first packet waits for its mapping, and how fast the
controller programs a switch, each against a baseline from the same run.

``controller.first_packet_ms.median``
    The delay a new destination's first packet pays for resolution: the
    ITR's table miss -> packet-in -> Map-Request (ECM) to the Map-Server ->
    forwarded to the ETR -> Map-Reply -> compile, diff, flow-mods -> the held
    packet re-injected.  Measured end to end as (RTT of the first ping to a
    destination) - (median RTT of the next 3 pings to it), median over N new
    destinations (100; quick 20).  Baseline: the median steady-state RTT over
    the same destinations (the same path once resolved), so
    ratio = median first RTT / median steady RTT.  No target.

    Method, and why: every site registers its EID prefix (10.2.0.0/16 for
    dc2), so after one Map-Reply the whole /16 is cached at dc1 and no later
    destination in it misses again; and dc2's ETR delivers only to the hosts
    in its configuration.  So this benchmark starts the real controller on the
    lab's own configuration with one change at dc2: N extra EIDs
    10.2.1.0..N-1, configured as hosts behind h3's port with h3's MAC (so dc2
    installs decap/delivery flows for them) and registered as /32s next to
    h3's and h4's /32s instead of the /16 (so the Map-Server, which accepts
    more-specifics of dc2's configured /16, answers each with its own /32 and
    every one is a fresh miss at dc1).  h3 carries the N addresses on its
    eth0 and answers them.  dc1's configuration is the lab's, untouched, and
    the return path (dc2 -> 10.1.0.0/16) is resolved by a warm-up ping before
    measuring, so each first packet pays exactly one resolution, at the ITR.
    This is the path a dynamic/host EID takes; the controller code is the
    same whatever the prefix length.

``controller.flow_mods_per_s.10k``
    Flow-mods per second the controller code pushes for 10 000 map-cache
    entries (one encap flow each, /32 EIDs in instance 42 spread over 16
    RLOCs), through the exact steps of `Controller.push`: `compile_plan` of the
    whole plan, `diff` against what is installed (the switch already holds the
    plan without remotes), `ofp13.encode_operations` (the fast flow-mod
    encoder, batched writes) and `Datapath.send`, then a barrier; timed from the start of compiling to
    the barrier reply, inside a real ryu-manager (the small app below) talking
    OpenFlow 1.3 over TCP to a real ovs-vswitchd (netdev bridge, the lab's
    settings) in a namespace of its own.  Best of 3 pushes (quick: 1), the
    flows deleted in between.
    Baseline: the same 10 000 flows, as `ovs-ofctl dump-flows --no-stats`
    printed them from that switch after the controller's push, deleted and
    added again with `ovs-ofctl --bundle add-flows` (best of 3, wall time of
    the command): the switch's own rate for one atomic bundle, the limit any
    controller can reach on it.  ratio = ours / bundle; target 0.5.

`python bench/bench_controller.py [--quick]` prints the table with the breakdown.
Runs as root; everything lives in the lab's ``lb-`` namespaces (private lab
directory, management 198.19.240.0/24 port 6690) and in ``lbx-of``, torn
down on every exit path.
"""

from __future__ import annotations

import dataclasses
import gc
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lisp_ryu.glue import compat  # noqa: E402

compat.apply()

from ryu.base import app_manager  # noqa: E402
from ryu.controller import ofp_event  # noqa: E402
from ryu.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls  # noqa: E402
from ryu.lib import hub  # noqa: E402
from ryu.ofproto import ofproto_v1_3  # noqa: E402

from bench.bench_dataplane import (  # noqa: E402
    LAB_PREFIX,
    BenchError,
    StandaloneOvs,
    in_ns,
    ping,
    start_controller,
)
from bench.lablib import TOPOLOGIES, isolated_lab  # noqa: E402
from lisp_ryu.flows import ofp13  # noqa: E402
from lisp_ryu.flows.compiler import compile_plan  # noqa: E402
from lisp_ryu.flows.diff import diff  # noqa: E402
from lisp_ryu.flows.model import DesiredState  # noqa: E402
from lisp_ryu.flows.pipeline import COOKIE_OWNER_SHIFT, Owner  # noqa: E402
from lisp_ryu.lab import controller as lab_controller  # noqa: E402
from lisp_ryu.lab import controller_config  # noqa: E402
from lisp_ryu.plan import Gateway, HostPort, LocalHost, RemoteAction, RemoteEntry, Rloc, XtrPlan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MANAGEMENT_SUBNET = "198.19.240.0/24"
MANAGEMENT_PORT = 6690
FLOWMOD_PORT = 6691  # ryu-manager's OpenFlow port inside the lbx-of namespace
FLOWMOD_ENV = "LISP_RYU_BENCH_FLOWMOD"  # "entries,repeats,result file" for the app below
FLOWMOD_TIMEOUT = 180.0
IID = 42
FLOW_TARGET = 0.5
MAPPING_COOKIE = int(Owner.MAPPING) << COOKIE_OWNER_SHIFT
MAPPING_COOKIE_MASK = 0xFF << COOKIE_OWNER_SHIFT


# --------------------------------------------------------------------------
# First packet


def _first_packet_config(state, server, extra: list[str]) -> dict:
    """The lab's controller configuration with `extra` EIDs behind `server`
    (see the module docstring): hosts at its port/MAC, /32 registrations."""
    doc = controller_config.build(state)
    xtr = next(x for x in doc["xtrs"] if x["name"] == server.site)
    xtr["eid_prefixes"] = ([{"prefix": f"{h['ip']}/32", "iid": h["iid"]} for h in xtr["hosts"]]
                           + [{"prefix": f"{a}/32", "iid": server.iid} for a in extra])
    xtr["hosts"] = xtr["hosts"] + [{"ip": a, "mac": server.mac, "port": server.ofport, "iid": server.iid}
                                   for a in extra]
    return doc


def first_packet(quick: bool) -> dict:
    count = 20 if quick else 100
    with isolated_lab(TOPOLOGIES / "two-dc.yaml", LAB_PREFIX, MANAGEMENT_SUBNET, MANAGEMENT_PORT) as state:
        client, server = state.host("h1"), state.host("h3")
        subnet = ipaddress.ip_interface(server.address).network
        base = subnet.network_address + 256  # 10.2.1.0: clear of the lab's hosts (10.2.0.x)
        taken = {h.ip for h in state.hosts}
        extra = [str(base + i) for i in range(count)]
        if taken & set(extra) or any(ipaddress.ip_address(a) not in subnet for a in extra):
            raise BenchError(f"extra EIDs {extra[0]}..{extra[-1]} collide with the lab's hosts or leave {subnet}")
        for address in extra:
            in_ns(server.namespace, ["ip", "addr", "add", f"{address}/32", "dev", "eth0"])
        start_controller(state, _first_packet_config(state, server, extra))
        warm = ping(client.namespace, server.ip, 3, 0.2, wait=3)  # resolves dc2 -> 10.1.0.0/16 too
        if warm["received"] == 0:
            raise BenchError(f"h1 cannot reach h3 through LISP: {warm}; see {lab_controller.log_path()}")

        firsts, steadies, deltas, lost = [], [], [], []
        deadline = time.monotonic() + (60 if quick else 240)
        for address in extra:
            if time.monotonic() > deadline:
                raise BenchError(f"first-packet measurement over its time bound after {len(firsts)} destinations")
            first = ping(client.namespace, address, 1, 1, wait=3)
            steady = ping(client.namespace, address, 3, 0.01, wait=1)
            if not first["times_ms"] or len(steady["times_ms"]) < 2:
                lost.append(address)
                continue
            steady_ms = statistics.median(steady["times_ms"])
            firsts.append(first["times_ms"][0])
            steadies.append(steady_ms)
            deltas.append(first["times_ms"][0] - steady_ms)
        if len(deltas) < count * 0.9:
            raise BenchError(f"{len(lost)} of {count} new destinations did not answer: {lost[:5]}...; "
                             f"see {lab_controller.log_path()}")
    first_ms, steady_ms = statistics.median(firsts), statistics.median(steadies)
    return {
        "value": statistics.median(deltas), "unit": "ms", "baseline": steady_ms, "ratio": first_ms / steady_ms,
        "target": None,
        "detail": {
            "destinations": count, "answered": len(deltas), "first_rtt_ms_median": first_ms,
            "delay_ms_p10": _quantile(deltas, 0.1), "delay_ms_p90": _quantile(deltas, 0.9),
            "delay_ms_max": max(deltas),
            # Each resolution recompiles and diffs the whole plan: does the delay grow with the map-cache?
            "delay_ms_median_first_10": statistics.median(deltas[:10]),
            "delay_ms_median_last_10": statistics.median(deltas[-10:]),
        },
    }


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --------------------------------------------------------------------------
# Flow-mod rate: the Ryu app (loaded by ryu-manager inside lbx-of)


def bench_plan(entries: int) -> XtrPlan:
    """An xTR plan like a lab site's, with `entries` /32 map-cache entries over 16 RLOCs."""
    remotes = tuple(
        RemoteEntry(IID, ipaddress.ip_network((0x0A400000 + i, 32)), RemoteAction.ENCAP,
                    (Rloc(ipaddress.ip_address(f"198.18.{2 + i % 16}.2")),))
        for i in range(entries))
    return XtrPlan(
        tunnel_port=100,
        host_ports=(HostPort(1, IID), HostPort(2, IID)),
        hosts=(LocalHost(IID, ipaddress.ip_address("10.1.0.10"), "02:4c:68:01:00:0a", 1),
               LocalHost(IID, ipaddress.ip_address("10.1.0.11"), "02:4c:68:01:00:0b", 2)),
        gateways=(Gateway(IID, ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_address("10.1.0.1"),
                          "02:4c:67:01:00:01"),),
        remotes=remotes,
        tunnel_source=ipaddress.ip_address("198.18.1.2"),
    )


class FlowModBenchApp(app_manager.RyuApp):
    """Pushes the bench plan the way `Controller.push` does and writes the timings.

    Only active when FLOWMOD_ENV is set (ryu-manager started by `flow_mods`)."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        entries, repeats, out = os.environ[FLOWMOD_ENV].split(",", 2)
        self.entries, self.repeats, self.out = int(entries), int(repeats), out
        self.barriers: dict[int, hub.Event] = {}
        self.errors: list[str] = []
        self.started = False

    @set_ev_cls(ofp_event.EventOFPStateChange, MAIN_DISPATCHER)
    def _on_main(self, ev):
        if not self.started:
            self.started = True
            hub.spawn(self._bench, ev.datapath)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _on_barrier(self, ev):
        event = self.barriers.pop(ev.msg.xid, None)
        if event is not None:
            event.set()

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _on_error(self, ev):
        self.errors.append(f"type {ev.msg.type} code {ev.msg.code} xid {ev.msg.xid}")

    def _barrier(self, dp) -> None:
        request = dp.ofproto_parser.OFPBarrierRequest(dp)
        dp.set_xid(request)
        event = hub.Event()
        self.barriers[request.xid] = event
        dp.send_msg(request)
        if not event.wait(timeout=60):
            raise RuntimeError("no barrier reply within 60 s")

    def _send(self, dp, installed: DesiredState, desired_plan: XtrPlan) -> tuple[DesiredState, dict]:
        """`Controller.push`, step by step with a clock at each step."""
        t0 = time.perf_counter()
        desired = compile_plan(desired_plan)
        t1 = time.perf_counter()
        ops = diff(installed, desired)
        t2 = time.perf_counter()
        a = time.perf_counter()
        chunks = list(ofp13.encode_operations(dp, ops))
        b = time.perf_counter()
        for chunk in chunks:
            dp.send(chunk)
        t3 = time.perf_counter()
        render, send = b - a, t3 - b
        self._barrier(dp)
        t4 = time.perf_counter()
        return desired, {"ops": len(ops), "total_s": t4 - t0, "compile_s": t1 - t0, "diff_s": t2 - t1,
                         "render_s": render, "send_s": send, "barrier_wait_s": t4 - t3}

    def _bench(self, dp) -> None:
        result: dict = {}
        gc.freeze()  # as the Ryu app (glue.ryu_app) does once it has started
        try:
            full = bench_plan(self.entries)
            empty = dataclasses.replace(full, remotes=())
            base, _ = self._send(dp, DesiredState(), empty)  # what a connected xTR already holds
            runs = []
            for i in range(self.repeats):
                if i:
                    parser, ofp = dp.ofproto_parser, dp.ofproto
                    dp.send_msg(parser.OFPFlowMod(dp, cookie=MAPPING_COOKIE, cookie_mask=MAPPING_COOKIE_MASK,
                                                  table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE,
                                                  out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY))
                    self._barrier(dp)
                _, timing = self._send(dp, base, full)
                runs.append(timing)
            # One more map-cache entry on top of the 10k (one Map-Reply's worth):
            # `push` recompiles and diffs the whole plan for it.
            extra = RemoteEntry(IID, ipaddress.ip_network("10.127.255.255/32"), RemoteAction.ENCAP,
                                (Rloc(ipaddress.ip_address("198.18.2.2")),))
            plus_one = dataclasses.replace(full, remotes=full.remotes + (extra,))
            holding, one_more = self._send(dp, compile_plan(full), plus_one)
            self._send(dp, holding, full)  # and back: the diff deletes exactly that flow
            # The same rendering and serialising without a socket: what building
            # the messages alone costs per flow-mod.
            ops = diff(base, compile_plan(full))
            a = time.perf_counter()
            msgs = [ofp13.to_message(dp, op) for op in ops]  # Ryu's own objects, for comparison
            b = time.perf_counter()
            for msg in msgs:
                msg.serialize()
            c = time.perf_counter()
            result = {"runs": runs, "one_more": one_more, "errors": self.errors,
                      "render_us_per_op": (b - a) / len(ops) * 1e6, "serialize_us_per_op": (c - b) / len(ops) * 1e6}
        except Exception as exc:  # reported to the parent, which fails the benchmark
            result = {"exception": repr(exc), "errors": self.errors}
        Path(self.out + ".tmp").write_text(json.dumps(result))
        os.replace(self.out + ".tmp", self.out)


# --------------------------------------------------------------------------
# Flow-mod rate: the driver


def _ryu_argv() -> list[str]:
    code = ("import sys; from lisp_ryu.glue import compat; "
            "sys.exit(compat.run_ryu_manager(sys.argv[1:]))")
    return [sys.executable, "-c", code, "--ofp-listen-host", "127.0.0.1",
            "--ofp-tcp-listen-port", str(FLOWMOD_PORT), "bench.bench_controller"]


def flow_mods(quick: bool, entries: int = 10_000) -> dict:
    repeats = 1 if quick else 3
    with StandaloneOvs("of") as ovs, tempfile.TemporaryDirectory(prefix="lbx-of-") as tmp:
        ovs.vsctl("add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev",
                  "protocols=OpenFlow13", "fail_mode=secure", "other-config:datapath-id=0000000000000001",
                  "other-config:disable-in-band=true",
                  "--", "--id=@c", "create", "controller", f'target="tcp:127.0.0.1:{FLOWMOD_PORT}"',
                  "max_backoff=1000", "connection_mode=out-of-band",
                  "--", "set", "bridge", "br-int", "controller=@c")
        result_file = Path(tmp) / "result.json"
        env = dict(os.environ, **{FLOWMOD_ENV: f"{entries},{repeats},{result_file}"},
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        log_path = Path(tmp) / "ryu.log"
        with open(log_path, "wb") as log:
            ryu = subprocess.Popen(["ip", "netns", "exec", ovs.namespace, *_ryu_argv()], cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + FLOWMOD_TIMEOUT
            while not result_file.exists():
                if ryu.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"the flow-mod app gave no result; its log ends:\n"
                                     f"{log_path.read_text(errors='replace')[-3000:]}")
                time.sleep(0.1)
            result = json.loads(result_file.read_text())
        finally:
            if ryu.poll() is None:
                ryu.terminate()
                try:
                    ryu.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    ryu.kill()
                    ryu.wait()
        if "exception" in result or result["errors"]:
            raise BenchError(f"flow-mod app failed: {result}")

        selector = f"cookie={MAPPING_COOKIE:#x}/{MAPPING_COOKIE_MASK:#x}"
        dumped = [line.strip() for line in ovs.ofctl("dump-flows", "br-int", selector, options=["--no-stats"])
                  .splitlines() if line.strip().startswith("cookie=")]
        if len(dumped) != entries:
            raise BenchError(f"the switch holds {len(dumped)} mapping flows after the push, expected {entries}")
        flows_file = Path(tmp) / "flows.txt"
        flows_file.write_text("\n".join(dumped) + "\n")
        bundle_runs = []
        for _ in range(repeats):
            ovs.ofctl("del-flows", "br-int", selector)
            start = time.perf_counter()
            ovs.ofctl("add-flows", "br-int", str(flows_file), options=["--bundle"])
            bundle_runs.append(time.perf_counter() - start)
            held = ovs.ofctl("dump-aggregate", "br-int", selector)
            if f"flow_count={entries}" not in held:
                raise BenchError(f"after the bundle the switch holds: {held.strip()}")

    best = min(result["runs"], key=lambda r: r["total_s"])
    ours = best["ops"] / best["total_s"]
    bundle = entries / min(bundle_runs)
    return {
        "value": ours, "unit": "flows/s", "baseline": bundle, "ratio": ours / bundle, "target": FLOW_TARGET,
        "detail": {"entries": entries, "repeats": repeats, "controller_best": best,
                   "controller_runs_s": [r["total_s"] for r in result["runs"]], "bundle_runs_s": bundle_runs,
                   "push_only_per_s": best["ops"] / (best["render_s"] + best["send_s"] + best["barrier_wait_s"]),
                   "one_more_entry_at_10k": result["one_more"],
                   "render_us_per_op": result["render_us_per_op"],
                   "serialize_us_per_op": result["serialize_us_per_op"]},
    }


# --------------------------------------------------------------------------


def run(quick: bool = False) -> dict[str, dict]:
    return {
        "controller.flow_mods_per_s.10k": flow_mods(quick),
        "controller.first_packet_ms.median": first_packet(quick),
    }


if __name__ == "__main__":
    from bench.__main__ import main

    raise SystemExit(main([*sys.argv[1:], "bench_controller"]))
