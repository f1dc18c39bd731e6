"""The codec's two error types.

"The peer sent garbage" and "we misused the API" call for different handling:
a service counts and drops the first, while the second is a bug in our own
code.  Keeping them apart (h11's lesson) means a bare ``except
LispDecodeError`` around ``decode_message`` can never hide a programming error.
"""

from __future__ import annotations


class LispDecodeError(ValueError):
    """Bytes from the wire that are not a valid LISP message.

    ``message_type`` names the message (or part) being decoded, ``field`` the
    field that was wrong and ``offset`` the byte offset of that field in the
    buffer handed to the decoder, so a log line points at the exact byte.
    ``offset`` is None only for conversions of already-decoded values (an
    EID-Record whose address is no EID prefix, see `EidPrefix.from_wire`).
    """

    def __init__(self, reason: str, *, message_type: str, field: str, offset: int | None) -> None:
        self.reason = reason
        self.message_type = message_type
        self.field = field
        self.offset = offset
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{message_type}: {field}{where}: {reason}")


class LispEncodeError(ValueError):
    """A value that cannot be put on the wire (out of range, wrong type, too many items).

    Raised when building or encoding a message object; it always means the
    caller asked for something the protocol cannot express.
    """
