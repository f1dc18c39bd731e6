"""Source/Dest keys on the wire, the cache of source-specific entries, and the MapCache holding both kinds."""

import ipaddress
import math

import pytest

from lisp_ryu.mapping import Action, EidError
from lisp_ryu.mapping.mapcache import MapCache, SourceDestCache
from lisp_ryu.mapping.sourcedest import SourceDestKey, record_key
from lisp_ryu.wire import InstanceIdAddress, MappingRecord, MapReply, SourceDestAddress

ip = ipaddress.ip_address
net = ipaddress.ip_network


def key(source, dest, iid=42):
    return SourceDestKey(iid, net(source), net(dest))


def test_key_round_trips_through_a_map_reply():
    for k in (key("10.1.0.10/32", "10.2.0.0/16"), key("2001:db8:1::/48", "2001:db8:2::/48", iid=0)):
        mask_len, eid = k.to_wire()
        reply = MapReply(nonce=1, records=(MappingRecord(eid, mask_len, (), ttl=15, action=Action.DROP_POLICY_DENIED),))
        [record] = MapReply.decode(reply.encode()).records
        assert record_key(record) == k and record.eid_mask_len == k.dest.prefixlen
    assert isinstance(key("10.1.0.10/32", "10.2.0.0/16").to_wire()[1], InstanceIdAddress)
    assert isinstance(key("10.1.0.10/32", "10.2.0.0/16", iid=0).to_wire()[1], SourceDestAddress)


def test_ordinary_records_and_odd_keys_have_no_source_dest_key():
    plain = MappingRecord(ip("10.2.0.0"), 16)
    assert record_key(plain) is None
    mixed = SourceDestAddress(ip("10.1.0.0"), 16, ip("2001:db8::"), 32)
    assert SourceDestKey.from_wire(mixed) is None
    assert SourceDestKey.from_wire(InstanceIdAddress(42, mixed)) is None
    with pytest.raises(EidError):
        SourceDestKey(42, net("10.1.0.0/16"), net("2001:db8::/32"))


def test_lookup_is_longest_destination_then_longest_source():
    cache: SourceDestCache[str] = SourceDestCache()
    cache.insert(key("10.1.0.0/16", "10.2.0.0/16"), "wide", now=0, ttl=60)
    cache.insert(key("10.1.0.10/32", "10.2.0.0/16"), "h1", now=0, ttl=60)
    cache.insert(key("10.1.0.0/16", "10.2.5.0/24"), "narrow-dest", now=0, ttl=60)
    assert cache.lookup(42, ip("10.1.0.10"), ip("10.2.0.1"), 1)[1].value == "h1"
    assert cache.lookup(42, ip("10.1.0.11"), ip("10.2.0.1"), 1)[1].value == "wide"
    assert cache.lookup(42, ip("10.1.0.10"), ip("10.2.5.1"), 1)[1].value == "narrow-dest"
    # The longest destination decides even when none of its sources covers the host.
    dest, entry = cache.lookup(42, ip("10.9.0.1"), ip("10.2.5.1"), 1)
    assert (dest, entry) == (net("10.2.5.0/24"), None)
    assert cache.lookup(42, ip("10.1.0.10"), ip("10.3.0.1"), 1) is None
    assert cache.lookup(7, ip("10.1.0.10"), ip("10.2.0.1"), 1) is None  # another instance
    assert len(cache) == 3


def test_expiry_hides_then_drops_entries_and_reports_the_deadline():
    cache: SourceDestCache[str] = SourceDestCache()
    cache.insert(key("10.1.0.10/32", "10.2.5.0/24"), "short", now=0, ttl=10)
    cache.insert(key("10.1.0.0/16", "10.2.0.0/16"), "long", now=0, ttl=100)
    cache.insert(key("10.1.0.11/32", "10.2.0.0/16"), "forever", now=0, ttl=math.inf)
    assert cache.next_deadline() == 10
    # Expired but not yet dropped: invisible, the shorter destination answers.
    assert cache.lookup(42, ip("10.1.0.10"), ip("10.2.5.1"), 10)[1].value == "long"
    [(dest, gone)] = cache.expire(10)
    assert (dest, gone.value) == (net("10.2.5.0/24"), "short")
    assert cache.next_deadline() == 100 and len(cache) == 2
    assert [d for _, d in cache.destinations()] == [net("10.2.0.0/16")]


def test_remove_and_remove_within():
    cache: SourceDestCache[str] = SourceDestCache()
    cache.insert(key("10.1.0.10/32", "10.2.5.0/24"), "a", now=0, ttl=60)
    cache.insert(key("10.1.0.11/32", "10.2.0.0/16"), "b", now=0, ttl=60)
    cache.insert(key("10.1.0.11/32", "10.3.0.0/16"), "c", now=0, ttl=60)
    assert cache.remove(key("10.1.0.99/32", "10.2.0.0/16")) is None
    assert sorted(e.value for _, e in cache.remove_within(42, net("10.2.0.0/16"))) == ["a", "b"]
    assert [e.value for _, e in cache] == ["c"]
    assert cache.remove(key("10.1.0.11/32", "10.3.0.0/16")).value == "c"
    assert not cache and len(cache) == 0


def test_map_cache_lookup_with_a_source_is_longest_destination_then_longest_source():
    cache: MapCache[str] = MapCache()
    cache.insert(42, net("10.0.0.0/8"), "plain /8", now=0, ttl=60)
    cache.insert(42, net("10.2.5.0/24"), "plain /24", now=0, ttl=60)
    cache.insert_source_specific(key("10.1.0.10/32", "10.2.0.0/16"), "h1", now=0, ttl=60)
    # A longer plain destination beats a shorter source-specific one.
    assert cache.lookup(42, ip("10.2.5.1"), 1, source=ip("10.1.0.10")).value == "plain /24"
    assert cache.lookup(42, ip("10.2.0.1"), 1, source=ip("10.1.0.10")).value == "h1"
    # Outside every cached source prefix: no answer, not the covering plain /8.
    assert cache.lookup(42, ip("10.2.0.1"), 1, source=ip("10.1.0.11")) is None
    # Without a source only plain entries answer.
    assert cache.lookup(42, ip("10.2.0.1"), 1).value == "plain /8"
    # A plain entry for exactly the destination answers the other sources.
    cache.insert(42, net("10.2.0.0/16"), "plain /16", now=0, ttl=60)
    assert cache.lookup(42, ip("10.2.0.1"), 1, source=ip("10.1.0.11")).value == "plain /16"
    assert cache.lookup(42, ip("10.2.0.1"), 1, source=ip("10.1.0.10")).value == "h1"
    assert len(cache) == 3 and len(cache.source_specific) == 1


def test_map_cache_expiry_and_deadline_cover_both_kinds():
    cache: MapCache[str] = MapCache()
    cache.insert(42, net("10.3.0.0/16"), "plain", now=0, ttl=20)
    sd = cache.insert_source_specific(key("10.1.0.10/32", "10.2.0.0/16"), "sd", now=0, ttl=10)
    assert sd.dest == net("10.2.0.0/16") and sd.eid == net("10.1.0.10/32")
    assert cache.next_deadline() == 10
    assert [(e.value, e.dest) for e in cache.expire(10)] == [("sd", net("10.2.0.0/16"))]
    assert cache.next_deadline() == 20 and not cache.source_specific
    [plain] = cache.expire(20)
    assert (plain.value, plain.dest) == ("plain", None) and cache.next_deadline() is None


def test_map_cache_source_specific_get_remove_and_remove_within():
    cache: MapCache[str] = MapCache()
    assert cache.remove_source_specific_within(42, net("10.0.0.0/8")) == []
    cache.insert_source_specific(key("10.1.0.10/32", "10.2.5.0/24"), "a", now=0, ttl=60)
    cache.insert_source_specific(key("10.1.0.10/32", "10.3.0.0/16"), "b", now=0, ttl=60)
    assert cache.get_source_specific(key("10.1.0.10/32", "10.2.5.0/24")).value == "a"
    assert [e.value for e in cache.remove_source_specific_within(42, net("10.2.0.0/16"))] == ["a"]
    assert cache.remove_source_specific(key("10.1.0.10/32", "10.2.5.0/24")) is None
    assert cache.remove_source_specific(key("10.1.0.10/32", "10.3.0.0/16")).value == "b"
    assert not cache.source_specific and len(cache) == 0

