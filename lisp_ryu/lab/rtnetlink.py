"""Hand-built rtnetlink requests (what `ip link|addr|route|neigh` send) on one
socket opened beforehand inside a network namespace.

A move's switchover (lisp_ryu/lab/move.py) renames, downs and ups the
host's interfaces and carries its addresses, routes and ARP cache from one
to the other while the host has no link; starting a process or entering a
namespace is slow, a request on an open socket is not.  No dependency: the few messages needed are packed here, and
every request waits for its acknowledgement, so a refusal is an error that
names the step and the kernel's reason.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from dataclasses import dataclass, replace

from lisp_ryu.glue.netns import run_in_netns
from lisp_ryu.lab.state import LabError

# <linux/netlink.h>
_NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_ACK = 0x1, 0x4
_NLM_F_DUMP = 0x300
_NLM_F_REPLACE, _NLM_F_EXCL, _NLM_F_CREATE = 0x100, 0x200, 0x400
_NLA_F_NESTED = 0x8000
# <linux/rtnetlink.h>
_RTM_NEWLINK, _RTM_DELLINK, _RTM_GETLINK = 16, 17, 18
_RTM_NEWADDR, _RTM_DELADDR, _RTM_GETADDR = 20, 21, 22
_RTM_NEWROUTE, _RTM_DELROUTE, _RTM_GETROUTE = 24, 25, 26
_RTM_NEWNEIGH, _RTM_GETNEIGH = 28, 30
# Family headers: ifinfomsg, ifaddrmsg, rtmsg, ndmsg.
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst len, src len, tos, table, protocol, scope, type, flags
_NDMSG = struct.Struct("=BxxxiHBB")  # family, index, state, flags, type
_IFF_UP = 0x1
_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MTU, _IFLA_MASTER, _IFLA_LINKINFO = 1, 3, 4, 10, 18
_IFLA_INFO_KIND = 1
_IFLA_AF_SPEC, _IFLA_INET6_ADDR_GEN_MODE, _IN6_ADDR_GEN_MODE_NONE = 26, 8, 1
_IFA_FLAGS, _IFA_F_NODAD = 8, 0x02
_IFA_ADDRESS = 1
_RT_SCOPE_LINK = 253
_RT_TABLE_LOCAL = 255
_RTPROT_KERNEL = 2
_RTA_DST, _RTA_OIF = 1, 4
_RTN_LOCAL = 2
_RTNH_F_ONLINK = 0x4
_NUD_REACHABLE, _NUD_STALE, _NUD_DELAY, _NUD_PROBE, _NUD_PERMANENT = 0x02, 0x04, 0x08, 0x10, 0x80
_NTF_ROUTER = 0x80
# Attributes a request may carry back: what the kernel only reports (a
# route's cache info, a neighbour's probe count...) stays behind.
# IFA_ address, local, label, broadcast, anycast, cacheinfo, flags, rt_priority:
_ADDRESS_ATTRIBUTES = frozenset({1, 2, 3, 4, 5, 6, 8, 9})
# RTA_ dst, src, gateway, priority, prefsrc, metrics, flow, table, via, pref:
_ROUTE_ATTRIBUTES = frozenset({1, 2, 5, 6, 7, 8, 11, 15, 18, 20})
_NEIGHBOUR_ATTRIBUTES = frozenset({1, 2})  # NDA_ dst, lladdr


class NetlinkError(LabError):
    """The kernel refused a request; `errno` says why."""

    def __init__(self, message: str, error: int):
        super().__init__(message)
        self.errno = error


@dataclass(frozen=True)
class Link:
    """A network interface as the kernel reports it."""

    index: int
    name: str
    up: bool  # administratively
    mac: str
    mtu: int


@dataclass(frozen=True)
class Message:
    """One rtnetlink message: its type, family header and attributes."""

    kind: int
    header: bytes
    attributes: tuple[tuple[int, bytes], ...]

    def attribute(self, kind: int) -> bytes | None:
        return next((value for k, value in self.attributes if k == kind), None)

    def encode(self) -> bytes:
        return self.header + b"".join(_attribute(kind, value) for kind, value in self.attributes)


def _attribute(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * (-length % 4)


def _parse_attributes(data: bytes) -> tuple[tuple[int, bytes], ...]:
    out, offset = [], 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        out.append((kind & 0x3FFF, data[offset + 4:offset + length]))  # without the nested/byte-order bits
        offset += (length + 3) & ~3
    return tuple(out)


@dataclass(frozen=True)
class InterfaceSetup:
    """What a host's kernel holds for one interface and a migration carries
    to its replacement: addresses, routes through it (not those the kernel
    makes from an address) and neighbour (ARP/NDP) entries."""

    addresses: tuple[Message, ...]
    routes: tuple[Message, ...]
    neighbours: tuple[Message, ...]


class RouteSocket:
    """A NETLINK_ROUTE socket made inside `namespace`; every request on it
    applies there, whatever namespace the caller is in."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        try:
            self._sock = run_in_netns(namespace, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                                                       socket.NETLINK_ROUTE))
        except OSError as exc:
            raise LabError(f"cannot open an rtnetlink socket in network namespace {namespace}: {exc}") from None
        try:
            self._sock.bind((0, 0))
            self._sock.settimeout(10.0)
        except OSError as exc:
            self._sock.close()
            raise LabError(f"cannot bind an rtnetlink socket in network namespace {namespace}: {exc}") from None
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    # ---- the protocol ---------------------------------------------------------------

    def _exchange(self, kind: int, flags: int, body: bytes, what: str) -> list[Message]:
        """Send one request; return what it answered (a dump's messages) once
        its acknowledgement or end of dump arrived; raise on a refusal."""
        self._seq += 1
        seq = self._seq
        try:
            self._sock.send(_NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(body), kind, flags, seq, 0) + body)
            answers: list[Message] = []
            while True:
                data = self._sock.recv(1 << 16)
                offset = 0
                while offset + _NLMSG_HEADER.size <= len(data):
                    length, got, _, got_seq, _ = _NLMSG_HEADER.unpack_from(data, offset)
                    payload = data[offset + _NLMSG_HEADER.size:offset + length]
                    offset += (length + 3) & ~3
                    if length < _NLMSG_HEADER.size or got_seq != seq:
                        continue  # not ours (nothing else should arrive: the socket joined no group)
                    if got == _NLMSG_ERROR:
                        error = -struct.unpack_from("=i", payload)[0]
                        if error:
                            raise OSError(error, os.strerror(error))
                        return answers
                    if got == _NLMSG_DONE:
                        return answers
                    header_size = _HEADER_SIZES.get(got)
                    if header_size is not None:
                        answers.append(Message(got, payload[:header_size], _parse_attributes(payload[header_size:])))
        except OSError as exc:
            raise NetlinkError(f"netns {self.namespace}: {what}: {exc.strerror or exc}", exc.errno or 0) from None

    def _request(self, kind: int, body: bytes, what: str, flags: int = 0) -> list[Message]:
        return self._exchange(kind, _NLM_F_REQUEST | _NLM_F_ACK | flags, body, what)

    def _dump(self, kind: int, header: bytes, what: str) -> list[Message]:
        return self._exchange(kind, _NLM_F_REQUEST | _NLM_F_DUMP, header, what)

    # ---- links ----------------------------------------------------------------------

    def link(self, name: str) -> Link:
        """The interface called `name` (raises NetlinkError ENODEV if there is none)."""
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attribute(_IFLA_IFNAME, name.encode() + b"\0")
        return self._link(body, f"looking up link {name}")

    def link_at(self, index: int) -> Link:
        return self._link(_IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0), f"looking up link #{index}")

    def find_link(self, name: str) -> Link | None:
        try:
            return self.link(name)
        except NetlinkError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise

    def _link(self, body: bytes, what: str) -> Link:
        answer = next((m for m in self._request(_RTM_GETLINK, body, what) if m.kind == _RTM_NEWLINK), None)
        if answer is None:
            raise LabError(f"netns {self.namespace}: {what}: no answer")
        _, _, index, flags, _ = _IFINFO.unpack(answer.header)
        name, mac, mtu = (answer.attribute(k) for k in (_IFLA_IFNAME, _IFLA_ADDRESS, _IFLA_MTU))
        return Link(index=index, name=(name or b"").rstrip(b"\0").decode(), up=bool(flags & _IFF_UP),
                    mac=(mac or b"").hex(":"), mtu=struct.unpack("=I", mtu)[0] if mtu else 0)

    def set_up(self, index: int, up: bool, what: str) -> None:
        self._request(_RTM_NEWLINK, _IFINFO.pack(socket.AF_UNSPEC, 0, index, _IFF_UP if up else 0, _IFF_UP), what)

    def rename(self, index: int, name: str, what: str) -> None:
        """Rename a link; the kernel refuses while it is up."""
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0) + _attribute(_IFLA_IFNAME, name.encode() + b"\0")
        self._request(_RTM_NEWLINK, body, what)

    def set_master(self, index: int, master: int, what: str) -> None:
        """Enslave a link to `master` (0: release it).  A port of a bridge
        that is down swallows every frame it receives and keeps its carrier."""
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0) + _attribute(_IFLA_MASTER, struct.pack("=I", master))
        self._request(_RTM_NEWLINK, body, what)

    def no_link_local(self, index: int, what: str) -> None:
        """Let the kernel make no IPv6 link-local address on this link (and
        so send nothing from it: no duplicate detection, no router
        solicitation) when it comes up."""
        inet6 = _attribute(_IFLA_INET6_ADDR_GEN_MODE, bytes((_IN6_ADDR_GEN_MODE_NONE,)))
        spec = _attribute(socket.AF_INET6 | _NLA_F_NESTED, inet6)
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0) + _attribute(_IFLA_AF_SPEC | _NLA_F_NESTED, spec)
        self._request(_RTM_NEWLINK, body, what)

    def bridge(self, name: str, what: str) -> Link:
        """The bridge called `name`, made (down) if there is none."""
        found = self.find_link(name)
        if found is not None:
            return found
        info = _attribute(_IFLA_INFO_KIND, b"bridge")
        body = (_IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attribute(_IFLA_IFNAME, name.encode() + b"\0")
                + _attribute(_IFLA_LINKINFO | _NLA_F_NESTED, info))
        self._request(_RTM_NEWLINK, body, what, _NLM_F_CREATE | _NLM_F_EXCL)
        return self.link(name)

    def delete_link(self, index: int, what: str) -> None:
        """Delete a link (a veth takes its peer along, wherever that is)."""
        self._request(_RTM_DELLINK, _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0), what)

    # ---- what an interface carries --------------------------------------------------

    def setup_of(self, index: int, link_local: bool = False) -> InterfaceSetup:
        """The addresses, routes and neighbour entries of one interface, as
        requests that re-create them (on any interface: see `apply`).

        Left out, as the kernel makes them again by itself: IPv6 link-local
        addresses (from the MAC; `link_local` keeps them, for an interface
        the kernel makes none on), routes it made for an address (protocol
        kernel) and its local table, incomplete or failed neighbours.  Also
        left out: multipath routes (their next hops name interfaces in
        RTA_MULTIPATH, not RTA_OIF); the lab's hosts have none.
        """
        addresses = []
        for m in self._dump(_RTM_GETADDR, _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0), "listing addresses"):
            family, _, _, scope, where = _IFADDR.unpack(m.header)
            if m.kind != _RTM_NEWADDR or where != index or (
                    family == socket.AF_INET6 and scope == _RT_SCOPE_LINK and not link_local):
                continue
            addresses.append(replace(m, attributes=tuple(a for a in m.attributes if a[0] in _ADDRESS_ATTRIBUTES)))
        routes = []
        for m in self._dump(_RTM_GETROUTE, _RTMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0, 0), "listing routes"):
            family, dst_len, src_len, tos, table, protocol, scope, kind, flags = _RTMSG.unpack(m.header)
            oif = m.attribute(_RTA_OIF)
            if (m.kind != _RTM_NEWROUTE or oif is None or struct.unpack("=i", oif)[0] != index
                    or protocol == _RTPROT_KERNEL or table == _RT_TABLE_LOCAL):
                continue
            # Flags the kernel sets (dead, link down...) are refused in a request.
            header = _RTMSG.pack(family, dst_len, src_len, tos, table, protocol, scope, kind, flags & _RTNH_F_ONLINK)
            routes.append(Message(m.kind, header, tuple(a for a in m.attributes if a[0] in _ROUTE_ATTRIBUTES)))
        neighbours = []
        for m in self._dump(_RTM_GETNEIGH, _NDMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), "listing neighbours"):
            family, where, state, flags, kind = _NDMSG.unpack(m.header)
            if m.kind != _RTM_NEWNEIGH or where != index:
                continue
            if state & (_NUD_DELAY | _NUD_PROBE):
                state = _NUD_STALE  # being re-confirmed: the kernel confirms it again from stale
            if not state & (_NUD_REACHABLE | _NUD_STALE | _NUD_PERMANENT):
                continue
            header = _NDMSG.pack(family, where, state, flags & _NTF_ROUTER, kind)
            neighbours.append(Message(m.kind, header, tuple(a for a in m.attributes if a[0] in _NEIGHBOUR_ATTRIBUTES)))
        return InterfaceSetup(tuple(addresses), tuple(routes), tuple(neighbours))

    def remove(self, index: int, setup: InterfaceSetup, device: str) -> None:
        """Take `setup`'s routes, then its addresses, off interface `index`
        (what `apply` gave it), leaving the link itself as it is."""
        for m in setup.routes:
            body = _route_through(m, index)
            try:
                self._request(_RTM_DELROUTE, body, f"removing route {describe(m)} from {device}")
            except NetlinkError as exc:
                if exc.errno != errno.ESRCH:  # gone already
                    raise
        for m in setup.addresses:
            family, prefixlen, flags, scope, _ = _IFADDR.unpack(m.header)
            body = Message(m.kind, _IFADDR.pack(family, prefixlen, flags, scope, index), m.attributes).encode()
            try:
                self._request(_RTM_DELADDR, body, f"removing address {describe(m)} from {device}")
            except NetlinkError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:  # gone already
                    raise

    def apply(self, index: int, setup: InterfaceSetup, device: str) -> None:
        """Give interface `index` (called `device` in messages) what `setup`
        holds: `apply_addresses`, then `apply_routes` once the addresses are
        usable."""
        self.apply_addresses(index, setup, device)
        self.wait_usable(index)
        self.apply_routes(index, setup, device)

    def apply_addresses(self, index: int, setup: InterfaceSetup, device: str) -> None:
        """The addresses, then the neighbour entries of `setup` (their routes'
        gateways are known by then: what the host sends the moment a route is
        there waits for no resolution).  What exists already is replaced; an
        address another interface holds stays there as well."""
        write = _NLM_F_CREATE | _NLM_F_REPLACE
        for m in setup.addresses:
            family, prefixlen, flags, scope, _ = _IFADDR.unpack(m.header)
            attributes = m.attributes
            if family == socket.AF_INET6:  # the address was in use already: no duplicate detection
                extended = struct.unpack("=I", m.attribute(_IFA_FLAGS) or struct.pack("=I", flags))[0]
                attributes = (*(a for a in attributes if a[0] != _IFA_FLAGS),
                              (_IFA_FLAGS, struct.pack("=I", extended | _IFA_F_NODAD)))
                flags |= _IFA_F_NODAD
            body = Message(m.kind, _IFADDR.pack(family, prefixlen, flags, scope, index), attributes).encode()
            self._request(_RTM_NEWADDR, body, f"adding address {describe(m)} to {device}", write)
        for m in setup.neighbours:
            family, _, state, flags, kind = _NDMSG.unpack(m.header)
            body = Message(m.kind, _NDMSG.pack(family, index, state, flags, kind), m.attributes).encode()
            self._request(_RTM_NEWNEIGH, body, f"adding neighbour {describe(m)} on {device}", write)

    def wait_usable(self, index: int, timeout: float = 1.0) -> bool:
        """Until every IPv6 address of interface `index` has its local route
        (False: not all after `timeout`).  The kernel files an address at once
        but its local route only when its address work runs, even without
        duplicate detection: 0-7 ms later on a loaded machine (measured), and
        until then the host takes no packet for it there.  So eth0's addresses,
        removed before, left a switchover's host deaf (ping6 at 1 ms: 1-7 lost
        in 3 of 5 first moves)."""
        deadline = time.monotonic() + timeout
        while self._without_local_route(index):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.0002)
        return True

    def _without_local_route(self, index: int) -> set[bytes]:
        """The IPv6 addresses of interface `index` the local table has no route for through it yet."""
        addresses = set()
        for m in self._dump(_RTM_GETADDR, _IFADDR.pack(socket.AF_INET6, 0, 0, 0, 0), "listing addresses"):
            where = _IFADDR.unpack(m.header)[4]
            if m.kind == _RTM_NEWADDR and where == index and m.attribute(_IFA_ADDRESS):
                addresses.add(m.attribute(_IFA_ADDRESS))
        if not addresses:
            return addresses
        for m in self._dump(_RTM_GETROUTE, _RTMSG.pack(socket.AF_INET6, 0, 0, 0, 0, 0, 0, 0, 0), "listing routes"):
            kind = _RTMSG.unpack(m.header)[7]
            oif = m.attribute(_RTA_OIF)
            if m.kind == _RTM_NEWROUTE and kind == _RTN_LOCAL and oif and struct.unpack("=i", oif)[0] == index:
                addresses.discard(m.attribute(_RTA_DST))
        return addresses

    def apply_routes(self, index: int, setup: InterfaceSetup, device: str) -> None:
        """The routes of `setup` through interface `index` (their gateways need
        an address's subnet).  A route through another interface moves to this
        one in one step (replaced: the switchover's routes, `switch_over`)."""
        write = _NLM_F_CREATE | _NLM_F_REPLACE
        for m in setup.routes:
            body = _route_through(m, index)
            self._request(_RTM_NEWROUTE, body, f"adding route {describe(m)} on {device}", write)


def _route_through(m: Message, index: int) -> bytes:
    """A route request (`setup_of`'s) naming interface `index` as the one it goes out of."""
    return Message(m.kind, m.header, (*m.attributes, (_RTA_OIF, struct.pack("=i", index)))).encode()


_HEADER_SIZES = {_RTM_NEWLINK: _IFINFO.size, _RTM_NEWADDR: _IFADDR.size, _RTM_NEWROUTE: _RTMSG.size,
                 _RTM_NEWNEIGH: _NDMSG.size}


def describe(m: Message) -> str:
    """An address, route or neighbour entry in `ip`'s words, for error messages."""

    def address(kind: int) -> str | None:
        value = m.attribute(kind)
        if value is None or len(value) not in (4, 16):
            return None
        return socket.inet_ntop(socket.AF_INET if len(value) == 4 else socket.AF_INET6, value)

    if m.kind == _RTM_NEWADDR:
        return f"{address(2) or address(1)}/{m.header[1]}"
    if m.kind == _RTM_NEWROUTE:
        destination = f"{address(1)}/{m.header[1]}" if m.header[1] else "default"
        gateway = address(5)
        return destination + (f" via {gateway}" if gateway else "")
    lladdr = m.attribute(2)
    return f"{address(1)}" + (f" lladdr {lladdr.hex(':')}" if lladdr else "")
