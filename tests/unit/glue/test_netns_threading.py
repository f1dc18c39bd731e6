"""glue/netns.py finds the real `threading` without importing eventlet.

Importing eventlet 0.33 inside a ThreadPoolExecutor's worker left that worker unjoinable, and
`lisp-ryu lab evacuate` (which opens sockets in namespaces from a pool) hung at the pool's
shutdown.  Each case runs in a fresh interpreter: what eventlet does at import is per process.
"""

from __future__ import annotations

import subprocess
import sys

POOL = """
from concurrent.futures import ThreadPoolExecutor
import sys
from lisp_ryu.glue import netns
with ThreadPoolExecutor(max_workers=4) as pool:
    found = list(pool.map(lambda i: netns._os_threading().__name__, range(2)))
print(found, "eventlet" in sys.modules)
"""

PATCHED = """
import eventlet
eventlet.monkey_patch()
from lisp_ryu.glue import netns
real = netns._os_threading()
import threading
print(real is not threading, real.Thread is not threading.Thread)
"""


def run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_pool_of_workers_asking_for_threading_shuts_down_and_imports_no_eventlet():
    assert run(POOL) == "['threading', 'threading'] False"


def test_under_monkey_patching_the_original_threading_is_given():
    assert run(PATCHED) == "True True"
