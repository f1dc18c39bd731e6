"""`lisp-ryu`: the one command-line entry point.

Subcommands import their subsystem lazily so that `--help` and the pure
tools work without Ryu, OVS or root.
"""

from __future__ import annotations

import argparse
import os
import sys

CONFIG_ENV = "LISP_RYU_CONFIG"
APP_MODULE = "lisp_ryu.glue.ryu_app"


def _cmd_controller(args: argparse.Namespace, extra: list[str]) -> int:
    from lisp_ryu.glue import compat

    if args.config:
        os.environ[CONFIG_ENV] = os.path.abspath(args.config)
    # The REST API and OpenFlow: local only unless asked (Ryu's default for both is 0.0.0.0).
    for option in ("--wsapi-host", "--ofp-listen-host"):
        if not any(a == option or a.startswith(option + "=") for a in extra):
            extra = [option, "127.0.0.1", *extra]
    tls = [o for o in ("--ctl-privkey", "--ctl-cert") if any(a == o or a.startswith(o + "=") for a in extra)]
    if len(tls) == 1:
        print("error: OpenFlow over TLS needs both --ctl-privkey and --ctl-cert (and --ca-certs to check "
              "the switches' certificates)", file=sys.stderr)
        return 2
    return compat.run_ryu_manager([*extra, APP_MODULE])


def _cmd_lab(args: argparse.Namespace, extra: list[str]) -> int:
    from lisp_ryu.lab import cli as lab_cli

    return lab_cli.run(args, extra)


def _cmd_demo(args: argparse.Namespace, extra: list[str]) -> int:
    from lisp_ryu.lab import demo

    keep = args.keep or os.environ.get("KEEP", "0") not in ("", "0")
    return demo.run(args.topology, keep=keep)


def _cmd_check_config(args: argparse.Namespace, extra: list[str]) -> int:
    from lisp_ryu import config

    try:
        cfg = config.load(args.file)
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sites = len(cfg.map_server.sites) if cfg.map_server else 0
    listen = ""
    if cfg.map_server is not None and cfg.map_server.listen is not None:
        host, port = cfg.map_server.listen
        listen = f"; map-server listen {f'[{host}]' if host.version == 6 else host}:{port}"
    print(f"{args.file}: ok ({sites} map-server sites, {len(cfg.xtrs)} xTRs{listen})")
    return 0


def _lab_controller_url() -> list[tuple[str, str]]:
    """The running lab's controller REST API, as its state file records it (for `show` without --url)."""
    from lisp_ryu.lab import state as lab_state

    try:
        state = lab_state.read_state()
    except lab_state.LabError:
        return []
    if state is None or not state.controller_rest:
        return []
    return [(state.controller_rest, f"the lab controller's REST API, from {lab_state.state_path()}")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lisp-ryu",
        description="LISP control plane for Open vSwitch, as a Ryu application.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "controller",
        help="run the xTR controller (ryu-manager with the lisp_ryu app)",
        description="Start Ryu's manager with the lisp_ryu app. Options not listed "
        "here (e.g. --wsapi-port, --ofp-tcp-listen-port, --verbose) go to ryu-manager. "
        "The REST API (/lisp/v1/, OpenAPI at /lisp/v1/openapi.json) listens on --wsapi-host "
        "(default here 127.0.0.1) and --wsapi-port (default 8080), OpenFlow on --ofp-listen-host "
        "(default here 127.0.0.1) and --ofp-tcp-listen-port (default 6653); with --ctl-privkey, "
        "--ctl-cert and --ca-certs, OpenFlow is TLS on --ofp-ssl-listen-port and every switch "
        "must present a certificate signed by --ca-certs.",
    )
    p.add_argument("--config", metavar="FILE", help="lisp-ryu YAML configuration")
    p.set_defaults(func=_cmd_controller, passthrough=True)

    p = sub.add_parser("check-config", help="validate a lisp-ryu YAML configuration")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=_cmd_check_config)

    from lisp_ryu.lab import cli as lab_cli
    from lisp_ryu.glue import mapserver_cli

    lab_cli.add_parser(sub, _cmd_lab)
    mapserver_cli.add_parsers(sub, discover=_lab_controller_url)

    p = sub.add_parser(
        "demo",
        help="bring up a two-site lab, ping through LISP-GPE, tear down",
        description="Bring up the lab from TOPOLOGY, show a ping between sites "
        "through the LISP-GPE tunnel and the decoded LISP header of one packet, "
        "then tear down (unless --keep or KEEP=1).",
    )
    p.add_argument("topology", nargs="?", default="topologies/two-dc.yaml")
    p.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False) and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return int(args.func(args, extra) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
