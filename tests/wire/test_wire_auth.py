"""HMAC authentication of Map-Register / Map-Notify / Map-Notify-Ack."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisp_ryu.wire import (
    DIGEST_LENGTHS,
    AuthAlgorithm,
    AuthResult,
    LispDecodeError,
    MapNotify,
    MapRegister,
    check_authentication,
    decode_message,
    sign,
    verify,
)

from . import strategies as ws
from .test_wire_golden import MAP_REGISTER, MAP_REQUEST_PLAIN

ALGORITHMS = st.sampled_from([AuthAlgorithm.HMAC_SHA_1_96, AuthAlgorithm.HMAC_SHA_256_128])
authenticated = st.one_of(ws.map_registers(), ws.map_notifies, ws.map_notify_acks)


@settings(max_examples=60, deadline=None)
@given(authenticated, ALGORITHMS, st.binary(min_size=1, max_size=40))
def test_signed_messages_verify_and_carry_the_full_digest(message, algorithm, key) -> None:  # noqa: ANN001
    signed = sign(message, key, algorithm)
    raw = signed.encode()
    assert len(signed.authentication_data) == DIGEST_LENGTHS[algorithm] == {1: 20, 2: 32}[algorithm]
    assert raw[13] == algorithm
    assert verify(raw, key)
    assert not verify(raw, key + b"x")
    zeroed = raw[:16] + bytes(DIGEST_LENGTHS[algorithm]) + raw[16 + DIGEST_LENGTHS[algorithm] :]
    digest = {1: hashlib.sha1, 2: hashlib.sha256}[algorithm]
    assert signed.authentication_data == hmac.new(key, zeroed, digest).digest()
    assert sign(raw, key, algorithm) == raw  # signing the bytes gives the same answer


def test_any_single_byte_change_fails_verification() -> None:
    for position in range(len(MAP_REGISTER)):
        tampered = bytearray(MAP_REGISTER)
        tampered[position] ^= 0x01
        if tampered[0] >> 4 != 3:
            continue  # another message type: not an authenticated message any more
        assert check_authentication(bytes(tampered), b"s3cret") is not AuthResult.OK, position


def test_reasons_for_rejection() -> None:
    register = MapRegister(nonce=5)
    assert check_authentication(register.encode(), b"k") is AuthResult.NO_AUTHENTICATION
    assert check_authentication(MapRegister(nonce=5, algorithm_id=7).encode(), b"k") is AuthResult.UNKNOWN_ALGORITHM
    truncated_sha1_96 = MapRegister(nonce=5, algorithm_id=1, authentication_data=bytes(12))
    assert check_authentication(truncated_sha1_96.encode(), b"k") is AuthResult.BAD_LENGTH
    assert check_authentication(sign(register, b"k").encode(), b"other") is AuthResult.MISMATCH
    assert check_authentication(sign(register, b"k").encode(), b"k") is AuthResult.OK


def test_str_keys_are_their_utf8_bytes() -> None:
    assert sign(MapNotify(nonce=1), "clé") == sign(MapNotify(nonce=1), "clé".encode())


def test_verification_uses_the_raw_bytes_not_a_re_encoding() -> None:
    """A peer that sets a reserved bit signs over it; re-encoding would clear it and break the HMAC."""
    raw = bytearray(MAP_REGISTER)
    raw[1] |= 0x01  # bit 15: reserved in RFC 9301
    raw = sign(bytes(raw), b"s3cret", AuthAlgorithm.HMAC_SHA_1_96)
    assert verify(raw, b"s3cret")
    assert not verify(decode_message(raw).encode(), b"s3cret")


def test_verify_rejects_what_cannot_carry_authentication() -> None:
    with pytest.raises(LispDecodeError):
        verify(MAP_REGISTER[:10], b"k")
    with pytest.raises(LispDecodeError):
        verify(MAP_REQUEST_PLAIN, b"k")
