"""The replicated mapping store on etcd (issue 17): the IO around `mapserver.cluster`.

How the Map-Server core plugs in (the integration, next step)
-------------------------------------------------------------
The core stays sans-IO.  With `--store etcd://...` it emits one more effect and consumes
one more event; the loop (`mapserver_loop`) carries both:

* effect out, `Commit(writes, session, then)`: "make these keys hold these values (None:
  delete) — a registration's keys bound to ETR `session` (site, etr, hold time) — and once
  that is committed on a quorum, carry out `then`" (the Map-Notify to the registering ETR,
  the publish/subscribe Map-Notifies to its subscribers, SMRs).  The loop calls
  `store.register(...)` / `store.commit(...)` with a callback that posts the outcome back
  into the loop; on success it runs `then`, on failure (`NotAcknowledged`, `EtcdUnavailable`,
  `Conflict`) it drops `then` and counts/logs it: the ETR retries its Map-Register, nothing
  is acknowledged that is not durable.  A refresh of an unchanged registration is the same
  effect: the store finds nothing to write (compares with its replica), only keeps the ETR's
  lease alive, and completes at once — no write, no revision.
* event in, `ReplicaChanged(batch)`: a `cluster.ChangeBatch` per etcd revision, in order,
  for writes by every node (this one included), lease expiries (origin None), and a full
  read (reread=True: the first read at start, everything; after a compaction, the difference)
  which the core adopts as state.  The core applies it to its tables (the
  registry/resolver answer Map-Requests from memory, never waiting on etcd).  Who notifies:
  the committing node, at once, every subscriber (subscriptions are in etcd, so it knows
  those registered at other nodes); nobody for batches with another node's origin; for
  origin None (a lease expired) only the holder of the "expiry" role (`store.role("expiry")`,
  `Role.holder`); away redirects likewise.  Role-held writes carry `role.fence()` so a
  deposed holder's commit fails instead of acting twice.  Values: the journal's entry maps
  (`journal.pack`) fit, keyed by `cluster.map_key(iid, prefix, etr)`.
* health: `store.health.view(now)` goes into the health view; `on_health` fires on each
  transition with the log line.  Degraded: commits fail fast, answers go on from the replica.

Callbacks run on the store's threads (watch, commit, maintenance): the loop must only post
them to itself (`Inbox` below: a queue with a wake-up descriptor for its selector), so the
core keeps one thread and no lock.

Known limits: a commit of more than MAX_TXN_OPS operations is split into several
transactions (atomic per part; a failure leaves a prefix written, and the ETR's retry
completes it); a commit that writes nothing is acknowledged on the strength of the replica
(stale by at most the watch delay, or `max_lag` before health says so); etcd extends every
lease when its leader changes, so an expiry can take up to twice the hold time.

Roles live in etcd_role.py.  Threads: "watch" (the full read at R, the watch from R+1,
re-read after compaction, resume elsewhere when a member dies or its stream stalls), "commit" (plans against the replica plus what it committed
itself and has not yet seen come back, groups queued commits into one transaction, at most
MAX_TXN_OPS operations each), "maintenance" (health probe, lease keep-alives, roles).  Each
thread has its own `EtcdClient`.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from lisp_ryu.glue.etcd_client import (
    EtcdClient,
    EtcdError,
    EtcdUnavailable,
    WatchCompacted,
    compare,
    op_delete,
    op_put,
    op_range,
    prefix_end,
)
from lisp_ryu.glue.etcd_role import Role
from lisp_ryu.mapserver import cluster
from lisp_ryu.mapserver.cluster import ChangeBatch, Expect, Health, Plan, Put, RawEvent, Sessions

LOG = logging.getLogger("lisp_ryu.mapserver.etcd")

#: etcd's default --max-txn-ops is 128; one slot is the commit marker.
MAX_TXN_OPS = 127


class NotAcknowledged(Exception):
    """The store is degraded (etcd unreachable or without quorum): nothing is acknowledged."""


class Conflict(Exception):
    """A compare-on-revision failed: someone else changed a key first (re-plan on the replica)."""


@dataclass(frozen=True, slots=True)
class CommitResult:
    revision: int  # the revision that holds the change (the image's revision when nothing was written)
    written: int  # operations written
    unchanged: int  # writes asked for that the store already held: no write
    lease: int = 0  # the ETR session's lease, for register()


@dataclass
class _Commit:
    writes: dict[bytes, bytes | None]
    leases: dict[bytes, int]
    expects: tuple[Expect, ...]
    future: Future
    session: tuple[str, str, int] | None = None  # (site, etr, ttl)
    map_keys: tuple[bytes, ...] = ()  # puts that take the session's lease
    queued: float = 0.0


class Inbox:
    """Posts from the store's threads into a selectors loop: `post(item)` from any thread,
    `fileno()` in the loop's selector, `drain()` there when it is readable."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def fileno(self) -> int:
        return self._r.fileno()

    def post(self, item: object) -> None:
        self._queue.put(item)
        try:
            self._w.send(b"\0")
        except BlockingIOError:
            pass  # already awake

    def drain(self) -> list:
        try:
            while self._r.recv(4096):
                pass
        except BlockingIOError:
            pass
        items = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def close(self) -> None:
        self._r.close()
        self._w.close()


class EtcdStore:
    def __init__(self, endpoints: Iterable[str], node_id: str, *,
                 on_change: Callable[[ChangeBatch], None] | None = None,
                 on_health: Callable[[str, dict], None] | None = None,
                 timeout: float = 1.0, probe_interval: float = 0.25,
                 clock: Callable[[], float] = time.monotonic, image: cluster.Image | None = None,
                 max_lag: float = 1.0) -> None:
        """`image`: a replica kept from before (a restart, a pause): the watch resumes after its
        revision and a full read happens only if etcd compacted past it."""
        self.endpoints = list(endpoints)
        self.node_id = cluster.parse_key(cluster.named_key("node", node_id)).name
        self.marker = cluster.named_key("node", node_id)
        self.on_change = on_change
        self.on_health = on_health
        self.timeout = timeout
        self.probe_interval = probe_interval
        self.max_lag = max_lag
        self.clock = clock
        self.image = image if image is not None else cluster.Image()
        self.health = Health()
        self.sessions = Sessions()
        self.counters: dict[str, int] = {}
        self._lock = threading.Lock()  # image, overlay, sessions, health
        self._counter_lock = threading.Lock()
        #: What this node committed and has not yet seen come back on the watch: key -> (value or
        #: None, lease, revision).  Planning looks here first, so a second identical commit
        #: before the watch catches up writes nothing.
        self._overlay: dict[bytes, tuple[bytes | None, int, int]] = {}
        self._commits: queue.SimpleQueue = queue.SimpleQueue()
        self._roles: list[Role] = []
        self._stop = threading.Event()
        self._loaded = threading.Event()
        self._rewatch = threading.Event()
        self._watch = None
        self._threads: list[threading.Thread] = []
        self._seq = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self, wait: float | None = 5.0) -> "EtcdStore":
        for name, target in (("watch", self._watch_loop), ("commit", self._commit_loop),
                             ("maintenance", self._maintenance_loop)):
            thread = threading.Thread(target=target, name=f"etcd-{name}-{self.node_id}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if wait is not None:
            deadline = time.monotonic() + wait
            if not self._loaded.wait(wait):
                LOG.warning("node %s: no full read of etcd after %.1f s; answering from an empty replica",
                            self.node_id, wait)
            while self.health.state == "starting" and time.monotonic() < deadline:
                time.sleep(0.01)
        return self

    def stop(self, resign: bool = True) -> None:
        """Stop the threads; with `resign`, give up held roles at once (else they lapse with their lease)."""
        self._stop.set()
        if self._watch is not None:
            self._watch.close()
        self._commits.put(None)
        for thread in self._threads:
            thread.join(5)
        if resign:
            client = EtcdClient(self.endpoints, self.timeout)
            for role in self._roles:
                role.resign(client)
            client.close()
        while True:  # fail what was never committed
            try:
                item = self._commits.get_nowait()
            except queue.Empty:
                break
            if item is not None and not item.future.done():
                item.future.set_exception(NotAcknowledged("store stopped"))

    def __enter__(self) -> "EtcdStore":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _count(self, name: str, amount: int = 1) -> None:
        with self._counter_lock:  # three threads count
            self.counters[name] = self.counters.get(name, 0) + amount

    # ------------------------------------------------------------------ health

    def _health(self, ok: bool, reason: str = "") -> None:
        now = self.clock()
        with self._lock:
            line = self.health.success(now) if ok else self.health.failure(now, reason)
            view = self.health.view(now)
        if line:
            (LOG.info if ok else LOG.warning)("node %s: %s", self.node_id, line)
            if self.on_health is not None:
                self.on_health(line, view)

    # ------------------------------------------------------------------ the replica

    def _deliver(self, batches: list[ChangeBatch]) -> None:
        if self.on_change is None:
            return
        for batch in batches:
            try:
                self.on_change(batch)
            except Exception:  # noqa: BLE001
                LOG.exception("node %s: replica change consumer failed at revision %d", self.node_id, batch.revision)

    def _watch_loop(self) -> None:
        client = EtcdClient(self.endpoints, self.timeout)
        reread = not self.image.loaded
        if not reread:
            self._loaded.set()
        backoff = 0.05
        end = prefix_end(cluster.ROOT)
        while not self._stop.is_set():
            try:
                if reread:
                    revision, kvs = client.read_prefix(cluster.ROOT)
                    with self._lock:
                        batch = self.image.load(revision, ((kv.key, kv.value, kv.mod_revision, kv.lease) for kv in kvs))
                        self._trim_overlay()
                    self._count("replica.full_reads")
                    LOG.info("node %s: replica read %d keys at revision %d", self.node_id, len(kvs), revision)
                    self._loaded.set()
                    reread = False
                    self._deliver([batch] if batch else [])
                watch = client.watch(cluster.ROOT, end, self.image.revision + 1)
                self._watch = watch
                if self._stop.is_set():
                    watch.close()
                backoff = 0.05
                for response in watch.responses():
                    events = [RawEvent(e.type, e.kv.key, e.kv.value, e.kv.mod_revision, e.kv.lease)
                              for e in response.events]
                    with self._lock:
                        batches = self.image.apply(events, 0 if events else response.revision)
                        self._trim_overlay()
                    self._deliver(batches)
                if self._rewatch.is_set():  # closed because it stalled: resume on another member
                    self._rewatch.clear()
                    self._count("replica.stalled_watches")
                    LOG.warning("node %s: the watch on %s stalled: resuming from revision %d elsewhere",
                                self.node_id, watch.endpoint, self.image.revision + 1)
                    client.rotate()
            except WatchCompacted as exc:
                LOG.warning("node %s: replica fell behind the compaction (revision %d < %d): reading again",
                            self.node_id, self.image.revision, exc.compact_revision)
                self._count("replica.compacted")
                reread = True
            except EtcdError as exc:
                if self._stop.is_set():
                    break
                self._count("replica.watch_errors")
                LOG.debug("node %s: watch: %s; resuming from revision %d", self.node_id, exc, self.image.revision + 1)
                self._stop.wait(backoff)
                backoff = min(0.5, backoff * 2)
        client.close()

    def _trim_overlay(self) -> None:
        seen = self.image.revision
        if self._overlay:
            for key in [k for k, (_, _, rev) in self._overlay.items() if rev <= seen]:
                del self._overlay[key]

    def _current(self, key: bytes) -> tuple[bytes, int] | None:
        held = self._overlay.get(key)
        if held is not None:
            value, lease, _ = held
            return None if value is None else (value, lease)
        entry = self.image.get(key)
        return None if entry is None else (entry.value, entry.lease)

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            entry = self.image.get(key)
        return None if entry is None else entry.value

    def entry(self, key: bytes) -> cluster.Entry | None:
        """The replica's entry of `key` (value, mod revision, lease)."""
        with self._lock:
            return self.image.get(key)

    @property
    def revision(self) -> int:
        return self.image.revision

    # ------------------------------------------------------------------ commits

    def commit(self, writes: Mapping[bytes, bytes | None], *, leases: Mapping[bytes, int] | None = None,
               expects: Iterable[Expect] = (), callback: Callable[[Future], None] | None = None) -> Future:
        """Make the store hold `writes` (None: delete); the future's result is a CommitResult once
        it is committed on a quorum, or an exception: NotAcknowledged, Conflict, EtcdUnavailable."""
        return self._submit(_Commit(dict(writes), dict(leases or {}), tuple(expects), Future()), callback)

    def register(self, site: str, etr: str, hold_time: float, writes: Mapping[bytes, bytes | None], *,
                 callback: Callable[[Future], None] | None = None) -> Future:
        """An ETR's Map-Register: its registration keys (`cluster.map_key`, values or None) bound to
        the ETR's session lease.  A refresh that changes nothing writes nothing; it keeps the lease
        alive (at most every ttl/3)."""
        ttl = cluster.session_ttl(hold_time)
        item = _Commit(dict(writes), {}, (), Future(), session=(site, etr, ttl),
                       map_keys=tuple(k for k, v in writes.items() if v is not None and k.startswith(b"/lisp/map/")))
        return self._submit(item, callback)

    def _submit(self, item: _Commit, callback: Callable[[Future], None] | None) -> Future:
        if callback is not None:
            item.future.add_done_callback(callback)
        if self._stop.is_set():
            item.future.set_exception(NotAcknowledged("store stopped"))
        elif not self.health.acknowledging:
            self._count("commit.refused_degraded")
            item.future.set_exception(NotAcknowledged(f"etcd store {self.health.state}: {self.health.reason}"))
        else:
            item.queued = self.clock()
            self._commits.put(item)
        return item.future

    def _commit_loop(self) -> None:
        client = EtcdClient(self.endpoints, self.timeout)
        while not self._stop.is_set():
            item = self._commits.get()
            if item is None:
                break
            group, pending = [item], None
            if not item.expects and item.session is None:
                # Group commit: what is queued behind it and needs no compare and no session.
                while len(group) < 64:
                    try:
                        nxt = self._commits.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self._commits.put(None)
                        break
                    if nxt.expects or nxt.session is not None:
                        pending = nxt
                        break
                    group.append(nxt)
            self._run(group, client)
            if pending is not None:
                self._run([pending], client)
        client.close()

    def _run(self, group: list[_Commit], client: EtcdClient) -> None:
        try:
            result = self._execute(group, client)
        except Conflict as exc:
            for item in group:
                item.future.set_exception(exc)
            return
        except EtcdUnavailable as exc:
            self._count("commit.unavailable", len(group))
            self._health(False, str(exc))
            for item in group:
                item.future.set_exception(exc)
            return
        except EtcdError as exc:
            self._count("commit.errors", len(group))
            LOG.warning("node %s: commit refused by etcd: %s", self.node_id, exc)
            for item in group:
                item.future.set_exception(exc)
            return
        except Exception as exc:  # noqa: BLE001 - never leave a caller waiting
            LOG.exception("node %s: commit failed", self.node_id)
            for item in group:
                item.future.set_exception(exc)
            return
        # (Recovery from "degraded" is the probe's to say: a commit that went through does not
        # show that the replica follows.)
        for item, res in zip(group, result):
            item.future.set_result(res)

    def _execute(self, group: list[_Commit], client: EtcdClient) -> list[CommitResult]:
        try:
            return self._execute_once(group, client)
        except EtcdError as exc:
            session = group[0].session
            if session is None or "lease not found" not in str(exc):
                raise
            # The ETR's lease expired before the replica showed it: open a new session, once.
            self._count("session.lost")
            with self._lock:
                self.sessions.lost(cluster.etr_key(session[0], session[1]))
            return self._execute_once(group, client)

    def _execute_once(self, group: list[_Commit], client: EtcdClient) -> list[CommitResult]:
        lease = 0
        if len(group) == 1 and group[0].session is not None:
            item = group[0]
            lease = self._session(item.session, client)
            item.leases = {k: lease for k in item.map_keys}
        writes: dict[bytes, bytes | None] = {}
        leases: dict[bytes, int] = {}
        expects: list[Expect] = []
        for item in group:
            writes.update(item.writes)
            leases.update(item.leases)
            expects.extend(item.expects)
        with self._lock:
            planned: Plan = cluster.plan(self._current, writes, leases, expects)
            revision = self.image.revision
        self._count("commit.unchanged", planned.unchanged)
        if planned.ops:
            revision = self._write(planned, client)
        if len(group) == 1:
            return [CommitResult(revision, len(planned.ops), planned.unchanged, lease)]
        return [CommitResult(revision, len(planned.ops), planned.unchanged) for _ in group]

    def _write(self, planned: Plan, client: EtcdClient) -> int:
        ops = list(planned.ops)
        # mod_revision 0: the key must not exist; -1 never matches (a fence of a role not held)
        compares = [compare(e.key, "CREATE", "EQUAL", 0) if e.mod_revision == 0
                    else compare(e.key, "MOD", "EQUAL", e.mod_revision) for e in planned.expects]
        revision = 0
        for start in range(0, len(ops), MAX_TXN_OPS):  # atomic up to MAX_TXN_OPS operations
            chunk = ops[start:start + MAX_TXN_OPS]
            self._seq += 1
            body = [op_put(op.key, op.value, op.lease) if isinstance(op, Put) else op_delete(op.key) for op in chunk]
            body.append(op_put(self.marker, cluster.pack(self._seq)))
            result = client.txn(compares if start == 0 else [], body)
            if not result.succeeded:
                self._count("commit.conflicts")
                raise Conflict("a compared key changed: re-plan on the replica")
            revision = result.revision
            self._count("commit.txns")
            self._count("commit.ops", len(chunk))
            with self._lock:
                for op in chunk:
                    if isinstance(op, Put):
                        self._overlay[op.key] = (op.value, op.lease, revision)
                    else:
                        self._overlay[op.key] = (None, 0, revision)
        return revision

    # ------------------------------------------------------------------ ETR sessions

    def _session(self, session: tuple[str, str, int], client: EtcdClient) -> int:
        """The ETR's lease: known, adopted from another node's session key, or created; renewed
        when due."""
        site, etr, ttl = session
        key = cluster.etr_key(site, etr)
        now = self.clock()
        with self._lock:
            decision = self.sessions.on_refresh(key, now)
            known = self.sessions.by_etr.get(key)
        if decision == "keepalive":
            self._count("session.keepalives")
            if client.lease_keepalive(known.lease) > 0:
                with self._lock:
                    self.sessions.renewed(key, now)
                return known.lease
            with self._lock:
                self.sessions.lost(key)
            decision = "open"
        elif decision == "none":
            with self._lock:
                entry = self.image.get(key)
                if (entry is not None and entry.lease == known.lease) or key in self._overlay:
                    return known.lease
                self.sessions.lost(key)  # the replica says the session is gone or was replaced
        # open: adopt the session another node opened, or open it
        with self._lock:
            entry = self.image.get(key)
        if entry is not None and entry.lease and client.lease_keepalive(entry.lease) > 0:
            with self._lock:
                self.sessions.opened(key, entry.lease, ttl, now)
            self._count("session.adopted")
            return entry.lease
        lease, granted = client.lease_grant(ttl)
        value = cluster.pack({"lease": lease, "ttl": granted, "node": self.node_id})
        result = client.txn([compare(key, "CREATE", "EQUAL", 0)],
                            [op_put(key, value, lease), op_put(self.marker, cluster.pack(0))], [op_range(key)])
        if result.succeeded:
            self._count("session.opened")
            with self._lock:
                self._overlay[key] = (value, lease, result.revision)
                self.sessions.opened(key, lease, granted, now)
            return lease
        client.lease_revoke(lease)
        kvs = result.range_kvs(0)
        if not kvs or not kvs[0].lease:
            raise Conflict(f"ETR session {key.decode()} changed while opening it")
        client.lease_keepalive(kvs[0].lease)
        with self._lock:
            self.sessions.opened(key, kvs[0].lease, ttl, now)
        self._count("session.adopted")
        return kvs[0].lease

    # ------------------------------------------------------------------ roles and maintenance

    def role(self, name: str, ttl: int = 2, on_change: Callable[[bool], None] | None = None) -> Role:
        """Campaign for an exactly-once role; `Role.holder` says whether this node holds it.
        A holder that dies loses it when its lease expires (`ttl` seconds)."""
        role = Role(self, name, ttl, on_change)
        self._roles.append(role)
        return role

    def _maintenance_loop(self) -> None:
        client = EtcdClient(self.endpoints, self.timeout)
        markers = b"/lisp/node/"  # every commit puts one: the newest is the newest commit
        lag = cluster.LagCheck(self.max_lag)
        next_probe = 0.0
        while not self._stop.is_set():
            now = self.clock()
            if now >= next_probe:
                # Degraded: probe often, so acknowledging resumes soon after etcd does.
                next_probe = now + (self.probe_interval if self.health.acknowledging else 0.05)
                try:
                    # A quorum read of the newest commit marker: etcd works, and how far the replica
                    # should be by now.
                    _, kvs, _ = client.range(markers, prefix_end(markers), limit=1, keys_only=True,
                                             newest_first=True)
                except EtcdError as exc:
                    self._health(False, str(exc))
                else:
                    with self._lock:
                        lagging = lag.observe(kvs[0].mod_revision if kvs else 0, self.image.revision, now)
                    self._health(lagging is None, lagging or "")
                    watch = self._watch
                    if lagging and watch is not None and not self._rewatch.is_set():
                        self._rewatch.set()  # a silent stream (a frozen member): replace it
                        watch.close()
            if self.health.acknowledging:
                for role in self._roles:
                    role.tick(client, now)
            elif any(r.holder for r in self._roles):
                for role in self._roles:
                    role.tick(client, now)
            self._stop.wait(min(0.05, self.probe_interval))
        client.close()
