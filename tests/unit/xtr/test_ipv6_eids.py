"""IPv6 EIDs over IPv4 RLOCs in the xTR core: misses, SMR-invoked requests, dual-stack learning."""

import ipaddress
import itertools

import pytest
import yaml

from lisp_ryu import config
from lisp_ryu.effects import SendControl
from lisp_ryu.wire.control import decode_message
from lisp_ryu.wire.ecm import EncapsulatedControlMessage
from lisp_ryu.wire.messages import MapRegister, MapReply, MapRequest
from lisp_ryu.wire.prefix import EidPrefix
from lisp_ryu.wire.records import Locator, MappingRecord, MapRequestRecord
from lisp_ryu.xtr.core import XtrCore
from support.effects import as_the_glue_runs

ip = ipaddress.ip_address
MS = ip("198.18.0.2")
RLOC = ip("198.18.1.2")

CONFIG = """
xtrs:
  - name: dc1
    dpid: 1
    rlocs: [{address: 198.18.1.2}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}, {prefix: "fd00:1::/64", iid: 42}]
    map_servers: [{address: 198.18.0.2, key: s3cret}]
    gateways: [{subnet: 10.1.0.0/16, ip: 10.1.0.1, mac: "02:4c:67:01:00:01", iid: 42},
               {subnet: "fd00:1::/64", ip: "fd00:1::1", mac: "02:4c:67:00:00:01", iid: 42}]
    hosts: [{ip: 10.1.0.10, mac: "02:4c:68:01:00:0a", port: 1, iid: 42},
            {ip: "fd00:1::10", mac: "02:4c:68:01:00:0a", port: 1, iid: 42}]
    dynamic_eid_prefixes: [{prefix: "fd00::/16", iid: 42}]
"""


@pytest.fixture
def xtr():
    counter = itertools.count(1000)
    return XtrCore(config.parse(yaml.safe_load(CONFIG)).xtrs[0], nonces=lambda: next(counter))


def sends(effects):
    return [e for e in effects if isinstance(e, SendControl)]


def test_both_families_are_registered(xtr):
    (send,) = sends(xtr.start(0.0))
    reg = decode_message(send.payload)
    assert isinstance(reg, MapRegister)
    assert sorted(str(r.eid_prefix) for r in reg.records) == ["[42]10.1.0.0/16", "[42]fd00:1::/64"]


def test_a_miss_for_an_ipv6_eid_asks_in_an_ecm_with_an_ipv6_inner_header(xtr):
    (send,) = sends(xtr.handle_miss(1, 42, ip("fd00:1::10"), ip("fd00:2::10"), b"p", 0.0))
    ecm = decode_message(send.payload)
    assert isinstance(ecm, EncapsulatedControlMessage)
    # No IPv6 RLOC: the inner header goes from the asking host to the EID asked for.
    assert (ecm.inner_source, ecm.inner_destination) == (ip("fd00:1::10"), ip("fd00:2::10"))
    assert str(ecm.message.records[0].eid_prefix) == "[42]fd00:2::10/128"
    assert ecm.message.itr_rlocs == (RLOC,)


def test_an_smr_for_an_ipv6_eid_is_followed_by_an_smr_invoked_request(xtr):
    """No packet started it, so no host address: the inner source is our IPv6 gateway, not nothing.

    (Before, the request was never sent and the xTR logged "no Map-Reply" three times over.)"""
    (send,) = sends(xtr.handle_miss(1, 42, ip("fd00:1::10"), ip("fd00:2::10"), b"p", 0.0))
    record = MappingRecord.for_prefix(EidPrefix.from_network("fd00:2::/64", 42), (Locator(ip("198.18.2.2")),), ttl=10)
    xtr.handle_control(MapReply(nonce=decode_message(send.payload).message.nonce, records=(record,)).encode(),
                       MS, 4342, 0.0)
    smr = MapRequest(nonce=1, smr=True, itr_rlocs=(ip("198.18.2.2"),),
                     records=(MapRequestRecord.for_prefix(EidPrefix.from_network("fd00:2::/64", 42)),))
    (again,) = sends(xtr.handle_control(smr.encode(), ip("198.18.2.2"), 4342, 1.0))
    ecm = decode_message(again.payload)
    assert ecm.message.smr_invoked
    assert (ecm.inner_source, ecm.inner_destination) == (ip("fd00:1::1"), ip("fd00:2::"))
    assert again.destination == MS


def test_a_dual_stack_host_arriving_is_learned_in_ipv6_too(xtr):
    xtr.start(0.0)
    effects = as_the_glue_runs(xtr, xtr.handle_host_seen(2, ip("fd00:5::99"), "02:4c:68:05:00:99", b"na", 1.0), 1.0)
    (send,) = [s for s in sends(effects) if isinstance(decode_message(s.payload), MapRegister)]
    eids = [str(r.eid_prefix) for r in decode_message(send.payload).records]
    assert "[42]fd00:5::99/128" in eids
    hosts = {(h.ip, h.port) for h in xtr.plan().hosts}
    assert (ip("fd00:5::99"), 2) in hosts
