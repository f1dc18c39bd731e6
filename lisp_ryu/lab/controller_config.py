"""The controller configuration for a running lab, derived from its state.

The lab knows everything the controller needs (datapath-ids, port numbers,
RLOCs, gateway MACs, the namespaces holding each RLOC and the Map-Server),
so `lisp-ryu lab up` writes a ready `controller.yaml` next to its state and
the demo and the tests start the controller on it.  The result is plain
data in the same schema a user writes by hand (see lisp_ryu/config.py), and
it goes through the same validation.
"""

from __future__ import annotations

from typing import Any

from lisp_ryu import config as config_mod
from lisp_ryu.lab.state import LabState, SiteState
from lisp_ryu.wire import LISP_CONTROL_PORT
from lisp_ryu.xtr.state import stable_id


MAP_SERVER_DATA = "map-server-data"


def build(state: LabState, *, embedded_map_server: bool = True, register_interval: float = 60.0,
          rloc_probing: dict[str, Any] | None = None, failover: dict[str, Any] | None = None) -> dict[str, Any]:
    """A configuration dict: one xTR per site, and the embedded Map-Server if the lab has one.

    A PxTR site becomes an xTR with `native_port` and a `proxy` section (it
    attracts the lab's EID space and registers nothing); when there is one,
    every other xTR gets its RLOC as `petr`, so native-forward negatives (the
    embedded Map-Server's answer for space no site registers) go to it.
    `rloc_probing` (the `xtrs[].rloc_probing` section of lisp_ryu/config.py) is
    given to every xTR; failover tests shorten the probe interval with it.
    `failover` (`xtrs[].failover`) too; every xTR gets its site's OVSDB, so
    failover in the switch (BFD ports) is on unless `failover={"enabled": False}`.
    """
    ms_address = state.map_server_address
    doc: dict[str, Any] = {}
    # Every EID prefix of the lab, with its gateway: each xTR is an anycast gateway for all
    # of them (the gateway MAC follows from the gateway IP, so it is the same at every
    # site) and learns any of their hosts that turns up on its ports (mobility).
    lab_prefixes = [p for site in state.sites for p in site.eid_prefixes]
    if ms_address and embedded_map_server and not state.map_server_nodes:
        doc["map_server"] = map_server_section(state)
    pxtr = state.pxtr
    xtrs = []
    for site in state.sites:
        if site.is_pxtr:
            xtrs.append(_pxtr(site, state, register_interval, rloc_probing))
            continue
        hosts = [h for h in state.hosts if h.site == site.name]
        xtr: dict[str, Any] = {
            **_switch(site),
            "eid_prefixes": [{"prefix": p["prefix"], "iid": p["iid"]} for p in site.eid_prefixes],
            # Its hosts' ports, and the port each other host of the lab gets when it moves in:
            # each named with its host's instance-ID, so arrivals are learned in their tenant.
            "host_ports": _host_ports(site, hosts, state),
            "gateways": [
                {"subnet": p["prefix"], "ip": p["gateway"], "mac": p["gateway_mac"], "iid": p["iid"]}
                for p in lab_prefixes
            ],
            "dynamic_eid_prefixes": [{"prefix": p["prefix"], "iid": p["iid"]} for p in lab_prefixes],
            "hosts": [{"ip": h.ip, "mac": h.mac, "port": h.ofport, "iid": h.iid} for h in hosts]
            + [{"ip": h.ip6, "mac": h.mac, "port": h.ofport, "iid": h.iid} for h in hosts if h.ip6],  # dual-stack
            "register_interval": register_interval,
        }
        _add_probing_and_map_server(xtr, site, state, rloc_probing)
        if pxtr is not None:
            xtr["petr"] = pxtr.rlocs[0].address
        xtrs.append(xtr)
    if failover is not None:
        for xtr in xtrs:
            xtr["failover"] = dict(failover)
    doc["xtrs"] = xtrs
    config_mod.parse(doc, source="<lab controller config>")  # fail here, not in the controller
    return doc


def map_server_section(state: LabState, node: dict | None = None, store: str | None = None) -> dict[str, Any]:
    """The `map_server:` section: the embedded Map-Server's, or (`node`) that of one standalone
    node of a clustered mapping system (lisp_ryu/lab/cluster.py): on the lab's etcd cluster
    (`store`, etcd://...), else with its own data_dir."""
    lab_prefixes = [p for site in state.sites for p in site.eid_prefixes]
    if node is None:
        section: dict[str, Any] = {
            "listen": f"{state.map_server_address}:{LISP_CONTROL_PORT}",
            "netns": state.map_server_namespace,
            "data_dir": f"{state.lab_dir}/{MAP_SERVER_DATA}",  # survives controller restarts
        }
    else:
        section = {"listen": f"{node['address']}:{LISP_CONTROL_PORT}"}
        if store:
            section["store"] = store  # etcd holds the state: a node killed -9 comes back from its replica
        else:
            section["data_dir"] = f"{state.lab_dir}/{node['name']}/{MAP_SERVER_DATA}"  # survives kill -9
    section.update({
        "sites": [
            {
                "name": site.name,
                "key": site_key(site),
                # Its own prefixes, then host routes anywhere in the lab (workloads that move in).
                "eid_prefixes": [{"prefix": p["prefix"], "iid": p["iid"], "accept_more_specifics": True}
                                 for p in site.eid_prefixes]
                + [{"prefix": p["prefix"], "iid": p["iid"], "accept_more_specifics": True}
                   for p in lab_prefixes if p not in site.eid_prefixes],
            }
            for site in state.lisp_sites
        ],
    })
    if state.pxtr is not None:
        # The PxTR registers nothing, yet subscribes to what it resolves: bind its
        # xTR-ID to a key so the Map-Server can sign the publications it sends it.
        section["sites"].append({"name": state.pxtr.name, "key": site_key(state.pxtr),
                                 "xtr_ids": [xtr_id_hex(state.pxtr.name)]})
    return section


def _host_ports(site: SiteState, hosts: list, state: LabState) -> list[dict[str, int]]:
    iid_of = {h.name: h.iid for h in state.hosts}
    ports = {h.ofport: h.iid for h in hosts}
    for name, port in site.reserved_ports.items():
        ports.setdefault(port, iid_of[name])
    return [{"port": port, "iid": iid} for port, iid in sorted(ports.items())]


def _pxtr(site: SiteState, state: LabState, register_interval: float,
          rloc_probing: dict[str, Any] | None) -> dict[str, Any]:
    """The PxTR's xTR: no EIDs or hosts; its native port, and the EID space it proxies."""
    native = site.native
    xtr: dict[str, Any] = {
        **_switch(site),
        "native_port": native["ofport"],
        "proxy": {
            "iid": native["iid"],
            "prefixes": list(native["prefixes"]),
            "next_hop_mac": native["next_hop_mac"],
            "address": native["address"].split("/")[0],
        },
        "register_interval": register_interval,
    }
    # For a PxTR the Map-Server is its Map-Resolver and where its subscriptions are (it registers nothing).
    _add_probing_and_map_server(xtr, site, state, rloc_probing)
    return xtr


def _switch(site: SiteState) -> dict[str, Any]:
    """What every xTR's configuration says of its switch: name, datapath, namespace, RLOCs, tunnel port."""
    return {
        "name": site.name,
        "dpid": site.dpid,
        "netns": site.namespace,
        "rlocs": [{"address": r.address, "priority": r.priority, "weight": r.weight} for r in site.rlocs],
        "tunnel_port": site.tunnel_ofport,
        # The controller creates the per-peer BFD ports of failover there (lisp_ryu/glue/failover_ports.py).
        "ovsdb": site.db,
    }


def _add_probing_and_map_server(xtr: dict[str, Any], site: SiteState, state: LabState,
                                rloc_probing: dict[str, Any] | None) -> None:
    if rloc_probing is not None:
        xtr["rloc_probing"] = dict(rloc_probing)
    if state.map_server_nodes:
        # A clustered mapping system: register with every node, resolve through them in this order.
        xtr["map_servers"] = [{"address": n["address"], "key": site_key(site)} for n in state.map_server_nodes]
        xtr["map_resolvers"] = [n["address"] for n in state.map_server_nodes]
    elif state.map_server_address:
        xtr["map_servers"] = [{"address": state.map_server_address, "key": site_key(site)}]


def xtr_id_hex(name: str) -> str:
    """The xTR-ID the controller gives the xTR called `name` (lisp_ryu.xtr.state.stable_id), in hex."""
    return f"{stable_id(f'xtr:{name}', 128):032x}"


def site_key(site: SiteState) -> str:
    """Each site's own registration key, so the Map-Server can tell sites apart.

    Sites register host routes inside each other's prefixes when workloads
    move; with one shared key the Map-Server could not tell which site an ETR
    belongs to and would merge them instead of moving the EID.
    """
    if not site.key:
        raise config_mod.ConfigError("<lab>", f"sites[{site.name}].key",
                                     "the topology gives no key for this site (set map_server.key)")
    return f"{site.key}-{site.name}"

