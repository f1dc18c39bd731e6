"""The lab's ITR unaware of moves (lisp_ryu/lab/scenarios/foreign_itr.py) sends what an RFC 9305
ITR sends: its sender, run on loopback, is checked with our codec and the inner checksums."""

from __future__ import annotations

import ipaddress
import socket
import struct
import subprocess
import sys

import pytest

from lisp_ryu.lab.scenarios import foreign_itr
from lisp_ryu.wire import LispDataHeader, NextProtocol


def _ones(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _sent(target: str, count: int = 3) -> list[bytes]:
    """`count` datagrams of the sender, to 127.0.0.1:4341 (a socket of this test's)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 4341))
    except OSError as exc:
        pytest.skip(f"UDP 4341 on loopback is taken: {exc}")
    sock.settimeout(5.0)
    version = ipaddress.ip_address(target).version
    proc = subprocess.Popen([sys.executable, "-c", foreign_itr._SENDER, "127.0.0.1", target,
                             foreign_itr.SOURCE_EID[version], "42", "0.01", str(foreign_itr.PORT)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "sending"
        got = [sock.recv(2048) for _ in range(count)]
    finally:
        proc.stdin.close()
        proc.wait(timeout=5)
        sock.close()
    return got


def test_ipv4_inner_packets_are_lisp_gpe_with_valid_checksums_and_sequence_numbers():
    for n, datagram in enumerate(_sent("10.1.0.10")):
        header = LispDataHeader.decode(datagram[:8])
        assert (header.instance_id, header.next_protocol) == (42, NextProtocol.IPV4)
        ip = datagram[8:28]
        assert ip[0] == 0x45 and ip[9] == 17 and _ones(ip) == 0xFFFF  # the header checksum holds
        assert ip[12:16] == socket.inet_aton("10.250.0.1") and ip[16:20] == socket.inet_aton("10.1.0.10")
        udp = datagram[28:]
        assert struct.unpack("!HH", udp[2:6]) == (foreign_itr.PORT, len(udp))
        assert struct.unpack("!I", udp[8:12])[0] == n


def test_ipv6_inner_packets_carry_a_valid_udp_checksum():
    for n, datagram in enumerate(_sent("fd00:1::10")):
        header = LispDataHeader.decode(datagram[:8])
        assert (header.instance_id, header.next_protocol) == (42, NextProtocol.IPV6)
        ip6, udp = datagram[8:48], datagram[48:]
        assert ip6[0] >> 4 == 6 and ip6[6] == 17 and struct.unpack("!H", ip6[4:6])[0] == len(udp)
        pseudo = ip6[8:40] + struct.pack("!IxxxB", len(udp), 17)
        assert _ones(pseudo + udp) == 0xFFFF  # the mandatory checksum holds
        assert struct.unpack("!I", udp[8:12])[0] == n
