"""Hostile persistence: a full disk, a full fd table, a read-only data dir.

The store's system calls are made to fail in-process (`os.write` with ENOSPC,
`os.open` with EMFILE or EROFS); the real full disk is test_store_tmpfs.py.
"""

from __future__ import annotations

import errno
import logging
import os

import pytest

from lisp_ryu.mapserver import FileStore, StoreError
from lisp_ryu.mapserver import journal as journal_mod
from lisp_ryu.mapserver import store as store_mod
from lisp_ryu.mapserver import views

from support import store_hostile as h


class Disk:
    """Makes the store's writes fail with `error` while `full` is set."""

    def __init__(self, monkeypatch, error: int = errno.ENOSPC) -> None:
        self.full = False
        self.error = error
        real_write, real_open = os.write, os.open

        def write(fd, data):  # an open descriptor still writes when the fd table is full
            if self.full and self.error != errno.EMFILE:
                raise OSError(self.error, os.strerror(self.error))
            return real_write(fd, data)

        def open_(path, flags, mode=0o777, **kw):
            if self.full and flags & (os.O_WRONLY | os.O_RDWR):
                raise OSError(self.error, os.strerror(self.error))
            return real_open(path, flags, mode, **kw)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "open", open_)
        monkeypatch.setattr(os, "fsync", lambda fd: None)
        monkeypatch.setattr(store_mod, "PROBE_ROOM", 0, raising=False)  # statvfs sees the real disk, not this one


def test_full_disk_on_the_register_path_refuses_registrations_keeps_answering_and_recovers(tmp_path, monkeypatch,
                                                                                           caplog):
    disk = Disk(monkeypatch)
    store = FileStore(str(tmp_path))
    server = h.core(store)
    for n in range(10):
        assert h.register(server, n)
    disk.full = True
    with caplog.at_level(logging.WARNING):
        acknowledged = [h.register(server, n, now=h.T0 + 1) for n in range(10, 300)]
    assert not any(acknowledged)  # no Map-Notify for what is not on disk
    assert h.registered(server, 300) == 10  # ... and not served either
    assert "Traceback" not in caplog.text and len(caplog.records) < 20
    assert server.counters["store.write_errors"] == 1  # the first one; the rest refused before any change
    assert server.counters["rejected.map_register.journal-down"] == 289
    assert views.health(server)["store"] == "degraded: cannot write journal (ENOSPC)"
    assert h.registered(server, 10) == 10  # Map-Requests still answered
    disk.full = False
    deadline = server.next_deadline()
    assert deadline is not None and deadline <= h.T0 + 1 + journal_mod.RETRY_FIRST
    server.handle_timer(h.T0 + 5)  # the probe write works again
    assert views.health(server)["status"] == "ok"
    assert h.register(server, 10, now=h.T0 + 6)
    store.close()
    again = h.core(FileStore(str(tmp_path)), now=h.T0 + 7)
    assert h.registered(again, 300) == 11


def test_full_disk_during_compaction_is_caught_counted_retried_and_leaves_no_temporary_file(tmp_path, monkeypatch,
                                                                                            caplog):
    monkeypatch.setattr(journal_mod, "COMPACT_MIN_ENTRIES", 5)
    disk = Disk(monkeypatch)
    store = FileStore(str(tmp_path))
    server = h.core(store)
    for n in range(3):
        assert h.register(server, n)
    for second in range(6):  # changes: the journal grows past the compaction threshold (refreshes journal nothing)
        h.change(server, 0, second, now=h.T0 + second)
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full"))
                        if len(data) > 200 else real_write(fd, data))  # the snapshot is the big write
    with caplog.at_level(logging.WARNING):
        for second in range(10, 40):
            server.handle_timer(h.T0 + second)
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))
    errors = server.counters["store.compaction_errors"]
    assert 2 <= errors <= 6  # retried with backoff, not at every timer
    assert sum("compaction failed" in r.getMessage() for r in caplog.records) < errors + 1
    assert "Traceback" not in caplog.text
    assert views.health(server)["store"] == "degraded: cannot compact journal (ENOSPC)"
    assert h.register(server, 5, now=h.T0 + 40)  # the journal itself still takes small batches
    monkeypatch.setattr(os, "write", real_write)
    server.handle_timer(h.T0 + 400)
    assert server.counters["store.snapshots"] == 1
    assert views.health(server)["status"] == "ok"
    del disk


def test_fd_exhaustion_during_compaction_is_caught_and_registrations_continue(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_mod, "COMPACT_MIN_ENTRIES", 5)
    disk = Disk(monkeypatch, errno.EMFILE)
    store = FileStore(str(tmp_path))
    server = h.core(store)
    for second in range(6):  # changes, journalled (identical refreshes are not)
        h.change(server, second % 2, second, now=h.T0 + second)
    for second in range(6, 8):
        assert h.register(server, second % 2, now=h.T0 + second)
    disk.full = True  # every open fails: EMFILE
    server.handle_timer(h.T0 + 10)
    assert server.counters["store.compaction_errors"] == 1
    assert h.register(server, 7, now=h.T0 + 11)  # the journal's descriptor is open already
    disk.full = False
    server.handle_timer(h.T0 + 20)
    assert server.counters["store.snapshots"] == 1
    assert h.register(server, 8, now=h.T0 + 21)  # no file to open: the compaction made the next journal
    store.close()
    assert h.registered(h.core(FileStore(str(tmp_path)), now=h.T0 + 22), 9) == 4


def test_read_only_data_dir_is_a_clear_error_at_start(tmp_path, monkeypatch):
    disk = Disk(monkeypatch, errno.EROFS)
    disk.full = True
    with pytest.raises(StoreError, match="not writable.*EROFS"):
        FileStore(str(tmp_path))


def test_stale_temporary_snapshot_is_removed_at_start(tmp_path):
    (tmp_path / "snapshot.msgpack.tmp").write_bytes(b"x" * 100_000)
    FileStore(str(tmp_path))
    assert os.listdir(tmp_path) == []
