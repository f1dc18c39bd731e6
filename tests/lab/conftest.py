"""Fixtures for tests on the real lab (root, OVS, iproute2).

Test labs use their own state directory, name prefix and management subnet,
so they never touch a lab a developer has up (`lr-`, 198.19.0.0/24).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from lisp_ryu.lab import build, processes, running, teardown, state as lab_state

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGIES = ROOT / "topologies"


def lab_unavailable() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, OVS daemons)"
    for tool in ("ovs-vswitchd", "ovsdb-server", "ovs-vsctl", "ip", "ethtool", "tcpdump", "tshark"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "`ip netns` does not work here"
    return None


def pytest_collection_modifyitems(config, items):
    reason = lab_unavailable()
    if reason:
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if item.get_closest_marker("lab") is not None:
                item.add_marker(skip)


def topology_copy(src: Path, dest_dir: Path, management_subnet: str, port: int | None = None) -> Path:
    """The shipped topology with its own management subnet (the one thing a
    lab puts in the root namespace) and controller port, so test labs and
    their controllers never collide with others."""
    doc = yaml.safe_load(src.read_text())
    net = management_subnet.split("/")[0].rsplit(".", 1)[0]
    doc["management"]["subnet"] = management_subnet
    doc["management"]["controller"] = f"{net}.1"
    if port is not None:
        doc["management"]["port"] = port
    path = dest_dir / src.name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def private_lab(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, name: str,
                prefix: str, topology: str, management_subnet: str, port: int | None = None) -> tuple[LabEnv, Path]:
    """What every module's lab starts with: a skip where labs cannot run, then
    a private state directory and name prefix, and a copy of a shipped
    topology with its own management subnet and controller port."""
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp(name)
    env = LabEnv(monkeypatch, tmp / "run", prefix)
    return env, topology_copy(TOPOLOGIES / topology, tmp, management_subnet, port=port)


class LabEnv:
    """Point the lab at a private state directory and name prefix."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, directory: Path, prefix: str):
        self.dir = directory
        self.prefix = prefix
        monkeypatch.setenv(lab_state.LAB_DIR_ENV, str(directory))
        monkeypatch.setenv(lab_state.LAB_PREFIX_ENV, prefix)

    def leftovers(self, pids: list[int] = ()) -> list[str]:
        """Anything of this lab still present: namespaces, root interfaces,
        processes, run directories, the state file."""
        left = processes.objects_with_prefix(self.prefix)
        left += [f"process {p}" for p in pids if processes.process_alive(p)]
        left += [f"file {p}" for p in self.dir.iterdir() if p.name != ".lock"] if self.dir.exists() else []
        return left


@pytest.fixture(scope="module")
def module_monkeypatch():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def two_dc(tmp_path_factory, module_monkeypatch):
    """The two-dc lab with static flows, up once per module."""
    from lisp_ryu.lab import static_flows

    env, topo_file = private_lab(tmp_path_factory, module_monkeypatch, "lab", "lt-", "two-dc.yaml", "198.19.250.0/24")
    st = build.up(topo_file)
    static_flows.install(st)
    yield st, env
    if lab_state.read_state() is not None or env.leftovers():
        teardown.down()


@pytest.fixture
def own_lab(tmp_path, monkeypatch):
    """`own_lab(prefix, management_subnet, topology_name)` -> (LabEnv, topology
    file) for a test that builds its own lab; torn down if the test left it."""
    envs: list[LabEnv] = []

    def make(prefix: str, subnet: str, name: str = "two-dc.yaml"):
        if lab_unavailable():
            pytest.skip(lab_unavailable())
        env = LabEnv(monkeypatch, tmp_path / "run", prefix)
        envs.append(env)
        return env, topology_copy(TOPOLOGIES / name, tmp_path, subnet)

    yield make
    for env in envs:
        if lab_state.read_state() is not None or env.leftovers():
            teardown.down()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so fixtures can dump state when a test failed."""
    outcome = yield
    setattr(item, f"rep_{call.when}", outcome.get_result())


@contextmanager
def controller_lab(env: LabEnv, topology_file: Path, *, log_must_not_say: tuple[str, ...] = (),
                   **start_options) -> Iterator[lab_state.LabState]:
    """A lab driven by the real controller; on the way out the controller log must be clean
    (no exception, no OpenFlow error, nothing in `log_must_not_say`) and teardown must leave
    nothing behind."""
    from lisp_ryu.lab import controller as lab_controller

    state = build.up(topology_file)
    try:
        lab_controller.start(state, **start_options)
        lab_controller.wait_ready(state)
        yield state
        log = lab_controller.log_path().read_text(errors="replace")
        for bad in ("Traceback", "OpenFlow error", *log_must_not_say):
            assert bad not in log, log[-4000:]
    finally:
        teardown.down()
        assert env.leftovers() == []


def dump_lab_on_failure(request: pytest.FixtureRequest, state: lab_state.LabState) -> None:
    """After a failed test: every site's flows and the controller log's tail, for the report."""
    from lisp_ryu.lab import controller as lab_controller

    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for site in state.sites:
            print(f"--- flows of {site.name}\n{running.ofctl(site.name, 'dump-flows', state=state)}")
        print(f"--- controller log\n{lab_controller.log_path().read_text(errors='replace')[-5000:]}")
