"""One in-memory underlay for tests: real cores, the real controller, real bytes; fake sockets and switches.

- `Clock`: time that moves only when a test says so.
- `FakeSocket`: a UDP socket on the underlay; `sendto` queues the datagram.
- `Underlay`: owns the sockets, delivers queued datagrams in order (`settle`)
  to the controller endpoint bound to the destination address, with the
  sender's address as the source -- the wire between cores is the codec.
- `FakeSwitch`: a datapath that parses every OpenFlow message it is sent
  with Ryu's own parser, keeps the tables the flow/group/meter-mods build,
  records packet-outs, and answers the controller's flow-stats requests from
  its tables (what a switch holds after the controller restarts).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections import deque
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

from ryu.ofproto import ofproto_parser as ryu_parser
from ryu.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from lisp_ryu.effects import PacketOut
from lisp_ryu.flows import ofp13
from lisp_ryu.flows.diff import diff
from lisp_ryu.flows.model import DesiredState, Flow
from lisp_ryu.flows.pipeline import Table
from lisp_ryu.glue.controller import ControlEndpoint, Controller

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
LISP_CONTROL_PORT = 4342
OFP = ofproto_v1_3
PARSER = ofproto_v1_3_parser


class Clock:
    """`now`, callable as a clock; moves only by assignment or `advance`."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class FakeSocket:
    """A UDP socket bound on the underlay: what it sends waits in the underlay until `settle`."""

    def __init__(self, underlay: Underlay, address: IPAddress, port: int) -> None:
        self.underlay = underlay
        self.address = address
        self.port = port
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.fail_with: OSError | None = None  # set to make sendto fail, as a full buffer or no route does

    def sendto(self, payload: bytes, destination: tuple[str, int]) -> int:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append((bytes(payload), destination))
        self.underlay.in_flight.append((self, bytes(payload), destination))
        return len(payload)

    def getsockname(self) -> tuple[str, int]:
        return str(self.address), self.port

    def close(self) -> None:
        self.underlay.sockets.pop((self.address, self.port), None)


class Underlay:
    """The network between controller endpoints, delivering datagrams one at a time, in order."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.sockets: dict[tuple[IPAddress, int], FakeSocket] = {}
        self.owners: dict[FakeSocket, tuple[Controller, ControlEndpoint, IPAddress | None]] = {}
        self.in_flight: deque = deque()
        self.unrouted: list[tuple[str, bytes]] = []  # to addresses nobody here owns (a peer not modelled)

    # ---- sockets and endpoints -------------------------------------------------------
    def open_socket(self, netns: str | None, bind: tuple[str, int], family: int = socket.AF_INET) -> FakeSocket:
        """`glue.netns.open_udp_socket`'s signature, for `Controller.from_config(open_socket=...)`."""
        key = (ipaddress.ip_address(bind[0]), bind[1])
        if key in self.sockets:
            raise OSError(98, f"address in use: {bind[0]}:{bind[1]}")
        sock = self.sockets[key] = FakeSocket(self, *key)
        return sock

    def bind(self, controller: Controller) -> Controller:
        """Deliver what arrives at each endpoint's sockets to `controller`."""
        for endpoint in controller.endpoints:
            for local, sock in endpoint.receivers.items():
                self.owners[sock] = (controller, endpoint, local)
        return controller

    def attach(self, controller: Controller, name: str, core: Any, addresses: list[IPAddress],
               dpid: int | None = None, clock: Callable[[], float] | None = None) -> ControlEndpoint:
        """Add `core` to `controller` on sockets at `addresses` (it sends from the first).

        An xTR (`dpid` set) is told which of its addresses a datagram reached; the
        Map-Server is not, as in production.
        """
        socks = [self.open_socket(None, (str(a), LISP_CONTROL_PORT)) for a in addresses]
        receivers = {(a if dpid is not None else None): s for a, s in zip(addresses, socks)}
        endpoint = controller.add_endpoint(ControlEndpoint(name, core, socks[0].sendto, clock or self.clock, dpid,
                                                           receivers))
        for local, sock in receivers.items():
            self.owners[sock] = (controller, endpoint, local)
        return endpoint

    def connect(self, controller: Controller, dpid: int, holds: DesiredState | None = None) -> FakeSwitch:
        """A switch (holding `holds`) connects to `controller` and answers its table reads."""
        switch = FakeSwitch(dpid, holds)
        switch.controller = controller  # it answers barriers (`answer_barriers`)
        controller.switch_connected(switch)
        switch.answer(controller)
        return switch

    # ---- the wire --------------------------------------------------------------------------
    def settle(self, limit: int = 10_000, late: Callable[[bytes], bool] | None = None,
               until: Callable[[], bool] | None = None) -> int:
        """Deliver datagrams until none is in flight (those they cause included); how many were delivered.

        `late(payload)`: those datagrams wait until nothing else is in flight, then go in
        order (a receiver that reads them late, e.g. a busy Map-Server's Map-Registers).
        `until()`: stop as soon as it holds (a glue waiting for something lets the rest run
        only until then)."""
        delivered = 0
        waiting: deque = deque()
        while self.in_flight or waiting:
            if until is not None and until():
                break
            assert delivered < limit, "message loop on the underlay"
            if not self.in_flight:
                self.in_flight.extend(waiting)
                waiting.clear()
                late = None
            sender, payload, (host, port) = self.in_flight.popleft()
            if late is not None and late(payload):
                waiting.append((sender, payload, (host, port)))
                continue
            target = self.sockets.get((ipaddress.ip_address(host), port))
            owner = self.owners.get(target) if target is not None else None
            if owner is None:
                self.unrouted.append((host, payload))
                continue
            controller, endpoint, local = owner
            controller.datagram(endpoint, payload, str(sender.address), sender.port, local)
            delivered += 1
        return delivered


class FakeSwitch:
    """A datapath for the controller: Ryu's parser reads what it is sent; its tables follow the mods."""

    ofproto = OFP
    ofproto_parser = PARSER

    def __init__(self, dpid: int, holds: DesiredState | None = None) -> None:
        self.id = dpid
        self.xid = 0
        self.messages: list[Any] = []  # every message received, parsed, in order
        self.flows: dict[tuple, Any] = {}  # Flow.key -> the flow-mod that installed it
        self.groups: dict[int, Any] = {}
        self.meters: dict[int, Any] = {}
        self._answered: set[int] = set()
        self.async_config: AsyncConfig | None = None  # the switch's defaults until the controller sets them
        self.controller: Controller | None = None
        self.answer_barriers = True  # at once, as having done everything before them
        self.packet_counts: dict[int, int] = {}  # by cookie: packets its flows forwarded (what a test says)
        self.answer_reads = True  # counter reads: at once
        if holds is not None:
            for data in ofp13.encode_operations(_Scratch(), diff(DesiredState(), holds)):
                self._receive(data, record=False)

    # -- what Ryu's Datapath offers the controller -----------------------------------------
    def set_xid(self, msg: Any) -> int:
        self.xid = (self.xid + 1) & self.ofproto.MAX_XID
        msg.set_xid(self.xid)
        return self.xid

    def send_msg(self, msg: Any) -> None:
        if msg.xid is None:
            self.set_xid(msg)
        msg.serialize()
        self.send(bytes(msg.buf))

    def send(self, data: bytes) -> None:
        self._receive(bytes(data), record=True)

    # -- the switch ----------------------------------------------------------------------------
    def _receive(self, data: bytes, record: bool) -> None:
        offset = 0
        while offset < len(data):
            version, msg_type, length, xid = struct.unpack_from("!BBHI", data, offset)
            msg = _parse(self, version, msg_type, length, xid, data[offset:offset + length])
            offset += length
            if record:
                self.messages.append(msg)
            self._apply(msg)

    def _apply(self, msg: Any) -> None:
        if isinstance(msg, PARSER.OFPFlowMod):
            key = ofp13.flow_from_stats(msg).key
            if msg.command == OFP.OFPFC_ADD:
                self.flows[key] = msg
            elif msg.command == OFP.OFPFC_DELETE_STRICT:
                self.flows.pop(key, None)
            else:
                raise AssertionError(f"flow-mod command {msg.command} is not used by the controller")
        elif isinstance(msg, GroupMod):
            if msg.command == OFP.OFPGC_DELETE:
                self.groups.pop(msg.group_id, None)
            else:
                self.groups[msg.group_id] = msg
        elif isinstance(msg, MeterMod):
            if msg.command == OFP.OFPMC_DELETE:
                self.meters.pop(msg.meter_id, None)
            else:
                self.meters[msg.meter_id] = msg
        elif isinstance(msg, AsyncConfig):
            self.async_config = msg
        elif isinstance(msg, Barrier) and self.answer_barriers and self.controller is not None:
            self.controller.barrier_reply(self.id, msg.xid)
        elif isinstance(msg, StatsRequest) and msg.cookie_mask and self.answer_reads and self.controller is not None:
            self._answered.add(msg.xid)  # a read of counters: answered at once, from `packet_counts`
            counted = [SimpleNamespace(packet_count=self.packet_counts.get(m.cookie, 0)) for m in self.flows.values()
                       if msg.table in (OFP.OFPTT_ALL, m.table_id) and m.cookie & msg.cookie_mask == msg.cookie]
            self.controller.stats_reply(self.id, msg.xid, "flows", counted, False)

    def held(self) -> DesiredState:
        """What the switch holds, in the flow model."""
        return DesiredState(flows=frozenset(ofp13.flow_from_stats(m) for m in self.flows.values()),
                            groups=frozenset(ofp13.group_from_desc(m) for m in self.groups.values()),
                            meters=frozenset(ofp13.meter_from_config(m) for m in self.meters.values()))

    def answer(self, controller: Controller) -> None:
        """Reply to every table read not yet answered, each in one part."""
        for msg in self.messages:
            if isinstance(msg, StatsRequest) and msg.xid not in self._answered:
                self._answered.add(msg.xid)
                table = {"flows": self.flows, "groups": self.groups, "meters": self.meters}[msg.kind]
                controller.stats_reply(self.id, msg.xid, msg.kind, list(table.values()), False)

    def packet_in(self, controller: Controller, in_port: int, frame: bytes, iid: int = 0,
                  table: int = Table.ROUTE) -> None:
        """A packet the flows send to the controller (`table` CLASSIFY: a host to learn)."""
        controller.packet_in(self.id, table, in_port, iid, frame)

    # -- what the controller sent ---------------------------------------------------------------
    def flow_mods(self) -> list[tuple[str, Flow]]:
        """("add" | "delete", flow) for each flow-mod received, in order."""
        names = {OFP.OFPFC_ADD: "add", OFP.OFPFC_DELETE_STRICT: "delete"}
        return [(names[m.command], ofp13.flow_from_stats(m)) for m in self.messages
                if isinstance(m, PARSER.OFPFlowMod)]

    def mods(self) -> list[Any]:
        """Every flow-, group- and meter-mod received, in order."""
        return [m for m in self.messages if isinstance(m, (PARSER.OFPFlowMod, GroupMod, MeterMod))]

    @property
    def packet_outs(self) -> list[PacketOut]:
        return [PacketOut(m.in_port, m.data) for m in self.messages if isinstance(m, PacketOutMsg)]

    def clear(self) -> None:
        """Forget the messages received so far (the tables stay)."""
        self.messages.clear()


# ---- decoding what the controller sends (Ryu parses only the flow-mod of these) ----------------

MULTIPART_KINDS = {OFP.OFPMP_FLOW: "flows", OFP.OFPMP_GROUP_DESC: "groups", OFP.OFPMP_METER_CONFIG: "meters"}


@dataclass
class StatsRequest:
    xid: int
    kind: str  # flows | groups | meters
    table: int = OFP.OFPTT_ALL  # flows: which ones (a read of counters names a table and a cookie)
    cookie: int = 0
    cookie_mask: int = 0


@dataclass
class PacketOutMsg:
    xid: int
    in_port: int
    actions: list
    data: bytes


@dataclass
class GroupMod:
    xid: int
    command: int
    type: int
    group_id: int
    buckets: list


@dataclass
class MeterMod:
    xid: int
    command: int
    flags: int
    meter_id: int
    bands: list


@dataclass
class Barrier:
    xid: int


@dataclass
class AsyncConfig:
    """OFPT_SET_ASYNC: which asynchronous messages the switch sends, [master/equal, slave] bitmaps."""

    xid: int
    packet_in: list
    port_status: list
    flow_removed: list


def _parse(dp: Any, version: int, msg_type: int, length: int, xid: int, buf: bytes) -> Any:
    assert version == OFP.OFP_VERSION and length == len(buf) >= 8, (version, length, len(buf))
    if msg_type == OFP.OFPT_FLOW_MOD:
        return ryu_parser.msg(dp, version, msg_type, length, xid, buf)
    if msg_type == OFP.OFPT_MULTIPART_REQUEST:
        (kind,) = struct.unpack_from("!H", buf, 8)
        if kind == OFP.OFPMP_FLOW:
            table, _out_port, _out_group, cookie, cookie_mask = struct.unpack_from("!B3xII4xQQ", buf, 16)
            return StatsRequest(xid, "flows", table, cookie, cookie_mask)
        return StatsRequest(xid, MULTIPART_KINDS[kind])
    if msg_type == OFP.OFPT_PACKET_OUT:
        _buffer, in_port, actions_len = struct.unpack_from("!IIH", buf, 8)
        actions, offset = [], 24
        while offset < 24 + actions_len:
            action = PARSER.OFPAction.parser(buf, offset)
            actions.append(action)
            offset += action.len
        return PacketOutMsg(xid, in_port, actions, bytes(buf[24 + actions_len:]))
    if msg_type == OFP.OFPT_GROUP_MOD:
        command, group_type, group_id = struct.unpack_from("!HBxI", buf, 8)
        buckets, offset = [], 16
        while offset < length:
            bucket = PARSER.OFPBucket.parser(buf, offset)
            buckets.append(bucket)
            offset += bucket.len
        return GroupMod(xid, command, group_type, group_id, buckets)
    if msg_type == OFP.OFPT_METER_MOD:
        command, flags, meter_id = struct.unpack_from("!HHI", buf, 8)
        bands, offset = [], 16
        while offset < length:
            band = PARSER.OFPMeterBandHeader.parser(buf, offset)
            bands.append(band)
            offset += band.len
        return MeterMod(xid, command, flags, meter_id, bands)
    if msg_type == OFP.OFPT_BARRIER_REQUEST:
        return Barrier(xid)
    if msg_type == OFP.OFPT_SET_ASYNC:
        packet_in, port_status, flow_removed = (list(m) for m in zip(*[iter(struct.unpack_from("!6I", buf, 8))] * 2))
        return AsyncConfig(xid, packet_in, port_status, flow_removed)
    raise AssertionError(f"the controller sent an unexpected OpenFlow message type {msg_type}")


class _Scratch:
    """A datapath only for encoding what a switch already holds."""

    ofproto = OFP
    ofproto_parser = PARSER
    xid = 0


def ipv4_frame(source: str | IPAddress, destination: str | IPAddress, payload: bytes = b"",
               src_mac: bytes = b"\x02\x00\x00\x00\x00\x01") -> bytes:
    """An Ethernet + IPv4 frame, enough for the controller's packet-in parsing."""
    src, dst = ipaddress.IPv4Address(str(source)), ipaddress.IPv4Address(str(destination))
    ip_header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 17, 0, src.packed, dst.packed)
    return b"\x02\x00\x00\x00\x00\x02" + src_mac + b"\x08\x00" + ip_header + payload


def ipv6_frame(source: str | IPAddress, destination: str | IPAddress, payload: bytes = b"",
               src_mac: bytes = b"\x02\x00\x00\x00\x00\x01", next_header: int = 58) -> bytes:
    """An Ethernet + IPv6 frame (ICMPv6 by default), enough for the controller's packet-in parsing."""
    src, dst = ipaddress.IPv6Address(str(source)), ipaddress.IPv6Address(str(destination))
    ip_header = struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, 64, src.packed, dst.packed)
    return b"\x02\x00\x00\x00\x00\x02" + src_mac + b"\x86\xdd" + ip_header + payload
