"""The standalone server over real UDP: register, resolve, introspect, survive kill -9, shrug off garbage."""

from __future__ import annotations

import ipaddress
import os
import random
import subprocess
import sys

import pytest

from lisp_ryu.wire import MapNotify, MapReply, decode_message

from conftest import Client, MapServerProcess
from support import packets

pytestmark = pytest.mark.slow


def register(client: Client, prefix: str, rloc: str, nonce: int, iid: int = 0, key: str = "dc1-secret",
             **kw) -> bytes:
    payload = packets.map_register([packets.record(prefix, [rloc], iid=iid)], key, nonce=nonce, proxy=True,
                                   want_notify=True, **kw)
    client.send(payload)
    return payload


def request(client: Client, eid: str, nonce: int, iid: int = 0) -> None:
    client.send(packets.map_request_ecm(eid, [client.address], iid=iid, nonce=nonce, source_port=client.port))


def test_register_resolve_and_introspect(mapserver, client):
    register(client, "10.1.0.0/16", "198.18.1.1", nonce=1)
    notify = decode_message(client.receive())
    assert isinstance(notify, MapNotify) and notify.nonce == 1
    request(client, "10.1.2.3", nonce=2)
    reply = decode_message(client.receive())
    assert isinstance(reply, MapReply) and reply.nonce == 2
    assert [str(loc.address) for loc in reply.records[0].locators] == ["198.18.1.1"]
    request(client, "10.2.0.9", nonce=3)  # configured, unregistered
    negative = decode_message(client.receive())
    assert (str(negative.records[0].eid_prefix), negative.records[0].ttl) == ("10.2.0.0/16", 1)

    regs = mapserver.get("registrations")
    assert regs["total"] == 1
    [entry] = regs["registrations"]
    assert (entry["prefix"], entry["site"], entry["iid"]) == ("10.1.0.0/16", "dc1", 0)
    assert entry["etrs"][0]["source"] == f"127.0.0.1:{client.port}"
    counters = mapserver.get("counters")["counters"]
    assert counters["accepted.map_register"] == 1
    assert counters["sent.map_reply"] == 1 and counters["sent.map_reply_negative"] == 1

    shown = subprocess.run([sys.executable, "-m", "lisp_ryu", "show", "registrations", "--url", mapserver.url],
                           capture_output=True, text=True, check=True).stdout
    assert "10.1.0.0/16" in shown and "198.18.1.1(1/100)" in shown and "dc1" in shown
    shown = subprocess.run([sys.executable, "-m", "lisp_ryu", "show", "counters", "--url", mapserver.url],
                           capture_output=True, text=True, check=True).stdout
    assert "accepted.map_register" in shown
    assert "answer cache: 0 of 65536 hosts, 0 hits, 1 misses, emptied 0 times" in shown


def test_bad_http_requests_get_clear_errors(mapserver):
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{mapserver.url}/lisp/v1/nothing", timeout=5)
    assert info.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(f"{mapserver.url}/lisp/v1/counters", data=b"x"), timeout=5)
    assert info.value.code == 405


def test_show_reports_an_unreachable_server(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lisp_ryu", "show", "counters", "--url", "http://127.0.0.1:9"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "cannot read" in out.stderr


def test_kill_minus_9_mid_burst_loses_no_acknowledged_registration(tmp_path):
    server = MapServerProcess(tmp_path).start()
    client = Client(server)
    try:
        burst = 3000
        prefixes = {n: f"10.10.{n // 256}.{n % 256}/32" for n in range(1, burst + 1)}
        acknowledged: set[int] = set()
        sent = 0
        while len(acknowledged) < burst // 4:  # keep ~200 registers in flight, as a busy site would
            while sent < burst and sent - len(acknowledged) < 200:
                sent += 1
                register(client, prefixes[sent], "198.18.1.1", nonce=sent, iid=42)
            data = client.receive(timeout=10)
            assert data is not None, "the server stopped acknowledging"
            acknowledged.add(decode_message(data).nonce)
        server.kill()  # SIGKILL in the middle of the burst
        while (data := client.receive(timeout=0.5)) is not None:  # Notifies it sent before dying count too
            acknowledged.add(decode_message(data).nonce)
        assert len(acknowledged) < burst, "the burst finished before the kill: the test proves nothing"

        server.start()  # same data dir
        missing = []
        for n in sorted(acknowledged):
            request(client, prefixes[n].split("/")[0], nonce=n, iid=42)
            data = client.receive(timeout=5)
            reply = decode_message(data) if data else None
            if not isinstance(reply, MapReply) or reply.nonce != n or not reply.records[0].locators:
                missing.append(prefixes[n])
        assert missing == []
        restored = server.get("counters")["counters"]["restore.registrations"]
        assert restored >= len(acknowledged)
    finally:
        client.close()
        server.kill()


def test_garbage_flood_from_one_source_does_not_starve_another(tmp_path):
    server = MapServerProcess(tmp_path, rate=200.0).start()
    flooder = Client(server, "127.0.0.2")
    client = Client(server)
    rng = random.Random(7)
    try:
        register(client, "10.1.0.0/16", "198.18.1.1", nonce=1)
        assert isinstance(decode_message(client.receive()), MapNotify)
        answered = 0
        for round_ in range(40):
            for _ in range(250):
                flooder.send(os.urandom(rng.randint(0, 300)))
            # A truncated and a bit-flipped valid message, from the flooder too.
            flooder.send(packets.map_request_ecm("10.1.2.3", ["127.0.0.2"])[:30])
            request(client, "10.1.2.3", nonce=1000 + round_)
            while (data := client.receive(timeout=5)) is not None:
                reply = decode_message(data)
                if isinstance(reply, MapReply) and reply.nonce == 1000 + round_:
                    answered += 1
                    break
        assert answered == 40
        counters = server.get("counters")["counters"]
        assert counters["dropped.rate_limited"] > 0
        assert counters["dropped.malformed"] + counters.get("dropped.unexpected_type", 0) > 0
        assert counters.get("server.core_exceptions", 0) == 0
    finally:
        flooder.close()
        client.close()
        server.kill()


def test_sigterm_stops_cleanly(mapserver):
    assert mapserver.stop() == 0


@pytest.mark.tshark
def test_every_reply_decodes_in_wireshark(tmp_path, mapserver, client):
    """One short conversation captured on loopback and decoded by tshark's LISP dissector."""
    from lisp_ryu.lab.capture import Capture, decode

    pcap = tmp_path / "conversation.pcap"
    etr = Client(mapserver, "127.0.0.3")
    try:
        with Capture(None, "lo", f"udp port {mapserver.port}", pcap, count=8, timeout=10):
            register(etr, "10.10.0.5/32", "198.18.1.1", nonce=11, iid=42, xtr_id=0x77)  # -> Map-Notify
            assert etr.receive() is not None
            client.send(packets.map_request_ecm("10.10.0.5", [client.address], iid=42, nonce=12,
                                                source_port=client.port, subscribe=True, xtr_id=0x99))
            replies = [client.receive(), client.receive()]  # Map-Reply + subscription Map-Notify
            assert all(replies)
            request(client, "10.2.0.1", nonce=13)  # negative Map-Reply
            assert client.receive() is not None
        text = decode(pcap, "-d", f"udp.port=={mapserver.port},lisp", "-V")
    finally:
        etr.close()
    assert "Malformed" not in text and "[Expert Info (Error" not in text
    for expected in ("Map-Register", "Map-Notify", "Encapsulated Control Message", "Map-Reply",
                     "Nonce: 0x000000000000000c", "EID Prefix: [42] 10.10.0.5/32", "Instance ID: 42",
                     "EID Prefix: 10.2.0.0/16, TTL: 1, Action: Natively-Forward"):
        assert expected in text, expected
    assert text.count("Map-Reply") >= 2
    assert ipaddress.ip_address("198.18.1.1").exploded in text
