"""The lab under Mininet with the real control plane: mininet/lisp_topo.py as a user runs it.

Each test runs the script as its own process (root, its own state directory,
name prefix, management subnet and controller port), so Mininet, the
controller and the sites' OVS daemons come and go exactly as for a user,
and checks that nothing of it is left afterwards.
Labs: prefix nm-, 198.19.234.0/24, port 6686 (--no-cli); prefix nc-,
198.19.233.0/24, port 6685 (the CLI session); prefix ns-, 198.19.232.0/24 (static flows);
prefix nr-, 198.19.231.0/24, port 6683 (`mn --custom`).
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lisp_ryu.lab import processes
from lisp_ryu.lab.state import LAB_DIR_ENV, LAB_PREFIX_ENV

from conftest import lab_unavailable, topology_copy

pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(shutil.which("mnexec") is None, reason="mnexec (Debian package mininet) is not installed")]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "mininet" / "lisp_topo.py"
TIMEOUT = 60.0


def script_env(run_dir: Path, prefix: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)  # the controller child process runs this tree's code too
    env[LAB_DIR_ENV] = str(run_dir)
    env[LAB_PREFIX_ENV] = prefix
    return env


def setup(tmp_path: Path, prefix: str, subnet: str, port: int) -> tuple[Path, dict[str, str]]:
    if lab_unavailable():
        pytest.skip(lab_unavailable())
    topology = topology_copy(ROOT / "topologies" / "two-dc.yaml", tmp_path, subnet, port=port)
    return topology, script_env(tmp_path / "run", prefix)


def assert_nothing_left(prefix: str, run_dir: Path) -> None:
    assert processes.objects_with_prefix(prefix) == []
    left = [p.name for p in run_dir.iterdir() if p.name != ".lock"] if run_dir.exists() else []
    assert left == [], left


def sections(out: str) -> dict[str, str]:
    """The self-check's output by heading: '*** map-cache of dc1 before the ping:' -> the text under it."""
    found: dict[str, str] = {}
    for chunk in re.split(r"^\*\*\* ", out, flags=re.M)[1:]:
        head, _, body = chunk.partition("\n")
        found[head.strip()] = body
    return found


def test_no_cli_pings_resolves_moves_and_pings_again(tmp_path):
    topology, env = setup(tmp_path, "nm-", "198.19.234.0/24", 6686)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--no-cli", str(topology)], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    out = proc.stdout + proc.stderr
    try:
        assert proc.returncode == 0, out
        assert time.monotonic() - started < TIMEOUT
        s = sections(out)
        # Mininet started our controller, and OVS at every site says it is connected to it.
        assert "controller connected: dc1 yes, dc2 yes" in s, out
        assert re.search(r"lisp-ryu controller pid \d+, OpenFlow 198\.19\.234\.1:6686", out), out
        # dc1 learned dc2's prefix through Map-Request/Map-Reply, from the ping: not before it.
        before, after = s["map-cache of dc1 before the ping:"], s["map-cache of dc1 after the ping:"]
        assert "0 of 0 entries of xTR dc1" in before and "10.2.0.0/16" not in before, out
        assert re.search(r"^42\s+10\.2\.0\.0/16\s+198\.18\.2\.2\(1/100\)", after, re.M), out
        # The first packet was held and re-injected: the single ping was answered.
        assert "1 received, 0% packet loss" in s["h1 (10.1.0.10, dc1) -> h3 (10.2.0.10, dc2): ping"], out
        # h1 moved to dc2 and answers there: from dc2 itself and from dc1 through dc2's RLOC.
        assert re.search(r"^\*\*\* moved h1 from dc1 port 1 to dc2 port \d+: no link for", out, re.M), out
        assert "1 received, 0% packet loss" in s["h3 (dc2) -> h1 (10.1.0.10, now at dc2): ping"], out
        assert "1 received, 0% packet loss" in s["h2 (dc1) -> h1 (10.1.0.10, now at dc2): ping"], out
        assert re.search(r"^42\s+10\.1\.0\.10/32\s+198\.18\.2\.2\(1/100\)", s["map-cache of dc1 after h1 moved:"],
                         re.M), out
        assert "all checks passed" in s and "FAILED" not in out, out
    finally:
        assert_nothing_left("nm-", tmp_path / "run")


def test_static_flows_flag_runs_without_a_controller(tmp_path):
    topology, env = setup(tmp_path, "ns-", "198.19.232.0/24", 6684)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--static-flows", "--no-cli", str(topology)], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    out = proc.stdout + proc.stderr
    try:
        assert proc.returncode == 0, out
        assert "*** Stopping 0 controllers" in out and "controller connected" not in out, out
        assert "1 received, 0% packet loss" in out, out
    finally:
        assert_nothing_left("ns-", tmp_path / "run")


class Session:
    """Mininet's CLI through a pipe: send one command, read until the next prompt."""

    PROMPT = "mininet> "

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.transcript = ""

    def read_until_prompt(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        got = b""
        while not got.endswith(self.PROMPT.encode()):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no prompt within {timeout} s; transcript:\n{self.transcript}{got.decode()}")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"the CLI exited (rc {self.proc.wait()}); transcript:\n"
                                         f"{self.transcript}{got.decode()}")
                got += chunk
        text = got.decode()[: -len(self.PROMPT)]
        self.transcript += text + self.PROMPT
        return text

    def run(self, command: str, timeout: float = 20.0) -> str:
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        self.transcript += command + "\n"
        return self.read_until_prompt(timeout)

    def close(self) -> int:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b"exit\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
        try:
            rest = self.proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            self.proc.terminate()  # SIGTERM: the script still stops Mininet and tears the lab down
            rest = self.proc.communicate(timeout=30)[0]
        self.transcript += rest.decode()
        return self.proc.returncode


def test_cli_session_ping_mapcache_move(tmp_path):
    topology, env = setup(tmp_path, "nc-", "198.19.233.0/24", 6685)
    session = Session([sys.executable, str(SCRIPT), str(topology)], env)
    try:
        session.read_until_prompt(TIMEOUT / 2)  # built, controller up, every site registered
        assert "10.2.0.0/16" not in session.run("mapcache dc1")
        out = session.run("h1 ping -c1 h3")
        assert "1 received, 0% packet loss" in out, session.transcript
        out = session.run("mapcache dc1")
        assert re.search(r"^42\s+10\.2\.0\.0/16\s+198\.18\.2\.2\(1/100\)", out, re.M), session.transcript
        out = session.run("move h1 dc2")
        assert re.search(r"^moved h1 from dc1 port 1 to dc2 port \d+: no link for", out, re.M), session.transcript
        out = session.run("h3 ping -c1 h1")
        assert "1 received, 0% packet loss" in out, session.transcript
        out = session.run("registrations")
        assert re.search(r"^42\s+10\.1\.0\.10/32\s+dc2\s", out, re.M), session.transcript
        out = session.run("pingall")
        assert "Results: 0% dropped (12/12 received)" in out, session.transcript
        out = session.run("lisp xtrs")
        assert re.search(r"^dc1\s+\S+\s+yes", out, re.M) and re.search(r"^dc2\s+\S+\s+yes", out, re.M), out
        out = session.run("move h1 nowhere")
        assert "move failed" in out and "no site 'nowhere'" in out, session.transcript
    finally:
        rc = session.close()
        assert_nothing_left("nc-", tmp_path / "run")
    assert rc == 0, session.transcript


# `mn` runs mininet.clean.cleanup() after any error, which kills every ping, mnexec and controller
# on the machine by name: the test runs mn with that disabled (it cleans up by its own prefix).
MN_WITHOUT_CLEANUP = """
import runpy, shutil, sys
import mininet.clean
mininet.clean.cleanup = lambda: print("mn: cleanup by name suppressed", file=sys.stderr)
sys.argv[0] = "mn"
runpy.run_path(shutil.which("mn"), run_name="__main__")
"""


@pytest.mark.skipif(shutil.which("mn") is None, reason="mn (Debian package mininet) is not installed")
def test_mn_runner_with_the_custom_file(tmp_path):
    topology, env = setup(tmp_path, "nr-", "198.19.231.0/24", 6683)
    proc = subprocess.run([sys.executable, "-c", MN_WITHOUT_CLEANUP, "--custom", str(SCRIPT),
                           "--topo", f"lisp,{topology}", "--test", "pingall"], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    out = proc.stdout + proc.stderr
    try:
        assert proc.returncode == 0, out
        assert re.search(r"lisp-ryu controller pid \d+, OpenFlow 198\.19\.231\.1:6683", out), out
        assert "Results: 0% dropped (12/12 received)" in out, out
        assert "Caught exception" not in out, out
    finally:
        assert_nothing_left("nr-", tmp_path / "run")
