"""Every Ryu 4.34 / eventlet quirk this project works around, in one place.

Ryu 4.34 is unmaintained.  On Python 3.11 it runs with eventlet 0.33.3 and
dnspython 2.2.1 (pinned in requirements.txt; setuptools<67 for its build is
pinned in constraints.txt), but `ryu.app.wsgi` still imports
`eventlet.wsgi.ALREADY_HANDLED`, which eventlet dropped.  `apply()` restores
that name before anything imports Ryu; `run_ryu_manager()` applies it, fixes
the servers below and then hands over to ryu-manager's own main().

The REST server: Ryu starts eventlet's WSGI server with no socket timeout
and the default pool of 1,024 connections, so idle connections held open
filled the pool for ever and the accept loop waited for a free slot.  Here
it has a socket timeout (--wsapi-socket-timeout) and a cap
(--wsapi-max-connections); a full pool closes its oldest connection to make
room, so holding connections open cannot lock out a new one.

The log: Ryu logs to stderr with no format (no time, no level) and a write
and flush per line; a burst of moves logs a few lines per workload, so the
controller's one thread spent a tenth of its time in write system calls.
Here lines carry time and level, and are written in batches: at once from
WARNING up, else at least every LOG_FLUSH_INTERVAL, at exit and on SIGTERM.

Sending to a switch: Ryu queues every message for a send loop, a green
thread that runs only when the one handling the event yields, so a move's
flow-mods waited for the whole of its handling (the other switches' pushes,
the registration) before any left.  `send_directly` writes each message at
once while nothing waits before it, and queues it behind what does.

The OpenFlow TLS listener: Ryu builds its SSL context on the first
connection and pops the certificate arguments while doing so; the second
switch to connect got a context without a certificate.  Here the context is
built once, at start (TLS 1.2 or later; a client certificate is required
when --ca-certs is given), and a handshake has a deadline.
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import sys

from lisp_ryu.glue.refusals import REFUSALS

LOG = logging.getLogger("lisp_ryu")
REST_SOCKET_TIMEOUT = 10.0  # seconds a REST connection may sit idle or stall mid-request
REST_MAX_CONNECTIONS = 256  # a management API: far more than its clients, far fewer than the fd limit
TLS_HANDSHAKE_TIMEOUT = 10.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FLUSH_INTERVAL = 0.1  # seconds an INFO line may wait to be written with the next ones
LOG_BATCH_LINES = 256  # a batch this long is written at once

_applied = False


def apply() -> None:
    """Patch eventlet so that `ryu.app.wsgi` imports.  Idempotent."""
    global _applied
    if _applied:
        return
    import eventlet.wsgi

    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        # Ryu only compares a response body against this sentinel by identity.
        eventlet.wsgi.ALREADY_HANDLED = object()
    _applied = True


class _WatchedSocket:
    """A datapath's socket as Ryu's send loop uses it, telling whether a sendall is under way
    (it yields while the kernel's buffer is full: bytes written meanwhile would land inside)."""

    def __init__(self, sock) -> None:
        self._sock = sock
        self.writing = False

    def sendall(self, data, *args):
        self.writing = True
        try:
            return self._sock.sendall(data, *args)
        finally:
            self.writing = False

    def __getattr__(self, name):
        return getattr(self._sock, name)


def send_directly(dp) -> bool:
    """Make Ryu's datapath `dp` write each message at once when nothing is queued before it.

    What the kernel does not take at once (its buffer full), and every message while Ryu's
    send loop has some queued or is writing, goes through the loop as before, so the order
    on the connection is kept.  A TLS connection, or a socket without its raw socket to
    write to, is left as it is (False)."""
    raw = getattr(dp.socket, "fd", None)
    if raw is None or isinstance(dp.socket, ssl.SSLSocket) or isinstance(raw, ssl.SSLSocket):
        return False
    watched = _WatchedSocket(dp.socket)
    dp.socket = watched
    queued = dp.send  # Ryu's own: through the send loop

    def send(buf, close_socket=False):
        q = dp.send_q
        if close_socket or q is None or q.qsize() or watched.writing:
            return queued(buf, close_socket)
        try:
            sent = raw.send(buf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return queued(buf)  # the send loop meets the error and ends the session, as it would have
        return True if sent == len(buf) else queued(buf[sent:])

    dp.send = send
    return True


def _register_options() -> None:
    """The REST server's bounds, as ryu-manager options beside its own --wsapi-host/--wsapi-port."""
    from ryu import cfg

    try:
        cfg.CONF.register_cli_opts([
            cfg.FloatOpt("wsapi-socket-timeout", default=REST_SOCKET_TIMEOUT, min=0.1,
                         help=f"seconds a REST connection may idle (default {REST_SOCKET_TIMEOUT:g})"),
            cfg.IntOpt("wsapi-max-connections", default=REST_MAX_CONNECTIONS, min=1,
                       help="open REST connections at most; when full the oldest is closed "
                            f"(default {REST_MAX_CONNECTIONS})"),
        ])
    except cfg.DuplicateOptError:  # registered by an earlier call in this process
        pass


def _evicting_pool(size: int):
    """A green pool of `size` connections that, when full, closes its oldest one to admit the next.

    eventlet's server spawns each connection as `pool.spawn(process_request, [addr, socket, state])`;
    shutting the oldest socket down ends its reader with EOF, which frees the slot.
    """
    import eventlet
    from eventlet import greenio

    class EvictingPool(eventlet.GreenPool):
        def __init__(self) -> None:
            super().__init__(size)
            self.open: dict[int, tuple[tuple, object]] = {}  # id(connection) -> (address, socket), oldest first

        def spawn(self, function, connection, *args):
            if self.free() == 0 and self.open:
                key = next(iter(self.open))
                address, sock = self.open.pop(key)
                REFUSALS.refuse("rest.connections_evicted", "any",
                                "REST connections: %d open, the most allowed (--wsapi-max-connections); "
                                "closing the oldest (from %s) to admit a new one", size, address[0])
                greenio.shutdown_safe(sock)
            key = id(connection)
            self.open[key] = (connection[0], connection[1])
            thread = super().spawn(function, connection, *args)
            thread.link(lambda _thread: self.open.pop(key, None))
            return thread

    return EvictingPool()


class _ServerLog:
    """eventlet's server log: the access line of each request at DEBUG (at INFO, a flood of requests
    is a flood of log lines; refusals are logged, rate-limited, by the API itself), errors at ERROR."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def info(self, msg, *args, **kwargs):
        self.logger.log(logging.ERROR if str(msg).startswith("Traceback") else logging.DEBUG, msg, *args)

    def debug(self, msg, *args, **kwargs):
        self.logger.debug(msg, *args)

    def error(self, msg, *args, **kwargs):
        self.logger.error(msg, *args)


def _bounded_rest_server() -> None:
    """Ryu's REST server with a socket timeout and a connection cap; and a taken port is not fatal.

    Ryu's manager dies when the REST port (--wsapi-port, default 8080) is taken, e.g. by another
    controller on the same machine.  Keep the controller (the data plane) running without its REST
    API instead, and say so in the log."""
    import eventlet.wsgi
    from ryu.app import wsgi
    from ryu.cmd import manager

    class BoundedWSGIServer(wsgi.WSGIServer):
        def serve_forever(self):
            conf = wsgi.CONF
            eventlet.wsgi.server(self.server, self.handle, _ServerLog(logging.getLogger("lisp_ryu.wsgi")),
                                 socket_timeout=conf.wsapi_socket_timeout, debug=False,
                                 custom_pool=_evicting_pool(conf.wsapi_max_connections))

    def start_service(app_mgr):
        for instance in app_mgr.contexts.values():
            if instance.__class__ == wsgi.WSGIApplication:
                try:
                    return BoundedWSGIServer(instance)
                except OSError as exc:
                    LOG.error("REST API not served: cannot listen on %s:%s (%s); pass --wsapi-port to choose "
                              "another port", wsgi.CONF.wsapi_host, wsgi.CONF.wsapi_port, exc.strerror)
                    return None
        return None

    manager.wsgi.start_service = start_service


def _openflow_tls() -> None:
    """Ryu's OpenFlow listener with one TLS context for every switch, and a handshake deadline."""
    from ryu.controller import controller

    base = controller.StreamServer

    class StreamServer(base):
        def __init__(self, listen_info, handle=None, **ssl_args):
            super().__init__(listen_info, handle)
            if not ssl_args:
                return
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(ssl_args["certfile"], ssl_args["keyfile"])
            if ssl_args.get("ca_certs"):
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(ssl_args["ca_certs"])
            LOG.info("OpenFlow over TLS on %s:%s (%s)", listen_info[0], listen_info[1],
                     "switch certificates checked against --ca-certs" if ssl_args.get("ca_certs")
                     else "switch certificates NOT checked: pass --ca-certs")

            def handshake_and_handle(sock, addr):
                sock.settimeout(TLS_HANDSHAKE_TIMEOUT)
                try:
                    tls = context.wrap_socket(sock, server_side=True)
                except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts are OSErrors
                    REFUSALS.refuse("openflow.tls_refused", addr[0], "OpenFlow TLS handshake from %s refused: %s",
                                    addr[0], getattr(exc, "reason", None) or exc)
                    sock.close()
                    return
                handle(tls, addr)  # the Datapath sets its own socket timeout

            self.handle = handshake_and_handle

    controller.StreamServer = StreamServer


class BatchedStreamHandler(logging.StreamHandler):
    """A stream handler that writes its lines in batches (see the module's docstring).

    `flush` writes what waits; the owner calls it every LOG_FLUSH_INTERVAL."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record) + self.terminator)
        except Exception:  # logging's own convention: a bad record is reported, never raised
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING or len(self._lines) >= LOG_BATCH_LINES:
            self.flush()

    def flush(self) -> None:
        self.acquire()
        try:
            if self._lines:
                text, self._lines = "".join(self._lines), []
                self.stream.write(text)
            if hasattr(self.stream, "flush"):
                self.stream.flush()
        except (OSError, ValueError):  # stderr closed or full: nothing to log to
            pass
        finally:
            self.release()


def _batched_log() -> None:
    """Ryu's stderr handler, replaced by a batched one with time and level (after Ryu sets it up)."""
    from ryu import log as ryu_log
    from ryu.lib import hub

    original = ryu_log.init_log

    def init_log() -> None:
        original()
        root = logging.getLogger()
        batched = []
        for handler in list(root.handlers):
            if type(handler) is logging.StreamHandler and handler.stream is sys.stderr:
                root.removeHandler(handler)
                replacement = BatchedStreamHandler(sys.stderr)
                replacement.setFormatter(logging.Formatter(LOG_FORMAT))
                root.addHandler(replacement)
                batched.append(replacement)
        if batched:
            hub.spawn(_flush_every, batched, LOG_FLUSH_INTERVAL)
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, flush_then_terminate(batched))

    ryu_log.init_log = init_log


def flush_then_terminate(handlers: list[logging.Handler]):
    """A SIGTERM handler: write what the batched handlers hold, then die of SIGTERM as before
    (the default action, which runs no Python exit code and would lose the last lines)."""

    def on_sigterm(signum, frame) -> None:
        for handler in handlers:
            handler.flush()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    return on_sigterm


def _flush_every(handlers: list[logging.Handler], interval: float) -> None:
    from ryu.lib import hub

    while True:
        hub.sleep(interval)
        for handler in handlers:
            handler.flush()


def run_ryu_manager(argv: list[str]) -> int:
    """Run ryu-manager with `argv` (its own options and app modules)."""
    apply()
    from ryu.cmd import manager

    _register_options()
    _bounded_rest_server()
    _openflow_tls()
    _batched_log()

    sys.argv = ["ryu-manager", *argv]
    manager.main()
    return 0
