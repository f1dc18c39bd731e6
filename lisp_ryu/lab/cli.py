"""`lisp-ryu lab up|down|status|exec|kill|revive|static-flows|move|evacuate|mobility|evacuation|random-topology`:
the lab from the command line."""

from __future__ import annotations

import argparse
import logging
import sys

from lisp_ryu.lab.state import LabError
from lisp_ryu.lab.topology import TopologyError


def add_parser(subparsers, func) -> argparse.ArgumentParser:
    """Add `lab` and its subcommands; the dispatcher calls `func` (-> run)."""
    lab = subparsers.add_parser(
        "lab",
        help="multi-site OVS lab in network namespaces (up, down, status, exec, move, mobility)",
        description="Build a LISP lab from a topology file: one namespace per site with its own "
        "ovsdb-server and ovs-vswitchd, hosts, a core router and the Map-Server on the underlay. "
        "State lives in $LISP_RYU_LAB_DIR (default /run/lisp-ryu-lab); every name starts "
        "with $LISP_RYU_LAB_PREFIX (default lr-).",
    )
    lab.add_argument("-v", "--verbose", action="store_true", help="log every step")
    lab.set_defaults(func=func)
    sub = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND", required=True)

    p = sub.add_parser("up", help="build the lab from a topology file",
                       description="Build the lab described by FILE (see topologies/).")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--static-flows", action="store_true",
                   help="also install static LISP-GPE flows, so sites reach each other without a controller")

    sub.add_parser("down", help="remove everything the lab created (also after a crash)",
                   description="Stop the lab's OVS daemons and remove its namespaces, interfaces and "
                   "files: from the state file, and by name prefix if the state file is lost.")

    p = sub.add_parser("status", help="show the running lab and whether it is healthy",
                       description="Show sites, hosts and daemons; exit 0 if healthy, 1 otherwise.")
    p.add_argument("--json", action="store_true", help="print the state file")

    p = sub.add_parser("exec", help="run a command in a lab node's namespace",
                       description="Run CMD in the namespace of NODE (a host, site, router or the "
                       "map-server), e.g. `lisp-ryu lab exec h1 -- ping 10.2.0.10`.")
    p.add_argument("node", metavar="NODE")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...")

    for verb, text in (("kill", "fail a Map-Server node of a clustered mapping system (SIGKILL)"),
                       ("revive", "start a killed Map-Server node (or etcd member) again")):
        p = sub.add_parser(verb, help=text, description=f"{text[0].upper()}{text[1:]}: NODE is one of the "
                           "topology's map_server.nodes (see `lab status`); --etcd for its etcd member instead.")
        p.add_argument("node", metavar="NODE")
        p.add_argument("--etcd", action="store_true", help="the node's etcd member rather than its Map-Server")

    sub.add_parser("static-flows", help="install static LISP-GPE flows (no controller needed)",
                   description="Replace the lab's static flows on every site (cookie 0x4c41420000000001).")

    p = sub.add_parser("move", help="move a host to another site, keeping its IP and MAC",
                       description="Re-attach HOST to SITE's xTR as a live-migrated VM: a new interface is "
                       "plugged into the new site's br-int first (at the port the lab reserved for the host "
                       "there, which the controller's configuration names with the host's instance-ID; else the "
                       "lowest free port), then the host switches over to it keeping its address, MAC, routes, sockets and ARP cache, and sends a "
                       "gratuitous ARP; its old interface and port go last.")
    p.add_argument("host", metavar="HOST")
    p.add_argument("--to", required=True, metavar="SITE", dest="site")
    p.add_argument("--planned", action="store_true",
                   help="announce the move to the controller once the new interface is plugged (POST "
                   "/lisp/v1/moves with its port): the new site delivers the host's traffic there from then on "
                   "and the other xTRs send to both sites meanwhile")
    p.add_argument("--hold", action="store_true", help="with --planned: announce without the new port; the new "
                   "site's controller holds the host's traffic until it appears there")
    p.add_argument("--silent", action="store_true", help="the host sends no gratuitous ARP after the switchover "
                   "(a guest that announces nothing): with --planned, the new site asks it to answer at its new port")
    p.add_argument("--abort", action="store_true", help="with --planned: the migration fails after the "
                   "announcement; the move is called off (DELETE /lisp/v1/moves/IID/EID), the new interface "
                   "unplugged, and the host stays where it is")

    p = sub.add_parser("evacuate", help="move every host of a site (or --hosts) to another site at once",
                       description="Evacuate SITE as an orchestrator drains a rack: each host moves as with "
                       "`lab move` (new interface plugged in first, the switchover keeping address, MAC, routes "
                       "and sockets, a gratuitous ARP, the old port last), all switchovers at once.")
    p.add_argument("site", metavar="SITE")
    p.add_argument("--to", required=True, metavar="SITE", dest="to_site")
    p.add_argument("--hosts", metavar="H1,H2,...", help="only these hosts of SITE (default: all)")
    p.add_argument("--planned", action="store_true", help="announce each move to the controller first "
                   "(POST /lisp/v1/moves), as `lab move --planned`")
    p.add_argument("--hold", action="store_true", help="with --planned: announce without the new ports")

    p = sub.add_parser("evacuation", help="evacuate N workloads at once under a sweeping ping; report outages",
                       description="Bring up a generated three-site topology with N workloads at dc1 (or use "
                       "the lab that is up), ping every workload from a third site, move one workload there and "
                       "back (the baseline), then move every workload of dc1 to dc2 at once; report the "
                       "per-workload outage (p50/p99/max) and check every switch for stale flows.")
    p.add_argument("--workloads", type=int, default=20, metavar="N", help="workloads to generate (default 20)")
    p.add_argument("--interval", type=float, metavar="S",
                   help="each workload's probe interval (default 10 ms, longer past 40 workloads)")
    p.add_argument("--single-moves", type=int, default=2, metavar="K", help="baseline moves first (default 2)")
    p.add_argument("--planned", action="store_true", help="planned moves (POST /lisp/v1/moves first)")
    p.add_argument("--json", metavar="FILE", help="write the summary and per-workload outages as JSON")

    p = sub.add_parser("random-topology", help="write the random topology of a seed (what the tests and soak build)",
                       description="Print (or write to -o FILE) the valid random topology that SEED gives "
                       "(lisp_ryu/lab/topology_random.py): the same seed always gives the same topology, so a "
                       "seed that failed in `make soak` can be brought up by hand with `lisp-ryu lab up FILE`.")
    p.add_argument("seed", type=int, metavar="SEED")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.add_argument("--max-sites", type=int, default=8, metavar="N", help="at most N sites (2..8, default 8)")
    p.add_argument("--max-hosts", type=int, default=2, metavar="N", help="at most N hosts per tenant and site")
    p.add_argument("--ipv6", action="store_true",
                   help="dual-stack hosts too: an IPv6 EID prefix per site and tenant, most hosts with an IPv6 "
                   "address (the random-topology test and soak use it)")

    p = sub.add_parser("mobility", help="move a host back and forth under a 10 ms ping; report outages",
                       description="Ping a host from a third site every 10 ms while it moves between two "
                       "sites; report per move the outage and when each xTR changed its flows. Uses the lab "
                       "that is up (or brings up --topology and takes it down afterwards) and the running "
                       "controller (or starts one and stops it afterwards).")
    p.add_argument("--moves", type=int, default=10, metavar="N", help="number of moves (default 10)")
    p.add_argument("--pause", type=float, default=2.0, metavar="S", help="seconds after each move (default 2)")
    p.add_argument("--interval", type=float, default=0.01, metavar="S", help="ping interval (default 0.01)")
    p.add_argument("--host", help="the host that moves (default: the first host)")
    p.add_argument("--to", metavar="SITE", help="the site it moves to and back from (default: the next site)")
    p.add_argument("--pinger", metavar="HOST", help="the host that pings it (default: one at a third site)")
    p.add_argument("--topology", metavar="FILE", help="topology to bring up if no lab is up (default three-dc)")
    p.add_argument("--planned", action="store_true",
                   help="announce each move first (POST /lisp/v1/moves with the new port): replicate, lose nothing")
    p.add_argument("--hold", action="store_true", help="with --planned: announce without the new port (the "
                   "controller holds the host's traffic at the new site)")
    p.add_argument("--tcp", action="store_true", help="a paced TCP stream to the host runs through the moves too")
    p.add_argument("--ipv6", action="store_true",
                   help="probe the host's IPv6 address (dual-stack hosts: topologies/three-dc-dualstack.yaml)")
    p.add_argument("--foreign", action="store_true",
                   help="an ITR unaware of the moves (raw LISP-GPE from the core router to the host's home RLOC, "
                   "one datagram every --interval) runs through them too: what of it was lost")
    p.add_argument("--plot", metavar="FILE", help="draw the ping timeline into this PNG")
    p.add_argument("--json", metavar="FILE", help="write the summary and per-move figures as JSON")
    return lab


def run(args: argparse.Namespace, extra: list[str]) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return _COMMANDS[args.lab_command](args)
    except (LabError, TopologyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _up(args) -> int:
    from lisp_ryu.lab import static_flows
    from lisp_ryu.lab.build import up

    state = up(args.file)
    print(f"lab {state.name} up: {len(state.sites)} sites, {len(state.hosts)} hosts; "
          f"controller expected at tcp:{state.controller}:{state.controller_port}")
    if args.static_flows:
        counts = static_flows.install(state)
        print("static flows: " + ", ".join(f"{s} {n}" for s, n in counts.items()))
    return 0


def _random_topology(args) -> int:
    from lisp_ryu.lab import topology_random

    text = topology_random.dump(topology_random.generate(args.seed, max_sites=args.max_sites,
                                                         max_hosts=args.max_hosts, ipv6_hosts=args.ipv6))
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _down(args) -> int:
    from lisp_ryu.lab.teardown import down

    removed = down()
    print(f"lab down: removed {len(removed)} objects" if removed else "no lab objects found")
    return 0


def _status(args) -> int:
    from lisp_ryu.lab.running import status

    st = status()
    if st is None:
        print("no lab is up")
        return 1
    from lisp_ryu.lab import controller as lab_controller

    s = st.state
    health, why_not = lab_controller.health(s)
    running = lab_controller.running_pid() is not None
    # The controller's word on each switch: programmed as its xTR wants, or why not.
    xtr_health = (health or {}).get("xtrs", {})
    controller_ok = not running or (health is not None and all(x.get("healthy") for x in xtr_health.values()))
    healthy = st.healthy and controller_ok
    cluster_nodes = {}
    if s.map_server_nodes:  # a clustered mapping system: is every node's Map-Server and etcd member well?
        from lisp_ryu.lab import cluster

        cluster_nodes = {c.name: c for c in cluster.status(s)}
        healthy = healthy and all(c.healthy for c in cluster_nodes.values())
    if args.json:
        if not cluster_nodes:
            print(s.to_json())
            return 0 if healthy else 1
        import dataclasses
        import json

        doc = json.loads(s.to_json())
        doc["map_server_node_status"] = [dataclasses.asdict(c) for c in cluster_nodes.values()]
        print(json.dumps(doc, indent=2))
        return 0 if healthy else 1
    print(f"lab {s.name} ({s.topology}): {s.status}, {'healthy' if healthy else 'DEGRADED'}")
    print(f"  management: {s.management_bridge} {s.controller}, sites connect to tcp:{s.controller}:{s.controller_port}")
    if running:
        print(f"  controller: pid {lab_controller.running_pid()}, REST {s.controller_rest}, "
              + ("every switch programmed" if controller_ok else (why_not or "NOT every switch programmed")))
    else:
        print("  controller: none running (static flows, or stopped)")
    for site, ss in zip(s.sites, st.sites):
        daemons = " ".join(f"{d}={'up' if ok else 'DOWN'}" for d, ok in ss.daemons.items())
        # OVS refreshes its Controller status column only every few seconds.
        conn = {True: "connected", False: "not connected (as of OVS's last status refresh)",
                None: "?"}[ss.controller_connected]
        rlocs = ", ".join(f"{r.address} on {r.bridge}" for r in site.rlocs)
        print(f"  site {site.name}: netns {site.namespace}{'' if ss.namespace_present else ' (MISSING)'}, "
              f"dpid {site.dpid_hex}, RLOC {rlocs}, {daemons}, controller {conn}, flows {ss.flows}")
        x = xtr_health.get(site.name)
        if x is not None and not x.get("healthy"):
            print(f"    UNHEALTHY: {x.get('problem') or 'not connected to the controller'}")
    for h in s.hosts:
        dual = f" + {h.address6}" if h.address6 else ""
        print(f"  host {h.name}: {h.address}{dual} iid {h.iid} at {h.site} port {h.ofport}, mac {h.mac}")
    for n in s.nodes:
        extra = ""
        c = cluster_nodes.get(n.name)
        if c is not None:
            extra = (f", mapserver {'pid ' + str(c.map_server_pid) if c.map_server_pid else 'DOWN'}"
                     f" ({c.map_server_health})")
            extra += (f", etcd {'pid ' + str(c.etcd_pid) if c.etcd_pid else 'DOWN'} ({c.etcd_health})"
                      if c.etcd_health else ", no etcd")
        print(f"  {n.kind} {n.name}: netns {n.namespace}, {', '.join(n.addresses)}{extra}")
        if c is not None:
            print(f"    store {c.store}")
    for name, x in sorted(xtr_health.items()):
        unreachable = (x.get("mapping_system") or {}).get("unreachable")
        if unreachable:
            print(f"  xTR {name}: mapping system unreachable: {', '.join(unreachable)}")
    for ns in st.missing_namespaces:
        print(f"  MISSING netns {ns}")
    return 0 if healthy else 1


def _exec(args) -> int:
    from lisp_ryu.lab.running import exec_in

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print("error: no command given: lisp-ryu lab exec NODE -- CMD ...", file=sys.stderr)
        return 2
    return exec_in(args.node, cmd, capture=False, check=False, timeout=None).returncode


def _kill(args) -> int:
    from lisp_ryu.lab import cluster

    pid = cluster.kill(args.node, etcd=args.etcd)
    print(f"{args.node}: {'etcd member' if args.etcd else 'Map-Server'} (pid {pid}) killed")
    return 0


def _revive(args) -> int:
    from lisp_ryu.lab import cluster

    pid = cluster.revive(args.node, etcd=args.etcd)
    print(f"{args.node}: {'etcd member' if args.etcd else 'Map-Server'} running again (pid {pid})")
    return 0


def _static_flows(args) -> int:
    from lisp_ryu.lab import static_flows

    counts = static_flows.install()
    print("static flows: " + ", ".join(f"{s} {n}" for s, n in counts.items()))
    return 0


def _hold(args) -> bool:
    if args.hold and not args.planned:
        raise LabError("--hold changes how a planned move is announced: give --planned too")
    return args.hold


def _move(args) -> int:
    from lisp_ryu.lab.move import abort_planned_move, ended_at, move_host

    if args.abort:
        if not args.planned:
            raise LabError("--abort calls a planned move off: give --planned too")
        ended = ended_at(abort_planned_move(args.host, args.site, hold=_hold(args)))
        print(f"planned move of {args.host} to {args.site} called off (ended at {', '.join(ended)}); "
              f"{args.host} stays where it was")
        return 0
    mv = move_host(args.host, args.site, planned=args.planned, hold=_hold(args), silent=args.silent)
    print(f"{mv.host} moved from {mv.from_site} (port {mv.from_ofport}) to {mv.to_site} (port {mv.to_ofport}): "
          f"no link for {mv.swap_ms:.1f} ms, gratuitous ARP sent")
    return 0


def _evacuate(args) -> int:
    from lisp_ryu.lab.evacuate import evacuate

    hosts = [h for h in args.hosts.split(",") if h] if args.hosts else None
    ev = evacuate(args.site, args.to_site, hosts, planned=args.planned, hold=_hold(args))
    print(f"{len(ev.moves)} hosts moved from {ev.from_site} to {ev.to_site}: interfaces prepared in "
          f"{ev.prepared_s:.1f} s, switchovers within {ev.spread_ms:.0f} ms, gratuitous ARPs sent")
    return 0


def _evacuation(args) -> int:
    from lisp_ryu.lab.scenarios import evacuation

    report = evacuation.run(workloads=args.workloads, interval=args.interval, single_moves=args.single_moves,
                            planned=args.planned, progress=lambda line: print(f"== {line}", flush=True))
    print(evacuation.format_report(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(report.to_json())
        print(f"figures: {args.json}")
    return 0 if all(o.recovered for o in report.outages) and not report.stale else 1


def _mobility(args) -> int:
    from lisp_ryu.lab.scenarios import mobility

    options = {"topology": args.topology} if args.topology else {}
    report = mobility.run(moves=args.moves, pause=args.pause, interval=args.interval, host=args.host, to=args.to,
                          pinger=args.pinger, planned=args.planned, hold=_hold(args), tcp=args.tcp, ipv6=args.ipv6,
                          foreign=args.foreign,
                          progress=lambda line: print(f"== {line}", flush=True), **options)
    print(mobility.format_table(report))
    if args.plot:
        print(f"timeline: {mobility.plot(report, args.plot)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(report.to_json())
        print(f"figures: {args.json}")
    return 0 if all(m.recovered for m in report.moves) else 1


_COMMANDS = {"up": _up, "down": _down, "status": _status, "exec": _exec, "static-flows": _static_flows,
             "move": _move, "evacuate": _evacuate, "evacuation": _evacuation, "kill": _kill, "revive": _revive,
             "mobility": _mobility, "random-topology": _random_topology}
