"""The standalone Map-Server's side of the etcd store (issue 17, `--store etcd://...`): the
`Commit` effect and the `ReplicaChanged` event of `etcd_store`'s design note, carried by the
server loop.

* After each message the loop hands the core's effects to `hold`: when the message changed
  registrations or refreshed an ETR's session (`replica.ReplicaLink.take`), they are held and
  the writes go to `EtcdStore.register` (the session's lease; an unchanged refresh writes
  nothing and only keeps the lease alive).  The Map-Notify and the publications it caused go
  out in `drain` once the commit succeeded; on failure they are dropped (counted, logged
  throttled: the ETR retries) and the keys are set back to what the store holds.
* `ReplicaChanged`: every batch the watch delivers but this node's own commits (already
  applied when the Map-Register was handled) goes to `MapServer.apply_replica`.
* Health transitions set the core refusing or accepting Map-Registers (`set_store_down`) and
  are logged by the store; the health view says "degraded: etcd store (...)".

The core applies a change when it handles the Map-Register, before the commit: a Map-Request
may see a registration a few milliseconds before it is durable (never acknowledged before).
"""

from __future__ import annotations

import itertools
import logging
import time
from concurrent.futures import Future

from lisp_ryu.glue.etcd_store import EtcdStore, Inbox
from lisp_ryu.mapserver.cluster import ChangeBatch
from lisp_ryu.mapserver.replica import ReplicaLink
from lisp_ryu.mapserver.service import MapServer

LOG = logging.getLogger("lisp_ryu.mapserver.etcd")

#: Seconds between two log lines about unacknowledged registrations.
LOG_EVERY = 5.0


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


class ReplicatedStore:
    """Between a `MapServer` built with a `ReplicaLink` and an `EtcdStore` (see the module docstring)."""

    def __init__(self, endpoints: list[str], node_id: str, link: ReplicaLink, *, timeout: float = 1.0,
                 probe_interval: float = 0.25) -> None:
        self.link = link
        self.node_id = node_id
        self.inbox = Inbox()
        self.core: MapServer | None = None
        self.store = EtcdStore(endpoints, node_id, timeout=timeout, probe_interval=probe_interval,
                               on_change=lambda batch: self.inbox.post(("batch", batch)),
                               on_health=lambda line, view: self.inbox.post(("health", view)))
        self.counters: dict[str, int] = {}
        self._held: dict[int, list] = {}
        self._tokens = itertools.count(1)
        self._logged = 0.0
        self._unlogged = 0

    def start(self, core: MapServer, wait: float = 5.0) -> None:
        """Start the store, wait for its first full read (or `wait` s) and apply it to `core`."""
        self.core = core
        self.store.start(wait)
        self.drain(time.time())

    def stop(self) -> None:
        self.store.stop()
        self.inbox.close()

    def fileno(self) -> int:
        return self.inbox.fileno()

    def _count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    # ---- Commit: effects held until the change is durable
    def hold(self, effects: list) -> list:
        """The effects to send now; those of a change are held until it is committed."""
        session, writes = self.link.take()
        if session is None and not writes:
            return effects
        token = next(self._tokens)
        self._held[token] = [effects, writes]
        callback = lambda future, token=token: self.inbox.post(("done", token, future))  # noqa: E731
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
        """Outcomes of commits, replica batches and health changes posted since: the effects to send."""
        out: list = []
        for item in self.inbox.drain():
            kind = item[0]
            if kind == "done":
                out += self._done(item[1], item[2], now)
            elif kind == "batch":
                out += self._apply(item[1], now)
            elif kind == "health":
                self._health(item[1])
        return out

    def _done(self, token: int, future: Future, now: float) -> list:
        effects, writes = self._held.pop(token)
        error = future.exception()
        if error is None:
            result = future.result()
            self._count("commits.acknowledged")
            if not result.written:
                self._count("commits.unchanged")
            return effects
        self._count("commits.not_acknowledged")
        self._unlogged += 1
        if now - self._logged >= LOG_EVERY:
            LOG.warning("node %s: %d registration change(s) not committed to etcd, not acknowledged "
                        "(the ETR retries): %s: %s", self.node_id, self._unlogged, type(error).__name__, error)
            self._logged, self._unlogged = now, 0
        # Back to what the store holds (the core applied the change when it handled the message).
        assert self.core is not None
        back = [(key, self.store.get(key)) for key in writes]
        return self.core.apply_replica(back, now) if back else []

    def _apply(self, batch: ChangeBatch, now: float) -> list:
        self._count("replica.batches")
        if batch.origin == self.store.node_id and not batch.reread:
            return []  # this node's own commit: applied when its Map-Register was handled
        assert self.core is not None
        return self.core.apply_replica([(c.key, c.new) for c in batch.changes], now)

    def _health(self, view: dict) -> None:
        assert self.core is not None
        down = "" if view.get("acknowledging") else f"{view.get('state')}: {view.get('reason')}"
        self.link.down = down
        self.core.set_store_down(down)

    def health(self, now: float) -> dict:
        return {**self.store.health.view(now), "revision": self.store.revision,
                "held": len(self._held), "counters": {**self.counters, **self.store.counters}}
