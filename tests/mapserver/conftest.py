"""A real `lisp-ryu mapserver` process on 127.0.0.1 with ephemeral ports and a temporary data dir."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

READY = re.compile(r"udp 127\.0\.0\.1:(\d+) http http://127\.0\.0\.1:(\d+)")
START_TIMEOUT = 30.0

CONFIG = """\
map_server:
  rate_limit_per_source: {rate}
  notify_retries: 2
  notify_retry_interval: 0.5
  sites:
    - name: dc1
      key: dc1-secret
      eid_prefixes:
        - {{prefix: 10.1.0.0/16}}
        - {{prefix: 10.10.0.0/16, iid: 42, accept_more_specifics: true}}
    - name: dc2
      key: dc2-secret
      eid_prefixes:
        - {{prefix: 10.2.0.0/16}}
"""


class MapServerProcess:
    """Start, kill and restart the server; it reports the ports it bound on its first line."""

    def __init__(self, workdir: Path, rate: float = 100000.0) -> None:
        self.workdir = workdir
        self.config = workdir / "mapserver.yaml"
        self.config.write_text(CONFIG.format(rate=rate))
        self.data_dir = workdir / "data"
        self.log = workdir / "mapserver.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.http_port = 0

    def start(self) -> "MapServerProcess":
        argv = [sys.executable, "-m", "lisp_ryu", "mapserver", "--config", str(self.config), "--listen",
                "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", str(self.data_dir)]
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        match = READY.search(line)
        if not match:
            self.kill()
            raise RuntimeError(f"mapserver did not start: {line!r}\n{self.log.read_text()}")
        self.port, self.http_port = int(match.group(1)), int(match.group(2))
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, resource: str) -> dict:
        with urllib.request.urlopen(f"{self.url}/lisp/v1/{resource}?limit=100000", timeout=10) as response:
            return json.load(response)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def stop(self) -> int:
        proc = self.proc
        self.kill(signal.SIGTERM)
        return proc.returncode if proc else 0


class Client:
    """A UDP socket standing in for an xTR."""

    def __init__(self, server: MapServerProcess, address: str = "127.0.0.1") -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.address, self.port = self.sock.getsockname()

    def send(self, payload: bytes) -> None:
        self.sock.sendto(payload, ("127.0.0.1", self.server.port))

    def receive(self, timeout: float = 5.0) -> bytes | None:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        return self.sock.recv(65535) if ready else None

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def mapserver(tmp_path):
    server = MapServerProcess(tmp_path).start()
    yield server
    server.kill()


@pytest.fixture
def client(mapserver):
    c = Client(mapserver)
    yield c
    c.close()
