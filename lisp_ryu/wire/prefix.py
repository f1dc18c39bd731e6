"""EID prefixes (RFC 9300 §3): an address and mask-len in an instance-ID, the key of mappings.

Apart from `address` (the AFI/LCAF codec) because it is a value the whole
control plane keys on, normalised (no host bits) however it travelled.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Union

from .address import (
    Address,
    DistinguishedName,
    InstanceIdAddress,
    MacAddress,
    address_afi,
    check_mask_len,
    max_mask_len,
)
from .checks import check_uint
from .errors import LispDecodeError, LispEncodeError

_EidBase = Union[IPv4Address, IPv6Address, MacAddress, DistinguishedName]


@dataclass(frozen=True)
class EidPrefix:
    """An EID prefix in an instance-ID: the key of map-caches and registrations.

    ``address`` has no bits set beyond ``mask_len`` (``10.1.0.0``/16, never
    ``10.1.2.3``/16), so equal prefixes compare and hash equal however they
    arrived.  Instance-ID 0 is the default VPN and travels as a plain AFI.
    """

    address: _EidBase
    mask_len: int
    instance_id: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.address, (IPv4Address, IPv6Address, MacAddress, DistinguishedName)):
            raise LispEncodeError(
                f"EidPrefix.address must be an IPv4/IPv6/MAC address or a name, not {type(self.address).__name__}"
            )
        check_uint("EidPrefix", "instance_id", self.instance_id, 32)
        check_mask_len("EidPrefix", "mask_len", self.mask_len, self.address)
        if _host_bits_of(self.address, self.mask_len) != self.address:
            raise LispEncodeError(f"EidPrefix {self.address}/{self.mask_len} has bits set beyond the mask")

    @classmethod
    def from_network(cls, network: str | IPv4Network | IPv6Network, instance_id: int = 0) -> EidPrefix:
        """From an ``ipaddress`` network or its text (strict: no host bits)."""
        try:
            net = ipaddress.ip_network(network)
        except ValueError as exc:
            raise LispEncodeError(f"not an IP prefix: {network!r} ({exc})") from None
        return cls(net.network_address, net.prefixlen, instance_id)

    @classmethod
    def parse(cls, text: str) -> EidPrefix:
        """``"[iid]prefix/len"`` or ``"prefix/len"``: the form `__str__` prints."""
        instance_id = 0
        rest = text.strip()
        if rest.startswith("["):
            close = rest.find("]")
            if close < 0 or not rest[1:close].isdigit():
                raise LispEncodeError(f"bad instance-ID in EID prefix {text!r}")
            instance_id = int(rest[1:close])
            rest = rest[close + 1 :]
        base, slash, length = rest.rpartition("/")
        if not slash or not length.isdigit():
            raise LispEncodeError(f"EID prefix needs a /mask-len: {text!r}")
        if base.count(":") == 5 and "." not in base and "::" not in base and len(base) == 17:
            return cls(MacAddress.parse(base), int(length), instance_id)
        try:
            address = ipaddress.ip_address(base)
        except ValueError:
            raise LispEncodeError(f"not an IPv4/IPv6/MAC EID prefix: {text!r}") from None
        return cls(address, int(length), instance_id)

    @property
    def network(self) -> IPv4Network | IPv6Network:
        """The ``ipaddress`` network (IP EIDs only); made once per prefix (kept by hand, as
        `MappingRecord.eid_prefix` is), as map-cache sweeps read it often."""
        found = self.__dict__.get("_network")
        if found is None:
            if not isinstance(self.address, (IPv4Address, IPv6Address)):
                raise LispEncodeError(f"EID prefix {self} is not an IP prefix")
            found = self.__dict__["_network"] = ipaddress.ip_network((self.address, self.mask_len))
        return found

    @property
    def afi(self) -> int:
        return address_afi(self.address)

    def to_wire(self) -> tuple[int, Address]:
        """The (EID mask-len, EID-Prefix address) pair for an EID-Record."""
        if self.instance_id == 0:
            return self.mask_len, self.address
        return self.mask_len, InstanceIdAddress(self.instance_id, self.address)

    @classmethod
    def from_wire(cls, mask_len: int, address: object) -> EidPrefix:
        """The prefix an EID-Record names; host bits past the mask are cleared.

        Raises `LispDecodeError` (offset None) for addresses that are no EID
        prefix, such as a Source/Dest key or an IID range.
        """
        instance_id = 0
        if isinstance(address, InstanceIdAddress):
            if address.iid_mask_len not in (0, 32):
                raise LispDecodeError(
                    f"an instance-ID range (IID mask-len {address.iid_mask_len}) is not a single EID prefix",
                    message_type="EID-Record",
                    field="IID mask-len",
                    offset=None,
                )
            instance_id = address.instance_id
            address = address.address
        if not isinstance(address, (IPv4Address, IPv6Address, MacAddress, DistinguishedName)):
            raise LispDecodeError(
                f"{type(address).__name__} {address} is not an IPv4/IPv6/MAC/name EID",
                message_type="EID-Record",
                field="EID-Prefix",
                offset=None,
            )
        limit = max_mask_len(address)
        if limit is not None and mask_len > limit:
            raise LispDecodeError(
                f"mask-len {mask_len} is longer than {limit} bits",
                message_type="EID-Record",
                field="EID mask-len",
                offset=None,
            )
        return cls(_host_bits_of(address, mask_len), mask_len, instance_id)

    def __str__(self) -> str:
        prefix = f"[{self.instance_id}]" if self.instance_id else ""
        return f"{prefix}{self.address}/{self.mask_len}"


def _host_bits_of(address: _EidBase, mask_len: int) -> _EidBase:
    """``address`` with the bits past ``mask_len`` cleared (names are returned as they are)."""
    if isinstance(address, IPv4Address):
        keep = (0xFFFFFFFF << (32 - mask_len)) & 0xFFFFFFFF
        value = int(address)
        return address if value & keep == value else IPv4Address(value & keep)
    if isinstance(address, IPv6Address):
        full = (1 << 128) - 1
        keep = (full << (128 - mask_len)) & full
        value = int(address)
        return address if value & keep == value else IPv6Address(value & keep)
    if isinstance(address, MacAddress):
        full = (1 << 48) - 1
        keep = (full << (48 - mask_len)) & full
        value = int(address)
        return address if value & keep == value else MacAddress((value & keep).to_bytes(6, "big"))
    return address
