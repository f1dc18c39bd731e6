"""The lisp-ryu YAML configuration, validated into frozen dataclasses.

One file describes the embedded Map-Server (`map_server:`), the xTRs the
controller drives (`xtrs:`) and the REST API (`rest:`).  Unknown keys are
errors; every error names the file, the path of the bad field
(`map_server.sites[0].eid_prefixes[1].prefix`) and what is wrong, so an
operator can fix it without reading code.  The field readers are the shared
ones of `lisp_ryu.schema`; a null value counts as not given.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from lisp_ryu import schema
from lisp_ryu.schema import InputError, Node
from lisp_ryu.wire import LISP_CONTROL_PORT, TTL_ONE_DAY, AuthAlgorithm

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NEGATIVE_ACTIONS = ("no-action", "native-forward", "send-map-request", "drop")
AUTH_ALGORITHMS = {"sha1": AuthAlgorithm.HMAC_SHA_1_96.value, "sha256": AuthAlgorithm.HMAC_SHA_256_128.value}


class ConfigError(InputError):
    """A configuration value is missing or wrong; names file and field path.

    The configuration's kind of `InputError`, built as (source, path, problem)."""

    def __init__(self, source: str, path: str, problem: str):
        super().__init__(path, problem, source)


# --------------------------------------------------------------------------
# Parsed values


@dataclass(frozen=True)
class EidPrefixConfig:
    prefix: IPNetwork
    iid: int = 0
    accept_more_specifics: bool = False


@dataclass(frozen=True)
class SiteConfig:
    """A site the Map-Server accepts registrations from.

    `xtr_ids` binds xTRs to the site's key before (or without) any
    Map-Register: the Map-Server signs the Map-Notifies it publishes to a
    subscriber with the key of the subscriber's site, which it otherwise
    learns only from the xTR-ID in that xTR's Map-Registers.  A proxy-ITR
    registers nothing, so it is a site with `xtr_ids` and no EID prefixes.
    """

    name: str
    key: str
    eid_prefixes: tuple[EidPrefixConfig, ...]
    xtr_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class MapServerConfig:
    sites: tuple[SiteConfig, ...]
    listen: tuple[IPAddress, int] | None = None
    netns: str | None = None
    data_dir: str | None = None
    #: "etcd://HOST:PORT[,HOST:PORT...]": registrations replicated in etcd (issue 17); exclusive with data_dir.
    store: str | None = None
    negative_ttl_minutes: int = 15
    negative_action: str = "native-forward"
    rate_limit_per_source: float = 1000.0  # messages per second, token bucket
    notify_retries: int = 3
    notify_retry_interval: float = 1.0
    registration_ttl: float = 180.0  # seconds without a Map-Register before expiry


@dataclass(frozen=True)
class RlocConfig:
    address: IPAddress
    priority: int = 1
    weight: int = 100


@dataclass(frozen=True)
class GatewayConfig:
    """The site's default gateway for a host subnet; answered by ARP flows."""

    subnet: IPNetwork
    ip: IPAddress
    mac: str
    iid: int = 0


@dataclass(frozen=True)
class HostConfig:
    """A local EID attached to a host port of the xTR."""

    ip: IPAddress
    mac: str
    port: int
    iid: int = 0


@dataclass(frozen=True)
class HostPortConfig:
    """A switch port facing workloads, and the instance-ID (tenant) it belongs to."""

    port: int
    iid: int = 0


@dataclass(frozen=True)
class MapServerRef:
    address: IPAddress
    key: str
    port: int = LISP_CONTROL_PORT
    algorithm: str = "sha1"  # HMAC-SHA-1-96 (what OOR speaks) or "sha256" for HMAC-SHA-256-128

    @property
    def algorithm_id(self) -> int:
        """The RFC 9301 Algorithm ID on the wire."""
        return AUTH_ALGORITHMS[self.algorithm]


@dataclass(frozen=True)
class RlocProbingConfig:
    """RLOC probing (RFC 9301 §7.1): how we watch remote RLOCs and answer probes of ours.

    A remote RLOC is down after `misses` probes, sent every `interval` s
    (+/- `jitter` x interval), went unanswered for `timeout` s each.  We answer
    at most `answer_rate` probes per second per requester (burst
    `answer_burst`) and `answer_rate_total` in all.
    """

    enabled: bool = True
    interval: float = 30.0
    jitter: float = 0.1
    misses: int = 3
    timeout: float = 2.0
    answer_rate: float = 10.0
    answer_burst: float = 20.0
    answer_rate_total: float = 200.0


@dataclass(frozen=True)
class BfdConfig:
    """BFD on the per-peer GPE ports: OVS's `bfd:min_tx`, `bfd:min_rx` (ms) and `bfd:mult`.

    A peer is declared down after `mult` x the agreed interval without a BFD
    packet: 3 x 75 ms by default.  A cut lands between two BFD packets (OVS
    sends them every 75-100 % of min_tx), so a dead locator costs 0.15-0.25 s
    of detection plus the switch's revalidation (bench/bench_failover.py).
    """

    min_tx: int = 75
    min_rx: int = 75
    mult: int = 3


@dataclass(frozen=True)
class FailoverConfig:
    """Failover in the switch (lisp_ryu/flows/failover.py): BFD ports towards every peer RLOC.

    Needs the xTR's `ovsdb` (the controller creates the ports there).  The
    ports get OpenFlow numbers from `port_base` up.  A port outlives its last
    use by `grace` seconds, so a mapping that flaps (a move and back) does not
    restart its BFD session, which takes a second or more to come up.
    `mesh`: ports towards every other xTR this controller drives (with
    failover) from the start, not once a map-cache first needs them: adding a
    tunnel port stalls a userspace switch for milliseconds, and a move between
    two sites that never talked paid that in lost packets at both ends.
    """

    enabled: bool = True
    bfd: BfdConfig = BfdConfig()
    port_base: int = 1000
    grace: float = 30.0
    mesh: bool = True


@dataclass(frozen=True)
class ProxyConfig:
    """The PxTR role (RFC 6832) on `native_port`: see lisp_ryu/flows/compiler.py `Proxy`.

    `prefixes` is the EID space this proxy-ITR announces to the non-LISP side
    (whatever routes that space to `address` sends it here); `next_hop_mac`
    is where the proxy-ETR sends decapsulated traffic for non-LISP hosts.
    """

    iid: int
    prefixes: tuple[IPNetwork, ...]
    next_hop_mac: str
    address: IPAddress | None = None


@dataclass(frozen=True)
class XtrConfig:
    """One OVS switch acting as xTR for a site."""

    name: str
    dpid: int
    rlocs: tuple[RlocConfig, ...]
    tunnel_port: int
    eid_prefixes: tuple[EidPrefixConfig, ...]
    map_servers: tuple[MapServerRef, ...]
    map_resolvers: tuple[IPAddress, ...]
    host_ports: tuple[HostPortConfig, ...] = ()
    gateways: tuple[GatewayConfig, ...] = ()
    hosts: tuple[HostConfig, ...] = ()
    dynamic_eid_prefixes: tuple[EidPrefixConfig, ...] = ()
    netns: str | None = None  # namespace holding the RLOC (lab); None = this host
    register_interval: float = 60.0
    record_ttl_minutes: int = TTL_ONE_DAY
    # How long traffic that still arrives for a workload that left is tunnelled on to where it went
    # (seconds): ITRs that were not solicited, or missed the SMR, follow within their map-cache TTL.
    redirect_seconds: float = 60.0
    proxy_reply: bool = False
    rloc_probing: RlocProbingConfig = RlocProbingConfig()
    # Where traffic for non-LISP destinations (negative Map-Replies with action
    # native-forward) goes: tunnelled to a proxy-ETR if `petr` is set (it gets
    # past the uRPF filters an EID source meets on a native path), else out of
    # `native_port` unchanged, else it is dropped.
    petr: IPAddress | None = None
    native_port: int | None = None
    proxy: ProxyConfig | None = None  # PxTR role: needs native_port
    # The switch's OVSDB (what `ovs-vsctl --db=` takes: unix:PATH, tcp:HOST:PORT, ssl:HOST:PORT):
    # where the controller creates the per-peer BFD ports and raises the switch's packet-in queue
    # to 512 (glue/failover_ports.py).  None: no failover in the switch, OVS's queue of 100.
    ovsdb: str | None = None
    failover: FailoverConfig = FailoverConfig()
    tunnel_udp_port: int = 4341  # the flow-based port's dst_port, which the BFD ports share


@dataclass(frozen=True)
class RestConfig:
    token: str | None = None
    protect_reads: bool = False


@dataclass(frozen=True)
class Config:
    source: str
    map_server: MapServerConfig | None = None
    xtrs: tuple[XtrConfig, ...] = ()
    rest: RestConfig = field(default_factory=RestConfig)


# --------------------------------------------------------------------------
# Readers only this file needs (the shared ones are in lisp_ryu/schema.py)


def _dpid(raw: Any, path: str) -> int:
    if isinstance(raw, str):
        try:
            raw = int(raw.replace(":", ""), 16)
        except ValueError:
            raise InputError(path, f"{schema.show(raw)} is not a datapath id (hex)") from None
    return schema.integer(raw, path, 1, (1 << 64) - 1)


def _endpoint(raw: Any, path: str) -> tuple[IPAddress, int]:
    """The Map-Server's ADDR:PORT, read as `lisp-ryu mapserver --listen` reads it."""
    return schema.endpoint(raw, path, LISP_CONTROL_PORT)


def _xtr_id(raw: Any, path: str) -> int:
    """A 128-bit xTR-ID as 1-32 hex digits (how the Map-Server logs them)."""
    if not isinstance(raw, str) or not re.fullmatch(r"(0x)?[0-9a-fA-F]{1,32}", raw):
        raise InputError(path, f"expected an xTR-ID of 1-32 hex digits, got {schema.show(raw)}")
    return int(raw, 16)


_str = schema.string
_bool = schema.boolean
_positive = schema.positive_number
_ip = schema.address
_network = schema.prefix
_iid = schema.iid
_port = schema.openflow_port
_udp_port = schema.int_range(1, 65535)
_byte = schema.int_range(0, 255)


# --------------------------------------------------------------------------
# Sections


def _eid_prefix(node: Node) -> EidPrefixConfig:
    out = EidPrefixConfig(
        prefix=node.get("prefix", _network),
        iid=node.get("iid", _iid, 0),
        accept_more_specifics=node.get("accept_more_specifics", _bool, False),
    )
    node.done()
    return out


def _site(node: Node) -> SiteConfig:
    out = SiteConfig(
        name=node.get("name", _str),
        key=node.get("key", _str),
        eid_prefixes=tuple(_eid_prefix(n) for n in node.nodes("eid_prefixes")),
        xtr_ids=node.values("xtr_ids", _xtr_id),
    )
    node.done()
    if not out.eid_prefixes and not out.xtr_ids:
        raise node.error("eid_prefixes", "a site needs at least one EID prefix "
                                         "(or xtr_ids: subscribers that register nothing, like a PxTR)")
    return out


def _map_server(node: Node) -> MapServerConfig:
    sites = tuple(_site(n) for n in node.nodes("sites", required=True))
    names = [s.name for s in sites]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InputError(f"{node.path}.sites[{i}].name", f"duplicate site name {name!r}")
    bound: dict[int, str] = {}
    for i, site in enumerate(sites):
        for j, xtr_id in enumerate(site.xtr_ids):
            if bound.setdefault(xtr_id, site.name) != site.name:
                raise InputError(f"{node.path}.sites[{i}].xtr_ids[{j}]",
                                 f"xTR-ID {xtr_id:032x} is already bound to site {bound[xtr_id]}")
    d = MapServerConfig  # its class attributes are the field defaults, written once
    out = MapServerConfig(
        sites=sites,
        listen=node.get("listen", _endpoint, None),
        netns=node.get("netns", _str, None),
        data_dir=node.get("data_dir", _str, None),
        store=node.get("store", _store_url, None),
        negative_ttl_minutes=node.get("negative_ttl_minutes", schema.int_range(0, 0xFFFFFFFF),
                                      d.negative_ttl_minutes),
        negative_action=node.get("negative_action", schema.one_of(NEGATIVE_ACTIONS), d.negative_action),
        rate_limit_per_source=node.get("rate_limit_per_source", _positive, d.rate_limit_per_source),
        notify_retries=node.get("notify_retries", schema.int_range(0, 100), d.notify_retries),
        notify_retry_interval=node.get("notify_retry_interval", _positive, d.notify_retry_interval),
        registration_ttl=node.get("registration_ttl", _positive, d.registration_ttl),
    )
    node.done()
    if out.store is not None and out.data_dir is not None:
        raise InputError(f"{node.path}.store", "store and data_dir are exclusive: etcd holds the state")
    return out


def _store_url(raw: object, path: str) -> str:
    text = _str(raw, path)
    rest = text[len("etcd://"):] if text.startswith("etcd://") else ""
    endpoints = [e for e in rest.strip("/").split(",") if e]
    if not endpoints or not all(e.rpartition(":")[0] and e.rpartition(":")[2].isdigit() for e in endpoints):
        raise InputError(path, f"expected etcd://HOST:PORT[,HOST:PORT...], got {text!r}")
    return text


def _rloc(node: Node) -> RlocConfig:
    out = RlocConfig(
        address=node.get("address", _ip),
        priority=node.get("priority", _byte, RlocConfig.priority),
        weight=node.get("weight", _byte, RlocConfig.weight),
    )
    node.done()
    return out


def _gateway(node: Node) -> GatewayConfig:
    out = GatewayConfig(
        subnet=node.get("subnet", _network),
        ip=node.get("ip", _ip),
        mac=node.get("mac", schema.mac),
        iid=node.get("iid", _iid, 0),
    )
    node.done()
    if out.ip not in out.subnet:
        raise node.error("ip", f"{out.ip} is not inside subnet {out.subnet}")
    return out


def _host(node: Node) -> HostConfig:
    out = HostConfig(
        ip=node.get("ip", _ip),
        mac=node.get("mac", schema.mac),
        port=node.get("port", _port),
        iid=node.get("iid", _iid, 0),
    )
    node.done()
    return out


def _host_port(node: Node) -> HostPortConfig:
    out = HostPortConfig(port=node.get("port", _port), iid=node.get("iid", _iid, 0))
    node.done()
    return out


def _map_server_ref(node: Node) -> MapServerRef:
    out = MapServerRef(
        address=node.get("address", _ip),
        key=node.get("key", _str),
        port=node.get("port", _udp_port, LISP_CONTROL_PORT),
        algorithm=node.get("algorithm", schema.one_of(AUTH_ALGORITHMS), MapServerRef.algorithm),
    )
    node.done()
    return out


def _rloc_probing(node: Node | None) -> RlocProbingConfig:
    if node is None:
        return RlocProbingConfig()
    d = RlocProbingConfig()
    interval = node.get("interval", _positive, d.interval)
    out = RlocProbingConfig(
        enabled=node.get("enabled", _bool, d.enabled),
        interval=interval,
        jitter=node.get("jitter", schema.fraction, d.jitter),
        misses=node.get("misses", schema.int_range(1, 1000), d.misses),
        timeout=node.get("timeout", _positive, min(d.timeout, interval / 2)),
        answer_rate=node.get("answer_rate", _positive, d.answer_rate),
        answer_burst=node.get("answer_burst", _positive, d.answer_burst),
        answer_rate_total=node.get("answer_rate_total", _positive, d.answer_rate_total),
    )
    node.done()
    if out.timeout > out.interval * (1 - out.jitter):
        raise node.error("timeout", f"{out.timeout:g} s is longer than the shortest gap between probes "
                                    f"(interval x (1 - jitter) = {out.interval * (1 - out.jitter):g} s)")
    return out


def _failover(node: Node | None) -> FailoverConfig:
    if node is None:
        return FailoverConfig()
    d = BfdConfig()
    bfd_node = node.node("bfd")
    bfd = d
    if bfd_node is not None:
        bfd = BfdConfig(min_tx=bfd_node.get("min_tx", schema.int_range(1, 100000), d.min_tx),
                        min_rx=bfd_node.get("min_rx", schema.int_range(1, 100000), d.min_rx),
                        mult=bfd_node.get("mult", schema.int_range(1, 255), d.mult))
        bfd_node.done()
    out = FailoverConfig(enabled=node.get("enabled", _bool, True), bfd=bfd,
                         port_base=node.get("port_base", schema.int_range(1, 0xFE00), FailoverConfig.port_base),
                         grace=node.get("grace", schema.finite_number, FailoverConfig.grace),
                         mesh=node.get("mesh", _bool, FailoverConfig.mesh))
    if out.grace < 0:
        raise node.error("grace", f"must be >= 0 (seconds), got {out.grace}")
    node.done()
    return out


def _proxy(node: Node | None) -> ProxyConfig | None:
    if node is None:
        return None
    out = ProxyConfig(
        iid=node.get("iid", _iid, 0),
        prefixes=node.values("prefixes", _network),
        next_hop_mac=node.get("next_hop_mac", schema.mac),
        address=node.get("address", _ip, None),
    )
    node.done()
    if not out.prefixes:
        raise node.error("prefixes", "a proxy-ITR needs at least one EID prefix to attract")
    return out


def _xtr(node: Node) -> XtrConfig:
    out = XtrConfig(
        name=node.get("name", _str),
        dpid=node.get("dpid", _dpid),
        rlocs=tuple(_rloc(n) for n in node.nodes("rlocs", required=True)),
        tunnel_port=node.get("tunnel_port", _port),
        eid_prefixes=tuple(_eid_prefix(n) for n in node.nodes("eid_prefixes")),
        map_servers=tuple(_map_server_ref(n) for n in node.nodes("map_servers", required=True)),
        map_resolvers=node.values("map_resolvers", _ip),
        host_ports=tuple(_host_port(n) for n in node.nodes("host_ports")),
        gateways=tuple(_gateway(n) for n in node.nodes("gateways")),
        hosts=tuple(_host(n) for n in node.nodes("hosts")),
        dynamic_eid_prefixes=tuple(_eid_prefix(n) for n in node.nodes("dynamic_eid_prefixes")),
        netns=node.get("netns", _str, None),
        register_interval=node.get("register_interval", _positive, XtrConfig.register_interval),
        record_ttl_minutes=node.get("record_ttl_minutes", schema.int_range(1, 0xFFFFFFFF), TTL_ONE_DAY),
        redirect_seconds=node.get("redirect_seconds", _positive, XtrConfig.redirect_seconds),
        proxy_reply=node.get("proxy_reply", _bool, False),
        rloc_probing=_rloc_probing(node.node("rloc_probing")),
        petr=node.get("petr", _ip, None),
        native_port=node.get("native_port", _port, None),
        proxy=_proxy(node.node("proxy")),
        ovsdb=node.get("ovsdb", _str, None),
        failover=_failover(node.node("failover")),
        tunnel_udp_port=node.get("tunnel_udp_port", _udp_port, 4341),
    )
    node.done()
    if not out.rlocs:
        raise node.error("rlocs", "an xTR needs at least one RLOC")
    if out.native_port is not None and (out.native_port == out.tunnel_port
                                        or out.native_port in {p.port for p in out.host_ports}
                                        or out.native_port in {h.port for h in out.hosts}):
        raise node.error("native_port", f"port {out.native_port} is already the tunnel port or a host port")
    if out.proxy is not None and out.native_port is None:
        raise node.error("native_port", "is required with proxy (the PxTR's port to the non-LISP network)")
    if out.petr is not None and out.petr in {r.address for r in out.rlocs}:
        raise node.error("petr", f"{out.petr} is one of this xTR's own RLOCs")
    if not out.map_resolvers:
        out = dataclasses.replace(out, map_resolvers=tuple(ms.address for ms in out.map_servers))
    port_iid = {hp.port: hp.iid for hp in out.host_ports}
    for i, host in enumerate(out.hosts):
        if port_iid.setdefault(host.port, host.iid) != host.iid:
            raise InputError(f"{node.path}.hosts[{i}].port",
                             f"port {host.port} belongs to iid {port_iid[host.port]}, not {host.iid}")
        # A host may sit outside the site's own prefixes if it is a workload that moved in
        # (inside a dynamic-EID prefix): it is then registered as a host route.
        if not any(host.iid == p.iid and host.ip in p.prefix for p in out.eid_prefixes + out.dynamic_eid_prefixes):
            raise InputError(f"{node.path}.hosts[{i}].ip",
                             f"{host.ip} iid {host.iid} is inside none of this xTR's eid_prefixes "
                              "or dynamic_eid_prefixes")
    if len(port_iid) != len(out.host_ports):
        out = dataclasses.replace(out, host_ports=tuple(HostPortConfig(p, i) for p, i in sorted(port_iid.items())))
    return out


def _rest(node: Node | None) -> RestConfig:
    if node is None:
        return RestConfig()
    out = RestConfig(token=node.get("token", _str, None), protect_reads=node.get("protect_reads", _bool, False))
    node.done()
    return out


def parse(data: Any, source: str = "<config>") -> Config:
    """Validate an already-loaded YAML tree."""
    try:
        return _config(data, source)
    except InputError as exc:
        raise ConfigError(source, exc.path, exc.problem) from None


def load(path: str) -> Config:
    """Read and validate a configuration file."""
    try:
        data = schema.load_yaml(path)
    except InputError as exc:
        raise ConfigError(path, exc.path, exc.problem) from None
    return parse(data, source=path)


def _config(data: Any, source: str) -> Config:
    root = Node(data if data is not None else {}, null_is_absent=True)
    ms = root.node("map_server")
    xtrs = tuple(_xtr(n) for n in root.nodes("xtrs"))
    config = Config(
        source=source,
        map_server=_map_server(ms) if ms is not None else None,
        xtrs=xtrs,
        rest=_rest(root.node("rest")),
    )
    root.done()
    seen: dict[int, int] = {}
    for i, x in enumerate(xtrs):
        if x.dpid in seen:
            raise InputError(f"xtrs[{i}].dpid", f"dpid {x.dpid:#x} is also xtrs[{seen[x.dpid]}]'s")
        seen[x.dpid] = i
    return config
