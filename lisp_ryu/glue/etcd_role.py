"""An exactly-once role over etcd: whoever holds /lisp/role/<name>, put under the holder's own
lease, holds the role (the Map-Server's expiry and away redirects: one node, cluster-wide).

A node campaigns only when its replica shows the key absent (a create-if-absent transaction);
the holder renews its lease every ttl/3 and steps down when it cannot for 2/3 of the TTL, before
the lease can lapse.  A holder that dies keeps the role until its lease expires (`ttl` seconds,
or up to twice that across an etcd leader change, which extends leases).  `fence()` is the
compare that a role-held commit carries, so a deposed holder's late commit fails.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Protocol

from lisp_ryu.glue.etcd_client import EtcdClient, EtcdError, compare, op_put, op_range, prefix_end
from lisp_ryu.mapserver import cluster
from lisp_ryu.mapserver.cluster import Expect

LOG = logging.getLogger("lisp_ryu.mapserver.etcd")


class ReplicaView(Protocol):
    """What a role needs of its store (`EtcdStore`): this node's name and the replica."""

    node_id: str

    def get(self, key: bytes) -> bytes | None: ...


class Role:
    """An exactly-once role: whoever holds /lisp/role/<name> (put under its own lease) holds it."""

    def __init__(self, store: ReplicaView, name: str, ttl: int, on_change: Callable[[bool], None] | None) -> None:
        self.store, self.name, self.ttl, self.on_change = store, name, max(1, ttl), on_change
        self.key = cluster.named_key("role", name)
        self.holder = False
        self.lease = 0
        self.create_revision = 0
        self.renewed = 0.0
        self.next_try = 0.0

    def fence(self) -> Expect:
        """Add to a role-held commit: it fails if this node no longer holds the role."""
        return Expect(self.key, self.create_revision if self.holder else -1)

    def _set(self, holder: bool, why: str) -> None:
        if holder == self.holder:
            return
        self.holder = holder
        LOG.info("role %s %s by node %s (%s)", self.name, "taken" if holder else "lost", self.store.node_id, why)
        if self.on_change is not None:
            try:
                self.on_change(holder)
            except Exception:  # noqa: BLE001 - a consumer's bug must not stop the store
                LOG.exception("role %s callback failed", self.name)

    def tick(self, client: EtcdClient, now: float) -> None:
        if self.holder:
            if now - self.renewed < self.ttl / 3:
                return
            try:
                left = client.lease_keepalive(self.lease)
            except EtcdError as exc:
                if now - self.renewed >= self.ttl * 2 / 3:  # it may lapse before we can tell: step down
                    self._set(False, f"cannot renew its lease: {exc}")
                return
            if left <= 0:
                self._set(False, "its lease expired")
            else:
                self.renewed = now
            return
        if now < self.next_try or self.store.get(self.key) is not None:
            return  # held by another node (as the replica says): campaign when its key goes
        self.next_try = now + min(0.1, self.ttl / 10)
        lease = 0
        try:
            lease, _ = client.lease_grant(self.ttl)
            result = client.txn([compare(self.key, "CREATE", "EQUAL", 0)],
                                [op_put(self.key, self.store.node_id.encode(), lease), op_range(self.key)],
                                [op_range(self.key)])
        except EtcdError:
            if lease:
                try:
                    client.lease_revoke(lease)
                except EtcdError:
                    pass
            return
        if result.succeeded:
            self.lease, self.renewed = lease, now
            kvs = result.range_kvs(1)
            self.create_revision = kvs[0].create_revision if kvs else result.revision
            self._set(True, "campaign won")
        else:
            try:
                client.lease_revoke(lease)
            except EtcdError:
                pass

    def resign(self, client: EtcdClient) -> None:
        if self.holder and self.lease:
            try:
                client.lease_revoke(self.lease)
            except EtcdError:
                pass
        self._set(False, "resigned")


def read_history(client: EtcdClient, start: int, until: int, timeout: float = 5.0, idle: float = 0.3
                 ) -> list[tuple[int, str | None, tuple[bytes, ...]]]:
    """What etcd's history says of revisions `start`..`until` under /lisp/: (revision, origin, keys
    changed) each, origin the committing node (its commit marker) or None.  For a role holder that
    must act on what happened before its own replica began (`WatchCompacted` when etcd no longer
    has it).  etcd sends the history at once: the read ends at `until`, after `idle` seconds
    without a response (nothing more under /lisp/ up to `until`), or after `timeout`."""
    watch = client.watch(cluster.ROOT, prefix_end(cluster.ROOT), start)
    deadline = threading.Timer(timeout, watch.close)
    deadline.start()
    quiet = [threading.Timer(idle, watch.close)]
    quiet[0].start()
    revisions: dict[int, tuple[list[str | None], list[bytes]]] = {}
    try:
        for response in watch.responses():
            quiet[0].cancel()
            last = 0
            for event in response.events:
                last = event.kv.mod_revision
                if last > until:
                    break
                origin, keys = revisions.setdefault(last, ([None], []))
                if event.kv.key.startswith(b"/lisp/node/"):
                    if event.type != "DELETE":
                        origin[0] = event.kv.key[len(b"/lisp/node/"):].decode(errors="replace")
                else:
                    keys.append(event.kv.key)
            if last >= until:
                break
            quiet[0] = threading.Timer(idle, watch.close)
            quiet[0].start()
    finally:
        deadline.cancel()
        quiet[0].cancel()
        watch.close()
    return [(rev, origin[0], tuple(keys)) for rev, (origin, keys) in sorted(revisions.items())]
