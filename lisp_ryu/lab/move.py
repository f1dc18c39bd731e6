"""Move a host to another site as a live migration does (workload mobility).

A new vif (a tap of the new site's br-int) is plugged in first, then the host
switches over to it, keeping its address, MAC, routes, ARP cache and
sockets, and announces itself with a gratuitous ARP; the old port (and its tap)
go last.  A move that fails half-way puts the host back.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
import time
from dataclasses import dataclass, replace
from typing import Callable

from lisp_ryu.lab import topology as topo
from lisp_ryu.glue.netns import run_in_netns
from lisp_ryu.lab.ovs import host_port_args, tap_to_host
from lisp_ryu.lab.processes import run_in
from lisp_ryu.lab.rtnetlink import InterfaceSetup, NetlinkError, RouteSocket
from lisp_ryu.lab.running import load_state, locked, vsctl
from lisp_ryu.lab.state import HostState, LabError, LabState, SiteState, write_state
from lisp_ryu.wire.ecm import internet_checksum

log = logging.getLogger("lisp_ryu.lab")


@dataclass(frozen=True)
class Move:
    """One host's move between sites and when its steps happened (`time.time()`,
    the clock `ping -D` and the mobility scenario use)."""

    host: str
    from_site: str
    to_site: str
    from_ofport: int
    to_ofport: int
    started: float  # the switchover begins: the routes move to the new interface (which holds the addresses)
    attached: float  # the old eth0 is paused (or down) and away: the host is wholly on the new one
    announced: float  # its gratuitous ARP is sent
    unplugged: float  # the old eth0 and the old site's port are gone
    state: LabState  # the lab after the move (also written to the state file)
    # When the new vif's port was added at the new site: began, and OVS had it.  A userspace
    # ovs-vswitchd stops forwarding for a few milliseconds when a port is added (all its ports).
    plugged: tuple[float, float] | None = None

    @property
    def swap_ms(self) -> float:
        """How long the interface swap took (the host can take and answer packets throughout)."""
        return (self.attached - self.started) * 1000.0


# A host's interfaces during a move: the new one waits under one name (the
# host has an eth0 already), the old one leaves under another.
INCOMING_IFNAME = f"{topo.HOST_IFNAME}-incoming"
OUTGOING_IFNAME = f"{topo.HOST_IFNAME}-outgoing"
# Seconds between a planned move's announcement (its answer) and the switchover: a live
# migration's memory copy, which takes at least this long (QEMU's own downtime limit is 0.3 s).
# The answer says the switches' flow tables hold the move; a userspace ovs-vswitchd applies a
# flow-table change to the datapath flows it has cached in its revalidator threads, later: in the
# lab, 2 cores loaded, the destination still sent the workload's traffic on to its old site by a
# stale cached flow 8-17 ms after the barrier (captured at the sites' uplinks), and switchovers
# 5 ms after the answer lost 1-5 probes at 1 ms in 5 of 68 moves.
PRECOPY = 0.2
# A bridge kept down in the host during a move: the old eth0, made its port at the
# switchover, swallows what the old site still sends, as a paused VM's vif does.
LIMBO_IFNAME = "limbo"


def _rename_live(net: RouteSocket, index: int, name: str, what: str) -> None:
    """Rename a link, up or down (Linux >= 6.2 renames one that is up); an
    older kernel refuses an up one (EBUSY), and it is renamed down and
    brought up again."""
    try:
        net.rename(index, name, what)
    except NetlinkError as exc:
        if exc.errno != errno.EBUSY:
            raise
        net.set_up(index, False, what)
        net.rename(index, name, what)
        net.set_up(index, True, what)


def move(host: str, site: str) -> LabState:
    """Re-attach HOST to SITE's xTR keeping its IP and MAC; returns the new lab state."""
    return move_host(host, site).state


def move_host(host: str, site: str, planned: bool = False, hold: bool = False, silent: bool = False,
              before_switchover: Callable[[], None] | None = None) -> Move:
    """Move a host to another site as a live-migrated VM moves, and time it.

    As a cloud's destination hypervisor plugs the VM's new vif before the
    switchover, the new site gets a new vif first: a tap of the new br-int at
    the port reserved for the host there (its tenant's in the controller's
    configuration) or else the lowest free OpenFlow port, which waits in
    the host, up but silent, with the MAC and MTU of the host's eth0.  The
    switchover (the outage) then works from sockets opened beforehand: eth0
    is paused (it swallows what it receives, its carrier stays) and renamed
    away, the new interface becomes eth0 and gets the old one's addresses,
    routes and neighbour (ARP) entries, and the host
    announces itself with a gratuitous ARP, as a hypervisor does after a
    migration, and again in rounds (`REANNOUNCE_AFTER`).  The host's sockets
    live on (its address never left the namespace).  Only then does the old
    site lose its port (and the old tap with it).  A move that fails half-way puts
    the host back.

    `planned`: the orchestrator tells the controller before the switchover, once
    the new vif is plugged (POST /lisp/v1/moves with its port, one per EID: a
    dual-stack host's IPv6 address too), and switches over PRECOPY later: the new
    site delivers the host's traffic to the new port from then on and every other
    xTR sends it to both sites meanwhile (draft-ietf-lisp-predictive-rlocs).  `hold`: announced
    without the port, as an orchestrator that does not know it would; the
    new site's controller holds the traffic until the host appears.  `silent`: the
    host does not announce itself after the switchover (a guest that sends nothing
    by itself, a hypervisor that sends no RARP): only its answers say where it is.
    `before_switchover()`: called once the new vif is plugged (and the move announced), right
    before the switchover (a test restarts the controller there).
    """
    with locked():
        state, h, old, new = _the_move(host, site)
        migration = _Migration(state, h, old, new, _free_ofport(new, state, host))
        try:
            try:
                plug_began = time.time()
                migration.plug()
                plugged = (plug_began, time.time())
                if planned:
                    announce_move(state, h, new, None if hold else migration.ofport)
                    time.sleep(PRECOPY)
                if before_switchover is not None:
                    before_switchover()
            except LabError as exc:
                migration.put_back_or_explain(exc)
                raise LabError(f"moving {host} from {old.name} to {site} failed before the switchover, it stays at "
                               f"{old.name} port {h.ofport}: {exc}") from exc
            try:
                started, attached, announced = migration.switch_over(announce_it=not silent)
            except LabError as exc:
                migration.put_back_or_explain(exc)
                raise LabError(f"moving {host} from {old.name} to {site} failed, it is back at {old.name} "
                               f"port {h.ofport}: {exc}") from exc
            moved = _state_after_move(state, host, old.name, new.name, migration.ofport)
            write_state(moved)
            try:
                migration.unplug_old()
                unplugged = time.time()
            except LabError as exc:
                raise LabError(f"{host} moved from {old.name} to {site} (port {migration.ofport}), but removing "
                               f"its old port at {old.name} failed: {exc}\n`lisp-ryu lab down` removes the lab") from exc
            if not silent:
                reannounce([(h, migration.packet_socket, announced)])
        finally:
            migration.close()
    result = Move(host=host, from_site=old.name, to_site=new.name, from_ofport=h.ofport, to_ofport=migration.ofport,
                  started=started, attached=attached, announced=announced, unplugged=unplugged, state=moved,
                  plugged=plugged)
    log.info("moved %s from %s port %d to %s port %d: no link for %.1f ms", host, old.name, h.ofport,
             new.name, migration.ofport, result.swap_ms)
    return result


def _the_move(host: str, site: str) -> tuple[LabState, HostState, SiteState, SiteState]:
    """The lab (up), the host, the site it is at and `site` (a LISP site it is not at), or LabError."""
    state = load_state()
    if state.status != "up":
        raise LabError(f"the lab is {state.status}, not up: wait for `lisp-ryu lab up` or run `lisp-ryu lab down`")
    h = state.host(host)
    new = state.site(site)
    if h.site == new.name:
        raise LabError(f"host {host} is already at site {site}")
    if new.is_pxtr:
        raise LabError(f"site {site} is a PxTR: hosts move between LISP sites "
                       f"({', '.join(s.name for s in state.lisp_sites)})")
    return state, h, state.site(h.site), new


def ended_at(answers: list[dict]) -> list[str]:
    """The xTRs whose part in a move the calls-off (`abort_planned_move`'s answers) ended."""
    return sorted({name for answer in answers for name in answer.get("ended_at", [])})


def abort_planned_move(host: str, site: str, hold: bool = False) -> list[dict]:
    """A planned move whose migration fails after its announcement: the new vif is plugged and the
    move announced as `move_host(planned=True)` does them, then, PRECOPY later, the orchestrator
    calls it off (DELETE /lisp/v1/moves/IID/EID, for each EID) and unplugs the new vif.  The host
    never leaves its site.  Returns the controller's answers to the calls-off."""
    from lisp_ryu.lab import controller as lab_controller

    with locked():
        state, h, old, new = _the_move(host, site)
        migration = _Migration(state, h, old, new, _free_ofport(new, state, host))
        try:
            migration.plug()
            announce_move(state, h, new, None if hold else migration.ofport)
            time.sleep(PRECOPY)
            answers = [lab_controller.cancel_move(state, h.iid, eid) for eid in h.eids]
            log.info("planned move of %s to %s called off: ended at %s", host, site, ", ".join(ended_at(answers)))
            return answers
        finally:
            try:
                migration.put_back()
            finally:
                migration.close()


def announce_move(state: LabState, h: HostState, new: SiteState, port: int | None,
                  timeout: float | None = None) -> list[dict]:
    """POST /lisp/v1/moves for each EID of `h` (a dual-stack workload moves with both), with the
    new vif's OpenFlow `port` at `new` (None: the controller holds the traffic there instead);
    `timeout`: the move's window in seconds (None: the controller's default)."""
    from lisp_ryu.lab import controller as lab_controller

    answers = []
    for eid in h.eids:
        answer = lab_controller.planned_move(state, h.iid, eid, new.name, port=port, timeout=timeout)
        log.info("planned move of %s (%s) announced%s: replicating at %s; the destination %s", h.name, eid,
                 "" if port is None else f" with port {port}",
                 ", ".join(answer.get("replicating_at", [])) or "no other xTR",
                 "delivers by its new flow" if answer.get("delivering") else "delivered nothing by its new flow yet")
        if answer.get("installed") is False or answer.get("not_connected"):
            log.warning("planned move of %s (%s): the switches did not confirm its flows in time (%s); "
                        "moving anyway", h.name, eid, ", ".join(answer.get("not_connected", [])) or "slow")
        answers.append(answer)
    return answers


class _Migration:
    """One host's move, step by step: plug the new interface in, switch
    over, unplug the old one; or put the host back from wherever it got."""

    def __init__(self, state: LabState, h: HostState, old: SiteState, new: SiteState, ofport: int):
        self.state, self.h, self.old, self.new, self.ofport = state, h, old, new, ofport
        self.net: RouteSocket | None = None  # rtnetlink in the host's namespace
        self.outgoing: int | None = None  # the host's eth0 (interface index)
        self.incoming: int | None = None  # its replacement
        self.carried: InterfaceSetup | None = None  # what eth0 held at the switchover
        self.packet_socket: socket.socket | None = None
        self.limbo: int | None = None  # the host's down bridge, if the kernel has bridges (`prepare_switchover`)
        self.paused = False  # the old eth0 is a port of the limbo bridge
        self.incoming_up = False  # the new interface is up before the switchover (`prepare_switchover`)

    def plug(self) -> None:
        """The new vif: a tap of the new br-int (`ovs.host_port_args`), moved into the host
        with eth0's MAC and MTU (up and silent, see `prepare_switchover`); and the
        sockets the switchover needs (entering
        a namespace waits for an RCU grace period: none of that happens during it)."""
        h, new = self.h, self.new
        self.net = RouteSocket(h.namespace)
        eth0 = self.net.link(topo.HOST_IFNAME)
        self.outgoing = eth0.index
        # Waits until the new ovs-vswitchd has the port: from the switchover on it forwards.
        vsctl(new.name, *host_port_args(h.name, self.ofport), state=self.state)
        _check_host_port(new, h.name, self.ofport, self.state)
        run_in(new.namespace, ["ip", *tap_to_host(h.name, h.namespace, INCOMING_IFNAME, eth0.mac, eth0.mtu).split()])
        self.incoming = self.net.link(INCOMING_IFNAME).index
        self.prepare_switchover()
        self.packet_socket = host_packet_socket(h, INCOMING_IFNAME)

    def prepare_switchover(self) -> None:
        """So that neither switch sees a port change at the switchover, as
        neither does for a live-migrated VM (both vifs are up throughout):
        the host's limbo bridge (down) to pause the old eth0 in, and the new
        interface up already, silent (no IPv6 link-local address of its own:
        it gets the old eth0's).  Where the kernel cannot (no bridges, no
        IPv6), the old eth0 goes down and the new one comes up at the
        switchover instead, and the switches see their carriers change."""
        try:
            self.limbo = self.net.bridge(LIMBO_IFNAME, f"making the {LIMBO_IFNAME} bridge").index
        except LabError as exc:
            log.warning("%s: the old %s will go down at the switchover instead of pausing: %s",
                        self.h.name, topo.HOST_IFNAME, exc)
            self.limbo = None
        try:
            self.net.no_link_local(self.incoming, f"keeping {INCOMING_IFNAME} silent")
            self.net.set_up(self.incoming, True, f"bringing {INCOMING_IFNAME} up")
            self.incoming_up = True
        except LabError as exc:
            log.warning("%s: the new %s will come up at the switchover: %s", self.h.name, topo.HOST_IFNAME, exc)

    def switch_over(self, announce_it: bool = True) -> tuple[float, float, float]:
        """The switchover: the new interface takes what eth0 holds, eth0 is
        paused (or down) and away, the new one becomes eth0, the gratuitous
        ARP.  Returns when it began (the routes move to the new interface),
        when the host was wholly on the new interface and when it announced
        itself (`time.time()`).

        The new interface gets eth0's addresses, neighbour (ARP) entries and,
        once its IPv6 addresses are usable (`RouteSocket.wait_usable`), routes
        before eth0 loses them, and each route moves over in one replace: the
        host can take a packet and answer it at every instant,
        as a migrated VM whose new vif queues what arrives while it resumes
        (the lab's vif does not queue: in a gap without an address, what the
        new site delivered to a planned move's announced port was lost, 1-3
        probes at 1 ms).  For the few hundred microseconds both interfaces
        hold the addresses the host takes what either site delivers, and
        answers through the new one.

        The old eth0 is then paused as a migrated VM's vif is: it becomes a
        port of the host's limbo bridge, which is down, so it swallows every
        frame the old site still sends it; its carrier stays, as a paused
        VM's tap keeps it, so the old site's switch sees no port change
        until the port is removed (a userspace OVS handles each carrier
        change in the thread that forwards, and 200 of them in a burst
        stall every port of the switch).  Without a limbo bridge, eth0 goes
        down.

        The announcement comes last, once the new eth0 has the addresses:
        sent before, the packets the controller holds for the host and
        re-injects the moment it learns it (a millisecond or two later)
        reached a host without its address and were lost (tried: the
        1 ms prober lost a median 7 probes a move instead of 0).

        The host needs no telling to keep the copied ARP cache
        (arp_evict_nocarrier): the new eth0 never loses carrier, its peer
        being up before it is."""
        net, eth0, incoming = self.net, self.outgoing, self.incoming
        self.carried = net.setup_of(eth0, link_local=self.incoming_up)
        if not self.incoming_up:
            net.set_up(incoming, True, f"bringing the new {topo.HOST_IFNAME} up")
        net.apply_addresses(incoming, self.carried, f"the new {topo.HOST_IFNAME}")
        if not net.wait_usable(incoming):
            log.warning("%s: an IPv6 address of the new %s has no local route after 1 s: moving on", self.h.name,
                        topo.HOST_IFNAME)
        # The switchover proper: until here the host answered through eth0 only (what reached the
        # new interface too, a planned move's copies, was answered there as well).
        started = time.time()
        net.apply_routes(incoming, self.carried, f"the new {topo.HOST_IFNAME}")
        if self.limbo is not None:
            net.set_master(eth0, self.limbo, f"pausing {topo.HOST_IFNAME} in the {LIMBO_IFNAME} bridge")
            self.paused = True
        else:
            net.set_up(eth0, False, f"taking {topo.HOST_IFNAME} down")
        net.remove(eth0, self.carried, topo.HOST_IFNAME)  # its routes moved already: the addresses go
        _rename_live(net, eth0, OUTGOING_IFNAME, f"renaming {topo.HOST_IFNAME} to {OUTGOING_IFNAME}")
        _rename_live(net, incoming, topo.HOST_IFNAME, f"renaming {INCOMING_IFNAME} to {topo.HOST_IFNAME}")
        attached = time.time()
        if announce_it:
            announce(self.h, self.packet_socket)
        return started, attached, time.time()

    def unplug_old(self) -> None:
        """The old eth0 (a tap) is deleted here, then the old site's port goes: closed by
        ovs-vswitchd while it still existed, the tap would be torn down in the thread that
        forwards every packet of that switch."""
        self.remove_old_link()
        vsctl(self.old.name, "del-port", topo.BR_INT, self.h.name, state=self.state)

    def remove_old_link(self) -> None:
        """The old eth0 (with its peer, if a veth), unless it went already (an evacuation's old
        ports go first, and OVS closing a tap removes it); then the limbo bridge."""
        try:
            self.net.delete_link(self.outgoing, f"deleting the old {topo.HOST_IFNAME} ({OUTGOING_IFNAME})")
        except NetlinkError as exc:
            if exc.errno != errno.ENODEV:
                raise
        self._remove_limbo()

    def _remove_limbo(self) -> None:
        if self.limbo is not None:
            self.net.delete_link(self.limbo, f"deleting the {LIMBO_IFNAME} bridge")
            self.limbo = None

    def put_back(self) -> None:
        """Undo a half-done move, whatever step it failed at: the new vif and
        port go, and the host's own eth0 is eth0 again, up, with what it held."""
        h = self.h
        if self.net is not None:
            incoming = self.incoming
            if incoming is None:  # made, but not looked up: find it by name
                found = self.net.find_link(INCOMING_IFNAME)
                incoming = found.index if found else None
            if incoming is not None:
                self.net.delete_link(incoming, f"deleting the new interface (#{incoming})")
            if self.outgoing is not None:
                eth0 = self.net.link_at(self.outgoing)
                if self.paused:
                    self.net.set_master(eth0.index, 0, f"releasing {eth0.name} from the {LIMBO_IFNAME} bridge")
                    self.paused = False
                if eth0.name != topo.HOST_IFNAME:
                    _rename_live(self.net, eth0.index, topo.HOST_IFNAME,
                                 f"renaming {eth0.name} back to {topo.HOST_IFNAME}")
                if not eth0.up:
                    self.net.set_up(eth0.index, True, f"bringing {topo.HOST_IFNAME} back up")
                if self.carried is not None:  # down or paused, eth0 lost its routes and neighbours
                    self.net.apply(eth0.index, self.carried, topo.HOST_IFNAME)
            self._remove_limbo()
        vsctl(self.new.name, "--if-exists", "del-port", topo.BR_INT, h.name, state=self.state)
        _check_host_port(self.old, h.name, h.ofport, self.state)

    def put_back_or_explain(self, failure: LabError) -> None:
        try:
            self.put_back()
        except LabError as again:
            raise LabError(f"moving {self.h.name} from {self.old.name} to {self.new.name} failed: {failure}\n"
                           f"putting it back at {self.old.name} failed too: {again}\n"
                           f"`lisp-ryu lab down` removes the lab") from failure

    def close(self) -> None:
        for sock in (self.packet_socket, self.net):
            if sock is not None:
                sock.close()


def _free_ofport(site: SiteState, state: LabState, host: str | None = None) -> int:
    """The port reserved for `host` at the site (SiteState.reserved_ports) if it
    is free, else the lowest br-int host port number (`topo.host_ofport`) that neither
    the state file nor the switch itself has in use."""
    used = set(site.host_ports.values()) | {site.tunnel_ofport}
    ports = set(vsctl(site.name, "list-ports", topo.BR_INT, state=state).split())
    out = vsctl(site.name, "--format=csv", "--data=bare", "--no-headings", "--columns=name,ofport",
                "list", "interface", state=state)
    for line in out.splitlines():
        name, _, ofport = line.partition(",")
        if name in ports and ofport.strip().lstrip("-").isdigit():
            used.add(int(ofport))
    reserved = site.reserved_ports.get(host) if host is not None else None
    if reserved is not None and reserved not in used:
        return reserved
    for number in map(topo.host_ofport, range(1, topo.MAX_HOSTS_PER_SITE + 1)):
        if number not in used:
            return number
    raise LabError(f"site {site.name}: no free br-int host port below {topo.HOST_OFPORT_LIMIT}")


def _check_host_port(site: SiteState, host: str, ofport: int, state: LabState) -> None:
    """OVS reports a port it could not open (or numbered otherwise) only in its Interface table."""
    got, error = (vsctl(site.name, "--format=csv", "--data=bare", "--no-headings", "--columns=ofport,error",
                        "list", "interface", host, state=state).strip().split(",", 1) + [""])[:2]
    if error.strip():
        raise LabError(f"site {site.name}: OVS could not open port {host}: {error.strip()}")
    if got.strip() != str(ofport):
        raise LabError(f"site {site.name}: port {host} got OpenFlow port {got.strip()}, wanted {ofport}")


def _state_after_move(state: LabState, host: str, old: str, new: str, ofport: int) -> LabState:
    def site(s: SiteState) -> SiteState:
        if s.name == old:
            return replace(s, host_ports={k: v for k, v in s.host_ports.items() if k != host})
        if s.name == new:
            return replace(s, host_ports={**s.host_ports, host: ofport})
        return s

    return replace(state, sites=tuple(site(s) for s in state.sites),
                   hosts=tuple(replace(x, site=new, ofport=ofport) if x.name == host else x for x in state.hosts))


def gratuitous_arp(mac: str, ip: str) -> bytes:
    """A broadcast ARP request from `mac` asking for its own `ip` (sender =
    target address): how a host or hypervisor announces where it now is."""
    hw = bytes.fromhex(mac.replace(":", ""))
    addr = ipaddress.IPv4Address(ip).packed
    ethernet = b"\xff" * 6 + hw + b"\x08\x06"
    arp = b"\x00\x01\x08\x00\x06\x04\x00\x01" + hw + addr + b"\x00" * 6 + addr
    return (ethernet + arp).ljust(60, b"\x00")


def unsolicited_advertisement(mac: str, ip6: str) -> bytes:
    """An unsolicited Neighbor Advertisement (RFC 4861 §7.2.6) to all nodes, Override set, with the
    target link-layer option: how a dual-stack host announces its IPv6 address where it now is."""
    hw = bytes.fromhex(mac.replace(":", ""))
    src, dst = ipaddress.IPv6Address(ip6).packed, ipaddress.IPv6Address("ff02::1").packed
    body = bytearray(struct.pack("!BBHI", 136, 0, 0, 1 << 29) + src + bytes((2, 1)) + hw)
    pseudo = src + dst + struct.pack("!I3xB", len(body), 58)
    struct.pack_into("!H", body, 2, internet_checksum(pseudo + bytes(body)))
    ipv6 = struct.pack("!IHBB", 6 << 28, len(body), 58, 255) + src + dst
    return b"\x33\x33\x00\x00\x00\x01" + hw + b"\x86\xdd" + ipv6 + bytes(body)


def host_packet_socket(h: HostState, ifname: str = topo.HOST_IFNAME) -> socket.socket:
    """A raw packet socket on one of the host's interfaces, made inside its
    namespace.  It is bound to the interface, not its name: a move opens one
    on the new interface before the switchover (entering a namespace waits
    for an RCU grace period) and sends from it once that is eth0."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        try:
            sock.bind((ifname, 0))
        except OSError:
            sock.close()
            raise
        return sock

    try:
        return run_in_netns(h.namespace, make)
    except OSError as exc:
        raise LabError(f"host {h.name}: cannot open a packet socket on {ifname}: {exc}") from None


# After its first announcement at the switchover, a migrated host announces itself again
# this long after it (seconds), as a hypervisor does (QEMU by default announces 5 times,
# the gaps growing from 50 ms by 100 ms; here 3 more within 350 ms): one gratuitous ARP
# lost on the way to the controller (a burst of arrivals) must not leave a silent
# workload unlearned.
REANNOUNCE_AFTER = (0.05, 0.15, 0.35)


def reannounce(moved: list[tuple[HostState, socket.socket, float]]) -> None:
    """Each (host, its packet socket, when it first announced) announces itself again at
    REANNOUNCE_AFTER; returns after the last round.  A failure is logged, not raised:
    the move itself is done."""
    for delay in REANNOUNCE_AFTER:
        for h, sock, first in moved:
            wait = first + delay - time.time()
            if wait > 0:
                time.sleep(wait)
            try:
                announce(h, sock)
            except LabError as exc:
                log.warning("%s", exc)


def announce(h: HostState, sock: socket.socket | None = None) -> None:
    """Send the host's gratuitous ARP (and, dual-stack, its unsolicited NA)
    out of its eth0, or out of the interface `sock` is bound to (a raw socket
    from inside its namespace: iputils-arping is not needed)."""
    own = sock is None
    sock = host_packet_socket(h) if own else sock
    try:
        sock.send(gratuitous_arp(h.mac, h.ip))
        if h.ip6:
            sock.send(unsolicited_advertisement(h.mac, h.ip6))
    except OSError as exc:
        raise LabError(f"host {h.name}: sending its gratuitous ARP/NA on {topo.HOST_IFNAME} failed: {exc}") from None
    finally:
        if own:
            sock.close()
