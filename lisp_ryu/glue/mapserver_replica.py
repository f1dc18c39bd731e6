"""The standalone Map-Server's side of the etcd store (issue 17, `--store etcd://...`): the
`Commit` effect and the `ReplicaChanged` event of `etcd_store`'s design note, carried by the
server loop.

* After each message (and each northbound `call`) the loop hands the core's effects to
  `hold`: when the message changed shared state (registrations, subscriptions and their
  nonces, policy, overrides, static mappings) or refreshed an ETR's session
  (`replica.ReplicaLink.take`), they are held and the writes go to etcd (a registration's
  under the ETR's session lease; an unchanged refresh writes nothing and only keeps the lease
  alive).  The Map-Notifies go out in `drain` once the commit succeeded; on failure they are
  dropped and never retransmitted (counted, logged throttled: the ETR retries) and the keys
  are set back to what the store holds.
* Who notifies, exactly once: the node that committed a change, at once, every subscriber of
  the cluster (subscriptions are replicated, so it knows those that subscribed elsewhere; the
  Acks come back to it and the retransmissions are its).  A batch another node committed is
  applied silently.  A batch nobody committed (its revision has no commit marker: an ETR's
  lease expired) is applied silently everywhere, kept in a short log, and acted on by the
  holder of the "expiry" role (`etcd_role.Role`): it notifies the subscribers of the
  prefixes with their answer as it is now, then stores the revision it has handled
  (`HANDLED_KEY`, fenced by the role).  A node that takes the role over acts on what its log
  holds after that revision (and reads etcd's history for what happened before its own
  replica began), so an expiry during the move is acted on by the new holder.  The holder
  also deletes lapsed subscriptions from etcd (compare-on-revision: a renewal wins).
* Health transitions set the core refusing or accepting Map-Registers (`set_store_down`) and
  are logged by the store; the health view says "degraded: etcd store (...)".

The core applies a change when it handles the Map-Register, before the commit: a Map-Request
may see a registration a few milliseconds before it is durable (never acknowledged before).
A holder that dies after notifying and before storing the handled revision leaves its
successor to notify once more (at least once, never lost).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Callable

import msgpack

from lisp_ryu.glue.etcd_client import EtcdClient, EtcdError
from lisp_ryu.glue.etcd_role import read_history
from lisp_ryu.glue.etcd_store import Conflict, EtcdStore, Inbox
from lisp_ryu.mapserver import cluster
from lisp_ryu.mapserver.cluster import ChangeBatch, Expect
from lisp_ryu.mapserver.replica import ReplicaLink, removal_of
from lisp_ryu.mapserver.service import MapServer

LOG = logging.getLogger("lisp_ryu.mapserver.etcd")

#: Seconds between two log lines about unacknowledged registrations.
LOG_EVERY = 5.0
EXPIRY_ROLE = "expiry"
#: The newest revision whose lease expiries a holder of the expiry role has acted on.
HANDLED_KEY = cluster.named_key("role", f"{EXPIRY_ROLE}.handled")
#: Batches nobody committed, kept for a holder that takes over (trimmed as holders say they handled them).
EXPIRY_LOG = 100_000
#: Revisions a holder lets pass before storing them as handled when it had nothing to act on (so
#: that a successor reads at most about this much of etcd's history; the write is one revision).
HANDLED_STRIDE = 1000
#: Lapsed subscriptions deleted per transaction.
SWEEP_BATCH = 100
SUB_PREFIX = b"/lisp/sub/"


def parse_store_url(text: str) -> list[str]:
    """`etcd://H:P[,H:P...]` -> ["H:P", ...] (ValueError otherwise)."""
    if not text.startswith("etcd://"):
        raise ValueError(f"store {text!r}: only etcd://HOST:PORT[,HOST:PORT...] is supported")
    endpoints = [e.strip() for e in text[len("etcd://"):].strip("/").split(",") if e.strip()]
    for endpoint in endpoints:
        host, sep, port = endpoint.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"store {text!r}: {endpoint!r} is not HOST:PORT")
    if not endpoints:
        raise ValueError(f"store {text!r}: no endpoint")
    return endpoints


def _handled_revision(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return int(msgpack.unpackb(value, raw=False)["revision"])
    except (ValueError, TypeError, KeyError, msgpack.UnpackException):
        return None


class ReplicatedStore:
    """Between a `MapServer` built with a `ReplicaLink` and an `EtcdStore` (see the module docstring)."""

    def __init__(self, endpoints: list[str], node_id: str, link: ReplicaLink, *, timeout: float = 1.0,
                 probe_interval: float = 0.25, role_ttl: int = 2, tick: float = 1.0) -> None:
        self.link = link
        self.node_id = node_id
        self.inbox = Inbox()
        self.core: MapServer | None = None
        self.store = EtcdStore(endpoints, node_id, timeout=timeout, probe_interval=probe_interval,
                               on_change=lambda batch: self.inbox.post(("batch", batch)),
                               on_health=lambda line, view: self.inbox.post(("health", view)))
        self.role = self.store.role(EXPIRY_ROLE, role_ttl, lambda holder: self.inbox.post(("role", holder)))
        self.counters: dict[str, int] = {}
        self.holder = False  # as the loop knows it (the role's own flag changes on the store's thread)
        self._tick = tick
        self._held: dict[int, list] = {}
        self._tokens = itertools.count(1)
        self._logged = 0.0
        self._unlogged = 0
        self._first_revision = 0  # the replica's revision when this node started following
        self._expiries: deque[tuple[int, tuple, int]] = deque(maxlen=EXPIRY_LOG)  # (revision, prefixes, keys)
        self._handled = 0  # acted on up to here (this node, or a holder whose HANDLED_KEY came by)
        self._handled_target = 0  # to store in HANDLED_KEY
        self._seen = 0  # the newest revision the loop has taken in
        self._handled_writing = False
        self._history_pending = False
        self._lapses: list[tuple[float, bytes]] = []  # (expiry, subscription key), a heap
        self._sweeping = False
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def start(self, core: MapServer, wait: float = 5.0) -> None:
        """Start the store, wait for its first full read (or `wait` s) and apply it to `core`."""
        self.core = core
        self.store.start(wait)
        self._first_revision = self.store.revision
        self._ticker = threading.Thread(target=self._ticks, name=f"replica-tick-{self.node_id}", daemon=True)
        self._ticker.start()
        self.drain(time.time())

    def stop(self, resign: bool = True) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self.store.stop(resign)
        self.inbox.close()

    def fileno(self) -> int:
        return self.inbox.fileno()

    def _ticks(self) -> None:
        while not self._stop.wait(self._tick):
            try:
                self.inbox.post(("tick",))
            except OSError:
                return  # closed

    def _count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    # ---- the northbound: a change stated at this node, from any thread
    def call(self, change: Callable[[MapServer, float], list]) -> Future:
        """Run `change(core, now)` in the loop (e.g. `lambda core, now: core.set_rule(rule, now)`); the
        future's result is the number of Map-Notifies it sent, once the change is committed to etcd
        (its exception: the change's own, or why etcd did not take it)."""
        future: Future = Future()
        self.inbox.post(("call", change, future))
        return future

    # ---- Commit: effects held until the change is durable
    def hold(self, effects: list, future: Future | None = None) -> list:
        """The effects to send now; those of a change are held until it is committed."""
        session, writes = self.link.take()
        if session is None and not writes:
            if future is not None:
                future.set_result(len(effects))
            return effects
        token = next(self._tokens)
        self._held[token] = [effects, writes, future]
        callback = lambda done, token=token: self.inbox.post(("done", token, done))  # noqa: E731
        if session is not None:
            site, etr, hold_time = session
            self._count("commits.registrations")
            self.store.register(site, etr, hold_time, writes, callback=callback)
        else:
            self._count("commits.other")
            self.store.commit(writes, callback=callback)
        return []

    # ---- what the store's threads posted
    def drain(self, now: float) -> list:
        """Outcomes of commits, replica batches, role and health changes posted since: the effects to send."""
        out: list = []
        for item in self.inbox.drain():
            kind = item[0]
            if kind == "done":
                out += self._done(item[1], item[2], now)
            elif kind == "batch":
                out += self._apply(item[1], now)
            elif kind == "health":
                self._health(item[1])
            elif kind == "role":
                out += self._role(item[1], now)
            elif kind == "history":
                out += self._history(item[1], item[2], now)
            elif kind == "handled":
                self._handled_done(item[1], item[2])
            elif kind == "swept":
                self._swept(item[1], item[2])
            elif kind == "call":
                out += self._call(item[1], item[2], now)
            elif kind == "tick":
                self._on_tick(now)
        return out

    def _call(self, change: Callable, future: Future, now: float) -> list:
        assert self.core is not None
        if not future.set_running_or_notify_cancel():
            return []
        try:
            effects = change(self.core, now)
        except Exception as exc:  # noqa: BLE001 - the caller's to report (a bad rule, an unknown id)
            self.link.take()  # nothing of a refused change is committed
            future.set_exception(exc)
            return []
        return self.hold(effects, future)

    def _done(self, token: int, future: Future, now: float) -> list:
        effects, writes, caller = self._held.pop(token)
        error = future.exception()
        if error is None:
            result = future.result()
            self._count("commits.acknowledged")
            if not result.written:
                self._count("commits.unchanged")
            if caller is not None:
                caller.set_result(len(effects))
            return effects
        self._count("commits.not_acknowledged")
        if caller is not None:
            caller.set_exception(error)
        self._unlogged += 1
        if now - self._logged >= LOG_EVERY:
            LOG.warning("node %s: %d change(s) not committed to etcd, not acknowledged "
                        "(the ETR retries): %s: %s", self.node_id, self._unlogged, type(error).__name__, error)
            self._logged, self._unlogged = now, 0
        # Back to what the store holds (the core applied the change when it handled the message), and
        # nothing of it retransmitted later.
        assert self.core is not None
        self.core.unsend(effects)
        back = [(key, self.store.get(key)) for key in writes]
        if back:
            self.core.apply_replica(back, now)
        return []

    def _apply(self, batch: ChangeBatch, now: float) -> list:
        self._count("replica.batches")
        self._seen = max(self._seen, batch.revision)
        self._note_lapses(batch)
        if batch.origin == self.store.node_id and not batch.reread:
            return []  # this node's own commit: applied when its message was handled
        assert self.core is not None
        changed = self.core.apply_replica([(c.key, c.new) for c in batch.changes], now)
        for change in batch.changes:
            if change.key == HANDLED_KEY:
                self._trim(_handled_revision(change.new) or 0)
        if batch.origin is not None or batch.reread:
            return []  # its committer notified (a full read: state to adopt, nobody to tell)
        expired = sum(1 for c in batch.changes if c.new is None and c.key.startswith(b"/lisp/map/"))
        if not changed and not expired:
            return []
        self._expiries.append((batch.revision, tuple(changed), expired))
        if not self.holder or batch.revision <= self._handled:
            return []
        return self._act([self._expiries[-1]], now)

    # ---- the expiry role
    def _act(self, entries: list[tuple[int, tuple, int]], now: float) -> list:
        """Notify for batches nobody committed (lease expiries), as the holder of the expiry role."""
        assert self.core is not None
        effects: list = []
        for revision, prefixes, expired in entries:
            if prefixes:
                iid, net = prefixes[0]
                LOG.info("node %s: lease expiry at revision %d: notifying for %s iid %d%s", self.node_id,
                         revision, net, iid, f" and {len(prefixes) - 1} more prefixes" if len(prefixes) > 1 else "")
                effects += self.core.publish_current(list(prefixes), now)
            self._count("expiry.batches_acted")
            self._count("expiry.registrations_expired", expired)
            self._handled = self._handled_target = max(self._handled_target, self._handled, revision)
        self._write_handled()
        return effects

    def _role(self, holder: bool, now: float) -> list:
        if holder == self.holder:
            return []
        self.holder = holder
        if not holder:
            LOG.warning("node %s: no longer holds the expiry role: lease expiries are another node's to act on",
                        self.node_id)
            return []
        stored = _handled_revision(self.store.get(HANDLED_KEY))
        since = stored if stored is not None else 0
        self._handled = max(self._handled, since)
        pending = [e for e in self._expiries if e[0] > self._handled]
        LOG.info("node %s: holds the expiry role: acting on lease expiries after revision %d (%d to catch up)",
                 self.node_id, since, len(pending))
        self._count("expiry.takeovers")
        if stored is not None and stored < self._first_revision:
            self._read_history(stored + 1, self._first_revision)
        effects = self._act(pending, now)
        self._handled_target = max(self._handled_target, self._handled, self._first_revision, self._seen)
        self._write_handled()
        return effects

    def _read_history(self, start: int, until: int) -> None:
        """What happened before this node's replica began, from etcd's history (on a thread of its own)."""
        self._history_pending = True

        def read() -> None:
            client = EtcdClient(self.store.endpoints, self.store.timeout)
            try:
                history = read_history(client, start, until)
            except EtcdError as exc:
                history = exc
            finally:
                client.close()
            if not self._stop.is_set():
                self.inbox.post(("history", start, history))

        threading.Thread(target=read, name=f"replica-history-{self.node_id}", daemon=True).start()

    def _history(self, start: int, history, now: float) -> list:
        self._history_pending = False
        if isinstance(history, Exception):
            self._count("expiry.history_lost")
            LOG.error("node %s: cannot read etcd's history from revision %d (%s): lease expiries before this "
                      "node started may not have been notified", self.node_id, start, history)
            self._write_handled()
            return []
        entries = []
        for revision, origin, keys in history:
            removals = [removal_of(k) for k in keys if origin is None and k.startswith(b"/lisp/map/")]
            prefixes = tuple((r[0], r[1]) for r in removals if r is not None)
            if prefixes:
                entries.append((revision, prefixes, len(prefixes)))
        self._count("expiry.history_batches", len(entries))
        effects = self._act(entries, now)  # (older than what this node's log holds: no overlap)
        return effects

    def _write_handled(self) -> None:
        if (not self.holder or self._handled_writing or self._history_pending
                or self._handled_target <= (_handled_revision(self.store.get(HANDLED_KEY)) or 0)):
            return
        self._handled_writing = True
        target = self._handled_target
        value = cluster.pack({"revision": target, "node": self.node_id})
        self.store.commit({HANDLED_KEY: value}, expects=[self.role.fence()],
                          callback=lambda done: self.inbox.post(("handled", target, done)))

    def _handled_done(self, target: int, future: Future) -> None:
        self._handled_writing = False
        error = future.exception()
        if error is None:
            self._trim(target)
            self._write_handled()  # more came meanwhile
        elif isinstance(error, Conflict):
            self._count("expiry.fenced")
            LOG.warning("node %s: the expiry role moved: revision %d not stored as handled", self.node_id, target)
        else:
            self._count("expiry.handled_write_errors")  # tried again on the next tick

    def _trim(self, revision: int) -> None:
        self._handled = max(self._handled, revision)
        expiries = self._expiries
        while expiries and expiries[0][0] <= revision:
            expiries.popleft()

    # ---- lapsed subscriptions: deleted by the holder, once
    def _note_lapses(self, batch: ChangeBatch) -> None:
        for change in batch.changes:
            if change.new is not None and change.key.startswith(SUB_PREFIX):
                try:
                    expires = float(msgpack.unpackb(change.new, raw=False)["exp"])
                except (ValueError, TypeError, KeyError, msgpack.UnpackException):
                    continue
                heapq.heappush(self._lapses, (expires, change.key))

    def _on_tick(self, now: float) -> None:
        if not self.holder:
            return
        stored = _handled_revision(self.store.get(HANDLED_KEY)) or 0
        if self._seen - stored >= HANDLED_STRIDE and not self._history_pending:
            self._handled_target = max(self._handled_target, self._seen)  # every batch taken in was acted on
        self._write_handled()
        if self._sweeping:
            return
        lapses, lapsed = self._lapses, {}
        while lapses and lapses[0][0] <= now and len(lapsed) < SWEEP_BATCH:
            expires, key = heapq.heappop(lapses)
            entry = self.store.entry(key)
            if entry is None or key in lapsed:
                continue
            try:
                current = float(msgpack.unpackb(entry.value, raw=False)["exp"])
            except (ValueError, TypeError, KeyError, msgpack.UnpackException):
                current = expires
            if current <= now:
                lapsed[key] = entry.mod_revision
        if not lapsed:
            return
        self._sweeping = True
        self.store.commit(dict.fromkeys(lapsed), expects=[Expect(k, m) for k, m in lapsed.items()] + [self.role.fence()],
                          callback=lambda done, keys=tuple(lapsed): self.inbox.post(("swept", keys, done)))

    def _swept(self, keys: tuple[bytes, ...], future: Future) -> None:
        self._sweeping = False
        if future.exception() is None:
            self._count("subscriptions.lapsed_deleted", len(keys))
            return
        # One was renewed meanwhile, or the role moved: all looked at again (a renewed one is then kept).
        self._count("subscriptions.sweep_retries")
        for key in keys:
            heapq.heappush(self._lapses, (0.0, key))

    def _health(self, view: dict) -> None:
        assert self.core is not None
        down = "" if view.get("acknowledging") else f"{view.get('state')}: {view.get('reason')}"
        self.link.down = down
        self.core.set_store_down(down)

    def all_counters(self) -> dict[str, int]:
        """This side's counters and the store's (commits, sessions, the replica), for the counters view."""
        return {**self.counters, **self.store.counters, "expiry.holder": int(self.holder)}

    def health(self, now: float) -> dict:
        return {**self.store.health.view(now), "revision": self.store.revision, "held": len(self._held),
                "expiry_role": self.holder, "counters": {**self.counters, **self.store.counters}}
