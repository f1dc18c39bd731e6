"""The Map-Server with policy: answers per requester, publications on policy change, static
mappings, tenants, persistence.  Real codec bytes in and out; time injected."""

import ipaddress

from lisp_ryu.config import EidPrefixConfig, MapServerConfig, SiteConfig
from lisp_ryu.mapping.policy import RlocOverride, Rule, StaticMapping
from lisp_ryu.mapping.sourcedest import record_key
from lisp_ryu.mapserver import MemoryStore
from lisp_ryu.mapserver.pubsub import MAX_SOURCES_PER_SUBSCRIPTION
from lisp_ryu.wire import Action, EncapsulatedControlMessage, MapNotify, MapReply, decode_message

from mapserver_helpers import DC1_KEY, DC2_KEY, ETR1, ETR2, ITR, T0, acked, make_core, net, only
from support import packets

ip = ipaddress.ip_address
XTR_A, XTR_B = 0xA, 0xB
ITR_B = ip("198.18.8.8")


def register(core, prefix, rlocs, key=DC1_KEY, source=ETR1, now=T0, iid=0, proxy=True, **kw):
    return core.handle_control(packets.map_register([packets.record(prefix, rlocs, iid=iid, **kw)], key,
                                                    proxy=proxy), source, 4342, now)


def request(core, eid, source_eid=None, itr=ITR, iid=0, now=T0 + 1, nonce=7, subscribe=False, xtr_id=None):
    payload = packets.map_request_ecm(eid, [itr], iid=iid, nonce=nonce, source_port=61000, subscribe=subscribe,
                                      xtr_id=xtr_id, site_id=1 if xtr_id else None, source_eid=source_eid)
    effects = core.handle_control(payload, itr, 4342, now)
    return acked(core, effects, now) if subscribe else effects


def reply_record(effects):
    [(_, reply)] = only(effects, MapReply)
    [record] = reply.records
    return record


def deny(rule_id="deny", dests=("10.2.0.0/16",), sources=("10.1.0.0/16",), iid=0, **kw):
    return Rule.from_dict({"id": rule_id, "iid": iid, "destinations": list(dests), "sources": list(sources),
                           "action": "deny", **kw})


def eid_of(record):
    """A record's EID as text: "10.2.0.0/16", or "(10.1.0.0/16 -> 10.2.0.0/16)" for a Source/Dest key."""
    key = record_key(record)
    return str(key) if key is not None else str(record.eid_prefix)


def rlocs_of(record):
    return [(str(loc.address), loc.priority, loc.weight) for loc in record.locators]


def test_deny_answers_the_denied_source_with_a_policy_denied_negative_reply():
    core = make_core()
    register(core, "10.2.0.0/16", ["198.18.2.1"], key=DC2_KEY, source=ETR2)
    core.set_rule(deny(), T0)
    denied = reply_record(request(core, "10.2.0.10", source_eid="10.1.0.10"))
    assert denied.locators == () and denied.action == Action.DROP_POLICY_DENIED
    # The verdict depends on the source: the answer is keyed by (source group, destination).
    assert eid_of(denied) == "(10.1.0.0/16 -> 10.2.0.0/16)"
    assert denied.ttl == core.config.negative_ttl_minutes
    allowed = reply_record(request(core, "10.2.0.10", source_eid="10.3.0.10"))
    assert rlocs_of(allowed) == [("198.18.2.1", 1, 100)]
    # ... and so is the allowed one, for the widest source prefix that misses the denied group.
    assert eid_of(allowed) == "(10.2.0.0/15 -> 10.2.0.0/16)"
    assert core.counters["sent.map_reply_policy_denied"] == 1


def test_a_shaped_answer_is_given_by_the_map_server_not_forwarded_to_the_etr():
    core = make_core()
    register(core, "10.2.0.0/16", ["198.18.2.1"], key=DC2_KEY, source=ETR2, proxy=False)
    # No policy in the way: forwarded to the ETR, unchanged.
    [forwarded] = request(core, "10.2.0.10", source_eid="10.3.0.10")
    assert forwarded.destination == ETR2
    assert isinstance(decode_message(forwarded.payload), EncapsulatedControlMessage)
    core.set_rule(deny(), T0)
    denied = reply_record(request(core, "10.2.0.10", source_eid="10.1.0.10"))
    assert denied.action == Action.DROP_POLICY_DENIED
    # An allowed requester is answered by the Map-Server too: its answer is source-specific.
    allowed = reply_record(request(core, "10.2.0.10", source_eid="10.3.0.10"))
    assert eid_of(allowed) == "(10.2.0.0/15 -> 10.2.0.0/16)" and rlocs_of(allowed) == [("198.18.2.1", 1, 100)]
    # A requester without a source EID cannot get a source-specific answer: forwarded as before.
    [forwarded] = request(core, "10.2.0.10")
    assert forwarded.destination == ETR2
    core.set_override(RlocOverride.from_dict({"id": "w", "rloc": "198.18.2.1", "weight": 7}), T0)
    overridden = reply_record(request(core, "10.2.0.10", source_eid="10.3.0.10"))
    assert rlocs_of(overridden) == [("198.18.2.1", 1, 7)]


def test_deny_added_and_removed_reaches_the_subscriber_at_once():
    core = make_core()
    register(core, "10.2.0.0/16", ["198.18.2.1"], key=DC2_KEY, source=ETR2)
    request(core, "10.2.0.10", source_eid="10.1.0.10", subscribe=True, xtr_id=XTR_A, nonce=100)
    request(core, "10.2.0.10", source_eid="10.3.0.10", itr=ITR_B, subscribe=True, xtr_id=XTR_B, nonce=200)
    [sub_a] = [s for s in core.subscriptions() if s.xtr_id == XTR_A]
    assert sub_a.source_eids == (ip("10.1.0.10"),)

    effects = core.set_rule(deny(), T0 + 5)
    # Both answers become source-specific: each subscriber hears of it, the plain prefix withdrawn first.
    told = {e.destination: (e, m) for e, m in only(effects, MapNotify)}
    notify_effect, notify = told[ITR]
    # (unkeyed subscriber: its confirmation carried a nonce of ours, the next one follows it)
    assert (notify_effect.destination, notify_effect.port, notify.nonce) == (ITR, 61000, sub_a.nonce + 1)
    withdraw, record = notify.records
    assert (eid_of(withdraw), withdraw.ttl) == ("10.2.0.0/16", 0)
    assert (eid_of(record), record.locators, record.action) == ("(10.1.0.0/16 -> 10.2.0.0/16)", (),
                                                               Action.DROP_POLICY_DENIED)
    assert record.ttl > 0
    _, notify_b = told[ITR_B]
    assert eid_of(notify_b.records[-1]) == "(10.2.0.0/15 -> 10.2.0.0/16)" and notify_b.records[-1].locators

    effects = core.remove_rule("deny", T0 + 10)
    told = {e.destination: m for e, m in only(effects, MapNotify)}
    assert told[ITR].nonce == sub_a.nonce + 2
    withdraw, record = told[ITR].records
    assert (eid_of(withdraw), withdraw.ttl) == ("(10.1.0.0/16 -> 10.2.0.0/16)", 0)
    assert eid_of(record) == "10.2.0.0/16" and rlocs_of(record) == [("198.18.2.1", 1, 100)]
    assert core.counters["notify.policy"] == 4
    # A change that leaves every answer as it was notifies nobody.
    assert only(core.set_rule(deny("other", dests=("10.3.0.0/16",), sources=()), T0 + 11), MapNotify) == []


def test_registration_change_is_published_per_subscriber():
    core = make_core()
    register(core, "10.2.0.0/16", ["198.18.2.1"], key=DC2_KEY, source=ETR2)
    core.set_rule(deny(), T0)
    request(core, "10.2.0.10", source_eid="10.1.0.10", subscribe=True, xtr_id=XTR_A, nonce=100)
    request(core, "10.2.0.10", source_eid="10.3.0.10", itr=ITR_B, subscribe=True, xtr_id=XTR_B, nonce=200)
    effects = register(core, "10.2.0.0/16", ["198.18.2.9"], key=DC2_KEY, source=ETR2, now=T0 + 20)
    told = {e.destination: m.records[0] for e, m in only(effects, MapNotify)}
    assert told[ITR].action == Action.DROP_POLICY_DENIED and told[ITR].locators == ()
    assert rlocs_of(told[ITR_B]) == [("198.18.2.9", 1, 100)]


def test_a_re_resolution_without_source_eid_keeps_the_subscribers_source():
    core = make_core()
    register(core, "10.2.0.0/16", ["198.18.2.1"], key=DC2_KEY, source=ETR2)
    core.set_rule(deny(), T0)
    request(core, "10.2.0.10", source_eid="10.1.0.10", subscribe=True, xtr_id=XTR_A, nonce=100)
    again = reply_record(request(core, "10.2.0.10", subscribe=True, xtr_id=XTR_A, nonce=300, now=T0 + 30))
    assert again.action == Action.DROP_POLICY_DENIED
    [sub] = core.subscriptions()
    assert sub.source_eids == (ip("10.1.0.10"),)


def test_a_deny_reaches_every_host_behind_the_subscribing_itr():
    """h1 (denied group) and h3 (allowed) sit behind one ITR, which subscribed once for both:
    the deny must reach h1's entry as well as h3's, not only the host that asked last."""
    core = make_core()
    register(core, "10.2.0.0/16", ["198.18.2.1"], key=DC2_KEY, source=ETR2)
    request(core, "10.2.0.10", source_eid="10.1.0.10", subscribe=True, xtr_id=XTR_A, nonce=100)
    request(core, "10.2.0.10", source_eid="10.3.0.10", subscribe=True, xtr_id=XTR_A, nonce=101, now=T0 + 2)
    [sub] = core.subscriptions()
    assert sub.source_eids == (ip("10.1.0.10"), ip("10.3.0.10"))

    [(_, notify)] = only(core.set_rule(deny(), T0 + 5), MapNotify)
    withdraw, denied, allowed = notify.records
    assert (eid_of(withdraw), withdraw.ttl) == ("10.2.0.0/16", 0)
    assert (eid_of(denied), denied.action) == ("(10.1.0.0/16 -> 10.2.0.0/16)", Action.DROP_POLICY_DENIED)
    assert eid_of(allowed) == "(10.2.0.0/15 -> 10.2.0.0/16)" and rlocs_of(allowed) == [("198.18.2.1", 1, 100)]

    # A new mapping is published for both hosts, each as policy lets it see it.
    effects = register(core, "10.2.0.0/16", ["198.18.2.9"], key=DC2_KEY, source=ETR2, now=T0 + 6)
    [(_, notify)] = only(effects, MapNotify)
    assert [(eid_of(r), rlocs_of(r)) for r in notify.records] == [
        ("(10.1.0.0/16 -> 10.2.0.0/16)", []), ("(10.2.0.0/15 -> 10.2.0.0/16)", [("198.18.2.9", 1, 100)])]

    # Removing the rule withdraws both source-specific keys before the plain answer.
    [(_, notify)] = only(core.remove_rule("deny", T0 + 10), MapNotify)
    assert [(eid_of(r), r.ttl) for r in notify.records[:2]] == [("(10.1.0.0/16 -> 10.2.0.0/16)", 0),
                                                                ("(10.2.0.0/15 -> 10.2.0.0/16)", 0)]
    [plain] = notify.records[2:]
    assert eid_of(plain) == "10.2.0.0/16" and rlocs_of(plain) == [("198.18.2.9", 1, 100)]


def test_a_subscription_keeps_the_latest_hosts_only():
    core = make_core()
    register(core, "10.2.0.0/16", ["198.18.2.1"], key=DC2_KEY, source=ETR2)
    hosts = [f"10.1.{n // 200}.{n % 200 + 1}" for n in range(MAX_SOURCES_PER_SUBSCRIPTION + 8)]
    for n, host in enumerate(hosts + [hosts[10]]):  # the 11th asks again: it becomes the newest
        request(core, "10.2.0.10", source_eid=host, subscribe=True, xtr_id=XTR_A, nonce=100 + n)
    [sub] = core.subscriptions()
    expected = [h for h in hosts if h != hosts[10]][-(MAX_SOURCES_PER_SUBSCRIPTION - 1):] + [hosts[10]]
    assert [str(s) for s in sub.source_eids] == expected
    # A re-resolution that names no host is answered for the newest.
    core.set_rule(deny(sources=(f"{hosts[10]}/32",)), T0 + 2)
    again = reply_record(request(core, "10.2.0.10", subscribe=True, xtr_id=XTR_A, nonce=300, now=T0 + 3))
    assert again.action == Action.DROP_POLICY_DENIED


def test_subscriptions_written_with_one_source_eid_still_load():
    store = MemoryStore()
    core = make_core(store=store)
    register(core, "10.2.0.0/16", ["198.18.2.1"], key=DC2_KEY, source=ETR2)
    request(core, "10.2.0.10", source_eid="10.1.0.10", subscribe=True, xtr_id=XTR_A, nonce=100)
    entries = list(core.state_entries())
    [written] = [e for e in entries if e.get("seids")]
    older = {k: v for k, v in written.items() if k != "seids"} | {"seid": "10.1.0.10"}
    store.snapshot([older if e is written else e for e in entries])
    again = make_core(store=store, now=T0 + 3)
    assert [s.source_eids for s in again.subscriptions()] == [(ip("10.1.0.10"),)]


def test_weight_override_is_published_and_applied_to_the_site_rlocs():
    core = make_core()
    register(core, "10.2.0.0/16", ["198.18.2.1", "198.18.2.2"], key=DC2_KEY, source=ETR2, weight=50)
    request(core, "10.2.0.10", source_eid="10.1.0.10", subscribe=True, xtr_id=XTR_A, nonce=100)
    effects = core.set_override(RlocOverride.from_dict({"id": "drain", "rloc": "198.18.2.1", "weight": 0}), T0 + 5)
    [(_, notify)] = only(effects, MapNotify)
    assert rlocs_of(notify.records[0]) == [("198.18.2.1", 1, 0), ("198.18.2.2", 1, 50)]
    effects = core.set_override(RlocOverride.from_dict({"id": "backup", "site": "dc2", "priority": 2}), T0 + 6)
    [(_, notify)] = only(effects, MapNotify)
    assert rlocs_of(notify.records[0]) == [("198.18.2.1", 1, 0), ("198.18.2.2", 2, 50)]
    [(_, notify)] = only(core.remove_override("drain", T0 + 7), MapNotify)
    assert rlocs_of(notify.records[0]) == [("198.18.2.1", 2, 50), ("198.18.2.2", 2, 50)]


def test_narrower_answer_withdraws_the_old_prefix_first():
    core = make_core()
    register(core, "10.2.0.0/16", ["198.18.2.1"], key=DC2_KEY, source=ETR2)
    request(core, "10.2.0.10", source_eid="10.1.0.10", subscribe=True, xtr_id=XTR_A, nonce=100)
    [(_, notify)] = only(core.set_rule(deny(dests=("10.2.0.10/32",)), T0 + 5), MapNotify)
    withdraw, new = notify.records
    assert (str(withdraw.eid_prefix), withdraw.ttl, withdraw.locators) == ("10.2.0.0/16", 0, ())
    assert (eid_of(new), new.action) == ("(10.1.0.0/16 -> 10.2.0.10/32)", Action.DROP_POLICY_DENIED)
    # A neighbour's answer is narrowed so it never covers the denied host.
    neighbour = reply_record(request(core, "10.2.0.11", source_eid="10.1.0.10"))
    assert str(neighbour.eid_prefix) == "10.2.0.11/32" and neighbour.locators
    far = reply_record(request(core, "10.2.200.1", source_eid="10.1.0.10"))
    assert str(far.eid_prefix) == "10.2.128.0/17"


def test_static_mappings_and_their_precedence_against_registrations():
    core = make_core()
    static = StaticMapping.from_dict({"iid": 0, "prefix": "192.0.2.0/24",
                                      "rlocs": [{"address": "198.18.7.1", "priority": 1, "weight": 100}]})
    request(core, "192.0.2.5", subscribe=True, xtr_id=XTR_A, nonce=100)  # negative for now
    effects = core.set_static(static, T0 + 2)
    [(_, notify)] = only(effects, MapNotify)
    assert rlocs_of(notify.records[-1]) == [("198.18.7.1", 1, 100)]
    assert rlocs_of(reply_record(request(core, "192.0.2.5"))) == [("198.18.7.1", 1, 100)]
    # A negative answer next to it never covers it.
    negative = reply_record(request(core, "192.0.3.1"))
    assert not negative.eid_prefix.network.overlaps(net("192.0.2.0/24"))
    # Same prefix registered: the registration wins; a longer static prefix beats a registration.
    core.set_static(StaticMapping.from_dict({"iid": 0, "prefix": "10.2.0.0/16",
                                             "rlocs": [{"address": "198.18.7.2"}]}), T0 + 3)
    register(core, "10.2.0.0/16", ["198.18.2.1"], key=DC2_KEY, source=ETR2, now=T0 + 3)
    assert rlocs_of(reply_record(request(core, "10.2.0.10"))) == [("198.18.2.1", 1, 100)]
    core.set_static(StaticMapping.from_dict({"iid": 0, "prefix": "10.2.5.0/24",
                                             "rlocs": [{"address": "198.18.7.3"}]}), T0 + 4)
    assert rlocs_of(reply_record(request(core, "10.2.5.1"))) == [("198.18.7.3", 1, 100)]
    effects = core.remove_static(0, net("192.0.2.0/24"), T0 + 5)
    [(_, notify)] = only(effects, MapNotify)
    assert notify.records[-1].locators == ()


def tenant_config():
    return MapServerConfig(sites=(
        SiteConfig("red", "red-key", (EidPrefixConfig(net("10.0.0.0/24"), 1),)),
        SiteConfig("blue", "blue-key", (EidPrefixConfig(net("10.0.0.0/24"), 2),)),
    ), rate_limit_per_source=1e6)


def test_tenants_keep_the_same_address_space_apart():
    core = make_core(tenant_config())
    register(core, "10.0.0.0/24", ["198.18.1.1"], key="red-key", iid=1)
    register(core, "10.0.0.0/24", ["198.18.2.1"], key="blue-key", source=ETR2, iid=2)
    assert rlocs_of(reply_record(request(core, "10.0.0.5", iid=1))) == [("198.18.1.1", 1, 100)]
    assert rlocs_of(reply_record(request(core, "10.0.0.5", iid=2))) == [("198.18.2.1", 1, 100)]
    # A deny in tenant 1 leaves tenant 2 alone.
    core.set_rule(deny(dests=("10.0.0.0/24",), sources=(), iid=1), T0)
    assert reply_record(request(core, "10.0.0.5", iid=1)).action == Action.DROP_POLICY_DENIED
    assert reply_record(request(core, "10.0.0.5", iid=2)).locators
    # Neither tenant sees the other's prefix in a third one.
    assert reply_record(request(core, "10.0.0.5", iid=3)).locators == ()


def test_policy_static_mappings_and_subscriber_sources_survive_a_restart():
    store = MemoryStore()
    core = make_core(store=store)
    register(core, "10.2.0.0/16", ["198.18.2.1"], key=DC2_KEY, source=ETR2)
    request(core, "10.2.0.10", source_eid="10.1.0.10", subscribe=True, xtr_id=XTR_A, nonce=100)
    core.set_rule(deny(), T0 + 1)
    core.set_rule(deny("gone", dests=("10.3.0.0/16",)), T0 + 1)
    core.remove_rule("gone", T0 + 2)
    core.set_override(RlocOverride.from_dict({"id": "w", "rloc": "198.18.2.1", "weight": 3}), T0 + 2)
    core.set_static(StaticMapping.from_dict({"iid": 0, "prefix": "192.0.2.0/24",
                                             "rlocs": [{"address": "198.18.7.1"}]}), T0 + 2)
    core.handle_timer(T0 + 2.5)  # subscriptions are journalled together, a moment later
    again = make_core(store=store, now=T0 + 3)
    assert again.policy == core.policy and [r.id for r in again.policy.rules] == ["deny"]
    assert list(again.static_mappings()) == list(core.static_mappings())
    assert [s.source_eids for s in again.subscriptions()] == [(ip("10.1.0.10"),)]
    probe = (0, ip("10.2.0.10"), ip("10.1.0.10"), ITR)
    assert again.lookup(*probe) == core.lookup(*probe)
    # A snapshot holds the same state.
    store.snapshot(core.state_entries())
    third = make_core(store=store, now=T0 + 4)
    assert third.policy == core.policy and list(third.static_mappings()) == list(core.static_mappings())


def test_unknown_ids_raise_key_error():
    core = make_core()
    for call in (lambda: core.remove_rule("x", T0), lambda: core.remove_override("x", T0),
                 lambda: core.remove_static(0, net("10.0.0.0/8"), T0)):
        try:
            call()
        except KeyError:
            continue
        raise AssertionError("expected KeyError")


def test_source_dest_keys_only_where_the_answer_depends_on_the_source():
    core = make_core()
    register(core, "10.2.0.0/16", ["198.18.2.1"], key=DC2_KEY, source=ETR2)
    register(core, "10.1.0.0/16", ["198.18.1.1"])
    core.set_rule(deny("no-src", dests=("10.1.0.0/16",), sources=()), T0)
    core.set_rule(deny("other-itr", sources=("10.1.0.10/32",), itr_rlocs=[str(ITR_B)]), T0)
    # A rule without source groups: one answer for every host, a plain EID-record.
    denied = reply_record(request(core, "10.1.0.5", source_eid="10.3.0.10"))
    assert (eid_of(denied), denied.action) == ("10.1.0.0/16", Action.DROP_POLICY_DENIED)
    # A source rule that only another ITR's requests can match: plain for this ITR ...
    assert eid_of(reply_record(request(core, "10.2.0.10", source_eid="10.1.0.10"))) == "10.2.0.0/16"
    # ... and source-specific for that one, allowed hosts included.
    assert eid_of(reply_record(request(core, "10.2.0.10", source_eid="10.1.0.10", itr=ITR_B))) == \
        "(10.1.0.10/32 -> 10.2.0.0/16)"
    assert eid_of(reply_record(request(core, "10.2.0.10", source_eid="10.1.0.11", itr=ITR_B))) == \
        "(10.1.0.11/32 -> 10.2.0.0/16)"


def test_subscription_confirmation_carries_the_source_dest_record():
    core = make_core()
    register(core, "10.2.0.0/16", ["198.18.2.1"], key=DC2_KEY, source=ETR2)
    core.set_rule(deny(sources=("10.1.0.10/32",)), T0)
    effects = request(core, "10.2.0.10", source_eid="10.1.0.11", subscribe=True, xtr_id=XTR_A, nonce=100)
    replied = reply_record(effects)
    [(_, confirmation)] = only(effects, MapNotify)
    assert confirmation.records == (replied,)  # (unkeyed: the nonce is ours, not the request's)
    assert eid_of(replied) == "(10.1.0.11/32 -> 10.2.0.0/16)" and rlocs_of(replied) == [("198.18.2.1", 1, 100)]
    assert core.counters["sent.map_reply_policy"] == 1
