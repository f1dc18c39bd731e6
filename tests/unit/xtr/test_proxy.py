"""The PxTR role: a real xTR core with a proxy section, its compiled flows walked by the simulator."""

import ipaddress
import itertools
import random

import pytest
import yaml

from lisp_ryu import config
from lisp_ryu.effects import SendControl
from lisp_ryu.flows.compiler import compile_plan
from support.simulate import walk
from lisp_ryu.wire.prefix import EidPrefix
from lisp_ryu.wire import Locator, MappingRecord, MapReply, decode_message
from lisp_ryu.xtr.core import XtrCore

ip = ipaddress.ip_address
MS = ip("198.18.0.2")
NATIVE = 5
ROUTER_MAC = "02:00:00:00:00:fe"
NEXT_HOP_MAC = "02:4c:6c:12:09:01"

PXTR = """
xtrs:
  - name: px
    dpid: 9
    rlocs: [{address: 198.18.9.2}]
    tunnel_port: 100
    native_port: 5
    map_servers: [{address: 198.18.0.2, key: s3cret}]
    proxy: {iid: 42, prefixes: [10.0.0.0/8], address: 198.18.19.2, next_hop_mac: "02:4c:6c:12:09:01"}
"""


@pytest.fixture
def pxtr():
    cfg = config.parse(yaml.safe_load(PXTR)).xtrs[0]
    counter = itertools.count(1)
    return XtrCore(cfg, nonces=lambda: next(counter), rng=random.Random(1))


def from_internet(dst):
    return {"in_port": NATIVE, "eth_type": 0x0800, "ipv4_src": "203.0.113.10", "ipv4_dst": dst}


def test_proxy_itr_sends_eid_traffic_from_the_native_side_to_the_controller_and_nothing_else(pxtr):
    state = compile_plan(pxtr.plan())
    assert walk(state, from_internet("10.3.0.10")).ports == ["controller"]  # a miss: resolve it
    assert walk(state, from_internet("192.0.2.77")).dropped  # not ours to attract: no loops


def test_proxy_itr_resolves_with_the_p_bit_and_encapsulates_after_the_reply(pxtr):
    effects = pxtr.handle_miss(NATIVE, 42, ip("203.0.113.10"), ip("10.3.0.10"), b"pkt", 0.0)
    (send,) = [e for e in effects if isinstance(e, SendControl)]
    request = decode_message(send.payload).message
    assert request.pitr and request.records[0].eid_prefix == EidPrefix.from_network("10.3.0.10/32", 42)
    record = MappingRecord.for_prefix(EidPrefix.from_network("10.3.0.0/16", 42), (Locator(ip("198.18.3.2")),))
    pxtr.handle_control(MapReply(nonce=request.nonce, records=(record,)).encode(), MS, 4342, 0.1)
    (d,) = walk(compile_plan(pxtr.plan()), from_internet("10.3.0.10")).deliveries
    assert d.port == 100 and d.packet["tun_ipv4_dst"] == "198.18.3.2" and d.packet["tunnel_id"] == 42


def test_proxy_etr_decapsulates_and_forwards_natively_to_the_next_hop(pxtr):
    arriving = {"in_port": 100, "tunnel_id": 42, "eth_type": 0x0800, "ipv4_src": "10.1.0.10",
                "ipv4_dst": "203.0.113.10"}
    (d,) = walk(compile_plan(pxtr.plan()), arriving).deliveries
    assert d.port == NATIVE and d.packet["eth_dst"] == NEXT_HOP_MAC and d.packet["eth_src"] == ROUTER_MAC
    other_tenant = {**arriving, "tunnel_id": 7}
    assert walk(compile_plan(pxtr.plan()), other_tenant).dropped


def test_proxy_answers_arp_for_its_native_address_only(pxtr):
    state = compile_plan(pxtr.plan())
    ask = {"in_port": NATIVE, "eth_type": 0x0806, "arp_op": 1, "arp_spa": "198.18.19.1",
           "arp_tpa": "198.18.19.2", "eth_src": NEXT_HOP_MAC, "arp_sha": NEXT_HOP_MAC}
    (d,) = walk(state, ask).deliveries
    assert d.port == "in_port" or d.port == NATIVE
    assert d.packet["arp_op"] == 2 and d.packet["arp_sha"] == ROUTER_MAC and d.packet["arp_spa"] == "198.18.19.2"
    assert walk(state, {**ask, "arp_tpa": "198.18.19.9"}).dropped


def test_pxtr_registers_nothing(pxtr):
    assert pxtr.local_records() == ()
    assert [e for e in pxtr.start(0.0) if isinstance(e, SendControl)] == []


def test_proxy_without_native_port_is_a_config_error():
    with pytest.raises(config.ConfigError, match=r"xtrs\[0\]\.native_port: is required with proxy"):
        config.parse(yaml.safe_load(PXTR.replace("    native_port: 5\n", "")))
    with pytest.raises(config.ConfigError, match=r"xtrs\[0\]\.proxy\.prefixes"):
        config.parse(yaml.safe_load(PXTR.replace("prefixes: [10.0.0.0/8], ", "")))
