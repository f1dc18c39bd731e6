"""Two tenants (instance-IDs 42 and 7) reusing one EID prefix at one site: every flow scoped by its iid.

The plan is the lab's: both tenants' prefixes are also dynamic-EID prefixes at
every site, each host on a port of its own tenant, the same addresses in both.
Packets are walked through the compiled tables (tests/support/simulate.py,
which refuses two equal-priority matches), so "one tenant never sees the
other's traffic" is checked as the switch would forward.
"""

import ipaddress

import pytest

from lisp_ryu import plan as pt
from lisp_ryu.flows import compiler as c
from lisp_ryu.flows.pipeline import Owner, Table, cookie_owner
from support.effects import as_the_glue_runs
from support.simulate import walk

ip = ipaddress.ip_address
net = ipaddress.ip_network
TUN = 100
GW_MAC = "02:4c:67:01:00:01"  # an anycast gateway MAC, the same for both tenants (as the lab derives it)
A42, A7 = "02:4c:68:2a:00:0a", "02:4c:68:07:00:0a"  # same IP, one MAC per host
HOME = net("10.1.0.0/16")
OTHER = net("10.2.0.0/16")


def two_tenants(**overrides):
    base = dict(
        tunnel_port=TUN,
        host_ports=(pt.HostPort(1, 42), pt.HostPort(2, 7), pt.HostPort(3, 42), pt.HostPort(4, 7)),
        hosts=(pt.LocalHost(42, ip("10.1.0.10"), A42, 1), pt.LocalHost(7, ip("10.1.0.10"), A7, 2)),
        gateways=tuple(pt.Gateway(iid, p, p.network_address + 1, GW_MAC) for iid in (42, 7) for p in (HOME, OTHER)),
        dynamic_prefixes=tuple(pt.DynamicPrefix(iid, p) for iid in (42, 7) for p in (HOME, OTHER)),
        remotes=(pt.RemoteEntry(42, OTHER, pt.RemoteAction.ENCAP, (pt.Rloc(ip("198.18.2.2")),)),
                 pt.RemoteEntry(7, OTHER, pt.RemoteAction.ENCAP, (pt.Rloc(ip("198.18.3.2")),))),
        redirects=(pt.Redirect(42, ip("10.1.0.20"), ip("198.18.4.2")),),
    )
    base.update(overrides)
    return pt.XtrPlan(**base)


def from_host(in_port, src, dst, mac):
    return {"in_port": in_port, "eth_type": 0x0800, "eth_src": mac, "eth_dst": GW_MAC, "ipv4_src": src, "ipv4_dst": dst}


def from_tunnel(iid, dst):
    return {"in_port": TUN, "tunnel_id": iid, "eth_type": 0x0800, "ipv4_src": "10.2.0.10", "ipv4_dst": dst}


def test_two_tenants_reusing_a_prefix_compile():
    state = c.compile_plan(two_tenants())
    keys = [f.key for f in state.flows]
    assert len(keys) == len(set(keys))
    assert len({f.cookie for f in state.flows if cookie_owner(f.cookie) is Owner.LOCAL_HOST}) == 2


@pytest.mark.parametrize("port, iid, rloc", [(1, 42, "198.18.2.2"), (2, 7, "198.18.3.2")])
def test_each_tenant_encapsulates_with_its_own_mapping_and_iid(port, iid, rloc):
    state = c.compile_plan(two_tenants())
    mac = A42 if iid == 42 else A7
    (d,) = walk(state, from_host(port, "10.1.0.10", "10.2.0.20", mac)).deliveries
    assert (d.port, d.packet["tunnel_id"], d.packet["tun_ipv4_dst"]) == (TUN, iid, rloc)


@pytest.mark.parametrize("iid, port, mac", [(42, 1, A42), (7, 2, A7)])
def test_decapsulation_delivers_to_the_tenant_of_the_instance_id(iid, port, mac):
    state = c.compile_plan(two_tenants())
    (d,) = walk(state, from_tunnel(iid, "10.1.0.10")).deliveries
    assert (d.port, d.packet["eth_dst"]) == (port, mac)
    assert walk(state, from_tunnel(99, "10.1.0.10")).dropped  # no third tenant here


def test_local_delivery_stays_inside_the_tenant():
    """Tenant 42's host on port 3 reaches 10.1.0.10 of tenant 42 (port 1), never tenant 7's (port 2)."""
    plan = two_tenants(hosts=two_tenants().hosts + (pt.LocalHost(42, ip("10.1.0.11"), "02:4c:68:2a:00:0b", 3),
                                                    pt.LocalHost(7, ip("10.1.0.11"), "02:4c:68:07:00:0b", 4)))
    state = c.compile_plan(plan)
    assert walk(state, from_host(3, "10.1.0.11", "10.1.0.10", "02:4c:68:2a:00:0b")).ports == [1]
    assert walk(state, from_host(4, "10.1.0.11", "10.1.0.10", "02:4c:68:07:00:0b")).ports == [2]


def test_learning_on_a_host_port_is_in_the_ports_tenant_only():
    state = c.compile_plan(two_tenants())
    arrival = from_host(3, "10.1.0.99", "10.2.0.20", "02:00:00:00:00:99")
    trace = walk(state, arrival)
    assert trace.ports == ["controller"] and trace.meters == [c.LEARN_METER_ID]
    learn = trace.flows[0]
    assert learn.table == Table.CLASSIFY and learn.match_dict()["in_port"] == 3
    assert (learn.cookie >> 32) & 0xFFFFFF == 42
    # A source outside the port's tenant's dynamic prefixes is classified, not learned.
    only_7 = two_tenants(dynamic_prefixes=(pt.DynamicPrefix(7, net("10.9.0.0/16")),))
    trace = walk(c.compile_plan(only_7), from_host(3, "10.9.0.5", "10.2.0.20", "02:00:00:00:00:95"))
    assert trace.ports == [TUN] and trace.deliveries[0].packet["tunnel_id"] == 42


def test_an_unnamed_port_learns_only_where_the_source_tells_the_tenant():
    shared = c.compile_plan(two_tenants())
    assert walk(shared, from_host(9, "10.1.0.99", "10.2.0.20", "02:00:00:00:00:99")).dropped
    own = two_tenants(dynamic_prefixes=two_tenants().dynamic_prefixes + (pt.DynamicPrefix(7, net("10.7.0.0/16")),))
    assert walk(c.compile_plan(own), from_host(9, "10.7.0.5", "10.2.0.20", "02:00:00:00:00:75")).ports == ["controller"]


def test_arp_is_answered_per_tenant_and_a_host_probing_itself_is_not():
    state = c.compile_plan(two_tenants())
    for port, mac in ((1, A42), (2, A7)):
        request = {"in_port": port, "eth_type": 0x0806, "eth_src": mac, "eth_dst": "ff:ff:ff:ff:ff:ff",
                   "arp_op": 1, "arp_spa": "10.1.0.10", "arp_tpa": "10.1.0.1", "arp_sha": mac}
        (d,) = walk(state, request).deliveries
        assert (d.port, d.packet["arp_sha"], d.packet["arp_op"]) == (port, GW_MAC, 2)
        assert walk(state, {**request, "arp_tpa": "10.1.0.10"}).dropped


def test_redirects_are_per_instance_id():
    state = c.compile_plan(two_tenants())
    (d,) = walk(state, from_tunnel(42, "10.1.0.20")).deliveries
    assert d.packet["tun_ipv4_dst"] == "198.18.4.2" and d.packet["tunnel_id"] == 42
    # Tenant 7's 10.1.0.20 never moved: nothing of tenant 42's redirect applies to it.
    assert walk(state, from_tunnel(7, "10.1.0.20")).dropped


def test_source_specific_entries_are_per_instance_id():
    remotes = (pt.RemoteEntry(42, OTHER, pt.RemoteAction.DROP, source=net("10.1.0.0/24")),
               pt.RemoteEntry(7, OTHER, pt.RemoteAction.ENCAP, (pt.Rloc(ip("198.18.3.2")),), source=net("10.1.0.0/24")))
    state = c.compile_plan(two_tenants(remotes=remotes))
    assert walk(state, from_host(1, "10.1.0.10", "10.2.0.20", A42)).dropped
    assert walk(state, from_host(2, "10.1.0.10", "10.2.0.20", A7)).ports == [TUN]


TWO_TENANT_XTR = """
xtrs:
  - name: dc1
    dpid: 1
    rlocs: [{address: 198.18.1.2}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}, {prefix: 10.1.0.0/16, iid: 7}]
    map_servers: [{address: 198.18.0.2, key: s3cret}]
    host_ports: [{port: 1, iid: 42}, {port: 2, iid: 7}, {port: 3, iid: 42}, {port: 4, iid: 7}]
    gateways: [{subnet: 10.1.0.0/16, ip: 10.1.0.1, mac: "02:4c:67:01:00:01", iid: 42},
               {subnet: 10.1.0.0/16, ip: 10.1.0.1, mac: "02:4c:67:01:00:01", iid: 7}]
    hosts: [{ip: 10.1.0.10, mac: "02:4c:68:2a:00:0a", port: 1, iid: 42},
            {ip: 10.1.0.10, mac: "02:4c:68:07:00:0a", port: 2, iid: 7}]
    dynamic_eid_prefixes: [{prefix: 10.0.0.0/8, iid: 42}, {prefix: 10.0.0.0/8, iid: 7}]
"""


def test_the_core_learns_an_arrival_in_its_ports_tenant_and_registers_it_there():
    import itertools

    import yaml

    from lisp_ryu import config
    from lisp_ryu.effects import SendControl
    from lisp_ryu.wire.control import decode_message
    from lisp_ryu.xtr.core import XtrCore

    core = XtrCore(config.parse(yaml.safe_load(TWO_TENANT_XTR)).xtrs[0], nonces=itertools.count(1).__next__)
    core.start(0.0)
    assert c.compile_plan(core.plan())  # compiles: the tenants' flows do not collide
    effects = as_the_glue_runs(core, core.handle_host_seen(4, ip("10.2.0.10"), "02:4c:68:07:02:0a", b"garp", 1.0), 1.0)
    registers = [decode_message(e.payload) for e in effects if isinstance(e, SendControl)]
    assert {str(r.eid_prefix) for m in registers for r in m.records} >= {"[7]10.2.0.10/32"}
    assert not any(str(r.eid_prefix) == "[42]10.2.0.10/32" for m in registers for r in m.records)
    assert {(h.iid, str(h.ip), h.port) for h in core.plan().hosts} >= {(7, "10.2.0.10", 4)}
    # On a port no configuration names, an address both tenants use cannot be placed: not learned.
    assert core.handle_host_seen(9, ip("10.2.0.11"), "02:4c:68:2a:02:0b", b"x", 2.0) == []
    assert core.counters["learn_instance_ambiguous"] == 1


def test_decapsulated_traffic_on_a_port_no_flow_names_is_decapsulated_not_learned():
    # A BFD port OVS created before the controller knew its number: the peer's traffic lands
    # there with its instance-ID as tunnel_id.  It must reach DECAP (delivery or redirect),
    # never the learn-any-port flow (the site would register a remote host as its own).
    own = two_tenants(dynamic_prefixes=two_tenants().dynamic_prefixes + (pt.DynamicPrefix(7, net("10.7.0.0/16")),))
    state = c.compile_plan(own)
    packet = {**from_tunnel(7, "10.1.0.10"), "in_port": 9, "ipv4_src": "10.7.0.5"}
    assert walk(state, packet).ports == [2]
    host = from_host(9, "10.7.0.5", "10.2.0.20", "02:00:00:00:00:75")  # a host packet carries no tunnel_id
    assert walk(state, host).ports == ["controller"]


# ---- IPv6: the two tenants are dual-stack and reuse one IPv6 prefix, addresses included ----

HOME6, OTHER6 = net("fd00:1::/64"), net("fd00:2::/64")
GW6_MAC = "02:4c:67:00:00:01"  # the anycast IPv6 gateway MAC, the same for both tenants
B42, B7 = "02:4c:68:2a:00:0b", "02:4c:68:07:00:0b"  # a second host of each tenant, same address in both


def dual_stack_tenants():
    """Ports 1 (42) and 2 (7) hold fd00:1::10 each, ports 3 (42) and 4 (7) fd00:1::11 each."""
    v4 = two_tenants()
    hosts6 = (pt.LocalHost(42, ip("fd00:1::10"), A42, 1), pt.LocalHost(7, ip("fd00:1::10"), A7, 2),
              pt.LocalHost(42, ip("fd00:1::11"), B42, 3), pt.LocalHost(7, ip("fd00:1::11"), B7, 4))
    gateways6 = tuple(pt.Gateway(iid, p, p.network_address + 1, GW6_MAC) for iid in (42, 7) for p in (HOME6, OTHER6))
    return two_tenants(
        hosts=v4.hosts + hosts6,
        gateways=v4.gateways + gateways6,
        dynamic_prefixes=v4.dynamic_prefixes + tuple(pt.DynamicPrefix(iid, p) for iid in (42, 7) for p in (HOME6, OTHER6)),
        remotes=v4.remotes + (pt.RemoteEntry(42, OTHER6, pt.RemoteAction.ENCAP, (pt.Rloc(ip("198.18.2.2")),)),
                              pt.RemoteEntry(7, OTHER6, pt.RemoteAction.ENCAP, (pt.Rloc(ip("198.18.3.2")),))),
        redirects=v4.redirects + (pt.Redirect(42, ip("fd00:1::20"), ip("198.18.4.2")),),
    )


def solicit6(in_port, mac, src, target):
    return {"in_port": in_port, "eth_type": 0x86DD, "eth_src": mac, "eth_dst": "33:33:ff:00:00:01",
            "ipv6_src": src, "ipv6_dst": "ff02::1:ff00:1", "ip_proto": 58, "icmpv6_type": 135, "icmpv6_code": 0,
            "ipv6_nd_target": target, "ipv6_nd_sll": mac, "nd_reserved": 0, "nd_options_type": 1}


def ping6(in_port, mac, src, dst):
    return {"in_port": in_port, "eth_type": 0x86DD, "eth_src": mac, "eth_dst": GW6_MAC, "ipv6_src": src,
            "ipv6_dst": dst, "ip_proto": 58, "icmpv6_type": 128}


def from_tunnel6(iid, dst):
    return {"in_port": TUN, "tunnel_id": iid, "eth_type": 0x86DD, "ipv6_src": "fd00:2::10", "ipv6_dst": dst,
            "ip_proto": 58, "icmpv6_type": 128}


def test_dual_stack_tenants_reusing_an_ipv6_prefix_compile():
    state = c.compile_plan(dual_stack_tenants())
    keys = [f.key for f in state.flows]
    assert len(keys) == len(set(keys))
    nd_answers = [f for f in state.flows if f.table == Table.ARP and f.match_dict().get("icmpv6_type") == 135
                  and "metadata" in f.match_dict()]
    assert {f.match_dict()["metadata"][0] for f in nd_answers} == {42, 7}  # each answer is scoped


@pytest.mark.parametrize("port, mac, src", [(1, A42, "fd00:1::10"), (2, A7, "fd00:1::10"),
                                            (3, B42, "fd00:1::11"), (4, B7, "fd00:1::11")])
def test_neighbour_solicitations_are_answered_to_the_asking_host_only(port, mac, src):
    """For the gateway, a same-site host of the tenant and a remote EID: out of the asking port, nowhere else."""
    state = c.compile_plan(dual_stack_tenants())
    other = "fd00:1::11" if src == "fd00:1::10" else "fd00:1::10"
    for target in ("fd00:1::1", other, "fd00:2::10"):
        (d,) = walk(state, solicit6(port, mac, src, target)).deliveries
        assert (d.port, d.packet["eth_dst"], d.packet["ipv6_dst"]) == (port, mac, src)
        assert (d.packet["icmpv6_type"], d.packet["ipv6_nd_tll"]) == (136, GW6_MAC)


@pytest.mark.parametrize("port, mac, iid, rloc", [(1, A42, 42, "198.18.2.2"), (2, A7, 7, "198.18.3.2")])
def test_ipv6_encapsulation_uses_the_tenants_mapping_and_iid(port, mac, iid, rloc):
    (d,) = walk(c.compile_plan(dual_stack_tenants()), ping6(port, mac, "fd00:1::10", "fd00:2::10")).deliveries
    assert (d.port, d.packet["tunnel_id"], d.packet["tun_ipv4_dst"]) == (TUN, iid, rloc)


def test_ipv6_addresses_both_tenants_use_reach_their_tenants_host_only():
    state = c.compile_plan(dual_stack_tenants())
    # From the tunnel: the instance-ID picks the host.
    for iid, port, mac in ((42, 1, A42), (7, 2, A7)):
        (d,) = walk(state, from_tunnel6(iid, "fd00:1::10")).deliveries
        assert (d.port, d.packet["eth_dst"], d.packet["eth_src"]) == (port, mac, GW6_MAC)
    assert walk(state, from_tunnel6(99, "fd00:1::10")).dropped
    # At the site: each tenant's fd00:1::11 reaches its own tenant's fd00:1::10.
    assert walk(state, ping6(3, B42, "fd00:1::11", "fd00:1::10")).ports == [1]
    assert walk(state, ping6(4, B7, "fd00:1::11", "fd00:1::10")).ports == [2]
    # A redirect of tenant 42's fd00:1::20 leaves tenant 7's fd00:1::20 alone.
    (d,) = walk(state, from_tunnel6(42, "fd00:1::20")).deliveries
    assert (d.packet["tun_ipv4_dst"], d.packet["tunnel_id"]) == ("198.18.4.2", 42)
    assert walk(state, from_tunnel6(7, "fd00:1::20")).dropped


def test_an_ipv6_arrival_is_learned_on_its_ports_tenant_only():
    state = c.compile_plan(dual_stack_tenants())
    trace = walk(state, ping6(3, "02:00:00:00:00:99", "fd00:1::99", "fd00:2::10"))
    assert trace.ports == ["controller"] and (trace.flows[0].cookie >> 32) & 0xFFFFFF == 42
    trace = walk(state, ping6(4, "02:00:00:00:00:98", "fd00:1::99", "fd00:2::10"))
    assert trace.ports == ["controller"] and (trace.flows[0].cookie >> 32) & 0xFFFFFF == 7
