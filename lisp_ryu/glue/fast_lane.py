"""The fast lane (issue 20): datagrams between our own cores are handed over at once.

An xTR's Map-Register to the embedded Map-Server, the Map-Notifies and publications
back to our xTRs still go on the wire (a capture shows the protocol as it is), but
the receiving core also gets each one straight away, after the sender's flows are
pushed and before anything else queued on the thread (timers, REST, other
sockets).  A move's whole control path (learn, register, notify, every xTR's
flows) then runs in one go.  The wire copy, when it is read later, is recognised
by (receiver, payload) and dropped.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable

from lisp_ryu.wire import LISP_CONTROL_PORT

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_UNCLAIMED = 4096  # wire copies remembered that never came (lost): the oldest are forgotten


class FastLane:
    """Which local addresses our cores listen on, the datagrams in hand, the wire copies to drop."""

    def __init__(self, handle: Callable[[Any, bytes, str, int, IPAddress | None], None],
                 count: Callable[[str], None]) -> None:
        # handle(receiver endpoint, payload, source host, source port, local address): the controller's
        self._handle = handle
        self._count = count
        self._listeners: dict[tuple[str, int], tuple[Any, IPAddress | None]] = {}
        self._queue: list[tuple[Any, bytes, str, IPAddress | None]] = []
        self._handed: dict[tuple[str, bytes], int] = {}  # wire copies to drop, by (receiver, payload)
        self._draining = False

    def listen(self, endpoint: Any) -> None:
        """Note where `endpoint` (a ControlEndpoint) receives: its sockets' local addresses."""
        for local, sock in endpoint.receivers.items():
            address = local
            if address is None:
                try:
                    address = ipaddress.ip_address(sock.getsockname()[0])
                except (AttributeError, OSError, ValueError):
                    continue
                if address.is_unspecified:
                    continue  # a wildcard listener: which address reaches it is not ours to say
            self._listeners[(str(address), LISP_CONTROL_PORT)] = (endpoint, local)

    def sent(self, sender: Any, payload: bytes, destination: tuple[str, int], family_version: int) -> None:
        """`sender` put `payload` on the wire to `destination`: queue it if one of our cores listens there."""
        receiver = self._listeners.get(destination)
        if receiver is not None and receiver[0] is not sender:
            self._queue.append((receiver[0], payload, _source_of(sender, family_version), receiver[1]))

    def drain(self) -> None:
        """Hand over the queued datagrams, and those they cause, in order (not re-entered)."""
        if not self._queue or self._draining:
            return
        self._draining = True
        try:
            while self._queue:
                receiver, payload, source, local = self._queue.pop(0)
                key = (receiver.name, payload)
                self._handed[key] = self._handed.get(key, 0) + 1
                if len(self._handed) > MAX_UNCLAIMED:
                    self._handed.pop(next(iter(self._handed)))
                self._count("fast_lane_handed")
                self._handle(receiver, payload, source, LISP_CONTROL_PORT, local)
        finally:
            self._draining = False

    def is_wire_copy(self, receiver_name: str, payload: bytes) -> bool:
        """The datagram read from the socket was handed over already: drop it (counted)."""
        if not self._handed:
            return False
        key = (receiver_name, payload)
        seen = self._handed.get(key)
        if not seen:
            return False
        if seen == 1:
            del self._handed[key]
        else:
            self._handed[key] = seen - 1
        self._count("fast_lane_wire_copies_dropped")
        return True


def _source_of(endpoint: Any, version: int) -> str:
    """The address a datagram of `endpoint`'s leaves from: its socket's (an xTR's first RLOC)."""
    for local, sock in endpoint.receivers.items():
        if local is not None and local.version == version:
            return str(local)
        try:
            return sock.getsockname()[0]
        except (AttributeError, OSError):
            break
    return "0.0.0.0"
