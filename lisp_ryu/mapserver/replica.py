"""The Map-Server core's side of the replicated store (issue 17): what it hands to etcd, what it
takes from it — pure, no IO (the etcd side is `lisp_ryu/glue/etcd_store.py`, the loop's side
`lisp_ryu/glue/mapserver_replica.py`).

`ReplicaLink` stands where the file journal's store stands (`Journal.store`): the journal
hands it, after each message, the entries that message changed; the link turns every one of
them into an etcd write (registrations, withdrawals, subscriptions with their nonce, policy
rules, RLOC overrides, static mappings: everything a node's answers and notifications depend
on), with the registering ETR's session, for the loop to `take()` and commit before it sends
what the message caused.

A registration's etcd value is its journal entry without what every refresh changes (the
time it came, its expiry, its nonce): an identical refresh then plans no write.  Expiry is
the ETR's session lease (the store deletes the keys); in replicated mode the core's own
expiry timers do nothing (`Registry.expire`), so every node removes a registration at the
same moment, when the deletion arrives.  Other entries are stored as the journal writes them.

`apply_changes` brings what etcd holds into the tables, telling nobody: whoever committed a
change notified for it, and for a change nobody committed (a lease expired) the holder of the
expiry role does, once (`publish_current`), from the prefixes `apply_changes` returns.
"""

from __future__ import annotations

import errno
import ipaddress
import logging

import msgpack

from lisp_ryu.mapping.policy import PolicyError, RlocOverride, Rule, StaticMapping
from lisp_ryu.mapserver import cluster
from lisp_ryu.mapserver.journal import BAD_STORED_ENTRY, Journal, pack, subscription_from_entry
from lisp_ryu.mapserver.northbound import Northbound
from lisp_ryu.mapserver.pubsub import PubSub
from lisp_ryu.mapserver.registry import Registry
from lisp_ryu.mapserver.state import IPNetwork, State, static_record
from lisp_ryu.mapserver.stored_records import registration_from_entry

LOG = logging.getLogger("lisp_ryu.mapserver")

#: Fields of a registration entry a refresh changes: not part of the replicated value.
VOLATILE = ("at", "exp", "n")
#: The expiry a replicated registration gets in memory: the lease decides, not a local timer.
FAR = 10 * 365 * 86400.0
#: What reading a stored value that is not what its key says may raise.
BAD_VALUE = (*BAD_STORED_ENTRY, PolicyError, msgpack.UnpackException, AttributeError)


def value_of(entry: dict) -> bytes:
    return pack({k: v for k, v in entry.items() if k not in VOLATILE})


def map_key_of(entry: dict) -> bytes:
    return cluster.map_key(int(entry["iid"]), str(entry["net"]), str(entry["etr"]))


def subscriber_name(xtr_id: int) -> str:
    return f"{xtr_id:032x}"


def entry_key(entry: dict) -> tuple[bytes, bytes | None] | None:
    """The etcd key a journal entry sets and the value (None: the key goes); None for an entry
    the cluster does not share."""
    kind = entry.get("t")
    if kind in ("reg", "unreg"):
        return map_key_of(entry), value_of(entry) if kind == "reg" else None
    if kind in ("sub", "unsub"):
        xtr_id = int.from_bytes(entry["xid"], "big")
        key = cluster.sub_key(int(entry["iid"]), str(entry["net"]), subscriber_name(xtr_id))
        return key, pack(entry) if kind == "sub" else None
    if kind in ("rule", "unrule"):
        return cluster.named_key("policy", str(entry["id"])), pack(entry) if kind == "rule" else None
    if kind in ("ovr", "unovr"):
        return cluster.named_key("override", str(entry["id"])), pack(entry) if kind == "ovr" else None
    if kind in ("static", "unstatic"):
        return cluster.static_key(int(entry["iid"]), str(entry["net"])), pack(entry) if kind == "static" else None
    return None


class ReplicaLink:
    """The journal's store in replicated mode: collects the writes and the session of the
    message being handled (see the module docstring)."""

    replicated = True

    def __init__(self) -> None:
        self.writes: dict[bytes, bytes | None] = {}
        self.session: tuple[str, str, float] | None = None
        self.local_entries = 0  # entries the cluster does not share: counted only
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
            keyed = entry_key(entry)
            if keyed is None:
                self.local_entries += 1
            else:
                writes[keyed[0]] = keyed[1]

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


# --------------------------------------------------------------------------- from etcd into the tables


class Applier:
    """Brings (key, value or None) changes of the replicated store into a core's tables, telling
    nobody; returns the prefixes whose answer changed (what a publication would have named)."""

    def __init__(self, state: State, journal: Journal, registry: Registry, pubsub: PubSub,
                 northbound: Northbound) -> None:
        self._state, self._journal = state, journal
        self._registry, self._pubsub, self._northbound = registry, pubsub, northbound
        self._count = state.count

    def apply(self, changes: list[tuple[bytes, bytes | None]], now: float) -> list[tuple[int, IPNetwork]]:
        journal, pubsub = self._journal, self._pubsub
        saved, journal.store = journal.store, None  # nothing of this goes back to the store
        changed: list[tuple[int, IPNetwork]] = []
        pubsub.held = changed  # publications are collected, not sent
        try:
            for key, value in changes:
                try:
                    parsed = cluster.parse_key(key)
                except cluster.SchemaKeyError:
                    self._count("replica.foreign_keys")
                    continue
                try:
                    if parsed.kind == "map":
                        self._registration(key, value, now)
                    elif parsed.kind == "sub":
                        self._subscription(parsed, value, now)
                    elif parsed.kind in ("policy", "override", "static"):
                        self._stated(parsed, value)
                except BAD_VALUE:
                    self._count("replica.bad_entries")
                    self._state.log_throttled("replica-bad", logging.WARNING,
                                              "replicated store: cannot read the value of %s", key.decode())
        finally:
            journal.store = saved
            pubsub.held = None
        return changed

    def _registration(self, key: bytes, value: bytes | None, now: float) -> None:
        state, registry = self._state, self._registry
        if value is None:
            removal = removal_of(key)
            if removal is not None:
                registry.remove_etr(*removal, now, journal=False)
                self._count("replica.removed")
            return
        entry = registration_fields(key, value, now)
        if entry is None:
            return
        reg = registration_from_entry(entry)
        site = state.sites.get(reg.site)
        if site is None or not registry.site_allows(site, reg.iid, reg.prefix)[0]:
            self._count("replica.not_allowed")
            return
        held = state.registered.get(reg.iid, reg.prefix)
        mine = held.etrs.get(reg.etr) if held is not None and held.site == reg.site else None
        if mine is not None and (mine.record, mine.source, mine.port, mine.proxy_reply, mine.xtr_id) == (
                reg.record, reg.source, reg.port, reg.proxy_reply, reg.xtr_id):
            return  # already so here (this node's own change)
        if reg.xtr_id is not None:
            state.xtr_sites[reg.xtr_id] = reg.site
        registry.upsert(reg, now)
        self._count("replica.applied")

    def _subscription(self, parsed: cluster.ParsedKey, value: bytes | None, now: float) -> None:
        pubsub = self._pubsub
        net = ipaddress.ip_network(parsed.prefix)
        held = pubsub.subscription(parsed.iid, net, int(parsed.name, 16))
        sub = None if value is None else subscription_from_entry(msgpack.unpackb(value, raw=False))
        if sub is None or sub.expires <= now:
            if held is not None:
                pubsub.drop_subscription(held, journal=False)
                self._count("replica.subscriptions_removed")
            return
        if held != sub:
            pubsub.set_subscription(sub)
            self._count("replica.subscriptions")

    def _stated(self, parsed: cluster.ParsedKey, value: bytes | None) -> None:
        entry = None if value is None else msgpack.unpackb(value, raw=False)
        northbound, state = self._northbound, self._state
        policy = state.policy
        if parsed.kind == "policy":
            if entry is None:
                new = policy.without_rule(parsed.name)
            else:
                new = policy.with_rule(Rule.from_dict(entry["v"]))
            northbound.quietly(lambda: northbound.set_policy(new))
        elif parsed.kind == "override":
            if entry is None:
                new = policy.without_override(parsed.name)
            else:
                new = policy.with_override(RlocOverride.from_dict(entry["v"]))
            northbound.quietly(lambda: northbound.set_policy(new))
        else:
            net = ipaddress.ip_network(parsed.prefix)
            if entry is None:
                if state.static.get(parsed.iid, net) is not None:
                    northbound.quietly(lambda: state.static.remove(parsed.iid, net))
            else:
                mapping = StaticMapping.from_dict(entry["v"])
                northbound.quietly(lambda: state.static.insert(mapping.iid, mapping.prefix,
                                                               (mapping, static_record(mapping))))
        self._count("replica.stated")
