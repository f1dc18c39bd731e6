"""The bytes of the Map-Server's files: checksummed snapshot, framed journal, and the previous unchecked format.

A snapshot is one header then one msgpack array of entries:

    magic "LRS\\x02" | version u32 | generation u64 | payload length u64 | CRC-32 of the payload u32

Version 3 holds registrations as groups of rows (`snapshot_rows`), which
version 2 did not; both are read, 3 is written, and code that knows only
version 2 refuses a version 3 file rather than start without its
registrations.

A journal is one header, then one frame per batch (everything one message changed):

    header  magic "LRJ\\x02" | version u32 | generation u64 | CRC-32 of these 16 bytes u32
    frame   payload length u32 | CRC-32 of the payload u32 | CRC-32 of these 8 bytes u32 | payload

The frame header has its own checksum so that a flipped length is seen as
damage, not as a batch running past the end of the file.  A batch is torn
(killed mid-write: dropped) only when it is the last one: its header cut
short, its payload running past the end, or its payload checksum failing
with nothing after it.  Damage anywhere else is refused with the file and
offset named: the batches after it were acknowledged and must not be cut off.

The previous format had no checksums: the snapshot a msgpack map
{"format": 1, "generation", "entries"}, the journal bare msgpack entries.
Both are still read (their first byte is a msgpack map, never "L"), and
written again in this format by the next compaction.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import msgpack

VERSION = 2  # of the journal
SNAPSHOT_VERSION = 3
SNAPSHOT_VERSIONS = (2, 3)
SNAPSHOT_MAGIC = b"LRS\x02"
JOURNAL_MAGIC = b"LRJ\x02"
_SNAPSHOT_HEAD = struct.Struct(">4sIQQI")
_JOURNAL_HEAD = struct.Struct(">4sIQ")
_FRAME = struct.Struct(">II")
JOURNAL_HEAD_SIZE = _JOURNAL_HEAD.size + 4
FRAME_HEAD_SIZE = _FRAME.size + 4
OLD_FORMAT = 1
#: In an old (unframed) journal, unreadable bytes up to this many at the end pass for one torn batch;
#: more is refused: without frames nothing tells a torn tail from damage that hides good entries.
OLD_TORN_LIMIT = 64 * 1024


class FormatError(ValueError):
    """The bytes are not what was written (the store names the file)."""


def crc(data: bytes | memoryview, start: int = 0) -> int:
    return zlib.crc32(data, start) & 0xFFFFFFFF


# --------------------------------------------------------------------------- snapshot


def snapshot_header(generation: int, payload: bytes | memoryview) -> bytes:
    return _SNAPSHOT_HEAD.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, generation, len(payload), crc(payload))


def read_snapshot(data: bytes) -> tuple[int, list, int]:
    """(generation, entries, format) of a snapshot file's bytes; FormatError if damaged or unknown."""
    if data[:4] == SNAPSHOT_MAGIC:
        if len(data) < _SNAPSHOT_HEAD.size:
            raise FormatError(f"header cut short ({len(data)} bytes)")
        _magic, version, generation, length, checksum = _SNAPSHOT_HEAD.unpack_from(data)
        if version not in SNAPSHOT_VERSIONS:
            raise FormatError(f"unknown snapshot version {version}")
        payload = memoryview(data)[_SNAPSHOT_HEAD.size:]
        if len(payload) != length:
            raise FormatError(f"{len(payload)} bytes of entries where the header says {length}")
        if crc(payload) != checksum:
            raise FormatError(f"checksum mismatch (CRC-32 {crc(payload):08x}, header says {checksum:08x})")
        try:
            entries = msgpack.unpackb(payload, raw=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise FormatError(f"checksum matches but entries unreadable ({exc})") from None
        if not isinstance(entries, list):
            raise FormatError("entries are not a list")
        return generation, entries, version
    try:
        old = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise FormatError(f"not a readable snapshot ({exc})") from None
    if not isinstance(old, dict) or old.get("format") != OLD_FORMAT or not isinstance(old.get("entries"), list):
        raise FormatError("unknown snapshot format")
    generation = old.get("generation", 0)
    if type(generation) is not int or generation < 0:
        raise FormatError(f"generation {generation!r} is not a non-negative integer")
    return generation, old["entries"], OLD_FORMAT


# --------------------------------------------------------------------------- journal


def journal_header(generation: int) -> bytes:
    head = _JOURNAL_HEAD.pack(JOURNAL_MAGIC, VERSION, generation)
    return head + crc(head).to_bytes(4, "big")


def frame(payload: bytes) -> bytes:
    head = _FRAME.pack(len(payload), crc(payload))
    return head + crc(head).to_bytes(4, "big") + payload


@dataclass
class JournalRead:
    entries: list
    valid: int  # bytes up to the end of the last whole batch
    format: int  # VERSION, or OLD_FORMAT for an unframed journal
    torn: str = ""  # why the bytes after `valid` are a torn last batch ("" when there are none)


def read_journal(data: bytes, generation: int) -> JournalRead:
    """The entries of a journal file's bytes; FormatError (with the offset) for damage before the last batch."""
    if not data:
        return JournalRead([], 0, VERSION)
    if data[:1] != JOURNAL_MAGIC[:1]:
        return _read_old_journal(data)
    if len(data) < JOURNAL_HEAD_SIZE:
        if JOURNAL_MAGIC.startswith(data[:4]):
            return JournalRead([], 0, VERSION, "header cut short")  # killed while creating the file
        raise FormatError("offset 0: not a journal header")
    magic, version, stored_generation = _JOURNAL_HEAD.unpack_from(data)
    if magic != JOURNAL_MAGIC or int.from_bytes(data[16:20], "big") != crc(data[:16]):
        raise FormatError("offset 0: journal header damaged")
    if version != VERSION:
        raise FormatError(f"offset 0: unknown journal version {version}")
    if stored_generation != generation:
        raise FormatError(f"offset 0: journal of generation {stored_generation} under the name of generation "
                          f"{generation}")
    view, size, offset, entries = memoryview(data), len(data), JOURNAL_HEAD_SIZE, []
    unpacker = msgpack.Unpacker(raw=False)
    while offset < size:
        if size - offset < FRAME_HEAD_SIZE:
            return JournalRead(entries, offset, VERSION, "batch header cut short")
        length, checksum = _FRAME.unpack_from(view, offset)
        if int.from_bytes(view[offset + 8:offset + 12], "big") != crc(view[offset:offset + 8]):
            if not any(view[offset:]):
                return JournalRead(entries, offset, VERSION, "zeros where a batch was being written")
            raise FormatError(f"offset {offset}: batch header damaged ({size - offset} bytes follow)")
        start, end = offset + FRAME_HEAD_SIZE, offset + FRAME_HEAD_SIZE + length
        if end > size:
            return JournalRead(entries, offset, VERSION, f"batch of {length} bytes cut short at {size - start}")
        if crc(view[start:end]) != checksum:
            if end == size:
                return JournalRead(entries, offset, VERSION, "checksum mismatch in the last batch")
            raise FormatError(f"offset {offset}: batch checksum mismatch ({size - end} bytes of later batches "
                              "follow)")
        unpacker.feed(view[start:end])
        batch = []
        try:
            for entry in unpacker:
                if not isinstance(entry, dict):
                    raise ValueError("an entry is not a map")
                batch.append(entry)
        except (ValueError, msgpack.UnpackException) as exc:
            raise FormatError(f"offset {offset}: checksum matches but the batch is unreadable ({exc})") from None
        entries.extend(batch)
        offset = end
    return JournalRead(entries, offset, VERSION)


def _read_old_journal(data: bytes) -> JournalRead:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    entries: list = []
    valid = 0
    while True:
        try:
            entry = unpacker.unpack()
        except msgpack.OutOfData:
            break
        except (ValueError, msgpack.UnpackException):
            break
        if not isinstance(entry, dict):
            break
        entries.append(entry)
        valid = unpacker.tell()
    if valid == len(data):
        return JournalRead(entries, valid, OLD_FORMAT)
    if len(data) - valid > OLD_TORN_LIMIT:
        raise FormatError(f"offset {valid}: unreadable entry in an old-format journal (no checksums), "
                          f"{len(data) - valid} bytes before its end: more than one batch, so not a torn tail")
    return JournalRead(entries, valid, OLD_FORMAT, "unreadable tail of an old-format journal (no checksums)")
