"""The standalone Map-Server's HTTP writes (policies, RLOC overrides, static mappings), without etcd:
the real server loop and HTTP endpoint in a thread, real sockets on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml

from lisp_ryu.config import parse
from lisp_ryu.glue.mapserver_loop import StandaloneServer
from lisp_ryu.mapserver.service import MapServer
from lisp_ryu.wire import MapReply, decode_message
from support import packets

TOKEN = "s3cret"
CONFIG = """\
map_server:
  sites:
    - name: dc1
      key: dc1-secret
      eid_prefixes:
        - {prefix: 10.0.0.0/8, accept_more_specifics: true}
"""


@pytest.fixture
def server():
    core = MapServer(parse(yaml.safe_load(CONFIG)).map_server, nonces=iter(range(1, 1 << 40)).__next__,
                     now=time.time())
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    http = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    http.bind(("127.0.0.1", 0))
    http.listen(8)
    loop = StandaloneServer(core, udp, http, token=TOKEN)
    thread = threading.Thread(target=loop.serve_forever, daemon=True)
    thread.start()
    loop.url = f"http://127.0.0.1:{http.getsockname()[1]}/lisp/v1"
    loop.udp_port = udp.getsockname()[1]
    yield loop
    loop.stop()
    udp.sendto(b"", udp.getsockname())  # wakes the loop up
    thread.join(3)
    udp.close()
    http.close()


def call(server, method, path, body=None, token=TOKEN):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def resolve(server, eid: str) -> list[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    sock.sendto(packets.map_request_ecm(eid, ["127.0.0.1"], nonce=7, source_port=sock.getsockname()[1]),
                ("127.0.0.1", server.udp_port))
    reply = decode_message(sock.recv(65535))
    sock.close()
    assert isinstance(reply, MapReply)
    return [str(loc.address) for loc in reply.records[0].locators]


def test_static_mapping_put_answered_then_deleted(server):
    status, body = call(server, "PUT", "/static-mappings/0/10.9.0.0/16", {"rlocs": [{"address": "192.0.2.9"}]})
    assert status == 200 and body["static_mapping"]["prefix"] == "10.9.0.0/16"
    assert resolve(server, "10.9.1.1") == ["192.0.2.9"]
    assert call(server, "GET", "/static-mappings")[1]["static_mappings"][0]["prefix"] == "10.9.0.0/16"
    status, body = call(server, "POST", "/static-mappings",
                        {"iid": 0, "prefix": "10.9.0.0/16", "rlocs": [{"address": "192.0.2.9"}]})
    assert status == 409
    assert call(server, "DELETE", "/static-mappings/0/10.9.0.0/16")[0] == 200
    assert resolve(server, "10.9.1.1") == []
    assert call(server, "DELETE", "/static-mappings/0/10.9.0.0/16")[0] == 404


def test_rules_and_overrides(server):
    status, body = call(server, "POST", "/policies",
                        {"id": "deny-9", "iid": 0, "destinations": ["10.9.0.0/16"], "action": "deny"})
    assert status == 201 and body["rule"]["id"] == "deny-9"
    assert call(server, "GET", "/policies")[1]["rules"][0]["id"] == "deny-9"
    assert call(server, "PUT", "/rloc-overrides/drain", {"rloc": "192.0.2.2", "weight": 0})[0] == 200
    assert call(server, "DELETE", "/policies/deny-9")[0] == 200
    assert call(server, "DELETE", "/policies/deny-9")[0] == 404
    assert call(server, "DELETE", "/rloc-overrides/drain")[0] == 200


def test_refusals_name_what_is_wrong(server):
    status, body = call(server, "PUT", "/policies/x", {"iid": 0, "destinations": ["10.9.0.0/16"], "action": "nope"})
    assert status == 400 and body["field"] == "action"
    assert call(server, "PUT", "/policies/x", {"iid": 0}, token=None)[0] == 401
    assert call(server, "PUT", "/policies/x", {"iid": 0}, token="wrong")[0] == 403
    assert call(server, "POST", "/counters", {})[0] == 405
    assert call(server, "POST", "/nothing", {})[0] == 404
    assert call(server, "GET", "/policies")[1]["rules"] == []  # nothing refused changed anything
