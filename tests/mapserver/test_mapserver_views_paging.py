"""The standalone server's paged views over real HTTP, and `lisp-ryu show` following `next`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from lisp_ryu.wire import MapNotify, decode_message

from conftest import Client
from support import packets

pytestmark = pytest.mark.slow

COUNT = 2500


def _register_many(client: Client, count: int) -> None:
    hosts = [f"10.10.{n // 256}.{n % 256}/32" for n in range(count)]
    for batch, start in enumerate(range(0, count, 50)):
        records = [packets.record(h, ["198.18.1.1"], iid=42) for h in hosts[start:start + 50]]
        client.send(packets.map_register(records, "dc1-secret", nonce=batch + 1, proxy=True, want_notify=True))
        assert isinstance(decode_message(client.receive()), MapNotify)


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _show(mapserver, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "lisp_ryu", "show", "registrations", "--url", mapserver.url, *args],
                          capture_output=True, text=True, check=True, timeout=60).stdout


def test_pages_are_capped_and_show_follows_next(mapserver, client):
    _register_many(client, COUNT)
    base = f"{mapserver.url}/lisp/v1/registrations"
    status, page = _get(f"{base}?limit=10000000")
    assert status == 200 and page["limit"] == 1000 and len(page["registrations"]) == 1000
    assert page["total"] == COUNT and page["next"] == "[42]10.10.3.231/32"
    status, page = _get(f"{base}?limit=600&after={urllib.request.quote(page['next'])}")
    assert page["registrations"][0]["prefix"] == "10.10.3.232/32" and len(page["registrations"]) == 600
    assert _get(f"{base}?after=10.0.0.0/8")[0] == 400
    assert _get(f"{base}?limit=-1")[0] == 400
    assert len(_get(f"{base}")[1]["registrations"]) == 100  # the default

    shown = _show(mapserver)
    assert f"{COUNT} of {COUNT} registered prefixes" in shown
    assert shown.count("10.10.") == COUNT and shown.count("eid-prefix") == 1  # one header, every row
    assert f"1200 of {COUNT} registered prefixes" in _show(mapserver, "--limit", "1200")
    merged = json.loads(_show(mapserver, "--json"))
    assert len({r["prefix"] for r in merged["registrations"]}) == COUNT
    counters = mapserver.get("counters")["counters"]
    assert counters["server.http_limit_capped"] == 1


def test_http10_and_a_full_house_of_idle_connections(mapserver, client):
    _register_many(client, 200)
    idle = [socket.create_connection(("127.0.0.1", mapserver.http_port), timeout=5) for _ in range(100)]
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", mapserver.http_port), timeout=10) as sock:
            sock.sendall(b"GET /lisp/v1/registrations?limit=150 HTTP/1.0\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"chunked" not in head
        assert len(json.loads(body)["registrations"]) == 150
    finally:
        for sock in idle:
            sock.close()
    counters = mapserver.get("counters")["counters"]
    assert counters["server.http_closed.evicted_idle"] >= 100 - 64
    assert "evicted" in mapserver.log.read_text() or "oldest one still sending" in mapserver.log.read_text()


def test_a_request_never_finished_is_closed(mapserver):
    with socket.create_connection(("127.0.0.1", mapserver.http_port), timeout=10) as sock:
        sock.sendall(b"GET /lisp/v1/counters HTTP/1.1\r\n")
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - started < 5
    assert mapserver.get("counters")["counters"]["server.http_closed.request_timeout"] == 1
