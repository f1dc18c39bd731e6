"""What the Map-Server makes durable, and how it comes back: the journal entry schema, snapshots, restore.

`store.py` only handles files (their bytes: `store_format.py`); this module
decides what goes in them, and `stored_records.py` reads registrations back.
Every change one message causes is journalled as one batch (one fsync,
`Journal.flush`) before the handler returns, so a Map-Notify acknowledging a
change goes out only once the change survives a crash.  Expiries are not
journalled: the stored expiry times already say when an entry ends, so a
restart drops what expired meanwhile and a mass expiry costs no writes.
Pending Map-Notify retransmissions are not persisted.  When the journal
outgrows twice the live state it is compacted into a snapshot, which holds
the registrations as rows per ETR context (`snapshot_rows`): a restart then
unpacks arrays of plain values rather than a map per registration.  A
journal entry is joined from parts (`EntryEncoder`): what its ETR's message
shares with its other records, encoded once per message (`EtrContext`).

Entries are absolute (set this key / delete this key), so replaying a
journal on top of any older snapshot ends in the state journalled last.
A restart replays them (`replay`), then rebuilds the tables in bulk
(`Journal.restore`); entries that expired or that the configuration no
longer allows are dropped and counted.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from typing import Callable, Iterable, Iterator, Protocol

import msgpack

from lisp_ryu.mapping.policy import Policy, PolicyError, RlocOverride, Rule, StaticMapping
from lisp_ryu.mapserver.state import (
    EtrContext,
    EtrRegistration,
    IPNetwork,
    State,
    Subscription,
    prefix_text,
    static_record,
)
from lisp_ryu.mapserver.store import Store
# StoredRegistrations, registration_from_entry: read back from here too, by the schema's users.
from lisp_ryu.mapserver.stored_records import (  # noqa: F401
    BAD_STORED_ENTRY,
    RegistryPart,
    StoredRegistrations,
    registration_from_entry,
    StoredSet,
    restore_registrations,
)
from lisp_ryu.mapserver.snapshot_rows import GROUP, canonical_key, encode_groups, expand

LOG = logging.getLogger("lisp_ryu.mapserver")

#: Compact the journal into a snapshot when it holds this many entries and
#: more than twice as many as the live state.
COMPACT_MIN_ENTRIES = 10_000

#: Seconds before an unwritable journal or a failed compaction is tried again, doubled per failure up to
#: the last: a full disk costs a few attempts an hour, and is noticed within minutes once freed.
RETRY_FIRST, RETRY_MAX = 1.0, 120.0



# --------------------------------------------------------------------------- the entry schema


def pack(entry: dict) -> bytes:
    """A journal or snapshot entry as the store writes it."""
    return msgpack.packb(entry, use_bin_type=True)


def xid_bytes(xtr_id: int | None) -> bytes | None:
    return None if xtr_id is None else xtr_id.to_bytes(16, "big")


def registration_entry(reg: EtrRegistration) -> dict:
    context = reg.context
    return {
        "t": "reg",
        "iid": reg.iid,
        "net": prefix_text(reg.key),
        "etr": context.etr,
        "site": context.site,
        "rec": reg.rec,
        "src": str(context.source),
        "port": context.port,
        "proxy": context.proxy_reply,
        "kid": context.key_id,
        "alg": context.algorithm,
        "at": reg.registered_at,
        "exp": reg.expires,
        "xid": xid_bytes(context.xtr_id),
        "sid": context.site_id,
        "n": reg.nonce,
    }


#: The entry keys `registration_entry` takes from the context, in its order.
_CONTEXT_KEYS = ("t", "etr", "site", "src", "port", "proxy", "kid", "alg", "xid", "sid")
_MAP16 = b"\xde" + (len(_CONTEXT_KEYS) + 6).to_bytes(2, "big")  # msgpack map header: context keys + 6
_SIZES = tuple(bytes((n,)) for n in range(256))


class EntryEncoder:
    """`pack(registration_entry(reg))`, decoded alike, in parts that join (msgpack map entries are
    concatenated pairs): the keys a registration shares with the other records of its ETR's message,
    encoded once per `EtrContext`; the five of its own but its record (`own`); its record, as kept."""

    def __init__(self) -> None:
        self._contexts: dict[int, tuple[EtrContext, bytes]] = {}
        self._packer = msgpack.Packer(use_bin_type=True)

    def own(self, reg: EtrRegistration) -> bytes:
        return self._packer.pack({"iid": reg.iid, "net": prefix_text(reg.key), "at": reg.registered_at,
                                  "exp": reg.expires, "n": reg.nonce})

    def encode(self, reg: EtrRegistration) -> bytes:
        context = reg.context
        # By identity (a context's hash is nine fields' every time); the context is kept with its
        # bytes, so its id cannot be another's meanwhile.
        known = self._contexts.get(id(context))
        if known is not None and known[0] is context:
            shared = known[1]
        else:
            if len(self._contexts) >= 1 << 16:
                self._contexts.clear()
            entry = registration_entry(reg)
            packed = self._packer.pack({k: entry[k] for k in _CONTEXT_KEYS})
            shared = _MAP16 + packed[1:]  # (a fixmap of 10: one header byte)
            self._contexts[id(context)] = (context, shared)
        own = self.own(reg)  # (a fixmap of 5: one header byte)
        rec = reg.rec
        size = len(rec)
        head = b"\xa3rec\xc4" + _SIZES[size] if size < 256 else b"\xa3rec\xc5" + size.to_bytes(2, "big")
        return b"".join((shared, own[1:], head, rec))


def unregistration_entry(iid: int, net: IPNetwork, etr: str) -> dict:
    return {"t": "unreg", "iid": iid, "net": str(net), "etr": etr}


def subscription_entry(sub: Subscription) -> dict:
    return {
        "t": "sub",
        "iid": sub.iid,
        "net": str(sub.prefix),
        "xid": xid_bytes(sub.xtr_id),
        "sid": sub.site_id,
        "rloc": str(sub.itr_rloc),
        "port": sub.port,
        "nonce": sub.nonce,
        "at": sub.subscribed_at,
        "exp": sub.expires,
        "seids": [str(source) for source in sub.source_eids],
    }


def unsubscription_entry(sub: Subscription) -> dict:
    return {"t": "unsub", "iid": sub.iid, "net": str(sub.prefix), "xid": xid_bytes(sub.xtr_id)}


def subscription_from_entry(entry: dict) -> Subscription:
    return Subscription(
        iid=int(entry["iid"]),
        prefix=ipaddress.ip_network(entry["net"]),
        xtr_id=int.from_bytes(entry["xid"], "big"),
        site_id=int(entry["sid"]),
        itr_rloc=ipaddress.ip_address(entry["rloc"]),
        port=int(entry["port"]),
        nonce=int(entry["nonce"]),
        subscribed_at=float(entry["at"]),
        expires=float(entry["exp"]),
        # "seid": the single source EID of entries written before subscriptions kept several.
        source_eids=tuple(ipaddress.ip_address(s) for s in entry.get("seids") or
                          ([entry["seid"]] if entry.get("seid") else [])),
    )


def rule_entry(rule: Rule) -> dict:
    return {"t": "rule", "id": rule.id, "v": rule.to_dict()}


def override_entry(override: RlocOverride) -> dict:
    return {"t": "ovr", "id": override.id, "v": override.to_dict()}


def static_entry(mapping: StaticMapping) -> dict:
    return {"t": "static", "iid": mapping.iid, "net": str(mapping.prefix), "v": mapping.to_dict()}


def unrule_entry(rule_id: str) -> dict:
    return {"t": "unrule", "id": rule_id}


def unoverride_entry(override_id: str) -> dict:
    return {"t": "unovr", "id": override_id}


def unstatic_entry(iid: int, prefix: IPNetwork) -> dict:
    return {"t": "unstatic", "iid": iid, "net": str(prefix)}


def replay(entries: Iterable[dict], count: Callable[[str], None]) -> tuple[StoredSet, dict, dict]:
    """The entries still in force after replaying `entries` in order: (registrations, subscriptions,
    stated), each keyed by what an entry sets; stated are policy rules, RLOC overrides and static mappings.

    A snapshot's groups of rows come before any registration entry and stay
    rows (`StoredSet`): a later entry for a row's key replaces it in place, a
    withdrawal drops it, as replaying one entry per row would."""
    groups: list[dict] = []
    registrations: dict[tuple[int, str, str], dict] = {}
    replaced: dict[tuple, tuple] = {}  # a row's (iid, prefix_key, ETR) -> the entry's key in `registrations`
    withdrawn: set[tuple] = set()
    subscriptions: dict[tuple[int, str, bytes], dict] = {}
    stated: dict[tuple, dict] = {}
    for entry in entries:
        kind = entry.get("t") if isinstance(entry, dict) else None
        try:
            if kind == "reg" or kind == "unreg":
                name = (entry["iid"], entry["net"], entry["etr"])
                if groups and (kind == "unreg" or name not in registrations):
                    row = (name[0], canonical_key(name[1]), name[2])
                    if row[1] is None:
                        pass  # not a row's key: as a replay of one entry each, another key
                    elif kind == "unreg":
                        withdrawn.add(row)
                        replaced.pop(row, None)
                    elif row not in withdrawn and row not in replaced:
                        replaced[row] = name
                if kind == "reg":
                    registrations[name] = entry
                else:
                    registrations.pop(name, None)
            elif kind == GROUP:
                if registrations or withdrawn:  # (never written so: read as the entries it holds)
                    for one in expand(entry):
                        registrations[(one["iid"], one["net"], one["etr"])] = one
                else:
                    groups.append(entry)
            elif kind == "sub":
                subscriptions[(entry["iid"], entry["net"], entry["xid"])] = entry
            elif kind == "unsub":
                subscriptions.pop((entry["iid"], entry["net"], entry["xid"]), None)
            elif kind in ("rule", "ovr"):
                stated[(kind, entry["id"])] = entry
            elif kind in ("unrule", "unovr"):
                stated.pop((kind[2:], entry["id"]), None)
            elif kind == "static":
                stated[("static", entry["iid"], entry["net"])] = entry
            elif kind == "unstatic":
                stated.pop(("static", entry["iid"], entry["net"]), None)
            else:
                count("restore.unknown_entries")
        except (KeyError, TypeError):
            count("restore.bad_entries")
    return StoredSet(groups, registrations, replaced, withdrawn), subscriptions, stated


# --------------------------------------------------------------------------- the journal


class PubSubPart(Protocol):
    """What a restore needs of the subscriptions part (`pubsub.PubSub`)."""

    def set_subscription(self, sub: Subscription) -> None: ...


class JournalUnavailable(RuntimeError):
    """The journal could not record a change: the state was rolled back (`Journal.on_failure`) to what
    is durable, and nothing about the change may be sent (no Map-Notify acknowledges it)."""


class Journal:
    """Collects the entries of the message being handled, writes them in one batch, compacts, restores.

    When a batch cannot be written (disk full, quota, I/O error) the change
    is rolled back, not served unjournalled: `on_failure` (set by the
    service) rebuilds the tables from the store, which holds exactly the
    acknowledged state.  Until a probe write succeeds again (`maybe_compact`,
    on the timer path, with backoff) the journal is down: the registry
    refuses Map-Registers before changing anything, so the rollback happens
    once per outage, and Map-Requests are answered as before.  A failed
    compaction changes nothing (the store removes its temporary files) and is
    retried with the same backoff.
    """

    def __init__(self, state: State, store: Store | None) -> None:
        self._state = state
        self._count = state.count
        self.store = store
        #: True while a restore rebuilds the tables: nothing is journalled nor told to anybody.
        self.restoring = False
        self._batch: list[dict | bytes] = []  # journal entries of the message being handled, written in one fsync
        self._encoder = EntryEncoder()
        #: Why the journal cannot be written ("ENOSPC"), "" while it can: changes are refused meanwhile.
        self.failure = ""
        self.compaction_failure = ""  # why the last compaction failed, "" once one works
        #: Rolls the tables back to what the store holds, after a batch could not be written.
        self.on_failure: Callable[[], None] | None = None
        self._now = 0.0  # the last time given: northbound calls come without one
        self._retry_at = 0.0
        self._backoff = 0.0
        self._failed_at = 0.0
        #: Replicated mode (`replica.ReplicaLink`): the registering ETR's session goes to the store too.
        self._note_session = getattr(store, "note_session", None)
        self.replicated = bool(getattr(store, "replicated", False))

    def note_session(self, site: str, etr: str, hold_time: float) -> None:
        """The ETR whose accepted Map-Register is being handled (its lease, in replicated mode)."""
        if self._note_session is not None:
            self._note_session(site, etr, hold_time)

    def attach(self, state: State) -> None:
        """Work on `state` from now on (the rollback rebuilds the tables in a new one)."""
        self._state = state
        self._count = state.count

    @property
    def state(self) -> State:
        return self._state

    @property
    def now(self) -> float:
        """The last time the core was given (northbound calls come without one)."""
        return self._now

    @property
    def writable(self) -> bool:
        return not self.failure

    def health(self) -> str:
        """"ok", or "degraded: ..." saying what the store cannot do (for the health view)."""
        describe = getattr(self.store, "describe", None)
        if describe is not None:  # replicated: the etcd store says
            return describe()
        if self.failure:
            return f"degraded: cannot write journal ({self.failure})"
        if self.compaction_failure:
            return f"degraded: cannot compact journal ({self.compaction_failure})"
        return "ok"

    def record(self, entry: dict) -> None:
        if self.store is not None:
            self._batch.append(entry)

    def record_registration(self, reg: EtrRegistration) -> None:
        """Journal `reg` (its entry joined from parts: `EntryEncoder`)."""
        if self.store is not None:
            self._batch.append(self._encoder.encode(reg))

    def record_entry(self, entry: dict) -> bytes:
        """Journal `entry` (only with a store) and return it encoded."""
        packed = pack(entry)
        if self.store is not None:
            self._batch.append(packed)
        return packed

    def record_subscription(self, sub: Subscription) -> None:
        if self.store is not None:
            self._batch.append(subscription_entry(sub))

    def flush(self, now: float | None = None) -> None:
        """Write what the message being handled changed: durable before the caller sends anything.

        Raises `JournalUnavailable` after rolling the change back if it cannot be written."""
        if not self._batch:
            return
        if now is not None:
            self._now = now
        batch, self._batch = self._batch, []
        try:
            self.store.append(batch)  # type: ignore[union-attr]  # only filled when there is a store
        except OSError as exc:
            reason = errno.errorcode.get(exc.errno or 0, "error")
            self._count("store.write_errors")
            if not self.failure:
                self._failed_at = self._now
                LOG.error("cannot write the journal (%s): change undone; Map-Registers refused, Map-Requests "
                          "answered, until it can be written again", _text(exc))
            self.failure = reason
            if self.on_failure is not None:
                self.on_failure()
            self._count("store.rollbacks")
            self._retry_later(self._now)
            raise JournalUnavailable(f"cannot write journal ({reason})") from None

    def refuse_while_down(self, what: str) -> bool:
        """True (counted, logged throttled) when a change must be refused because the journal is down."""
        if not self.failure:
            return False
        self._count(f"rejected.{what}.journal-down")
        self._state.log_throttled(f"journal-down-{what}", logging.WARNING,
                                  "refused %s: cannot write journal (%s)", what.replace("_", "-"), self.failure)
        return True

    def maybe_compact(self, now: float | None = None) -> None:
        """Compact when the journal outgrew the state; while it is down, probe it (both with backoff)."""
        store, state = self.store, self._state
        if store is None:
            return
        if now is not None:
            self._now = now
        now = self._now
        if now < self._retry_at:
            return
        if self.failure:
            try:
                store.probe()
            except OSError as exc:
                self._count("store.probe_failures")
                self.failure = errno.errorcode.get(exc.errno or 0, "error")
                self._retry_later(now)
                return
            LOG.warning("journal writable again after %.0f s: Map-Registers accepted again", now - self._failed_at)
            self.failure = ""
            self._backoff = 0.0
        live = len(state.registered) + state.subscription_count + len(state.static) + len(state.policy.rules)
        if store.journal_length() >= max(COMPACT_MIN_ENTRIES, 2 * live):
            try:
                store.snapshot(self.stored_state())
            except OSError as exc:
                self._count("store.compaction_errors")
                if not self.compaction_failure:
                    LOG.error("journal compaction failed (%s): nothing changed, retried with backoff", _text(exc))
                else:
                    state.log_throttled("compaction", logging.WARNING, "journal compaction failed again (%s)",
                                        _text(exc))
                self.compaction_failure = errno.errorcode.get(exc.errno or 0, "error")
                self._retry_later(now)
                return
            if self.compaction_failure:
                LOG.warning("journal compaction works again")
                self.compaction_failure = ""
                self._backoff = 0.0
            self._count("store.snapshots")

    def _retry_later(self, now: float) -> None:
        self._backoff = min(max(2 * self._backoff, RETRY_FIRST), RETRY_MAX)
        self._retry_at = now + self._backoff
        self._state.schedule(self._retry_at, "store", ())  # a wake-up: `handle_timer` ignores the kind

    def state_entries(self) -> Iterator[dict]:
        """The whole durable state as journal entries (what a snapshot holds)."""
        for _, _, entry in self._state.registered:
            for reg in entry.regs():
                yield registration_entry(reg)
        yield from self._stated_entries()

    def stored_state(self) -> Iterator[bytes]:
        """`state_entries`, msgpack-encoded, for a snapshot: registrations in rows per context
        (`snapshot_rows`), then the rest."""
        yield from encode_groups(reg for entry in self._state.registered.values_by_address() for reg in entry.regs())
        for entry in self._stated_entries():
            yield pack(entry)

    def _stated_entries(self) -> Iterator[dict]:
        """Everything durable but the registrations: subscriptions, policy, static mappings."""
        state = self._state
        for _, _, subs in state.subscriptions:
            for sub in subs.values():
                yield subscription_entry(sub)
        for rule in state.policy.rules:
            yield rule_entry(rule)
        for override in state.policy.overrides:
            yield override_entry(override)
        for _, _, (mapping, _record) in state.static:
            yield static_entry(mapping)

    # ------------------------------------------------------------------ restore

    def restore(self, entries: list[dict], now: float, registry: RegistryPart, pubsub: PubSubPart) -> None:
        """Rebuild the tables from the store's entries; expired or no-longer-allowed ones are dropped and counted.

        Sets `state.policy` and `state.static` directly: the caller refreshes what depends on them.
        """
        state, count = self._state, self._count
        self._now = now
        registrations, subscriptions, stated = replay(entries, count)
        saved_store, self.store = self.store, None  # rebuilding must not re-journal
        self.restoring = True  # ... nor notify anybody: nothing changed for the outside world
        try:
            policy = Policy()
            for key, entry in stated.items():
                try:
                    if key[0] == "rule":
                        policy = policy.with_rule(Rule.from_dict(entry["v"]))
                    elif key[0] == "ovr":
                        policy = policy.with_override(RlocOverride.from_dict(entry["v"]))
                    else:
                        mapping = StaticMapping.from_dict(entry["v"])
                        state.static.insert(mapping.iid, mapping.prefix, (mapping, static_record(mapping)))
                    count("restore.policy")
                except (KeyError, TypeError, PolicyError):
                    count("restore.bad_entries")
            state.policy = policy
            self.restore_registrations(registrations, now, registry)
            for entry in subscriptions.values():
                try:
                    sub = subscription_from_entry(entry)
                except BAD_STORED_ENTRY:
                    count("restore.bad_entries")
                    continue
                if sub.expires <= now:
                    count("restore.expired")
                    continue
                pubsub.set_subscription(sub)
                count("restore.subscriptions")
        finally:
            self.store = saved_store
            self.restoring = False
        start_error = getattr(self.store, "start_error", None)
        if start_error is not None:  # no room at start: refuse changes until there is
            self.store.start_error = None  # type: ignore[union-attr]  # only a FileStore has one
            self.failure = errno.errorcode.get(start_error.errno or 0, "error")
            self._failed_at = now
            self._retry_later(now)
        restored = state.counters.get("restore.registrations", 0)
        if restored or state.counters.get("restore.subscriptions"):
            LOG.info("restored %d registrations and %d subscriptions from the store", restored,
                     state.counters.get("restore.subscriptions", 0))

    def restore_registrations(self, entries: StoredSet | Iterable[dict], now: float, registry: RegistryPart) -> None:
        """Rebuild the stored registrations (`stored_records.restore_registrations`; iterating a
        `StoredSet` gives its registration entries in order)."""
        restore_registrations(self._state, entries, now, registry, self.replicated)


def _text(exc: OSError) -> str:
    return f"{errno.errorcode.get(exc.errno or 0, 'error')}: {exc.strerror or exc}"
