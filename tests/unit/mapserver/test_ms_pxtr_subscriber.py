"""A subscriber that never registers (a proxy-ITR) gets signed publications when its xTR-ID is bound in config."""

import ipaddress
from dataclasses import replace

import pytest
import yaml

from lisp_ryu import config
from lisp_ryu.config import SiteConfig
from lisp_ryu.wire import AuthResult, MapNotify, check_authentication

from mapserver_helpers import DC1_KEY, ETR1, ITR, T0, acked, make_core, only, site_config
from support import packets

PX_KEY = "px-secret"
PX_XTR_ID = 0x762F3B20149E873D2BDEFFC5C403A07E


def subscribe(core, eid, now, nonce=100):
    payload = packets.map_request_ecm(eid, [ITR], iid=42, nonce=nonce, source_port=61000, subscribe=True,
                                      xtr_id=PX_XTR_ID, site_id=3)
    return acked(core, core.handle_control(payload, ITR, 4342, now), now)


@pytest.mark.parametrize("bound", [True, False])
def test_publications_to_a_bound_pxtr_are_signed_with_its_key(bound):
    cfg = site_config()
    if bound:
        cfg = replace(cfg, sites=cfg.sites + (SiteConfig("px", PX_KEY, (), xtr_ids=(PX_XTR_ID,)),))
    core = make_core(cfg)
    core.handle_control(packets.map_register([packets.record("10.10.0.0/16", ["198.18.1.1"], iid=42)], DC1_KEY, proxy=True),
                        ETR1, 4342, T0)
    [(confirm, _)] = only(subscribe(core, "10.10.2.3", T0 + 1), MapNotify)
    # A host route moves in: the subscriber is told.
    effects = core.handle_control(
        packets.map_register([packets.record("10.10.2.3/32", ["198.18.1.9"], iid=42)], DC1_KEY, proxy=True),
        ipaddress.ip_address("198.18.1.9"), 4342, T0 + 2)
    [(publication, _)] = [(e, m) for e, m in only(effects, MapNotify) if e.destination == ITR]
    want = AuthResult.OK if bound else AuthResult.NO_AUTHENTICATION
    for notify in (confirm, publication):
        assert check_authentication(notify.payload, PX_KEY) is want


def test_xtr_ids_in_the_config():
    doc = yaml.safe_load("""
map_server:
  sites:
    - {name: dc1, key: k1, eid_prefixes: [{prefix: 10.1.0.0/16}]}
    - {name: px, key: k2, xtr_ids: ["762f3b20149e873d2bdeffc5c403a07e"]}
""")
    (_, px) = config.parse(doc).map_server.sites
    assert px.eid_prefixes == () and px.xtr_ids == (PX_XTR_ID,)
    bad = yaml.safe_load(yaml.safe_dump(doc))
    bad["map_server"]["sites"][1]["xtr_ids"] = ["not-hex"]
    with pytest.raises(config.ConfigError, match=r"map_server\.sites\[1\]\.xtr_ids\[0\]: expected an xTR-ID"):
        config.parse(bad)
    bad["map_server"]["sites"][1]["xtr_ids"] = []
    with pytest.raises(config.ConfigError, match=r"sites\[1\]\.eid_prefixes: a site needs at least one EID prefix"):
        config.parse(bad)
    twice = yaml.safe_load(yaml.safe_dump(doc))
    twice["map_server"]["sites"][0]["xtr_ids"] = ["762f3b20149e873d2bdeffc5c403a07e"]
    with pytest.raises(config.ConfigError, match=r"sites\[1\]\.xtr_ids\[0\]: xTR-ID 762f.* already bound to site dc1"):
        config.parse(twice)
