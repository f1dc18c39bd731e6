"""Shared set-up for the Map-Server core tests: a config, a clock value, and a decoder for effects."""

from __future__ import annotations

import ipaddress
import itertools

from lisp_ryu.config import EidPrefixConfig, MapServerConfig, SiteConfig
from lisp_ryu.effects import SendControl
from lisp_ryu.mapserver import MapServer
from lisp_ryu.wire import decode_message

T0 = 1_700_000_000.0  # wall-clock seconds, like the glue passes

DC1_KEY = "dc1-secret"
DC2_KEY = "dc2-secret"
ETR1 = ipaddress.ip_address("198.18.1.1")
ETR1B = ipaddress.ip_address("198.18.1.2")
ETR2 = ipaddress.ip_address("198.18.2.1")
ITR = ipaddress.ip_address("198.18.9.9")


def net(text: str):
    return ipaddress.ip_network(text)


def site_config(**overrides) -> MapServerConfig:
    """dc1 owns 10.1.0.0/16 (exact only) and dc2 10.2.0.0/16; both accept more-specifics of the
    shared dynamic-EID range 10.10.0.0/16 in instance 42, so workloads can move between them."""
    sites = (
        SiteConfig("dc1", DC1_KEY, (
            EidPrefixConfig(net("10.1.0.0/16"), 0, False),
            EidPrefixConfig(net("10.10.0.0/16"), 42, True),
            EidPrefixConfig(net("2001:db8:1::/48"), 0, False),
        )),
        SiteConfig("dc2", DC2_KEY, (
            EidPrefixConfig(net("10.2.0.0/16"), 0, False),
            EidPrefixConfig(net("10.10.0.0/16"), 42, True),
        )),
    )
    fields = dict(sites=sites, notify_retries=3, notify_retry_interval=1.0, registration_ttl=180.0,
                  rate_limit_per_source=1_000_000.0)
    fields.update(overrides)
    return MapServerConfig(**fields)


def make_core(config: MapServerConfig | None = None, store=None, now: float = T0) -> MapServer:
    counter = itertools.count(0x5000)
    return MapServer(config or site_config(), nonces=lambda: next(counter), now=now, store=store)


def decoded(effects: list[SendControl]) -> list[tuple[SendControl, object]]:
    """Every effect with its payload decoded by the codec (an undecodable payload fails the test)."""
    return [(effect, decode_message(effect.payload)) for effect in effects]


def only(effects: list[SendControl], kind: type) -> list[tuple[SendControl, object]]:
    return [(e, m) for e, m in decoded(effects) if isinstance(m, kind)]


def acked(core: MapServer, effects: list[SendControl], now: float) -> list[SendControl]:
    """`effects`, after acknowledging each Map-Notify in them from where it went, as a live xTR does
    (a subscription takes effect on the Ack of its confirmation), signed with the key it was signed with."""
    from lisp_ryu.wire import AuthResult, MapNotify, check_authentication
    from support import packets

    keys = [site.key for site in core.config.sites]
    for effect, notify in only(effects, MapNotify):
        key = next((k for k in keys if check_authentication(effect.payload, k) is AuthResult.OK), None)
        core.handle_control(packets.map_notify_ack(notify.nonce, notify.records, key), effect.destination, 4342, now)
    return effects
