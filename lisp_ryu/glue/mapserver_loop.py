"""The standalone Map-Server: one thread, one `selectors` loop around the pure core.

The loop owns the clock and the sockets: it feeds each datagram to
`MapServer.handle_control`, calls `handle_timer` when `next_deadline` is due,
sends the effects, and gives the introspection HTTP endpoint
(`mapserver_http`) a bounded turn, from the same thread, so the core needs no
lock. Its resources have the same JSON shapes as the Ryu app's REST API (both
come from `views`), so `lisp-ryu show --url` reads either.

Reads come in batches: the fast path answers what it can as it is read, the
rest is handled after the batch.  While the loop is behind (a full batch:
more is waiting in the socket), Map-Requests outside the fast path get at
most `SLOW_BUDGET` seconds per batch and the others are dropped, counted
(`shed_map_requests`): a flood of costly requests then cannot keep the loop
from reading, so plain requests behind it in the socket buffer are still
answered, instead of the kernel dropping whatever arrives while the buffer
is full.  Map-Registers and Map-Notify-Acks are always handled, and the
Map-Registers of a batch share one journal write: an fsync each was most of
the cost of a burst of registrations.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import selectors
import socket
import time
from concurrent.futures import Future
from typing import Callable

from lisp_ryu.glue.mapserver_http import HttpViews
from lisp_ryu.mapserver.service import MapServer

LOG = logging.getLogger("lisp_ryu.mapserver.server")

RECV_BUFFER = 65535
#: Datagrams handled per wake-up before timers and HTTP get a turn.
UDP_BATCH = 256
MAX_WAIT = 1.0
RCVBUF = 4 << 20
SOURCE_CACHE = 4096
#: Seconds per batch for Map-Requests outside the fast path while the loop is behind (a batch takes a
#: few ms to read and answer from the fast path: costly requests then get most of the time, not all).
SLOW_BUDGET = 0.005
_ECM = 8  # the type nibble of an Encapsulated Control Message (a Map-Request to a Map-Resolver)
_MAP_REGISTER = 3
#: Seconds between looks at whether objects went to the collector's oldest generation (see `_freeze`).
FREEZE_INTERVAL = 1.0


class _Peer4(ipaddress.IPv4Address):
    """A peer's address as the loop hands it to the core, its hash computed once: the core's per-source
    rate limit looks the sender up per datagram, and `ipaddress` hashes by formatting the address anew."""

    __slots__ = ("_hash",)

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self._hash = ipaddress.IPv4Address.__hash__(self)

    def __hash__(self) -> int:
        return self._hash


class _Peer6(ipaddress.IPv6Address):
    """As `_Peer4`, for IPv6 peers."""

    __slots__ = ("_hash",)

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self._hash = ipaddress.IPv6Address.__hash__(self)

    def __hash__(self) -> int:
        return self._hash


def peer_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address of a datagram's sender (equal to, and hashed as, `ipaddress.ip_address(text)`)."""
    return _Peer6(text) if ":" in text else _Peer4(text)


class StandaloneServer:
    """Runs a `MapServer` on a UDP socket, with an optional HTTP introspection socket."""

    def __init__(self, core: MapServer, udp: socket.socket, http: socket.socket | None = None,
                 clock: Callable[[], float] = time.time, replica=None, token: str | None = None) -> None:
        self.core = core
        #: `mapserver_replica.ReplicatedStore` with `--store etcd://`: holds the effects of a change
        #: until it is committed, brings other nodes' changes in.
        self.replica = replica
        self.udp = udp
        self.http = http
        self.clock = clock
        self.counters: dict[str, int] = {}  # the loop's own: send errors, HTTP requests
        self._selector = selectors.DefaultSelector()
        self._stopping = False
        self._freeze_at = 0.0
        self._young_passes = -1  # the collector's generation-1 passes when `_freeze` last froze
        self._sources: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}  # parsed peer addresses
        self._rloc_texts: dict[bytes, str] = {}  # ITR-RLOCs of fast-path replies, as sendto wants them
        self._shed_batches = 0  # batches that dropped Map-Requests (see _receive_slow)
        udp.setblocking(False)
        try:  # room for a burst of registrations while a snapshot or an fsync runs
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        except OSError:
            pass
        self._selector.register(udp, selectors.EVENT_READ, "udp")
        if replica is not None:
            self._selector.register(replica, selectors.EVENT_READ, "replica")
        self._http = None if http is None else HttpViews(
            core, http, self._selector, clock, self.counters,
            lambda: {**{f"server.{k}": v for k, v in self.counters.items()},
                     **({f"cluster.{k}": v for k, v in replica.all_counters().items()} if replica else {})},
            token, replica.call if replica is not None else self._change_now)

    def _change_now(self, change: Callable) -> Future:
        """A northbound write without a replicated store: journalled by the core before it returns."""
        future: Future = Future()
        try:
            effects = change(self.core, self.clock())
        except Exception as exc:  # noqa: BLE001 - the writer's answer (a bad rule, an unknown id, the journal down)
            future.set_exception(exc)
            return future
        self._send(effects)
        future.set_result(len(effects))
        return future

    def stop(self) -> None:
        """Ask the loop to return after the current iteration (safe from a signal handler)."""
        self._stopping = True

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # ---- main loop -----------------------------------------------------------------
    def serve_forever(self) -> None:
        while not self._stopping:
            now = self.clock()
            deadline = self.core.next_deadline()
            wait = MAX_WAIT if deadline is None else min(MAX_WAIT, max(0.0, deadline - now))
            for key, events in self._selector.select(wait):
                if key.data == "udp":
                    self._receive()
                elif key.data == "replica":
                    self._send(self.replica.drain(self.clock()))
                else:
                    self._http.ready(key, events)
            now = self.clock()
            deadline = self.core.next_deadline()
            if deadline is not None and deadline <= now:
                self._run_timers(now)
            if self._http is not None:
                self._http.turn()
            if now >= self._freeze_at:
                self._freeze(now)
        if self._http is not None:
            self._http.close()

    def _freeze(self, now: float) -> None:
        """Move what survived the collector's young passes since the last look into its permanent generation.

        What survives them here is, overwhelmingly, registrations (and their timers) that live until
        they expire.  Left in the oldest generation, each full pass of the collector would walk every
        one of them (a second at a million registrations, answering nothing meanwhile); frozen, a full
        pass walks only what came since.  `gc.freeze` is O(1) (it relinks lists).  The state is acyclic,
        so what is frozen is still freed by reference counting when it goes; a frozen object that later
        ended up in a reference cycle would never be collected: the cost of this policy, and why it
        freezes only once a young pass promoted something, at most once per FREEZE_INTERVAL.
        """
        self._freeze_at = now + FREEZE_INTERVAL
        passes = gc.get_stats()[1]["collections"]
        if passes != self._young_passes:
            gc.freeze()
            self._young_passes = passes

    def _run_timers(self, now: float) -> None:
        try:
            effects = self.core.handle_timer(now)
            if self.replica is not None:
                effects = self.replica.hold(effects)
        except Exception:  # a core bug must not stop the server (store errors are handled in the core)
            self._count("core_exceptions")
            LOG.exception("error running timers")
            return
        self._send(effects)

    def _receive(self) -> None:
        # The hot loop of a Map-Resolver: names bound once, plain requests answered inline as they are read.
        recvfrom, sendto, clock = self.udp.recvfrom, self.udp.sendto, self.clock
        reply_quickly, sources, rloc_texts = self.core.reply_quickly, self._sources, self._rloc_texts
        slow: list[tuple[bytes, ipaddress.IPv4Address | ipaddress.IPv6Address, tuple]] = []
        read = 0
        for read in range(1, UDP_BATCH + 1):
            try:
                payload, address = recvfrom(RECV_BUFFER)
            except (BlockingIOError, InterruptedError):
                read -= 1
                break
            except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
                self._count("receive_errors")
                LOG.debug("receive error: %s", exc)
                read -= 1
                break
            source = sources.get(address[0])
            if source is None:
                if len(sources) >= SOURCE_CACHE:
                    sources.clear()
                source = sources[address[0]] = peer_address(address[0].split("%")[0])
            try:
                quick = reply_quickly(payload, source, clock())
            except Exception:  # a core bug must not stop the server; it is counted and logged
                self._count("core_exceptions")
                LOG.exception("error handling a datagram from %s:%d", address[0], address[1])
                continue
            if quick is None:
                slow.append((payload, source, address))
                continue
            reply, rloc, port = quick
            if not reply:  # the source's rate limit dropped it
                continue
            host = rloc_texts.get(rloc)
            if host is None:
                if len(rloc_texts) >= SOURCE_CACHE:
                    rloc_texts.clear()
                family = socket.AF_INET if len(rloc) == 4 else socket.AF_INET6
                host = rloc_texts[rloc] = socket.inet_ntop(family, rloc)
            try:
                sendto(reply, (host, port))
            except OSError as exc:
                self._count("send_errors")
                LOG.warning("cannot send Map-Reply to %s:%d: %s", host, port, exc)
        if slow:
            self._receive_slow(slow, behind=read == UDP_BATCH)

    def _receive_slow(self, slow: list, behind: bool) -> None:
        """The datagrams of a batch the fast path declined; while `behind`, Map-Requests within the budget.

        Consecutive Map-Registers share one journal write (and fsync): their acknowledgements and
        publications are held until it is done, and dropped if it failed (the core rolled them back).
        Anything else is handled only after that write, so it never sees a change not yet durable."""
        until = time.perf_counter() + SLOW_BUDGET if behind else None
        shed = 0
        held: list | None = None  # effects of Map-Registers whose journal entries are not written yet
        group = self.replica is None  # a replicated store commits each change by itself
        for payload, source, address in slow:
            kind = payload[0] >> 4 if payload else -1
            if until is not None and kind == _ECM and time.perf_counter() > until:
                shed += 1
                continue
            grouped = group and kind == _MAP_REGISTER
            if held is not None and not grouped:
                self._release(held)
                held = None
            try:
                effects = self.core.handle_control(payload, source, address[1], self.clock(), flush=not grouped)
                if grouped:
                    held = effects if held is None else held + effects
                    continue
                if self.replica is not None:
                    effects = self.replica.hold(effects)  # a change: sent once it is committed
                self._send(effects)
            except Exception:  # a core bug must not stop the server; it is counted and logged
                self._count("core_exceptions")
                LOG.exception("error handling a datagram from %s:%d", address[0], address[1])
        if held is not None:
            self._release(held)
        if shed:
            self.counters["shed_map_requests"] = self.counters.get("shed_map_requests", 0) + shed
            self._shed_batches += 1
            if self._shed_batches & (self._shed_batches - 1) == 0:  # 1st, 2nd, 4th ... time: a flood logs little
                LOG.warning("behind: dropped %d Map-Requests outside the fast path unread (%d so far, %d batches)",
                            shed, self.counters["shed_map_requests"], self._shed_batches)

    def _release(self, held: list) -> None:
        """Write the journal entries of grouped Map-Registers, then send what they caused (nothing if it failed)."""
        try:
            durable = self.core.flush_journal(self.clock())
        except Exception:  # a core bug must not stop the server; it is counted and logged
            self._count("core_exceptions")
            LOG.exception("error writing the journal")
            return
        if durable:
            self._send(held)

    def _send(self, effects) -> None:
        for effect in effects:
            try:
                self.udp.sendto(effect.payload, (str(effect.destination), effect.port))
            except OSError as exc:
                self._count("send_errors")
                LOG.warning("cannot send %s to %s:%d: %s", effect.what or "datagram", effect.destination,
                            effect.port, exc)
