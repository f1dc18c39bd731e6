"""EID values shared by the mapping tables: instance-IDs, IP prefixes, MAC EIDs.

The mapping tables key on `ipaddress` networks/addresses (what pytricia and
the flow compiler want; `wire.address.EidPrefix.network` gives one) and on the
codec's `MacAddress` for MAC EIDs (AFI 16389, `wire.address.Afi.MAC`), which
the package re-exports.  Every check here raises a subclass of
`ValueError`/`KeyError` that names the bad input: these values come from
config, REST and decoded messages, and a silent fix-up (pytricia keeps host
bits, for one) would store something nobody asked for.
"""

from __future__ import annotations

import ipaddress
from typing import Union

from lisp_ryu.wire import MAX_IID
from lisp_ryu.wire.address import MacAddress

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


class EidError(ValueError):
    """An EID, prefix or instance-ID given to the mapping layer is malformed."""


class PrefixNotFound(KeyError):
    """An exact prefix (or MAC) the caller named is not in the table."""

    def __str__(self) -> str:  # KeyError would repr() the message, quotes and all
        return str(self.args[0]) if self.args else "prefix not found"


class AddressCovered(ValueError):
    """A negative-prefix query was made for an address that a stored prefix covers.

    Carries the covering prefix so the caller sees what it should have answered.
    """

    def __init__(self, iid: int, address: IPAddress, covering: IPNetwork) -> None:
        super().__init__(f"[{iid}]{address} is covered by stored prefix [{iid}]{covering}")
        self.iid = iid
        self.address = address
        self.covering = covering


def check_iid(iid: object) -> int:
    """Return `iid` if it is a valid 24-bit instance-ID, else raise EidError."""
    if type(iid) is not int:  # bool is an int subclass and never an instance-ID
        raise EidError(f"instance-ID must be an int, got {type(iid).__name__} {iid!r}")
    if not 0 <= iid <= MAX_IID:
        raise EidError(f"instance-ID {iid} out of range 0..{MAX_IID}")
    return iid


def check_network(network: object) -> IPNetwork:
    """Return `network` if it is an `ipaddress` network object, else raise EidError.

    Strings are refused here on purpose: parsing belongs at the edge
    (`parse_network`), so a table never guesses whether "10.1.2.3/8" was a typo.
    """
    if not isinstance(network, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        raise EidError(f"expected an ipaddress IPv4Network/IPv6Network, got {type(network).__name__} {network!r}")
    return network


def check_address(address: object) -> IPAddress:
    """Return `address` if it is an `ipaddress` address object, else raise EidError."""
    if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        raise EidError(f"expected an ipaddress IPv4Address/IPv6Address, got {type(address).__name__} {address!r}")
    return address


def parse_network(text: str) -> IPNetwork:
    """Parse "10.1.0.0/16" or "2001:db8::/32"; a bare address means a host route.

    Host bits set ("10.1.2.3/16") are an error rather than silently masked:
    in config that is almost always a mistake in either the address or the length.
    """
    if not isinstance(text, str):
        raise EidError(f"expected a prefix string, got {type(text).__name__} {text!r}")
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise EidError(f"bad EID prefix {text!r}: {exc}") from None


Eid = Union[ipaddress.IPv4Network, ipaddress.IPv6Network, MacAddress]
