"""`lisp-ryu mapserver --store etcd://... --token T`: two real processes on a real 3-member etcd.
A static mapping written over HTTP at one is answered by the other; kill -9 of the first loses
nothing it acknowledged."""

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

import pytest

from lisp_ryu.wire import MapReply, decode_message
from support import packets
from support.mapserver_nodes import CONFIG, wait_until

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(90)]

READY = re.compile(r"udp 127\.0\.0\.1:(\d+) http http://127\.0\.0\.1:(\d+)")
TOKEN = "cli-token"


class Process:
    def __init__(self, tmp_path, endpoints, name):
        config = tmp_path / f"{name}.yaml"
        config.write_text(CONFIG.format(ttl=180))
        self.log = tmp_path / f"{name}.log"
        argv = [sys.executable, "-m", "lisp_ryu", "mapserver", "--config", str(config), "--listen", "127.0.0.1:0",
                "--http", "127.0.0.1:0", "--store", "etcd://" + ",".join(endpoints), "--node-id", name,
                "--token", TOKEN]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        match = READY.search(line)
        assert match, f"{name} did not start: {line!r}\n{self.log.read_text()}"
        self.port, http = int(match.group(1)), int(match.group(2))
        self.url = f"http://127.0.0.1:{http}/lisp/v1"

    def write(self, method, path, body):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method=method,
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return json.load(response)

    def resolve(self, eid, nonce):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(1)
        try:
            sock.sendto(packets.map_request_ecm(eid, ["127.0.0.1"], nonce=nonce, source_port=sock.getsockname()[1]),
                        ("127.0.0.1", self.port))
            reply = decode_message(sock.recv(65535))
        except socket.timeout:
            return None
        finally:
            sock.close()
        return [str(loc.address) for loc in reply.records[0].locators] if isinstance(reply, MapReply) else None

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(10)


def test_http_write_at_one_process_answered_by_another_and_kept_after_kill_9(tmp_path, etcd_cluster):
    one = Process(tmp_path, etcd_cluster.endpoints, "one")
    two = Process(tmp_path, etcd_cluster.endpoints[1:] + etcd_cluster.endpoints[:1], "two")
    try:
        status, body = one.write("PUT", "/static-mappings/0/10.20.0.0/16", {"rlocs": [{"address": "192.0.2.20"}]})
        assert status == 200, body
        assert wait_until(lambda: two.resolve("10.20.1.1", 1) == ["192.0.2.20"], timeout=3)
        assert [m["prefix"] for m in two.get("/static-mappings")["static_mappings"]] == ["10.20.0.0/16"]
        counters = two.get("/counters")["counters"]
        assert counters.get("cluster.replica.batches", 0) >= 1
        assert wait_until(lambda: one.get("/counters")["counters"].get("cluster.expiry.holder", 0)
                          + two.get("/counters")["counters"].get("cluster.expiry.holder", 0) == 1, timeout=5)
        one.stop(signal.SIGKILL)
        three = Process(tmp_path, etcd_cluster.endpoints, "three")
        try:
            assert three.resolve("10.20.1.1", 2) == ["192.0.2.20"]
        finally:
            three.stop()
    finally:
        one.stop()
        two.stop()
    assert "Traceback" not in one.log.read_text() + two.log.read_text()
