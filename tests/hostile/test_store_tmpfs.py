"""Hostile persistence on a real full disk: a `lisp-ryu mapserver` process on a 2 MB tmpfs.

Needs root (mount), so marked `lab`: run under the lock,
`flock /tmp/lisp-lab.lock pytest tests/hostile/test_store_tmpfs.py -m lab`.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from lisp_ryu.wire import MapNotify, MapReply, decode_message

from support import packets
from support import store_hostile as h

pytestmark = pytest.mark.lab

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
READY = re.compile(r"udp 127\.0\.0\.1:(\d+) http http://127\.0\.0\.1:(\d+)")
CONFIG = ("map_server:\n  rate_limit_per_source: 1000000\n  sites:\n    - name: site\n      key: site-secret\n"
          "      eid_prefixes:\n        - {prefix: 10.0.0.0/8, accept_more_specifics: true}\n")


class Server:
    def __init__(self, workdir, data_dir) -> None:
        self.config = workdir / "ms.yaml"
        self.config.write_text(CONFIG)
        self.data_dir, self.log = data_dir, workdir / "mapserver.log"
        self.proc: subprocess.Popen | None = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)

    def start(self) -> "Server":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lisp_ryu", "mapserver", "--config", str(self.config), "--listen",
                 "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", str(self.data_dir)],
                stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO,
                env={**os.environ, "PYTHONPATH": REPO, "PYTHONUNBUFFERED": "1"})
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        match = READY.search(self.proc.stdout.readline() if ready else "")
        assert match, self.log.read_text()
        self.port, self.http = int(match.group(1)), int(match.group(2))
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc is not None:
            self.proc.stdout.close()
        self.proc = None

    def get(self, resource: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/lisp/v1/{resource}", timeout=10) as response:
            return json.load(response)

    def exchange(self, payload: bytes, timeout: float = 0.2):
        self.sock.sendto(payload, ("127.0.0.1", self.port))
        ready, _, _ = select.select([self.sock], [], [], timeout)
        return decode_message(self.sock.recv(65535)) if ready else None

    def register(self, n: int) -> bool:
        payload = packets.map_register([packets.record(h.eid(n), [h.rloc(n)])], h.KEY, nonce=n + 1,
                                       want_notify=True, proxy=True)
        return isinstance(self.exchange(payload), MapNotify)

    def answers(self, n: int) -> bool:
        port = self.sock.getsockname()[1]
        reply = self.exchange(packets.map_request_ecm(h.eid(n).split("/")[0], ["127.0.0.1"], nonce=n + 7,
                                                      source_port=port))
        return isinstance(reply, MapReply) and [str(loc.address) for loc in reply.records[0].locators] == [h.rloc(n)]


@pytest.fixture
def tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_2mb_tmpfs_refuses_registrations_keeps_answering_recovers_and_loses_nothing(tmp_path, tmpfs):
    ballast = tmpfs / "ballast"
    ballast.write_bytes(b"\0" * 1_300_000)  # freed later: "the operator cleaned up"
    server = Server(tmp_path, tmpfs / "data").start()
    try:
        acknowledged, refused_in_a_row, n, started = [], 0, 0, time.monotonic()
        while refused_in_a_row < 10 and time.monotonic() - started < 15:
            if server.register(n):
                acknowledged.append(n)
                refused_in_a_row = 0
            else:
                refused_in_a_row += 1
            n += 1
        assert refused_in_a_row == 10, f"the disk never filled ({len(acknowledged)} registered)"
        health = server.get("health")
        assert health["status"] == "degraded" and "ENOSPC" in health["store"]
        assert all(server.answers(k) for k in acknowledged[-20:])  # answers go on while full
        assert not server.answers(n - 1)  # ... and what was refused is not served
        counters = server.get("counters")["counters"]
        assert counters["rejected.map_register.journal-down"] >= 9
        ballast.unlink()
        deadline = time.monotonic() + 20
        while server.get("health")["status"] != "ok" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.get("health")["status"] == "ok", "no recovery once space was freed"
        for k in range(n, n + 20):
            assert server.register(k)
            acknowledged.append(k)
        server.kill()
        server.start()
        assert server.get("health")["map_server"]["registrations"] == len(acknowledged)
        assert all(server.answers(k) for k in acknowledged[::50] + acknowledged[-25:])
        log = server.log.read_text()
        assert "Traceback" not in log
        assert log.count("cannot write the journal") == 1
    finally:
        server.kill()
        server.sock.close()


def test_a_read_only_data_dir_is_refused_at_start_with_a_clear_error(tmp_path, tmpfs):
    (tmpfs / "data").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    (tmp_path / "ms.yaml").write_text(CONFIG)
    proc = subprocess.run([sys.executable, "-m", "lisp_ryu", "mapserver", "--config", str(tmp_path / "ms.yaml"),
                           "--listen", "127.0.0.1:0", "--http", "off", "--data-dir", str(tmpfs / "data")],
                          capture_output=True, text=True, timeout=20, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 1
    assert "not writable" in proc.stderr and "EROFS" in proc.stderr and "Traceback" not in proc.stderr
