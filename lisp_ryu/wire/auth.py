"""Authentication of Map-Register, Map-Notify and Map-Notify-Ack (RFC 9301 §5.6).

The HMAC covers the whole message as sent (from the type nibble to the last
byte, xTR-ID/site-ID included) with the Authentication Data field set to
zeros.  Deployed implementations put the *full* HMAC output on the wire
despite the algorithm names: 20 bytes for HMAC-SHA-1-96 and 32 bytes for
HMAC-SHA-256-128 (OOR rejects the truncated 12/16-byte forms), so that is
what `sign` writes and `verify` accepts.

Verification works from the raw received bytes, never from a re-encoding: a
peer's encoding choices (reserved bits, LCAF flags) must not change the
digest we compare.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import replace
from enum import Enum, IntEnum
from typing import TypeVar

from .errors import LispDecodeError, LispEncodeError

#: Byte offsets shared by the three authenticated message types:
#: type/flags (4), nonce (8), Key ID (1), Algorithm ID (1), Auth Data Length (2).
KEY_ID_OFFSET = 12
ALGORITHM_ID_OFFSET = 13
AUTH_LENGTH_OFFSET = 14
AUTH_DATA_OFFSET = 16

_AUTHENTICATED_TYPES = {3: "Map-Register", 4: "Map-Notify", 5: "Map-Notify-Ack"}


class AuthAlgorithm(IntEnum):
    """The Algorithm ID field (RFC 9301 IANA "LISP Algorithm ID Numbers")."""

    NONE = 0
    HMAC_SHA_1_96 = 1
    HMAC_SHA_256_128 = 2


#: Authentication Data Length each algorithm puts on the wire (full HMAC output).
DIGEST_LENGTHS = {
    AuthAlgorithm.NONE: 0,
    AuthAlgorithm.HMAC_SHA_1_96: 20,
    AuthAlgorithm.HMAC_SHA_256_128: 32,
}

_HASHES = {AuthAlgorithm.HMAC_SHA_1_96: hashlib.sha1, AuthAlgorithm.HMAC_SHA_256_128: hashlib.sha256}


class AuthResult(Enum):
    """Why a message did or did not authenticate, so services can count rejections by cause."""

    OK = "ok"
    NO_AUTHENTICATION = "no-authentication"
    UNKNOWN_ALGORITHM = "unknown-algorithm"
    BAD_LENGTH = "bad-length"
    MISMATCH = "mismatch"


def digest_length(algorithm: int) -> int:
    try:
        return DIGEST_LENGTHS[AuthAlgorithm(algorithm)]
    except ValueError:
        raise LispEncodeError(f"unknown authentication algorithm {algorithm}") from None


def _key_bytes(key: bytes | str) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytes, bytearray)):
        return bytes(key)
    raise LispEncodeError(f"authentication key must be bytes or str, not {type(key).__name__}")


def compute_digest(zeroed_message: bytes, key: bytes | str, algorithm: int) -> bytes:
    """HMAC of a message whose Authentication Data is already zeroed."""
    if algorithm not in _HASHES:
        raise LispEncodeError(f"cannot compute a digest for algorithm {algorithm}")
    return hmac.new(_key_bytes(key), zeroed_message, _HASHES[AuthAlgorithm(algorithm)]).digest()


M = TypeVar("M")


def sign(message: M, key: bytes | str, algorithm: int = AuthAlgorithm.HMAC_SHA_1_96) -> M:
    """Return ``message`` with its Authentication Data computed under ``key``.

    ``message`` is a MapRegister / MapNotify / MapNotifyAck object (a new
    object comes back, with ``algorithm_id`` and ``authentication_data`` set),
    or the encoded bytes of one whose Authentication Data Length already
    matches ``algorithm`` (signed bytes come back).
    """
    if algorithm not in _HASHES:
        raise LispEncodeError(f"cannot sign with algorithm {algorithm}")
    length = DIGEST_LENGTHS[AuthAlgorithm(algorithm)]
    if isinstance(message, (bytes, bytearray, memoryview)):
        raw = bytearray(message)
        kind = _authenticated_kind(bytes(raw), LispEncodeError)
        _, _, auth_length = struct.unpack_from(">BBH", raw, KEY_ID_OFFSET)
        if auth_length != length or len(raw) < AUTH_DATA_OFFSET + length:
            raise LispEncodeError(
                f"{kind} has Authentication Data Length {auth_length}; algorithm {algorithm} needs {length}"
            )
        raw[ALGORITHM_ID_OFFSET] = algorithm
        raw[AUTH_DATA_OFFSET : AUTH_DATA_OFFSET + length] = bytes(length)
        raw[AUTH_DATA_OFFSET : AUTH_DATA_OFFSET + length] = compute_digest(bytes(raw), key, algorithm)
        return bytes(raw)  # type: ignore[return-value]
    if not hasattr(message, "authentication_data") or not hasattr(message, "encode"):
        raise LispEncodeError(f"cannot sign a {type(message).__name__}; only Map-Register/Notify/Notify-Ack")
    unsigned = replace(message, algorithm_id=AuthAlgorithm(algorithm), authentication_data=bytes(length))  # type: ignore[type-var]
    digest = compute_digest(unsigned.encode(), key, algorithm)
    return replace(unsigned, authentication_data=digest)


def check_authentication(raw: bytes, key: bytes | str) -> AuthResult:
    """Verify a received Map-Register/Notify/Notify-Ack from its raw bytes.

    The comparison is constant-time.  Raises `LispDecodeError` only when the
    bytes are too short to hold the authentication fields or are another
    message type.
    """
    data = bytes(raw)
    _authenticated_kind(data, LispDecodeError)
    _, algorithm, auth_length = struct.unpack_from(">BBH", data, KEY_ID_OFFSET)
    if algorithm == AuthAlgorithm.NONE:
        return AuthResult.NO_AUTHENTICATION
    if algorithm not in _HASHES:
        return AuthResult.UNKNOWN_ALGORITHM
    if auth_length != DIGEST_LENGTHS[AuthAlgorithm(algorithm)] or len(data) < AUTH_DATA_OFFSET + auth_length:
        return AuthResult.BAD_LENGTH
    received = data[AUTH_DATA_OFFSET : AUTH_DATA_OFFSET + auth_length]
    zeroed = data[:AUTH_DATA_OFFSET] + bytes(auth_length) + data[AUTH_DATA_OFFSET + auth_length :]
    expected = compute_digest(zeroed, key, algorithm)
    return AuthResult.OK if hmac.compare_digest(expected, received) else AuthResult.MISMATCH


def verify(raw: bytes, key: bytes | str) -> bool:
    """True when ``raw`` carries a valid HMAC under ``key`` (see `check_authentication`)."""
    return check_authentication(raw, key) is AuthResult.OK


def _authenticated_kind(data: bytes, error: type) -> str:
    if len(data) < AUTH_DATA_OFFSET:
        if error is LispDecodeError:
            raise LispDecodeError(
                f"{len(data)} bytes cannot hold the authentication header ({AUTH_DATA_OFFSET} bytes)",
                message_type="authenticated message",
                field="Authentication Data Length",
                offset=len(data),
            )
        raise error(f"{len(data)} bytes cannot hold the authentication header")
    kind = _AUTHENTICATED_TYPES.get(data[0] >> 4)
    if kind is None:
        if error is LispDecodeError:
            raise LispDecodeError(
                f"type {data[0] >> 4} carries no authentication data",
                message_type="authenticated message",
                field="Type",
                offset=0,
            )
        raise error(f"type {data[0] >> 4} carries no authentication data")
    return kind
