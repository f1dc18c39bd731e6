"""The pure policy engine: rule order, matching on who asks, uniform regions, overrides, validation."""

import ipaddress

import pytest

from lisp_ryu.mapping.policy import (
    Policy,
    PolicyError,
    RlocOverride,
    Rule,
    StaticMapping,
    Verdict,
)
from lisp_ryu.wire import Locator

ip = ipaddress.ip_address
net = ipaddress.ip_network


def rule(rule_id, dests, action="deny", iid=42, sources=(), itrs=(), priority=100):
    return Rule.from_dict({"id": rule_id, "iid": iid, "destinations": list(dests), "action": action,
                           "sources": list(sources), "itr_rlocs": list(itrs), "priority": priority})


def test_no_rule_allows_and_region_is_everything():
    decision = Policy().decide(42, ip("10.1.0.10"), ip("198.18.1.2"), ip("10.2.0.10"))
    assert decision.verdict is Verdict.ALLOW and decision.rule is None
    assert decision.region == net("0.0.0.0/0")


def test_deny_depends_on_the_source_eid():
    policy = Policy().with_rule(rule("d", ["10.2.0.0/16"], sources=["10.1.0.0/16"]))
    assert policy.decide(42, ip("10.1.0.10"), None, ip("10.2.0.10")).denied
    assert not policy.decide(42, ip("10.3.0.10"), None, ip("10.2.0.10")).denied
    # An unknown source never matches a source-restricted rule.
    assert not policy.decide(42, None, None, ip("10.2.0.10")).denied


def test_deny_depends_on_the_itr_rloc():
    policy = Policy().with_rule(rule("d", ["10.2.0.0/16"], itrs=["198.18.1.2"]))
    assert policy.decide(42, None, ip("198.18.1.2"), ip("10.2.0.10")).denied
    assert not policy.decide(42, None, ip("198.18.3.2"), ip("10.2.0.10")).denied


def test_instance_ids_are_separate_tenants():
    policy = Policy().with_rule(rule("d", ["10.0.0.0/24"], iid=1))
    assert policy.decide(1, None, None, ip("10.0.0.5")).denied
    assert not policy.decide(2, None, None, ip("10.0.0.5")).denied


def test_first_match_by_priority_then_id():
    allow = rule("allow-h3", ["10.2.0.10/32"], action="allow", priority=10)
    deny = rule("deny-dc2", ["10.2.0.0/16"], priority=20)
    policy = Policy().with_rule(deny).with_rule(allow)
    assert [r.id for r in policy.rules] == ["allow-h3", "deny-dc2"]
    assert policy.decide(42, None, None, ip("10.2.0.10")).verdict is Verdict.ALLOW
    assert policy.decide(42, None, None, ip("10.2.0.11")).rule == "deny-dc2"
    # Swap the priorities: the broader deny now comes first and wins even for the host.
    policy = policy.with_rule(rule("allow-h3", ["10.2.0.10/32"], action="allow", priority=30))
    assert policy.decide(42, None, None, ip("10.2.0.10")).denied
    # Equal priority: the id orders.
    same = Policy().with_rule(rule("b", ["10.2.0.0/16"], action="allow")).with_rule(rule("a", ["10.2.0.0/16"]))
    assert same.decide(42, None, None, ip("10.2.0.1")).rule == "a"


def test_region_never_spans_a_more_specific_rule_destination():
    policy = Policy().with_rule(rule("d", ["10.2.0.10/32"]))
    region = policy.decide(42, None, None, ip("10.2.0.11")).region
    assert ip("10.2.0.11") in region and ip("10.2.0.10") not in region
    assert region == net("10.2.0.11/32")  # .10 and .11 differ in the last bit only
    assert policy.region(42, ip("10.2.0.200")) == net("10.2.0.128/25")
    assert policy.region(42, ip("10.2.0.10")) == net("10.2.0.10/32")
    # Inside a rule destination, the region excludes inner destinations of other rules.
    policy = policy.with_rule(rule("w", ["10.2.0.0/16"], action="allow"))
    assert policy.region(42, ip("10.2.0.11")) == net("10.2.0.11/32")
    assert policy.region(42, ip("10.2.128.1")) == net("10.2.128.0/17")


def test_rule_replace_and_remove_rebuild_the_index():
    policy = Policy().with_rule(rule("d", ["10.2.0.0/16"]))
    policy = policy.with_rule(rule("d", ["10.3.0.0/16"]))
    assert len(policy.rules) == 1
    assert not policy.decide(42, None, None, ip("10.2.0.1")).denied
    assert policy.decide(42, None, None, ip("10.3.0.1")).denied
    assert Policy().with_rule(rule("d", ["10.2.0.0/16"])).without_rule("d").empty


def test_overrides_rloc_beats_site():
    policy = (Policy()
              .with_override(RlocOverride.from_dict({"id": "drain", "rloc": "198.18.3.2", "weight": 0}))
              .with_override(RlocOverride.from_dict({"id": "dc3", "site": "dc3", "priority": 5})))
    locators = (Locator(ip("198.18.3.2"), 1, 50), Locator(ip("198.18.4.2"), 1, 50))
    adjusted = policy.adjust(locators, "dc3")
    assert [(str(l.address), l.priority, l.weight) for l in adjusted] == [("198.18.3.2", 1, 0),
                                                                          ("198.18.4.2", 5, 50)]
    other_site = policy.adjust(locators, "dc1")
    assert [(l.priority, l.weight) for l in other_site] == [(1, 0), (1, 50)]
    # Untouched locators are the very same objects (the Map-Server's fast path relies on it).
    assert Policy().adjust(locators, "dc3")[0] is locators[0]


def test_two_overrides_for_one_rloc_conflict():
    policy = Policy().with_override(RlocOverride.from_dict({"id": "a", "rloc": "198.18.3.2", "weight": 0}))
    with pytest.raises(PolicyError) as exc:
        policy.with_override(RlocOverride.from_dict({"id": "b", "rloc": "198.18.3.2", "weight": 10}))
    assert exc.value.field == "rloc"
    # Replacing the same id is fine.
    policy.with_override(RlocOverride.from_dict({"id": "a", "rloc": "198.18.3.2", "weight": 10}))


@pytest.mark.parametrize("body, field", [
    ({"iid": 42, "destinations": ["10.2.0.0/16"], "action": "deny"}, "id"),
    ({"id": "x", "destinations": ["10.2.0.0/16"], "action": "deny"}, "iid"),
    ({"id": "x", "iid": 1 << 24, "destinations": ["10.2.0.0/16"], "action": "deny"}, "iid"),
    ({"id": "x", "iid": 42, "destinations": [], "action": "deny"}, "destinations"),
    ({"id": "x", "iid": 42, "destinations": ["10.2.0.1/16"], "action": "deny"}, "destinations[0]"),
    ({"id": "x", "iid": 42, "destinations": ["10.2.0.0/16"], "action": "block"}, "action"),
    ({"id": "x", "iid": 42, "destinations": ["10.2.0.0/16"], "action": "deny", "sources": ["nope"]}, "sources[0]"),
    ({"id": "x", "iid": 42, "destinations": ["10.2.0.0/16"], "action": "deny", "priority": -1}, "priority"),
    ({"id": "x y", "iid": 42, "destinations": ["10.2.0.0/16"], "action": "deny"}, "id"),
    ({"id": "x", "iid": 42, "destinations": ["10.2.0.0/16"], "action": "deny", "colour": 1}, "colour"),
    ({"id": "x", "iid": True, "destinations": ["10.2.0.0/16"], "action": "deny"}, "iid"),
])
def test_rule_validation_names_the_field(body, field):
    with pytest.raises(PolicyError) as exc:
        Rule.from_dict(body)
    assert exc.value.field == field


@pytest.mark.parametrize("body, field", [
    ({"id": "o", "weight": 0}, "rloc"),
    ({"id": "o", "rloc": "198.18.3.2", "site": "dc3", "weight": 0}, "rloc"),
    ({"id": "o", "rloc": "198.18.3.2"}, "weight"),
    ({"id": "o", "rloc": "198.18.3.2", "weight": 256}, "weight"),
    ({"id": "o", "rloc": "198.18.3.999", "weight": 1}, "rloc"),
])
def test_override_validation_names_the_field(body, field):
    with pytest.raises(PolicyError) as exc:
        RlocOverride.from_dict(body)
    assert exc.value.field == field


@pytest.mark.parametrize("body, field", [
    ({"iid": 0, "prefix": "192.0.2.0/24"}, "rlocs"),
    ({"iid": 0, "prefix": "192.0.2.0/24", "rlocs": []}, "rlocs"),
    ({"iid": 0, "prefix": "192.0.2.0/24", "rlocs": [{"priority": 1}]}, "rlocs[0].address"),
    ({"iid": 0, "prefix": "192.0.2.0/24", "rlocs": [{"address": "198.18.1.2", "weight": 300}]}, "rlocs[0].weight"),
    ({"iid": 0, "prefix": "192.0.2.0/24", "rlocs": [{"address": "198.18.1.2"}, {"address": "198.18.1.2"}]},
     "rlocs"),
    ({"prefix": "192.0.2.0/24", "rlocs": [{"address": "198.18.1.2"}]}, "iid"),
    ({"iid": 0, "prefix": "192.0.2.1/24", "rlocs": [{"address": "198.18.1.2"}]}, "prefix"),
])
def test_static_mapping_validation_names_the_field(body, field):
    with pytest.raises(PolicyError) as exc:
        StaticMapping.from_dict(body)
    assert exc.value.field == field


def test_round_trip_through_dicts():
    r = rule("d", ["10.2.0.0/16", "10.2.0.0/16", "2001:db8::/32"], sources=["10.1.0.0/16"], itrs=["198.18.1.2"])
    assert Rule.from_dict(r.to_dict()) == r
    assert r.destinations == (net("10.2.0.0/16"), net("2001:db8::/32"))  # duplicates folded, sorted
    o = RlocOverride.from_dict({"id": "o", "site": "dc3", "priority": 2})
    assert RlocOverride.from_dict({k: v for k, v in o.to_dict().items() if v is not None}) == o
    m = StaticMapping.from_dict({"iid": 7, "prefix": "192.0.2.0/24", "rlocs": [{"address": "198.18.1.2"}]})
    assert StaticMapping.from_dict(m.to_dict()) == m
    assert [str(l.address) for l in m.locators()] == ["198.18.1.2"]


# --------------------------------------------------------------------------- source-specific answers


def test_source_region_is_set_only_when_the_verdict_can_depend_on_the_source():
    plain = Policy().with_rule(rule("d", ["10.2.0.0/16"]))
    assert plain.decide(42, ip("10.1.0.10"), None, ip("10.2.0.10")).source_region is None
    by_source = Policy().with_rule(rule("d", ["10.2.0.0/16"], sources=["10.1.0.10/32"]))
    assert by_source.decide(42, ip("10.1.0.10"), None, ip("10.2.0.10")).source_region == net("10.1.0.10/32")
    # Outside the rule's destinations no rule is evaluated: plain.
    assert by_source.decide(42, ip("10.1.0.10"), None, ip("10.3.0.1")).source_region is None
    # No source EID: nothing to key on.
    assert by_source.decide(42, None, None, ip("10.2.0.10")).source_region is None


def test_source_region_is_the_widest_prefix_every_source_group_contains_or_misses():
    policy = Policy().with_rule(rule("d", ["10.2.0.0/16"], sources=["10.1.0.10/32", "10.1.8.0/21"]))
    cases = {
        "10.1.0.11": "10.1.0.11/32",  # the denied host's sibling
        "10.1.0.200": "10.1.0.128/25",
        "10.1.9.1": "10.1.8.0/21",  # inside a group: the group itself
        "10.1.200.1": "10.1.128.0/17",
        "10.3.0.1": "10.2.0.0/15",
        "192.0.2.1": "128.0.0.0/1",
    }
    for source, region in cases.items():
        decision = policy.decide(42, ip(source), None, ip("10.2.0.10"))
        assert decision.source_region == net(region), source
        region_net = net(region)
        step = max(1, region_net.num_addresses // 7)
        for offset in range(0, region_net.num_addresses, step):  # the verdict is uniform inside the region
            other = region_net.network_address + offset
            assert policy.decide(42, other, None, ip("10.2.0.10")).verdict is decision.verdict, (source, other)


def test_source_groups_after_the_deciding_rule_or_for_another_itr_do_not_split_answers():
    first = rule("all", ["10.2.0.0/16"], action="allow", priority=10)
    later = rule("h1", ["10.2.0.0/16"], sources=["10.1.0.10/32"], priority=20)
    assert Policy().with_rule(first).with_rule(later).decide(
        42, ip("10.1.0.10"), None, ip("10.2.0.10")).source_region is None
    other_itr = rule("h1", ["10.2.0.0/16"], sources=["10.1.0.10/32"], itrs=["198.18.3.2"])
    policy = Policy().with_rule(other_itr)
    assert policy.decide(42, ip("10.1.0.10"), ip("198.18.1.2"), ip("10.2.0.10")).source_region is None
    assert policy.decide(42, ip("10.1.0.10"), ip("198.18.3.2"), ip("10.2.0.10")).source_region == net("10.1.0.10/32")
    # Source groups of the other family cannot match this source.
    v6 = Policy().with_rule(rule("v6", ["10.2.0.0/16"], sources=["2001:db8::/32"]))
    assert v6.decide(42, ip("10.1.0.10"), None, ip("10.2.0.10")).source_region is None


def test_an_earlier_source_rule_makes_a_later_plain_verdict_source_specific():
    policy = (Policy().with_rule(rule("h1", ["10.2.0.0/16"], action="allow", sources=["10.1.0.10/32"], priority=10))
              .with_rule(rule("rest", ["10.2.0.0/16"], priority=20)))
    h1 = policy.decide(42, ip("10.1.0.10"), None, ip("10.2.0.10"))
    h2 = policy.decide(42, ip("10.1.0.11"), None, ip("10.2.0.10"))
    assert (h1.verdict, h1.source_region) == (Verdict.ALLOW, net("10.1.0.10/32"))
    assert (h2.verdict, h2.source_region) == (Verdict.DENY, net("10.1.0.11/32"))
