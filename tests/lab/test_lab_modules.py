"""The lab's modules import on their own, in any order: each one's imports
form no cycle (pure: nothing is built)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["processes", "ovs", "running", "teardown", "build", "move", "static_flows", "controller", "demo", "cli",
           "scenarios.probe", "scenarios.mobility", "scenarios.failover", "mininet_net"]

# Each module first, in a fresh interpreter state: a cycle shows as an ImportError
# naming a partially initialised module.
PROGRAM = """
import importlib, sys
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "lisp_ryu" or m.startswith("lisp_ryu.")]:
        del sys.modules[loaded]
    importlib.import_module("lisp_ryu.lab." + name)
"""


def test_every_lab_module_imports_first():
    proc = subprocess.run([sys.executable, "-c", PROGRAM, *MODULES], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.returncode == 0, proc.stderr
