"""Random topologies (lisp_ryu/lab/topology_random.py), each brought up with the real controller.

Per seed: every same-tenant pair answers its first ping; packets for an address several
tenants use reach the sender's tenant's host only (counted in the receivers' namespaces);
a random host moves to a random other site and both checks hold again; the controller
reports every switch healthy; teardown leaves nothing.

Which seeds: $LISP_RYU_SEEDS ("3", "0-49", "1,5,9"; default: three seeds, small
topologies for the normal run), and $LISP_RYU_RANDOM_SIZE ("small": 2-3 sites and one
host per tenant and site; "full": 2-8 sites, 1-2 hosts).  `make soak` runs many at full
size; a failure names its seed and the command that replays it.
"""

from __future__ import annotations

import os
import random

import pytest

from lisp_ryu.lab import controller as lab_controller
from lisp_ryu.lab import move as lab_move
from lisp_ryu.lab import topology_random
from support.tenant_checks import first_ping_failures, isolation_failures

from conftest import LabEnv, controller_lab, lab_unavailable

pytestmark = [pytest.mark.lab]
DEFAULT_SEEDS = "3-5"  # three tenants, multihomed sites across routers, three routers
SIZES = {"small": {"max_sites": 3, "max_hosts": 1}, "full": {"max_sites": 8, "max_hosts": 2}}
MANAGEMENT = "198.19.241.0/24"
OF_PORT, REST_PORT = 6712, 8242


def seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out += range(int(lo), int(hi) + 1)
        elif part:
            out.append(int(part))
    return out


SIZE = os.environ.get("LISP_RYU_RANDOM_SIZE", "small")


def replay(seed: int) -> str:
    return (f"make soak SEED={seed}" + ("" if SIZE == "full" else f" SIZE={SIZE}")
            + f"   (the topology: lisp-ryu lab random-topology {seed}"
            + f" --max-sites {SIZES[SIZE]['max_sites']} --max-hosts {SIZES[SIZE]['max_hosts']})")


@pytest.mark.parametrize("seed", seeds(os.environ.get("LISP_RYU_SEEDS", DEFAULT_SEEDS)), ids=lambda s: f"seed{s}")
def test_random_topology(seed, tmp_path, monkeypatch):
    if lab_unavailable():
        pytest.skip(lab_unavailable())
    doc = topology_random.generate(seed, management_subnet=MANAGEMENT, controller_port=OF_PORT, **SIZES[SIZE])
    path = tmp_path / f"random-{seed}.yaml"
    path.write_text(topology_random.dump(doc))
    print(f"seed {seed}: {topology_random.describe(doc)}\nreplay: {replay(seed)}")
    env = LabEnv(monkeypatch, tmp_path / "run", "lz-")
    where = f"seed {seed} ({topology_random.describe(doc)}); replay: {replay(seed)}"
    with controller_lab(env, path, extra_args=("--wsapi-port", str(REST_PORT))) as state:
        try:
            assert first_ping_failures(state) == [], f"first pings failed, {where}"
            assert isolation_failures(state) == [], f"tenants not kept apart, {where}"
            rng = random.Random(seed)
            host = rng.choice(state.hosts)
            to = rng.choice([s for s in state.lisp_sites if s.name != host.site])
            moved = lab_move.move(host.name, to.name)
            print(f"moved {host.name} ({host.ip} iid {host.iid}) from {host.site} to {to.name}")
            assert first_ping_failures(moved) == [], f"first pings failed after {host.name} moved to {to.name}, {where}"
            assert isolation_failures(moved) == [], f"tenants not kept apart after moving {host.name}, {where}"
            health, why = lab_controller.health(moved)
            assert health is not None and health["healthy"], f"controller health {health or why}, {where}"
        except BaseException:
            dump(state)
            raise


def dump(state) -> None:
    """Every site's flows and the controller log's tail, printed for the failure report."""
    from lisp_ryu.lab import running

    for site in state.sites:
        try:
            print(f"--- flows of {site.name}\n{running.ofctl(site.name, 'dump-flows', state=state)}")
        except Exception as exc:  # a site that is gone: say so and go on
            print(f"--- flows of {site.name}: {exc}")
    print(f"--- controller log\n{lab_controller.log_path().read_text(errors='replace')[-6000:]}")
