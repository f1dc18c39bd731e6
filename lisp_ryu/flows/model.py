"""Flows, groups and meters as plain, hashable data.

The compiler produces sets of these; the diff compares sets; only the glue
turns them into OpenFlow messages.  Keeping them free of Ryu makes the whole
desired-state machinery testable and cheap to compare.

Field and action names follow Ryu's OXM/NXM names (`ipv4_dst`,
`tun_ipv4_dst`, `tunnel_id`, `metadata`), so rendering is a lookup.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Union

from lisp_ryu.plan import cached_hash

MatchValue = Union[int, str, tuple]  # masked values are (value, mask)


# ---- actions ------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    port: int | str  # a number, or "in_port" / "controller"
    max_len: int = 0xFFFF


@dataclass(frozen=True)
class SetField:
    field: str
    value: Any


@dataclass(frozen=True)
class Move:
    """Copy `n_bits` from one field to another (NXM reg-move), e.g. ARP replies in flows."""

    src: str
    dst: str
    n_bits: int


@dataclass(frozen=True)
class GroupAction:
    group_id: int


@dataclass(frozen=True)
class DecTtl:
    pass


Action = Union[Output, SetField, Move, GroupAction, DecTtl]


# ---- flows ---------------------------------------------------------------


@cached_hash
@dataclass(frozen=True)
class Flow:
    """One flow entry.  (table, priority, match) is its identity on the switch."""

    table: int
    priority: int
    match: tuple[tuple[str, MatchValue], ...]
    actions: tuple[Action, ...] = ()
    goto: int | None = None
    write_metadata: tuple[int, int] | None = None  # (value, mask)
    meter: int | None = None
    cookie: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0

    @property
    def key(self) -> tuple[int, int, tuple]:
        return (self.table, self.priority, self.match)

    @property
    def key_hash(self) -> int:
        """hash(key), once per object: every push checks that no two flows share a key, and the
        memoised compiler hands it the same flow objects push after push."""
        found = self.__dict__.get("_key_hash")
        if found is None:
            found = self.__dict__["_key_hash"] = hash(self.key)
        return found

    def match_dict(self) -> dict[str, MatchValue]:
        return dict(self.match)


class FlowSet(tuple):
    """A memoised run of flows (one host's, one map-cache entry's ...) that knows its set and
    its keys' hashes, each made once.  A push unites a few hundred of these (C-level set
    unions that reuse the stored hashes) instead of hashing a few thousand flows again."""

    @property
    def as_set(self) -> frozenset:
        found = self.__dict__.get("_set")
        if found is None:
            found = self.__dict__["_set"] = frozenset(self)
        return found

    @property
    def key_hashes(self) -> frozenset:
        found = self.__dict__.get("_key_hashes")
        if found is None:
            found = self.__dict__["_key_hashes"] = frozenset(f.key_hash for f in self)
        return found

    def __reduce__(self):  # hashes are per process (string hashing): a pickle carries the flows only
        return (FlowSet, (tuple(self),))


def address_network(value: str | tuple[str, str], strict: bool = True) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address match value ("10.0.0.1" or (address, netmask)) as a network.

    ipaddress parses "a/netmask" for IPv4 only, so the mask goes in as a length.
    """
    if not isinstance(value, tuple):
        return ipaddress.ip_network(value)
    address, mask = value
    length = bin(int(ipaddress.ip_address(mask))).count("1")
    return ipaddress.ip_network((address, length), strict=strict)


def match(**fields: MatchValue) -> tuple[tuple[str, MatchValue], ...]:
    """A canonical (sorted) match, so equal matches compare equal."""
    return tuple(sorted(fields.items()))


@cached_hash
@dataclass(frozen=True)
class Bucket:
    weight: int
    actions: tuple[Action, ...]
    # Liveness (OpenFlow 1.3 watch_port / watch_group): a fast-failover group uses the
    # first live bucket; OVS also skips dead buckets of a select group.  None: not watched.
    watch_port: int | None = None
    watch_group: int | None = None


@cached_hash
@dataclass(frozen=True)
class Group:
    group_id: int
    type: str  # "select" | "all" | "indirect" | "ff"
    buckets: tuple[Bucket, ...]


@dataclass(frozen=True)
class Meter:
    meter_id: int
    rate_pps: int
    burst: int = 0


@dataclass(frozen=True)
class DesiredState:
    """Everything one switch should hold, as the compiler computed it."""

    flows: frozenset[Flow] = field(default_factory=frozenset)
    groups: frozenset[Group] = field(default_factory=frozenset)
    meters: frozenset[Meter] = field(default_factory=frozenset)
