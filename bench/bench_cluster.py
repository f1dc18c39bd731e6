"""The replicated mapping store on a real 3-member etcd cluster on loopback (issue 17).

Figures: replication lag (a change acknowledged at node A, seen in node B's replica), against
the commit latency of the same run; store writes per unchanged refresh (goal 0); how long the
exactly-once role takes to move when its holder dies, against the lease TTL.  The Map-Server
figures of issue 17 that need the integrated core (requests/s on 3 nodes, the Map-Resolver
failover gap) come with the integration.
"""

from __future__ import annotations

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "tests")):
    if path not in sys.path:
        sys.path.insert(0, path)

from lisp_ryu.glue.etcd_client import EtcdClient  # noqa: E402
from lisp_ryu.glue.etcd_store import EtcdStore  # noqa: E402
from lisp_ryu.mapserver import cluster  # noqa: E402
from support.etcd_cluster import EtcdCluster, available  # noqa: E402


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def _wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def _key(i: int) -> bytes:
    return cluster.map_key(42, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32", "xtr:0a")


def measure(writes: int, refreshes: int) -> dict:
    seen: dict[bytes, float] = {}

    def on_change(batch):
        now = time.monotonic()
        for change in batch.changes:
            seen.setdefault(change.key, now)

    with EtcdCluster(3) as etcd:
        ends = etcd.endpoints
        a = EtcdStore(ends, "a").start()
        b = EtcdStore(ends[1:] + ends[:1], "b", on_change=on_change).start()
        try:
            started, acked = {}, {}
            for i in range(writes):
                k = _key(i)
                started[k] = time.monotonic()
                a.commit({k: cluster.pack(i)}).result(5)
                acked[k] = time.monotonic()
            _wait(lambda: len(seen) >= writes)
            lag = [max(0.0, seen[k] - acked[k]) * 1e3 for k in acked if k in seen]
            from_submit = [(seen[k] - started[k]) * 1e3 for k in acked if k in seen]
            commit = [(acked[k] - started[k]) * 1e3 for k in acked]

            regs = {cluster.map_key(7, f"10.9.0.{i}/32", "xtr:0b"): cluster.pack(i) for i in range(10)}
            a.register("dc2", "xtr:0b", 30, regs).result(5)
            client = EtcdClient(ends)
            before = client.range(b"/lisp/")[0]
            for i in range(refreshes):
                (a if i % 2 else b).register("dc2", "xtr:0b", 30, regs).result(5)
            refresh_writes = client.range(b"/lisp/")[0] - before

            ra, rb = a.role("bench", ttl=1), b.role("bench", ttl=1)
            _wait(lambda: ra.holder or rb.holder, 5)
            holder, waiting = (a, rb) if ra.holder else (b, ra)
            holder.stop(resign=False)
            t0 = time.monotonic()
            _wait(lambda: waiting.holder, 5)
            failover = (time.monotonic() - t0) * 1e3
        finally:
            a.stop()
            b.stop()
    return {"lag": lag, "from_submit": from_submit, "commit": commit, "refresh_writes": refresh_writes, "refreshes": refreshes,
            "failover_ms": failover, "missing": writes - len(lag)}


def run(quick: bool = False) -> dict[str, dict]:
    if not available():
        print("bench_cluster: no etcd binary (Debian etcd-server): skipped")
        return {}
    r = measure(200 if quick else 1000, 50 if quick else 200)
    commit_p50 = _pct(r["commit"], 50)
    lag_p99, lag_p50 = _pct(r["lag"], 99), _pct(r["lag"], 50)
    common = {"samples": len(r["lag"]), "not_seen": r["missing"]}
    return {
        "mapserver.cluster.replication_lag_ms.p99": {
            "value": lag_p99, "unit": "ms", "baseline": commit_p50, "ratio": lag_p99 / commit_p50,
            "target": None, "p50_ms": round(lag_p50, 3), "goal_ms": 20,
            "from_submit_p50_ms": round(_pct(r["from_submit"], 50), 3),
            "from_submit_p99_ms": round(_pct(r["from_submit"], 99), 3), "meets_goal": lag_p99 <= 20,
            "note": "seen in B's replica after A's commit acknowledgement; baseline: A's commit p50", **common},
        "mapserver.cluster.commit_latency_ms.p99": {
            "value": _pct(r["commit"], 99), "unit": "ms", "baseline": commit_p50,
            "ratio": _pct(r["commit"], 99) / commit_p50, "target": None, "note": "baseline: p50"},
        "mapserver.cluster.store_writes_per_refresh": {
            "value": r["refresh_writes"] / r["refreshes"], "unit": "writes", "baseline": 1.0,
            "ratio": r["refresh_writes"] / r["refreshes"], "target": 0, "target_is_max": True,
            "note": "etcd revisions per Map-Register refresh of an unchanged 10-EID registration; "
                    "baseline: one changed registration"},
        "mapserver.cluster.role_failover_ms": {
            "value": r["failover_ms"], "unit": "ms", "baseline": 1000.0, "ratio": r["failover_ms"] / 1000.0,
            "target": 2.0, "target_is_max": True,
            "note": "holder killed (no resignation) -> the other node holds the role; baseline: lease TTL"},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
