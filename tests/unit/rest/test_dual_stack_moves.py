"""An unplanned move of a dual-stack workload between xTRs one controller drives: its first
packet at the new site (the IPv4 gratuitous ARP a hypervisor sends) moves both its addresses.

dc1 holds the workload (10.1.0.10 and fd00:1::10, one MAC) and a second host with another
MAC; dc2 learns hosts in 10/8 and fd00::/16 on port 5; dc3 talks to both of the workload's
addresses.  Before, the IPv6 address waited for the workload's own IPv6 packet and a second
round of pushes (measured in the lab: its TCP stream over IPv6 timed out more often than
over IPv4 on a loaded machine).
"""

from __future__ import annotations

import ipaddress

import pytest

from lisp_ryu.flows.pipeline import Owner, Table, cookie_owner
from support.simulate import walk
from support.underlay import ipv4_frame, ipv6_frame
from unit.rest.test_rest_api import Lab

DC1, DC2 = "198.18.1.2", "198.18.2.2"
MAC = "02:00:00:01:00:0a"
CONFIG = f"""
map_server:
  sites:
    - {{name: dc1, key: k1, eid_prefixes: [{{prefix: 10.0.0.0/8, iid: 42, accept_more_specifics: true}},
                                         {{prefix: "fd00::/16", iid: 42, accept_more_specifics: true}}]}}
    - {{name: dc2, key: k2, eid_prefixes: [{{prefix: 10.0.0.0/8, iid: 42, accept_more_specifics: true}},
                                         {{prefix: "fd00::/16", iid: 42, accept_more_specifics: true}}]}}
    - {{name: dc3, key: k3, eid_prefixes: [{{prefix: 10.3.0.0/16, iid: 42}}, {{prefix: "fd00:3::/64", iid: 42}}]}}
rest: {{token: t0ken}}
xtrs:
  - name: dc1
    dpid: 1
    rlocs: [{{address: {DC1}}}]
    tunnel_port: 100
    eid_prefixes: [{{prefix: 10.1.0.0/16, iid: 42}}, {{prefix: "fd00:1::/64", iid: 42}}]
    map_servers: [{{address: 198.18.0.2, key: k1}}]
    map_resolvers: [198.18.0.2]
    gateways: [{{subnet: "fd00:1::/64", ip: "fd00:1::1", mac: "02:4c:67:00:00:01", iid: 42}}]
    hosts: [{{ip: 10.1.0.10, mac: "{MAC}", port: 1, iid: 42}},
            {{ip: "fd00:1::10", mac: "{MAC}", port: 1, iid: 42}},
            {{ip: "fd00:1::11", mac: "02:00:00:01:00:0b", port: 2, iid: 42}}]
  - name: dc2
    dpid: 2
    rlocs: [{{address: {DC2}}}]
    tunnel_port: 100
    eid_prefixes: [{{prefix: 10.2.0.0/16, iid: 42}}]
    dynamic_eid_prefixes: [{{prefix: 10.0.0.0/8, iid: 42}}, {{prefix: "fd00::/16", iid: 42}}]
    host_ports: [{{port: 5, iid: 42}}]
    map_servers: [{{address: 198.18.0.2, key: k2}}]
    map_resolvers: [198.18.0.2]
  - name: dc3
    dpid: 3
    rlocs: [{{address: 198.18.3.2}}]
    tunnel_port: 100
    eid_prefixes: [{{prefix: 10.3.0.0/16, iid: 42}}, {{prefix: "fd00:3::/64", iid: 42}}]
    map_servers: [{{address: 198.18.0.2, key: k3}}]
    map_resolvers: [198.18.0.2]
    hosts: [{{ip: 10.3.0.10, mac: "02:00:00:03:00:0a", port: 1, iid: 42}},
            {{ip: "fd00:3::10", mac: "02:00:00:03:00:0a", port: 1, iid: 42}}]
"""


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path, config_text=CONFIG)
    lab.start()
    lab.miss("dc3", "10.3.0.10", "10.1.0.10")
    switch = lab.switches[3]
    for eid in ("fd00:1::10", "fd00:1::11"):
        switch.packet_in(lab.controller, 1, ipv6_frame("fd00:3::10", eid), iid=42)
    lab.underlay.settle()
    return lab


def held(lab, name):
    return lab.switches[lab.cores[name].config.dpid].held()


def tunnelled_to(lab, eid):
    """Where dc3's host's packet to `eid` is tunnelled."""
    packet = ({"eth_type": 0x0800, "ipv4_src": "10.3.0.10", "ipv4_dst": eid} if ":" not in eid
              else {"eth_type": 0x86DD, "ipv6_src": "fd00:3::10", "ipv6_dst": eid})
    return [d.packet["tun_ipv4_dst"] for d in walk(held(lab, "dc3"), {"in_port": 1, **packet}).deliveries]


def barriers(lab, dpid):
    """Pushes to a switch so far: each ends with a barrier."""
    return sum(type(m).__name__ == "Barrier" for m in lab.switches[dpid].messages)


def arrive(lab, src_mac=MAC):
    lab.switches[2].packet_in(lab.controller, 5, ipv4_frame("10.1.0.10", "10.3.0.10",
                                                           src_mac=bytes.fromhex(src_mac.replace(":", ""))),
                              table=Table.CLASSIFY)


def test_the_ipv4_announcement_moves_the_workloads_ipv6_address_too(lab):
    assert tunnelled_to(lab, "fd00:1::10") == [DC1]
    pushes = {dpid: barriers(lab, dpid) for dpid in (1, 2, 3)}
    arrive(lab)  # before any datagram crosses the underlay
    dc2 = lab.cores["dc2"]
    assert {(h.ip, h.port) for h in dc2.local_hosts()} == {(ipaddress.ip_address("10.1.0.10"), 5),
                                                          (ipaddress.ip_address("fd00:1::10"), 5)}
    assert dc2.counters["dynamic_eid_learned_with_its_workload"] == 1
    assert tunnelled_to(lab, "10.1.0.10") == tunnelled_to(lab, "fd00:1::10") == [DC2]
    # dc2 delivers the IPv6 address at its port, and dc1 sends on what still reaches it there.
    decap = walk(held(lab, "dc2"), {"in_port": 100, "tunnel_id": 42, "eth_type": 0x86DD, "ipv6_dst": "fd00:1::10"})
    assert [d.port for d in decap.deliveries] == [5]
    redirects = [f for f in held(lab, "dc1").flows if cookie_owner(f.cookie) is Owner.REDIRECT]
    assert {dict(f.match).get("ipv4_dst") or dict(f.match).get("ipv6_dst") for f in redirects} >= {
        "10.1.0.10", "fd00:1::10"}
    # One push per switch carried both addresses (none waited for a second packet-in).
    assert {dpid: barriers(lab, dpid) - n for dpid, n in pushes.items()} == {1: 1, 2: 1, 3: 1}
    # The host with another MAC stays at dc1; the mapping system agrees once it has heard.
    lab.underlay.settle()
    assert tunnelled_to(lab, "fd00:1::11") == [DC1]
    assert tunnelled_to(lab, "fd00:1::10") == [DC2]
    assert lab.controller.counters.get("core_exceptions", 0) == 0


def test_the_workloads_own_ipv6_packet_afterwards_is_known(lab):
    arrive(lab)
    lab.underlay.settle()
    before = lab.cores["dc2"].counters.get("dynamic_eid_learned", 0)
    lab.switches[2].packet_in(lab.controller, 5, ipv6_frame("fd00:1::10", "fd00:3::10",
                                                           src_mac=bytes.fromhex(MAC.replace(":", ""))),
                              table=Table.CLASSIFY)
    assert lab.cores["dc2"].counters.get("dynamic_eid_learned", 0) == before
    assert lab.cores["dc2"].counters["learn_already_known"] >= 1


def test_another_machine_takes_nothing_along(lab):
    arrive(lab, src_mac="02:00:00:01:00:0c")  # 10.1.0.10 with another MAC: that address only
    assert {str(h.ip) for h in lab.cores["dc2"].local_hosts()} == {"10.1.0.10"}
    assert lab.cores["dc2"].counters.get("dynamic_eid_learned_with_its_workload", 0) == 0
    assert tunnelled_to(lab, "fd00:1::10") == [DC1]
