"""A private lab for one benchmark: its own directory, name prefix, management subnet and
controller port, so benchmarks never collide with a developer's lab or each other."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import yaml

from lisp_ryu.lab import controller as lab_controller
from lisp_ryu.lab.build import up
from lisp_ryu.lab.processes import objects_with_prefix
from lisp_ryu.lab.teardown import down
from lisp_ryu.lab import state as lab_state

TOPOLOGIES = Path(__file__).resolve().parents[1] / "topologies"


@contextmanager
def isolated_lab(topology: Path, prefix: str, management_subnet: str, port: int,
                 edit: Callable[[Path], object] | None = None) -> Iterator[lab_state.LabState]:
    """`up` of a copy of `topology` (changed by `edit(path)` if given); torn down,
    controller included, on every exit path, and the environment restored."""
    saved = {k: os.environ.get(k) for k in (lab_state.LAB_DIR_ENV, lab_state.LAB_PREFIX_ENV)}
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # short: OVS unix socket paths
    try:
        os.environ[lab_state.LAB_DIR_ENV] = str(tmp / "run")
        os.environ[lab_state.LAB_PREFIX_ENV] = prefix
        doc = yaml.safe_load(topology.read_text())
        net = management_subnet.split("/")[0].rsplit(".", 1)[0]
        doc["management"] = {"subnet": management_subnet, "controller": f"{net}.1", "port": port}
        topo_file = tmp / topology.name
        topo_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        if edit is not None:
            edit(topo_file)
        if objects_with_prefix(prefix):
            down()  # an earlier run crashed: its objects go first
        state = up(topo_file)
        try:
            yield state
        finally:
            lab_controller.stop()
            down()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(tmp, ignore_errors=True)
