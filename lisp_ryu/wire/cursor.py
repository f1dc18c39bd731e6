"""Byte cursors: a bounds-checked reader whose errors carry offsets, and a writer
that fills in length fields after the fact.

Every read names the field it is reading, so a truncated or inconsistent packet
raises a `LispDecodeError` that says which field and where, instead of an
IndexError or struct.error from deep inside a decoder.
"""

from __future__ import annotations

import struct

from .errors import LispDecodeError

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Reader:
    """A read position inside ``data`` that may not pass ``end``.

    ``context`` is the name of the message being decoded; it becomes the
    ``message_type`` of any error.  Sub-readers (`sub`) share the buffer so
    offsets stay absolute within what the caller passed in.
    """

    __slots__ = ("data", "pos", "end", "context")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None, context: str = "LISP message") -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.context = context

    def error(self, field: str, reason: str, offset: int | None = None) -> LispDecodeError:
        return LispDecodeError(
            reason, message_type=self.context, field=field, offset=self.pos if offset is None else offset
        )

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def need(self, count: int, field: str) -> None:
        if self.pos + count > self.end:
            raise self.error(field, f"truncated: needs {count} bytes, {self.end - self.pos} left")

    def u8(self, field: str) -> int:
        if self.pos >= self.end:
            raise self.error(field, "truncated: needs 1 byte, 0 left")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def u16(self, field: str) -> int:
        if self.pos + 2 > self.end:
            raise self.error(field, f"truncated: needs 2 bytes, {self.end - self.pos} left")
        value = _U16.unpack_from(self.data, self.pos)[0]
        self.pos += 2
        return value

    def u32(self, field: str) -> int:
        if self.pos + 4 > self.end:
            raise self.error(field, f"truncated: needs 4 bytes, {self.end - self.pos} left")
        value = _U32.unpack_from(self.data, self.pos)[0]
        self.pos += 4
        return value

    def u64(self, field: str) -> int:
        if self.pos + 8 > self.end:
            raise self.error(field, f"truncated: needs 8 bytes, {self.end - self.pos} left")
        value = _U64.unpack_from(self.data, self.pos)[0]
        self.pos += 8
        return value

    def unpack(self, layout: struct.Struct, field: str) -> tuple:
        """Read a fixed-size group of fields in one step (the hot path of records and locators)."""
        size = layout.size
        if self.pos + size > self.end:
            raise self.error(field, f"truncated: needs {size} bytes, {self.end - self.pos} left")
        values = layout.unpack_from(self.data, self.pos)
        self.pos += size
        return values

    def take(self, count: int, field: str) -> bytes:
        if self.pos + count > self.end:
            raise self.error(field, f"truncated: needs {count} bytes, {self.end - self.pos} left")
        value = self.data[self.pos : self.pos + count]
        self.pos += count
        return value

    def take_rest(self) -> bytes:
        value = self.data[self.pos : self.end]
        self.pos = self.end
        return value

    def find(self, byte: int, field: str) -> int:
        """Offset of the next ``byte`` before ``end`` (for NUL-terminated strings)."""
        index = self.data.find(bytes((byte,)), self.pos, self.end)
        if index < 0:
            raise self.error(field, f"no terminating 0x{byte:02x} before the end of the field")
        return index

    def sub(self, count: int, field: str) -> Reader:
        """A reader over the next ``count`` bytes; this reader skips past them."""
        self.need(count, field)
        child = Reader(self.data, self.pos, self.pos + count, self.context)
        self.pos += count
        return child

    def expect_end(self, field: str) -> None:
        if self.pos != self.end:
            raise self.error(field, f"{self.end - self.pos} unexpected trailing bytes")


class Writer:
    """An append-only buffer with placeholders for lengths known only after the body."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def __len__(self) -> int:
        return len(self.buf)

    def u8(self, value: int) -> None:
        self.buf.append(value)

    def u16(self, value: int) -> None:
        self.buf += _U16.pack(value)

    def u32(self, value: int) -> None:
        self.buf += _U32.pack(value)

    def u64(self, value: int) -> None:
        self.buf += _U64.pack(value)

    def raw(self, value: bytes) -> None:
        self.buf += value

    def placeholder(self, size: int) -> int:
        """Reserve ``size`` zero bytes and return their offset, to be filled in later."""
        offset = len(self.buf)
        self.buf += bytes(size)
        return offset

    def fill_u16(self, offset: int, value: int) -> None:
        _U16.pack_into(self.buf, offset, value)

    def fill(self, offset: int, value: bytes) -> None:
        self.buf[offset : offset + len(value)] = value

    def getvalue(self) -> bytes:
        return bytes(self.buf)
