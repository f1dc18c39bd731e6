"""What a move copies from the host's old interface to its new one, in both address families.

The lab's hosts are IPv4 only, so the move tests never carry an IPv6
address, route or neighbour entry across.  Here a throwaway namespace (no
OVS) gives one veth IPv4 and IPv6 addresses, routes and neighbour entries
set by hand; `RouteSocket.setup_of` reads them and `apply` gives them to a
second veth, and `ip` must then show the same on both.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from lisp_ryu.lab import rtnetlink

pytestmark = pytest.mark.lab

NAMESPACE = f"rt-copy-{os.getpid()}"
GATEWAY_MAC, NEIGHBOUR_MAC = "02:00:00:00:00:01", "02:00:00:00:00:06"


def ip(*argv: str) -> str:
    return subprocess.run(["ip", "-n", NAMESPACE, *argv], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def namespace():
    subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
    try:
        for device, peer in (("old0", "oldpeer"), ("new0", "newpeer")):
            ip("link", "add", device, "type", "veth", "peer", "name", peer)
            ip("link", "set", device, "up")
            ip("link", "set", peer, "up")
        ip("addr", "add", "10.9.0.2/24", "dev", "old0")
        ip("-6", "addr", "add", "2001:db8:9::2/64", "dev", "old0")  # as a host's: checked for duplicates
        deadline = time.monotonic() + 10
        while "tentative" in ip("-6", "addr", "show", "dev", "old0", "scope", "global"):
            assert time.monotonic() < deadline, "duplicate address detection never finished"
            time.sleep(0.1)
        ip("route", "add", "default", "via", "10.9.0.1", "dev", "old0")
        ip("-6", "route", "add", "default", "via", "2001:db8:9::1", "dev", "old0")
        ip("-6", "route", "add", "2001:db8:77::/48", "via", "2001:db8:9::1", "dev", "old0", "metric", "7")
        ip("neigh", "replace", "10.9.0.1", "lladdr", GATEWAY_MAC, "dev", "old0", "nud", "permanent")
        ip("-6", "neigh", "replace", "2001:db8:9::1", "lladdr", GATEWAY_MAC, "dev", "old0", "nud", "stale",
           "router")
        ip("-6", "neigh", "replace", "2001:db8:9::6", "lladdr", NEIGHBOUR_MAC, "dev", "old0", "nud", "reachable")
        yield NAMESPACE
    finally:
        subprocess.run(["ip", "netns", "del", NAMESPACE], check=False)


def shown(device: str) -> dict[str, list[str]]:
    """What `ip` shows on a device, with the device's own name, link-local and kernel parts left out."""
    addresses = [m.group(1) for m in re.finditer(r"inet6? (\S+) .*scope global", ip("addr", "show", "dev", device))]
    routes = [line.replace(" proto static", "").replace(" pref medium", "").strip()
              for family in ("-4", "-6") for line in ip(family, "route", "show", "dev", device).splitlines()
              if "proto kernel" not in line and not line.startswith(("fe80", "multicast"))]
    neighbours = sorted(re.sub(r" (STALE|REACHABLE|DELAY|PROBE)$", " usable", line.strip())
                        for line in ip("neigh", "show", "dev", device).splitlines() if "fe80" not in line)
    return {"addresses": sorted(addresses), "routes": sorted(routes), "neighbours": neighbours}


def test_apply_copies_addresses_routes_and_neighbours_of_both_families(namespace):
    net = rtnetlink.RouteSocket(namespace)
    try:
        old, new = net.link("old0"), net.link("new0")
        setup = net.setup_of(old.index)
        assert sorted(rtnetlink.describe(m) for m in setup.addresses) == ["10.9.0.2/24", "2001:db8:9::2/64"]
        assert sorted(rtnetlink.describe(m) for m in setup.routes) == [
            "2001:db8:77::/48 via 2001:db8:9::1", "default via 10.9.0.1", "default via 2001:db8:9::1"]
        net.set_up(old.index, False, "taking old0 down")  # as a switchover does: its routes go with it
        net.apply(new.index, setup, "new0")
    finally:
        net.close()
    copied = shown("new0")
    assert copied["addresses"] == ["10.9.0.2/24", "2001:db8:9::2/64"]
    assert copied["routes"] == ["2001:db8:77::/48 via 2001:db8:9::1 metric 7", "default via 10.9.0.1",
                                "default via 2001:db8:9::1 metric 1024"]
    assert copied["neighbours"] == [f"10.9.0.1 lladdr {GATEWAY_MAC} PERMANENT",
                                    f"2001:db8:9::1 lladdr {GATEWAY_MAC} router usable",
                                    f"2001:db8:9::6 lladdr {NEIGHBOUR_MAC} usable"]
    # The copy is usable at once: no duplicate address detection holds the IPv6 address back.
    [line] = [line for line in ip("-6", "addr", "show", "dev", "new0").splitlines() if "2001:db8:9::2" in line]
    assert "tentative" not in line
