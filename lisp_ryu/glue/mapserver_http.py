"""The standalone Map-Server's introspection HTTP endpoint, served between UDP batches.

The core has no lock, so the views are built in the loop's thread; what keeps
them off the resolver's path is that no step is long.  A list page is built
in pieces of `ROWS_PER_PIECE` rows (`views.page_chunks`, each piece finding
its place again from the last key sent), at most `TURN_BUDGET` seconds of
pieces per loop turn, round-robin over the clients, and a piece is built only
when the client has taken what came before (`HIGH_WATER`): a slow reader
holds one piece, not a page.  Around that, every connection is bounded: a
request head of at most `MAX_REQUEST` bytes within `REQUEST_TIMEOUT`, a
reader that takes nothing for `STALL_TIMEOUT` is dropped, at most
`MAX_CLIENTS` at once (the oldest one still sending its request makes room
for a new one; when all are being answered, the new one gets a 503).

One request per connection.  GET reads; POST/PUT/DELETE of policies, RLOC overrides and
static mappings change them (`mapserver_writes`: with a bearer token, answered once the change
is durable — with `--store etcd://`, committed to etcd, which can take a few milliseconds:
the client waits without holding the loop).  What is refused is counted (the `server.http_*`
counters) and logged, at most at powers of two per kind.
"""

from __future__ import annotations

import collections
import errno
import json
import logging
import selectors
import socket
import time
from concurrent.futures import Future
from typing import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

from lisp_ryu.glue import mapserver_writes as writes
from lisp_ryu.mapserver import views
from lisp_ryu.mapserver.service import MapServer

LOG = logging.getLogger("lisp_ryu.mapserver.server")

MAX_REQUEST = 8192
MAX_CLIENTS = 64
REQUEST_TIMEOUT = 2.0
STALL_TIMEOUT = 5.0
MAX_LIFETIME = 60.0
#: Seconds of view building per loop turn; UDP batches run in between.
TURN_BUDGET = 0.004
ROWS_PER_PIECE = 50
#: A new piece is built only while less than this waits for the client.
HIGH_WATER = 32 << 10
ACCEPTS_PER_TURN = 64
REAP_EVERY = 0.25
LISTS = ("registrations", "subscriptions")


class _Client:
    __slots__ = ("sock", "inbox", "outbox", "body", "chunked", "opened", "progress", "answering", "waiting")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.inbox = b""
        self.outbox = memoryview(b"")
        self.body: Iterator[bytes] | None = None  # pieces still to build
        self.chunked = False
        self.opened = now
        self.progress = now  # the last time the client took bytes
        self.answering = False
        self.waiting: tuple | None = None  # a write's (future, answer, status) until it is durable


class HttpViews:
    """Accepts, reads and answers the HTTP clients of one `StandaloneServer` on its selector."""

    def __init__(self, core: MapServer, listener: socket.socket, selector: selectors.BaseSelector,
                 clock: Callable[[], float], counters: dict[str, int],
                 extra_counters: Callable[[], dict[str, int]], token: str | None = None,
                 submit: Callable[[writes.Change], Future] | None = None) -> None:
        self.core = core
        self.listener = listener
        self.selector = selector
        self.clock = clock  # the core's wall clock, for `expires_in`
        self.counters = counters
        self.extra_counters = extra_counters
        self.clients: dict[int, _Client] = {}
        self._building: collections.deque[_Client] = collections.deque()
        self._next_reap = 0.0
        self._logged: dict[str, int] = {}
        self.token = token
        #: Runs a write's change in the loop: a future of the Map-Notifies it sent, done once it is durable.
        self.submit = submit
        self._waiting: list[_Client] = []
        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ, self)

    def _refuse(self, what: str, message: str, *args: object) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1
        seen = self._logged[what] = self._logged.get(what, 0) + 1
        if seen & (seen - 1) == 0:
            LOG.warning("HTTP: " + message + (f" ({seen} so far)" if seen > 1 else ""), *args)

    # ---- connections -------------------------------------------------------------------
    def ready(self, key: selectors.SelectorKey, events: int) -> None:
        """The selector reported the listener or a client."""
        if key.fileobj is self.listener:
            self._accept()
        else:
            self._serve(key.data, events)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._refuse("http_refused.no_file_descriptors", "cannot accept: %s", exc)
                return
            sock.setblocking(False)
            try:  # a page goes out in pieces: Nagle would hold the last small one for the reader's delayed ACK
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            now = time.monotonic()
            if len(self.clients) >= MAX_CLIENTS and not self._make_room(peer):
                _try_send(sock, _http(503, {"error": "too many HTTP clients, try again"}))
                sock.close()
                continue
            client = _Client(sock, now)
            self.clients[sock.fileno()] = client
            self.selector.register(sock, selectors.EVENT_READ, client)

    def _make_room(self, peer) -> bool:
        idle = [c for c in self.clients.values() if not c.answering]
        if not idle:
            self._refuse("http_refused.connection_cap", "%d clients are being answered: refused %s",
                         MAX_CLIENTS, peer[0])
            return False
        oldest = min(idle, key=lambda c: c.opened)
        self._refuse("http_closed.evicted_idle", "%d connections open: closed the oldest one still sending "
                     "its request", MAX_CLIENTS)
        self._close(oldest)
        return True

    def _serve(self, client: _Client, events: int) -> None:
        if events & selectors.EVENT_READ:
            try:
                chunk = client.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                chunk = None
            except OSError:
                self._close(client)
                return
            if chunk == b"":
                self._close(client)
                return
            if chunk and not client.answering:
                client.inbox += chunk
                if self._complete(client.inbox):
                    self._answer(client)
        if events & selectors.EVENT_WRITE:
            self._flush(client)

    def _complete(self, inbox: bytes) -> bool:
        """Whether the request is all here: its head, and the body a write announces."""
        end = inbox.find(b"\r\n\r\n")
        if end < 0:
            return len(inbox) > MAX_REQUEST
        if inbox.split(b" ", 1)[0].decode("latin-1") not in writes.WRITE_METHODS:
            return True
        try:
            length = writes.body_length(inbox[:end].decode("latin-1"))
        except writes.WriteError:
            return True  # answered with the error
        return length > writes.MAX_BODY or len(inbox) >= end + 4 + length

    def _answer(self, client: _Client) -> None:
        client.answering = True
        client.progress = time.monotonic()
        if client.inbox.split(b" ", 1)[0].decode("latin-1") in writes.WRITE_METHODS:
            self._write(client)
            return
        head, client.body, client.chunked = self._respond(client.inbox)
        client.inbox = b""
        client.outbox = memoryview(head)
        if client.body is not None:
            self._building.append(client)
        self.selector.modify(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)
        self._flush(client)

    def _flush(self, client: _Client) -> None:
        if client.outbox:
            try:
                sent = client.sock.send(client.outbox)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(client)
                return
            if sent:
                client.outbox = client.outbox[sent:]
                client.progress = time.monotonic()
        if not client.outbox and client.body is None:
            self._close(client)

    def _write(self, client: _Client) -> None:
        """A POST/PUT/DELETE: checked, then its change submitted; answered in `turn` once durable."""
        self.counters["http_writes"] = self.counters.get("http_writes", 0) + 1
        request, client.inbox = client.inbox, b""
        end = request.find(b"\r\n\r\n")
        head = request[:end].decode("latin-1", "replace")
        method, target = (head.split("\r\n", 1)[0].split() + ["", ""])[:2]
        try:
            path = urlsplit(target).path.rstrip("/")
            writes.check_resource(method, path)
            writes.authorise(self.token, head)
            if self.submit is None:
                raise writes.WriteError(405, "this endpoint is read-only")
            length = writes.body_length(head)
            if length > writes.MAX_BODY:
                raise writes.WriteError(413, f"request body larger than {writes.MAX_BODY} bytes")
            change, answer, status = writes.plan(method, path, request[end + 4:end + 4 + length])
        except writes.WriteError as error:
            if error.status in (401, 403):
                self._refuse("http_refused.unauthorised", "refused %s %s: %s", method, target, error.message)
            self._reply(client, _http(error.status, error.body()))
            return
        client.waiting = (self.submit(change), answer, status)
        self._waiting.append(client)
        if client.waiting[0].done():  # made durable already (the file journal): answered now
            self._answer_writes()

    def _reply(self, client: _Client, response: bytes) -> None:
        client.outbox = memoryview(response)
        self.selector.modify(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)
        self._flush(client)

    def _answer_writes(self) -> None:
        still = []
        for client in self._waiting:
            if client.sock.fileno() < 0:
                continue  # closed meanwhile
            future, answer, status = client.waiting
            if not future.done():
                still.append(client)
                continue
            client.waiting = None
            error = future.exception()
            if error is None:
                self._reply(client, _http(status, answer(future.result())))
            else:
                failed = writes.failure(error)
                if failed.status >= 500:
                    self._refuse("http_writes_failed", "a write was not made durable: %s", failed.message)
                self._reply(client, _http(failed.status, failed.body()))
        self._waiting = still

    # ---- the loop's turn -----------------------------------------------------------------
    def turn(self) -> None:
        """Build pieces for at most TURN_BUDGET seconds, one per client per round; drop stuck clients."""
        if self._waiting:
            self._answer_writes()
        started = time.perf_counter()
        building = self._building
        progressed = True
        while building and progressed and time.perf_counter() - started < TURN_BUDGET:
            progressed = False
            for _ in range(len(building)):
                if time.perf_counter() - started >= TURN_BUDGET:
                    break
                client = building.popleft()
                if client.body is None or client.sock.fileno() < 0:
                    continue  # closed meanwhile
                if len(client.outbox) >= HIGH_WATER:
                    building.append(client)  # waits for its reader; the stall timeout watches it
                    continue
                progressed = True
                self._build(client)
                if client.body is not None:
                    building.append(client)
        now = time.monotonic()
        if now >= self._next_reap:
            self._next_reap = now + REAP_EVERY
            self._reap(now)

    def _build(self, client: _Client) -> None:
        try:
            piece = next(client.body)
        except StopIteration:
            client.body = None
            piece = b"0\r\n\r\n" if client.chunked else b""
        except Exception:  # a view bug must not stop the server; that client gets a cut response
            LOG.exception("HTTP: error building a page")
            self.counters["http_view_errors"] = self.counters.get("http_view_errors", 0) + 1
            self._close(client)
            return
        if client.chunked and piece and client.body is not None:
            piece = b"%x\r\n%s\r\n" % (len(piece), piece)
        client.outbox = memoryview(bytes(client.outbox) + piece) if client.outbox else memoryview(piece)
        self._flush(client)

    def _reap(self, now: float) -> None:
        for client in list(self.clients.values()):
            if not client.answering and now - client.opened > REQUEST_TIMEOUT:
                self._refuse("http_closed.request_timeout", "no complete request within %.0f s", REQUEST_TIMEOUT)
                self._close(client)
            elif client.answering and (now - client.progress > STALL_TIMEOUT or now - client.opened > MAX_LIFETIME):
                self._refuse("http_closed.slow_reader", "a reader took nothing for %.0f s or was still reading "
                             "after %.0f s", STALL_TIMEOUT, MAX_LIFETIME)
                self._close(client)

    def _close(self, client: _Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()
        client.body = None

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._close(client)

    # ---- requests ----------------------------------------------------------------------
    def _respond(self, request: bytes) -> tuple[bytes, Iterator[bytes] | None, bool]:
        """(what to send first, the pieces of a list page to build after it, whether chunked)."""
        self.counters["http_requests"] = self.counters.get("http_requests", 0) + 1
        if len(request) > MAX_REQUEST and b"\r\n\r\n" not in request:
            self._refuse("http_refused.request_too_large", "a request head over %d bytes", MAX_REQUEST)
            return _http(431, {"error": f"request header larger than {MAX_REQUEST} bytes"}), None, False
        line = request.split(b"\r\n", 1)[0].decode("latin-1", "replace").split()
        if len(line) != 3 or not line[2].startswith("HTTP/"):
            return _http(400, {"error": "bad request line"}), None, False
        method, target, version = line
        if method != "GET":
            return _http(405, {"error": f"{method} not allowed here"}), None, False
        url = urlsplit(target)
        query = parse_qs(url.query)
        path = url.path.rstrip("/")
        name = path[len(views.API_PREFIX) + 1:] if path.startswith(views.API_PREFIX + "/") else ""
        if name in LISTS:
            limit, after = query.get("limit", [None])[0], query.get("after", [None])[0]
            try:
                body = views.page_chunks(name, self.core, self.clock(), limit, after, ROWS_PER_PIECE)
                if limit is not None and int(limit) > views.MAX_LIMIT:
                    self.counters["http_limit_capped"] = self.counters.get("http_limit_capped", 0) + 1
            except ValueError as exc:
                return _http(400, {"error": str(exc) if "after" in str(exc) else
                                   "limit must be a non-negative integer"}), None, False
            return _streamed(body, version)
        if name == "sites":  # counts every registration: in pieces too
            return _streamed(views.sites_chunks(self.core), version)
        if name == "counters":
            return _http(200, views.counters(self.core, self.extra_counters())), None, False
        simple = {
            "policies": views.policies, "rloc-overrides": views.rloc_overrides,
            "static-mappings": views.static_mappings,
            "health": views.health,
        }
        if name in simple:
            return _http(200, simple[name](self.core)), None, False
        return _http(404, {"error": f"no such resource {url.path}",
                           "resources": [f"{views.API_PREFIX}/{r}" for r in (*LISTS, "counters", "sites", *simple)]}), \
            None, False


def _streamed(body: Iterator[bytes], version: str) -> tuple[bytes, Iterator[bytes], bool]:
    """A 200 whose body is built piece by piece: chunked for HTTP/1.1, ended by the close for 1.0."""
    chunked = version == "HTTP/1.1"
    head = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + ("Transfer-Encoding: chunked\r\n" if chunked else "") + "Connection: close\r\n\r\n")
    return head.encode(), body, chunked


def _try_send(sock: socket.socket, data: bytes) -> None:
    try:
        sock.send(data)
    except OSError:
        pass


_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


def _http(status: int, body: dict) -> bytes:
    data = json.dumps(body, indent=1).encode()
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n")
    return head.encode() + data
