"""The per-peer BFD ports of one xTR switch, kept in step with its map-cache over OVSDB.

OpenFlow cannot create ports, and the peers are learned at run time (every
RLOC the map-cache holds), so the controller writes them into the switch's
OVSDB (`xtrs[].ovsdb`, what `ovs-vsctl --db=` takes) with `ovs-vsctl`, which
ships wherever OVS does.  A real deployment needs the same reach that OVN or
OpenDaylight need: the switch's ovsdb-server listening on a socket the
controller can open (`ptcp:`/`pssl:`, or a unix socket on the same host).

One port per (our RLOC, peer RLOC) of the same family: a fixed-remote
LISP-GPE port (`exts=gpe dst_port=4341 packet_type=legacy_l3`, `local_ip`
and `remote_ip` fixed, `key` the fixed VNI `BFD_KEY` so the peer's data,
which carries its instance-ID, keeps arriving on the flow-based port: why,
in lisp_ryu/flows/failover.py) running BFD, named `lf` + 8 hex digits of a
hash of the pair and key (a port of another kind left by an older
controller is replaced), numbered from `failover.port_base` (ofport_request, so the
flows can name a port before OVS made it), and marked in external_ids
(`lisp-ryu-xtr`, `lisp-ryu-local`, `lisp-ryu-remote`) so the controller
finds and removes exactly its own ports, also after a restart.

Which ports: both ends of a BFD session need a port towards each other
(DESIGN.md §9).  An xTR needs one towards every RLOC of its map-cache and
towards every ITR that probes it (a foreign lisp-ryu xTR that sends to us
but to which we never send).  Between the xTRs one controller drives
(`BfdMesh`), a port is made at both ends as soon as either end needs it, so a
session never waits for the reverse traffic; with `failover.mesh` (the
default) every such xTR keeps one towards each other from its first push:
adding a tunnel port stalls a userspace ovs-vswitchd for milliseconds (it
dropped a few ms of a site's traffic, and tunnel packets reached the host's
kernel instead of the tunnel, measured in the lab), and a workload's first
move between two sites that never talked paid it at both ends, right at the
switchover.  A port no longer needed stays `failover.grace` seconds (a
mapping that flaps keeps its session), then goes.
A port towards a peer that runs no BFD never comes up: its fast-failover
bucket is dead and traffic takes the last bucket, the flow-based port that
probing governs, as without failover.

`ports(peers)` is bookkeeping only and returns at once (the flows are pushed
against the numbers it returns); OVSDB is written in the background
(`spawn`), one transaction per change, and a port whose number OVS did not
grant triggers `changed()` so the flows follow the real number.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import subprocess
import zlib
import time
from typing import Callable, Iterable, Sequence

from lisp_ryu.config import XtrConfig
from lisp_ryu.flows.failover import BFD_KEY
from lisp_ryu.plan import FailoverPort

LOG = logging.getLogger("lisp_ryu")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MARK = "lisp-ryu-xtr"
Pair = tuple[IPAddress, IPAddress]


def port_name(local: IPAddress, remote: IPAddress) -> str:
    """At most 15 characters (an interface name), stable for the pair."""
    return f"lf{zlib.crc32(f'{local}>{remote}/{BFD_KEY}'.encode()):08x}"


def run_vsctl(db: str, args: Sequence[str], timeout: float = 10.0) -> str:
    out = subprocess.run(["ovs-vsctl", f"--db={db}", f"--timeout={int(timeout)}", *args], capture_output=True,
                         text=True, timeout=timeout + 5, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise OSError(f"ovs-vsctl {' '.join(args[:3])}...: {out.stderr.strip() or out.returncode}")
    return out.stdout


def bridge_of(xtr: XtrConfig, vsctl: Callable[[str, Sequence[str]], str]) -> str:
    """The name of the bridge with the xTR's datapath-id in its OVSDB (ValueError: none, or several)."""
    found = vsctl(xtr.ovsdb, ["--bare", "--columns=name", "find", "bridge", f"datapath_id={xtr.dpid:016x}"]).split()
    if len(found) != 1:
        raise ValueError(f"no single bridge with datapath_id {xtr.dpid:016x} (found {found})")
    return found[0]


PACKET_IN_QUEUE = 512  # OVS's most (Controller.controller_queue_size); its default is 100


def raise_packet_in_queue(xtr: XtrConfig, vsctl: Callable[[str, Sequence[str]], str] = run_vsctl) -> bool:
    """Let the switch queue PACKET_IN_QUEUE packet-ins for its controllers (OVS's default, 100,
    drops the gratuitous ARPs of a burst of arrivals, a rack evacuated, while the controller
    catches up: a workload whose only announcement was dropped stays unlearned until it sends
    again).  Once per switch at start, where the controller may write the switch's OVSDB
    (`xtrs[].ovsdb`); False, with a warning, when it cannot."""
    if xtr.ovsdb is None:
        return False
    try:
        vsctl(xtr.ovsdb, ["set", "controller", bridge_of(xtr, vsctl), f"controller_queue_size={PACKET_IN_QUEUE}"])
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        LOG.warning("xTR %s: cannot raise the switch's packet-in queue to %d in %s: %s", xtr.name,
                    PACKET_IN_QUEUE, xtr.ovsdb, exc)
        return False
    LOG.info("xTR %s: the switch queues up to %d packet-ins for its controller", xtr.name, PACKET_IN_QUEUE)
    return True


def add_port_args(xtr: XtrConfig, bridge: str, local: IPAddress, remote: IPAddress, ofport: int) -> list[str]:
    """The ovs-vsctl words that add the BFD port (local, remote) to `bridge`, numbered `ofport`."""
    name, bfd = port_name(local, remote), xtr.failover.bfd
    return ["--", "add-port", bridge, name, "--", "set", "interface", name, "type=vxlan",
            f"ofport_request={ofport}", "options:exts=gpe", f"options:dst_port={xtr.tunnel_udp_port}",
            "options:packet_type=legacy_l3", f"options:key={BFD_KEY}", f"options:local_ip={local}",
            f"options:remote_ip={remote}", "bfd:enable=true", f"bfd:min_tx={bfd.min_tx}",
            f"bfd:min_rx={bfd.min_rx}", f"bfd:mult={bfd.mult}",
            f"external_ids:{MARK}={xtr.name}", f"external_ids:lisp-ryu-local={local}",
            f"external_ids:lisp-ryu-remote={remote}"]


class BfdMesh:
    """The xTRs of one controller: a port between two of them is made at both ends when either needs it."""

    def __init__(self) -> None:
        self.members: list[FailoverPorts] = []
        self.version = 0  # counts changes of what any member needs: what `reciprocal` reads

    def rlocs(self) -> set[IPAddress]:
        return {local for member in self.members for local in member.locals}

    def reciprocal(self, member: FailoverPorts) -> set[Pair]:
        """The ports `member` keeps because another of our xTRs needs one towards it."""
        return {(remote, local) for other in self.members if other is not member
                for (local, remote) in other.needed if remote in member.locals}

    def needs_changed(self, member: FailoverPorts, pairs: set[Pair]) -> None:
        """`member` started or stopped needing `pairs`: an xTR at their far end that lacks a port
        back is told to recompute (a push).  One that has it already, or that is losing a
        need, waits for its next push: a port no longer needed stays its grace anyway, and a
        move, whose every millisecond is an outage, must not pay for pushes that change nothing."""
        self.version += 1
        remotes = {remote for _, remote in pairs}
        for other in self.members:
            if other is not member and remotes & set(other.locals) and self.reciprocal(other) - other.assigned.keys():
                other.spawn(other.changed)


class FailoverPorts:
    """What BFD ports one xTR's switch should have, and the background writer that makes it so."""

    def __init__(self, xtr: XtrConfig, *, spawn: Callable[[Callable[[], None]], object] = lambda f: f(),
                 changed: Callable[[], None] = lambda: None,
                 vsctl: Callable[[str, Sequence[str]], str] = run_vsctl,
                 mesh: BfdMesh | None = None, clock: Callable[[], float] = time.monotonic):
        if xtr.ovsdb is None:
            raise ValueError(f"xTR {xtr.name}: failover needs its ovsdb")
        self.xtr = xtr
        self.db = xtr.ovsdb
        self.spawn = spawn
        self.changed = changed
        self.vsctl = vsctl
        self.locals = tuple(r.address for r in xtr.rlocs)
        taken = {xtr.tunnel_port, *(p.port for p in xtr.host_ports), *(h.port for h in xtr.hosts)}
        if xtr.native_port is not None:
            taken.add(xtr.native_port)
        self._reserved = frozenset(taken)
        self.assigned: dict[Pair, int] = {}  # the ports we want, with their OpenFlow numbers
        self.needed: set[Pair] = set()  # what our own map-cache and probers need (not the mesh's)
        self.last_needed: dict[Pair, float] = {}  # when each wanted port was last needed
        self._kept: set[Pair] = set()  # needed at the last `ports` (the others are in their grace)
        self.grace = xtr.failover.grace
        self.clock = clock
        self.mesh = mesh
        if mesh is not None:
            mesh.members.append(self)
            mesh.version += 1
        # (peers, probers, the mesh's version, when a grace ends, what `ports` answered): every push
        # asks, and a move's pushes (three in a row) must not pay for the same answer three times.
        self._made: tuple | None = None
        self._confirmed = 0.0  # when `_kept` was last known to be what is needed
        self._busy = False
        self._dirty = False
        self.bridge: str | None = None
        self.errors = 0
        self._loaded = False

    # ---- bookkeeping (synchronous, pure but for the background write it schedules)

    def ports(self, peers: Iterable[IPAddress], now: float | None = None,
              probers: Iterable[IPAddress] = ()) -> tuple[FailoverPort, ...]:
        """The ports for `peers` (the plan's: map-cache RLOCs and probers), the mesh's (with
        `failover.mesh`, every other xTR of ours), and those in their grace; numbers kept while
        wanted.  A peer among `probers` (there only because it probes us) that is one of our own
        xTRs needs nothing of its own: the mesh gives it the port back exactly while it needs one."""
        if not self._loaded:
            self._load()
        now = self.clock() if now is None else now
        peers, probers = frozenset(peers), frozenset(probers)
        made = self._made
        if made is not None and made[0] == self._memo_key(peers, probers) and now < made[1]:
            self._confirmed = now  # what was kept is still needed now
            return made[2]  # nothing it depends on changed, no grace ended
        ours = self.mesh.rlocs() if self.mesh is not None else set()
        skip = {p for p in probers if p in ours}
        wanted = set(peers) - skip
        if self.mesh is not None and self.xtr.failover.mesh:
            wanted |= ours - set(self.locals)  # every other xTR of ours, from the start
        own = {(local, remote) for remote in wanted for local in self.locals
               if local.version == remote.version and local != remote}
        moved, self.needed = own ^ self.needed, own
        for pair in self._kept:  # needed until the last answer that still held
            self.last_needed[pair] = self._confirmed
        self._kept = own | (self.mesh.reciprocal(self) if self.mesh is not None else set())
        self._confirmed = now
        for pair in self._kept:
            self.last_needed[pair] = now
        for pair, since in list(self.last_needed.items()):
            if pair not in self._kept and now - since >= self.grace:
                del self.last_needed[pair]
        order = {local: i for i, local in enumerate(self.locals)}
        want = sorted(self.last_needed, key=lambda p: (p[1].version, int(p[1]), order.get(p[0], len(order))))
        before = dict(self.assigned)
        for pair in list(self.assigned):
            if pair not in self.last_needed:
                del self.assigned[pair]
        used = set(self.assigned.values()) | self._reserved
        number = self.xtr.failover.port_base
        for pair in want:
            if pair in self.assigned:
                continue
            while number in used:
                number += 1
            self.assigned[pair] = number
            used.add(number)
        if self.assigned != before:
            self.sync()
        if moved and self.mesh is not None:
            self.mesh.needs_changed(self, moved)
        answer = self.current()
        expiry = self.next_expiry()
        # Keyed after its own `needs_changed`: that bumps the mesh's version, and must not void this answer.
        self._made = (self._memo_key(peers, probers), math.inf if expiry is None else expiry, answer)
        return answer

    def _memo_key(self, peers: frozenset, probers: frozenset) -> tuple:
        """What `ports`' answer depends on besides time: the peers, the probers, the mesh's needs."""
        return peers, probers, self.mesh.version if self.mesh is not None else 0

    def expire(self, now: float | None = None) -> bool:
        """Drop the ports whose grace is over (the needs as at the last `ports`): True if any went."""
        before = set(self.assigned)
        self.ports({remote for _, remote in self.needed}, now)
        return set(self.assigned) != before

    def next_expiry(self) -> float | None:
        """When (on `clock`) a port kept only by its grace should go: the next push then drops it."""
        return min((since + self.grace for pair, since in self.last_needed.items() if pair not in self._kept),
                   default=None)

    def _load(self) -> None:
        """Once, before the first push: the ports an earlier controller left keep their numbers,
        so the first flows after a restart already name the right ports."""
        self._loaded = True
        try:
            found = self.existing_pairs()
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            self.errors += 1
            LOG.warning("xTR %s: cannot read the BFD ports in %s: %s", self.xtr.name, self.db, exc)
            return
        for pair, ofport in found.items():
            if pair[0] in self.locals and ofport > 0:
                self.assigned[pair] = ofport
                self.last_needed[pair] = self.clock()  # a grace, while the map-cache fills again

    def existing_pairs(self) -> dict[Pair, int]:
        """Our ports on the switch as (local, remote) -> OpenFlow number, from their external_ids."""
        out = self.vsctl(self.db, ["--format=json", "--columns=ofport,external_ids", "find", "interface",
                                   f"external_ids:{MARK}={self.xtr.name}"])
        pairs = {}
        for ofport, ids in (json.loads(out).get("data", []) if out.strip() else []):
            ids = dict(ids[1]) if isinstance(ids, list) and ids and ids[0] == "map" else {}
            try:
                pair = (ipaddress.ip_address(ids["lisp-ryu-local"]), ipaddress.ip_address(ids["lisp-ryu-remote"]))
            except (KeyError, ValueError):
                continue
            pairs[pair] = ofport if isinstance(ofport, int) else -1
        return pairs

    def current(self) -> tuple[FailoverPort, ...]:
        return tuple(FailoverPort(local, remote, ofport) for (local, remote), ofport
                     in sorted(self.assigned.items(), key=lambda kv: kv[1]))

    # ---- writing OVSDB (in the background)

    def sync(self) -> None:
        """Bring the switch's ports in line with `assigned`, soon; one writer at a time."""
        if self._busy:
            self._dirty = True
            return
        self._busy = True
        self.spawn(self._sync_loop)

    def _sync_loop(self) -> None:
        try:
            while True:
                self._dirty = False
                try:
                    self._sync_once()
                except (OSError, subprocess.SubprocessError, ValueError) as exc:
                    self.errors += 1
                    LOG.warning("xTR %s: cannot update the BFD ports in %s: %s", self.xtr.name, self.db, exc)
                if not self._dirty:
                    return
        finally:
            self._busy = False

    def _bridge(self) -> str:
        if self.bridge is None:
            self.bridge = bridge_of(self.xtr, self.vsctl)
        return self.bridge

    def existing(self) -> dict[str, int]:
        """Our ports on the switch: name -> OpenFlow number (-1 while OVS has not numbered it)."""
        out = self.vsctl(self.db, ["--bare", "--columns=name,ofport", "--format=csv", "--no-headings",
                                   "find", "interface", f"external_ids:{MARK}={self.xtr.name}"])
        ports = {}
        for line in out.splitlines():
            name, _, ofport = line.partition(",")
            if name:
                ports[name.strip()] = int(ofport.strip() or -1) if ofport.strip().lstrip("-").isdigit() else -1
        return ports

    def _sync_once(self) -> None:
        bridge = self._bridge()
        have = self.existing()
        want = {port_name(local, remote): (local, remote, ofport) for (local, remote), ofport in self.assigned.items()}
        # A port of ours already there keeps its number (a controller restart): adopt it.
        adopted = False
        for name, (local, remote, ofport) in want.items():
            # (Only while still wanted: a push may have changed `assigned` while we waited for OVSDB.)
            if name in have and have[name] > 0 and have[name] != ofport and (local, remote) in self.assigned:
                self.assigned[(local, remote)] = have[name]
                self._made = None
                adopted = True
        args: list[str] = []
        for name in sorted(have.keys() - want.keys()):
            args += ["--", "--if-exists", "del-port", bridge, name]
        for name, (local, remote, ofport) in sorted(want.items()):
            if name in have:
                continue
            args += add_port_args(self.xtr, bridge, local, remote, ofport)
        if args:
            self.vsctl(self.db, args)
            added = sum(1 for n in want if n not in have)
            removed = len(have.keys() - want.keys())
            LOG.info("xTR %s: BFD ports: %d added, %d removed (%s)", self.xtr.name, added, removed,
                     ", ".join(f"{r}:{p}" for (_, r), p in sorted(self.assigned.items(), key=lambda kv: kv[1])))
            # OVS may not grant a requested number (taken by a port we do not know): follow what it gave.
            have = self.existing()
            for name, (local, remote, ofport) in want.items():
                got = have.get(name, -1)
                if got > 0 and got != ofport and (local, remote) in self.assigned:
                    LOG.warning("xTR %s: BFD port %s got OpenFlow port %d, not %d", self.xtr.name, name, got, ofport)
                    self.assigned[(local, remote)] = got
                    self._made = None
                    adopted = True
        if adopted:
            self.changed()
