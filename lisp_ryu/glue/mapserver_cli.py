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
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
URL_ENV = "LISP_RYU_URL"
SHOW_CHOICES = ["registrations", "subscriptions", "counters", "sites", "policies", "rloc-overrides",
                "static-mappings", "health", "xtrs", "map-cache", "moves"]


def add_parsers(subparsers, discover: Callable[[], list[tuple[str, str]]] = list) -> None:
    """Add the `mapserver` and `show` subcommands (each sets func(args, extra) -> int).

    `discover()` gives (URL, where it was found) of APIs running here that
    `show` tries first without --url (the top-level command passes the lab's).
    """
    p = subparsers.add_parser(
        "mapserver",
        help="run the standalone LISP Map-Server/Map-Resolver",
        description="Run a LISP Map-Server and Map-Resolver (RFC 9301, with RFC 9437 publish/subscribe) "
        "for the sites in the map_server: section of FILE. Registrations, subscriptions, policies and static "
        "mappings are kept in --data-dir and survive restarts, or with --store in etcd, shared by every "
        "Map-Server using it. Introspection JSON is served on --http, and writes of policies, RLOC "
        "overrides and static mappings with --token.",
    )
    p.add_argument("--config", metavar="FILE", required=True, help="lisp-ryu YAML configuration")
    p.add_argument("--listen", metavar="ADDR:PORT",
                   help="UDP address to serve LISP control on (default: map_server.listen, else 0.0.0.0:4342; "
                   "port 0 picks a free port)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="where registrations persist (default: map_server.data_dir; none = memory only)")
    p.add_argument("--store", metavar="etcd://HOST:PORT[,...]",
                   help="share registrations, subscriptions, policies and static mappings in etcd with the other "
                   "Map-Servers using it (default: "
                   "map_server.store; exclusive with --data-dir)")
    p.add_argument("--node-id", metavar="NAME",
                   help="this node's name in the etcd store (default: HOSTNAME-UDPPORT)")
    p.add_argument("--http", metavar="ADDR:PORT", default=DEFAULT_HTTP,
                   help=f"introspection HTTP endpoint (default {DEFAULT_HTTP}; 'off' disables it)")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                   help="bearer token that HTTP writes of policies, RLOC overrides and static mappings need "
                   f"(default: ${TOKEN_ENV}; none: the HTTP endpoint is read-only). With --store, a write "
                   "at any node shapes every node's answers")
    p.add_argument("--netns", metavar="NAME", help="bind the UDP socket inside this network namespace")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=run_mapserver)

    p = subparsers.add_parser(
        "show",
        help="show mapping state, policies and counters of a Map-Server or controller",
        description="Read the /lisp/v1/ API of a running standalone Map-Server (--http) or of the "
        "controller's REST API (--wsapi-port) and print a table. map-cache, xtrs and moves need the controller.",
    )
    p.add_argument("what", choices=SHOW_CHOICES)
    p.add_argument("xtr", nargs="?", help="for map-cache: the xTR name")
    p.add_argument("--url", default=os.environ.get(URL_ENV),
                   help=f"API base URL: a standalone server or the controller (default ${URL_ENV}; else the "
                   f"running lab's controller, then {DEFAULT_URL} (standalone default), then "
                   f"{DEFAULT_CONTROLLER_URL} (controller default), the first that answers)")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                   help=f"bearer token when reads are protected (default: ${TOKEN_ENV})")
    p.add_argument("--limit", type=int, default=None,
                   help="at most this many rows (default: all registrations and subscriptions, read page by "
                   "page; 1000 map-cache entries)")
    p.add_argument("--json", action="store_true", help="print the raw JSON instead of a table")
    p.set_defaults(func=run_show, discover=discover)


def parse_endpoint(text: str, default_port: int, option: str = "") -> tuple[IPAddress, int]:
    """"ADDR:PORT", "[v6]:PORT" or a bare "ADDR" -> (address, port); ValueError says what is wrong.

    The configuration's reader (`schema.endpoint`), so `--listen` and `map_server.listen` read
    the same text the same way; port 0 (a free port) is allowed here."""
    from lisp_ryu import schema

    return schema.endpoint(text, option, default_port, min_port=0)


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
    from lisp_ryu.glue.mapserver_replica import ReplicatedStore, parse_store_url
    from lisp_ryu.mapserver.service import MapServer
    from lisp_ryu.mapserver.replica import ReplicaLink
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
            listen = parse_endpoint(args.listen, LISP_CONTROL_PORT, "--listen")
        else:
            listen = ms.listen or (ipaddress.ip_address("0.0.0.0"), LISP_CONTROL_PORT)
        http = None if args.http == "off" else parse_endpoint(args.http, 4380, "--http")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    netns = args.netns or ms.netns
    store_url = args.store or (None if args.data_dir else ms.store)
    data_dir = args.data_dir or (None if store_url else ms.data_dir)
    endpoints: list[str] = []
    if store_url:
        if args.data_dir:
            print("error: --store and --data-dir are exclusive", file=sys.stderr)
            return 2
        try:
            endpoints = parse_store_url(store_url)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    store = None
    if endpoints:
        store = ReplicaLink()
    elif data_dir:
        try:  # checks the directory is writable and removes temporary files a crash left
            store = FileStore(data_dir)
            odd = _odd_data_file(data_dir)
        except StoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"error: data dir {data_dir}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        if odd:
            print(f"error: data dir {data_dir}: {odd} is not a regular file", file=sys.stderr)
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
    except (StoreError, OSError) as exc:  # damaged or orphaned files: named, never a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OverflowError) as exc:
        # What the store's reader does not catch yet (a snapshot field of the wrong type, an
        # unreadable file): still a refusal to start, said in one line; the trace is for debugging.
        log.debug("restoring from %s failed", data_dir, exc_info=True)
        print(f"error: data dir {data_dir}: cannot restore its state: {exc} ({type(exc).__name__}); "
              "fix or move aside the damaged file", file=sys.stderr)
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

    replicated = None
    if endpoints:
        node_id = (args.node_id or f"{socket.gethostname()}-{udp.getsockname()[1]}").replace("/", "_")
        replicated = ReplicatedStore(endpoints, node_id, store)
        replicated.start(core)
        log.info("node %s: mapping state replicated in etcd %s (revision %d, %d registrations, %d subscriptions, "
                 "%d policy rules, %d static mappings)", node_id, ",".join(endpoints), replicated.store.revision,
                 core.registration_count, core.subscription_count, len(core.policy.rules),
                 sum(1 for _ in core.static_mappings()))
    server = StandaloneServer(core, udp, http_sock, replica=replicated, token=args.token)
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
        if replicated is not None:
            replicated.stop()
        if store is not None:
            store.close()
    log.info("stopped")
    return 0


def _odd_data_file(directory: str) -> str | None:
    """The first snapshot or journal path in `directory` that is not a regular file (a directory, a FIFO)."""
    for name in sorted(os.listdir(directory)):
        if name.startswith(("snapshot", "journal-")):
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                return path
    return None


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


# ---------------------------------------------------------------------------- show


#: Rows asked for per page when following `next`: the servers' cap (views.MAX_LIMIT).
PAGE_ROWS = 1000
PAGED = ("registrations", "subscriptions")


class _ShowError(Exception):
    pass


def _fetch(url: str, token: str | None) -> dict:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            detail = json.load(exc).get("error", exc.reason)
        except ValueError:
            detail = exc.reason
        raise _ShowError(f"error: {url}: {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _ShowError(f"error: cannot read {url}: {getattr(exc, 'reason', exc)}") from None


def run_show(args: argparse.Namespace, extra: list[str]) -> int:
    resource = args.what
    if args.what == "map-cache":
        if not args.xtr:
            print("error: map-cache needs the xTR name: lisp-ryu show map-cache NAME", file=sys.stderr)
            return 2
        resource = f"xtrs/{args.xtr}/map-cache"
    api = args.url or _find_api(args)
    if api is None:
        return 1
    base = f"{api.rstrip('/')}/lisp/v1/{resource}"
    token = getattr(args, "token", None)
    try:
        if args.what in PAGED:
            return _show_pages(args, base, token)
        data = _fetch(f"{base}?limit={args.limit if args.limit is not None else PAGE_ROWS}", token)
    except _ShowError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(format_table(args.what, data))
    return 0


def _show_pages(args: argparse.Namespace, base: str, token: str | None) -> int:
    """Follow `next` page by page (a table is printed as its pages come), up to --limit rows."""
    from urllib.parse import quote

    wanted = args.limit
    after, shown, widths, merged = None, 0, None, None
    while True:
        rows = PAGE_ROWS if wanted is None else max(0, min(PAGE_ROWS, wanted - shown))
        data = _fetch(f"{base}?limit={rows}" + (f"&after={quote(after)}" if after else ""), token)
        items = data[args.what][:rows]  # a server that ignores limit still shows only what was asked
        shown += len(items)
        if args.json:
            merged = merged or {"total": data["total"], args.what: []}
            merged[args.what] += items
        else:
            lines, widths = _page_lines(args.what, items, widths)
            if lines:
                print("\n".join(lines), flush=True)
        following = data.get("next")  # absent from a server that does not page: its one page is all
        if not following or following == after or not items or (wanted is not None and shown >= wanted):
            break
        after = following
    if args.json:
        print(json.dumps(merged, indent=2))
        return 0
    noun = "registered prefixes" if args.what == "registrations" else "subscriptions"
    print(f"{shown} of {data['total']} {noun}")
    return 0


def _find_api(args: argparse.Namespace) -> str | None:
    """The first API that answers here: the running lab's controller, then the two defaults.

    Anything that answers HTTP is the API (an error it returns is its final word); when none
    does, every place looked at is named with why it failed.
    """
    import urllib.error
    import urllib.request

    candidates = list(getattr(args, "discover", list)())
    candidates += [(DEFAULT_URL, "the standalone Map-Server's default --http"),
                   (DEFAULT_CONTROLLER_URL, "the controller's default --wsapi-port")]
    tried = []
    for base, where in _unique(candidates):
        try:
            with urllib.request.urlopen(f"{base}/lisp/v1/health", timeout=5):
                return base
        except urllib.error.HTTPError:
            return base
        except (urllib.error.URLError, OSError, ValueError) as exc:
            tried.append(f"  {base} ({where}): {getattr(exc, 'reason', exc)}")
    print("error: no Map-Server or controller API answered; looked at:\n" + "\n".join(tried)
          + "\n(pass --url URL, or start one: `lisp-ryu lab up`/`make demo KEEP=1`, `lisp-ryu mapserver`)",
          file=sys.stderr)
    return None


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
    if what == "moves":
        rows = [[str(m["iid"]), m["eid"], m["from_site"] or "-", m["to_site"] or "-",
                 "-" if m.get("port") is None else str(m["port"]), str(m.get("held", 0)),
                 " ".join(m["replicating_at"]) or "-", f"{m['seconds_left']:.1f}"] for m in data["moves"]]
        return _table(["iid", "eid", "from", "to", "port", "held", "replicating at", "seconds left"], rows)
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
    header, rows = _list_rows(what, data[what])
    noun = "registered prefixes" if what == "registrations" else "subscriptions"
    return _table(header, rows) + f"\n{len(data[what])} of {data['total']} {noun}"


def _list_rows(what: str, items: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a page of registrations (a row per ETR) or subscriptions."""
    if what == "registrations":
        rows = []
        for reg in items:
            for etr in reg["etrs"]:
                rows.append([str(reg["iid"]), reg["prefix"], reg["site"], etr["source"], _rlocs(etr["locators"]),
                             "yes" if etr["proxy_reply"] else "no", f"{etr['expires_in']:.0f}s"])
        return ["iid", "eid-prefix", "site", "etr", "rlocs (prio/weight)", "proxy", "expires"], rows
    return (["iid", "eid-prefix", "subscriber", "xtr-id", "expires"],
            [[str(sub["iid"]), sub["prefix"], sub["itr_rloc"], sub["xtr_id"], f"{sub['expires_in']:.0f}s"]
             for sub in items])


def _page_lines(what: str, items: list[dict], widths: list[int] | None) -> tuple[list[str], list[int]]:
    """A page's table lines, the header only with the first page (`widths` None); and the widths
    used, which the next pages keep or widen (a page is printed before the next is read)."""
    header, rows = _list_rows(what, items)
    page = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    lines = []
    if widths is None:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(header, page)).rstrip())
        lines.append("  ".join("-" * width for width in page))
    widths = [max(a, b) for a, b in zip(widths or page, page)]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return lines, widths


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)] if rows else [len(h) for h in header]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)
