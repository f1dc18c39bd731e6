"""Network policy evaluated in the mapping system: who may reach what, and which RLOCs to prefer.

Pure values and functions (no I/O, no clock).  The Map-Server holds one
`Policy` and consults it for every answer it gives, so a policy is enforced
where LISP decides forwarding: in the Map-Reply an ITR caches and turns
into flows.

Reachability rules
    A `Rule` names an instance-ID, destination EID prefixes, optionally
    source EID groups (prefixes) and ITR RLOCs (prefixes; a host address is
    a /32 or /128), an action (allow | deny) and a priority.
    Evaluation is **first match**: rules are ordered by (priority ascending,
    id); the first rule of the request's instance-ID whose destination,
    source and ITR conditions all hold decides.  No matching rule: allow.
    An empty source or ITR list means "any".  A rule with source groups
    matches only when the source EID is known (a Map-Request without a
    source EID, and no earlier one from the same subscriber, skips it).
    Instance-IDs are tenants: a rule never looks outside its own.

Uniform regions
    An ITR caches a prefix, not an address, so an answer must not cover
    addresses the policy treats differently.  `Decision.region` is the
    widest prefix around the destination inside which every rule
    destination either contains it entirely or not at all; the Map-Server
    narrows its answer to it (exactly like a negative Map-Reply is
    narrowed around registered prefixes, RFC 9301 §8.1).

Source-specific answers
    When the verdict can differ between source EIDs behind one ITR (a rule
    with source groups of the requester's family is evaluated before the
    deciding rule, or decides), `Decision.source_region` is the widest
    prefix around the requester's source EID that every such rule's source
    groups either contain or miss entirely.  The Map-Server then answers
    with a Source/Dest-key EID-record (RFC 8060 LCAF type 12), which the ITR
    caches and enforces per source (its ROUTE flows match the source too),
    so a source-group rule holds per host, not per ITR.  Whether an answer
    depends on the source is the same for every source behind one ITR (it
    only depends on rule order, destination and ITR), which is what lets the
    ITR treat a plain answer as "no source-specific entries here".

RLOC overrides
    An `RlocOverride` sets the priority and/or weight of one RLOC address
    wherever it appears, or of every RLOC of one site's registrations.  An
    RLOC-address override beats a site override.  Weight 0 drains an RLOC
    (RFC 9300: weight 0 carries no traffic unless all are 0); a higher
    priority value makes it backup; 255 makes it unusable.

Static mappings
    A `StaticMapping` is a mapping stated through the REST API (an EID
    prefix in an instance-ID -> RLOCs), kept in a table of its own beside
    the registrations; see the Map-Server for the precedence between them.

`from_dict` constructors validate JSON input with the readers of
`lisp_ryu.schema` and raise `PolicyError` (that module's `InputError`)
naming the bad field, so the REST layer can answer 400 with it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Iterable

from lisp_ryu import schema
from lisp_ryu.schema import InputError, Node
from lisp_ryu.wire import TTL_ONE_DAY, Locator

from .eid import IPAddress, IPNetwork
from .table import PrefixTable

MAX_ID_LENGTH = 64
DEFAULT_PRIORITY = 100
MAX_LIST = 1024  # prefixes per rule field: a rule is a statement, not a table
MAX_RLOCS = 64  # per static mapping


#: A policy statement is invalid; `.field` names the offending field (JSON path).
PolicyError = InputError


class Verdict(Enum):
    ALLOW = "allow"
    DENY = "deny"


# --------------------------------------------------------------------------- reading JSON


def _body(data: Any) -> Node:
    return Node(data, root="body")


def _id(value: Any, name: str = "id") -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise InputError(name, f"must be a non-empty string of at most {MAX_ID_LENGTH} characters")
    if not all(c.isalnum() or c in "-_." for c in value):
        raise InputError(name, "may hold only letters, digits, '-', '_' and '.'")
    return value


def parse_iid(value: Any, name: str = "iid") -> int:
    return schema.iid(value, name)


def parse_prefix(value: Any, name: str) -> IPNetwork:
    """A strict prefix ("10.1.0.0/16"; a bare address is a host prefix)."""
    return schema.prefix(value, name)


def parse_address(value: Any, name: str) -> IPAddress:
    return schema.address(value, name)


def _prefixes(value: Any, name: str, *, required: bool) -> tuple[IPNetwork, ...]:
    out = schema.seq(value, name, schema.prefix, min_len=1 if required else 0, max_len=MAX_LIST)
    return tuple(sorted(set(out), key=lambda n: (n.version, n)))


_byte = schema.int_range(0, 255)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Rule:
    """One reachability statement; see the module docstring for its semantics."""

    id: str
    iid: int
    destinations: tuple[IPNetwork, ...]
    action: Verdict
    sources: tuple[IPNetwork, ...] = ()
    itr_rlocs: tuple[IPNetwork, ...] = ()
    priority: int = DEFAULT_PRIORITY
    description: str = ""

    def matches(self, source: IPAddress | None, itr: IPAddress | None, destination: IPAddress) -> bool:
        if not any(destination in net for net in self.destinations if net.version == destination.version):
            return False
        if self.sources and (source is None or not any(source in net for net in self.sources
                                                       if net.version == source.version)):
            return False
        if self.itr_rlocs and (itr is None or not any(itr in net for net in self.itr_rlocs
                                                      if net.version == itr.version)):
            return False
        return True

    @classmethod
    def from_dict(cls, data: Any, rule_id: str | None = None) -> Rule:
        body = _body(data).expect(optional={"id", "iid", "destinations", "sources", "itr_rlocs", "action",
                                            "priority", "description"})
        if rule_id is not None and body.has("id") and data["id"] != rule_id:
            raise InputError("id", f"{schema.show(data['id'])} differs from the id in the URL ({schema.show(rule_id)})")
        action = body.get("action", schema.one_of(v.value for v in Verdict))
        description = body.raw("description", "")
        if not isinstance(description, str) or len(description) > 256:
            raise InputError("description", "must be a string of at most 256 characters")
        return cls(
            id=_id(rule_id) if rule_id is not None else body.get("id", _id),
            iid=body.get("iid", schema.iid),
            destinations=body.get("destinations", lambda v, p: _prefixes(v, p, required=True)),
            action=Verdict(action),
            sources=_prefixes(body.raw("sources", []), "sources", required=False),
            itr_rlocs=_prefixes(body.raw("itr_rlocs", []), "itr_rlocs", required=False),
            priority=body.get("priority", schema.int_range(0, 65535), DEFAULT_PRIORITY),
            description=description,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "iid": self.iid,
            "priority": self.priority,
            "action": self.action.value,
            "sources": [str(n) for n in self.sources],
            "itr_rlocs": [str(n) for n in self.itr_rlocs],
            "destinations": [str(n) for n in self.destinations],
            "description": self.description,
        }


@dataclass(frozen=True)
class RlocOverride:
    """New priority and/or weight for one RLOC address, or for every RLOC of one site."""

    id: str
    rloc: IPAddress | None = None
    site: str | None = None
    priority: int | None = None
    weight: int | None = None

    @classmethod
    def from_dict(cls, data: Any, override_id: str | None = None) -> RlocOverride:
        body = _body(data).expect(optional={"id", "rloc", "site", "priority", "weight"})
        if override_id is not None and body.has("id") and data["id"] != override_id:
            raise InputError("id", f"{schema.show(data['id'])} differs from the id in the URL ({schema.show(override_id)})")
        rloc = body.raw("rloc")
        site = body.raw("site")
        if (rloc is None) == (site is None):
            raise InputError("rloc", "give exactly one of 'rloc' (an RLOC address) or 'site' (a site name)")
        if site is not None and (not isinstance(site, str) or not site):
            raise InputError("site", "must be a site name")
        priority = body.raw("priority")
        weight = body.raw("weight")
        if priority is None and weight is None:
            raise InputError("weight", "give 'priority', 'weight' or both")
        return cls(
            id=_id(override_id) if override_id is not None else body.get("id", _id),
            rloc=schema.address(rloc, "rloc") if rloc is not None else None,
            site=site,
            priority=_byte(priority, "priority") if priority is not None else None,
            weight=_byte(weight, "weight") if weight is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "rloc": str(self.rloc) if self.rloc is not None else None, "site": self.site,
                "priority": self.priority, "weight": self.weight}

    def apply(self, locator: Locator) -> Locator:
        return replace(locator,
                       priority=self.priority if self.priority is not None else locator.priority,
                       weight=self.weight if self.weight is not None else locator.weight)


@dataclass(frozen=True)
class StaticRloc:
    address: IPAddress
    priority: int = 1
    weight: int = 100


def _static_rloc(data: Any, path: str) -> StaticRloc:
    rloc = Node(data, path).expect(optional={"address", "priority", "weight"})
    return StaticRloc(
        rloc.get("address", schema.address),
        rloc.get("priority", _byte, StaticRloc.priority),  # the dataclass defaults
        rloc.get("weight", _byte, StaticRloc.weight),
    )


@dataclass(frozen=True)
class StaticMapping:
    """A mapping stated by the operator: EID prefix in an instance-ID -> RLOCs."""

    iid: int
    prefix: IPNetwork
    rlocs: tuple[StaticRloc, ...]
    ttl_minutes: int = TTL_ONE_DAY

    @classmethod
    def from_dict(cls, data: Any) -> StaticMapping:
        body = _body(data).expect(optional={"iid", "prefix", "rlocs", "ttl_minutes"})
        rlocs = body.get("rlocs", lambda v, p: schema.seq(v, p, _static_rloc, min_len=1, max_len=MAX_RLOCS))
        if len({r.address for r in rlocs}) != len(rlocs):
            raise InputError("rlocs", "an RLOC address appears twice")
        return cls(
            iid=body.get("iid", schema.iid),
            prefix=body.get("prefix", schema.prefix),
            rlocs=tuple(rlocs),
            ttl_minutes=body.get("ttl_minutes", schema.int_range(1, 0xFFFFFFFE), TTL_ONE_DAY),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"iid": self.iid, "prefix": str(self.prefix), "ttl_minutes": self.ttl_minutes,
                "rlocs": [{"address": str(r.address), "priority": r.priority, "weight": r.weight}
                          for r in self.rlocs]}

    def locators(self) -> tuple[Locator, ...]:
        return tuple(Locator(r.address, priority=r.priority, weight=r.weight, reachable=True) for r in self.rlocs)


@dataclass(frozen=True)
class Decision:
    """The verdict for one (iid, source, ITR, destination), the rule that gave it, and the
    widest prefix around the destination over which it cannot change."""

    verdict: Verdict
    rule: str | None
    region: IPNetwork
    source_region: IPNetwork | None = None  # set when the verdict depends on the source EID

    @property
    def denied(self) -> bool:
        return self.verdict is Verdict.DENY


# --------------------------------------------------------------------------- the policy


@dataclass(frozen=True)
class Policy:
    """An immutable set of rules and RLOC overrides; changes return a new Policy.

    Immutability lets the Map-Server compare every subscriber's answer under
    the old and the new policy, and notify exactly those whose answer changed.
    """

    rules: tuple[Rule, ...] = ()
    overrides: tuple[RlocOverride, ...] = ()
    _index: PrefixTable = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.rules, key=lambda r: (r.priority, r.id)))
        object.__setattr__(self, "rules", ordered)
        object.__setattr__(self, "overrides", tuple(sorted(self.overrides, key=lambda o: o.id)))
        index: PrefixTable[list[Rule]] = PrefixTable()
        for rule in ordered:
            for net in rule.destinations:
                bucket = index.get(rule.iid, net)
                if bucket is None:
                    index.insert(rule.iid, net, [rule])
                else:
                    bucket.append(rule)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_by_rloc", {o.rloc: o for o in self.overrides if o.rloc is not None})
        object.__setattr__(self, "_by_site", {o.site: o for o in self.overrides if o.site is not None})

    @property
    def empty(self) -> bool:
        return not self.rules and not self.overrides

    # -- changes ------------------------------------------------------------
    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def override(self, override_id: str) -> RlocOverride | None:
        return next((o for o in self.overrides if o.id == override_id), None)

    def with_rule(self, rule: Rule) -> Policy:
        return Policy(tuple(r for r in self.rules if r.id != rule.id) + (rule,), self.overrides)

    def without_rule(self, rule_id: str) -> Policy:
        return Policy(tuple(r for r in self.rules if r.id != rule_id), self.overrides)

    def with_override(self, override: RlocOverride) -> Policy:
        clash = next((o for o in self.overrides if o.id != override.id and
                      ((override.rloc is not None and o.rloc == override.rloc) or
                       (override.site is not None and o.site == override.site))), None)
        if clash is not None:
            target = "rloc" if override.rloc is not None else "site"
            raise InputError(target, f"override {clash.id!r} already sets {getattr(override, target)}")
        return Policy(self.rules, tuple(o for o in self.overrides if o.id != override.id) + (override,))

    def without_override(self, override_id: str) -> Policy:
        return Policy(self.rules, tuple(o for o in self.overrides if o.id != override_id))

    # -- evaluation ---------------------------------------------------------
    def decide(self, iid: int, source: IPAddress | None, itr: IPAddress | None, destination: IPAddress) -> Decision:
        """First matching rule of `iid` (by priority, then id); allow if none matches."""
        region = self.region(iid, destination)
        hit = self._index.longest_match(iid, destination)
        if hit is not None:
            # Only rules with a destination containing the address can match: collect them
            # from the covering chain, then take the first in rule order.
            candidates: dict[str, Rule] = {}
            net: IPNetwork | None = hit[0]
            bucket = hit[1]
            while net is not None:
                for rule in bucket:
                    candidates[rule.id] = rule
                above = self._index.covering(iid, net, strict=True)
                net, bucket = (above[0], above[1]) if above is not None else (None, [])
            # Source groups (of the source's family) of the rules evaluated up to the decision,
            # whose ITR condition holds: only they can make another source's verdict differ.
            groups: list[IPNetwork] = []
            for rule in sorted(candidates.values(), key=lambda r: (r.priority, r.id)):
                if source is not None and _itr_holds(rule, itr):
                    groups += [net for net in rule.sources if net.version == source.version]
                if rule.matches(source, itr, destination):
                    return Decision(rule.action, rule.id, region, _uniform_around(source, groups))
            return Decision(Verdict.ALLOW, None, region, _uniform_around(source, groups))
        return Decision(Verdict.ALLOW, None, region)

    def region(self, iid: int, destination: IPAddress) -> IPNetwork:
        """Widest prefix around `destination` that no rule destination splits."""
        index = self._index
        hit = index.longest_match(iid, destination)
        if hit is None:
            return index.widest_negative(iid, destination)
        top = hit[0]
        length = top.prefixlen
        value, width = int(destination), destination.max_prefixlen
        for inner, _ in index.more_specifics(iid, top, strict=True):
            common = width - (value ^ int(inner.network_address)).bit_length()
            length = max(length, common + 1)
        return ipaddress.ip_network((destination, length), strict=False)

    def adjust(self, locators: Iterable[Locator], site: str | None) -> tuple[Locator, ...]:
        """Locators with the overrides applied (RLOC-address override first, then the site's)."""
        by_rloc: dict = self._by_rloc  # type: ignore[attr-defined]
        site_override = self._by_site.get(site) if site is not None else None  # type: ignore[attr-defined]
        out = []
        for locator in locators:
            override = by_rloc.get(locator.address) or site_override
            out.append(override.apply(locator) if override is not None else locator)
        return tuple(out)

    def touches_locators(self) -> bool:
        return bool(self.overrides)


def _itr_holds(rule: Rule, itr: IPAddress | None) -> bool:
    if not rule.itr_rlocs:
        return True
    return itr is not None and any(itr in net for net in rule.itr_rlocs if net.version == itr.version)


def _uniform_around(source: IPAddress | None, groups: list[IPNetwork]) -> IPNetwork | None:
    """Widest prefix around `source` that each of `groups` contains entirely or misses; None if no groups."""
    if source is None or not groups:
        return None
    value, width = int(source), source.max_prefixlen
    length = 0
    for net in groups:
        if source in net:
            length = max(length, net.prefixlen)
        else:  # long enough to leave `net` out: one bit past the common leading bits
            common = width - (value ^ int(net.network_address)).bit_length()
            length = max(length, common + 1)
    return ipaddress.ip_network((source, length), strict=False)
