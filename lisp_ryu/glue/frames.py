"""What the controller reads of a packet-in's Ethernet frame: who sent it (to learn a host) and
its addresses (to resolve a miss).  Host ports carry no VLAN tags, so the offsets are fixed."""

from __future__ import annotations

import ipaddress
import struct

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ETH_HEADER = 14


def sender(frame: bytes) -> tuple[IPAddress, str] | None:
    """(source IP, source MAC) of an IPv4/IPv6 packet or an ARP message (sender fields)."""
    if len(frame) < ETH_HEADER:
        return None
    (eth_type,) = struct.unpack_from("!H", frame, 12)
    if eth_type == 0x0806 and len(frame) >= ETH_HEADER + 28:
        sha, spa = frame[ETH_HEADER + 8:ETH_HEADER + 14], frame[ETH_HEADER + 14:ETH_HEADER + 18]
        return ipaddress.IPv4Address(spa), ":".join(f"{b:02x}" for b in sha)
    addresses = ip_addresses(frame)
    if addresses is None:
        return None
    return addresses[0], ":".join(f"{b:02x}" for b in frame[6:12])


def ip_addresses(frame: bytes) -> tuple[IPAddress, IPAddress] | None:
    """(source, destination) of an Ethernet frame from a host port (no VLANs on host ports)."""
    if len(frame) < ETH_HEADER + 20:
        return None
    (eth_type,) = struct.unpack_from("!H", frame, 12)
    if eth_type == 0x0800:
        return (ipaddress.IPv4Address(frame[ETH_HEADER + 12:ETH_HEADER + 16]),
                ipaddress.IPv4Address(frame[ETH_HEADER + 16:ETH_HEADER + 20]))
    if eth_type == 0x86DD and len(frame) >= ETH_HEADER + 40:
        return (ipaddress.IPv6Address(frame[ETH_HEADER + 8:ETH_HEADER + 24]),
                ipaddress.IPv6Address(frame[ETH_HEADER + 24:ETH_HEADER + 40]))
    return None
