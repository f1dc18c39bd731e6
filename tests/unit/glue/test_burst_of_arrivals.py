"""A rack drained at once, without a switch: 60 workloads of dc1 appear at dc2 in a burst.

The real cores, the embedded Map-Server and the controller, over the in-memory underlay
(support.underlay: real bytes, fake sockets and switches).  The burst is what the Ryu app
reports while input is queued (`busy`); pushes wait and take what came meanwhile.  At the
end every switch holds exactly its compiled plan: dc2 delivers every workload, dc1 redirects
each to dc2 and dc3 tunnels each /32 to dc2, every departure solicited dc3 once, and the
switches were pushed a few times, not once per arrival.
"""

from __future__ import annotations

import ipaddress

from lisp_ryu import config
from lisp_ryu.flows.compiler import compile_plan
from lisp_ryu.flows.pipeline import Table
from lisp_ryu.glue.controller import Controller
from support.underlay import Underlay, ipv4_frame

N = 60
IID = 42
PREFIXES = [{"prefix": f"10.{i}.0.0/16", "iid": IID} for i in (1, 2, 3)]
HOSTS = [{"ip": str(ipaddress.ip_address(0x0A01000A + k)), "mac": f"02:4c:68:01:00:{k:02x}", "port": 10 + k,
          "iid": IID} for k in range(N)]


def xtr(i: int) -> dict:
    return {"name": f"dc{i}", "dpid": i, "rlocs": [{"address": f"198.18.{i}.2"}], "tunnel_port": 100,
            "eid_prefixes": [PREFIXES[i - 1]], "host_ports": [{"port": 10 + k, "iid": IID} for k in range(N)],
            "gateways": [{"subnet": p["prefix"], "ip": p["prefix"].replace("0.0/16", "0.1"),
                          "mac": f"02:00:00:00:00:{j:02x}", "iid": IID} for j, p in enumerate(PREFIXES)],
            "dynamic_eid_prefixes": PREFIXES, "hosts": HOSTS if i == 1 else [],
            "map_servers": [{"address": "198.18.0.2", "key": f"k{i}"}]}


def test_a_burst_of_arrivals_ends_with_every_switch_right_after_a_few_pushes():
    sites = [{"name": f"dc{i}", "key": f"k{i}",
              "eid_prefixes": [dict(p, accept_more_specifics=True) for p in PREFIXES]} for i in (1, 2, 3)]
    cfg = config.parse({"map_server": {"listen": "198.18.0.2:4342", "sites": sites}, "xtrs": [xtr(i) for i in (1, 2, 3)]})
    underlay = Underlay()
    ctl = underlay.bind(Controller.from_config(cfg, open_socket=underlay.open_socket, clock=underlay.clock,
                                               wall_clock=underlay.clock))
    switches = {dpid: underlay.connect(ctl, dpid) for dpid in (1, 2, 3)}
    ctl.start()
    underlay.settle()
    # dc3 and the workloads talk: dc3's map-cache holds dc1's /16, dc1's holds dc3's.
    switches[3].packet_in(ctl, 1, ipv4_frame("10.3.0.10", HOSTS[0]["ip"]), iid=IID)
    switches[1].packet_in(ctl, 1, ipv4_frame(HOSTS[0]["ip"], "10.3.0.10"), iid=IID)
    underlay.settle()
    underlay.clock.advance(1.0)
    ctl.run_timers()
    underlay.settle()
    pushed_before = ctl.counters.get("flow_ops", 0)
    deferred_before = ctl.counters.get("pushes_deferred", 0)

    ctl.busy = lambda: True  # input queued behind each event, as in an evacuation
    for k, host in enumerate(HOSTS):
        frame = ipv4_frame(host["ip"], "10.3.0.10", src_mac=bytes.fromhex(host["mac"].replace(":", "")))
        ctl.packet_in(2, Table.CLASSIFY, host["port"], 0, frame)
        underlay.clock.advance(0.002)
        if k % 10 == 9:
            ctl.run_timers()
            underlay.settle()
    ctl.busy = lambda: False
    for _ in range(10):
        underlay.clock.advance(0.2)
        ctl.run_timers()
        underlay.settle()

    assert ctl.counters.get("flow_ops", 0) > pushed_before
    assert ctl.counters.get("pushes_deferred", 0) - deferred_before > N  # held back and joined, not one push each
    for dpid, switch in switches.items():
        assert switch.held() == compile_plan(ctl.xtrs[dpid].core.plan()), f"dc{dpid}"
    ips = {ipaddress.ip_address(h["ip"]) for h in HOSTS}
    dc1, dc2, dc3 = (ctl.xtrs[d].core.plan() for d in (1, 2, 3))
    assert {h.ip for h in dc2.hosts} >= ips
    assert not ips & {h.ip for h in dc1.hosts}
    assert {r.ip for r in dc1.redirects} == ips and {str(r.rloc) for r in dc1.redirects} == {"198.18.2.2"}
    to_dc2 = {e.prefix.network_address for e in dc3.remotes
              if e.prefix.prefixlen == 32 and [str(r.address) for r in e.rlocs] == ["198.18.2.2"]}
    assert to_dc2 >= ips
    assert ctl.xtrs[1].core.state.counters["smr_sent"] == N  # each departure solicited dc3 once
