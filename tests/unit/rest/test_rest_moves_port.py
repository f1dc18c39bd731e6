"""POST /lisp/v1/moves with the workload's new port: the destination's switch delivers alone.

An orchestrator plugs the migrating VM's new vif before the switchover and knows its
OpenFlow port.  Given it, the destination delivers the EID's traffic there from the
announcement on: nothing reaches the controller to be held, so a loaded controller
(learning the arrival late) costs the move nothing.  Same three-xTR lab as
test_rest_moves.py: dc1 holds 10.1.0.10, dc2 learns hosts on port 5, dc3 talks to it.
"""

from __future__ import annotations

import ipaddress

import pytest

from lisp_ryu.flows.pipeline import Table
from support.simulate import walk
from unit.rest.test_rest_moves import (DC1, DC2, EID, arrive_at_dc2, from_own_host, held, planned_flows,
                                       three_site_lab, to_eid)

HOST_MAC = "02:00:00:01:00:0a"  # the workload's MAC at dc1 (the configuration's)


@pytest.fixture
def lab(tmp_path):
    return three_site_lab(tmp_path)


def decap_at_dc2(lab):
    return walk(held(lab, "dc2"), {"in_port": 100, "tunnel_id": 42, "eth_type": 0x0800, "ipv4_dst": EID,
                                    "tun_ipv4_src": "198.18.3.2"},  # the ITR dc3 (it replicates)
                start_table=Table.DECAP)


def test_the_destination_delivers_to_the_announced_port_without_the_controller(lab):
    lab.miss("dc3", "10.3.0.10", EID)
    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2", "port": 5})
    assert status == 202 and answer["port"] == 5 and answer["mac"] == HOST_MAC and answer["installed"], answer

    # What the ITR's copy brings to dc2 goes out of port 5, to the workload's MAC; no controller.
    decap = decap_at_dc2(lab)
    assert decap.ports == [5], decap
    assert decap.deliveries[0].packet["eth_dst"] == HOST_MAC
    # dc2's own hosts: to the new port and to the old site, where the workload still is.
    dest = from_own_host(lab, "dc2", "10.2.0.99")
    assert sorted(map(str, dest.ports)) == ["100", "5"]
    assert [d.packet["tun_ipv4_dst"] for d in dest.deliveries if d.port == 100] == [DC1]
    # The ITR replicates as without a port.
    assert sorted(d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries) == [DC1, DC2]

    # The workload appears on port 5: nothing to deliver from the controller, its own flows take over.
    assert arrive_at_dc2(lab) == []
    assert decap_at_dc2(lab).ports == [5]
    assert [d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries] == [DC2]
    for name in ("dc1", "dc2", "dc3"):
        assert planned_flows(held(lab, name)) == [], name


def test_the_destination_resolves_the_old_sites_own_hosts_beforehand(lab):
    """The workload's replies to its old neighbours (dc1's own hosts) find a mapping at dc2 from
    the switchover on: the announcement made dc2 ask for dc1's prefix."""
    assert lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2", "port": 5})[0] == 202
    lab.underlay.settle()  # the Map-Requests and their answers
    entry = lab.cores["dc2"].cache.get(42, ipaddress.ip_network("10.1.0.0/16"))
    assert entry is not None and [str(loc.address) for loc in entry.value.record.locators] == [DC1]
    arrive_at_dc2(lab)
    back = walk(held(lab, "dc2"), {"in_port": 5, "eth_type": 0x0800, "ipv4_src": EID, "ipv4_dst": "10.1.0.99"})
    assert [d.packet["tun_ipv4_dst"] for d in back.deliveries] == [DC1]


def test_the_workloads_replies_leave_through_the_switch_from_the_switchover_on(lab):
    """Announced with its port, the workload's own packets there are classified as a known host's
    before it is learned: its replies need neither a packet-in nor the arrival's push.  Its ARP
    still meets the learning flows (that is how the controller sees it arrive)."""
    lab.miss("dc3", "10.3.0.10", EID)
    assert lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2", "port": 5})[0] == 202
    lab.underlay.settle()  # dc2 resolved dc1's prefix at the announcement
    reply = {"in_port": 5, "eth_type": 0x0800, "ipv4_src": EID, "ipv4_dst": "10.1.0.99"}
    before = walk(held(lab, "dc2"), reply)
    assert [d.packet["tun_ipv4_dst"] for d in before.deliveries] == [DC1], before
    garp = walk(held(lab, "dc2"), {"in_port": 5, "eth_type": 0x0806, "arp_op": 1, "arp_spa": EID, "arp_tpa": EID})
    assert "controller" in garp.ports, garp
    # The arrival behind a backlog (a planned evacuation): its push waits for the burst's, and
    # the replies do not wait for it.
    lab.controller.busy = lambda: True
    assert arrive_at_dc2(lab) == []
    assert lab.controller.sessions[2].deferred != []
    during = walk(held(lab, "dc2"), reply)
    assert [d.packet["tun_ipv4_dst"] for d in during.deliveries] == [DC1], during
    lab.controller.busy = lambda: False
    lab.controller.run_timers()
    assert lab.controller.sessions[2].deferred == []
    assert planned_flows(held(lab, "dc2")) == []
    assert walk(held(lab, "dc2"), reply).deliveries == during.deliveries


def test_a_workload_on_another_port_than_announced_is_pushed_at_once(lab):
    """It came elsewhere: nothing classified its replies, so they wait for the arrival's push,
    which must not wait out a backlog."""
    lab.miss("dc3", "10.3.0.10", EID)
    assert lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2", "port": 6})[0] == 202
    lab.controller.busy = lambda: True
    lab.underlay.settle()
    arrive_at_dc2(lab)  # on port 5
    assert lab.controller.sessions[2].deferred == []
    back = walk(held(lab, "dc2"), {"in_port": 5, "eth_type": 0x0800, "ipv4_src": EID, "ipv4_dst": "10.1.0.99"})
    assert [d.packet["tun_ipv4_dst"] for d in back.deliveries] == [DC1], back


def rarp(mac: str) -> bytes:
    """A RARP request as QEMU sends to announce a migrated VM: the MAC is all it carries."""
    raw = bytes.fromhex(mac.replace(":", ""))
    return (b"\xff" * 6 + raw + b"\x80\x35" + bytes.fromhex("000108000604" + "0003") + raw + bytes(4)
            + raw + bytes(4))


def test_a_rarp_from_the_announced_port_is_the_workloads_arrival(lab):
    """A hypervisor's RARP (no IP in it) from the announced port, with the workload's MAC, ends the
    move as its first packet would: learned at dc2, departed from dc1, no planned-move flow left."""
    lab.miss("dc3", "10.3.0.10", EID)
    assert lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2", "port": 5})[0] == 202
    lab.underlay.settle()
    switch = lab.switches[2]
    assert "controller" in walk(held(lab, "dc2"), {"in_port": 5, "eth_type": 0x8035}).ports
    switch.packet_in(lab.controller, 5, rarp("02:00:00:00:99:99"), table=Table.CLASSIFY)  # another VM's
    lab.underlay.settle()
    assert lab.cores["dc2"].counters["rarp_unexpected"] == 1 and planned_flows(held(lab, "dc2"))
    before = len(switch.messages)
    switch.packet_in(lab.controller, 5, rarp(HOST_MAC), table=Table.CLASSIFY)
    lab.underlay.settle()
    lab.controller.run_timers()
    assert lab.cores["dc2"].counters["planned_move_announced_by_rarp"] == 1
    assert lab.cores["dc2"].is_here(42, ipaddress.ip_address(EID))
    assert not [m for m in switch.messages[before:] if type(m).__name__ == "PacketOutMsg"]  # the RARP stays
    for name in ("dc1", "dc2", "dc3"):
        assert planned_flows(held(lab, name)) == [], name
    assert [d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries] == [DC2]


def test_a_mac_given_with_the_port_is_the_one_delivered_to(lab):
    body = {"iid": 42, "eid": EID, "to_site": "dc2", "port": 5, "mac": "02:AA:00:00:00:01"}
    status, answer = lab.call("POST", "/lisp/v1/moves", body)
    assert status == 202 and answer["mac"] == "02:aa:00:00:00:01", answer
    assert decap_at_dc2(lab).deliveries[0].packet["eth_dst"] == "02:aa:00:00:00:01"


def test_an_unused_window_with_a_port_ends_at_its_timeout(lab):
    body = {"iid": 42, "eid": EID, "to_site": "dc2", "port": 5, "timeout": 2}
    assert lab.call("POST", "/lisp/v1/moves", body)[0] == 202
    assert planned_flows(held(lab, "dc2"))
    lab.clock.advance(3)
    lab.controller.run_timers()
    lab.underlay.settle()
    assert not planned_flows(held(lab, "dc2"))
    assert decap_at_dc2(lab).ports != [5]  # the workload never came: nothing is sent to that port


def test_a_port_another_host_uses_is_refused_and_prepares_nothing(lab):
    """dc2's port 5 already serves a learned host: delivering the moving EID there too would hand
    another tenant's workload its traffic."""
    lab.switches[2].packet_in(lab.controller, 5, _frame("10.2.0.77", "02:00:00:02:00:77"), table=Table.CLASSIFY)
    lab.underlay.settle()
    status, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2", "port": 5})
    assert status == 409 and "10.2.0.77" in answer["error"], answer
    assert lab.cores["dc2"].state.expected == {} and lab.cores["dc3"].state.replicating == {}


@pytest.mark.parametrize("extra, status, field", [
    ({"port": 100}, 409, None),  # dc2's tunnel port
    ({"port": 0}, 400, "port"),
    ({"port": 0xFFFFFF01}, 400, "port"),  # a reserved port (OFPP_IN_PORT and above)
    ({"port": "5"}, 400, "port"),
    ({"port": 5, "mac": "01:00:5e:00:00:01"}, 400, "mac"),  # multicast
    ({"port": 5, "mac": "nope"}, 400, "mac"),
    ({"mac": "02:00:00:00:00:01"}, 400, "mac"),  # a MAC says nothing without its port
])
def test_bad_ports(lab, extra, status, field):
    got, answer = lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2", **extra})
    assert got == status, answer
    if field is not None:
        assert answer.get("field") == field
    assert lab.cores["dc2"].state.expected == {}


def _frame(src: str, mac: str) -> bytes:
    from support.underlay import ipv4_frame

    return ipv4_frame(src, "10.3.0.10", src_mac=bytes.fromhex(mac.replace(":", "")))


def test_a_workload_that_sends_nothing_is_asked_at_its_new_port_and_learned_from_its_answer(lab):
    """A workload announced with its port that never sends on its own (no gratuitous ARP after
    its switchover) would be unreachable once the window closed.  The destination asks it
    ASK_FIRST after the announcement, then less often (an ARP request out of the port, to its
    MAC); its answer meets the learning flows like a first packet, and the move ends as usual."""
    from ryu.lib.packet import arp, packet

    from lisp_ryu.xtr.mobility import ASK_FIRST

    lab.miss("dc3", "10.3.0.10", EID)
    assert lab.call("POST", "/lisp/v1/moves", {"iid": 42, "eid": EID, "to_site": "dc2", "port": 5})[0] == 202
    lab.underlay.settle()
    switch = lab.switches[2]
    before = len(switch.messages)
    lab.clock.advance(ASK_FIRST + 0.01)
    lab.controller.run_timers()
    asks = [m for m in switch.messages[before:] if type(m).__name__ == "PacketOutMsg"]
    (ask,) = asks
    assert [a.port for a in ask.actions] == [5]
    request = packet.Packet(ask.data).get_protocol(arp.arp)
    assert (request.opcode, request.dst_ip, request.dst_mac) == (1, EID, "00:00:00:00:00:00")
    assert lab.cores["dc2"].counters["planned_move_asked"] == 1

    # Its answer (an ARP reply from the workload, on port 5) goes to the controller by the flows ...
    answer = (bytes.fromhex("02000000" "00fe") + bytes.fromhex(HOST_MAC.replace(":", "")) + b"\x08\x06"
              + bytes.fromhex("0001080006040002") + bytes.fromhex(HOST_MAC.replace(":", ""))
              + ipaddress.ip_address(EID).packed + bytes.fromhex("0200000000fe") + bytes(4))
    reply_fields = {"in_port": 5, "eth_type": 0x0806, "arp_op": 2, "arp_spa": EID, "eth_src": HOST_MAC}
    assert "controller" in walk(held(lab, "dc2"), reply_fields).ports
    # ... and teaches it: learned at dc2, the move over, the ITR sending to dc2 alone.
    switch.packet_in(lab.controller, 5, answer, table=Table.CLASSIFY)
    lab.underlay.settle()
    lab.controller.run_timers()
    assert lab.cores["dc2"].is_here(42, ipaddress.ip_address(EID))
    for name in ("dc1", "dc2", "dc3"):
        assert planned_flows(held(lab, name)) == [], name
    assert [d.packet["tun_ipv4_dst"] for d in to_eid(lab, "dc3").deliveries] == [DC2]
    # Nothing more is asked once it is here.
    before = len(switch.messages)
    lab.clock.advance(3 * ASK_FIRST)
    lab.controller.run_timers()
    assert not [m for m in switch.messages[before:] if type(m).__name__ == "PacketOutMsg"]
