"""Set-up for the hostile pub/sub, reflection and flood tests: a two-site Map-Server core and its datagrams."""

from __future__ import annotations

import ipaddress
import itertools

from lisp_ryu.config import EidPrefixConfig, MapServerConfig, SiteConfig
from lisp_ryu.mapserver import MapServer
from lisp_ryu.wire import MapNotify, decode_message

from support import packets

T0 = 1_700_000_000.0
KEY = "dc1-secret"
ETR = ipaddress.ip_address("198.18.1.1")
ITR = ipaddress.ip_address("198.18.9.9")
VICTIM = ipaddress.ip_address("203.0.113.7")
XTR_ID = 0xFEED


def net(text: str):
    return ipaddress.ip_network(text)


def config(**overrides) -> MapServerConfig:
    """dc1 owns 10.1.0.0/16 and 10.10.0.0/16 (more-specifics accepted); its xTR is bound by xTR-ID."""
    site = SiteConfig("dc1", KEY, (EidPrefixConfig(net("10.1.0.0/16"), 0, False),
                                   EidPrefixConfig(net("10.10.0.0/16"), 0, True)))
    fields = dict(sites=(site,), notify_retries=3, notify_retry_interval=1.0, registration_ttl=180.0)
    fields.update(overrides)
    return MapServerConfig(**fields)


def make_core(store=None, **overrides) -> MapServer:
    counter = itertools.count(0x5000)
    return MapServer(config(**overrides), nonces=lambda: next(counter), now=T0, store=store)


def register(core: MapServer, prefix: str, rlocs, now: float = T0, source=ETR, **kw):
    payload = packets.map_register([packets.record(prefix, rlocs)], KEY, proxy=True, **kw)
    return core.handle_control(payload, source, 4342, now)


def subscribe(core: MapServer, eid: str, now: float, *, itr=ITR, source=None, xtr_id=XTR_ID, nonce=100,
              port=4342):
    payload = packets.map_request_ecm(eid, [itr], nonce=nonce, subscribe=True, xtr_id=xtr_id, site_id=3,
                                      source_port=port)
    return core.handle_control(payload, source or itr, 4342, now)


def notifies(effects) -> list:
    return [(e, m) for e in effects for m in [decode_message(e.payload)] if isinstance(m, MapNotify)]


def ack_all(core: MapServer, effects, now: float, key: str | None = KEY) -> None:
    """Acknowledge every Map-Notify in `effects` from where it went, as a live xTR does."""
    for effect, notify in notifies(effects):
        core.handle_control(packets.map_notify_ack(notify.nonce, notify.records, key), effect.destination, 4342, now)
