"""The Ryu application: Ryu events in, `Controller` calls out.

Thin on purpose: each handler unpacks a Ryu event and calls the controller
(`glue.controller`), which owns the sessions, the effects and the pushes.
This module owns only what is Ryu's or eventlet's: the event registrations,
the green threads that read the sockets and run the timers, and mounting
the REST API.  `lisp-ryu controller` hands this module to ryu-manager.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import socket
import time
from collections import deque

from lisp_ryu.glue import compat

compat.apply()

from ryu.app.wsgi import WSGIApplication  # noqa: E402
from ryu.base import app_manager  # noqa: E402
from ryu.controller import ofp_event  # noqa: E402
from ryu.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls  # noqa: E402
from ryu.lib import hub  # noqa: E402
from ryu.ofproto import ofproto_v1_3  # noqa: E402

from lisp_ryu import config as config_mod  # noqa: E402
from lisp_ryu.glue import rest  # noqa: E402
from lisp_ryu.glue.controller import Controller  # noqa: E402
from lisp_ryu.glue.refusals import REFUSALS  # noqa: E402
from lisp_ryu.wire.messages import MessageType  # noqa: E402

LOG = logging.getLogger("lisp_ryu")
CONFIG_ENV = "LISP_RYU_CONFIG"
MAX_DATAGRAM = 65535
DATAGRAM_BACKLOG = 64  # datagrams read but not yet handled; when full, the readers wait (the kernel buffers)
PACKET_IN_SLICE = 0.02  # in a burst, packet-ins are handled back to back for this long before a yield
BURST_BACKLOG = 16  # queued datagrams or switch events beyond which pushes wait for them (a burst)
_URGENT = frozenset((MessageType.MAP_REGISTER, MessageType.MAP_NOTIFY, MessageType.MAP_NOTIFY_ACK))
_WAKE = object()  # queued to wake the worker for a deferred step


class DatagramPump:
    """Control datagrams from every socket, handled one at a time by one worker that lets the
    hub run between them, a move's first.

    Why: Ryu writes OpenFlow messages from a green thread per switch that
    the hub wakes with a timer, and the hub fires timers only once it has
    served every socket that poll() found readable.  When each socket had
    its own loop calling the controller inline, a burst of datagrams (a
    Map-Server publishing a move to every xTR, each push recompiling a
    plan) was handled in full before the first switch got its flow-mods:
    seven xTRs held their old flows for 230 ms after their Map-Notify, and
    the first packet after a move went to the old site (soak seed 20).
    Here the readers only queue; the worker handles one datagram, then
    sleeps 0, so the switches' send loops (woken earlier) write what that
    datagram pushed and could not write at once (a TLS connection, a full
    kernel buffer: compat.send_directly) before the next one is handled.  The bounded queue's
    waiting readers are woken in turn, so one flooded socket does not shut
    the others out.

    Of what has been read, Map-Registers, Map-Notifies and their Acks go first (`urgent`):
    they carry moves and registrations, whose every millisecond is an outage, and an Ack
    left unread behind them makes its Map-Server retransmit (work for both ends, which
    grows the queue further), while Map-Requests, their answers and RLOC probes can wait.
    Before any datagram come the steps `defer`red to it (each xTR's part of a move the
    controller saw, glue.moves): a datagram's handling can block for a while (the
    Map-Server commits a registration to disk before it answers).
    """

    def __init__(self, handle, *, backlog: int = DATAGRAM_BACKLOG):
        self.handle = handle  # handle(endpoint, payload, host, port, local)
        self.backlog = backlog
        self.queue = hub.Queue(backlog)
        self._urgent: deque = deque()
        self._other: deque = deque()
        self._steps: deque = deque()
        self._waiting = False  # the worker is blocked on the queue

    @staticmethod
    def urgent(payload: bytes) -> bool:
        """A Map-Register or a Map-Notify (RFC 9301 type 3 or 4), by its first byte."""
        return bool(payload) and payload[0] >> 4 in _URGENT

    def receive_loop(self, endpoint, sock: socket.socket, local) -> None:
        """Datagrams from one socket, queued for the worker."""
        while True:
            try:
                payload, (host, port, *_) = sock.recvfrom(MAX_DATAGRAM)
            except OSError as exc:
                LOG.error("%s: receive failed: %s", getattr(endpoint, "name", endpoint), exc)
                hub.sleep(1)
                continue
            self.queue.put((endpoint, payload, host, port, local))

    def pending(self) -> bool:
        """Datagrams read or waiting to be, or deferred steps, not yet handled."""
        return bool(self._steps or self._urgent or self._other) or self.queue.qsize() > 0

    def queued(self) -> int:
        """Datagrams read or waiting to be read, not yet handled (deferred steps not counted)."""
        return len(self._urgent) + len(self._other) + self.queue.qsize()

    def defer(self, step) -> None:
        """Run `step()` in the worker before the next datagram (after what was sent has left)."""
        self._steps.append(step)
        if self._waiting:
            try:
                self.queue.put_nowait(_WAKE)
            except queue.Full:
                pass  # not waiting after all: it looks at the steps before its next datagram

    def next_item(self):
        """The next datagram to handle: sorts what is queued (up to the backlog), urgent first;
        None when woken for a deferred step."""
        if not self._urgent and not self._other:
            self._waiting = True
            try:
                self._sort(self.queue.get())
            finally:
                self._waiting = False
        while len(self._urgent) + len(self._other) < self.backlog:
            try:
                self._sort(self.queue.get_nowait())
            except queue.Empty:
                break
        if self._steps or (not self._urgent and not self._other):
            return None
        return (self._urgent or self._other).popleft()

    def _sort(self, item) -> None:
        if item is not _WAKE:
            (self._urgent if self.urgent(item[1]) else self._other).append(item)

    def work_loop(self) -> None:
        while True:
            if self._steps:
                step = self._steps.popleft()
                try:
                    step()
                except Exception:
                    LOG.exception("error in a deferred step")
                hub.sleep(0)  # what the step pushed leaves before the next
                continue
            item = self.next_item()
            if item is None:
                continue
            try:
                self.handle(*item)
            except Exception:  # the controller counts its own errors; this loop must not die
                LOG.exception("error handling a datagram")
            hub.sleep(0)  # the send loops first: what this datagram pushed leaves now


class LispApp(app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    _CONTEXTS = {"wsgi": WSGIApplication}  # the REST API (lisp_ryu.glue.rest), on ryu-manager's --wsapi-host/port

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get(CONFIG_ENV)
        if not path:
            raise RuntimeError(f"no configuration: start with `lisp-ryu controller --config FILE` ({CONFIG_ENV} unset)")
        self.config = config_mod.load(path)
        self._wake = hub.Event()
        self._slice_began = float("-inf")  # when the packet-ins handled back to back began (_on_packet_in)
        # The fast lane is off: it hands every datagram between our cores over in memory,
        # RLOC probes and SMRs between xTRs included, so a cut underlay link goes unseen by
        # probing and registrations.  LISP_RYU_FAST_LANE=1 turns it on (measurements only).
        self._datagrams = DatagramPump(lambda *item: self.controller.datagram(*item))
        self.controller = Controller.from_config(self.config, wake=self._wake.set, spawn=hub.spawn,
                                                 defer=self._datagrams.defer,
                                                 fast_lane=os.environ.get("LISP_RYU_FAST_LANE") == "1")
        # In a burst (an evacuation: a backlog of datagrams or switch events), a push (tens of ms
        # per switch) waits so that those queued join it rather than each costing one
        # (glue.controller._push_soon).  A move's own few packet-ins and its next deferred steps
        # are no burst: its pushes must leave at once, or a TCP stream through it times out.
        self.controller.wait_until = _wait_until
        self.controller.busy = lambda: (self._datagrams.queued() > BURST_BACKLOG
                                        or self.events.qsize() > BURST_BACKLOG
                                        or self.controller.arrivals.in_burst())

        if kwargs.get("wsgi") is not None:
            rest.register(kwargs["wsgi"], rest.Backend.from_controller(self.controller, self.config))  # before start: it may restore intent

        for endpoint in self.controller.endpoints:
            for local, sock in endpoint.receivers.items():
                hub.spawn(self._datagrams.receive_loop, endpoint, sock, local)
        hub.spawn(self._datagrams.work_loop)
        hub.spawn(self._timer_loop)
        self.controller.start()
        # Ryu, eventlet and the configuration are objects that live until exit: frozen, the
        # collector's full passes skip them (bench/README.md has what that saves).
        gc.freeze()

    # ---- OpenFlow events ----------------------------------------------------------------

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _on_features(self, ev):
        dp = ev.msg.datapath
        if dp.id not in self.controller.xtrs:
            # Not ours: disconnected before it reaches MAIN_DISPATCHER, so none of its packet-ins
            # reach the cores (dynamic-EID learning would take them for hosts).
            peer = dp.address[0] if dp.address else "?"
            REFUSALS.refuse("openflow.unknown_dpid", (peer, dp.id), "OpenFlow: datapath dpid %#x from %s is not in "
                            "the configuration (xtrs[].dpid): disconnected", dp.id, peer)
            dp.close()
            return
        # A push's flow-mods leave as it is made, not when this event's handling ends (compat).
        compat.send_directly(dp)
        self.controller.switch_connected(dp)

    def _collect(self, ev, kind: str) -> None:
        msg = ev.msg
        more = bool(msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE)
        self.controller.stats_reply(msg.datapath.id, msg.xid, kind, msg.body, more)

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
        self.controller.switch_disconnected(ev.datapath.id)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _on_barrier(self, ev):
        self.controller.barrier_reply(ev.msg.datapath.id, ev.msg.xid)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _on_error(self, ev):
        msg = ev.msg
        self.controller.openflow_error(msg.datapath.id, msg.type, msg.code, msg.xid)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _on_packet_in(self, ev):
        msg = ev.msg
        self.controller.packet_in(msg.datapath.id, msg.table_id, msg.match.get("in_port", 0),
                                  msg.match.get("metadata", 0), bytes(msg.data), msg.match.get("tunnel_id", 0),
                                  msg.cookie)
        # In a burst (`busy`), the packet-ins queued behind this one are handled back to back, for
        # up to PACKET_IN_SLICE: a yield after each let the datagram worker and the timer loop (a
        # push: tens of ms) take a turn per arrival, and an evacuation's packet-ins waited 0.46 s
        # (median) in the queue; with no yield at all until the queue was empty, the old sites' and
        # the ITRs' part of the moves (a deferred step) and every push waited for the last arrival.
        now = time.monotonic()
        if self.events.qsize() and self.controller.busy() and now - self._slice_began < PACKET_IN_SLICE:
            return
        self._slice_began = now
        hub.sleep(0)  # as DatagramPump.work_loop: what this pushed and the send loops still hold leaves first

    # ---- sockets and timers ---------------------------------------------------------------

    def _timer_loop(self) -> None:
        while True:
            wait = self.controller.next_wait()
            self._wake.clear()
            self._wake.wait(timeout=wait)
            self.controller.run_timers()


def _wait_until(condition, timeout: float) -> bool:
    """condition() within `timeout` seconds, the hub running meanwhile (the replies it waits for
    are events other green threads handle)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        hub.sleep(0.001)
    return True
