"""The controller: switch sessions, the effect executor, push and reconcile -- without Ryu events.

Everything between "an event arrived" and "bytes leave" lives here, so unit
tests drive it with a fake datapath and fake sockets.  What it needs from
the world is injected:

- per switch, a datapath (Ryu's, or a fake): `id`, `ofproto`,
  `ofproto_parser`, `xid`, `set_xid(msg)`, `send_msg(msg)`, `send(bytes)`;
- per control endpoint, `send(payload, (host, port))` (a socket's sendto)
  and its clock;
- `wake()`: the timer loop must look at the deadlines again.

The Ryu app (`glue.ryu_app`) turns events into calls of the public methods
below.  Everything runs in one thread of control (eventlet green threads
never preempt one another), so the cores need no locks.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import random
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from lisp_ryu import config as config_mod
from lisp_ryu.effects import Core, DataplaneChanged, HostArrived, PacketOut, RegisterChanges, SendControl
from lisp_ryu.flows import ofp13, readback
from lisp_ryu.flows.compiler import CompileError, compile_plan
from lisp_ryu.flows.diff import diff
from lisp_ryu.flows.model import DesiredState
from lisp_ryu.flows.pipeline import Owner, PipelineError, Table, cookie_owner, is_ours
from lisp_ryu.glue import moves, planned_journal
from lisp_ryu.glue.failover_ports import BfdMesh, FailoverPorts, raise_packet_in_queue
from lisp_ryu.glue.fast_lane import FastLane
from lisp_ryu.glue.flow_counters import FlowCounters
from lisp_ryu.glue.frames import ip_addresses, sender
from lisp_ryu.glue.netns import open_udp_socket
from lisp_ryu.wire import LISP_CONTROL_PORT
from lisp_ryu.mapserver.service import MapServer
from lisp_ryu.mapserver.store import FileStore
from lisp_ryu.xtr.core import XtrCore

LOG = logging.getLogger("lisp_ryu")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_WAIT = 1.0  # the timer loop looks at the deadlines at least this often
PUSH_MAX_WAIT = 0.1  # a push waits at most this long for queued input (`Controller.busy`) to be handled first
BUSY_POLL = 0.005
PREPARE_WAIT = 1.0  # seconds a planned move's answer waits for the switches to confirm its flows
# Re-injections waiting for a deferred push, per switch.  A burst holds each for one hold-off
# (PUSH_MAX_WAIT) at most, so this bounds memory only against a flood of them.
MAX_HELD_REINJECTIONS = 4096


@dataclass
class SwitchSession:
    """One connected switch and what we believe it holds."""

    datapath: Any
    installed: DesiredState | None = None  # None until reconciliation read it
    flows: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    meters: list = field(default_factory=list)
    waiting: set = field(default_factory=set)  # xids of outstanding multipart requests
    pushed_at: float = float("-inf")  # when the last push ended (its xTR's clock)
    push_cost: float = 0.0  # the CPU its planning (compile and diff) took: what waiting saves
    deferred: list = field(default_factory=list)  # reasons of changes waiting for the next push
    deferred_at: float = 0.0  # when the first of them came
    barrier_sent: int | None = None  # xid of the barrier after the last push
    barrier_done: int | None = None  # xid of the last barrier the switch answered
    # Packets to re-inject once the deferred push has left: re-injected now, they would miss its flows and
    # come straight back (a learned host's packets in an evacuation did, 4 times each on average).
    reinject: list = field(default_factory=list)


@dataclass
class ControlEndpoint:
    """A LISP control endpoint (UDP LISP_CONTROL_PORT) and the core that owns it."""

    name: str
    core: Core
    send: Callable[[bytes, tuple[str, int]], Any]  # a socket's sendto
    clock: Callable[[], float] = time.monotonic  # the Map-Server persists expiries: wall clock
    dpid: int | None = None  # an xTR's switch
    # What the receive loops read: local address -> socket.  An xTR listens on every RLOC
    # (RLOC-probes arrive at each) and is told which was addressed; the Map-Server's key is None.
    receivers: dict = field(default_factory=dict)
    failover: FailoverPorts | None = None  # the xTR's per-peer BFD ports (xtrs[].ovsdb given)


class Controller:
    """Sessions with the switches and the control endpoints of the cores, driven by events."""

    def __init__(self, wake: Callable[[], None] = lambda: None, fast_lane: bool = False,
                 defer: Callable[[Callable[[], None]], Any] | None = None) -> None:
        self.wake = wake
        # defer(fn): run fn once what is sent now has left (Ryu: hub.spawn); None: at once.
        self.defer = defer or (lambda fn: fn())
        self.arrivals = moves.Arrivals(self)  # workloads learned here, told to the other xTRs in batches
        self.planned = planned_journal.PlannedJournal()  # the open planned moves (a file: `from_config`)
        # busy(): input is queued (datagrams, switch events): a push waits for it, see `_push_soon`.
        self.busy: Callable[[], bool] = lambda: False
        # wait_until(condition, timeout) -> condition(): Ryu's app lets the hub run meanwhile; here, no wait.
        self.wait_until: Callable[[Callable[[], bool], float], bool] = lambda condition, timeout: condition()
        # Datagrams from one of our cores to another are also handed over at once (glue.fast_lane).
        self.fast_lane = fast_lane
        self.counters: dict[str, int] = {}
        self._lane = FastLane(self._handle_datagram, self.count)
        self.sessions: dict[int, SwitchSession] = {}
        self.flow_counters = FlowCounters()  # our reads of flows' packet counters (a planned move's)
        self.xtrs: dict[int, ControlEndpoint] = {}
        self.endpoints: list[ControlEndpoint] = []
        # dpid -> {"compile": its plan cannot be compiled or sent, "install": it refused what we sent}
        self.problems: dict[int, dict[str, str]] = {}

    @classmethod
    def from_config(cls, config: config_mod.Config, wake: Callable[[], None] = lambda: None,
                    open_socket: Callable[..., Any] = open_udp_socket, clock: Callable[[], float] = time.monotonic,
                    wall_clock: Callable[[], float] = time.time,
                    spawn: Callable[[Callable[[], None]], Any] | None = None, fast_lane: bool = False,
                    defer: Callable[[Callable[[], None]], Any] | None = None) -> Controller:
        """The cores of `config` on sockets from `open_socket(netns, (host, port)[, family])`.

        The xTR cores run on `clock`; the Map-Server on `wall_clock`, because it
        persists expiries across restarts.  `spawn(fn)` runs the OVSDB writes of
        the BFD ports in the background (synchronously if None).
        """
        controller = cls(wake, fast_lane=fast_lane, defer=defer)
        rng = random.SystemRandom()
        nonces = lambda: rng.getrandbits(64)  # noqa: E731
        if config.map_server is not None:
            ms = config.map_server
            listen = ms.listen or (ipaddress.ip_address("0.0.0.0"), LISP_CONTROL_PORT)
            store = None
            if ms.data_dir:
                store = FileStore(ms.data_dir)  # registrations survive a controller restart
                controller.planned = planned_journal.PlannedJournal.in_data_dir(ms.data_dir)  # open planned moves too
            else:
                LOG.warning("embedded Map-Server has no data_dir: registrations are kept in memory only")
            # Restoring makes many objects without cycles: collection passes meanwhile would only cost
            # time.  They live until exit: the app's gc.freeze() once started takes them out of full passes.
            collecting = gc.isenabled()
            gc.disable()
            try:
                core = MapServer(ms, nonces=nonces, now=wall_clock(), store=store)
            finally:
                if collecting:
                    gc.enable()
            sock = open_socket(ms.netns, (str(listen[0]), listen[1]), _family(listen[0]))
            controller.add_endpoint(ControlEndpoint("map-server", core, sock.sendto, clock=wall_clock,
                                                    receivers={None: sock}))
            LOG.info("embedded Map-Server listening on %s:%d%s", listen[0], listen[1],
                     f" in netns {ms.netns}" if ms.netns else "")

        in_background = spawn or (lambda fn: fn())  # the OVSDB writes
        mesh = BfdMesh()  # our xTRs make their BFD ports towards each other at both ends at once
        for xtr in config.xtrs:
            core = XtrCore(xtr, nonces=nonces, rng=rng, clock_offset=wall_clock() - clock())
            rloc = xtr.rlocs[0].address
            sock = open_socket(xtr.netns, (str(rloc), LISP_CONTROL_PORT), _family(rloc))  # IPv6 RLOCs too
            receivers = {rloc: sock}
            for other in xtr.rlocs[1:]:
                receivers[other.address] = open_socket(
                    xtr.netns, (str(other.address), LISP_CONTROL_PORT), _family(other.address))
            endpoint = controller.add_endpoint(ControlEndpoint(f"xtr {xtr.name}", core, sock.sendto, clock,
                                                               dpid=xtr.dpid, receivers=receivers))
            if xtr.ovsdb is not None:
                in_background(lambda xtr=xtr: raise_packet_in_queue(xtr))
            if xtr.ovsdb is not None and xtr.failover.enabled:
                endpoint.failover = FailoverPorts(
                    xtr, spawn=in_background, mesh=mesh, clock=clock,
                    changed=lambda dpid=xtr.dpid: controller.request_push(dpid, "BFD ports"))
                LOG.info("xTR %s: failover in the switch: BFD ports (%d ms x %d) created in %s", xtr.name,
                         xtr.failover.bfd.min_rx, xtr.failover.bfd.mult, xtr.ovsdb)
            else:
                LOG.info("xTR %s: no failover in the switch (%s): a dead RLOC is noticed by probing only",
                         xtr.name, "no ovsdb configured" if xtr.ovsdb is None else "failover.enabled is false")
            LOG.info("xTR %s (dpid %#x) control plane on %s:%d", xtr.name, xtr.dpid, rloc, LISP_CONTROL_PORT)
        return controller

    def add_endpoint(self, endpoint: ControlEndpoint) -> ControlEndpoint:
        self.endpoints.append(endpoint)
        self._lane.listen(endpoint)
        if endpoint.dpid is not None:
            self.xtrs[endpoint.dpid] = endpoint
        return endpoint

    def start(self) -> None:
        """Start the xTR cores: register, and install the local data plane once a switch is there."""
        for endpoint in self.xtrs.values():
            self.run(endpoint, endpoint.core.start(endpoint.clock()))

    # ---- what the REST API may use --------------------------------------------------

    @property
    def map_server(self) -> ControlEndpoint | None:
        return next((e for e in self.endpoints if e.name == "map-server"), None)

    def installed(self, dpid: int) -> DesiredState | None:
        """What switch `dpid` holds (None: not connected, or not reconciled yet)."""
        session = self.sessions.get(dpid)
        return session.installed if session is not None else None

    def problem(self, dpid: int) -> str | None:
        """Why switch `dpid` is unhealthy (None: healthy, as far as we know)."""
        found = self.problems.get(dpid)
        return "; ".join(found[k] for k in sorted(found)) if found else None

    def _set_problem(self, dpid: int, kind: str, reason: str, exc_info: bool = False) -> None:
        """Record why a switch is unhealthy; log it once per distinct reason, not per retry."""
        found = self.problems.setdefault(dpid, {})
        if found.get(kind) != reason:
            found[kind] = reason
            LOG.error("%s (dpid %#x) is unhealthy: %s", self._name(dpid), dpid, reason, exc_info=exc_info)

    def _clear_problem(self, dpid: int, kind: str) -> None:
        found = self.problems.get(dpid)
        if found and found.pop(kind, None) is not None:
            LOG.info("%s (dpid %#x): %s problem gone", self._name(dpid), dpid, kind)
        if found == {}:
            self.problems.pop(dpid, None)

    def _name(self, dpid: int) -> str:
        endpoint = self.xtrs.get(dpid)
        return endpoint.name if endpoint is not None else "switch"

    def request_push(self, dpid: int, reason: str) -> None:
        """The xTR's intent changed outside its core's handlers: recompile, diff and push."""
        self.run(self.xtrs[dpid], [DataplaneChanged(reason)])

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # ---- effects ---------------------------------------------------------------------------

    def run(self, endpoint: ControlEndpoint, effects) -> None:
        """Carry out a core's effects: datagrams, then the data plane, then re-injected packets.

        Datagrams go first because they start round trips, while pushing flows takes
        milliseconds; held packets go last, so they meet their flows.  A workload that
        arrived brings its old sites' mappings (glue.moves): they join this push, and the
        other xTRs are told after it, directly; its Map-Registers (`RegisterChanges`, for the
        xTRs this controller does not drive) are built and sent after that.
        """
        arrived = [e for e in effects if isinstance(e, HostArrived)] if endpoint.dpid is not None else []
        if arrived:
            effects = [*effects, *self.arrivals.seed(endpoint, [e.record for e in arrived])]
        for effect in effects:
            if isinstance(effect, SendControl):
                try:
                    endpoint.send(effect.payload, (str(effect.destination), effect.port))
                    self.count("control_sent")
                    if self.fast_lane:
                        self._lane.sent(endpoint, effect.payload, (str(effect.destination), effect.port),
                                        effect.destination.version)
                except OSError as exc:
                    self.count("control_send_errors")
                    LOG.warning("%s: cannot send %s to %s:%d: %s", endpoint.name, effect.what or "datagram",
                                effect.destination, effect.port, exc)
        dpid = endpoint.dpid
        if dpid is not None:
            if any(isinstance(e, DataplaneChanged) for e in effects):
                changes = [e for e in effects if isinstance(e, DataplaneChanged)]
                self._push_soon(dpid, "; ".join(e.reason for e in changes), any(e.at_once for e in changes))
            for effect in effects:
                if isinstance(effect, PacketOut):
                    self._packet_out_after_push(dpid, effect)
            if arrived:
                self.arrivals.add(endpoint, [(e.record, e.workload) for e in arrived])
        if any(isinstance(e, RegisterChanges) for e in effects):  # after the switches' flows
            self.run(endpoint, endpoint.core.register_changes(endpoint.clock()))
        self._lane.drain()
        self.wake()

    def _packet_out_after_push(self, dpid: int, effect: PacketOut) -> None:
        """Re-inject now, or after the deferred push if one is waiting (it may be what the packet needs)."""
        session = self.sessions.get(dpid)
        if session is None or effect.out_port is not None or not session.deferred:
            self._packet_out(dpid, effect)
        elif len(session.reinject) < MAX_HELD_REINJECTIONS:
            session.reinject.append(effect)
            self.count("packets_held_for_push")
        else:
            self.count("packets_held_for_push_dropped")

    def _packet_out(self, dpid: int, effect: PacketOut) -> None:
        session = self.sessions.get(dpid)
        if session is None:
            return
        dp = session.datapath
        parser, ofp = dp.ofproto_parser, dp.ofproto
        if effect.out_port is not None:  # delivered as it is (a planned move's held packets)
            dp.send_msg(parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
                                            actions=[parser.OFPActionOutput(effect.out_port)], data=effect.data))
            self.count("packets_delivered")
            return
        dp.send_msg(parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=effect.in_port,
                                        actions=[parser.OFPActionOutput(ofp.OFPP_TABLE)], data=effect.data))
        self.count("packets_reinjected")

    # ---- pushing desired state -----------------------------------------------------------

    def _push_soon(self, dpid: int, reason: str, at_once: bool = False) -> None:
        """Push now, unless the last push to this switch ended less than its own duration ago, or
        input is queued (`busy`, for at most PUSH_MAX_WAIT): then the change waits (`run_timers`)
        and leaves with those that follow.  A burst (an evacuation) costs a push per hold-off, not a
        compile and diff per event, and the events queued behind it are read (and join it) before
        it; a lone one leaves at once, and so does one `at_once` (DataplaneChanged.at_once)."""
        session = self.sessions.get(dpid)
        if session is None or session.installed is None:
            return  # not connected or not reconciled yet: reconciliation will push
        if not session.deferred:
            session.deferred_at = self.xtrs[dpid].clock()
        session.deferred.append(reason)
        if at_once or self._may_push(dpid, session):
            self._push_deferred(dpid, session)
        else:
            self.count("pushes_deferred")
            self.wake()

    def _may_push(self, dpid: int, session: SwitchSession) -> bool:
        now, costs = self.xtrs[dpid].clock(), sum(s.push_cost for s in self.sessions.values())
        return now >= session.pushed_at + session.push_cost and (  # busy: pushes take a third at most
            now >= session.deferred_at + max(PUSH_MAX_WAIT, 2 * costs) or not self.busy())

    def _push_deferred(self, dpid: int, session: SwitchSession) -> None:
        clock = self.xtrs[dpid].clock  # the xTR's: tests drive it
        reasons, session.deferred = session.deferred, []
        session.push_cost = self.push(dpid, "; ".join(reasons) if len(reasons) < 4
                                      else f"{len(reasons)} changes: {reasons[0]} ...", clock)
        session.pushed_at = clock()
        held, session.reinject = session.reinject, []
        for effect in held:  # behind the push's flow-mods on the same connection: they meet them
            self._packet_out(dpid, effect)

    def push(self, dpid: int, reason: str, clock: Callable[[], float] | None = None) -> float:
        """Compile the xTR's plan, diff it against what the switch holds, send the difference.

        Returns the CPU compiling and diffing took (at most its time by `clock`): the part
        of a push that is the same for one change or many, what holding changes back saves
        (in an evacuation 5-11 ms of CPU took 30-135 ms of wall time on the shared cores)."""
        session = self.sessions.get(dpid)
        endpoint = self.xtrs.get(dpid)
        if session is None or endpoint is None or session.installed is None:
            return 0.0  # not connected or not reconciled yet: reconciliation will push
        clock = clock or time.monotonic
        started, cpu = clock(), time.thread_time()
        spent = lambda: min(clock() - started, time.thread_time() - cpu)  # noqa: E731 (the cost, as returned)
        try:
            plan = endpoint.core.plan()
            if endpoint.failover is not None:
                plan = replace(plan, failover_ports=endpoint.failover.ports(plan.peers, probers=plan.probers))
            desired = compile_plan(plan)
        except (CompileError, PipelineError) as exc:
            # A plan the compiler refuses: keep the switch as it is (traffic keeps flowing on
            # the installed flows), count it and say why, rather than push half.  Other
            # switches are not affected: each is compiled and pushed on its own.
            self.count("compile_errors")
            self._set_problem(dpid, "compile", f"cannot compile its flows: {exc}; switch left unchanged")
            return spent()
        except Exception as exc:  # a bug in plan building: the same, with the traceback (once)
            self.count("compile_errors")
            self._set_problem(dpid, "compile", f"cannot build its plan: {type(exc).__name__}: {exc}; "
                              "switch left unchanged", exc_info=True)
            return spent()
        self._clear_problem(dpid, "compile")
        ops = diff(session.installed, desired)
        planning = spent()
        if not ops:
            return planning
        if LOG.isEnabledFor(logging.DEBUG):
            have = {f.key: f for f in session.installed.flows}
            for op in ops:
                LOG.debug("dpid %#x: %s (was %s)", dpid, op, have.get(getattr(getattr(op, "flow", None), "key", None)))
        dp = session.datapath
        xid, barrier = ofp13.barrier_request(dp)
        try:
            chunks = list(ofp13.encode_operations(dp, ops, then=barrier))
        except Exception as exc:
            self.count("encode_errors")
            self._set_problem(dpid, "compile", f"cannot encode its flow-mods: {type(exc).__name__}: {exc}; "
                              "switch left unchanged", exc_info=True)
            return planning
        session.barrier_sent = xid  # before sending: a switch may answer before send returns
        for chunk in chunks:
            dp.send(chunk)
        session.installed = desired
        self.counters["flow_ops"] = self.counters.get("flow_ops", 0) + len(ops)
        LOG.info("dpid %#x: %d flow/group/meter changes of %d flows in %.1f ms (%s)", dpid, len(ops),
                 len(desired.flows), (clock() - started) * 1000.0, reason)
        return planning

    # ---- switch sessions and reconciliation ---------------------------------------------------

    def switch_connected(self, dp: Any) -> bool:
        """A switch said hello: read what it holds (False: not ours, left alone)."""
        if dp.id not in self.xtrs:
            LOG.warning("switch dpid %#x is not in the configuration; leaving it alone", dp.id)
            return False
        session = SwitchSession(dp)
        self.sessions[dp.id] = session
        self._clear_problem(dp.id, "install")  # reconciliation reads what it really holds
        parser, ofp = dp.ofproto_parser, dp.ofproto
        # Packet-ins as the switch sends them by default (no match, action), but no port-status
        # messages: nothing here acts on them, and hosts coming and going (an evacuation's
        # hundreds of ports) made the switch send, and Ryu parse, one per port change.
        packet_in = 1 << ofp.OFPR_NO_MATCH | 1 << ofp.OFPR_ACTION
        flow_removed = (1 << ofp.OFPRR_IDLE_TIMEOUT | 1 << ofp.OFPRR_HARD_TIMEOUT | 1 << ofp.OFPRR_DELETE
                        | 1 << ofp.OFPRR_GROUP_DELETE)
        dp.send_msg(parser.OFPSetAsync(dp, [packet_in, 0], [0, 0], [flow_removed, 0]))
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
        return True

    def stats_reply(self, dpid: int, xid: int, kind: str, body: list, more: bool) -> None:
        """One part of a multipart reply (`kind`: flows, groups or meters).

        When the last outstanding one is in, what the switch holds becomes the
        installed state; the xTR adopts the mappings and workloads it still serves (a controller
        restart loses what was learned, not the switch's flows), and one push removes only what is stale.
        """
        session = self.sessions.get(dpid)
        if session is None or (kind == "flows" and self.flow_counters.take(dpid, xid, body, more)):
            return
        if xid not in session.waiting:
            return
        getattr(session, kind).extend(body)
        if not more:
            session.waiting.discard(xid)
        if not session.waiting and session.installed is None:
            session.installed = DesiredState(
                flows=frozenset(ofp13.flow_from_stats(s) for s in session.flows if is_ours(s.cookie)),
                groups=frozenset(ofp13.group_from_desc(g) for g in session.groups),
                meters=frozenset(ofp13.meter_from_config(m) for m in session.meters),
            )
            LOG.info("dpid %#x holds %d of our flows, %d groups, %d meters: reconciling",
                     dpid, len(session.installed.flows), len(session.installed.groups),
                     len(session.installed.meters))
            endpoint, held = self.xtrs[dpid], session.installed  # flows of ours: from before a restart
            adopted = endpoint.core.adopt(readback.remotes_installed(held), endpoint.clock(),
                                          hosts=readback.hosts_installed(held) if held.flows else None)
            adopted += planned_journal.take_up(self, endpoint)  # its part of the planned moves still open
            self.push(dpid, "reconcile after connect")
            self.run(endpoint, adopted)

    def barrier_reply(self, dpid: int, xid: int) -> None:
        """The switch has done everything sent before barrier `xid` (it answers in order)."""
        session = self.sessions.get(dpid)
        if session is not None:
            session.barrier_done = xid

    def settled(self, dpids) -> bool:
        """Each of these switches holds what its xTR wants: nothing waits to be pushed and the
        barrier after the last push is answered (a switch not connected does not count)."""
        return all(s.barrier_done == s.barrier_sent and not s.deferred
                   for s in (self.sessions.get(d) for d in dpids) if s is not None)

    def switch_disconnected(self, dpid: int | None) -> None:
        if dpid is not None and self.sessions.pop(dpid, None):
            LOG.warning("switch dpid %#x disconnected", dpid)

    def openflow_error(self, dpid: int, type_: int, code: int, xid: int) -> None:
        self.count("openflow_errors")
        LOG.error("OpenFlow error from dpid %#x: type %d code %d (xid %d)", dpid, type_, code, xid)
        # It refused something we sent, so it holds less than we believe: unhealthy until it
        # reconnects (reconciliation then reads what it holds and pushes the rest).
        self._set_problem(dpid, "install", f"the switch refused a message: OpenFlow error type {type_} code {code}")

    # ---- packets from the switch -----------------------------------------------------------------

    def packet_in(self, dpid: int, table_id: int, in_port: int, metadata: int, data: bytes,
                  tunnel_id: int = 0, flow_cookie: int = 0) -> None:
        """A packet the flows sent us: a miss to resolve, a new host in a dynamic-EID prefix, or
        traffic for a workload a planned move brings here (held until it arrives)."""
        endpoint = self.xtrs.get(dpid)
        if endpoint is None:
            return
        self.count("packet_in")
        if table_id == Table.CLASSIFY:
            if tunnel_id:  # decapsulated, from another site: not a host of ours (whatever port it came on)
                self.count("learn_from_tunnel_ignored")
                return
            self._host_seen(endpoint, in_port, data)
            return
        addresses = ip_addresses(data)
        if addresses is None:
            self.count("packet_in_not_ip")
            return
        src, dst = addresses
        if table_id == Table.DECAP:
            self.run(endpoint, endpoint.core.hold(tunnel_id & 0xFFFFFF, dst, data, endpoint.clock()))
            return
        if cookie_owner(flow_cookie) is Owner.PLANNED_MOVE:  # our own host's packet for a workload coming here
            self.run(endpoint, endpoint.core.hold(metadata & 0xFFFFFF, dst, data, endpoint.clock()))
            return
        if dst.is_multicast or dst.is_link_local or dst.is_unspecified or dst.is_loopback:
            self.count("packet_in_not_routable")  # e.g. IPv6 router solicitations: no mapping to ask for
            return
        iid = metadata & 0xFFFFFF
        try:
            effects = endpoint.core.handle_miss(in_port, iid, src, dst, data, endpoint.clock())
        except Exception:
            self.count("core_exceptions")
            LOG.exception("%s: error handling a miss for %s", endpoint.name, dst)
            return
        self.run(endpoint, effects)

    def _host_seen(self, endpoint: ControlEndpoint, in_port: int, data: bytes) -> None:
        """The learning flow sent us a packet from an unknown host in a dynamic-EID prefix, or a
        planned move's flow a RARP from the port announced for it (`XtrCore.handle_announcement`)."""
        host, now = sender(data), endpoint.clock()
        try:
            effects = (endpoint.core.handle_host_seen(in_port, host[0], host[1], data, now,
                                                      lambda: self.arrivals.companions(endpoint, host[1]))
                       if host is not None
                       else endpoint.core.handle_announcement(in_port, data, now))
        except Exception:
            self.count("core_exceptions")
            LOG.exception("%s: error learning a host on port %d", endpoint.name, in_port)
            return
        self.run(endpoint, effects)

    # ---- datagrams and timers -----------------------------------------------------------------------

    def datagram(self, endpoint: ControlEndpoint, payload: bytes, host: str, port: int,
                 local: IPAddress | None = None) -> None:
        """A datagram from `host`:`port`; an xTR core is told which of its RLOCs (`local`) was addressed."""
        if self._lane.is_wire_copy(endpoint.name, payload):
            return
        self._handle_datagram(endpoint, payload, host, port, local)

    def _handle_datagram(self, endpoint: ControlEndpoint, payload: bytes, host: str, port: int,
                         local: IPAddress | None = None) -> None:
        where = {} if local is None else {"destination": local}
        try:
            effects = endpoint.core.handle_control(payload, ipaddress.ip_address(host), port, endpoint.clock(),
                                                   **where)
        except Exception:  # a core bug must not kill the socket loop; it is counted and logged
            self.count("core_exceptions")
            LOG.exception("%s: error handling a datagram from %s:%d", endpoint.name, host, port)
            return
        self.run(endpoint, effects)

    def confirm(self, dpids: list[int], also: Callable[[], bool] = lambda: True) -> bool:
        """Push now what these switches' xTRs wait to push (a burst held it back), then wait, at
        most PREPARE_WAIT, until `also()` holds and each switch has answered the barrier after
        its last push (`settled`)."""
        for dpid in dpids:
            session = self.sessions.get(dpid)
            if session is not None and session.deferred:
                self._push_deferred(dpid, session)
        return self.wait_until(lambda: also() and self.settled(dpids), PREPARE_WAIT)

    def next_wait(self) -> float:
        """Seconds until the earliest deadline of any core (at most MAX_WAIT)."""
        waits = [d - e.clock() for e in self.endpoints if (d := e.core.next_deadline()) is not None]
        for d, s in self.sessions.items():
            if s.deferred:  # its hold-off; while input is queued, another look every BUSY_POLL
                now = self.xtrs[d].clock()
                waits.append(max(s.pushed_at + s.push_cost, min(now + BUSY_POLL, s.deferred_at + PUSH_MAX_WAIT)
                                 if self.busy() else now) - now)
        waits += [d - e.failover.clock() for e in self.xtrs.values()
                  if e.failover is not None and (d := e.failover.next_expiry()) is not None]
        return max(0.0, min([MAX_WAIT, *waits]))

    def run_timers(self) -> None:
        """Let every core whose deadline has come do its timed work; push what waited."""
        for dpid, session in list(self.sessions.items()):
            if session.deferred and self._may_push(dpid, session):
                self._push_deferred(dpid, session)
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
                self.run(endpoint, effects)
        for dpid, endpoint in list(self.xtrs.items()):  # BFD ports past their grace go
            ports = endpoint.failover
            if ports is not None and (d := ports.next_expiry()) is not None and d <= ports.clock() and ports.expire():
                self.request_push(dpid, "BFD ports past their grace")


def _family(address: IPAddress) -> int:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6
