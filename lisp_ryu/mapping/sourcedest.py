"""Source-specific mappings: the Source/Dest key (RFC 8060 LCAF type 12) of an EID-record.

A Map-Server whose answer for a destination depends on the requesting host
answers with an EID-record keyed by (source prefix, destination prefix)
(RFC 9301 allows any LCAF as EID; RFC 8060 §4.10 defines this one).  On the
wire the key is a `SourceDestAddress`, inside an Instance-ID LCAF when the
instance-ID is not 0; the record's EID mask-len carries the destination's.

The ITR's map-cache holds such entries beside its plain ones
(`mapcache.MapCache`); the Map-Server answers with them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from lisp_ryu.wire import InstanceIdAddress, SourceDestAddress

from .eid import EidError, IPNetwork, check_iid


@dataclass(frozen=True, slots=True)
class SourceDestKey:
    """(instance-ID, source prefix, destination prefix) of one source-specific mapping."""

    iid: int
    source: IPNetwork
    dest: IPNetwork

    def __post_init__(self) -> None:
        check_iid(self.iid)
        if self.source.version != self.dest.version:
            raise EidError(f"source {self.source} and destination {self.dest} are of different families")

    def to_wire(self) -> tuple[int, object]:
        """(EID mask-len, EID address) for an EID-record."""
        sd = SourceDestAddress(self.source.network_address, self.source.prefixlen,
                               self.dest.network_address, self.dest.prefixlen)
        return self.dest.prefixlen, (sd if self.iid == 0 else InstanceIdAddress(self.iid, sd))

    @classmethod
    def from_wire(cls, address: object) -> SourceDestKey | None:
        """The key an EID-record's address names, or None when it is no (IID-wrapped) IP Source/Dest key."""
        iid = 0
        if isinstance(address, InstanceIdAddress):
            if address.iid_mask_len not in (0, 32):
                return None
            iid, address = address.instance_id, address.address
        if not isinstance(address, SourceDestAddress):
            return None
        ip = (ipaddress.IPv4Address, ipaddress.IPv6Address)
        if not isinstance(address.source, ip) or not isinstance(address.dest, ip):
            return None
        if address.source.version != address.dest.version:
            return None
        source = ipaddress.ip_network((address.source, address.source_mask_len), strict=False)
        dest = ipaddress.ip_network((address.dest, address.dest_mask_len), strict=False)
        return cls(iid, source, dest)

    def __str__(self) -> str:
        prefix = f"[{self.iid}]" if self.iid else ""
        return f"{prefix}({self.source} -> {self.dest})"


def record_key(record: object) -> SourceDestKey | None:
    """The Source/Dest key of a MappingRecord, or None for an ordinary EID-record."""
    return SourceDestKey.from_wire(getattr(record, "eid", None))
