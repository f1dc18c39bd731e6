"""EID values shared by the mapping tables: instance-IDs, IP prefixes, MAC EIDs.

The mapping layer speaks `ipaddress` networks/addresses and a small
`MacAddress`, not the codec's classes, so it can be built and tested on its
own; the codec converts at the edge.  Every check here raises a subclass of
`ValueError`/`KeyError` that names the bad input: these values come from
config, REST and decoded messages, and a silent fix-up (pytricia keeps host
bits, for one) would store something nobody asked for.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Union

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

#: LISP instance-IDs are 24 bits on the wire (RFC 9300 §5.3, RFC 8060 §4.1).
MAX_IID = (1 << 24) - 1
#: IANA address family number of a 48-bit MAC (used as a LISP EID AFI).
AFI_MAC = 16389


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


_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}([:-])(?:[0-9a-fA-F]{2}\1){4}[0-9a-fA-F]{2}$")
_MAC_DOTTED_RE = re.compile(r"^[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}$")


@dataclass(frozen=True, slots=True, order=True)
class MacAddress:
    """A 48-bit MAC used as an EID (AFI 16389): exact match only, no prefixes."""

    value: int

    def __post_init__(self) -> None:
        if type(self.value) is not int or not 0 <= self.value < 1 << 48:
            raise EidError(f"MAC address must be an int in 0..2**48-1, got {self.value!r}")

    @classmethod
    def parse(cls, text: str) -> MacAddress:
        """Accept "aa:bb:cc:dd:ee:ff", "aa-bb-cc-dd-ee-ff" or Cisco "aabb.ccdd.eeff"."""
        if not isinstance(text, str):
            raise EidError(f"expected a MAC string, got {type(text).__name__} {text!r}")
        s = text.strip()
        if _MAC_RE.match(s) or _MAC_DOTTED_RE.match(s):
            return cls(int(re.sub(r"[:.\-]", "", s), 16))
        raise EidError(f"bad MAC address {text!r}")

    @property
    def packed(self) -> bytes:
        return self.value.to_bytes(6, "big")

    def __str__(self) -> str:
        raw = self.value.to_bytes(6, "big")
        return ":".join(f"{b:02x}" for b in raw)


Eid = Union[ipaddress.IPv4Network, ipaddress.IPv6Network, MacAddress]

_PREFIX_RE = re.compile(r"^\s*\[(\d+)\]\s*(\S+)\s*$")


@dataclass(frozen=True, slots=True)
class EidPrefix:
    """An EID prefix in an instance: the key of every mapping table.

    Printed the way LISP tools print it, "[42]10.1.0.0/16", and parsed from the
    same form (or a bare prefix with the instance-ID given separately).
    """

    iid: int
    eid: Eid

    def __post_init__(self) -> None:
        check_iid(self.iid)
        if not isinstance(self.eid, MacAddress):
            check_network(self.eid)

    @classmethod
    def parse(cls, text: str, iid: int | None = None) -> EidPrefix:
        """Parse "[iid]prefix", or "prefix" with `iid` (default 0); MACs are accepted too.

        Giving the instance-ID both in the text and as `iid` is an error unless they agree,
        so a config cannot say two things at once.
        """
        if not isinstance(text, str):
            raise EidError(f"expected an EID prefix string, got {type(text).__name__} {text!r}")
        m = _PREFIX_RE.match(text)
        if m:
            text_iid = int(m.group(1))
            if iid is not None and iid != text_iid:
                raise EidError(f"EID prefix {text!r} names instance-ID {text_iid} but {iid} was given")
            iid, body = text_iid, m.group(2)
        else:
            body = text.strip()
        if iid is None:
            iid = 0
        eid: Eid
        if _MAC_RE.match(body) or _MAC_DOTTED_RE.match(body):
            eid = MacAddress.parse(body)
        else:
            eid = parse_network(body)
        return cls(check_iid(iid), eid)

    @property
    def is_mac(self) -> bool:
        return isinstance(self.eid, MacAddress)

    def __str__(self) -> str:
        return f"[{self.iid}]{self.eid}"
