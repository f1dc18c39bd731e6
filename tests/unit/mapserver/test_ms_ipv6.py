"""The Map-Server with IPv6 EIDs: negative answers for unregistered space (the widest hole, RFC 9301
§8.1) and policy on IPv6 prefixes.  Real codec bytes in and out; time injected."""

import ipaddress

from lisp_ryu.config import EidPrefixConfig, SiteConfig
from lisp_ryu.mapping.policy import Rule
from lisp_ryu.mapping.sourcedest import record_key
from lisp_ryu.wire import Action, MapReply

from mapserver_helpers import DC1_KEY, DC2_KEY, ETR1, ETR2, ITR, T0, make_core, net, only, site_config
from support import packets



def dual_stack_config(**overrides):
    """The two-dc-dualstack lab's Map-Server: each site its IPv6 /64 and more-specifics anywhere in fd00::/16
    (workloads that move), instance 42."""
    sites = (
        SiteConfig("dc1", DC1_KEY, (EidPrefixConfig(net("fd00:1::/64"), 42, True),
                                    EidPrefixConfig(net("fd00:2::/64"), 42, True))),
        SiteConfig("dc2", DC2_KEY, (EidPrefixConfig(net("fd00:2::/64"), 42, True),
                                    EidPrefixConfig(net("fd00:1::/64"), 42, True))),
    )
    return site_config(sites=sites, **overrides)


def register(core, prefix, rlocs, key=DC1_KEY, source=ETR1, iid=42):
    return core.handle_control(packets.map_register([packets.record(prefix, rlocs, iid=iid, ttl=60)], key,
                                                    proxy=True), source, 4342, T0)


def ask(core, eid, iid=42, source_eid=None):
    payload = packets.map_request_ecm(eid, [ITR], iid=iid, nonce=9, source_port=61000, source_eid=source_eid)
    [(_, reply)] = only(core.handle_control(payload, ITR, 4342, T0 + 1), MapReply)
    [record] = reply.records
    return record


def negative(core, eid, iid=42):
    record = ask(core, eid, iid)
    assert record.locators == ()
    return str(record.eid_prefix), record.ttl, record.action


def lab_core():
    core = make_core(dual_stack_config())
    register(core, "fd00:1::/64", ["198.18.1.2"])
    register(core, "fd00:2::/64", ["198.18.2.2"], key=DC2_KEY, source=ETR2)
    return core


def test_unregistered_ipv6_space_gets_the_widest_hole_around_the_eid():
    core = lab_core()
    # fd00:9:: differs from fd00:1:: and fd00:2:: first in bit 28: nothing configured in fd00:8::/29.
    assert negative(core, "fd00:9::1") == ("[42]fd00:8::/29", 15, Action.NATIVELY_FORWARD)
    assert negative(core, "fd00:0:1::1") == ("[42]fd00::/32", 15, Action.NATIVELY_FORWARD)
    assert negative(core, "2001:db8::1") == ("[42]::/1", 15, Action.NATIVELY_FORWARD)
    assert negative(core, "fe00::1") == ("[42]fe00::/7", 15, Action.NATIVELY_FORWARD)
    # Another instance has no IPv6 configured at all: its whole IPv6 space is one hole.
    assert negative(core, "fd00:1::10", iid=7) == ("[7]::/0", 15, Action.NATIVELY_FORWARD)


def test_the_hole_never_covers_a_configured_prefix_of_the_other_family_or_instance():
    core = make_core()  # dc1: 10.1.0.0/16 and 2001:db8:1::/48 in instance 0
    assert negative(core, "2001:db8:2::1", iid=0) == ("2001:db8:2::/47", 15, Action.NATIVELY_FORWARD)
    assert negative(core, "3000::1", iid=0) == ("3000::/4", 15, Action.NATIVELY_FORWARD)
    assert negative(core, "::ffff:10.1.0.1", iid=0) == ("::/3", 15, Action.NATIVELY_FORWARD)  # not 10.1.0.0/16


def test_configured_but_unregistered_ipv6_prefix_answers_native_forward_for_one_minute():
    core = make_core(dual_stack_config())
    register(core, "fd00:1::/64", ["198.18.1.2"])  # dc2 has not registered fd00:2::/64 yet
    assert negative(core, "fd00:2::10") == ("[42]fd00:2::/64", 1, Action.NATIVELY_FORWARD)


def test_a_moved_ipv6_host_route_is_answered_and_its_neighbours_stay_with_the_prefix():
    core = lab_core()
    register(core, "fd00:1::10/128", ["198.18.2.2"], key=DC2_KEY, source=ETR2)  # h1 moved to dc2
    moved = ask(core, "fd00:1::10")
    assert (str(moved.eid_prefix), [str(loc.address) for loc in moved.locators]) == ("[42]fd00:1::10/128",
                                                                                     ["198.18.2.2"])
    stayed = ask(core, "fd00:1::11")
    # Its neighbours get dc1's registered /64; an ITR's longest match keeps the moved /128 apart.
    assert (str(stayed.eid_prefix), [str(loc.address) for loc in stayed.locators]) == ("[42]fd00:1::/64",
                                                                                       ["198.18.1.2"])


def test_negative_ttl_and_action_come_from_config_for_ipv6_too():
    core = make_core(dual_stack_config(negative_ttl_minutes=5, negative_action="drop"))
    assert negative(core, "fd00:9::1") == ("[42]fd00:8::/29", 5, Action.DROP_NO_REASON)


# ---- policy on IPv6 prefixes -----------------------------------------------------------


def deny6(rule_id="no-dc1-to-dc2", dests=("fd00:2::/64",), sources=("fd00:1::/64",), iid=42, **kw):
    return Rule.from_dict({"id": rule_id, "iid": iid, "destinations": list(dests), "sources": list(sources),
                           "action": "deny", **kw})


def eid_of(record):
    key = record_key(record)
    return str(key) if key is not None else str(record.eid_prefix)


def test_an_ipv6_deny_answers_the_denied_source_with_a_policy_denied_source_dest_reply():
    core = lab_core()
    core.set_rule(deny6(), T0)
    denied = ask(core, "fd00:2::10", source_eid="fd00:1::10")
    assert denied.locators == () and denied.action == Action.DROP_POLICY_DENIED
    assert eid_of(denied) == "[42](fd00:1::/64 -> fd00:2::/64)"
    allowed = ask(core, "fd00:2::10", source_eid="fd00:3::10")
    assert [str(loc.address) for loc in allowed.locators] == ["198.18.2.2"]
    source, dest = eid_of(allowed).removeprefix("[42]").strip("()").split(" -> ")
    assert dest == "fd00:2::/64" and not ipaddress.ip_network(source).overlaps(ipaddress.ip_network("fd00:1::/64"))
    assert ipaddress.ip_network(source).supernet().overlaps(ipaddress.ip_network("fd00:1::/64"))  # the widest


def test_an_ipv6_deny_without_sources_is_a_plain_negative_for_everyone_and_ipv4_is_untouched():
    core = lab_core()
    register(core, "10.2.0.0/16", ["198.18.2.2"], key=DC2_KEY, source=ETR2, iid=0)
    core.set_rule(deny6(rule_id="no-fd00-2", sources=()), T0)
    denied = ask(core, "fd00:2::10", source_eid="fd00:1::10")
    assert (eid_of(denied), denied.action) == ("[42]fd00:2::/64", Action.DROP_POLICY_DENIED)
    assert ask(core, "fd00:1::10").locators  # another IPv6 prefix: still answered


def test_ipv6_rules_round_trip_through_their_dict_form():
    rule = deny6()
    assert Rule.from_dict(rule.to_dict()) == rule
