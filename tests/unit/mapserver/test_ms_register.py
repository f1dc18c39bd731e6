"""Map-Register: who may register what, Map-Notify on the M bit, merging ETRs, expiry."""

import ipaddress

import pytest

from lisp_ryu.wire import (
    Action,
    AuthAlgorithm,
    AuthResult,
    MapNotify,
    MapRegister,
    check_authentication,
)

from mapserver_helpers import DC1_KEY, DC2_KEY, ETR1, ETR1B, ETR2, T0, decoded, make_core, net
from support import packets


def register(core, records, key=DC1_KEY, source=ETR1, now=T0, port=4342, **kw):
    return core.handle_control(packets.map_register(records, key, **kw), source, port, now)


def rlocs_of(core, address, iid=0):
    return sorted(str(loc.address) for loc in core.lookup(iid, ipaddress.ip_address(address)).locators)


@pytest.mark.parametrize("algorithm", [AuthAlgorithm.HMAC_SHA_1_96, AuthAlgorithm.HMAC_SHA_256_128])
def test_register_accepted_with_sha1_and_sha256(algorithm):
    core = make_core()
    assert register(core, [packets.record("10.1.0.0/16", ["198.18.1.1"])], algorithm=algorithm) == []
    assert rlocs_of(core, "10.1.2.3") == ["198.18.1.1"]
    assert core.counters["accepted.map_register"] == 1
    assert core.registration_count == 1


@pytest.mark.parametrize(
    "records, key, build, reason",
    [
        # wrong key for the site that owns the prefix
        ([("10.1.0.0/16", 0)], "not-the-key", {}, "auth-mismatch"),
        # no authentication at all
        ([("10.1.0.0/16", 0)], DC1_KEY, {"algorithm": AuthAlgorithm.NONE}, "auth-no-authentication"),
        # nobody configured this space
        ([("172.16.0.0/16", 0)], DC1_KEY, {}, "unknown-site"),
        # right space, wrong instance-ID
        ([("10.1.0.0/16", 7)], DC1_KEY, {}, "unknown-site"),
        # dc1's key with one of dc2's prefixes in the same message
        ([("10.1.0.0/16", 0), ("10.2.0.0/16", 0)], DC1_KEY, {}, "prefix-outside"),
        # wider than what dc1 owns
        ([("10.1.0.0/16", 0), ("10.0.0.0/15", 0)], DC1_KEY, {}, "prefix-outside"),
        # more-specific of a prefix that does not accept them
        ([("10.1.5.0/24", 0)], DC1_KEY, {}, "more-specific-denied"),
    ],
)
def test_register_rejections_change_nothing(records, key, build, reason):
    core = make_core()
    register(core, [packets.record("10.1.0.0/16", ["198.18.1.9"])], source=ETR1B)  # prior state
    before = list(core.state_entries())
    recs = [packets.record(prefix, ["198.18.1.1"], iid=iid) for prefix, iid in records]
    assert register(core, recs, key=key, want_notify=True, **build) == []  # no Map-Notify either
    assert core.counters[f"rejected.map_register.{reason}"] == 1
    assert list(core.state_entries()) == before
    assert rlocs_of(core, "10.1.2.3") == ["198.18.1.9"]


def test_truncated_digest_is_rejected_as_bad_length():
    """Deployed implementations put the full 20-byte SHA-1 digest on the wire; 12 bytes is refused."""
    core = make_core()
    message = MapRegister(nonce=1, records=(packets.record("10.1.0.0/16", ["198.18.1.1"]),),
                          algorithm_id=AuthAlgorithm.HMAC_SHA_1_96, authentication_data=bytes(12))
    assert core.handle_control(message.encode(), ETR1, 4342, T0) == []
    assert core.counters["rejected.map_register.auth-bad-length"] == 1
    assert core.registration_count == 0


def test_more_specific_accepted_where_configured():
    core = make_core()
    register(core, [packets.record("10.10.5.0/24", ["198.18.1.1"], iid=42)])
    assert rlocs_of(core, "10.10.5.7", iid=42) == ["198.18.1.1"]
    assert core.lookup(0, ipaddress.ip_address("10.10.5.7")).locators == ()  # other instance: nothing


def test_map_notify_answers_the_m_bit_with_same_nonce_records_and_signature():
    core = make_core()
    recs = [packets.record("10.1.0.0/16", ["198.18.1.1"])]
    effects = register(core, recs, algorithm=AuthAlgorithm.HMAC_SHA_256_128, want_notify=True, nonce=0xABCDEF,
                       xtr_id=0x1234, site_id=9, port=40000)
    [(effect, notify)] = decoded(effects)
    assert isinstance(notify, MapNotify)
    assert (effect.destination, effect.port) == (ETR1, 40000)
    assert notify.nonce == 0xABCDEF
    assert notify.records == tuple(recs)
    assert (notify.xtr_id, notify.site_id) == (0x1234, 9)
    assert notify.algorithm_id == AuthAlgorithm.HMAC_SHA_256_128
    assert check_authentication(effect.payload, DC1_KEY) is AuthResult.OK
    assert check_authentication(effect.payload, DC2_KEY) is AuthResult.MISMATCH


def test_no_map_notify_without_the_m_bit():
    core = make_core()
    assert register(core, [packets.record("10.1.0.0/16", ["198.18.1.1"])]) == []


def test_two_etrs_of_one_site_are_merged_and_each_expires_on_its_own():
    core = make_core()
    register(core, [packets.record("10.1.0.0/16", ["198.18.1.1"])], xtr_id=1, source=ETR1, now=T0)
    register(core, [packets.record("10.1.0.0/16", ["198.18.1.2"])], xtr_id=2, source=ETR1B, now=T0 + 30)
    assert rlocs_of(core, "10.1.0.1") == ["198.18.1.1", "198.18.1.2"]
    [(_, _, site, _, etrs)] = list(core.registrations())
    assert site == "dc1" and len(etrs) == 2
    core.handle_timer(T0 + 180)  # the first ETR stopped registering
    assert rlocs_of(core, "10.1.0.1") == ["198.18.1.2"]
    core.handle_timer(T0 + 210)
    assert core.registration_count == 0
    assert core.lookup(0, ipaddress.ip_address("10.1.0.1")).action == Action.NATIVELY_FORWARD


def test_the_same_locator_from_two_etrs_appears_once():
    core = make_core()
    register(core, [packets.record("10.1.0.0/16", ["198.18.1.1"])], xtr_id=1)
    register(core, [packets.record("10.1.0.0/16", ["198.18.1.1"])], xtr_id=2, source=ETR1B)
    assert rlocs_of(core, "10.1.0.1") == ["198.18.1.1"]


def test_etr_without_xtr_id_is_keyed_by_source_rloc():
    core = make_core()
    register(core, [packets.record("10.1.0.0/16", ["198.18.1.1"])], source=ETR1)
    register(core, [packets.record("10.1.0.0/16", ["198.18.1.5"])], source=ETR1)  # same ETR, new RLOC
    register(core, [packets.record("10.1.0.0/16", ["198.18.1.2"])], source=ETR1B)
    assert rlocs_of(core, "10.1.0.1") == ["198.18.1.2", "198.18.1.5"]


def test_expiry_happens_exactly_at_the_deadline():
    core = make_core()
    register(core, [packets.record("10.1.0.0/16", ["198.18.1.1"])], now=T0)
    assert core.next_deadline() == T0 + 180
    core.handle_timer(T0 + 179.999)
    assert core.registration_count == 1
    core.handle_timer(T0 + 180)
    assert core.registration_count == 0
    assert core.counters["registrations.expired"] == 1


def test_refresh_pushes_expiry_back():
    core = make_core()
    register(core, [packets.record("10.1.0.0/16", ["198.18.1.1"])], now=T0)
    register(core, [packets.record("10.1.0.0/16", ["198.18.1.1"])], now=T0 + 60)
    core.handle_timer(T0 + 180)  # the first deadline passes, the registration was refreshed
    assert core.registration_count == 1
    core.handle_timer(T0 + 240)
    assert core.registration_count == 0


def test_t_bit_uses_the_record_ttl_for_expiry():
    core = make_core()
    register(core, [packets.record("10.1.0.0/16", ["198.18.1.1"], ttl=10)], use_ttl_for_timeout=True)
    core.handle_timer(T0 + 599)
    assert core.registration_count == 1
    core.handle_timer(T0 + 600)
    assert core.registration_count == 0


def test_record_ttl_zero_withdraws_at_once():
    core = make_core()
    register(core, [packets.record("10.1.0.0/16", ["198.18.1.1"])])
    register(core, [packets.record("10.1.0.0/16", ["198.18.1.1"], ttl=0)], now=T0 + 1)
    assert core.registration_count == 0
    assert core.counters["registrations.withdrawn"] == 1


def test_ipv6_eid_prefix_registers_and_resolves():
    core = make_core()
    register(core, [packets.record("2001:db8:1::/48", ["198.18.1.1"])])
    assert rlocs_of(core, "2001:db8:1::5") == ["198.18.1.1"]


def test_another_site_takes_over_a_moved_workload():
    core = make_core()
    register(core, [packets.record("10.10.0.5/32", ["198.18.1.1"], iid=42)], key=DC1_KEY, source=ETR1)
    register(core, [packets.record("10.10.0.5/32", ["198.18.2.1"], iid=42)], key=DC2_KEY, source=ETR2,
             now=T0 + 5)
    assert rlocs_of(core, "10.10.0.5", iid=42) == ["198.18.2.1"]
    [(_, prefix, site, _, etrs)] = list(core.registrations())
    assert (prefix, site, len(etrs)) == (net("10.10.0.5/32"), "dc2", 1)
    assert core.counters["registrations.moved"] == 1


@pytest.mark.parametrize("payload", [b"\x30", b"\x30" + bytes(14), b"\x30\x00\x00\x01" + bytes(12) + b"\xff"])
def test_malformed_register_is_dropped_and_counted(payload):
    core = make_core()
    assert core.handle_control(payload, ETR1, 4342, T0) == []
    assert core.counters["dropped.malformed"] == 1
    assert core.registration_count == 0


def test_register_without_records_is_rejected():
    core = make_core()
    assert core.handle_control(b"\x30" + bytes(15), ETR1, 4342, T0) == []  # well-formed, zero records
    assert core.counters["rejected.map_register.no-records"] == 1


def test_a_map_register_of_a_non_ip_eid_is_rejected_as_unsupported():
    from lisp_ryu.wire import EidPrefix, Locator, MacAddress, MappingRecord

    core = make_core()
    mac = MappingRecord.for_prefix(EidPrefix(MacAddress.parse("00:11:22:33:44:55"), 48),
                                   (Locator(ipaddress.ip_address("198.18.1.1")),))
    for records in ([mac], [packets.record("10.1.0.1/32", ["198.18.1.1"]), mac]):
        assert core.handle_control(packets.map_register(records, DC1_KEY, want_notify=True), ETR1, 4342, T0) == []
    assert core.counters["rejected.map_register.unsupported-eid"] == 2
    assert core.registration_count == 0
