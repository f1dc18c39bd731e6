"""Argument checks used by every dataclass's ``__post_init__``.

They raise `LispEncodeError`: a value out of range when *building* a message
is our own mistake, not the peer's.
"""

from __future__ import annotations

from typing import Any

from .errors import LispEncodeError


def check_uint(owner: str, name: str, value: Any, bits: int) -> None:
    if type(value) is bool or not isinstance(value, int):
        raise LispEncodeError(f"{owner}.{name} must be an int, not {type(value).__name__}")
    if not 0 <= value < (1 << bits):
        raise LispEncodeError(f"{owner}.{name}={value} does not fit in {bits} bits (0..{(1 << bits) - 1})")


def check_bool(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise LispEncodeError(f"{owner}.{name} must be a bool, not {type(value).__name__}")


def check_bytes(owner: str, name: str, value: Any, max_len: int | None = None, exact_len: int | None = None) -> None:
    if not isinstance(value, bytes):
        raise LispEncodeError(f"{owner}.{name} must be bytes, not {type(value).__name__}")
    if exact_len is not None and len(value) != exact_len:
        raise LispEncodeError(f"{owner}.{name} must be {exact_len} bytes, got {len(value)}")
    if max_len is not None and len(value) > max_len:
        raise LispEncodeError(f"{owner}.{name} is {len(value)} bytes, at most {max_len} fit")


def as_tuple(obj: object, name: str, value: Any) -> tuple:
    """Freeze a list argument into a tuple (frozen dataclasses must stay hashable and immutable)."""
    if isinstance(value, tuple):
        return value
    if isinstance(value, (list, range)) or (hasattr(value, "__iter__") and not isinstance(value, (str, bytes))):
        frozen = tuple(value)
        object.__setattr__(obj, name, frozen)
        return frozen
    raise LispEncodeError(f"{type(obj).__name__}.{name} must be a sequence, not {type(value).__name__}")


def trusted(cls: type, **fields: Any) -> Any:
    """Build a frozen dataclass without running ``__post_init__``.

    Only decoders use this, for values they have already bounded by
    construction (an 8-bit field cannot exceed 255): re-checking every field
    of every locator would double the cost of decoding.  The tests re-run
    full validation on everything the decoders produce (``revalidate`` in
    tests/wire/strategies.py).
    """
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj
