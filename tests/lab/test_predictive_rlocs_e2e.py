"""End to end: predictive RLOCs from another vendor's ETR, replicated by our ITR on real OVS.

A third-party ETR (a raw Map-Register sent from the core router's namespace, with its own
xTR-ID and dc2's key) registers h4's host route with a Replication List Entry (RFC 8060 LCAF
13; draft-ietf-lisp-predictive-rlocs) naming dc2 and dc3, and dc2's plain RLOC behind it at a
worse priority.  dc1, resolving h4 through the embedded Map-Server, then sends every packet to
both: dc2 delivers it, dc3 (which does not hold h4) drops its copy.  When the ETR registers
the plain RLOC alone, the publication ends the replication.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time

import pytest

from lisp_ryu.lab import capture, running
from lisp_ryu.lab.controller_config import site_key
from lisp_ryu.wire import Locator, MapNotify, MappingRecord, ReplicationList, RleEntry, decode_message
from lisp_ryu.wire.prefix import EidPrefix

from conftest import controller_lab, dump_lab_on_failure, private_lab
from support import packets

pytestmark = [pytest.mark.lab]

ip = ipaddress.ip_address
DC2, DC3 = ip("198.18.2.2"), ip("198.18.3.2")
ETR_ADDRESS, MS_ADDRESS = "198.18.0.1", "198.18.0.2"  # the core router's address towards the Map-Server
TARGET = "10.2.0.11"  # h4, at dc2
FOREIGN_XTR_ID = 0xF0F0_0000_0000_0000_0000_0000_0000_0001

_SEND = r"""
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 4342))
sock.settimeout(3.0)
sock.sendto(bytes.fromhex(sys.argv[3]), (sys.argv[2], 4342))
print(sock.recvfrom(65535)[0].hex())
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory, module_monkeypatch):
    env, topo_file = private_lab(tmp_path_factory, module_monkeypatch, "predictive", "pr-", "three-dc.yaml",
                                 "198.19.224.0/24", 6731)
    with controller_lab(env, topo_file) as state:
        yield state


@pytest.fixture(autouse=True)
def flows_on_failure(request, lab):
    yield
    dump_lab_on_failure(request, lab)


def register(lab, locators, nonce: int) -> MapNotify:
    """The foreign ETR's Map-Register (proxy reply, want Map-Notify); returns the Map-Server's Map-Notify."""
    key = site_key(lab.site("dc2"))
    record = MappingRecord.for_prefix(EidPrefix.from_network(f"{TARGET}/32", 42), tuple(locators), ttl=10)
    payload = packets.map_register([record], key, nonce=nonce, proxy=True, want_notify=True, xtr_id=FOREIGN_XTR_ID)
    out = running.exec_in("core", [sys.executable, "-c", _SEND, ETR_ADDRESS, MS_ADDRESS, payload.hex()],
                          state=lab, check=False)
    assert out.returncode == 0, out.stderr
    notify = decode_message(bytes.fromhex(out.stdout.strip()))
    assert isinstance(notify, MapNotify) and notify.nonce == nonce, notify
    return notify


def copies_at_dc3(lab, tmp_path, count: int) -> list[str]:
    """h1 pings h4 `count` times; the LISP-GPE data for h4 that reached dc3's first uplink meanwhile,
    as Wireshark decodes it (the inner destination of each)."""
    dc3 = lab.site("dc3")
    pcap = tmp_path / f"dc3-{count}.pcap"
    with capture.Capture(dc3.namespace, dc3.rlocs[0].uplink, f"udp dst port 4341 and {capture.GPE_DATA}", pcap,
                         count=count, timeout=2):
        out = ping(lab, count)
    assert out.returncode == 0 and " 0% packet loss" in out.stdout, out.stdout
    assert "DUP!" not in out.stdout, out.stdout  # dc3 holds no h4: its copies are dropped, not delivered
    decoded = capture.decode(pcap)
    return [line for line in decoded.splitlines() if f"Dst: {TARGET}" in line and "Internet Protocol" in line]


def ping(lab, count: int) -> subprocess.CompletedProcess:
    return running.exec_in("h1", ["ping", "-n", "-c", str(count), "-i", "0.05", "-W", "2", TARGET],
                           state=lab, check=False)


def dc1_groups(lab) -> list[str]:
    return [line for line in running.ofctl("dc1", "dump-groups", state=lab).splitlines() if "group_id=" in line]


def test_predictive_rlocs_replicate_to_each_rloc_and_end_with_the_mapping(lab, tmp_path):
    rle = ReplicationList((RleEntry(DC2), RleEntry(DC3)))
    register(lab, (Locator(rle, priority=1), Locator(DC2, priority=2)), nonce=1)

    assert len(copies_at_dc3(lab, tmp_path, 20)) >= 19  # the first may be re-injected before the group is
    alls = [g for g in dc1_groups(lab) if "type=all" in g]
    assert len(alls) == 1, dc1_groups(lab)
    assert f"set_field:{DC2}->tun_dst" in alls[0] and f"set_field:{DC3}->tun_dst" in alls[0], alls

    # The ETR settles on dc2 alone: the Map-Server publishes it to dc1 (subscribed), the group goes.
    register(lab, (Locator(DC2, priority=1),), nonce=2)
    deadline = time.monotonic() + 5
    while any("type=all" in g for g in dc1_groups(lab)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any("type=all" in g for g in dc1_groups(lab)), dc1_groups(lab)
    assert copies_at_dc3(lab, tmp_path, 10) == []  # no copy to dc3 any more
