"""The control-message dispatcher: decode one LISP control datagram by its type nibble.

It lives apart from `messages` and `ecm` because it needs both: a datagram
on UDP 4342 is either a message of types 1-5 or an ECM, and an ECM carries
one of the former.  `ecm` decodes its payload with `messages.decode_typed`,
so neither of them imports this module.
"""

from __future__ import annotations

from .ecm import EncapsulatedControlMessage
from .messages import _CONTROL_CLASSES, MessageType, _reader_for, decode_typed

#: Every message type a datagram may hold: the plain messages and the ECM.
_DATAGRAM_CLASSES: dict[int, type] = {
    **_CONTROL_CLASSES,
    MessageType.ENCAPSULATED_CONTROL_MESSAGE: EncapsulatedControlMessage,
}


def decode_message(data: bytes):  # noqa: ANN201 - ControlMessage | EncapsulatedControlMessage
    """Decode one LISP control message (types 1-5 and 8) from a UDP payload."""
    return decode_typed(_reader_for(data, "LISP message"), _DATAGRAM_CLASSES)


__all__ = ["decode_message"]
