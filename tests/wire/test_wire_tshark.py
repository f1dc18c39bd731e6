"""Golden test against Wireshark's LISP dissectors (tshark 4.0).

Packets encoded by our codec are wrapped in IPv4/UDP (4342 control, 4341
data), written into one pcap (LINKTYPE_IPV4 = 228) with the stdlib, and
decoded by a single ``tshark -V`` run with IP/UDP checksum validation on.
Each frame must show the fields we put in and no "Malformed" or error-level
expert info.

Where Wireshark 4.0 disagrees with the RFCs (the RFC wins; we assert what it shows):
- Map-Request: it knows only the RFC 6830 flags A M P S p s.  The RFC 9301 L/D
  bits and the RFC 9437 I bit count as "Reserved bits", the RFC 9437 N bit of
  an EID-Record shows as "Reserved: 0x80", and the xTR-ID/site-ID trailer is
  shown as undissected "Data".
- Map-Register / Map-Notify: it reads the RFC 6830 16-bit Key ID, so RFC 9301's
  Key ID 3 + Algorithm ID 1 shows as "Key ID: 0x0301".  It calls bit 7 of a
  Map-Register "R bit (Built for an RTR)" (reserved in RFC 9301) and does not
  decode the E/T/a bits.
- Map-Notify-Ack (type 5, RFC 9301) is "Unknown (5)".
- ECM: it knows S and D but shows the RFC 9301 E and M bits as reserved.
- LISP-GPE: the P bit shows as "Reserved: 0x4" and the Next Protocol byte is
  not shown; the inner packet is dissected from its IP version nibble.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest

from lisp_ryu.wire import (
    Action,
    InstanceIdAddress,
    LispDataHeader,
    Locator,
    MappingRecord,
    MapReply,
    NextProtocol,
    ReplicationList,
    RleEntry,
    SourceDestAddress,
)

from .test_wire_fuzz import _seed_corpus
from .test_wire_golden import (
    ECM_IPV6_OBJ,
    ECM_OBJ,
    MAP_NOTIFY_ACK_OBJ,
    MAP_NOTIFY_OBJ,
    MAP_REGISTER_OBJ,
    MAP_REPLY_OBJ,
    MAP_REQUEST_FULL_OBJ,
    MAP_REQUEST_PLAIN_OBJ,
    _ones_complement,
)

pytestmark = [
    pytest.mark.tshark,
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark (Debian package 'tshark') is not installed"),
]

OUTER_SOURCE, OUTER_DESTINATION = "198.18.0.1", "198.18.0.2"
LINKTYPE_IPV4 = 228


def ipv4_udp(source: str, destination: str, source_port: int, destination_port: int, payload: bytes) -> bytes:
    udp_length = 8 + len(payload)
    src, dst = IPv4Address(source).packed, IPv4Address(destination).packed
    udp = bytearray(struct.pack(">HHHH", source_port, destination_port, udp_length, 0) + payload)
    pseudo = src + dst + struct.pack(">BBH", 0, 17, udp_length)
    udp[6:8] = (_ones_complement(pseudo + bytes(udp)) or 0xFFFF).to_bytes(2, "big")
    header = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + udp_length, 1, 0, 64, 17, 0, src, dst))
    header[10:12] = _ones_complement(bytes(header)).to_bytes(2, "big")
    return bytes(header) + bytes(udp)


def ipv6_udp(source: str, destination: str, payload: bytes) -> bytes:
    src, dst = IPv6Address(source).packed, IPv6Address(destination).packed
    udp = bytearray(struct.pack(">HHHH", 1000, 2000, 8 + len(payload), 0) + payload)
    pseudo = src + dst + struct.pack(">IxxxB", len(udp), 17)
    udp[6:8] = (_ones_complement(pseudo + bytes(udp)) or 0xFFFF).to_bytes(2, "big")
    return struct.pack(">IHBB", 6 << 28, len(udp), 17, 64) + src + dst + bytes(udp)


def write_pcap(path: Path, packets: list[bytes]) -> None:
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_IPV4))
        for index, packet in enumerate(packets):
            out.write(struct.pack("<IIII", 1_700_000_000 + index, 0, len(packet), len(packet)))
            out.write(packet)


# A source-specific answer as the Map-Server gives it under a source-group policy: the EID is
# a Source/Dest key (RFC 8060 LCAF 12), in an Instance-ID LCAF unless iid 0; mask-len = the destination's.
SOURCE_DEST_REPLY = MapReply(nonce=0x5D, records=(
    MappingRecord(InstanceIdAddress(42, SourceDestAddress(IPv4Address("10.1.0.10"), 32, IPv4Address("10.2.0.0"), 16)),
                  16, ttl=15, action=Action.DROP_POLICY_DENIED),
    MappingRecord(SourceDestAddress(IPv6Address("2001:db8:1::"), 48, IPv6Address("2001:db8:2::"), 48), 48,
                  (Locator(IPv4Address("198.18.2.2"), reachable=True),), ttl=1440),
))

# Predictive RLOCs (draft-ietf-lisp-predictive-rlocs) as a Map-Server may answer them: a Replication
# List Entry (RFC 8060 LCAF 13) at the best priority, the plain RLOC behind it for ITRs without RLE.
RLE_REPLY = MapReply(nonce=0x77, records=(
    MappingRecord(InstanceIdAddress(7, IPv4Address("10.1.0.5")), 32, (
        Locator(ReplicationList((RleEntry(IPv4Address("198.18.1.1")), RleEntry(IPv6Address("2001:db8::2"), 1))),
                priority=1, reachable=True),
        Locator(IPv4Address("198.18.1.1"), priority=2, reachable=True)), ttl=1),
))

INNER_V4 = ipv4_udp("10.1.0.1", "10.2.0.1", 1000, 2000, b"ping")
INNER_V6 = ipv6_udp("2001:db8:1::1", "2001:db8:2::1", b"ping")

# (what we send, the lines Wireshark must show for it)
CONTROL_CASES: list[tuple[object, list[str]]] = [
    (
        MAP_REQUEST_PLAIN_OBJ,
        ["Type: Map-Request (1)", "Nonce: 0x1122334455667788", "ITR-RLOC Address: 198.18.0.1", "Prefix: 10.1.2.3"],
    ),
    (
        MAP_REQUEST_FULL_OBJ,
        [
            "Type: Map-Request (1)",
            "M bit (Map-Reply present): Set",
            "S bit (Solicit-Map-Request): Set",
            "s bit (SMR-invoked): Set",
            "ITR-RLOC Count: 1",
            "Source EID: 10.1.2.3",
            "ITR-RLOC Address: 2001:db8::1",
            "Reserved: 0x80",  # the EID-Record's N bit
            "Prefix: [42] 10.2.0.0",
            "Mapping Record 1, EID Prefix: [42] 10.2.0.0/24, TTL: 1440, Action: No-Action, Authoritative",
            "Mapping Version: 7",
            "Locator Record 1, Local RLOC: 198.18.0.1, Reachable",
            # RFC 9437 xTR-ID + site-ID, unknown to Wireshark 4.0:
            "Data: 000102030405060708090a0b0c0d0e0f0000000000000063",
        ],
    ),
    (
        MAP_REPLY_OBJ,
        [
            "Type: Map-Reply (2)",
            "P bit (Probe): Set",
            "E bit (Echo-Nonce locator reachability algorithm enabled): Set",
            "Nonce: 0x0102030405060708",
            "Mapping Record 1, EID Prefix: 10.1.0.0/16, TTL: Unlimited, Action: No-Action, Authoritative",
            "Locator Record 1, RLOC: 198.18.0.1, Reachable, Priority/Weight: 1/50",
            "Locator Record 2, RLOC: 2001:db8::2 (probed), Reachable, Priority/Weight: 2/50",
            "Mapping Record 2, EID Prefix: 2001:db8:1::/48, TTL: 15, Action: Drop/Policy-Denied, Authoritative",
            "Mapping Version: 291",
        ],
    ),
    (
        MAP_REGISTER_OBJ,
        [
            "Type: Map-Register (3)",
            "P bit (Proxy-Map-Reply): Set",
            "I bit (xTR-ID present): Set",
            "M bit (Want-Map-Notify): Set",
            "Nonce: 0x000000000000abcd",
            "Key ID: 0x0301",  # RFC 9301 Key ID 3 + Algorithm ID 1, read as one 16-bit field
            "Authentication Data Length: 20",
            f"Authentication Data: {MAP_REGISTER_OBJ.authentication_data.hex()}",
            "Mapping Record 1, EID Prefix: [5] 00:00:5e:00:53:01/48, TTL: 3",
            "Locator Record 1, Local RLOC: 198.18.0.2, Reachable",
            "xTR-ID: ffeeddccbbaa99887766554433221100",
            "Site-ID: 0000000000000007",
        ],
    ),
    (
        MAP_NOTIFY_OBJ,
        [
            "Type: Map-Notify (4)",
            "I bit (xTR-ID present): Not set",
            "Key ID: 0x0002",
            "Authentication Data Length: 32",
            "Mapping Record 1, EID Prefix: 10.3.0.0/24, TTL: 1440",
        ],
    ),
    (MAP_NOTIFY_ACK_OBJ, ["Type: Unknown (5)"]),
    (
        SOURCE_DEST_REPLY,
        [
            "Mapping Record 1, EID Prefix: [42] Source/Dest Key/16, TTL: 15, Action: Drop/Policy-Denied",
            "LCAF: Source/Dest Key (10.1.0.10/32, 10.2.0.0/16)",
            "Mapping Record 2, EID Prefix: Source/Dest Key/48, TTL: 1440, Action: No-Action",
            "LCAF: Source/Dest Key (2001:db8:1::/48, 2001:db8:2::/48)",
            "Locator Record 1, RLOC: 198.18.2.2, Reachable",
        ],
    ),
    (
        RLE_REPLY,
        [
            "Mapping Record 1, EID Prefix: [7] 10.1.0.5/32, TTL: 1",
            "Locator Record 1, RLOC: Replication List Entry, Reachable, Priority/Weight: 1/100",
            "LCAF: Replication List Entry, 198.18.1.1 (0), 2001:db8::2 (1)",
            "RTR/ETR 2. 2001:db8::2, level 1",
            "Locator Record 2, RLOC: 198.18.1.1, Reachable, Priority/Weight: 2/100",
        ],
    ),
    (
        ECM_OBJ,
        [
            "Type: Encapsulated Control Message (8)",
            "Internet Protocol Version 4, Src: 10.1.2.3, Dst: 10.9.9.9",
            "Don't fragment: Set",
            "[Checksum Status: Good]",
            "Type: Map-Request (1)",
            "Nonce: 0x1122334455667788",
        ],
    ),
    (
        ECM_IPV6_OBJ,
        [
            "Type: Encapsulated Control Message (8)",
            "S bit (LISP-SEC capable): Set",
            "Internet Protocol Version 6, Src: 2001:db8::a, Dst: 2001:db8::b",
            "User Datagram Protocol, Src Port: 50000, Dst Port: 4342",
            "[Checksum Status: Good]",
            "Type: Map-Request (1)",
        ],
    ),
]
EVERY_ADDRESS_KIND = (
    _seed_corpus()[-1],
    [
        "Mapping Record 1, EID Prefix: Explicit Locator Path",
        "Reencap Hop 1. 1.1.1.1, Lookup",
        "Reencap Hop 2. ::2, Strict",
        "Locator Record 1, RLOC: AFI List",
        "List Item 1. IPv4 Address: 1.2.3.4",
        "List Item 2. IPv6 Address: ::1",
        "EID Prefix: [7] Source/Dest Key",
        "Source Prefix: 10.0.0.0",
        "Destination Prefix: 11.0.0.0",
        "Locator Record 1, RLOC: JSON Data Model",  # our opaque pass-through of LCAF type 14
        "Locator Record 2, RLOC: rtr-1",
        "Mapping Record 3, EID Prefix: 00:00:5e:00:53:01/48",
    ],
)
DATA_CASES: list[tuple[LispDataHeader, bytes, list[str]]] = [
    (
        LispDataHeader.gpe(42, NextProtocol.IPV4),
        INNER_V4,
        ["Flags: 0x0c", "I bit (Instance ID present): Set", "Instance ID: 42", "Src: 10.1.0.1, Dst: 10.2.0.1"],
    ),
    (
        LispDataHeader.gpe(0xABCDE, NextProtocol.IPV6),
        INNER_V6,
        ["Flags: 0x0c", "Instance ID: 703710", "Internet Protocol Version 6, Src: 2001:db8:1::1, Dst: 2001:db8:2::1"],
    ),
    (
        LispDataHeader(nonce=0x123456, instance_id=99, locator_status_bits=3),
        INNER_V4,
        ["Flags: 0xc8", "Nonce: 1193046 (0x123456)", "Instance ID: 99", "Locator-Status-Bits: 0x03"],
    ),
    (
        LispDataHeader(source_map_version=5, dest_map_version=7, echo_nonce_request=True),
        INNER_V4,
        ["V bit (Map-Version present): Set", "Source Map-Version: 5", "Destination Map-Version: 7"],
    ),
]


def split_frames(text: str) -> list[str]:
    frames: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("Frame "):
            frames.append([])
        if frames:
            frames[-1].append(line.strip())
    return ["\n".join(lines) for lines in frames]


@pytest.fixture(scope="module")
def dissected(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    packets = [
        ipv4_udp(OUTER_SOURCE, OUTER_DESTINATION, 4342, 4342, message.encode())  # type: ignore[attr-defined]
        for message, _ in CONTROL_CASES
    ]
    packets.append(ipv4_udp(OUTER_SOURCE, OUTER_DESTINATION, 4342, 4342, EVERY_ADDRESS_KIND[0]))
    packets += [
        ipv4_udp(OUTER_SOURCE, OUTER_DESTINATION, 61000, 4341, header.encapsulate(inner))
        for header, inner, _ in DATA_CASES
    ]
    pcap = tmp_path_factory.mktemp("tshark") / "lisp.pcap"
    write_pcap(pcap, packets)
    result = subprocess.run(
        ["tshark", "-n", "-r", str(pcap), "-V", "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    frames = split_frames(result.stdout)
    assert len(frames) == len(packets), result.stderr
    return frames


def _assert_shows(frame: str, expected: list[str]) -> None:
    for line in expected:
        assert line in frame, f"Wireshark did not show {line!r} in:\n{frame}"
    assert "Malformed" not in frame, frame
    assert "Expert Info (Error" not in frame, frame
    assert "[Checksum Status: Bad]" not in frame and "checksum status: Bad" not in frame, frame


@pytest.mark.parametrize("index", range(len(CONTROL_CASES)), ids=[type(m).__name__ for m, _ in CONTROL_CASES])
def test_wireshark_decodes_our_control_messages(dissected: list[str], index: int) -> None:
    _assert_shows(dissected[index], CONTROL_CASES[index][1])


def test_wireshark_decodes_every_address_kind(dissected: list[str]) -> None:
    _assert_shows(dissected[len(CONTROL_CASES)], EVERY_ADDRESS_KIND[1])


@pytest.mark.parametrize("index", range(len(DATA_CASES)), ids=["gpe-ipv4", "gpe-ipv6", "nonce-iid-lsb", "map-versions"])
def test_wireshark_decodes_our_data_headers(dissected: list[str], index: int) -> None:
    frame = dissected[len(CONTROL_CASES) + 1 + index]
    assert "Locator/ID Separation Protocol (Data)" in frame
    _assert_shows(frame, DATA_CASES[index][2])


def test_outer_addresses_are_the_lab_underlay(dissected: list[str]) -> None:
    for frame in dissected:
        assert f"Src: {ip_address(OUTER_SOURCE)}, Dst: {ip_address(OUTER_DESTINATION)}" in frame
