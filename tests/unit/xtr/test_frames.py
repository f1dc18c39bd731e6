"""The frames the destination of a planned move sends to make a silent workload answer (xtr/frames.py).

Parsed back with Ryu's packet library and, where tshark is installed, by Wireshark's
dissectors with the ICMPv6 checksum checked.
"""

from __future__ import annotations

import ipaddress
import shutil
import struct
import subprocess

import pytest
from ryu.lib.packet import arp, ethernet, icmpv6, ipv6, packet

from lisp_ryu.xtr.frames import ask_to_answer

ip = ipaddress.ip_address
WORKLOAD, WORKLOAD_MAC = ip("10.1.0.10"), "02:00:00:01:00:0a"
WORKLOAD6 = ip("fd00:1::10")
GW, GW6, GW_MAC = ip("10.1.0.1"), ip("fd00:1::1"), "02:00:00:00:01:01"


def test_an_ipv4_workload_is_asked_by_an_arp_request_from_its_gateway_unicast_to_it():
    frame = ask_to_answer(WORKLOAD, WORKLOAD_MAC, GW_MAC, GW)
    assert len(frame) == 60
    pkt = packet.Packet(frame)
    eth, req = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(arp.arp)
    assert (eth.dst, eth.src, eth.ethertype) == (WORKLOAD_MAC, GW_MAC, 0x0806)
    assert (req.opcode, req.src_mac, req.src_ip, req.dst_ip) == (1, GW_MAC, str(GW), str(WORKLOAD))


def test_without_a_gateway_it_is_an_arp_probe():
    """RFC 5227: sender address 0.0.0.0 (a host answers it; nothing learns a wrong binding from it)."""
    req = packet.Packet(ask_to_answer(WORKLOAD, WORKLOAD_MAC, GW_MAC, None)).get_protocol(arp.arp)
    assert (req.opcode, req.src_ip, req.dst_ip) == (1, "0.0.0.0", str(WORKLOAD))


def test_an_ipv6_workload_is_asked_by_a_unicast_neighbor_solicitation_with_a_valid_checksum():
    frame = ask_to_answer(WORKLOAD6, WORKLOAD_MAC, GW_MAC, GW6)
    pkt = packet.Packet(frame)
    eth, ip6, icmp = (pkt.get_protocol(p) for p in (ethernet.ethernet, ipv6.ipv6, icmpv6.icmpv6))
    assert (eth.dst, eth.src, eth.ethertype) == (WORKLOAD_MAC, GW_MAC, 0x86DD)
    assert (ip6.src, ip6.dst, ip6.nxt, ip6.hop_limit) == (str(GW6), str(WORKLOAD6), 58, 255)
    assert icmp.type_ == icmpv6.ND_NEIGHBOR_SOLICIT and icmp.data.dst == str(WORKLOAD6)
    assert icmp.data.option.hw_src == GW_MAC
    body = frame[14 + 40:14 + 40 + ip6.payload_length]
    pseudo = GW6.packed + WORKLOAD6.packed + struct.pack("!I3xB", len(body), 58)
    data = pseudo + body
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF  # the ones'-complement sum over the pseudo-header and the message


def test_an_ipv6_workload_without_an_ipv6_gateway_is_not_asked():
    """An NS from :: is duplicate address detection: the workload would take its own address for taken."""
    assert ask_to_answer(WORKLOAD6, WORKLOAD_MAC, GW_MAC, None) is None
    assert ask_to_answer(WORKLOAD6, WORKLOAD_MAC, GW_MAC, GW) is None


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_wireshark_reads_both_as_we_mean_them(tmp_path):
    frames = [ask_to_answer(WORKLOAD, WORKLOAD_MAC, GW_MAC, GW), ask_to_answer(WORKLOAD6, WORKLOAD_MAC, GW_MAC, GW6)]
    pcap = tmp_path / "ask.pcap"
    with pcap.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # LINKTYPE_ETHERNET
        for frame in frames:
            f.write(struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame)
    out = subprocess.run(["tshark", "-r", str(pcap), "-V"], capture_output=True, text=True, timeout=60)
    text = out.stdout
    assert out.returncode == 0, out.stderr
    assert "Opcode: request (1)" in text and "Sender IP address: 10.1.0.1" in text, text
    assert "Target IP address: 10.1.0.10" in text, text
    assert "Neighbor Solicitation" in text and "Target Address: fd00:1::10" in text, text
    assert "[Checksum Status: Good]" in text, text
    assert "Malformed" not in text

