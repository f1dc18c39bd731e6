"""The standalone Map-Server: one thread, one `selectors` loop around the pure core.

The loop owns the clock and the sockets: it feeds each datagram to
`MapServer.handle_control`, calls `handle_timer` when `next_deadline` is due,
sends the effects, and answers the introspection HTTP endpoint (GET only,
one request per connection) from the same thread, so the core needs no lock.
Its resources have the same JSON shapes as the Ryu app's REST API (both
come from `views`), so `lisp-ryu show --url` reads either.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import selectors
import socket
import time
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from lisp_ryu.mapserver import views
from lisp_ryu.mapserver.service import MapServer

LOG = logging.getLogger("lisp_ryu.mapserver.server")

RECV_BUFFER = 65535
#: Datagrams handled per wake-up before timers and HTTP get a turn.
UDP_BATCH = 256
HTTP_MAX_REQUEST = 8192
HTTP_TIMEOUT = 5.0
MAX_WAIT = 1.0
RCVBUF = 4 << 20
SOURCE_CACHE = 4096


class _HttpClient:
    __slots__ = ("sock", "inbox", "outbox", "opened")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.inbox = b""
        self.outbox = b""
        self.opened = now


class StandaloneServer:
    """Runs a `MapServer` on a UDP socket, with an optional HTTP introspection socket."""

    def __init__(self, core: MapServer, udp: socket.socket, http: socket.socket | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.core = core
        self.udp = udp
        self.http = http
        self.clock = clock
        self.counters: dict[str, int] = {}  # the loop's own: send errors, HTTP requests
        self._selector = selectors.DefaultSelector()
        self._clients: dict[int, _HttpClient] = {}
        self._stopping = False
        self._sources: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}  # parsed peer addresses
        self._rloc_texts: dict[bytes, str] = {}  # ITR-RLOCs of fast-path replies, as sendto wants them
        udp.setblocking(False)
        try:  # room for a burst of registrations while a snapshot or an fsync runs
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        except OSError:
            pass
        self._selector.register(udp, selectors.EVENT_READ, "udp")
        if http is not None:
            http.setblocking(False)
            self._selector.register(http, selectors.EVENT_READ, "listen")

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
                elif key.data == "listen":
                    self._accept()
                else:
                    self._serve_client(key.data, events)
            now = self.clock()
            deadline = self.core.next_deadline()
            if deadline is not None and deadline <= now:
                self._run_timers(now)
            self._reap_clients(now)
        for client in list(self._clients.values()):
            self._close(client)

    def _run_timers(self, now: float) -> None:
        try:
            effects = self.core.handle_timer(now)
        except Exception:  # a core bug must not stop the server (store errors are handled in the core)
            self._count("core_exceptions")
            LOG.exception("error running timers")
            return
        self._send(effects)

    def _receive(self) -> None:
        # The hot loop of a Map-Resolver: names bound once, plain requests answered inline.
        recvfrom, sendto, clock = self.udp.recvfrom, self.udp.sendto, self.clock
        reply_quickly, sources, rloc_texts = self.core.reply_quickly, self._sources, self._rloc_texts
        for _ in range(UDP_BATCH):
            try:
                payload, address = recvfrom(RECV_BUFFER)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
                self._count("receive_errors")
                LOG.debug("receive error: %s", exc)
                return
            source = sources.get(address[0])
            if source is None:
                if len(sources) >= SOURCE_CACHE:
                    sources.clear()
                source = sources[address[0]] = ipaddress.ip_address(address[0].split("%")[0])
            now = clock()
            try:
                quick = reply_quickly(payload, source, now)
                if quick is None:
                    self._send(self.core.handle_control(payload, source, address[1], now))
                    reply_quickly = self.core.reply_quickly  # a journal rollback replaces it
                    continue
            except Exception:  # a core bug must not stop the server; it is counted and logged
                self._count("core_exceptions")
                LOG.exception("error handling a datagram from %s:%d", address[0], address[1])
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

    def _send(self, effects) -> None:
        for effect in effects:
            try:
                self.udp.sendto(effect.payload, (str(effect.destination), effect.port))
            except OSError as exc:
                self._count("send_errors")
                LOG.warning("cannot send %s to %s:%d: %s", effect.what or "datagram", effect.destination,
                            effect.port, exc)

    # ---- HTTP --------------------------------------------------------------------------
    def _accept(self) -> None:
        assert self.http is not None
        while True:
            try:
                sock, _ = self.http.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    LOG.warning("HTTP accept: %s", exc)
                return
            sock.setblocking(False)
            client = _HttpClient(sock, self.clock())
            self._clients[sock.fileno()] = client
            self._selector.register(sock, selectors.EVENT_READ, client)

    def _serve_client(self, client: _HttpClient, events: int) -> None:
        if events & selectors.EVENT_READ and not client.outbox:
            try:
                chunk = client.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(client)
                return
            if not chunk:
                self._close(client)
                return
            client.inbox += chunk
            if b"\r\n\r\n" in client.inbox or len(client.inbox) > HTTP_MAX_REQUEST:
                client.outbox = self._respond(client.inbox)
                self._selector.modify(client.sock, selectors.EVENT_WRITE, client)
        if events & selectors.EVENT_WRITE and client.outbox:
            try:
                sent = client.sock.send(client.outbox)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(client)
                return
            client.outbox = client.outbox[sent:]
            if not client.outbox:
                self._close(client)

    def _respond(self, request: bytes) -> bytes:
        self._count("http_requests")
        line = request.split(b"\r\n", 1)[0].decode("latin-1", "replace").split()
        if len(request) > HTTP_MAX_REQUEST and b"\r\n\r\n" not in request:
            return _http(431, {"error": "request header too large"})
        if len(line) != 3 or not line[2].startswith("HTTP/"):
            return _http(400, {"error": "bad request line"})
        method, target = line[0], line[1]
        if method != "GET":
            return _http(405, {"error": f"{method} not allowed; this endpoint is read-only"})
        url = urlsplit(target)
        query = parse_qs(url.query)
        try:
            limit = int(query.get("limit", [views.DEFAULT_LIMIT])[0])
            if limit < 0:
                raise ValueError
        except ValueError:
            return _http(400, {"error": "limit must be a non-negative integer"})
        now = self.clock()
        path = url.path.rstrip("/")
        if path == f"{views.API_PREFIX}/registrations":
            return _http(200, views.registrations(self.core, now, limit))
        if path == f"{views.API_PREFIX}/subscriptions":
            return _http(200, views.subscriptions(self.core, now, limit))
        if path == f"{views.API_PREFIX}/counters":
            return _http(200, views.counters(self.core, {f"server.{k}": v for k, v in self.counters.items()}))
        simple = {
            "sites": views.sites, "policies": views.policies, "rloc-overrides": views.rloc_overrides,
            "static-mappings": views.static_mappings,
            "health": views.health,
        }
        view = simple.get(path[len(views.API_PREFIX) + 1:]) if path.startswith(views.API_PREFIX + "/") else None
        if view is not None:
            return _http(200, view(self.core))
        return _http(404, {"error": f"no such resource {url.path}",
                           "resources": [f"{views.API_PREFIX}/{name}" for name in
                                         ("registrations", "subscriptions", "counters", *simple)]})

    def _reap_clients(self, now: float) -> None:
        for client in [c for c in self._clients.values() if now - c.opened > HTTP_TIMEOUT]:
            self._close(client)

    def _close(self, client: _HttpClient) -> None:
        self._clients.pop(client.sock.fileno(), None)
        try:
            self._selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large"}


def _http(status: int, body: dict) -> bytes:
    data = json.dumps(body, indent=1).encode()
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n")
    return head.encode() + data
