"""The plan: what the xTR core wants the data plane to be, as the flow compiler reads it.

The contract between `lisp_ryu.xtr` (which builds an `XtrPlan` from its state)
and `lisp_ryu.flows.compiler` (which turns it into flows): a module below both,
so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from lisp_ryu.mapping.eid import IPAddress, IPNetwork

__all__ = [
    "DynamicPrefix",
    "FailoverPort",
    "Gateway",
    "HostPort",
    "LocalHost",
    "Proxy",
    "Redirect",
    "Expected",
    "Replicate",
    "RemoteAction",
    "RemoteEntry",
    "Rloc",
    "XtrPlan",
    "cached_hash",
]


def cached_hash(cls):
    """A frozen dataclass whose hash is computed once per object, not at every set or dict lookup.

    A push hashes every flow and map-cache entry of a switch several times (the
    memoised compiler's keys, the desired state's sets, the diff), and the
    fields' hashes are deep: tuples of matches, addresses whose own hash is
    Python code.  Equality stays the dataclass's; the cache is kept out of
    pickles, where string hashes (randomised per process) would be stale."""
    compute = cls.__hash__

    def __hash__(self):
        found = self.__dict__.get("_hash")
        if found is None:
            found = self.__dict__["_hash"] = compute(self)
        return found

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_hash", "_key_hash")}

    cls.__hash__ = __hash__
    cls.__getstate__ = __getstate__
    return cls


class RemoteAction(Enum):
    """What the ITR does with packets to a map-cache entry."""

    ENCAP = "encap"  # positive mapping: tunnel to the RLOCs
    DROP = "drop"  # negative, Drop/* actions
    NATIVE_FORWARD = "native-forward"  # negative: to the PETR, else native port, else drop
    SEND_MAP_REQUEST = "send-map-request"  # negative: keep missing to the controller


@dataclass(frozen=True)
class HostPort:
    port: int
    iid: int


@dataclass(frozen=True)
class LocalHost:
    iid: int
    ip: IPAddress
    mac: str
    port: int


@dataclass(frozen=True)
class Gateway:
    iid: int
    subnet: IPNetwork
    ip: IPAddress
    mac: str


@dataclass(frozen=True)
class Rloc:
    address: IPAddress
    priority: int = 1
    weight: int = 100


@cached_hash
@dataclass(frozen=True)
class RemoteEntry:
    """A map-cache entry as the data plane needs it (RLOCs already filtered to reachable).

    `source` is set for a source-specific entry (a Source/Dest-key mapping):
    its flow also matches the packet's source, and applies only to hosts in it.
    `replicate` is set when the mapping's best locator is a Replication List Entry
    (RFC 8060 LCAF 13; the predictive RLOCs of a roaming EID,
    draft-ietf-lisp-predictive-rlocs): every packet goes to each of these RLOCs,
    an OpenFlow group of type ALL, and `rlocs` is empty.
    """

    iid: int
    prefix: IPNetwork
    action: RemoteAction
    rlocs: tuple[Rloc, ...] = ()
    source: IPNetwork | None = None
    replicate: tuple[IPAddress, ...] = ()

    @property
    def name(self) -> str:
        """What the entry's cookie hashes: the prefix, or "source->prefix"."""
        return str(self.prefix) if self.source is None else f"{self.source}->{self.prefix}"


@dataclass(frozen=True)
class DynamicPrefix:
    """Hosts with a source address in here may appear on any host port and are learned."""

    iid: int
    prefix: IPNetwork


@cached_hash
@dataclass(frozen=True)
class Redirect:
    """A local EID that moved to `rloc`: tunnel traffic still arriving for it onwards.  `site`:
    the RLOCs of the site it moved to, best first; where BFD ports watch them, the switch sends
    to the first one alive (flows/failover.py `to_site`), so does every onward copy below."""

    iid: int
    ip: IPAddress
    rloc: IPAddress
    site: tuple[IPAddress, ...] = ()


@dataclass(frozen=True)
class Replicate:
    """A planned move in progress (draft-ietf-lisp-predictive-rlocs): traffic to this EID goes to
    every RLOC in `rlocs` (the old site's and the new one's) until the workload is seen at the new
    site; an OpenFlow group of type ALL (lisp_ryu/flows/replicate.py).  `sites`: per RLOC of
    `rlocs`, its site's RLOCs best first; where BFD ports watch them, the switch sends that copy
    to the first one alive, as it does for a map-cache entry (flows/failover.py)."""

    iid: int
    ip: IPAddress
    rlocs: tuple[IPAddress, ...]
    sites: tuple[tuple[IPAddress, ...], ...] = ()


@dataclass(frozen=True)
class Expected:
    """A workload announced to arrive here (a planned move).  When the orchestrator named its port
    here (`at`: the workload as it will be here, its new vif plugged already), the switch delivers
    its traffic there from the announcement on; else the traffic goes to the controller, which
    holds it until the host is learned and then delivers it.  What our own hosts send it goes to
    its old site (`old_rloc`, where it still is) as well, and so does what ITRs tunnel to it here,
    except from `replicated_by` (this controller's xTRs: they send the old site a copy themselves)."""

    iid: int
    ip: IPAddress
    old_rloc: IPAddress | None = None
    at: LocalHost | None = None
    replicated_by: tuple[IPAddress, ...] = ()
    old_site: tuple[IPAddress, ...] = ()  # the old site's RLOCs, best first (as `Redirect.site`)


def served_before_learning(ip: IPAddress) -> bool:
    """Whether the destination's switch forwards a workload's own packets from the port announced
    for it before it learns the workload (flows/replicate.py): IPv4 only, its ARP (or its
    hypervisor's RARP) being left to tell the arrival.  An IPv6 workload sends nothing sure on
    arrival (a Linux guest no unsolicited neighbour advertisement by default), so its first
    packet teaches the controller, and its arrival must be pushed at once (xtr/mobility.py)."""
    return ip.version == 4


@dataclass(frozen=True)
class Leaving:
    """A local workload announced to move to `rloc` (a planned move): what our own hosts send it
    is delivered here and also tunnelled to `rloc`, whichever holds it when the packet comes.
    So is what ITRs tunnel to it here, except from `replicated_by`: the RLOCs of the xTRs that
    send their own copy to `rloc` (this controller's, which replicate), whose copies stay here."""

    iid: int
    ip: IPAddress
    rloc: IPAddress
    replicated_by: tuple[IPAddress, ...] = ()
    site: tuple[IPAddress, ...] = ()  # the new site's RLOCs, best first (as `Redirect.site`)


@dataclass(frozen=True)
class Proxy:
    """The PxTR role (RFC 6832): this switch joins LISP sites to a non-LISP network on `native_port`.

    Proxy-ITR: packets from the native port for an EID in `prefixes` enter
    instance `iid` and are encapsulated like a host's (a miss resolves them).
    Proxy-ETR: decapsulated packets for no local EID leave by the native port
    to `next_hop_mac`.  `address` is our address on the native link, answered
    for in ARP so the non-LISP router can route the EID space to us.
    """

    iid: int
    prefixes: tuple[IPNetwork, ...]
    next_hop_mac: str
    address: IPAddress | None = None


@dataclass(frozen=True)
class FailoverPort:
    """A fixed-remote GPE port from our RLOC `local` to the peer RLOC `remote`, running BFD.

    The switch itself knows whether the peer answers (BFD): fast-failover
    groups watch the port (lisp_ryu/flows/failover.py).  The glue creates the
    port over OVSDB (lisp_ryu/glue/failover_ports.py) with `ofport` requested.
    """

    local: IPAddress
    remote: IPAddress
    ofport: int


@dataclass(frozen=True)
class XtrPlan:
    tunnel_port: int
    host_ports: tuple[HostPort, ...] = ()
    hosts: tuple[LocalHost, ...] = ()
    gateways: tuple[Gateway, ...] = ()
    remotes: tuple[RemoteEntry, ...] = ()
    dynamic_prefixes: tuple[DynamicPrefix, ...] = ()
    redirects: tuple[Redirect, ...] = ()
    leaving: tuple[Leaving, ...] = ()  # planned moves away from here (flows/replicate.py)
    miss_rate_pps: int = 100
    learn_rate_pps: int = 100
    petr: IPAddress | None = None
    native_port: int | None = None
    router_mac: str = "02:00:00:00:00:fe"  # eth_src for hosts outside any gateway's subnet
    tunnel_source: IPAddress | None = None  # set tun_src: needed when the tunnel port's local_ip=flow
    proxy: Proxy | None = None  # PxTR role; needs native_port
    # Every RLOC of the positive map-cache, probed down or not, and the ITRs that probe us:
    # the peers a BFD port is kept towards; `probers`: those among them only because they probe us.
    peers: tuple[IPAddress, ...] = ()
    probers: tuple[IPAddress, ...] = ()
    failover_ports: tuple[FailoverPort, ...] = ()  # the BFD ports the glue keeps (empty: no failover)
    replicates: tuple[Replicate, ...] = ()  # planned moves seen from an ITR: send to both RLOCs
    expected: tuple[Expected, ...] = ()  # planned moves towards this site: deliver or hold their traffic
