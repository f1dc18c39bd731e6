"""The files of the durable Map-Server state: an msgpack snapshot plus an fsynced append-only journal.

What the entries say is `journal.py`'s business; here they are opaque maps.
Each is *absolute* (set this key to this value / delete this key), so
replaying a journal on top of any snapshot taken before it always ends in the
state that was journalled last, and a replay may safely repeat entries.

Files in the data directory:

    snapshot.msgpack         {"format": 1, "generation": G, "entries": [...]}
    journal-<G>.msgpack      entries appended after that snapshot, one msgpack map each

`append` writes a batch of entries (everything one received message
changed) with one write and one fsync and returns only after that, so the
core can send the Map-Notify that acknowledges a registration knowing a crash
cannot lose it.
A snapshot is written to a temporary file, fsynced, renamed over the old one
and the directory fsynced; only then does a new, empty journal generation
start and the old journal go.  A crash at any point leaves either the old
snapshot with its complete journal, or the new snapshot (whose generation
ignores the old journal).  A torn entry at the end of the journal (killed in
the middle of a write) is dropped and the file truncated back to the last
whole entry before anything new is appended.

`MemoryStore` keeps the same entries in a list: the core's tests use it to
check what was recorded and to restart a core from it without files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

import msgpack

LOG = logging.getLogger("lisp_ryu.mapserver.store")

FORMAT = 1
SNAPSHOT = "snapshot.msgpack"


class StoreError(RuntimeError):
    """The data directory holds something we cannot read (not a torn tail: that is repaired)."""


class Store(Protocol):
    """What the Map-Server core needs from persistence."""

    def load(self) -> list[dict]:
        """Every entry needed to rebuild the state: snapshot entries, then journal entries."""

    def append(self, entries: list[dict | bytes]) -> None:
        """Record a batch of changes durably; returns once they survive a crash.

        An entry is a dict, or a dict already msgpack-encoded (written as it is)."""

    def journal_length(self) -> int:
        """Entries appended since the last snapshot (the core compacts when this grows)."""

    def snapshot(self, entries: Iterable[dict | bytes]) -> None:
        """Replace everything recorded so far by `entries` (the full current state; dicts or encoded dicts)."""


@dataclass
class MemoryStore:
    """A store in memory: same contract as `FileStore`, for tests and for running without --data-dir."""

    snapshot_entries: list[dict] = field(default_factory=list)
    journal: list[dict] = field(default_factory=list)
    snapshots_taken: int = 0

    def load(self) -> list[dict]:
        return [*self.snapshot_entries, *self.journal]

    appends: int = 0  # batches written (FileStore: fsyncs)

    def append(self, entries: list[dict | bytes]) -> None:
        # Round-trip through msgpack so tests catch anything FileStore could not write.
        self.journal.extend(_as_read(e) for e in entries)
        self.appends += 1

    def journal_length(self) -> int:
        return len(self.journal)

    def snapshot(self, entries: Iterable[dict | bytes]) -> None:
        self.snapshot_entries = [_as_read(e) for e in entries]
        self.journal = []
        self.snapshots_taken += 1


class FileStore:
    """Snapshot + journal in a directory (see the module docstring for the crash rules)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.generation = 0
        self._journal_fd: int | None = None
        self._journal_entries = 0
        self.repaired_bytes = 0  # bytes of a torn journal tail dropped at load (for the log and tests)

    # -- paths --------------------------------------------------------------
    def _journal_path(self, generation: int) -> str:
        return os.path.join(self.directory, f"journal-{generation}.msgpack")

    @property
    def snapshot_path(self) -> str:
        return os.path.join(self.directory, SNAPSHOT)

    # -- loading ------------------------------------------------------------
    def load(self) -> list[dict]:
        entries: list[dict] = []
        if os.path.exists(self.snapshot_path):
            with open(self.snapshot_path, "rb") as fh:
                try:
                    data = msgpack.unpackb(fh.read(), raw=False)
                except (ValueError, msgpack.UnpackException) as exc:
                    raise StoreError(f"{self.snapshot_path}: not a readable snapshot ({exc})") from None
            if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), list):
                raise StoreError(f"{self.snapshot_path}: unknown snapshot format")
            self.generation = int(data.get("generation", 0))
            entries.extend(data["entries"])
        for name in os.listdir(self.directory):  # journals older than the snapshot are already in it
            if name.startswith("journal-") and name != os.path.basename(self._journal_path(self.generation)):
                try:
                    if int(name[len("journal-"):].split(".")[0]) < self.generation:
                        os.unlink(os.path.join(self.directory, name))
                except ValueError:
                    pass
        journal = self._journal_path(self.generation)
        if os.path.exists(journal):
            replayed, valid_length, size = self._read_journal(journal)
            if valid_length < size:
                self.repaired_bytes = size - valid_length
                LOG.warning("%s: dropping a torn final entry (%d bytes) left by a crash mid-write",
                            journal, size - valid_length)
                with open(journal, "r+b") as fh:
                    fh.truncate(valid_length)
                    fh.flush()
                    os.fsync(fh.fileno())
            entries.extend(replayed)
            self._journal_entries = len(replayed)
        return entries

    @staticmethod
    def _read_journal(path: str) -> tuple[list[dict], int, int]:
        with open(path, "rb") as fh:
            data = fh.read()
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(data)
        entries: list[dict] = []
        valid = 0
        while True:
            try:
                entry = unpacker.unpack()
            except msgpack.OutOfData:
                break
            except (ValueError, msgpack.UnpackException):
                break  # garbage after the last whole entry: treat like a torn tail
            if not isinstance(entry, dict):
                break
            entries.append(entry)
            valid = unpacker.tell()
        return entries, valid, len(data)

    # -- writing ------------------------------------------------------------
    def _fd(self) -> int:
        if self._journal_fd is None:
            self._journal_fd = os.open(self._journal_path(self.generation), os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                       0o600)
            _fsync_dir(self.directory)
        return self._journal_fd

    def append(self, entries: list[dict | bytes]) -> None:
        fd = self._fd()
        view = memoryview(b"".join(_encoded(entry) for entry in entries))
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        self._journal_entries += len(entries)

    def journal_length(self) -> int:
        return self._journal_entries

    def snapshot(self, entries: Iterable[dict | bytes]) -> None:
        generation = self.generation + 1
        # The bytes msgpack.packb gives for {"format", "generation", "entries": [...]}, with the
        # entries that come encoded joined in as they are.
        items = [_encoded(entry) for entry in entries]
        packer = msgpack.Packer(use_bin_type=True)
        head = b"".join((packer.pack_map_header(3), packer.pack("format"), packer.pack(FORMAT),
                         packer.pack("generation"), packer.pack(generation),
                         packer.pack("entries"), packer.pack_array_header(len(items))))
        _atomic_write(self.snapshot_path, b"".join((head, *items)))
        old_journal = self._journal_path(self.generation)
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
        self.generation = generation
        self._journal_entries = 0
        if os.path.exists(old_journal):
            os.unlink(old_journal)
            _fsync_dir(self.directory)

    def close(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None


def _encoded(entry: dict | bytes) -> bytes:
    return entry if isinstance(entry, bytes) else msgpack.packb(entry, use_bin_type=True)


def _as_read(entry: dict | bytes) -> dict:
    """An entry as a load would read it back."""
    return msgpack.unpackb(_encoded(entry), raw=False)


def _atomic_write(path: str, payload: bytes) -> None:
    """Write temp, fsync, rename, fsync the directory: readers see the old file or the new one."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path) or ".")


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot(directory: str, entries: Iterable[Any]) -> None:
    """Write a data directory holding exactly `entries` (used to preload state, e.g. by the benchmark)."""
    store = FileStore(directory)
    store.load()
    store.snapshot(entries)
    store.close()
