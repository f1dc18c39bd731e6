"""The cluster load tools (lisp_ryu/lab/cluster_load.py) against a real Map-Server loop on loopback."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

import pytest
import yaml

from lisp_ryu.config import parse
from lisp_ryu.glue.mapserver_loop import StandaloneServer
from lisp_ryu.lab import cluster_load
from lisp_ryu.mapserver.service import MapServer

CONFIG = """\
map_server:
  rate_limit_per_source: 1000000
  sites:
    - name: dc3
      key: lisp-lab-key-dc3
      eid_prefixes:
        - {prefix: 10.3.0.0/16, iid: 42, accept_more_specifics: true}
"""
RLOC = ipaddress.ip_address("198.18.3.2")


@pytest.fixture
def server():
    core = MapServer(parse(yaml.safe_load(CONFIG)).map_server, nonces=iter(range(1, 1 << 62)).__next__,
                     now=time.time())
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    loop = StandaloneServer(core, udp)
    thread = threading.Thread(target=loop.serve_forever, daemon=True)
    thread.start()
    yield udp.getsockname()[1]
    loop.stop()
    thread.join(5)
    udp.close()


def eids(n: int):
    return [(42, ipaddress.ip_address("10.3.128.0") + i) for i in range(1, n + 1)]


def test_registrations_acknowledged_then_asked_through_a_silent_resolver_first(server):
    load = cluster_load.RegistrationLoad(None, "127.0.0.1", str(RLOC), "lisp-lab-key-dc3", ["127.0.0.1"], eids(10),
                                         rate=200, port=server).start()
    deadline = time.monotonic() + 5
    while len(load.acked()) < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    load.stop()
    assert set(load.acked()) == set(eids(10)) and load.rejected == 0
    assert all(a.node == ipaddress.ip_address("127.0.0.1") for a in load.acked().values())

    picks = iter(eids(10) * 2)
    requests = cluster_load.RequestLoad(None, "127.0.0.1", ["127.0.0.2", "127.0.0.1"],
                                        lambda: next(((e, RLOC) for e in picks), None), rate=50, timeout=0.2,
                                        port=server).start()
    time.sleep(0.8)
    requests.stop()
    assert len(requests.requests) == 20 and all(r.positive for r in requests.requests)
    first = requests.requests[0]
    assert [str(a) for a in first.resolvers] == ["127.0.0.2", "127.0.0.1"]  # silent one, then the next
    switched = first.issued + 0.2
    later = [r for r in requests.requests if r.issued > switched + 0.05]
    assert later and all([str(a) for a in r.resolvers] == ["127.0.0.1"] for r in later)  # stays there
    gap, _ = requests.gap()
    assert 0.2 <= gap < 1.0


def test_ask_names_what_is_not_answered_with_its_rloc(server):
    load = cluster_load.RegistrationLoad(None, "127.0.0.1", str(RLOC), "lisp-lab-key-dc3", ["127.0.0.1"], eids(3),
                                         rate=200, port=server).start()
    deadline = time.monotonic() + 5
    while len(load.acked()) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    load.stop()
    expected = {e: RLOC for e in eids(3)}
    assert cluster_load.ask(None, "127.0.0.1", "127.0.0.1", expected, server_port=server) == {}
    other = (42, ipaddress.ip_address("10.3.7.7"))  # never registered: a negative answer
    wrong_rloc = {eids(1)[0]: ipaddress.ip_address("198.18.9.9")}
    missing = cluster_load.ask(None, "127.0.0.1", "127.0.0.1", {other: RLOC, **wrong_rloc}, timeout=0.3,
                               retries=0, server_port=server)
    assert set(missing) == {other, eids(1)[0]} and all(why.startswith("answered without") for why in missing.values())
