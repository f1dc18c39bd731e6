"""Mapping layer: EID prefix tables, the map-cache, and the values they key on.

One prefix-table type (`PrefixTable`, longest-prefix match per instance-ID and
family over pytricia, with the widest-negative-prefix query) serves the
map-cache, the Map-Server's registrations and policy; MAC EIDs use the sibling
exact-match `MacTable`.  Pure code: no I/O, no clock (time is a parameter).
`Action` and `MacAddress` are the codec's (`lisp_ryu.wire`), re-exported here.
"""

from .eid import (
    MAX_IID,
    AddressCovered,
    Eid,
    EidError,
    IPAddress,
    IPNetwork,
    MacAddress,
    PrefixNotFound,
    check_iid,
    parse_network,
)
from .mapcache import Action, CacheEntry, MapCache
from .mactable import MacTable
from .table import PrefixTable

__all__ = [
    "MAX_IID",
    "Action",
    "AddressCovered",
    "CacheEntry",
    "Eid",
    "EidError",
    "IPAddress",
    "IPNetwork",
    "MacAddress",
    "MacTable",
    "MapCache",
    "PrefixNotFound",
    "PrefixTable",
    "check_iid",
    "parse_network",
]
