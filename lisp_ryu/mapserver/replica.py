"""The Map-Server core's side of the replicated store (issue 17): what it hands to etcd, what it
takes from it — pure, no IO (the etcd side is `lisp_ryu/glue/etcd_store.py`, the loop's side
`lisp_ryu/glue/mapserver_replica.py`).

`ReplicaLink` stands where the file journal's store stands (`Journal.store`): the journal
hands it, after each message, the entries that message changed; the link keeps the ones the
cluster shares (registrations and withdrawals) as etcd writes, and the registering ETR's
session, for the loop to `take()` and commit before it sends the Map-Notify.  Other entries
(subscriptions, policy, static mappings) stay local to the node in this version.

A registration's etcd value is its journal entry without what every refresh changes (the
time it came, its expiry, its nonce): an identical refresh then plans no write.  Expiry is
the ETR's session lease (the store deletes the keys); in replicated mode the core's own
expiry timers do nothing (`Registry.expire`), so every node removes a registration at the
same moment, when the deletion arrives.
"""

from __future__ import annotations

import errno
import ipaddress
import logging

import msgpack

from lisp_ryu.mapserver import cluster
from lisp_ryu.mapserver.journal import pack

LOG = logging.getLogger("lisp_ryu.mapserver")

#: Fields of a registration entry a refresh changes: not part of the replicated value.
VOLATILE = ("at", "exp", "n")
#: The expiry a replicated registration gets in memory: the lease decides, not a local timer.
FAR = 10 * 365 * 86400.0


def value_of(entry: dict) -> bytes:
    return pack({k: v for k, v in entry.items() if k not in VOLATILE})


def map_key_of(entry: dict) -> bytes:
    return cluster.map_key(int(entry["iid"]), str(entry["net"]), str(entry["etr"]))


class ReplicaLink:
    """The journal's store in replicated mode: collects the writes and the session of the
    message being handled (see the module docstring)."""

    replicated = True

    def __init__(self) -> None:
        self.writes: dict[bytes, bytes | None] = {}
        self.session: tuple[str, str, float] | None = None
        self.local_entries = 0  # entries not replicated (subscriptions, policy): counted only
        #: Why etcd cannot acknowledge ("" while it can); set by the loop from the store's health.
        self.down = ""

    # ---- the Store protocol, as the journal uses it
    def load(self) -> list[dict]:
        return []  # the state comes from etcd's full read (a ReplicaChanged batch)

    def append(self, entries: list) -> None:
        writes = self.writes
        for entry in entries:
            if isinstance(entry, (bytes, bytearray)):
                entry = msgpack.unpackb(entry, raw=False)
            kind = entry.get("t")
            if kind == "reg":
                writes[map_key_of(entry)] = value_of(entry)
            elif kind == "unreg":
                writes[map_key_of(entry)] = None
            else:
                self.local_entries += 1

    def journal_length(self) -> int:
        return 0  # never compacted: etcd holds the state

    def snapshot(self, entries) -> None:
        pass

    def probe(self) -> None:
        if self.down:
            raise OSError(errno.EIO, self.down)

    def close(self) -> None:
        pass

    # ---- for the registry and the loop
    def note_session(self, site: str, etr: str, hold_time: float) -> None:
        self.session = (site, etr, hold_time)

    def take(self) -> tuple[tuple[str, str, float] | None, dict[bytes, bytes | None]]:
        """The session and the writes of the message just handled; cleared."""
        session, writes = self.session, self.writes
        if writes:
            self.writes = {}
        self.session = None
        return session, writes

    def describe(self) -> str:
        """For the health view (`Journal.health`)."""
        return f"degraded: etcd store ({self.down})" if self.down else "ok"


def registration_fields(key: bytes, value: bytes, now: float) -> dict | None:
    """The journal entry a replicated registration key holds, as of `now`; None when the key
    is not a registration."""
    try:
        parsed = cluster.parse_key(key)
    except cluster.SchemaKeyError:
        return None
    if parsed.kind != "map":
        return None
    entry = msgpack.unpackb(value, raw=False)
    entry.update(at=now, exp=now + FAR, n=None)
    return entry


def removal_of(key: bytes) -> tuple[int, ipaddress.IPv4Network | ipaddress.IPv6Network, str] | None:
    try:
        parsed = cluster.parse_key(key)
    except cluster.SchemaKeyError:
        return None
    if parsed.kind != "map":
        return None
    return parsed.iid, ipaddress.ip_network(parsed.prefix), parsed.name
