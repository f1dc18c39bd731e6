"""`lisp-ryu mapserver` (run the standalone Map-Server) and `lisp-ryu show` (read its state).

Heavy imports wait until a command runs, so `--help` works anywhere.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from typing import Any, Callable

from lisp_ryu.wire import LISP_CONTROL_PORT

DEFAULT_HTTP = "127.0.0.1:4380"
DEFAULT_URL = f"http://{DEFAULT_HTTP}"
DEFAULT_CONTROLLER_URL = "http://127.0.0.1:8080"  # `lisp-ryu controller` without --wsapi-host/--wsapi-port
TOKEN_ENV = "LISP_RYU_TOKEN"
URL_ENV = "LISP_RYU_URL"
SHOW_CHOICES = ["registrations", "subscriptions", "counters", "sites", "policies", "rloc-overrides",
                "static-mappings", "health", "xtrs", "map-cache"]


def add_parsers(subparsers, discover: Callable[[], list[tuple[str, str]]] = list) -> None:
    """Add the `mapserver` and `show` subcommands (each sets func(args, extra) -> int).

    `discover()` gives (URL, where it was found) of APIs running here that
    `show` tries first without --url (the top-level command passes the lab's).
    """
    p = subparsers.add_parser(
        "mapserver",
        help="run the standalone LISP Map-Server/Map-Resolver",
        description="Run a LISP Map-Server and Map-Resolver (RFC 9301, with RFC 9437 publish/subscribe) "
        "for the sites in the map_server: section of FILE. Registrations and subscriptions are kept in "
        "--data-dir and survive restarts. Introspection JSON is served on --http.",
    )
    p.add_argument("--config", metavar="FILE", required=True, help="lisp-ryu YAML configuration")
    p.add_argument("--listen", metavar="ADDR:PORT",
                   help="UDP address to serve LISP control on (default: map_server.listen, else 0.0.0.0:4342; "
                   "port 0 picks a free port)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="where registrations persist (default: map_server.data_dir; none = memory only)")
    p.add_argument("--http", metavar="ADDR:PORT", default=DEFAULT_HTTP,
                   help=f"introspection HTTP endpoint (default {DEFAULT_HTTP}; 'off' disables it)")
    p.add_argument("--netns", metavar="NAME", help="bind the UDP socket inside this network namespace")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=run_mapserver)

    p = subparsers.add_parser(
        "show",
        help="show mapping state, policies and counters of a Map-Server or controller",
        description="Read the /lisp/v1/ API of a running standalone Map-Server (--http) or of the "
        "controller's REST API (--wsapi-port) and print a table. map-cache and xtrs need the controller.",
    )
    p.add_argument("what", choices=SHOW_CHOICES)
    p.add_argument("xtr", nargs="?", help="for map-cache: the xTR name")
    p.add_argument("--url", default=os.environ.get(URL_ENV),
                   help=f"API base URL: a standalone server or the controller (default ${URL_ENV}; else the "
                   f"running lab's controller, then {DEFAULT_URL} (standalone default), then "
                   f"{DEFAULT_CONTROLLER_URL} (controller default), the first that answers)")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                   help=f"bearer token when reads are protected (default: ${TOKEN_ENV})")
    p.add_argument("--limit", type=int, default=1000, help="at most this many rows (default 1000)")
    p.add_argument("--json", action="store_true", help="print the raw JSON instead of a table")
    p.set_defaults(func=run_show, discover=discover)


def parse_endpoint(text: str, default_port: int) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """"ADDR:PORT", "[v6]:PORT" or a bare "ADDR" -> (address, port); ValueError says what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or (text.count(":") > 1 and not text.startswith("[")):
        host, port = text, str(default_port)
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ValueError(f"{text!r} is not ADDR:PORT") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"port {number} out of range in {text!r}")
    return address, number


# ---------------------------------------------------------------------------- mapserver


def run_mapserver(args: argparse.Namespace, extra: list[str]) -> int:
    import gc
    import logging
    import random
    import signal
    import socket
    import time

    from lisp_ryu import config as config_mod
    from lisp_ryu.glue.netns import open_udp_socket

    from lisp_ryu.glue.mapserver_loop import StandaloneServer
    from lisp_ryu.mapserver.service import MapServer
    from lisp_ryu.mapserver.store import FileStore, StoreError

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("lisp_ryu.mapserver")
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ms = cfg.map_server
    if ms is None:
        print(f"error: {args.config}: no map_server: section", file=sys.stderr)
        return 1
    try:
        if args.listen:
            listen = parse_endpoint(args.listen, LISP_CONTROL_PORT)
        else:
            listen = ms.listen or (ipaddress.ip_address("0.0.0.0"), LISP_CONTROL_PORT)
        http = None if args.http == "off" else parse_endpoint(args.http, 4380)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    netns = args.netns or ms.netns
    data_dir = args.data_dir or ms.data_dir

    store = None
    if data_dir:
        try:
            store = FileStore(data_dir)
        except OSError as exc:
            print(f"error: data dir {data_dir}: {exc}", file=sys.stderr)
            return 1
    else:
        log.warning("no --data-dir: registrations live in memory only and are lost on restart")
    rng = random.SystemRandom()
    # The restored state lives until exit: it goes straight into the collector's permanent
    # generation.  Collecting stays off until then, or the first pass after the restore would
    # walk every restored object once (about a second at a million registrations).
    gc.disable()
    try:
        core = MapServer(ms, nonces=lambda: rng.getrandbits(64), now=time.time(), store=store)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        gc.freeze()
        gc.enable()
    family = socket.AF_INET6 if listen[0].version == 6 else socket.AF_INET
    try:
        udp = open_udp_socket(netns, (str(listen[0]), listen[1]), family)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    http_sock = None
    if http is not None:
        http_sock = socket.socket(socket.AF_INET6 if http[0].version == 6 else socket.AF_INET, socket.SOCK_STREAM)
        http_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            http_sock.bind((str(http[0]), http[1]))
        except OSError as exc:
            print(f"error: cannot bind HTTP {http[0]}:{http[1]}: {exc.strerror}", file=sys.stderr)
            return 1
        http_sock.listen(64)

    server = StandaloneServer(core, udp, http_sock)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    udp_at = udp.getsockname()
    where = f" in netns {netns}" if netns else ""
    http_text = "off"
    if http_sock is not None:
        http_at = http_sock.getsockname()
        http_text = f"http://{_host(http_at[0])}:{http_at[1]}"
    # One parseable line: tests and scripts read the ports chosen for port 0 from it.
    print(f"lisp-ryu mapserver: udp {_host(udp_at[0])}:{udp_at[1]}{where} http {http_text} "
          f"sites {len(ms.sites)} registrations {core.registration_count}", flush=True)
    try:
        server.serve_forever()
    finally:
        udp.close()
        if http_sock is not None:
            http_sock.close()
        if store is not None:
            store.close()
    log.info("stopped")
    return 0


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


# ---------------------------------------------------------------------------- show


def run_show(args: argparse.Namespace, extra: list[str]) -> int:
    import urllib.error
    import urllib.request

    resource = args.what
    if args.what == "map-cache":
        if not args.xtr:
            print("error: map-cache needs the xTR name: lisp-ryu show map-cache NAME", file=sys.stderr)
            return 2
        resource = f"xtrs/{args.xtr}/map-cache"
    if args.url:
        candidates = [(args.url, "--url" if args.url != os.environ.get(URL_ENV) else f"${URL_ENV}")]
    else:
        candidates = list(getattr(args, "discover", list)())
        candidates += [(DEFAULT_URL, "the standalone Map-Server's default --http"),
                       (DEFAULT_CONTROLLER_URL, "the controller's default --wsapi-port")]
    tried = []
    data = None
    for base, where in _unique(candidates):
        url = f"{base.rstrip('/')}/lisp/v1/{resource}?limit={args.limit}"
        request = urllib.request.Request(url)
        if getattr(args, "token", None):
            request.add_header("Authorization", f"Bearer {args.token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                data = json.load(response)
            break
        except urllib.error.HTTPError as exc:  # it answered: that is the API, and its answer is final
            try:
                detail = json.load(exc).get("error", exc.reason)
            except ValueError:
                detail = exc.reason
            print(f"error: {url}: {exc.code} {detail}", file=sys.stderr)
            return 1
        except (urllib.error.URLError, OSError, ValueError) as exc:
            tried.append(f"  {base} ({where}): {getattr(exc, 'reason', exc)}")
    if data is None:
        print("error: no Map-Server or controller API answered; looked at:\n" + "\n".join(tried)
              + "\n(pass --url URL, or start one: `lisp-ryu lab up`/`make demo KEEP=1`, `lisp-ryu mapserver`)",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(format_table(args.what, data))
    return 0


def _unique(candidates: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each URL once (the first place it was found), in order."""
    seen: dict[str, str] = {}
    for url, where in candidates:
        seen.setdefault(url.rstrip("/"), where)
    return list(seen.items())


def _rlocs(locators: list[dict]) -> str:
    return " ".join(f"{loc['address']}({loc['priority']}/{loc['weight']})" for loc in locators) or "-"


def format_table(what: str, data: dict[str, Any]) -> str:
    """The JSON of one introspection resource as an aligned text table."""
    if what == "sites":
        rows = [[s["name"], " ".join(f"[{p['iid']}]{p['prefix']}" for p in s["eid_prefixes"]),
                 str(s["registered_prefixes"])] for s in data["sites"]]
        return _table(["site", "eid-prefixes", "registered"], rows)
    if what == "policies":
        rows = [[r["id"], str(r["priority"]), str(r["iid"]), r["action"], " ".join(r["sources"]) or "any",
                 " ".join(r["itr_rlocs"]) or "any", " ".join(r["destinations"])] for r in data["rules"]]
        return (_table(["id", "prio", "iid", "action", "sources", "itrs", "destinations"], rows)
                + f"\nevaluation: {data['evaluation']}")
    if what == "rloc-overrides":
        rows = [[o["id"], o["rloc"] or f"site {o['site']}", str(o["priority"] if o["priority"] is not None else "-"),
                 str(o["weight"] if o["weight"] is not None else "-")] for o in data["rloc_overrides"]]
        return _table(["id", "target", "priority", "weight"], rows)
    if what == "static-mappings":
        rows = [[str(m["iid"]), m["prefix"], _rlocs(m["rlocs"]), str(m["ttl_minutes"])]
                for m in data["static_mappings"]]
        return _table(["iid", "eid-prefix", "rlocs (prio/weight)", "ttl (min)"], rows) + f"\n{data['precedence']}"
    if what == "health":
        return json.dumps(data, indent=2)
    if what == "xtrs":
        rows = [[x["name"], x["dpid"], "yes" if x["connected"] else "no", " ".join(x["rlocs"]),
                 str(x["map_cache_entries"])] for x in data["xtrs"]]
        return _table(["xtr", "dpid", "connected", "rlocs", "map-cache"], rows)
    if what == "map-cache":
        rows = []
        for e in data["entries"]:
            ttl = "never" if e["ttl_left"] is None else f"{e['ttl_left']:.0f}s"
            flows = [f["text"] + ("" if f["installed"] else " (not installed)") for f in e["flows"]] or ["-"]
            eid = e["prefix"] if not e.get("source_prefix") else f"{e['source_prefix']} -> {e['prefix']}"
            rows.append([str(e["iid"]), eid, e["action"] if e["negative"] else _rlocs(e["locators"]), ttl,
                         flows[0]])
            rows += [["", "", "", "", flow] for flow in flows[1:]]
        return (_table(["iid", "eid-prefix", "rlocs / action", "ttl left", "flows"], rows)
                + f"\n{len(data['entries'])} of {data['total']} entries of xTR {data['xtr']}")
    if what == "counters":
        rows = [[name, str(value)] for name, value in data["counters"].items()]
        summary = (f"{data['registrations']} registered prefixes, {data['subscriptions']} subscriptions, "
                   f"{data['pending_notifications']} Map-Notifies awaiting an Ack")
        cache = data.get("answer_cache")
        if cache:
            summary += (f"\nanswer cache: {cache['entries']} of {cache['capacity']} hosts, {cache['hits']} hits, "
                        f"{cache['misses']} misses, emptied {cache['flushes']} times")
        return _table(["counter", "value"], rows) + "\n" + summary
    if what == "registrations":
        rows = []
        for reg in data["registrations"]:
            for etr in reg["etrs"]:
                rlocs = " ".join(f"{loc['address']}({loc['priority']}/{loc['weight']})" for loc in etr["locators"])
                rows.append([str(reg["iid"]), reg["prefix"], reg["site"], etr["source"], rlocs,
                             "yes" if etr["proxy_reply"] else "no", f"{etr['expires_in']:.0f}s"])
        shown = len(data["registrations"])
        return (_table(["iid", "eid-prefix", "site", "etr", "rlocs (prio/weight)", "proxy", "expires"], rows)
                + f"\n{shown} of {data['total']} registered prefixes")
    rows = [[str(sub["iid"]), sub["prefix"], sub["itr_rloc"], sub["xtr_id"], f"{sub['expires_in']:.0f}s"]
            for sub in data["subscriptions"]]
    return (_table(["iid", "eid-prefix", "subscriber", "xtr-id", "expires"], rows)
            + f"\n{len(rows)} of {data['total']} subscriptions")


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)] if rows else [len(h) for h in header]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)
