"""`make bench`: run every bench/bench_*.py, print one table, write bench/results.json.

Each module exposes `run(quick=False) -> {name: figure}` where a figure is
{"value", "unit", "baseline", "ratio", "target"} and the baseline was
measured in the same run: absolute times drift on shared machines, ratios
much less.  `python -m bench [--quick] [NAME ...]` runs a subset.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIRED_KEYS = {"value", "unit", "baseline", "ratio", "target"}


def discover() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([HERE]) if m.name.startswith("bench_"))


def check_figure(name: str, figure: dict) -> None:
    missing = REQUIRED_KEYS - set(figure)
    if missing:
        raise ValueError(f"figure {name} lacks {sorted(missing)}")


def meets(figure: dict) -> str:
    target = figure.get("target")
    if target is None:
        return ""
    # Targets are lower bounds on ratios, except where a figure says otherwise.
    if figure.get("target_is_max"):
        return "ok" if figure["ratio"] <= target else "MISS"
    return "ok" if figure["ratio"] >= target else "MISS"


def print_table(results: dict[str, dict]) -> None:
    """One line per figure; extra keys a module reports (detail) on the line below."""
    width = max((len(k) for k in results), default=10)
    print(f"\n{'figure':<{width}}  {'value':>14} {'unit':<10} {'baseline':>14} {'ratio':>8} {'target':>9}")
    for key in sorted(results):
        f = results[key]
        target = "" if f["target"] is None else ("<=" if f.get("target_is_max") else ">=") + f"{f['target']:g}"
        print(f"{key:<{width}}  {f['value']:>14.4g} {f['unit']:<10} {f['baseline']:>14.4g} "
              f"{f['ratio']:>8.3f} {target:>9} {meets(f)}")
        extras = {k: v for k, v in f.items() if k not in REQUIRED_KEYS | {"target_is_max"}}
        for name, value in extras.items():
            print(f"{'':<{width}}    {name}: {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--out", default=os.path.join(HERE, "results.json"))
    parser.add_argument("names", nargs="*", help="modules to run (e.g. bench_codec); default: all")
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.dirname(HERE))
    results: dict[str, dict] = {}
    failed = []
    for name in args.names or discover():
        started = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            module = importlib.import_module(f"bench.{name}")
            figures = module.run(quick=args.quick)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        for key, figure in figures.items():
            check_figure(key, figure)
            results[key] = figure
        print(f"   ({time.monotonic() - started:.1f} s)", flush=True)

    print_table(results)
    print(f"\n{os.cpu_count()} cores; results in {args.out}")
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump({"cores": os.cpu_count(), "figures": results}, fh, indent=2, sort_keys=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
