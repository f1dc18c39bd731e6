"""Paged views: a hard cap on `limit`, and an `after` cursor that holds while the table changes."""

from __future__ import annotations

import ipaddress
import json
import random

import pytest

from lisp_ryu.mapping.table import PrefixTable
from lisp_ryu.mapserver import views
from lisp_ryu.wire import MapNotify, decode_message

from mapserver_helpers import DC1_KEY, ETR1, ITR, T0, make_core
from support import packets


def _sort_key(iid, net):
    return (iid, net.version, int(net.network_address), net.prefixlen)


def _random_net(rng: random.Random):
    if rng.random() < 0.7:
        plen = rng.choice([0, 1, 8, 16, 24, 31, 32, 32, 32])
        return ipaddress.ip_network((rng.getrandbits(32) >> (32 - plen) << (32 - plen) if plen else 0, plen))
    plen = rng.choice([0, 32, 48, 64, 127, 128])
    return ipaddress.ip_network((rng.getrandbits(128) >> (128 - plen) << (128 - plen) if plen else 0, plen))


@pytest.mark.parametrize("seed", range(20))
def test_items_after_is_the_tail_of_the_iteration_for_any_cursor(seed):
    rng = random.Random(seed)
    table: PrefixTable[int] = PrefixTable()
    for n in range(rng.randint(0, 200)):
        table.insert(rng.choice([0, 0, 7, 1 << 20]), _random_net(rng), n)
    everything = list(table)
    assert [_sort_key(i, n) for i, n, _ in everything] == sorted(_sort_key(i, n) for i, n, _ in everything)
    cursors = [(i, n) for i, n, _ in rng.sample(everything, min(10, len(everything)))]
    cursors += [(rng.choice([0, 3, 7, 9]), _random_net(rng)) for _ in range(20)]  # mostly not stored
    for iid, net in cursors:
        expected = [item for item in everything if _sort_key(item[0], item[1]) > _sort_key(iid, net)]
        assert list(table.items_after(iid, net)) == expected


def _registered(count: int, iid: int = 42):
    core = make_core()
    hosts = [ipaddress.ip_address(0x0A0A0000 + n * 37 % 65536) for n in range(count)]
    for start in range(0, count, 50):
        records = [packets.record(f"{h}/32", [str(ETR1)], iid=iid) for h in hosts[start:start + 50]]
        core.handle_control(packets.map_register(records, DC1_KEY, proxy=True), ETR1, 4342, T0)
    assert core.registration_count == count
    return core


def _walk(core, limit, between=lambda page: None, name="registrations"):
    """Every page from the first, following `next`; `between` may change the table between pages."""
    page = getattr(views, name)(core, T0, limit)
    pages = [page]
    while page["next"]:
        between(page)
        page = getattr(views, name)(core, T0, limit, page["next"])
        pages.append(page)
        assert len(pages) < 10_000
    return pages


def test_limit_is_capped_and_defaults_small():
    core = _registered(1200)
    assert len(views.registrations(core, T0, 10_000_000)["registrations"]) == views.MAX_LIMIT == 1000
    assert len(views.registrations(core, T0)["registrations"]) == views.DEFAULT_LIMIT
    page = views.registrations(core, T0, "10000000")
    assert page["limit"] == 1000 and page["next"] and page["total"] == 1200
    with pytest.raises(ValueError):
        views.registrations(core, T0, -1)
    assert views.registrations(core, T0, 0) == {"total": 1200, "limit": 0, "registrations": [], "next": None}


def test_following_next_visits_each_prefix_once_in_order():
    core = _registered(230)
    pages = _walk(core, 7)
    rows = [row["prefix"] for page in pages for row in page["registrations"]]
    assert len(rows) == len(set(rows)) == 230
    assert rows == [row["prefix"] for row in views.registrations(core, T0, 1000)["registrations"]]
    assert pages[-1]["next"] is None and all(len(p["registrations"]) == 7 for p in pages[:-1])


def test_the_cursor_holds_while_prefixes_come_and_go():
    core = _registered(200)
    first = {row["prefix"] for row in views.registrations(core, T0, 1000)["registrations"]}
    gone, added = set(), set()
    rng = random.Random(5)

    def churn(page):
        last = page["registrations"][-1]["prefix"]
        # withdraw the row the cursor names and a later one, register a new later and earlier one
        for prefix in (last, rng.choice(sorted(first - gone))):
            record = packets.record(prefix, [str(ETR1)], iid=42, ttl=0)  # ttl 0 withdraws (RFC 9301)
            core.handle_control(packets.map_register([record], DC1_KEY, proxy=True), ETR1, 4342, T0)
            gone.add(prefix)
        for _ in range(2):
            new = f"10.10.{rng.randrange(256)}.{rng.randrange(256)}/32"
            core.handle_control(packets.map_register([packets.record(new, [str(ETR1)], iid=42)], DC1_KEY,
                                                     proxy=True), ETR1, 4342, T0)
            added.add(new)

    pages = _walk(core, 9, churn)
    seen = [row["prefix"] for page in pages for row in page["registrations"]]
    assert len(seen) == len(set(seen)), "a row came twice"
    assert first - gone <= set(seen), "a prefix registered all along was skipped"


def test_a_malformed_cursor_is_a_value_error():
    core = _registered(3)
    for bad in ("10.0.0.0/8", "[x]10.0.0.0/8", "[1]10.0.0.1/8", "[99999999999]10.0.0.0/8", "[0]1.2.3.4/33",
                "[0]10.0.0.0/8,00", "[0]" + "1" * 200):
        with pytest.raises(ValueError):
            views.registrations(core, T0, 5, bad)
    with pytest.raises(ValueError):
        views.subscriptions(core, T0, 5, "[0]10.0.0.0/8")  # a subscription cursor names the xTR-ID too


def test_streamed_page_is_the_same_json_as_the_page():
    core = _registered(130)
    for limit, after in ((1000, None), (50, None), (50, "[42]10.10.0.0/16"), (0, None), (7, "[42]10.10.255.255/32")):
        streamed = json.loads(b"".join(views.page_chunks("registrations", core, T0, limit, after, step=8)))
        assert streamed == views.registrations(core, T0, limit, after), (limit, after)
    whole = json.loads(b"".join(views.page_chunks("registrations", core, T0, 130, None, step=13)))
    assert whole["next"] is None and len(whole["registrations"]) == 130


def test_subscriptions_page_by_prefix_then_xtr_id():
    core = make_core()
    core.handle_control(packets.map_register([packets.record("10.1.0.0/16", [str(ETR1)])], DC1_KEY, proxy=True),
                        ETR1, 4342, T0)
    for n, xtr_id in enumerate([0x30, 0x10, 0x20, 0x50, 0x40]):
        payload = packets.map_request_ecm("10.1.2.3", [ITR], nonce=100 + n, source_port=61000, subscribe=True,
                                          xtr_id=xtr_id, site_id=3)
        for effect in core.handle_control(payload, ITR, 4342, T0 + 1):
            notify = decode_message(effect.payload)
            if isinstance(notify, MapNotify):  # acknowledge, in case a subscription waits for it
                core.handle_control(packets.map_notify_ack(notify.nonce, notify.records, DC1_KEY),
                                    effect.destination, 4342, T0 + 1)
    assert core.subscription_count == 5
    pages = _walk(core, 2, name="subscriptions")
    assert [row["xtr_id"][-2:] for page in pages for row in page["subscriptions"]] == ["10", "20", "30", "40", "50"]
    prefix = pages[0]["subscriptions"][1]["prefix"]  # the asked /32 or the answered /16: pubsub decides
    assert pages[0]["next"] == f"[0]{prefix}," + "0" * 30 + "20"
    streamed = json.loads(b"".join(views.page_chunks("subscriptions", core, T0 + 1, 2, pages[0]["next"], step=1)))
    assert streamed == views.subscriptions(core, T0 + 1, 2, pages[0]["next"])


def test_sites_streamed_is_the_same_json():
    core = _registered(130)
    assert json.loads(b"".join(views.sites_chunks(core))) == views.sites(core)
    assert {s["name"]: s["registered_prefixes"] for s in views.sites(core)["sites"]} == {"dc1": 130, "dc2": 0}
