"""What the pure cores ask the glue to do, and the shape of a core the glue drives.

The xTR core and the Map-Server core never send, sleep or read a clock:
their handlers return a list of these, and the glue carries them out in
order (flows first, then packets, so a re-injected packet meets its flows).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol, Union

from lisp_ryu.wire.records import MappingRecord

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class SendControl:
    """Send a LISP control datagram from our control socket."""

    destination: IPAddress
    port: int
    payload: bytes
    what: str = ""  # for the log: "Map-Request for 10.2.0.20/32 iid 42"


@dataclass(frozen=True)
class PacketOut:
    """Re-inject a held packet into the switch pipeline (from table 0, as if from in_port), or,
    with `out_port`, send it out of that port as it is."""

    in_port: int
    data: bytes
    out_port: int | None = None


@dataclass(frozen=True)
class DataplaneChanged:
    """The desired data plane changed: recompile, diff and push.  `at_once`: even while a burst
    holds pushes back (a planned move's workload arrived: its replies wait for this push, and the
    backlog that looks like a burst is the traffic held for it)."""

    reason: str
    at_once: bool = False


@dataclass(frozen=True)
class HostArrived:
    """A workload appeared at this xTR (a dynamic EID learned here): `record` is its mapping as
    registered.  A glue that drives other xTRs too tells the one it left at once, instead of
    after the Map-Server's round trip (the publication that follows confirms it).  `workload`
    names the machine (its MAC): a dual-stack workload arrives once per address."""

    record: MappingRecord
    workload: str = ""


@dataclass(frozen=True)
class RegisterChanges:
    """The hosts here changed: register what the map-servers have not confirmed, by asking the
    core (`register_changes`) once this event's switch work is done.  Building and signing a
    Map-Register for each map-server costs about a millisecond of the one thread, which a
    workload's own flows and those of the xTRs it left, told directly, need not wait for."""


Effect = Union[SendControl, PacketOut, DataplaneChanged, HostArrived, RegisterChanges]


class Core(Protocol):
    """A sans-IO actor: the xTR core and the Map-Server both are one; the glue drives any Core.

    Time is always a parameter; the glue owns the clock, the sockets and the
    thread, so a core needs no lock.
    """

    def handle_control(self, payload: bytes, source: IPAddress, port: int, now: float) -> list[Effect]:
        """A LISP control datagram from `source`:`port`."""
        ...

    def handle_timer(self, now: float) -> list[Effect]:
        """Whatever is due at `now` (retransmissions, expiries, refreshes)."""
        ...

    def next_deadline(self) -> float | None:
        """When `handle_timer` next has work (None: nothing scheduled)."""
        ...
