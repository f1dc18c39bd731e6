"""Mutation fuzzing: mangled encodings of valid messages and random bytes either decode to a
clean, self-consistent object or raise LispDecodeError -- never any other exception.

Deterministic (fixed seed), a few thousand cases, a few seconds.
"""

from __future__ import annotations

import random

from ipaddress import IPv4Address, IPv6Address

from lisp_ryu.wire import (
    NO_ADDRESS,
    AfiListAddress,
    DistinguishedName,
    ElpHop,
    ExplicitLocatorPath,
    InstanceIdAddress,
    LispDataHeader,
    LispDecodeError,
    Locator,
    MacAddress,
    MappingRecord,
    MapReply,
    ReplicationList,
    RleEntry,
    SourceDestAddress,
    UnknownLcaf,
    address_from_bytes,
    decode_message,
)
from .strategies import revalidate
from .test_wire_golden import DATA_HEADERS, GOLDEN

SEED = 20240901
CASES_PER_SEED_MESSAGE = 600


def _seed_corpus() -> list[bytes]:
    """The golden packets plus a Map-Reply carrying every address kind."""
    every_kind = MapReply(
        nonce=0x5EED,
        records=(
            MappingRecord(
                ExplicitLocatorPath((ElpHop(IPv4Address("1.1.1.1"), lookup=True), ElpHop(IPv6Address("::2"), strict=True))),
                0,
                locators=(Locator(AfiListAddress((IPv4Address("1.2.3.4"), IPv6Address("::1")))),),
            ),
            MappingRecord(
                InstanceIdAddress(7, SourceDestAddress(IPv4Address("10.0.0.0"), 8, IPv4Address("11.0.0.0"), 8)),
                0,
                locators=(Locator(UnknownLcaf(14, b'{"k": 1}')), Locator(DistinguishedName("rtr-1")),
                          Locator(ReplicationList((RleEntry(IPv4Address("198.18.0.1")),
                                                   RleEntry(IPv6Address("2001:db8::1"), level=1))))),
            ),
            MappingRecord(MacAddress.parse("00:00:5e:00:53:01"), 48, locators=(Locator(NO_ADDRESS),)),
        ),
    )
    return [p.values[0] for p in GOLDEN] + [every_kind.encode()]


def mutate(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    kind = rng.randrange(7)
    if kind == 0:  # flip 1-3 bits
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(data))
            data[position] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncate
        del data[rng.randrange(len(data)) :]
    elif kind == 2:  # extend
        data += rng.randbytes(rng.randint(1, 16))
    elif kind == 3:  # insert bytes
        position = rng.randrange(len(data) + 1)
        data[position:position] = rng.randbytes(rng.randint(1, 4))
    elif kind == 4:  # delete bytes
        position = rng.randrange(len(data))
        del data[position : position + rng.randint(1, 4)]
    elif kind == 5:  # overwrite a 16-bit field (counts, AFIs, lengths) with an interesting value
        position = rng.randrange(max(1, len(data) - 1))
        value = rng.choice([0, 1, 2, 0x4003, 0x4005, 0x11, 0xFF, 0xFFFF, rng.randrange(0x10000)])
        data[position : position + 2] = value.to_bytes(2, "big")
    else:  # several byte overwrites
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def _check(raw: bytes) -> str:
    try:
        message = decode_message(raw)
    except LispDecodeError as error:
        assert error.offset is None or 0 <= error.offset <= len(raw), error
        return "rejected"
    # Whatever decodes must be a valid object that survives its own round trip.
    revalidate(message)
    again = message.encode()
    assert decode_message(again) == message
    return "accepted"


def test_mutated_messages_decode_cleanly_or_raise_decode_error() -> None:
    rng = random.Random(SEED)
    outcomes = {"accepted": 0, "rejected": 0}
    corpus = _seed_corpus()
    for raw in corpus:
        for _ in range(CASES_PER_SEED_MESSAGE):
            outcomes[_check(mutate(raw, rng))] += 1
    assert sum(outcomes.values()) == len(corpus) * CASES_PER_SEED_MESSAGE >= 5000
    # Both paths are exercised: mutations in nonces/addresses decode, structural ones do not.
    assert outcomes["accepted"] > 200 and outcomes["rejected"] > 2000, outcomes


def test_random_bytes_with_every_type_nibble() -> None:
    rng = random.Random(SEED + 1)
    for case in range(2000):
        raw = bytes([(case % 16) << 4 | rng.randrange(16)]) + rng.randbytes(rng.randint(0, 80))
        _check(raw)


def test_addresses_and_data_headers_under_mutation() -> None:
    rng = random.Random(SEED + 2)
    seeds = [
        bytes.fromhex("4003000002000012000000050001" + "0a000001"),
        bytes.fromhex("400300000c00000e0000181800010a00000000010b000000"),
        bytes.fromhex("4003000001000006000101020304"),
        b"\x00\x11name\x00",
    ]
    for raw in seeds:
        for _ in range(300):
            mutated = mutate(raw, rng)
            try:
                revalidate(address_from_bytes(mutated))
            except LispDecodeError:
                pass
    for param in DATA_HEADERS:
        for _ in range(200):
            mutated = mutate(param.values[0], rng)
            try:
                header = LispDataHeader.decode(mutated)
            except LispDecodeError:
                continue
            assert LispDataHeader.decode(header.encode()) == header
