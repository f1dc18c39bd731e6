"""The files of the durable Map-Server state: an msgpack snapshot plus an fsynced append-only journal.

What the entries say is `journal.py`'s business; here they are opaque maps.
Each is *absolute* (set this key to this value / delete this key), so
replaying a journal on top of any snapshot taken before it always ends in the
state that was journalled last, and a replay may safely repeat entries.

Files in the data directory (their bytes: `store_format.py`):

    snapshot.msgpack         checksummed header (generation G) + every entry of the state
    journal-<G>.msgpack      header naming G, then one checksummed batch per message after that snapshot

`append` writes a batch of entries (everything one received message
changed) with one write and one fsync and returns only after that, so the
core can send the Map-Notify that acknowledges a registration knowing a crash
cannot lose it.  A failed append (disk full, I/O error) is cut back to the
last whole batch and raised: the caller must then not keep the change.
A snapshot is written to a temporary file and fsynced, the next
generation's empty journal created, the snapshot renamed over the old one
and the directory fsynced; only then does the old journal go.  A crash at
any point leaves either the old snapshot with its complete journal, or the
new snapshot (whose generation ignores the old journal).  A failed snapshot
removes its temporary files and changes nothing.  A torn last batch (killed
mid-write) is dropped, the file cut back to the batch before it; damage
anywhere else, a damaged snapshot, or a journal newer than the snapshot
(its snapshot deleted) is refused at start with the file named.

`MemoryStore` keeps the same entries in a list: the core's tests use it to
check what was recorded and to restart a core from it without files.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import msgpack

from lisp_ryu.mapserver import store_format

LOG = logging.getLogger("lisp_ryu.mapserver.store")

SNAPSHOT = "snapshot.msgpack"
PROBE = ".write-probe-"
#: Free bytes the data dir needs before a journal that could not be written is tried again: room for
#: a few batches, so that a disk with a few bytes free does not flap between working and not.
PROBE_ROOM = 64 * 1024


class StoreError(RuntimeError):
    """The data directory cannot be used: damaged or orphaned files (not a torn tail: that is repaired),
    or not writable.  The message names the file and what to do."""


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

    def probe(self) -> None:
        """Raise OSError unless an append would work again (after one failed)."""


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

    def probe(self) -> None:
        pass


class FileStore:
    """Snapshot + journal in a directory (see the module docstring for the crash rules)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"data dir {directory}: cannot create it ({_reason(exc)})") from None
        self.generation = 0
        self._journal_fd: int | None = None
        self._journal_entries = 0
        self._journal_size = 0  # bytes of whole batches: a failed append is cut back to it
        self._journal_format = store_format.VERSION  # an old journal is appended to as it is until compacted
        self._cut_back = False  # a failed append could not be cut back yet: do it before writing again
        self.repaired_bytes = 0  # bytes of a torn journal tail dropped at load (for the log and tests)
        #: Set when the start-up probe found no room (ENOSPC, EDQUOT): the server starts, refusing changes.
        self.start_error: OSError | None = None
        self._remove_stale_temporaries()
        self._probe_writable()

    # -- paths --------------------------------------------------------------
    def _journal_path(self, generation: int) -> str:
        return os.path.join(self.directory, f"journal-{generation}.msgpack")

    @property
    def snapshot_path(self) -> str:
        return os.path.join(self.directory, SNAPSHOT)

    # -- start-up checks ----------------------------------------------------
    def _remove_stale_temporaries(self) -> None:
        """A snapshot being written when the process died is never read: it only takes room."""
        try:
            names = os.listdir(self.directory)
        except OSError as exc:
            raise StoreError(f"data dir {self.directory}: cannot list it ({_reason(exc)})") from None
        for name in names:
            if name.endswith(".tmp") or name.startswith(PROBE):
                try:
                    os.unlink(os.path.join(self.directory, name))
                    LOG.info("%s: removed %s left by an interrupted write", self.directory, name)
                except OSError:
                    pass  # the probe says whether the directory is writable at all

    def _probe_writable(self) -> None:
        """Write, fsync and remove a small file: a read-only or forbidden data dir is a clear error at start,
        not a failure at the first Map-Register.  A full one is not fatal: the server starts and refuses
        changes until there is room (`start_error`)."""
        path = os.path.join(self.directory, f"{PROBE}{os.getpid()}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"lisp-ryu probe")
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(path)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                LOG.error("data dir %s is full (%s): registrations are refused until there is room",
                          self.directory, _reason(exc))
                self.start_error = exc
                return
            raise StoreError(f"data dir {self.directory} is not writable ({_reason(exc)})") from None

    # -- loading ------------------------------------------------------------
    def load(self) -> list[dict]:
        entries: list[dict] = []
        self.generation = 0
        have_snapshot = os.path.exists(self.snapshot_path)
        if have_snapshot:
            try:
                with open(self.snapshot_path, "rb") as fh:
                    data = fh.read()
                self.generation, snapshot_entries, _format = store_format.read_snapshot(data)
            except store_format.FormatError as exc:
                raise StoreError(f"{self.snapshot_path}: {exc}; refusing to start on a damaged snapshot "
                                 "(restore it from a backup, or move the data dir aside to start empty)") from None
            except OSError as exc:
                raise StoreError(f"{self.snapshot_path}: cannot read it ({_reason(exc)})") from None
            entries.extend(snapshot_entries)
        self._check_journals(have_snapshot)
        journal = self._journal_path(self.generation)
        self._journal_entries = self._journal_size = 0
        self._journal_format = store_format.VERSION
        if os.path.exists(journal):
            try:
                with open(journal, "rb") as fh:
                    data = fh.read()
                read = store_format.read_journal(data, self.generation)
            except store_format.FormatError as exc:
                raise StoreError(f"{journal}: damaged at {exc}; refusing to start: the batches after the damage "
                                 "were acknowledged (move the file aside to start without them)") from None
            except OSError as exc:
                raise StoreError(f"{journal}: cannot read it ({_reason(exc)})") from None
            if read.valid < len(data):
                self.repaired_bytes = len(data) - read.valid
                LOG.warning("%s: dropping a torn last batch at offset %d (%d bytes: %s), left by a crash mid-write",
                            journal, read.valid, len(data) - read.valid, read.torn)
                with open(journal, "r+b") as fh:
                    fh.truncate(read.valid)
                    fh.flush()
                    os.fsync(fh.fileno())
            if read.format == store_format.OLD_FORMAT:
                LOG.info("%s: old journal format (no checksums); rewritten at the next compaction", journal)
            self._journal_format = read.format
            self._journal_size = read.valid
            entries.extend(read.entries)
            self._journal_entries = len(read.entries)
        return entries

    def _check_journals(self, have_snapshot: bool) -> None:
        """Remove journals the snapshot already holds; refuse one newer than the snapshot (an orphan)."""
        for name in os.listdir(self.directory):
            if not (name.startswith("journal-") and name.endswith(".msgpack")):
                continue
            try:
                generation = int(name[len("journal-"):-len(".msgpack")])
            except ValueError:
                continue
            path = os.path.join(self.directory, name)
            if generation < self.generation:  # journals older than the snapshot are already in it
                os.unlink(path)
            elif generation > self.generation:
                if os.path.getsize(path) <= store_format.JOURNAL_HEAD_SIZE:
                    os.unlink(path)  # created by a compaction that died before its snapshot was in place
                    continue
                snapshot = (f"{SNAPSHOT} is at generation {self.generation}" if have_snapshot
                            else f"{SNAPSHOT} is missing")
                raise StoreError(f"{path}: journal of generation {generation} but {snapshot}: it records changes "
                                 f"to a snapshot that is not there; refusing to start rather than serve part of "
                                 f"the state (restore {SNAPSHOT}, or move the journal aside to start without it)")

    # -- writing ------------------------------------------------------------
    def _fd(self) -> int:
        if self._journal_fd is None:
            path = self._journal_path(self.generation)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size == 0:
                    _write_all(fd, store_format.journal_header(self.generation))
                    self._journal_format = store_format.VERSION
                    os.fsync(fd)
                self._journal_size = os.fstat(fd).st_size
                _fsync_dir(self.directory)
            except OSError:
                os.close(fd)
                raise
            self._journal_fd = fd
        return self._journal_fd

    def append(self, entries: list[dict | bytes]) -> None:
        """Write one batch; on any error the file is cut back to its last whole batch and the error raised."""
        fd = self._fd()
        if self._cut_back:
            os.ftruncate(fd, self._journal_size)
            self._cut_back = False
        payload = b"".join(_encoded(entry) for entry in entries)
        try:
            _write_all(fd, store_format.frame(payload) if self._journal_format == store_format.VERSION else payload)
            os.fsync(fd)
        except OSError:
            try:  # cutting back needs no room; a later append retries it if this one fails too
                os.ftruncate(fd, self._journal_size)
            except OSError:
                self._cut_back = True
            raise
        self._journal_size = os.fstat(fd).st_size
        self._journal_entries += len(entries)

    def probe(self) -> None:
        """Raise OSError unless the journal takes a write again (an empty batch: replay skips it)."""
        stat = os.statvfs(self.directory)
        free = stat.f_frsize * (stat.f_bfree if os.geteuid() == 0 else stat.f_bavail)
        if free < PROBE_ROOM:
            raise OSError(errno.ENOSPC, f"{free} bytes free in {self.directory}")
        self.append([])

    def journal_length(self) -> int:
        return self._journal_entries

    def snapshot(self, entries: Iterable[dict | bytes]) -> None:
        """Write the next generation; on error nothing changes (temporary files removed) and the error is raised."""
        generation = self.generation + 1
        items = [_encoded(entry) for entry in entries]
        packer = msgpack.Packer(use_bin_type=True)
        payload = b"".join((packer.pack_array_header(len(items)), *items))
        del items
        new_journal = self._journal_path(generation)
        try:
            _atomic_write(self.snapshot_path, store_format.snapshot_header(generation, payload), payload,
                          before_rename=lambda: self._create_journal(new_journal, generation))
        except BaseException:
            try:
                os.unlink(new_journal)
            except OSError:
                pass
            raise
        old_journal = self._journal_path(self.generation)
        if self._journal_fd is not None:
            os.close(self._journal_fd)
        self._journal_fd = None
        self.generation = generation
        self._journal_entries = 0
        self._journal_format = store_format.VERSION
        self._cut_back = False
        try:  # the new snapshot is in place: what follows is tidying, a failure here loses nothing
            self._fd()
            if os.path.exists(old_journal):
                os.unlink(old_journal)
                _fsync_dir(self.directory)
        except OSError as exc:
            LOG.warning("%s: snapshot written, but %s (retried at the next write)", self.directory, _reason(exc))

    def _create_journal(self, path: str, generation: int) -> None:
        """The next generation's journal, header only, fsynced before its snapshot takes over: the first
        append after a compaction then opens no file (a full fd table costs a compaction, not a register)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, store_format.journal_header(generation))
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None


def _encoded(entry: dict | bytes) -> bytes:
    return entry if isinstance(entry, bytes) else msgpack.packb(entry, use_bin_type=True)


def _as_read(entry: dict | bytes) -> dict:
    """An entry as a load would read it back."""
    return msgpack.unpackb(_encoded(entry), raw=False)


def _atomic_write(path: str, *chunks: bytes, before_rename: Callable[[], None] | None = None) -> None:
    """Write temp, fsync, rename, fsync the directory: readers see the old file or the new one.
    On error the temporary file is removed (a full disk must not keep it full) and the error raised."""
    tmp = f"{path}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for chunk in chunks:
                _write_all(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(os.path.dirname(path) or ".")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _reason(exc: OSError) -> str:
    """"ENOSPC: No space left on device": the errno's name, for logs and the health view."""
    name = errno.errorcode.get(exc.errno or 0, "error")
    return f"{name}: {exc.strerror or exc}"


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
