"""What the tenant lab tests check on a running lab: first pings between same-tenant hosts, and
which host received packets sent to an address that several tenants use.

Receivers are told apart by the kernel's own ICMP counters in each host's
namespace (`/proc/net/snmp`, Icmp InEchos: echo requests that reached that
host; `/proc/net/snmp6`, Icmp6InEchos, for IPv6), not by whether a ping was
answered: a reply from the wrong tenant's host would make ping succeed too.
Every check takes `family` (4, or 6 for the IPv6 addresses of dual-stack hosts).
"""

from __future__ import annotations

from itertools import permutations

from lisp_ryu.lab import running
from lisp_ryu.lab.state import HostState, LabState


def echoes_received(state: LabState, host: str, family: int = 4) -> int:
    """ICMP echo requests that reached `host` (its namespace's Icmp InEchos counter, Icmp6InEchos for IPv6)."""
    if family == 6:
        text = running.exec_in(host, ["cat", "/proc/net/snmp6"], state=state).stdout
        return int(dict(line.split()[:2] for line in text.splitlines() if line.strip())["Icmp6InEchos"])
    text = running.exec_in(host, ["cat", "/proc/net/snmp"], state=state).stdout
    header, values = [line.split()[1:] for line in text.splitlines() if line.startswith("Icmp:")][:2]
    return int(dict(zip(header, values))["InEchos"])


def address(host: HostState, family: int) -> str | None:
    return host.ip if family == 4 else host.ip6


def first_ping(state: LabState, src: str, dst_ip: str, wait: float = 3.0) -> bool:
    """One echo request, the first to this destination: answered or not."""
    out = running.exec_in(src, ["ping", "-n", "-c", "1", "-W", str(wait), dst_ip], state=state, check=False)
    return out.returncode == 0


def same_tenant_pairs(state: LabState, family: int = 4) -> list[tuple[HostState, HostState]]:
    """Every ordered pair of hosts in one instance-ID with an address of `family` each (other addresses:
    a host does not ping itself)."""
    return [(a, b) for a, b in permutations(state.hosts, 2)
            if a.iid == b.iid and address(a, family) and address(b, family) and address(a, family) != address(b, family)]


def first_ping_failures(state: LabState, family: int = 4) -> list[str]:
    """The same-tenant pairs whose very first ping (ping6 for family 6) went unanswered."""
    return [f"{a.name}({a.iid},{a.site}) -> {b.name} {address(b, family)} ({b.site})"
            for a, b in same_tenant_pairs(state, family) if not first_ping(state, a.name, address(b, family))]


def isolation_failures(state: LabState, count: int = 3, family: int = 4) -> list[str]:
    """For each address used by several tenants: pings from a host of each tenant reach its tenant's
    host only (by the receivers' counters); returns what went wrong."""
    problems = []
    by_ip: dict[str, list[HostState]] = {}
    for h in state.hosts:
        if address(h, family):
            by_ip.setdefault(address(h, family), []).append(h)
    for ip, owners in sorted(by_ip.items()):
        if len({h.iid for h in owners}) < 2:
            continue
        for target in owners:
            sender = next((h for h in state.hosts if h.iid == target.iid and address(h, family)
                           and address(h, family) != ip), None)
            if sender is None:
                continue
            before = {h.name: echoes_received(state, h.name, family) for h in owners}
            out = running.exec_in(sender.name, ["ping", "-n", "-c", str(count), "-i", "0.05", "-W", "2", ip],
                                  state=state, check=False)
            after = {h.name: echoes_received(state, h.name, family) for h in owners}
            got = {name: after[name] - before[name] for name in after}
            wrong = {name: n for name, n in got.items() if name != target.name and n}
            if out.returncode != 0 or got[target.name] < count or wrong:
                problems.append(f"{sender.name} (iid {sender.iid}) -> {ip}: meant for {target.name}, "
                                f"received {got} (ping rc {out.returncode})")
    return problems
