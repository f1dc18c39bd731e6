"""Frames the xTR core sends a workload itself: a request that makes it answer, and so show itself.

A workload announced to arrive at a port (a planned move with its new vif) is
learned from its first packet there.  A workload that sends nothing on its
own (no gratuitous ARP, no IPv6 traffic) would never be learned: once the
move's window closed it would be unreachable.  So the destination asks it,
out of the announced port: an ARP request (IPv4) or a unicast Neighbor
Solicitation (IPv6, RFC 4861 7.2.2, as for unreachability detection) from
its gateway; its answer is a packet from it, which the learning flows send
to the controller.  Pure bytes, no I/O.
"""

from __future__ import annotations

import ipaddress
import struct

from lisp_ryu.wire.ecm import internet_checksum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ETH_ARP, ETH_IPV6 = 0x0806, 0x86DD
ICMPV6, NEIGHBOR_SOLICITATION, HOP_LIMIT_ND = 58, 135, 255
MIN_FRAME = 60  # an Ethernet frame without its FCS is at least this long: padded


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def ask_to_answer(ip: IPAddress, mac: str, gateway_mac: str, gateway_ip: IPAddress | None) -> bytes | None:
    """A frame to `mac` that makes the workload `ip` answer: an ARP request (from `gateway_ip`, or
    an ARP probe's 0.0.0.0 without one) or a Neighbor Solicitation from `gateway_ip` (None without
    an IPv6 gateway: an NS from :: is duplicate address detection, which a host must not answer)."""
    if ip.version == 4:
        sender = gateway_ip if gateway_ip is not None and gateway_ip.version == 4 else ipaddress.IPv4Address(0)
        return arp_request(ip, mac, gateway_mac, sender)
    if gateway_ip is None or gateway_ip.version != 6:
        return None
    return neighbor_solicitation(ip, mac, gateway_mac, gateway_ip)


def arp_request(target: ipaddress.IPv4Address, target_mac: str, sender_mac: str,
                sender: ipaddress.IPv4Address) -> bytes:
    """ARP who-has `target`, unicast to `target_mac` (RFC 826; RFC 5227 probe when `sender` is 0.0.0.0)."""
    eth = mac_bytes(target_mac) + mac_bytes(sender_mac) + struct.pack("!H", ETH_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac_bytes(sender_mac) + sender.packed + bytes(6) + target.packed
    return (eth + arp).ljust(MIN_FRAME, b"\0")


def neighbor_solicitation(target: ipaddress.IPv6Address, target_mac: str, sender_mac: str,
                          sender: ipaddress.IPv6Address) -> bytes:
    """A Neighbor Solicitation for `target`, unicast to it (RFC 4861 4.3), with our link-layer address."""
    body = struct.pack("!BBHI", NEIGHBOR_SOLICITATION, 0, 0, 0) + target.packed + bytes((1, 1)) + mac_bytes(sender_mac)
    pseudo = sender.packed + target.packed + struct.pack("!I3xB", len(body), ICMPV6)
    checksum = internet_checksum(pseudo + body)
    body = body[:2] + struct.pack("!H", checksum) + body[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(body), ICMPV6, HOP_LIMIT_ND) + sender.packed + target.packed
    eth = mac_bytes(target_mac) + mac_bytes(sender_mac) + struct.pack("!H", ETH_IPV6)
    return (eth + ip6 + body).ljust(MIN_FRAME, b"\0")

