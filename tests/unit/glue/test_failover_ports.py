"""The per-peer BFD ports: numbers kept while wanted, one OVSDB transaction per change, adoption."""

from __future__ import annotations

import ipaddress
import json

import pytest

from lisp_ryu import config
from lisp_ryu.flows.failover import BFD_KEY
from lisp_ryu.glue.failover_ports import MARK, PACKET_IN_QUEUE, BfdMesh, FailoverPorts, port_name, raise_packet_in_queue

ip = ipaddress.ip_address

XTR = {
    "name": "dc1", "dpid": 1, "tunnel_port": 100,
    "rlocs": [{"address": "198.18.1.2"}, {"address": "198.18.5.2"}, {"address": "2001:db8::1"}],
    "map_servers": [{"address": "198.18.0.2", "key": "k"}],
    "hosts": [{"ip": "10.1.0.10", "mac": "02:00:00:01:00:0a", "port": 1000, "iid": 42}],
    "eid_prefixes": [{"prefix": "10.1.0.0/16", "iid": 42}],
    "ovsdb": "unix:/nowhere/db.sock",
}


class FakeOvsdb:
    """ovs-vsctl against a dict of our interfaces: name -> ofport (and name -> (local, remote))."""

    def __init__(self, existing=None):
        self.ports = {name: v[0] for name, v in (existing or {}).items()}
        self.pairs = {name: v[1:] for name, v in (existing or {}).items()}
        self.calls: list[list[str]] = []

    def __call__(self, db, args):
        self.calls.append(list(args))
        if args[:4] == ["--bare", "--columns=name", "find", "bridge"]:
            return "br-int\n"
        if "--format=json" in args:
            return json.dumps({"data": [[ofport, ["map", [["lisp-ryu-local", self.pairs[n][0]],
                                                           ["lisp-ryu-remote", self.pairs[n][1]]]]]
                                        for n, ofport in self.ports.items()]})
        if "find" in args and any(a.startswith(f"external_ids:{MARK}=") for a in args):
            return "".join(f"{name},{ofport}\n" for name, ofport in self.ports.items())
        cmds = " ".join(args).split(" -- ")
        for cmd in cmds:
            words = cmd.replace("--", "", 1).split() if cmd.startswith("--") else cmd.split()
            if "add-port" in words:
                name = words[words.index("add-port") + 2]
                request = next(int(w.split("=")[1]) for w in cmds[cmds.index(cmd) + 1].split()
                               if w.startswith("ofport_request="))
                self.ports[name] = request
                ids = dict(w.split(":", 1)[1].split("=", 1) for w in cmds[cmds.index(cmd) + 1].split()
                           if w.startswith("external_ids:"))
                self.pairs[name] = (ids["lisp-ryu-local"], ids["lisp-ryu-remote"])
            if "del-port" in words:
                self.ports.pop(words[-1], None)
        return ""


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def manager(fake, xtr=XTR, **kw):
    kw.setdefault("clock", Clock())
    return FailoverPorts(config.parse({"xtrs": [xtr]}).xtrs[0], vsctl=fake, **kw)


def pairs(m):
    return {(str(p.local), str(p.remote)) for p in m.current()}


def test_a_port_per_local_rloc_of_the_peers_family_numbered_past_the_configured_ports():
    fake = FakeOvsdb()
    m = manager(fake)
    got = m.ports([ip("198.18.3.2"), ip("2001:db8::9")])
    assert [(str(p.local), str(p.remote), p.ofport) for p in got] == [
        ("198.18.1.2", "198.18.3.2", 1001),  # 1000 is a host port
        ("198.18.5.2", "198.18.3.2", 1002),
        ("2001:db8::1", "2001:db8::9", 1003)]
    assert set(fake.ports) == {port_name(p.local, p.remote) for p in got}
    add = " ".join(fake.calls[-2])
    for option in ("type=vxlan", "options:exts=gpe", "options:dst_port=4341", "options:packet_type=legacy_l3",
                   f"options:key={BFD_KEY}", "options:local_ip=198.18.1.2", "options:remote_ip=198.18.3.2",
                   "bfd:enable=true", "bfd:min_tx=75", "bfd:min_rx=75", "bfd:mult=3", f"external_ids:{MARK}=dc1"):
        assert option in add


def test_numbers_stay_while_wanted_and_ports_go_with_their_peer():
    fake = FakeOvsdb()
    m = manager(fake)
    first = {p.remote: p.ofport for p in m.ports([ip("198.18.3.2"), ip("198.18.4.2")]) if p.local == ip("198.18.1.2")}
    calls = len(fake.calls)
    m.ports([ip("198.18.4.2"), ip("198.18.3.2")])
    assert len(fake.calls) == calls  # nothing changed: no OVSDB transaction
    m.ports([ip("198.18.4.2")])
    assert len(fake.calls) == calls and m.next_expiry() == 100.0 + m.grace  # kept for its grace
    m.clock.now += m.grace - 1
    kept = m.ports([ip("198.18.4.2"), ip("198.18.3.2")])  # back in time: nothing changed, the grace restarts
    assert len(fake.calls) == calls and m.next_expiry() is None
    m.ports([ip("198.18.4.2")])
    m.clock.now += m.grace / 2
    assert not m.expire()
    m.clock.now += m.grace / 2
    assert m.expire()  # past its grace: gone
    kept = m.current()
    assert {p.remote: p.ofport for p in kept if p.local == ip("198.18.1.2")} == {ip("198.18.4.2"): first[ip("198.18.4.2")]}
    assert len(fake.ports) == 2 and port_name(ip("198.18.1.2"), ip("198.18.3.2")) not in fake.ports
    assert m.next_expiry() is None


def test_the_same_question_is_answered_from_memory_and_a_grace_counts_from_the_last_need():
    """Every push asks (a move's three pushes in a row): the same peers get the same answer without
    the work, and a port's grace still starts when the last answer that needed it was given."""
    m = manager(FakeOvsdb())
    answer = m.ports([ip("198.18.3.2")])
    assert m.ports([ip("198.18.3.2")]) is answer  # the answer itself, kept
    m.clock.now += 50.0
    assert m.ports([ip("198.18.3.2")]) is answer  # still needed at 150
    m.ports([])  # not any more
    assert m.next_expiry() == 150.0 + m.grace
    m.clock.now += m.grace - 1
    assert not m.expire() and any(p.remote == ip("198.18.3.2") for p in m.current())
    m.clock.now += 1
    assert m.expire() and not m.current()


def test_ports_left_by_an_earlier_controller_are_adopted_with_their_numbers():
    name = port_name(ip("198.18.1.2"), ip("198.18.3.2"))
    fake = FakeOvsdb({name: (1500, "198.18.1.2", "198.18.3.2"), "lfdeadbeef": (1600, "198.18.1.2", "198.18.7.7")})
    m = manager(fake)
    # Read before the first push: the first flows already name port 1500.
    first = m.ports([ip("198.18.3.2")])
    assert {p.remote: p.ofport for p in first if p.local == ip("198.18.1.2")}[ip("198.18.3.2")] == 1500
    assert {p.remote: p.ofport for p in m.current() if p.local == ip("198.18.1.2")}[ip("198.18.3.2")] == 1500
    # Ours (marked) for a peer not wanted (yet): kept for a grace while the map-cache fills again, then gone.
    assert pairs(m) == {("198.18.1.2", "198.18.3.2"), ("198.18.5.2", "198.18.3.2"), ("198.18.1.2", "198.18.7.7")}
    m.clock.now += m.grace
    assert m.expire() and ("198.18.1.2", "198.18.7.7") not in pairs(m)
    assert not any(p == ("198.18.1.2", "198.18.7.7") for p in fake.pairs.values() if p in fake.ports)
    assert all(name.startswith("lf") and name != "lfdeadbeef" for name in fake.ports)


DC3 = {**XTR, "name": "dc3", "dpid": 3, "rlocs": [{"address": "198.18.3.2"}, {"address": "198.18.4.2"}],
       "hosts": [], "eid_prefixes": [{"prefix": "10.3.0.0/16", "iid": 42}]}
# Ports made on demand only (`failover.mesh: false`): what the on-demand tests below are about.
ON_DEMAND = {"failover": {"mesh": False}}
XTR1, XTR3 = {**XTR, **ON_DEMAND}, {**DC3, **ON_DEMAND}


def test_with_the_mesh_our_xtrs_keep_ports_towards_each_other_from_the_first_push():
    """Adding a tunnel port stalls a userspace switch: between our own xTRs the ports are made
    before any traffic needs them, both ends, and they stay (no grace runs out on them)."""
    mesh = BfdMesh()
    clock = Clock()
    dc1 = manager(FakeOvsdb(), mesh=mesh, clock=clock)
    dc3 = manager(FakeOvsdb(), DC3, mesh=mesh, clock=clock)
    both_ways = {("198.18.1.2", "198.18.3.2"), ("198.18.1.2", "198.18.4.2"), ("198.18.5.2", "198.18.3.2"),
                 ("198.18.5.2", "198.18.4.2")}
    assert pairs_of(dc1.ports([])) == both_ways  # nothing in the map-cache yet
    assert pairs_of(dc3.ports([])) == {(b, a) for a, b in both_ways}
    clock.now += dc1.grace + 1
    dc1.expire()
    dc3.expire()
    assert pairs(dc1) == both_ways and len(pairs(dc3)) == 4
    # A foreign peer still gets its port only on demand.
    assert ("198.18.1.2", "203.0.113.9") in pairs_of(dc1.ports([ip("203.0.113.9")]))
    assert not any(r == "203.0.113.9" for _, r in pairs_of(dc3.ports([])))


def test_an_xtr_without_the_mesh_still_gets_the_ports_back_that_a_mesh_member_makes():
    mesh = BfdMesh()
    dc1 = manager(FakeOvsdb(), mesh=mesh)
    dc3 = manager(FakeOvsdb(), XTR3, mesh=mesh)
    assert len(pairs_of(dc1.ports([]))) == 4
    assert len(pairs_of(dc3.ports([]))) == 4  # its ports back, for dc1's sessions


def test_between_our_own_xtrs_a_port_is_made_at_both_ends_when_either_needs_it():
    """dc1 resolves dc3: dc3 gets its ports back to dc1 at once (told to recompute), though dc3
    has never sent to dc1; when dc1 stops needing them, both ends keep them for the grace only,
    and no push is asked for what changes nothing (the ports stay their grace; a move's pushes
    must not wait behind empty ones)."""
    mesh = BfdMesh()
    clock = Clock()
    pushed = []
    dc1 = manager(FakeOvsdb(), XTR1, mesh=mesh, clock=clock, changed=lambda: pushed.append("dc1"))
    dc3 = manager(FakeOvsdb(), XTR3, mesh=mesh, clock=clock, changed=lambda: pushed.append("dc3"))
    dc3.ports([])
    dc1.ports([ip("198.18.3.2")])
    assert pushed == ["dc3"]  # the far end recomputes (the controller pushes it)
    # Back from the RLOC dc1 sends to, towards each RLOC of dc1 (its ports leave from each).
    assert {(str(p.local), str(p.remote)) for p in dc3.ports([])} == {("198.18.3.2", "198.18.1.2"),
                                                                    ("198.18.3.2", "198.18.5.2")}
    dc1.ports([])
    assert pushed == ["dc3"]
    dc1.ports([ip("198.18.3.2")])  # needed again within the grace: dc3 has its ports still
    assert pushed == ["dc3"]
    dc1.ports([])
    clock.now += dc1.grace
    assert dc1.expire() and dc3.expire()
    assert pairs(dc1) == pairs(dc3) == set()


def test_a_port_the_far_end_needs_does_not_keep_ours_alive_by_itself():
    """Reciprocity follows what each end needs of its own, so two ends never keep each other's ports forever."""
    mesh = BfdMesh()
    clock = Clock()
    dc1 = manager(FakeOvsdb(), XTR1, mesh=mesh, clock=clock)
    dc3 = manager(FakeOvsdb(), XTR3, mesh=mesh, clock=clock)
    dc1.ports([ip("198.18.3.2")])
    dc3.ports([ip("198.18.1.2")])
    dc1.ports([])
    dc3.ports([])
    clock.now += dc1.grace
    dc1.expire()
    dc3.expire()
    assert pairs(dc1) == pairs(dc3) == set()


def test_an_unreachable_ovsdb_is_counted_and_does_not_stop_the_flows():
    def broken(db, args):
        raise OSError("connection refused")

    m = manager(broken)
    assert len(m.ports([ip("198.18.3.2")])) == 2
    assert m.errors == 2  # the first read, and the write


def test_a_write_while_one_is_running_is_done_after_it():
    fake = FakeOvsdb()
    queued = []
    m = manager(fake, spawn=queued.append)
    m.ports([ip("198.18.3.2")])
    m.ports([ip("198.18.3.2"), ip("198.18.4.2")])
    assert len(queued) == 1
    queued[0]()
    assert len(fake.ports) == 4


def test_config_defaults_and_bounds():
    xtr = config.parse({"xtrs": [XTR]}).xtrs[0]
    assert (xtr.failover.enabled, xtr.failover.bfd.min_rx, xtr.failover.bfd.mult) == (True, 75, 3)
    assert xtr.failover.mesh is True
    with pytest.raises(config.ConfigError, match=r"failover\.mesh"):
        config.parse({"xtrs": [{**XTR, "failover": {"mesh": "yes"}}]})
    with pytest.raises(config.ConfigError, match=r"failover\.bfd\.mult"):
        config.parse({"xtrs": [{**XTR, "failover": {"bfd": {"mult": 0}}}]})
    with pytest.raises(config.ConfigError, match=r"failover\.bfd\.min_rxx"):
        config.parse({"xtrs": [{**XTR, "failover": {"bfd": {"min_rxx": 5}}}]})


def test_an_itr_that_probes_us_gets_a_port_back_unless_it_is_ours_and_no_longer_needs_it():
    mesh = BfdMesh()
    clock = Clock()
    dc1 = manager(FakeOvsdb(), XTR1, mesh=mesh, clock=clock)
    dc3 = manager(FakeOvsdb(), XTR3, mesh=mesh, clock=clock)
    # A foreign ITR probes dc3: dc3 keeps a port towards it (its session needs one back).
    assert ("198.18.3.2", "203.0.113.9") in pairs_of(dc3.ports([ip("203.0.113.9")], probers=[ip("203.0.113.9")]))
    # dc1 (ours) probed dc3 while it sent there; now it no longer does: only the grace keeps dc3's port.
    dc1.ports([])
    dc3.ports([ip("198.18.1.2")], probers=[ip("198.18.1.2")])
    assert not any(r == ip("198.18.1.2") for _, r in dc3.needed)
    clock.now += dc3.grace
    dc3.ports([ip("198.18.1.2")], probers=[ip("198.18.1.2")])
    assert not any(r == "198.18.1.2" for _, r in pairs(dc3))


def pairs_of(ports):
    return {(str(p.local), str(p.remote)) for p in ports}


def test_the_controller_raises_the_switchs_packet_in_queue_where_it_may_write_ovsdb():
    """OVS's default queue of 100 packet-ins drops a burst of arrivals' gratuitous ARPs."""
    fake = FakeOvsdb()
    xtr = config.parse({"xtrs": [XTR]}).xtrs[0]
    assert raise_packet_in_queue(xtr, fake)
    assert ["set", "controller", "br-int", f"controller_queue_size={PACKET_IN_QUEUE}"] in fake.calls

    def broken(db, args):
        raise OSError("connection refused")

    assert not raise_packet_in_queue(xtr, broken)  # a warning, not a crash
    no_db = config.parse({"xtrs": [{k: v for k, v in XTR.items() if k != "ovsdb"}]}).xtrs[0]
    assert not raise_packet_in_queue(no_db, fake)
