"""The pure core of the replicated mapping store (issue 17): keys, values, the replica image,
write planning, ETR sessions and health — no IO, no clock (time is a parameter).

`lisp_ryu/glue/etcd_store.py` is the IO around it (etcd, threads); its docstring says how
the Map-Server core plugs in.

Key schema (all under /lisp/, one subtree per kind, the instance-ID zero-padded so a
per-IID range read is a prefix read):

    /lisp/map/<iid:010d>/<address>/<length>/<etr>    one ETR's registration of one EID prefix,
                                                     attached to that ETR's session lease
    /lisp/etr/<site>/<etr>                           the ETR's session: its lease id and TTL
    /lisp/sub/<iid:010d>/<address>/<length>/<xtr>    a subscription (RFC 9437)
    /lisp/policy/<name>   /lisp/override/<name>   /lisp/static/<iid:010d>/<address>/<length>
    /lisp/role/<name>                                an exactly-once role, held with a lease
    /lisp/node/<node>                                commit marker, written in every commit
                                                     txn: names the revision's origin

`<etr>` is the Map-Server's ETR identity ("xtr:<hex>" or "rloc:<address>"); no component
may contain "/".  Values are msgpack maps whose fields the Map-Server defines; this module
only packs and compares bytes.

The commit marker: every transaction this store commits also puts /lisp/node/<node>, so a
replica tells from one revision whether a node committed it (that node notified its
subscribers at once) or nobody did (a lease expired: the role holder must do what expiry
entails, exactly once).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import msgpack

ROOT = b"/lisp/"
KINDS = ("map", "etr", "sub", "policy", "override", "static", "role", "node")


class SchemaKeyError(ValueError):
    """A key component that cannot be part of a key, or a key outside the schema."""


def _component(text: str, what: str) -> str:
    if not text or "/" in text or "\0" in text:
        raise SchemaKeyError(f"{what} {text!r} cannot be a key component (empty, '/' or NUL)")
    return text


def _eid(iid: int, prefix: str) -> str:
    if not 0 <= iid < (1 << 32):
        raise SchemaKeyError(f"instance-ID {iid} out of range")
    address, sep, length = prefix.partition("/")
    if not sep or not length.isdigit():
        raise SchemaKeyError(f"EID prefix {prefix!r} is not ADDRESS/LENGTH")
    return f"{iid:010d}/{_component(address, 'address')}/{int(length)}"


def map_key(iid: int, prefix: str, etr: str) -> bytes:
    return f"/lisp/map/{_eid(iid, prefix)}/{_component(etr, 'ETR')}".encode()


def map_prefix(iid: int | None = None) -> bytes:
    return b"/lisp/map/" if iid is None else f"/lisp/map/{iid:010d}/".encode()


def etr_key(site: str, etr: str) -> bytes:
    return f"/lisp/etr/{_component(site, 'site')}/{_component(etr, 'ETR')}".encode()


def sub_key(iid: int, prefix: str, subscriber: str) -> bytes:
    return f"/lisp/sub/{_eid(iid, prefix)}/{_component(subscriber, 'subscriber')}".encode()


def static_key(iid: int, prefix: str) -> bytes:
    return f"/lisp/static/{_eid(iid, prefix)}".encode()


def named_key(kind: str, name: str) -> bytes:
    if kind not in ("policy", "override", "role", "node"):
        raise SchemaKeyError(f"kind {kind!r} has no named keys")
    return f"/lisp/{kind}/{_component(name, kind)}".encode()


@dataclass(frozen=True, slots=True)
class ParsedKey:
    kind: str
    iid: int | None = None
    prefix: str | None = None  # "ADDRESS/LENGTH"
    name: str | None = None  # the ETR, subscriber, site/ETR, or the policy/override/role/node name
    site: str | None = None


def parse_key(key: bytes) -> ParsedKey:
    try:
        text = key.decode()
    except UnicodeDecodeError as exc:
        raise SchemaKeyError(f"key {key!r} is not UTF-8") from exc
    parts = text.split("/")
    if len(parts) < 4 or parts[0] != "" or parts[1] != "lisp" or parts[2] not in KINDS:
        raise SchemaKeyError(f"key {text!r} is outside the schema")
    kind, rest = parts[2], parts[3:]
    if kind in ("map", "sub") and len(rest) == 4 and rest[0].isdigit() and rest[2].isdigit():
        return ParsedKey(kind, int(rest[0]), f"{rest[1]}/{int(rest[2])}", rest[3])
    if kind == "static" and len(rest) == 3 and rest[0].isdigit() and rest[2].isdigit():
        return ParsedKey(kind, int(rest[0]), f"{rest[1]}/{int(rest[2])}")
    if kind == "etr" and len(rest) == 2 and all(rest):
        return ParsedKey(kind, name=rest[1], site=rest[0])
    if kind in ("policy", "override", "role", "node") and len(rest) == 1 and rest[0]:
        return ParsedKey(kind, name=rest[0])
    raise SchemaKeyError(f"key {text!r} does not fit the {kind} schema")


def pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(data: bytes) -> object:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


# --------------------------------------------------------------------------- the replica image


@dataclass(frozen=True, slots=True)
class Entry:
    value: bytes
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Change:
    key: bytes
    old: bytes | None  # None: the key did not exist
    new: bytes | None  # None: the key is gone (deleted, withdrawn, or its lease expired)


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """What one etcd revision changed, in order; `origin` names the node that committed it,
    None when no node did (a lease expired, or an operator).  `reread`: a full read (the first,
    or after the watch fell behind the compaction) — the difference from what the replica held
    before (everything, the first time): a state to adopt, whose origin is unknown (None)."""

    revision: int
    changes: tuple[Change, ...]
    origin: str | None
    reread: bool = False


@dataclass(frozen=True, slots=True)
class RawEvent:
    """A watch event as the image needs it (the glue converts the client's)."""

    type: str  # "PUT" | "DELETE"
    key: bytes
    value: bytes
    mod_revision: int
    lease: int = 0


def _marker_origin(key: bytes) -> str | None:
    return key[len(b"/lisp/node/"):].decode(errors="replace") if key.startswith(b"/lisp/node/") else None


class Image:
    """The in-memory copy of /lisp/ at `revision`: a full read, then watch events in order."""

    def __init__(self) -> None:
        self.revision = 0
        self.entries: dict[bytes, Entry] = {}
        self.loaded = False

    def get(self, key: bytes) -> Entry | None:
        return self.entries.get(key)

    def load(self, revision: int, kvs: Iterable[tuple[bytes, bytes, int, int]]) -> ChangeBatch | None:
        """Replace the content with a full read at `revision` ((key, value, mod_revision, lease));
        the difference from what was held before (everything, on the first load) as one batch
        with `reread` set, None when nothing differs."""
        fresh = {k: Entry(v, m, lease) for k, v, m, lease in kvs}
        changes = []
        for key in sorted(self.entries.keys() | fresh.keys()):
            old, new = self.entries.get(key), fresh.get(key)
            if (old and old.value) != (new and new.value) or (old is None) != (new is None):
                if not key.startswith(b"/lisp/node/"):
                    changes.append(Change(key, old and old.value, new and new.value))
        self.entries, self.revision, self.loaded = fresh, revision, True
        return ChangeBatch(revision, tuple(changes), None, reread=True) if changes else None

    def apply(self, events: Iterable[RawEvent], header_revision: int = 0) -> list[ChangeBatch]:
        """Apply watch events (one response may span several revisions) in revision order;
        events at or below the image's revision were seen already (a resumed watch) and are
        skipped.  Returns one batch per revision."""
        batches: list[ChangeBatch] = []
        current: list[Change] = []
        origin: str | None = None
        revision = 0
        base = self.revision
        for event in events:
            if event.mod_revision <= base:
                continue
            if event.mod_revision != revision:
                if current or origin:
                    batches.append(ChangeBatch(revision, tuple(current), origin))
                current, origin, revision = [], None, event.mod_revision
            old = self.entries.get(event.key)
            if event.type == "DELETE":
                if old is not None:
                    del self.entries[event.key]
                new_value = None
            else:
                self.entries[event.key] = Entry(event.value, event.mod_revision, event.lease)
                new_value = event.value
            marker = _marker_origin(event.key)
            if marker is not None:
                if event.type != "DELETE":
                    origin = marker
                continue
            if (old and old.value) != new_value or (old is None) != (new_value is None):
                current.append(Change(event.key, old and old.value, new_value))
        if current or origin:
            batches.append(ChangeBatch(revision, tuple(current), origin))
        self.revision = max(self.revision, revision, header_revision)
        return [b for b in batches if b.changes]

    def digest(self) -> dict[bytes, bytes]:
        """Key -> value of everything but the commit markers (for comparisons in tests)."""
        return {k: e.value for k, e in self.entries.items() if not k.startswith(b"/lisp/node/")}


# --------------------------------------------------------------------------- planning writes


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes


@dataclass(frozen=True, slots=True)
class Expect:
    """Commit only if `key`'s mod revision is `mod_revision` (0: the key must not exist)."""

    key: bytes
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Plan:
    ops: tuple[Put | Delete, ...]
    expects: tuple[Expect, ...]
    unchanged: int  # writes asked for that the store already holds: no write for them


def plan(current: Callable[[bytes], tuple[bytes, int] | None],
         writes: Mapping[bytes, bytes | None], leases: Mapping[bytes, int] | None = None,
         expects: Iterable[Expect] = ()) -> Plan:
    """The operations that make the store hold `writes` (key -> value, None to delete), given
    `current(key)` -> (value, lease) or None: only what differs is written."""
    leases = leases or {}
    ops: list[Put | Delete] = []
    unchanged = 0
    for key in sorted(writes):
        value, held = writes[key], current(key)
        if value is None:
            if held is None:
                unchanged += 1
            else:
                ops.append(Delete(key))
        elif held is not None and held == (value, leases.get(key, 0)):
            unchanged += 1
        else:
            ops.append(Put(key, value, leases.get(key, 0)))
    return Plan(tuple(ops), tuple(expects), unchanged)


# --------------------------------------------------------------------------- ETR sessions


def session_ttl(hold_time: float) -> int:
    """The lease TTL for a registration held `hold_time` seconds without a refresh (whole
    seconds, at least 2: etcd rounds shorter leases up to its own minimum anyway)."""
    return max(2, math.ceil(hold_time))


@dataclass(slots=True)
class Session:
    lease: int
    ttl: int
    renewed: float  # when the lease was last granted or kept alive (by this node)


@dataclass(slots=True)
class Sessions:
    """This node's view of the ETR sessions it has seen refresh: which lease, and whether a
    refresh should renew it now.  A refresh renews at most every ttl/KEEPALIVE_DIVISOR seconds
    (a keep-alive is no write, but it is a round trip to the etcd leader)."""

    KEEPALIVE_DIVISOR = 3
    by_etr: dict[bytes, Session] = field(default_factory=dict)

    def on_refresh(self, etr: bytes, now: float) -> str:
        """'open' (no lease known: create or adopt one), 'keepalive', or 'none'."""
        session = self.by_etr.get(etr)
        if session is None:
            return "open"
        if now - session.renewed >= session.ttl / self.KEEPALIVE_DIVISOR:
            return "keepalive"
        return "none"

    def opened(self, etr: bytes, lease: int, ttl: int, now: float) -> None:
        self.by_etr[etr] = Session(lease, ttl, now)

    def renewed(self, etr: bytes, now: float) -> None:
        if etr in self.by_etr:
            self.by_etr[etr].renewed = now

    def lost(self, etr: bytes) -> None:
        """The lease is gone (expired, revoked): the next refresh opens a new one."""
        self.by_etr.pop(etr, None)


# --------------------------------------------------------------------------- health


@dataclass(slots=True)
class Health:
    """'starting' until the first full read, 'ok', or 'degraded' (etcd unreachable or without
    quorum: nothing is acknowledged, answers come from the replica as it is)."""

    state: str = "starting"
    reason: str = ""
    since: float = 0.0
    failures: int = 0

    @property
    def acknowledging(self) -> bool:
        return self.state == "ok"

    def success(self, now: float) -> str | None:
        """Record a round trip that worked; the log line when the state changes."""
        self.failures = 0
        if self.state == "ok":
            return None
        was, self.state, self.reason, self.since = self.state, "ok", "", now
        return "etcd reachable with quorum: acknowledging registrations" + (
            f" again after {was}" if was == "degraded" else "")

    def failure(self, now: float, reason: str) -> str | None:
        self.failures += 1
        if self.state == "degraded":
            self.reason = reason
            return None
        self.state, self.reason, self.since = "degraded", reason, now
        return f"etcd unreachable or without quorum ({reason}): not acknowledging registrations, " \
               f"answering from the replica"

    def view(self, now: float) -> dict:
        return {"state": self.state, "reason": self.reason, "for_s": round(now - self.since, 3),
                "acknowledging": self.acknowledging}


@dataclass(slots=True)
class LagCheck:
    """Is the replica following?  Fed with the newest commit revision a quorum read saw (the
    highest commit marker) and the image's revision: when the image has not reached a revision
    seen committed `max_lag` seconds ago, the replica is lagging (a stalled watch) and the node
    must not acknowledge on the strength of it."""

    max_lag: float = 1.0
    pending: deque = field(default_factory=deque)  # (revision seen committed, when), oldest first

    def observe(self, committed: int, image_revision: int, now: float) -> str | None:
        while self.pending and self.pending[0][0] <= image_revision:
            self.pending.popleft()
        if committed > image_revision and (not self.pending or self.pending[-1][0] < committed):
            self.pending.append((committed, now))
        if self.pending and now - self.pending[0][1] > self.max_lag:
            revision, since = self.pending[0]
            return (f"replica at revision {image_revision} has not reached revision {revision}, "
                    f"committed {now - since:.1f} s ago")
        return None
