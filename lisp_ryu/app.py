"""The Ryu application: OpenFlow and UDP events in, xTR core, flows out.

Thin on purpose.  Everything LISP happens in `lisp_ryu.xtr.core.XtrCore`
and `lisp_ryu.mapserver`; everything about flows in `lisp_ryu.flows`.  This
module only: keeps one session per connected switch, reconciles what the
switch holds with what the core wants (on connect and on every change),
turns packet-ins and datagrams into core calls, and carries out the effects
the cores return.  All of it runs in eventlet green threads, which never
preempt one another, so the cores need no locks.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import os
import random
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable

from lisp_ryu import compat

compat.apply()

from ryu.app.wsgi import WSGIApplication  # noqa: E402
from ryu.base import app_manager  # noqa: E402
from ryu.controller import ofp_event  # noqa: E402
from ryu.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls  # noqa: E402
from ryu.lib import hub  # noqa: E402
from ryu.ofproto import ofproto_v1_3  # noqa: E402

from lisp_ryu import config as config_mod  # noqa: E402
from lisp_ryu.effects import DataplaneChanged, PacketOut, SendControl  # noqa: E402
from lisp_ryu.flows import ofp13  # noqa: E402
from lisp_ryu.flows.compiler import CompileError, compile_plan, remotes_installed  # noqa: E402
from lisp_ryu.flows.diff import diff  # noqa: E402
from lisp_ryu.flows.model import DesiredState  # noqa: E402
from lisp_ryu.flows.pipeline import PipelineError, Table, is_ours  # noqa: E402
from lisp_ryu.lab.netns import open_udp_socket  # noqa: E402
from lisp_ryu.xtr.core import XtrCore  # noqa: E402

LOG = logging.getLogger("lisp_ryu")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
CONFIG_ENV = "LISP_RYU_CONFIG"
MAX_DATAGRAM = 65535
ETH_HEADER = 14


@dataclass
class SwitchSession:
    """One connected switch and what we believe it holds."""

    datapath: object
    installed: DesiredState | None = None  # None until reconciliation read it
    flows: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    meters: list = field(default_factory=list)
    waiting: set = field(default_factory=set)  # xids of outstanding multipart requests


@dataclass
class ControlEndpoint:
    """A LISP control socket (UDP 4342) and the core that owns it."""

    name: str
    sock: socket.socket
    core: object
    clock: Callable[[], float] = time.monotonic  # the Map-Server persists expiries: wall clock
    # An xTR listens on every RLOC (RLOC-probes arrive at each), keyed by the RLOC; it sends from `sock`.
    listeners: dict = field(default_factory=dict)


class LispApp(app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    _CONTEXTS = {"wsgi": WSGIApplication}  # the REST API (lisp_ryu.rest), on ryu-manager's --wsapi-host/port

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get(CONFIG_ENV)
        if not path:
            raise RuntimeError(f"no configuration: start with `lisp-ryu controller --config FILE` ({CONFIG_ENV} unset)")
        self.config = config_mod.load(path)
        self.counters: dict[str, int] = {}
        self.sessions: dict[int, SwitchSession] = {}
        self.xtrs: dict[int, ControlEndpoint] = {}
        self.endpoints: list[ControlEndpoint] = []
        self._wake = hub.Event()
        rng = random.SystemRandom()
        nonces = lambda: rng.getrandbits(64)  # noqa: E731
        now = time.monotonic()

        if self.config.map_server is not None:
            from lisp_ryu.mapserver.service import MapServer

            ms = self.config.map_server
            listen = ms.listen or (ipaddress.ip_address("0.0.0.0"), config_mod.LISP_CONTROL_PORT)
            store = None
            if ms.data_dir:
                from lisp_ryu.mapserver.store import FileStore

                store = FileStore(ms.data_dir)  # registrations survive a controller restart
            else:
                LOG.warning("embedded Map-Server has no data_dir: registrations are kept in memory only")
            # Restoring makes many objects without cycles: collection passes meanwhile would only cost
            # time.  They live until exit: the gc.freeze() below takes them out of full passes.
            collecting = gc.isenabled()
            gc.disable()
            try:
                core = MapServer(ms, nonces=nonces, now=time.time(), store=store)
            finally:
                if collecting:
                    gc.enable()
            sock = open_udp_socket(ms.netns, (str(listen[0]), listen[1]))
            self.endpoints.append(ControlEndpoint("map-server", sock, core, clock=time.time))
            LOG.info("embedded Map-Server listening on %s:%d%s", listen[0], listen[1],
                     f" in netns {ms.netns}" if ms.netns else "")

        for xtr in self.config.xtrs:
            core = XtrCore(xtr, nonces=nonces, rng=rng)
            rloc = xtr.rlocs[0].address
            sock = open_udp_socket(xtr.netns, (str(rloc), config_mod.LISP_CONTROL_PORT))
            listeners = {rloc: sock}
            for other in xtr.rlocs[1:]:
                family = socket.AF_INET if other.address.version == 4 else socket.AF_INET6
                listeners[other.address] = open_udp_socket(
                    xtr.netns, (str(other.address), config_mod.LISP_CONTROL_PORT), family)
            endpoint = ControlEndpoint(f"xtr {xtr.name}", sock, core, listeners=listeners)
            self.endpoints.append(endpoint)
            self.xtrs[xtr.dpid] = endpoint
            LOG.info("xTR %s (dpid %#x) control plane on %s:4342", xtr.name, xtr.dpid, rloc)

        if kwargs.get("wsgi") is not None:
            from lisp_ryu import rest

            rest.register(kwargs["wsgi"], rest.Backend.from_app(self))  # before start: it may restore intent

        for endpoint in self.endpoints:
            for local, listener in (endpoint.listeners or {None: endpoint.sock}).items():
                hub.spawn(self._receive_loop, endpoint, listener, local)
        hub.spawn(self._timer_loop)
        for endpoint in self.xtrs.values():
            self._run(endpoint, endpoint.core.start(now))
        # Ryu, eventlet and the configuration are ~240k objects that live until exit. Out of the
        # collector's full passes they no longer cost ~90 ms every few pushes (bench_controller).
        gc.freeze()

    # ---- effects ---------------------------------------------------------------

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _run(self, endpoint: ControlEndpoint, effects) -> None:
        """Carry out a core's effects: datagrams, then the data plane, then re-injected packets.

        Datagrams go first because they start round trips (a Map-Register for a
        workload that just arrived is what redirects every other site), while
        pushing flows takes milliseconds; held packets go last, so they meet
        their flows.
        """
        dpid = next((d for d, e in self.xtrs.items() if e is endpoint), None)
        for effect in effects:
            if isinstance(effect, SendControl):
                try:
                    endpoint.sock.sendto(effect.payload, (str(effect.destination), effect.port))
                    self.count("control_sent")
                except OSError as exc:
                    self.count("control_send_errors")
                    LOG.warning("%s: cannot send %s to %s:%d: %s", endpoint.name, effect.what or "datagram",
                                effect.destination, effect.port, exc)
        if dpid is not None:
            if any(isinstance(e, DataplaneChanged) for e in effects):
                self._push(dpid, "; ".join(e.reason for e in effects if isinstance(e, DataplaneChanged)))
            for effect in effects:
                if isinstance(effect, PacketOut):
                    self._packet_out(dpid, effect)
        self._wake.set()

    def _packet_out(self, dpid: int, effect: PacketOut) -> None:
        session = self.sessions.get(dpid)
        if session is None:
            return
        dp = session.datapath
        parser, ofp = dp.ofproto_parser, dp.ofproto
        dp.send_msg(parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=effect.in_port,
                                        actions=[parser.OFPActionOutput(ofp.OFPP_TABLE)], data=effect.data))
        self.count("packets_reinjected")

    # ---- pushing desired state -----------------------------------------------------

    def _push(self, dpid: int, reason: str) -> None:
        session = self.sessions.get(dpid)
        endpoint = self.xtrs.get(dpid)
        if session is None or endpoint is None or session.installed is None:
            return  # not connected or not reconciled yet: reconciliation will push
        try:
            desired = compile_plan(endpoint.core.plan())
        except (CompileError, PipelineError):
            # A plan the compiler refuses is a bug: keep the switch as it is (traffic keeps
            # flowing on the installed flows), count it and say why, rather than push half.
            self.count("compile_errors")
            LOG.exception("dpid %#x: cannot compile the data plane (%s); switch left unchanged", dpid, reason)
            return
        ops = diff(session.installed, desired)
        if not ops:
            return
        if LOG.isEnabledFor(logging.DEBUG):
            have = {f.key: f for f in session.installed.flows}
            for op in ops:
                LOG.debug("dpid %#x: %s (was %s)", dpid, op, have.get(getattr(getattr(op, "flow", None), "key", None)))
        dp = session.datapath
        for chunk in ofp13.encode_operations(dp, ops):
            dp.send(chunk)
        dp.send_msg(dp.ofproto_parser.OFPBarrierRequest(dp))
        session.installed = desired
        self.counters["flow_ops"] = self.counters.get("flow_ops", 0) + len(ops)
        LOG.info("dpid %#x: %d flow/group/meter changes (%s)", dpid, len(ops), reason)

    # ---- OpenFlow events ----------------------------------------------------------------

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _on_features(self, ev):
        dp = ev.msg.datapath
        if dp.id not in self.xtrs:
            LOG.warning("switch dpid %#x is not in the configuration; leaving it alone", dp.id)
            return
        session = SwitchSession(dp)
        self.sessions[dp.id] = session
        parser, ofp = dp.ofproto_parser, dp.ofproto
        # Read what the switch holds so we can keep what is right and remove what is stale.
        for request in (
            parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, parser.OFPMatch()),
            parser.OFPGroupDescStatsRequest(dp, 0),
            parser.OFPMeterConfigStatsRequest(dp, 0, ofp.OFPM_ALL),
        ):
            dp.set_xid(request)
            session.waiting.add(request.xid)
            dp.send_msg(request)
        LOG.info("switch dpid %#x connected: reading its tables", dp.id)

    def _collect(self, ev, bucket: str) -> None:
        msg = ev.msg
        session = self.sessions.get(msg.datapath.id)
        if session is None or msg.xid not in session.waiting:
            return
        getattr(session, bucket).extend(msg.body)
        if not msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            session.waiting.discard(msg.xid)
        if not session.waiting and session.installed is None:
            session.installed = DesiredState(
                flows=frozenset(ofp13.flow_from_stats(s) for s in session.flows if is_ours(s.cookie)),
                groups=frozenset(ofp13.group_from_desc(g) for g in session.groups),
                meters=frozenset(ofp13.meter_from_config(m) for m in session.meters),
            )
            LOG.info("dpid %#x holds %d of our flows, %d groups, %d meters: reconciling",
                     msg.datapath.id, len(session.installed.flows), len(session.installed.groups),
                     len(session.installed.meters))
            endpoint = self.xtrs[msg.datapath.id]
            adopted = endpoint.core.adopt(remotes_installed(session.installed), time.monotonic())
            self._push(msg.datapath.id, "reconcile after connect")
            self._run(endpoint, adopted)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _on_flow_stats(self, ev):
        self._collect(ev, "flows")

    @set_ev_cls(ofp_event.EventOFPGroupDescStatsReply, MAIN_DISPATCHER)
    def _on_group_desc(self, ev):
        self._collect(ev, "groups")

    @set_ev_cls(ofp_event.EventOFPMeterConfigStatsReply, MAIN_DISPATCHER)
    def _on_meter_config(self, ev):
        self._collect(ev, "meters")

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def _on_disconnect(self, ev):
        if ev.datapath.id is not None and self.sessions.pop(ev.datapath.id, None):
            LOG.warning("switch dpid %#x disconnected", ev.datapath.id)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _on_error(self, ev):
        msg = ev.msg
        self.count("openflow_errors")
        LOG.error("OpenFlow error from dpid %#x: type %d code %d (xid %d)", msg.datapath.id, msg.type, msg.code,
                  msg.xid)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _on_packet_in(self, ev):
        msg = ev.msg
        endpoint = self.xtrs.get(msg.datapath.id)
        if endpoint is None:
            return
        self.count("packet_in")
        data = bytes(msg.data)
        in_port = msg.match.get("in_port", 0)
        if msg.table_id == Table.CLASSIFY:
            self._on_host_seen(endpoint, in_port, data)
            return
        addresses = _ip_addresses(data)
        if addresses is None:
            self.count("packet_in_not_ip")
            return
        src, dst = addresses
        if dst.is_multicast or dst.is_link_local or dst.is_unspecified or dst.is_loopback:
            self.count("packet_in_not_routable")  # e.g. IPv6 router solicitations: no mapping to ask for
            return
        iid = msg.match.get("metadata", 0) & 0xFFFFFF
        try:
            effects = endpoint.core.handle_miss(in_port, iid, src, dst, data, time.monotonic())
        except Exception:
            self.count("core_exceptions")
            LOG.exception("%s: error handling a miss for %s", endpoint.name, dst)
            return
        self._run(endpoint, effects)

    def _on_host_seen(self, endpoint: ControlEndpoint, in_port: int, data: bytes) -> None:
        """The learning flow sent us a packet from an unknown host in a dynamic-EID prefix."""
        host = _sender(data)
        if host is None:
            self.count("learn_not_ip_or_arp")
            return
        source, mac = host
        try:
            effects = endpoint.core.handle_host_seen(in_port, source, mac, data, time.monotonic())
        except Exception:
            self.count("core_exceptions")
            LOG.exception("%s: error learning host %s", endpoint.name, source)
            return
        self._run(endpoint, effects)

    # ---- sockets and timers ---------------------------------------------------------------

    def _receive_loop(self, endpoint: ControlEndpoint, sock: socket.socket, local: IPAddress | None) -> None:
        """Datagrams from one socket; an xTR core is told which of its RLOCs (`local`) was addressed."""
        where = {} if local is None else {"destination": local}
        while True:
            try:
                payload, (host, port, *_) = sock.recvfrom(MAX_DATAGRAM)
            except OSError as exc:
                LOG.error("%s: receive failed: %s", endpoint.name, exc)
                hub.sleep(1)
                continue
            try:
                effects = endpoint.core.handle_control(payload, ipaddress.ip_address(host), port, endpoint.clock(),
                                                       **where)
            except Exception:  # a core bug must not kill the socket loop; it is counted and logged
                self.count("core_exceptions")
                LOG.exception("%s: error handling a datagram from %s:%d", endpoint.name, host, port)
                continue
            self._run(endpoint, effects)

    def _timer_loop(self) -> None:
        while True:
            waits = [d - e.clock() for e in self.endpoints if (d := e.core.next_deadline()) is not None]
            self._wake.clear()
            self._wake.wait(timeout=max(0.0, min([1.0, *waits])))
            for endpoint in self.endpoints:
                deadline = endpoint.core.next_deadline()
                now = endpoint.clock()
                if deadline is not None and deadline <= now:
                    try:
                        effects = endpoint.core.handle_timer(now)
                    except Exception:
                        self.count("core_exceptions")
                        LOG.exception("%s: error in timer", endpoint.name)
                        continue
                    self._run(endpoint, effects)


def _sender(frame: bytes) -> tuple[IPAddress, str] | None:
    """(source IP, source MAC) of an IPv4/IPv6 packet or an ARP message (sender fields)."""
    if len(frame) < ETH_HEADER:
        return None
    (eth_type,) = struct.unpack_from("!H", frame, 12)
    if eth_type == 0x0806 and len(frame) >= ETH_HEADER + 28:
        sha, spa = frame[ETH_HEADER + 8:ETH_HEADER + 14], frame[ETH_HEADER + 14:ETH_HEADER + 18]
        return ipaddress.IPv4Address(spa), ":".join(f"{b:02x}" for b in sha)
    addresses = _ip_addresses(frame)
    if addresses is None:
        return None
    return addresses[0], ":".join(f"{b:02x}" for b in frame[6:12])


def _ip_addresses(frame: bytes) -> tuple[IPAddress, IPAddress] | None:
    """(source, destination) of an Ethernet frame from a host port (no VLANs on host ports)."""
    if len(frame) < ETH_HEADER + 20:
        return None
    (eth_type,) = struct.unpack_from("!H", frame, 12)
    if eth_type == 0x0800:
        return (ipaddress.IPv4Address(frame[ETH_HEADER + 12:ETH_HEADER + 16]),
                ipaddress.IPv4Address(frame[ETH_HEADER + 16:ETH_HEADER + 20]))
    if eth_type == 0x86DD and len(frame) >= ETH_HEADER + 40:
        return (ipaddress.IPv6Address(frame[ETH_HEADER + 8:ETH_HEADER + 24]),
                ipaddress.IPv6Address(frame[ETH_HEADER + 24:ETH_HEADER + 40]))
    return None
