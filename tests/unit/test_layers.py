"""The import graph of lisp_ryu keeps its layers: imports go one way, with no cycle.

Every import counts, the ones inside functions too: a function-local import that hides
a cycle is still a cycle.  Read from the source (ast), so nothing is imported to check it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lisp_ryu"

#: Layer -> the lisp_ryu layers it may import (itself always allowed).  The glue and the lab
#: sit above everything; the lab is imported by nothing but the top-level command.
ALLOWED = {
    "wire": set(),
    "schema": {"wire"},
    "mapping": {"wire", "schema"},
    "plan": {"wire", "mapping"},
    "effects": {"wire"},
    "ratelimit": set(),
    "config": {"wire", "schema", "mapping"},
    "flows": {"wire", "mapping", "plan"},
    "xtr": {"wire", "mapping", "plan", "effects", "config", "ratelimit", "schema"},
    "mapserver": {"wire", "mapping", "effects", "config", "ratelimit", "schema"},
    "glue": {"wire", "schema", "mapping", "plan", "effects", "ratelimit", "config", "flows", "xtr", "mapserver"},
    "lab": {"wire", "schema", "mapping", "plan", "effects", "ratelimit", "config", "flows", "xtr", "mapserver",
            "glue"},
    "cli": {"glue", "lab", "config", "schema", "wire"},
    "__main__": {"cli"},
    "__init__": set(),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports, at any depth of its code."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.add(sub if sub in MODULES else module)
    return found


GRAPH = nx.DiGraph()
for _name, _path in MODULES.items():
    GRAPH.add_node(_name)
    for _target in _imports(_name, _path):
        GRAPH.add_edge(_name, _target)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_cycle_among_our_modules():
    ours = GRAPH.subgraph(MODULES)
    cycles = list(nx.simple_cycles(ours))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c + [c[0]]) for c in cycles[:5])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layers(module):
    layer = _layer(module)
    allowed = ALLOWED[layer] | {layer}
    wrong = sorted(t for t in GRAPH.successors(module)
                   if t.startswith("lisp_ryu.") and _layer(t) not in allowed)
    assert not wrong, f"{module} ({layer}) may import only {sorted(allowed)}, imports {wrong}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) == "wire"))
def test_wire_imports_only_the_standard_library(module):
    foreign = sorted(t for t in GRAPH.successors(module)
                     if not t.startswith("lisp_ryu.") and t.split(".")[0] not in sys.stdlib_module_names)
    assert not foreign, f"{module} imports {foreign}"


def test_production_imports_no_test_helper():
    offenders = sorted((m, t) for m, t in GRAPH.edges if m in MODULES and t.split(".")[0] in {"support", "tests"})
    assert not offenders


def test_no_module_is_too_long():
    long = sorted((len(p.read_text().splitlines()), m) for m, p in MODULES.items())
    assert long[-1][0] <= 600, f"longest modules: {long[-3:]}"
