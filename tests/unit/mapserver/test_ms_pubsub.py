"""RFC 9437 publish/subscribe: subscribing, notifying on change, retransmitting until the Ack."""

import ipaddress

from lisp_ryu.wire import AuthResult, MapNotify, MapReply, check_authentication

from mapserver_helpers import DC1_KEY, DC2_KEY, ETR1, ETR2, ITR, T0, acked, decoded, make_core, net, only
from support import packets

XTR_ID = 0xFEED


def register(core, prefix, rlocs, key=DC1_KEY, source=ETR1, now=T0, iid=0, **kw):
    return core.handle_control(packets.map_register([packets.record(prefix, rlocs, iid=iid)], key, proxy=True, **kw),
                               source, 4342, now)


def subscribe(core, eid, iid=0, now=T0 + 1, nonce=100, itr=ITR, xtr_id=XTR_ID, port=61000, confirm=True):
    """A subscribing request, its confirmation acknowledged as the xTR does (unless `confirm` is False)."""
    payload = packets.map_request_ecm(eid, [itr], iid=iid, nonce=nonce, source_port=port, subscribe=True,
                                      xtr_id=xtr_id, site_id=3)
    effects = core.handle_control(payload, itr, 4342, now)
    return acked(core, effects, now) if confirm else effects


def ack(core, notify_effect, key, now, source=None):
    notify = MapNotify.decode(notify_effect.payload)
    return core.handle_control(packets.map_notify_ack(notify.nonce, notify.records, key),
                               source or notify_effect.destination, 4342, now)


def test_subscription_is_confirmed_with_a_map_notify_and_the_reply_still_goes_out():
    core = make_core()
    register(core, "10.1.0.0/16", ["198.18.1.1"])
    effects = subscribe(core, "10.1.2.3", confirm=False)
    [(reply_effect, reply)] = only(effects, MapReply)
    [(notify_effect, notify)] = only(effects, MapNotify)
    assert (notify_effect.destination, notify_effect.port) == (ITR, 61000)
    # Unkeyed subscriber: the confirmation carries a nonce of ours (only its receiver can echo it) ...
    assert notify.nonce != 100
    assert list(core.subscriptions()) == [] and core.pending_subscriptions == 1  # ... and waits for its Ack
    acked(core, effects, T0 + 1.1)
    assert [str(loc.address) for loc in notify.records[0].locators] == ["198.18.1.1"]
    [sub] = core.subscriptions()
    assert (sub.prefix, sub.xtr_id, sub.itr_rloc, sub.port) == (net("10.1.2.3/32"), XTR_ID, ITR, 61000)
    # The subscription lives as long as the ITR may cache the answer (Record TTL 1440 min).
    assert sub.expires == T0 + 1 + 1440 * 60


def test_n_bit_without_xtr_id_does_not_subscribe():
    core = make_core()
    payload = packets.map_request_ecm("10.1.2.3", [ITR], subscribe=True)
    core.handle_control(payload, ITR, 4342, T0)
    assert list(core.subscriptions()) == []  # RFC 9437 needs the xTR-ID to key the subscription


def test_a_request_without_the_n_bit_does_not_subscribe():
    core = make_core()
    core.handle_control(packets.map_request_ecm("10.1.2.3", [ITR], xtr_id=XTR_ID), ITR, 4342, T0)
    assert list(core.subscriptions()) == []


def test_change_notifies_subscriber_with_next_nonce_and_retransmits_until_acked():
    core = make_core()
    register(core, "10.1.0.0/16", ["198.18.1.1"], xtr_id=1)
    confirm = only(subscribe(core, "10.1.2.3", nonce=100, confirm=False), MapNotify)[0][0]
    assert ack(core, confirm, None, T0 + 1.5) == []  # unsigned confirmation: an Ack echoing its nonce ends it
    [sub] = core.subscriptions()
    # A second ETR of the site adds an RLOC: the mapping changed.
    effects = register(core, "10.1.0.0/16", ["198.18.1.2"], xtr_id=2, source=ipaddress.ip_address("198.18.1.2"),
                       now=T0 + 10)
    to_subscriber = [(e, m) for e, m in only(effects, MapNotify) if e.destination == ITR]
    [(notify_effect, notify)] = to_subscriber
    assert notify.nonce == sub.nonce + 1
    assert sorted(str(loc.address) for loc in notify.records[0].locators) == ["198.18.1.1", "198.18.1.2"]
    # Not acknowledged: sent again after notify_retry_interval (1 s), byte for byte.
    assert core.handle_timer(T0 + 10.5) == []
    again = [e for e in core.handle_timer(T0 + 11) if e.destination == ITR]
    assert [e.payload for e in again] == [notify_effect.payload]
    ack(core, notify_effect, None, T0 + 11.2)
    assert [e for e in core.handle_timer(T0 + 12) if e.destination == ITR] == []
    assert core.counters["notify.acknowledged"] >= 2


def test_retransmissions_are_bounded_by_notify_retries():
    core = make_core()
    register(core, "10.1.0.0/16", ["198.18.1.1"])
    subscribe(core, "10.1.2.3", now=T0)
    register(core, "10.1.0.0/16", ["198.18.1.9"], now=T0 + 0.5)  # a publication nobody acknowledges
    sent = 0
    for step in range(1, 20):
        sent += len([e for e in core.handle_timer(T0 + step) if e.destination == ITR])
    assert sent == 3  # notify_retries
    assert core.counters["notify.unacknowledged"] == 1
    assert core.pending_notifications == 0
    assert len(list(core.subscriptions())) == 1  # the subscription stays until it expires


def test_an_unacknowledged_confirmation_subscribes_nobody():
    core = make_core()
    register(core, "10.1.0.0/16", ["198.18.1.1"])
    subscribe(core, "10.1.2.3", now=T0, confirm=False)
    for step in range(1, 20):  # 1 + 2 + 4 s of back-off, then 8 s to give up
        core.handle_timer(T0 + step)
    assert list(core.subscriptions()) == [] and core.pending_subscriptions == 0
    assert core.counters["subscriptions.unconfirmed"] == 1
    assert core.pending_notifications == 0


def test_subscriber_notification_is_signed_with_the_key_of_its_own_site():
    core = make_core()
    # The subscriber is dc2's xTR (it registered with xTR-ID XTR_ID): dc2's key signs what it gets.
    register(core, "10.2.0.0/16", ["198.18.2.1"], key=DC2_KEY, source=ETR2, xtr_id=XTR_ID)
    register(core, "10.1.0.0/16", ["198.18.1.1"])
    [(confirm, _)] = only(subscribe(core, "10.1.2.3", itr=ETR2, confirm=False), MapNotify)
    assert check_authentication(confirm.payload, DC2_KEY) is AuthResult.OK
    # An Ack that does not verify under that key does not stop the retransmissions.
    notify = MapNotify.decode(confirm.payload)
    core.handle_control(packets.map_notify_ack(notify.nonce, notify.records, DC1_KEY), ETR2, 4342, T0 + 1.1)
    assert core.counters["rejected.map_notify_ack.auth-mismatch"] == 1
    assert core.pending_notifications == 1
    assert list(core.subscriptions()) == []  # nor does it confirm the subscription
    ack(core, confirm, DC2_KEY, T0 + 1.2)
    assert core.pending_notifications == 0
    assert [sub.itr_rloc for sub in core.subscriptions()] == [ETR2]


def test_workload_move_notifies_the_old_site_and_the_subscribers():
    core = make_core()
    register(core, "10.10.0.5/32", ["198.18.1.1"], iid=42, want_notify=True)
    subscribe(core, "10.10.0.5", iid=42)
    effects = register(core, "10.10.0.5/32", ["198.18.2.1"], iid=42, key=DC2_KEY, source=ETR2, now=T0 + 20)
    by_destination = {e.destination: (e, m) for e, m in only(effects, MapNotify)}
    old_site, to_old = by_destination[ETR1]
    assert [str(loc.address) for loc in to_old.records[0].locators] == ["198.18.2.1"]
    assert check_authentication(old_site.payload, DC1_KEY) is AuthResult.OK  # the old site can trust it
    _, to_itr = by_destination[ITR]
    assert str(to_itr.records[0].eid_prefix) == "[42]10.10.0.5/32"
    assert [str(loc.address) for loc in to_itr.records[0].locators] == ["198.18.2.1"]


def test_expiry_notifies_subscribers_with_an_empty_record_and_ttl_zero():
    core = make_core()
    register(core, "10.1.0.0/16", ["198.18.1.1"])
    subscribe(core, "10.1.2.3")
    [sub] = core.subscriptions()
    effects = core.handle_timer(T0 + 180)
    gone = [m for e, m in only(effects, MapNotify) if e.destination == ITR and m.nonce == sub.nonce + 1]
    [notify] = gone
    [record] = notify.records
    assert (str(record.eid_prefix), record.locators, record.ttl) == ("10.1.0.0/16", (), 0)


def test_subscription_to_a_covering_prefix_hears_about_more_specifics():
    core = make_core()
    subscribe(core, "10.10.0.0/16", iid=42)  # negative for now: nothing registered there
    effects = register(core, "10.10.7.7/32", ["198.18.1.1"], iid=42, now=T0 + 2)
    [(_, notify)] = [(e, m) for e, m in only(effects, MapNotify) if e.destination == ITR]
    assert str(notify.records[0].eid_prefix) == "[42]10.10.7.7/32"


def test_refresh_without_change_sends_nothing():
    core = make_core()
    register(core, "10.1.0.0/16", ["198.18.1.1"])
    subscribe(core, "10.1.2.3")
    assert register(core, "10.1.0.0/16", ["198.18.1.1"], now=T0 + 60) == []


def test_afi_zero_itr_rloc_withdraws_the_subscription():
    core = make_core()
    subscribe(core, "10.1.2.3")
    payload = packets.map_request_ecm("10.1.2.3", [None], subscribe=True, xtr_id=XTR_ID)
    core.handle_control(payload, ITR, 4342, T0 + 5)
    assert list(core.subscriptions()) == []
    assert core.counters["subscriptions.withdrawn"] == 1


def test_subscription_expires_when_not_renewed_and_renews_on_request():
    core = make_core()
    register(core, "10.1.0.0/16", ["198.18.1.1"])
    subscribe(core, "10.2.0.1", now=T0)  # configured, unregistered: 1-minute negative answer
    [sub] = core.subscriptions()
    assert sub.expires == T0 + 60
    subscribe(core, "10.2.0.1", now=T0 + 50, nonce=300)  # renewed
    core.handle_timer(T0 + 60)
    assert len(list(core.subscriptions())) == 1
    core.handle_timer(T0 + 110)
    assert list(core.subscriptions()) == []
    assert core.counters["subscriptions.expired"] == 1


def test_unmatched_ack_is_counted():
    core = make_core()
    core.handle_control(packets.map_notify_ack(12345, [], None), ITR, 4342, T0)
    assert core.counters["dropped.map_notify_ack_unmatched"] == 1


def test_every_notification_decodes(tmp_path):
    """Whatever the core sends in a busy conversation is a well-formed LISP message."""
    core = make_core()
    register(core, "10.10.0.5/32", ["198.18.1.1"], iid=42, want_notify=True)
    effects = subscribe(core, "10.10.0.5", iid=42)
    effects += register(core, "10.10.0.5/32", ["198.18.2.1"], iid=42, key=DC2_KEY, source=ETR2, now=T0 + 20)
    for step in range(25, 30):
        effects += core.handle_timer(T0 + step)
    assert len(decoded(effects)) == len(effects) > 5


def test_subscription_table_is_bounded(monkeypatch):
    from lisp_ryu.mapserver import pubsub

    monkeypatch.setattr(pubsub, "MAX_SUBSCRIPTIONS", 2)
    core = make_core()
    for xtr_id in (1, 2, 3):
        subscribe(core, "10.1.2.3", xtr_id=xtr_id)
    assert len(list(core.subscriptions())) == 2
    assert core.counters["rejected.subscribe.table-full"] == 1
    subscribe(core, "10.1.2.3", xtr_id=2, nonce=7)  # renewing an existing one is still fine
    assert core.counters["subscriptions.renewed"] == 1


def test_host_route_from_another_site_tells_the_site_of_the_covering_prefix():
    """dc1 registered the whole range; h moves to dc2, which registers its host route."""
    core = make_core()
    register(core, "10.10.0.0/16", ["198.18.1.1"], iid=42, want_notify=True)
    effects = register(core, "10.10.0.5/32", ["198.18.2.1"], iid=42, key=DC2_KEY, source=ETR2, now=T0 + 5)
    to_dc1 = [(e, m) for e, m in only(effects, MapNotify) if e.destination == ETR1]
    [(sent, notify)] = to_dc1
    assert str(notify.records[0].eid_prefix) == "[42]10.10.0.5/32"
    assert [str(loc.address) for loc in notify.records[0].locators] == ["198.18.2.1"]
    assert check_authentication(sent.payload, DC1_KEY) is AuthResult.OK
    assert core.counters["registrations.moved_out_of_covering"] == 1
    # The same site refining its own prefix tells nobody.
    again = register(core, "10.10.0.9/32", ["198.18.1.1"], iid=42, now=T0 + 6)
    assert [e for e, m in only(again, MapNotify) if e.destination == ETR1 and m.nonce != 1] == []


def test_a_move_tells_the_old_site_before_any_subscriber():
    """The old site still delivers the workload to a port that is gone until it hears (soak seeds 2, 20)."""
    core = make_core()
    register(core, "10.10.0.5/32", ["198.18.1.1"], iid=42, want_notify=True)
    for n, itr in enumerate(ipaddress.ip_address(f"198.18.9.{i}") for i in (8, 9, 10)):  # three other ITRs
        subscribe(core, "10.10.0.5", iid=42, itr=itr, xtr_id=XTR_ID + n, nonce=100 + n)
    effects = register(core, "10.10.0.5/32", ["198.18.2.1"], iid=42, key=DC2_KEY, source=ETR2, now=T0 + 20)
    order = [e.destination for e, _ in only(effects, MapNotify) if e.destination != ETR2]
    assert order[0] == ETR1 and len(order) == 4, order
