"""A mapping as policy lets one requester see it (`lisp_ryu.mapping.policy`).

Every answer -- Map-Reply, subscription confirmation, publication -- is
shaped for its requester (source EID, ITR-RLOC): a denied pair gets a
negative record with action Drop/Policy-Denied; an allowed one gets the
mapping with RLOC overrides applied; either is narrowed to the region the
policy treats uniformly.  The resolver shapes answers, the pubsub part
publications: both use this one function, so they cannot disagree.
"""

from __future__ import annotations

from typing import Iterable

from lisp_ryu.mapping.policy import Policy
from lisp_ryu.mapping.sourcedest import SourceDestKey, record_key
from lisp_ryu.mapserver.state import IPAddress, IPNetwork
from lisp_ryu.wire import Action, EidPrefix, MappingRecord


def shape(iid: int, net: IPNetwork, record: MappingRecord, site: str | None, source: IPAddress | None,
          itr: IPAddress | None, address: IPAddress, policy: Policy, denied_ttl_minutes: int) -> MappingRecord:
    """`record` (the mapping of `net`) as policy lets this requester see it at `address`."""
    decision = policy.decide(iid, source, itr, address)
    prefix = decision.region if decision.region.prefixlen > net.prefixlen else net
    if decision.source_region is not None:
        # The verdict depends on the requesting host: key the answer by (source, destination).
        eid_mask_len, eid = SourceDestKey(iid, decision.source_region, prefix).to_wire()
    else:
        eid_mask_len, eid = EidPrefix(prefix.network_address, prefix.prefixlen, iid).to_wire()
    if decision.denied:
        return MappingRecord(eid, eid_mask_len, (), ttl=denied_ttl_minutes, action=Action.DROP_POLICY_DENIED)
    locators = policy.adjust(record.locators, site) if record.locators else record.locators
    if decision.source_region is None and prefix == net and all(a is b for a, b in zip(locators, record.locators)):
        return record
    return MappingRecord(eid, eid_mask_len, locators, ttl=record.ttl, action=record.action,
                         map_version=record.map_version)


def distinct(records: Iterable[MappingRecord]) -> tuple[MappingRecord, ...]:
    """`records` in order, each once."""
    return tuple(dict.fromkeys(records))


def eid_text(record: MappingRecord) -> str:
    """The record's EID for a log line: a prefix, or a (source -> destination) key."""
    key = record_key(record)
    return str(key) if key is not None else str(record.eid_prefix)
