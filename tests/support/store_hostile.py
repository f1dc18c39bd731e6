"""Shared set-up of the hostile persistence tests (tests/hostile/test_store_*.py): a one-site core
whose registrations are numbered, so a test can say how many of them came back."""

from __future__ import annotations

import ipaddress
import itertools

from lisp_ryu.config import EidPrefixConfig, MapServerConfig, SiteConfig
from lisp_ryu.mapserver import MapServer
from lisp_ryu.wire import MapNotify, decode_message

from support import packets

T0 = 1_700_000_000.0
KEY = "site-secret"
ETR = ipaddress.ip_address("198.18.1.1")
TTL = 3600.0


def config() -> MapServerConfig:
    site = SiteConfig("site", KEY, (EidPrefixConfig(ipaddress.ip_network("10.0.0.0/8"), 0, True),))
    return MapServerConfig(sites=(site,), registration_ttl=TTL, rate_limit_per_source=1e9)


def core(store, now: float = T0) -> MapServer:
    counter = itertools.count(0x5000)
    return MapServer(config(), nonces=lambda: next(counter), now=now, store=store)


def eid(n: int) -> str:
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}/32"


def rloc(n: int) -> str:
    return f"198.18.{n >> 8 & 255}.{n & 255}"


def register(server: MapServer, n: int, now: float = T0) -> bool:
    """Register EID number `n`; True when the server acknowledged it with a Map-Notify."""
    payload = packets.map_register([packets.record(eid(n), [rloc(n)])], KEY, nonce=n + 1, want_notify=True)
    effects = server.handle_control(payload, ETR, 4342, now)
    return any(isinstance(decode_message(e.payload), MapNotify) for e in effects)


def change(server: MapServer, n: int, version: int, now: float = T0) -> None:
    """Register EID number `n` at another RLOC (`version`): a change, journalled (an identical refresh is not)."""
    payload = packets.map_register([packets.record(eid(n), [rloc(1000 + version)])], KEY, nonce=version + 1)
    server.handle_control(payload, ETR, 4342, now)


def registered(server: MapServer, count: int) -> int:
    """How many of EIDs 0..count-1 are answered with their own RLOC."""
    found = 0
    for n in range(count):
        record = server.lookup(0, ipaddress.ip_address(eid(n).split("/")[0]))
        if [str(loc.address) for loc in record.locators] == [rloc(n)]:
            found += 1
    return found
