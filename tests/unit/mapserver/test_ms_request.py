"""Map-Request resolution: proxy reply, forwarding to the ETR, negative replies (with an oracle)."""

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from lisp_ryu.config import EidPrefixConfig, MapServerConfig, SiteConfig
from lisp_ryu.wire import Action, EncapsulatedControlMessage, MapReply

from mapserver_helpers import DC1_KEY, ETR1, ITR, T0, decoded, make_core, site_config
from support import packets


def registered_core(proxy=True):
    core = make_core()
    core.handle_control(
        packets.map_register([packets.record("10.1.0.0/16", ["198.18.1.1", "198.18.1.2"], ttl=60)], DC1_KEY,
                             proxy=proxy),
        ETR1, 4342, T0)
    return core


def ask(core, eid, iid=0, itr_rlocs=(ITR,), port=61000, nonce=77, source=ITR, **kw):
    payload = packets.map_request_ecm(eid, itr_rlocs, iid=iid, nonce=nonce, source_port=port, **kw)
    return core.handle_control(payload, source, 4342, T0 + 1)


def test_proxy_reply_goes_to_the_itr_rloc_at_the_inner_source_port():
    core = registered_core(proxy=True)
    [(effect, reply)] = decoded(ask(core, "10.1.2.3"))
    assert isinstance(reply, MapReply)
    assert (effect.destination, effect.port) == (ITR, 61000)
    assert reply.nonce == 77
    [record] = reply.records
    assert str(record.eid_prefix) == "10.1.0.0/16"
    assert sorted(str(loc.address) for loc in record.locators) == ["198.18.1.1", "198.18.1.2"]
    assert record.ttl == 60
    assert not record.authoritative  # a Map-Server answering as proxy must not claim authority
    assert core.counters["sent.map_reply"] == 1


def test_without_proxy_the_ecm_is_forwarded_unchanged_to_the_etr():
    core = registered_core(proxy=False)
    payload = packets.map_request_ecm("10.1.2.3", [ITR], nonce=5, source_port=61000)
    [effect] = core.handle_control(payload, ITR, 4342, T0 + 1)
    assert (effect.destination, effect.port) == (ETR1, 4342)
    assert effect.payload == payload
    assert isinstance(EncapsulatedControlMessage.decode(effect.payload), EncapsulatedControlMessage)
    assert core.counters["sent.map_request_forwarded"] == 1


def test_reply_prefers_an_itr_rloc_of_the_family_we_received_on():
    core = registered_core()
    v6 = ipaddress.ip_address("2001:db8:9::9")
    [(effect, _)] = decoded(ask(core, "10.1.2.3", itr_rlocs=(v6, ITR)))
    assert effect.destination == ITR
    [(effect, _)] = decoded(ask(core, "10.1.2.3", itr_rlocs=(v6,)))
    assert effect.destination == v6  # the only one there is


def test_no_usable_itr_rloc_means_no_reply():
    core = registered_core()
    assert ask(core, "10.1.2.3", itr_rlocs=(None,)) == []
    assert core.counters["dropped.map_request_no_itr_rloc"] == 1


def test_d_bit_suppresses_the_reply():
    core = registered_core()
    assert ask(core, "10.1.2.3", dont_map_reply=True) == []


def test_plain_map_request_must_be_encapsulated():
    core = registered_core()
    ecm = EncapsulatedControlMessage.decode(packets.map_request_ecm("10.1.2.3", [ITR]))
    assert core.handle_control(ecm.message.encode(), ITR, 4342, T0) == []
    assert core.counters["dropped.map_request_not_encapsulated"] == 1


def negative(core, eid, iid=0):
    [(effect, reply)] = decoded(ask(core, eid, iid=iid))
    [record] = reply.records
    assert record.locators == ()
    return str(record.eid_prefix), record.ttl, record.action


def test_negative_reply_for_unconfigured_space_is_the_widest_hole():
    core = registered_core()
    # Configured in iid 0: 10.1.0.0/16, 10.2.0.0/16 and 2001:db8:1::/48.
    assert negative(core, "192.168.1.1") == ("128.0.0.0/1", 15, Action.NATIVELY_FORWARD)
    assert negative(core, "10.3.0.1") == ("10.3.0.0/16", 15, Action.NATIVELY_FORWARD)
    assert negative(core, "10.0.0.1") == ("10.0.0.0/16", 15, Action.NATIVELY_FORWARD)
    assert negative(core, "10.4.0.1") == ("10.4.0.0/14", 15, Action.NATIVELY_FORWARD)
    assert negative(core, "10.2.0.1", iid=7) == ("[7]0.0.0.0/0", 15, Action.NATIVELY_FORWARD)  # other instance


def test_negative_ttl_and_action_come_from_config():
    core = make_core(site_config(negative_ttl_minutes=5, negative_action="drop"))
    assert negative(core, "192.168.1.1") == ("128.0.0.0/1", 5, Action.DROP_NO_REASON)


def test_configured_but_unregistered_prefix_answers_native_forward_for_one_minute():
    core = registered_core()
    assert negative(core, "10.2.3.4") == ("10.2.0.0/16", 1, Action.NATIVELY_FORWARD)


def test_negative_inside_a_site_range_avoids_registered_more_specifics():
    core = make_core()
    core.handle_control(packets.map_register([packets.record("10.10.5.0/24", ["198.18.1.1"], iid=42)], DC1_KEY,
                                             proxy=True), ETR1, 4342, T0)
    assert negative(core, "10.10.9.1", iid=42) == ("[42]10.10.8.0/21", 1, Action.NATIVELY_FORWARD)
    assert negative(core, "10.10.128.1", iid=42) == ("[42]10.10.128.0/17", 1, Action.NATIVELY_FORWARD)


def test_request_for_a_registered_eid_in_another_instance_is_negative():
    core = registered_core()
    prefix, ttl, _ = negative(core, "10.1.2.3", iid=42)
    assert prefix == "[42]10.0.0.0/13"  # next to 10.10.0.0/16, the only prefix configured in iid 42


def test_probe_and_non_ip_eids_are_counted_not_answered():
    core = registered_core()
    from lisp_ryu.wire import MacAddress, MapRequest, MapRequestRecord, EidPrefix

    request = MapRequest(nonce=1, records=(MapRequestRecord.for_prefix(EidPrefix(MacAddress(bytes(6)), 48)),),
                         itr_rlocs=(ITR,))
    ecm = EncapsulatedControlMessage(message=request, inner_source=ITR, inner_destination=ITR, inner_source_port=1)
    assert core.handle_control(ecm.encode(), ITR, 4342, T0) == []
    assert core.counters["rejected.map_request.unsupported-eid"] == 1


# ----------------------------------------------------------------------------- property: negative prefix


def _oracle(address, configured, registered):
    """The RFC's rule by brute force: try every length from /0 down to /32."""
    nets = configured + registered
    inside = [c for c in configured if address in c]
    if inside:
        site = max(inside, key=lambda n: n.prefixlen)
        for length in range(33):
            candidate = ipaddress.ip_network((address, length), strict=False)
            if candidate.subnet_of(site) and all(
                not p.overlaps(candidate) or candidate.subnet_of(p) for p in nets
            ):
                return str(candidate), 1
    for length in range(33):
        candidate = ipaddress.ip_network((address, length), strict=False)
        if not any(p.overlaps(candidate) for p in nets):
            return str(candidate), 15
    raise AssertionError("a /32 always qualifies")


def _prefixes():
    return st.builds(
        lambda value, length: ipaddress.ip_network((value, length), strict=False),
        st.integers(0x0A000000, 0x0A00FFFF), st.integers(8, 30))


@settings(max_examples=120, deadline=None)
@given(
    configured=st.lists(_prefixes(), min_size=1, max_size=5, unique=True),
    picks=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 8), st.integers(0, 255)), max_size=6),
    probes=st.lists(st.integers(0x0A000000, 0x0A00FFFF), min_size=1, max_size=8),
)
def test_negative_prefix_matches_a_brute_force_oracle(configured, picks, probes):
    # One site per configured prefix, all accepting more-specifics; registrations are more-specifics.
    sites = tuple(SiteConfig(f"s{i}", f"key{i}", (EidPrefixConfig(c, 0, True),)) for i, c in enumerate(configured))
    core = make_core(MapServerConfig(sites=sites, rate_limit_per_source=1e9))
    registered = []
    for index, extra_bits, pattern in picks:
        site = configured[index % len(configured)]
        length = min(32, site.prefixlen + extra_bits)
        subnet = ipaddress.ip_network((int(site.network_address) | (pattern << (32 - length)) & (
            (1 << (32 - site.prefixlen)) - 1), length), strict=False)
        # The site that owns the longest configured prefix around the subnet is the one that may register it.
        covering = [i for i, c in enumerate(configured) if subnet.subnet_of(c)]
        owner = max(covering, key=lambda i: configured[i].prefixlen)
        effects = core.handle_control(
            packets.map_register([packets.record(str(subnet), ["198.18.0.1"])], f"key{owner}", proxy=True),
            ipaddress.ip_address("198.18.0.1"), 4342, T0)
        # No answer was asked for; only the site of a covering registration hears that part of
        # its range is now registered by another site.
        assert all("to former holder" in e.what for e in effects), effects
        registered.append(subnet)
    assert core.registration_count == len(set(registered))
    for value in probes:
        address = ipaddress.ip_address(value)
        record = core.lookup(0, address)
        if any(address in r for r in registered):
            best = max((r for r in registered if address in r), key=lambda n: n.prefixlen)
            assert str(record.eid_prefix) == str(best) and record.locators
            continue
        assert (str(record.eid_prefix), record.ttl) == _oracle(address, configured, registered), str(address)
