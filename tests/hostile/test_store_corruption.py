"""Hostile persistence: damaged journal and snapshot files are found, named, and never served or truncated away.

Each test damages the files a real FileStore wrote, then restarts a core on them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import msgpack
import pytest

from lisp_ryu.mapserver import FileStore, StoreError

from support import store_hostile as h

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch):
    """These tests damage files on purpose: durability is not what they test, and 2,000 fsyncs take seconds."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def fill(directory, count: int, snapshot_at: int | None = None) -> None:
    store = FileStore(str(directory))
    server = h.core(store)
    for n in range(count):
        assert h.register(server, n)
        if n + 1 == snapshot_at:
            store.snapshot(server._journal.stored_state())
    store.close()


def test_bit_flip_at_ten_percent_of_the_journal_refuses_to_start_and_keeps_the_file(tmp_path, caplog):
    fill(tmp_path, 2000)
    journal = tmp_path / "journal-0.msgpack"
    data = bytearray(journal.read_bytes())
    at = len(data) // 10
    data[at] ^= 0xFF
    journal.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING), pytest.raises(StoreError) as error:
        h.core(FileStore(str(tmp_path)), now=h.T0 + 1)
    message = str(error.value)
    assert "journal-0.msgpack" in message and "offset" in message
    assert "torn" not in caplog.text  # not passed off as a crash mid-write
    assert journal.read_bytes() == bytes(data)  # nothing truncated: the 90 % after the damage is still there


def test_a_damaged_journal_is_exit_status_1_with_the_file_named(tmp_path):
    data_dir = tmp_path / "data"
    fill(data_dir, 50)
    journal = data_dir / "journal-0.msgpack"
    data = bytearray(journal.read_bytes())
    data[len(data) // 2] ^= 0x01
    journal.write_bytes(bytes(data))
    config = tmp_path / "ms.yaml"
    config.write_text("map_server:\n  sites:\n    - name: site\n      key: site-secret\n      eid_prefixes:\n"
                      "        - {prefix: 10.0.0.0/8, accept_more_specifics: true}\n")
    proc = subprocess.run([sys.executable, "-m", "lisp_ryu", "mapserver", "--config", str(config), "--listen",
                           "127.0.0.1:0", "--http", "off", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=20, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 1
    assert "journal-0.msgpack" in proc.stderr and "Traceback" not in proc.stderr


def test_flipped_rloc_byte_in_the_snapshot_is_refused_not_served(tmp_path):
    fill(tmp_path, 20, snapshot_at=20)
    snapshot = tmp_path / "snapshot.msgpack"
    data = bytearray(snapshot.read_bytes())
    rloc = bytes([198, 18, 0, 7])  # EID 7's RLOC, 198.18.0.7
    at = data.index(rloc)
    data[at + 3] ^= 0x01  # now 198.18.0.6
    snapshot.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="snapshot.msgpack"):
        h.core(FileStore(str(tmp_path)), now=h.T0 + 1)


def test_deleted_snapshot_with_its_journal_kept_is_refused_not_an_empty_start(tmp_path):
    fill(tmp_path, 30, snapshot_at=20)  # snapshot generation 1 holds 20, journal-1 the last 10
    assert (tmp_path / "journal-1.msgpack").exists()
    (tmp_path / "snapshot.msgpack").unlink()
    with pytest.raises(StoreError, match="journal-1.msgpack"):
        h.core(FileStore(str(tmp_path)), now=h.T0 + 1)
    assert (tmp_path / "journal-1.msgpack").exists()


def test_torn_last_batch_is_dropped_and_everything_before_it_restored(tmp_path, caplog):
    fill(tmp_path, 50)
    journal = tmp_path / "journal-0.msgpack"
    whole = journal.read_bytes()
    store = FileStore(str(tmp_path))
    assert h.register(h.core(store), 50)  # the 51st registration's batch ...
    store.close()
    longer = journal.read_bytes()
    assert len(longer) > len(whole)
    cut = len(whole) + (len(longer) - len(whole)) // 2
    journal.write_bytes(longer[:cut])  # ... killed in the middle of its write
    store = FileStore(str(tmp_path))
    with caplog.at_level(logging.WARNING):
        server = h.core(store, now=h.T0 + 1)
    assert h.registered(server, 50) == 50
    assert f"offset {len(whole)}" in caplog.text
    assert journal.read_bytes() == whole
    assert h.register(server, 60, now=h.T0 + 2)
    store.close()
    assert h.registered(h.core(FileStore(str(tmp_path)), now=h.T0 + 3), 61) == 51


def test_old_format_files_load_once_and_are_rewritten_at_the_next_compaction(tmp_path):
    """Files as the previous version wrote them: a msgpack map snapshot and an unframed journal."""
    fill(tmp_path / "new", 30)
    reference = FileStore(str(tmp_path / "new"))
    entries = reference.load()
    reference.close()
    old = tmp_path / "old"
    old.mkdir()
    (old / "snapshot.msgpack").write_bytes(
        msgpack.packb({"format": 1, "generation": 1, "entries": entries[:20]}, use_bin_type=True))
    (old / "journal-1.msgpack").write_bytes(b"".join(msgpack.packb(e, use_bin_type=True) for e in entries[20:]))
    store = FileStore(str(old))
    server = h.core(store, now=h.T0 + 1)
    assert h.registered(server, 30) == 30
    assert h.register(server, 40, now=h.T0 + 2)  # appended to the old journal, in its format
    store.close()
    store = FileStore(str(old))
    server = h.core(store, now=h.T0 + 3)
    assert h.registered(server, 30) == 30 and h.registered(server, 41) == 31
    store.snapshot(server._journal.stored_state())
    assert h.register(server, 41, now=h.T0 + 4)
    store.close()
    assert not (old / "snapshot.msgpack").read_bytes().startswith(b"\x83")  # no longer the old msgpack map
    assert sorted(os.listdir(old)) == ["journal-2.msgpack", "snapshot.msgpack"]
    assert h.registered(h.core(FileStore(str(old)), now=h.T0 + 5), 42) == 32
