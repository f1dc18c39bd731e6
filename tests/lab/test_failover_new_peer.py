"""End to end: creating a BFD port towards a peer loses none of that peer's packets.

Lab: prefix lk-, management 198.19.226.0/24, controller port 6726, two-dc with the shipped
defaults (failover in the switch on).  The bug this guards: with BFD ports of `key=flow`, OVS
mapped a peer's data to the BFD port pointing back at it, and a packet that needed an upcall
while ovs-vswitchd was adding that port was dropped (`datapath_drop_upcall_error`: the tunnel
is in the receive map before translation knows the port), which is exactly when a brand-new
peer's first packets arrive (soak seeds 15, 24, 48).  Here the port is removed and added again
with the controller's own words (`add_port_args`) many times while dc2 pings dc1 every 1 ms
and the datapath's flows are flushed over and over, so every packet needs an upcall.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time

import pytest

from lisp_ryu import config
from lisp_ryu.flows.failover import BFD_KEY
from lisp_ryu.glue.failover_ports import MARK, add_port_args
from lisp_ryu.lab import controller as lab_controller
from lisp_ryu.lab import running
from lisp_ryu.lab.scenarios import failover
from lisp_ryu.lab.scenarios.probe import Prober

from conftest import controller_lab, dump_lab_on_failure, private_lab

pytestmark = [pytest.mark.lab]
ROUNDS = 12


@pytest.fixture(scope="module")
def lab(tmp_path_factory, module_monkeypatch):
    env, copy = private_lab(tmp_path_factory, module_monkeypatch, "newpeer", "lk-", "two-dc.yaml",
                            "198.19.226.0/24", 6726)
    with controller_lab(env, copy, log_must_not_say=("cannot update the BFD ports",)) as state:
        yield state


@pytest.fixture(autouse=True)
def flows_on_failure(request, lab):
    yield
    dump_lab_on_failure(request, lab)


def bfd_port(lab, site):
    """(name, ofport, local, remote) of `site`'s one BFD port."""
    out = running.vsctl(site, "--bare", "--format=csv", "--no-headings", "--columns=name,ofport,options", "find",
                        "interface", f"external_ids:{MARK}={site}", state=lab)
    (line,) = out.splitlines()
    name, ofport, options = line.split(",", 2)
    local = re.search(r"local_ip=([0-9a-fA-F.:]+)", options).group(1)
    remote = re.search(r"remote_ip=([0-9a-fA-F.:]+)", options).group(1)
    assert f"key={BFD_KEY}" in options, options
    return name, int(ofport), ipaddress.ip_address(local), ipaddress.ip_address(remote)


def upcall_drops(lab, site):
    shown = running.appctl(site, "coverage/show", state=lab)
    m = re.search(r"^datapath_drop_upcall_error\s.*total: (\d+)", shown, re.M)
    return int(m.group(1)) if m else 0


def receiving_port(lab, site, peer, local, iid):
    """The OpenFlow port a GPE packet from `peer` with instance-ID `iid` enters `site`'s br-int on:
    `ofproto/trace` of the datapath flow after the tunnel pop resolves it as receiving does."""
    odp = re.search(r"lisp0 100/(\d+):", running.appctl(site, "dpif/show", state=lab)).group(1)
    packet = (f"tunnel(tun_id={iid:#x},src={peer},dst={local},ttl=64,tp_dst=4341,flags(key)),in_port({odp}),"
              f"packet_type(ns=1,id=0x800),ipv4(src=10.9.0.1,dst=10.9.0.2,proto=1,ttl=64),icmp(type=8,code=0)")
    out = running.appctl(site, "ofproto/trace", packet, state=lab)
    return int(re.search(r"^Flow:.*?\bin_port=(\d+)", out, re.M).group(1))


def peers(lab):
    """dc1 and dc2 talk (first pings both ways, answered) and their BFD sessions are up."""
    for src, dst in (("h1", "10.2.0.10"), ("h4", "10.1.0.11")):
        out = running.exec_in(src, ["ping", "-n", "-c", "1", "-W", "3", dst], state=lab, check=False)
        assert out.returncode == 0, out.stdout
    failover.wait_for(lambda: failover.armed_towards(lab, "dc1", ["198.18.2.2"])
                      and failover.armed_towards(lab, "dc2", ["198.18.1.2"]), 15, "both BFD sessions up")


def test_first_pings_both_ways_then_bfd_comes_up_and_no_data_enters_a_bfd_port(lab):
    peers(lab)
    # (Table counters cannot tell: OVS credits a BFD packet to the rule it matches before taking it aside.)
    for site, peer, local in (("dc1", "198.18.2.2", "198.18.1.2"), ("dc2", "198.18.1.2", "198.18.2.2")):
        assert receiving_port(lab, site, peer, local, iid=42) == 100
        assert receiving_port(lab, site, peer, local, iid=BFD_KEY) == bfd_port(lab, site)[1]


def test_adding_a_bfd_port_under_traffic_that_needs_upcalls_loses_nothing(lab):
    peers(lab)
    name, ofport, local, remote = bfd_port(lab, "dc1")
    xtr = next(x for x in config.load(str(lab_controller.config_path())).xtrs if x.name == "dc1")
    add = add_port_args(xtr, "br-int", local, remote, ofport)
    assert name in add
    drops_before = upcall_drops(lab, "dc1")
    prober = Prober(lab.host("h3").namespace, "10.1.0.10", 0.001)
    flushing = threading.Event()

    def flush():
        while flushing.is_set():
            running.appctl("dc1", "dpctl/del-flows", state=lab)

    marks = []
    try:
        prober.start()
        assert prober.wait_reply(10), "h3 gets no reply from h1"
        for _ in range(ROUNDS):
            running.vsctl("dc1", "del-port", "br-int", name, state=lab)
            time.sleep(0.2)
            flushing.set()
            flusher = threading.Thread(target=flush)
            flusher.start()
            time.sleep(0.05)
            marks.append(time.time())
            running.vsctl("dc1", *add, state=lab)
            time.sleep(0.1)
            flushing.clear()
            flusher.join()
        time.sleep(0.3)
    finally:
        flushing.clear()
        probes = prober.stop()
    sent = [p for p in probes if marks[0] - 0.5 <= p.sent <= marks[-1] + 0.1]
    lost = [round((p.sent - marks[0]) * 1000) for p in sent if p.received is None]
    assert len(sent) > ROUNDS * 100
    assert lost == [], f"{len(lost)} of {len(sent)} probes lost (ms after the first add): {lost}"
    assert upcall_drops(lab, "dc1") == drops_before
    # The port is back as the controller made it, and its session comes up again.
    assert bfd_port(lab, "dc1")[:2] == (name, ofport)
    failover.wait_for(lambda: failover.armed(lab), 15, "the BFD sessions up again")
