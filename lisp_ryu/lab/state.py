"""The lab state file: everything a running lab created, as JSON.

`lisp-ryu lab up` writes it before it creates anything (status "starting")
and again when the lab is complete ("up"); `down` removes what it lists.
Tests and the controller-config generator read it to learn namespaces,
run directories, datapath-ids, port numbers, MACs and RLOCs without
re-deriving them.  Addresses are kept as strings so the file stays plain JSON.

Where it lives: `$LISP_RYU_LAB_DIR/state.json` (default `/run/lisp-ryu-lab`).
Every name the lab creates starts with `$LISP_RYU_LAB_PREFIX` (default
`lr-`), so teardown can find its objects even without the state file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

LAB_DIR_ENV = "LISP_RYU_LAB_DIR"
LAB_PREFIX_ENV = "LISP_RYU_LAB_PREFIX"
DEFAULT_LAB_DIR = "/run/lisp-ryu-lab"
DEFAULT_PREFIX = "lr-"
STATE_FILE = "state.json"
# A unix socket path holds at most 107 bytes; the longest the lab creates is
# <site run dir>/br-phyN.snoop (ovs-vswitchd), so keep well under it.
_MAX_RUN_DIR = 80
_PREFIX_RE = re.compile(r"^[a-z]{1,2}-$")


class LabError(RuntimeError):
    """A lab operation failed; the message says what and how to recover."""


def lab_dir() -> Path:
    path = Path(os.environ.get(LAB_DIR_ENV) or DEFAULT_LAB_DIR).absolute()
    if len(str(path)) > _MAX_RUN_DIR - 12:
        raise LabError(f"{LAB_DIR_ENV}={path} is too long for OVS's unix sockets (max {_MAX_RUN_DIR - 12} chars)")
    return path


def prefix() -> str:
    value = os.environ.get(LAB_PREFIX_ENV) or DEFAULT_PREFIX
    if not _PREFIX_RE.match(value):
        raise LabError(f"{LAB_PREFIX_ENV}={value!r}: use 1-2 lower-case letters and a dash, like 'lr-'")
    return value


def state_path() -> Path:
    return lab_dir() / STATE_FILE


@dataclass(frozen=True)
class RlocState:
    address: str
    prefixlen: int
    priority: int
    weight: int
    bridge: str  # br-phy bridge; the RLOC is on its internal (LOCAL) port
    bridge_mac: str
    uplink: str  # OVS-owned underlay veth in the site namespace (br-phy port 1, arp off)
    uplink_mac: str
    next_hop: str  # the node at the other end of the underlay link
    next_hop_mac: str


@dataclass(frozen=True)
class SiteState:
    name: str
    namespace: str
    run_dir: str  # ovsdb-server + ovs-vswitchd of this site: sockets, pids, logs, conf.db
    dpid: int
    management_address: str  # on mgmt0 in the site namespace
    management_veth: str  # its peer in the root namespace, enslaved to the lab bridge
    tunnel_port: str
    tunnel_ofport: int
    tunnel_local_ip: str  # the RLOC, or "flow" for a multihomed site (flows set tun_src)
    rlocs: tuple[RlocState, ...]
    host_ports: dict[str, int]  # host name -> br-int OpenFlow port
    eid_prefixes: tuple[dict, ...]  # {prefix, iid, gateway, gateway_mac}
    key: str | None
    pids: dict[str, int] = field(default_factory=dict)  # daemon -> pid
    role: str = "xtr"  # "pxtr": a proxy xTR (no EIDs, no hosts, a native port)
    # A PxTR's native link: {router, address (ADDR/LEN, in its flows only), next_hop,
    # next_hop_mac, mac, ifname, router_ifname, ofport, iid, prefixes (the EID space it attracts)}
    native: dict | None = None
    # Every lab host's port at this site (its own, or the one it gets when it moves in):
    # Topology.reserved_ports; the controller configuration gives each its host's iid.
    reserved_ports: dict[str, int] = field(default_factory=dict)

    @property
    def is_pxtr(self) -> bool:
        return self.role == "pxtr"

    @property
    def dpid_hex(self) -> str:
        return f"{self.dpid:016x}"

    @property
    def db(self) -> str:
        return f"unix:{self.run_dir}/db.sock"

    @property
    def vswitchd_ctl(self) -> str:
        return f"{self.run_dir}/ovs-vswitchd.ctl"

    def mgmt_socket(self, bridge: str = "br-int") -> str:
        return f"unix:{self.run_dir}/{bridge}.mgmt"


@dataclass(frozen=True)
class HostState:
    name: str
    site: str
    namespace: str
    address: str  # ADDRESS/LEN on eth0
    mac: str
    gateway: str
    gateway_mac: str
    iid: int
    ofport: int
    address6: str | None = None  # dual-stack: ADDRESS/LEN (IPv6) on eth0
    gateway6: str | None = None
    gateway6_mac: str | None = None

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]

    @property
    def ip6(self) -> str | None:
        return None if self.address6 is None else self.address6.split("/")[0]

    @property
    def eids(self) -> tuple[str, ...]:
        """Every address the workload carries when it moves: its IPv4 one, and its IPv6 one if any."""
        return (self.ip,) if self.ip6 is None else (self.ip, self.ip6)


@dataclass(frozen=True)
class NodeState:
    """A core router, the Map-Server or an internet (non-LISP) host: a namespace with addresses."""

    name: str
    kind: str  # "router" | "map-server" | "internet-host"
    namespace: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class LabState:
    name: str
    topology: str  # absolute path of the topology file
    prefix: str
    lab_dir: str
    status: str  # "starting" while `up` runs, "up" when complete
    controller: str  # address of the management bridge in the root namespace
    controller_port: int
    management_bridge: str
    namespaces: tuple[str, ...]
    root_interfaces: tuple[str, ...]  # created in the root namespace (the bridge and veth peers)
    sites: tuple[SiteState, ...]
    hosts: tuple[HostState, ...]
    nodes: tuple[NodeState, ...]
    map_server: str | None  # the Map-Server's node name, if any
    map_server_address: str | None
    controller_rest: str | None = None  # the running controller's REST API base URL (`lisp-ryu show` reads it)
    # A clustered mapping system (topology map_server.nodes): [{name, address}], each a standalone
    # `lisp-ryu mapserver` in its node's namespace (lisp_ryu/lab/cluster.py); () = the embedded one.
    map_server_nodes: tuple[dict, ...] = ()

    def site(self, name: str) -> SiteState:
        for s in self.sites:
            if s.name == name:
                return s
        raise LabError(f"no site {name!r} in the lab (sites: {', '.join(s.name for s in self.sites)})")

    def host(self, name: str) -> HostState:
        for h in self.hosts:
            if h.name == name:
                return h
        raise LabError(f"no host {name!r} in the lab (hosts: {', '.join(h.name for h in self.hosts)})")

    @property
    def lisp_sites(self) -> tuple[SiteState, ...]:
        """Every site but the PxTR: the ones with EIDs, hosts and registrations."""
        return tuple(s for s in self.sites if not s.is_pxtr)

    @property
    def pxtr(self) -> SiteState | None:
        return next((s for s in self.sites if s.is_pxtr), None)

    @property
    def internet_hosts(self) -> tuple[NodeState, ...]:
        return tuple(n for n in self.nodes if n.kind == "internet-host")

    def namespace_of(self, node: str) -> str:
        """The namespace of any lab node: host, site, router or Map-Server."""
        for group in (self.hosts, self.sites, self.nodes):
            for item in group:
                if item.name == node:
                    return item.namespace
        names = [x.name for g in (self.hosts, self.sites, self.nodes) for x in g]
        raise LabError(f"no node {node!r} in the lab (nodes: {', '.join(names)})")

    @property
    def map_server_namespace(self) -> str | None:
        return self.namespace_of(self.map_server) if self.map_server else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LabState":
        d = json.loads(text)
        d["sites"] = tuple(
            SiteState(**{**s, "rlocs": tuple(RlocState(**r) for r in s["rlocs"]), "eid_prefixes": tuple(s["eid_prefixes"])})
            for s in d["sites"]
        )
        d["hosts"] = tuple(HostState(**h) for h in d["hosts"])
        d["nodes"] = tuple(NodeState(**{**n, "addresses": tuple(n["addresses"])}) for n in d["nodes"])
        d["namespaces"] = tuple(d["namespaces"])
        d["root_interfaces"] = tuple(d["root_interfaces"])
        d["map_server_nodes"] = tuple(d.get("map_server_nodes", ()))
        return cls(**d)


def read_state(path: Path | None = None) -> LabState | None:
    """The lab's state, or None if no lab is up; a corrupt file is an error."""
    path = path or state_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return LabState.from_json(text)
    except (ValueError, TypeError, KeyError) as exc:
        raise LabError(f"{path}: unreadable lab state ({exc}); `lisp-ryu lab down` cleans up by name prefix") from None


def write_state(state: LabState, path: Path | None = None) -> None:
    """Write atomically so a reader never sees half a file."""
    path = path or state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.to_json())
    os.replace(tmp, path)
