"""An IPv6 underlay through the real controller: IPv6 RLOCs and an IPv6 Map-Server, in memory.

OVS 3.1 userspace carries LISP-GPE over IPv6 (tests/lab/test_ipv6_underlay.py); here the control
plane does its part: sockets of the IPv6 family on IPv6 RLOCs (the first one included) and the
Map-Server's IPv6 address, registrations and a resolution over them, and encapsulation flows that
set `tun_ipv6_dst`, for IPv4 and IPv6 EIDs alike.
"""

from __future__ import annotations

import socket

import yaml

from lisp_ryu import config
from lisp_ryu.flows.model import SetField
from lisp_ryu.glue.controller import Controller
from support.underlay import Underlay, ipv4_frame, ipv6_frame
from support.simulate import walk

CONFIG = """
map_server:
  listen: "[2001:db8::2]:4342"
  sites:
    - {name: dc1, key: k1, eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}, {prefix: "fd00:1::/64", iid: 42}]}
    - {name: dc2, key: k2, eid_prefixes: [{prefix: 10.2.0.0/16, iid: 42}, {prefix: "fd00:2::/64", iid: 42}]}
xtrs:
  - name: dc1
    dpid: 1
    rlocs: [{address: "2001:db8:1::2"}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}, {prefix: "fd00:1::/64", iid: 42}]
    map_servers: [{address: "2001:db8::2", key: k1}]
    hosts: [{ip: 10.1.0.10, mac: "02:00:00:01:00:0a", port: 1, iid: 42},
            {ip: "fd00:1::10", mac: "02:00:00:01:00:0a", port: 1, iid: 42}]
  - name: dc2
    dpid: 2
    rlocs: [{address: "2001:db8:2::2"}, {address: 198.18.2.2, priority: 2}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.2.0.0/16, iid: 42}, {prefix: "fd00:2::/64", iid: 42}]
    map_servers: [{address: "2001:db8::2", key: k2}]
    hosts: [{ip: 10.2.0.10, mac: "02:00:00:02:00:0a", port: 1, iid: 42}]
"""


def test_ipv6_rlocs_register_resolve_and_encapsulate_with_tun_ipv6_dst():
    underlay = Underlay()
    families = {}

    def open_socket(netns, bind, family=socket.AF_INET):
        families[bind[0]] = family
        return underlay.open_socket(netns, bind, family)

    cfg = config.parse(yaml.safe_load(CONFIG))
    controller = underlay.bind(Controller.from_config(cfg, open_socket=open_socket, clock=underlay.clock,
                                                      wall_clock=underlay.clock))
    assert families == {"2001:db8::2": socket.AF_INET6, "2001:db8:1::2": socket.AF_INET6,
                        "2001:db8:2::2": socket.AF_INET6, "198.18.2.2": socket.AF_INET}
    switches = {dpid: underlay.connect(controller, dpid) for dpid in (1, 2)}
    controller.start()
    underlay.settle()
    for dpid in (1, 2):
        assert all(r.registered for r in controller.xtrs[dpid].core.registrations)

    for frame, dst in ((ipv4_frame("10.1.0.10", "10.2.0.10"), {"eth_type": 0x0800, "ipv4_dst": "10.2.0.10"}),
                       (ipv6_frame("fd00:1::10", "fd00:2::10"), {"eth_type": 0x86DD, "ipv6_dst": "fd00:2::10"})):
        switches[1].packet_in(controller, 1, frame, iid=42)
        underlay.settle()
        (delivery,) = walk(switches[1].held(), {"metadata": 42, **dst}, start_table=1).deliveries
        assert delivery.port == 100
        assert delivery.packet["tun_ipv6_dst"] == "2001:db8:2::2"  # priority 1 of dc2's two RLOCs
        assert "tun_ipv4_dst" not in delivery.packet
    assert controller.counters.get("packets_reinjected") == 2
    assert not underlay.unrouted
    sets = {a.field for f in switches[1].held().flows for a in f.actions if isinstance(a, SetField)}
    assert "tun_ipv6_dst" in sets
