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


def test_a_switchover_moves_the_routes_while_the_old_interface_still_answers(namespace):
    """The order of a switchover without a deaf moment: the new interface gets the addresses (both
    hold them), each IPv6 one usable once its local route is filed (`wait_usable`), then every
    route moves over in one replace, then the old one gives its addresses up."""
    net = rtnetlink.RouteSocket(namespace)
    try:
        old, new = net.link("old0"), net.link("new0")
        setup = net.setup_of(old.index)
        net.apply_addresses(new.index, setup, "new0")
        assert net.wait_usable(new.index)
        assert "local 2001:db8:9::2 dev new0" in ip("-6", "route", "show", "table", "local")
        assert shown("old0")["addresses"] == ["10.9.0.2/24", "2001:db8:9::2/64"]  # both hold them now
        net.apply_routes(new.index, setup, "new0")
        assert shown("old0")["routes"] == []  # moved, not copied
        net.remove(old.index, setup, "old0")  # its routes are gone already: only the addresses go
    finally:
        net.close()
    assert shown("old0")["addresses"] == []
    moved = shown("new0")
    assert moved["addresses"] == ["10.9.0.2/24", "2001:db8:9::2/64"]
    assert moved["routes"] == ["2001:db8:77::/48 via 2001:db8:9::1 metric 7", "default via 10.9.0.1",
                               "default via 2001:db8:9::1 metric 1024"]
    assert "local 10.9.0.2 dev new0" in ip("route", "show", "table", "local")


def _arp_answered(namespace: str, peer: str, target: str, mac: str) -> bool:
    """Send an ARP request for `target` into `peer` (the far end of the host's veth) and say
    whether an answer comes back out of it within 0.3 s."""
    import socket
    import struct

    from lisp_ryu.glue.netns import run_in_netns

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
        sock.bind((peer, 0))
        return sock

    sock = run_in_netns(namespace, make)
    try:
        asker = bytes.fromhex("020000000009")
        request = (b"\xff" * 6 + asker + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04\x00\x01" + asker
                   + socket.inet_aton("10.9.0.9") + b"\x00" * 6 + socket.inet_aton(target))
        sock.send(request.ljust(60, b"\x00"))
        sock.settimeout(0.05)
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            try:
                frame = sock.recv(2048)
            except socket.timeout:
                continue
            if frame[12:14] == b"\x08\x06" and struct.unpack("!H", frame[20:22])[0] == 2 \
                    and frame[6:12] == bytes.fromhex(mac.replace(":", "")):
                return True
        return False
    finally:
        sock.close()


def carrier(device: str) -> bool:
    return "LOWER_UP" in ip("link", "show", "dev", device)


def test_a_paused_interface_swallows_frames_and_keeps_its_carrier(namespace):
    """A switchover pauses the old interface as a migrated VM's vif is paused: a port of a bridge
    that is down, without addresses or routes, renamed while up.  Its peer (the old site's port)
    keeps its carrier, and what it receives is swallowed: the host does not answer through it
    for the address it now has on the new interface (it would, through any interface, unpaused)."""
    net = rtnetlink.RouteSocket(namespace)
    try:
        old, new = net.link("old0"), net.link("new0")
        assert _arp_answered(namespace, "oldpeer", "10.9.0.2", old.mac), "the control: unpaused, old0 answers"
        setup = net.setup_of(old.index, link_local=True)
        limbo = net.bridge("limbo", "making limbo")
        assert net.bridge("limbo", "again").index == limbo.index  # made once
        net.set_master(old.index, limbo.index, "pausing old0")
        net.remove(old.index, setup, "old0")
        net.rename(old.index, "gone0", "renaming old0 while it is up")
        net.apply(new.index, setup, "new0")
    finally:
        net.close()
    assert carrier("oldpeer") and carrier("gone0")
    paused = shown("gone0")
    assert paused["addresses"] == [] and paused["routes"] == []  # (IPv6 neighbour entries stay, unused)
    assert shown("new0")["addresses"] == ["10.9.0.2/24", "2001:db8:9::2/64"]
    assert not _arp_answered(namespace, "oldpeer", "10.9.0.2", old.mac)
    assert _arp_answered(namespace, "newpeer", "10.9.0.2", new.mac)


def test_an_interface_without_link_local_comes_up_silent_and_takes_the_old_ones(namespace):
    net = rtnetlink.RouteSocket(namespace)
    try:
        old, new = net.link("old0"), net.link("new0")
        net.set_up(new.index, False, "taking new0 down")
        net.no_link_local(new.index, "no link-local on new0")
        net.set_up(new.index, True, "bringing new0 up")
        time.sleep(0.2)
        assert "fe80" not in ip("-6", "addr", "show", "dev", "new0")
        [old_ll] = re.findall(r"inet6 (fe80\S+)", ip("-6", "addr", "show", "dev", "old0"))
        net.apply(new.index, net.setup_of(old.index, link_local=True), "new0")
    finally:
        net.close()
    assert re.findall(r"inet6 (fe80\S+)", ip("-6", "addr", "show", "dev", "new0")) == [old_ll]
