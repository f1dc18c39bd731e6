"""Stale flows after moves: every flow that still sends a host's traffic
where the host no longer is, found from the switches' own tables.

For each host (its address, instance-ID, MAC, and where it is now: a site
and a br-int port), on every site:
  * a flow matching the host as destination (nw_dst / ipv6_dst, or its MAC)
    that delivers to a local port must be at the host's site and output to
    its port there: anything else is old-site local delivery;
  * a flow (or the group it uses) that tunnels the host's traffic must send
    it to an RLOC of the host's site: anything else is a map-cache entry or
    redirect pointing at an old RLOC;
  * a flow classifying the host as a known source on a host port must be at
    its site, on its port;
  * no flow with a planned-move cookie and no group of type all may be
    left once the moves are over (their window ends with the move).
And each host's site must deliver it: a flow for its address outputs to its port.
`find` is pure (dump texts in, problems out); `check` dumps a running lab.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from lisp_ryu.flows.pipeline import Owner, cookie_owner
from lisp_ryu.lab.state import LabState

_COOKIE = re.compile(r"cookie=(0x[0-9a-fA-F]+|\d+)")
_GROUP_ID = re.compile(r"group_id=(\d+)")
_TUN_DST = re.compile(r"set_field:([0-9a-fA-F.:]+)->tun_(?:ipv6_)?dst")
_OUTPUT = re.compile(r"(?:^|,)output:(\d+)")
_GROUP_REF = re.compile(r"(?:^|,)group:(\d+)")
_WRITE_METADATA = re.compile(r"(?:^|,)write_metadata:(0x[0-9a-fA-F]+|\d+)")


@dataclass(frozen=True)
class Placement:
    """Where a host is now."""

    name: str
    iid: int
    addresses: tuple[str, ...]  # its IPv4 address, and IPv6 if dual-stack
    mac: str
    site: str
    port: int


@dataclass(frozen=True)
class SiteTables:
    name: str
    rlocs: frozenset[str]
    tunnel_ports: frozenset[int]  # the flow-based tunnel port and any per-peer (BFD) ports
    flows: str  # ovs-ofctl dump-flows
    groups: str  # ovs-ofctl dump-groups


def _split(line: str) -> tuple[dict[str, str], str, int | None]:
    """A dump-flows line -> (match fields, actions text, cookie)."""
    line = line.strip()
    head, _, actions = line.partition(" actions=")
    fields: dict[str, str] = {}
    for token in head.replace(", ", ",").replace(" ", ",").split(","):
        key, eq, value = token.partition("=")
        if eq:
            fields[key] = value
    m = _COOKIE.search(line)
    return fields, actions, int(m.group(1), 0) if m else None


def _iid_of(fields: dict[str, str], actions: str = "") -> int | None:
    """The instance-ID a flow is about: its metadata (host side) or tunnel_id (decapsulation) or,
    for a classification flow, the metadata it writes (tenants may share an address: another
    tenant's host at that address is not this flow's)."""
    for key in ("metadata", "tun_id"):
        if key in fields:
            return int(fields[key].split("/")[0], 0) & 0xFFFFFF
    written = _WRITE_METADATA.search(actions)
    return int(written.group(1), 0) & 0xFFFFFF if written else None


def _is_host_address(value: str | None, address: str) -> bool:
    if value is None:
        return False
    addr, _, mask = value.partition("/")
    try:
        if ipaddress.ip_address(addr) != ipaddress.ip_address(address):
            return False
        return not mask or ipaddress.ip_address(mask).packed == b"\xff" * len(ipaddress.ip_address(mask).packed)
    except ValueError:
        return False


def find(tables: list[SiteTables], hosts: list[Placement]) -> list[str]:
    """Every stale or missing flow, one line each; empty when clean."""
    problems = []
    rlocs_of = {t.name: t.rlocs for t in tables}
    for t in tables:
        groups = {}
        for line in t.groups.splitlines():
            m = _GROUP_ID.search(line)
            if m:
                groups[int(m.group(1))] = line
                if "type=all" in line:
                    problems.append(f"{t.name}: a replicating group outlived its planned move: {line.strip()}")
        delivered: set[str] = set()
        for line in t.flows.splitlines():
            if " actions=" not in line:
                continue
            fields, actions, value = _split(line)
            if value is not None and cookie_owner(value) == Owner.PLANNED_MOVE:
                problems.append(f"{t.name}: a planned-move flow outlived its move: {line.strip()}")
            iid = _iid_of(fields, actions)
            for h in hosts:
                if iid is not None and iid != h.iid:
                    continue
                as_dest = any(_is_host_address(fields.get(k), a) for a in h.addresses
                              for k in ("nw_dst", "ipv6_dst", "ip_dst"))
                as_dest = as_dest or (fields.get("dl_dst", "").lower() == h.mac.lower()
                                      and not any(k in fields for k in ("nw_dst", "ipv6_dst", "arp_tpa")))
                if as_dest:
                    text = actions
                    for gid in map(int, _GROUP_REF.findall(actions)):
                        text += "," + groups.get(gid, "").split(",", 2)[-1]
                    ports = {int(p) for p in _OUTPUT.findall(text)} - t.tunnel_ports
                    for port in sorted(ports):
                        if t.name != h.site or port != h.port:
                            problems.append(f"{t.name}: delivers {h.name} to local port {port}, but {h.name} is "
                                            f"at {h.site} port {h.port}: {line.strip()}")
                        else:
                            delivered.add(h.name)
                    for rloc in sorted(set(_TUN_DST.findall(text)) - rlocs_of.get(h.site, frozenset())):
                        problems.append(f"{t.name}: tunnels {h.name} to {rloc}, not an RLOC of its site {h.site} "
                                        f"({', '.join(sorted(rlocs_of.get(h.site, ())))}): {line.strip()}")
                in_port = fields.get("in_port")
                if (in_port and in_port.isdigit() and int(in_port) not in t.tunnel_ports
                        and any(_is_host_address(fields.get(k), a) for a in h.addresses
                                for k in ("nw_src", "ipv6_src", "arp_spa"))
                        and (t.name != h.site or int(in_port) != h.port)):
                    problems.append(f"{t.name}: takes {h.name} for a local host on port {in_port}, but it is "
                                    f"at {h.site} port {h.port}: {line.strip()}")
        for h in hosts:
            if h.site == t.name and h.name not in delivered:
                problems.append(f"{t.name}: no flow delivers {h.name} ({', '.join(h.addresses)}) to its port {h.port}")
    return problems


def placements(state: LabState, hosts: list[str] | None = None) -> list[Placement]:
    """Where the lab state says each host (default: every host) is."""
    chosen = state.hosts if hosts is None else [state.host(n) for n in hosts]
    return [Placement(name=h.name, iid=h.iid, addresses=(h.ip,) + ((h.ip6,) if h.ip6 else ()), mac=h.mac,
                      site=h.site, port=h.ofport) for h in chosen]


def tables(state: LabState) -> list[SiteTables]:
    """Each site's flows and groups as its switch reports them now."""
    from lisp_ryu.lab.running import ofctl, vsctl

    out = []
    for s in state.sites:
        # Every GPE port (the flow-based one, failover's per-peer BFD ports): traffic out of them is tunnelled.
        found = vsctl(s.name, "--bare", "--format=csv", "--no-headings", "--columns=ofport", "find", "interface",
                      "type=vxlan", state=state)
        tunnels = {s.tunnel_ofport} | {int(x) for x in found.split() if x.strip().lstrip("-").isdigit()}
        out.append(SiteTables(name=s.name, rlocs=frozenset(r.address for r in s.rlocs), tunnel_ports=frozenset(tunnels),
                              flows=ofctl(s.name, "dump-flows", state=state),
                              groups=ofctl(s.name, "dump-groups", state=state)))
    return out


def check(state: LabState, hosts: list[str] | None = None) -> list[str]:
    """Stale or missing flows for `hosts` (default: all) on every site of the running lab."""
    return find(tables(state), placements(state, hosts))
