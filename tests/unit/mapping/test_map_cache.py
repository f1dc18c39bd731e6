"""MapCache: TTL expiry with injected time, negative entries, replacement, and a model check."""

import math
from ipaddress import ip_address, ip_network

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from lisp_ryu.mapping import Action, CacheEntry, EidError, MacAddress, MapCache, PrefixNotFound
from lisp_ryu.mapping.mapcache import EidCache
from lisp_ryu.wire.records import Action as WireAction

N = ip_network
A = ip_address


def test_lookup_is_longest_match_and_a_positive_entry_inside_a_negative_one_wins():
    c = MapCache()
    c.insert(1, N("10.0.0.0/8"), None, now=0, ttl=900, action=Action.NATIVELY_FORWARD)
    c.insert(1, N("10.1.0.0/16"), "rlocs of site B", now=0, ttl=600)
    pos = c.lookup(1, A("10.1.0.5"), now=10)
    assert pos is not None and not pos.negative and pos.value == "rlocs of site B"
    neg = c.lookup(1, A("10.2.0.5"), now=10)
    assert neg is not None and neg.negative and neg.action is Action.NATIVELY_FORWARD
    assert c.lookup(2, A("10.1.0.5"), now=10) is None
    assert c.lookup(1, A("11.0.0.1"), now=10) is None


def test_entries_vanish_from_lookup_at_their_expiry_instant():
    c = MapCache()
    c.insert(1, N("10.1.0.0/16"), "x", now=100, ttl=60)
    assert c.lookup(1, A("10.1.0.1"), now=159.999) is not None
    assert c.lookup(1, A("10.1.0.1"), now=160) is None
    assert len(c) == 1  # still held until expire() hands it back


def test_an_expired_more_specific_lets_a_live_covering_entry_answer():
    c = MapCache()
    c.insert(1, N("10.0.0.0/8"), "wide", now=0, ttl=100)
    c.insert(1, N("10.1.0.0/16"), "narrow", now=0, ttl=10)
    c.insert(1, N("10.1.2.0/24"), "narrowest", now=0, ttl=5)
    assert c.lookup(1, A("10.1.2.3"), now=4).value == "narrowest"
    assert c.lookup(1, A("10.1.2.3"), now=7).value == "narrow"
    assert c.lookup(1, A("10.1.2.3"), now=50).value == "wide"
    assert c.lookup(1, A("10.1.2.3"), now=100) is None


def test_expire_returns_removed_entries_soonest_first_and_next_deadline_follows():
    c = MapCache()
    c.insert(1, N("10.3.0.0/16"), "c", now=0, ttl=30)
    c.insert(1, N("10.1.0.0/16"), "a", now=0, ttl=10)
    c.insert(1, N("10.2.0.0/16"), "b", now=0, ttl=20)
    c.insert(2, N("10.4.0.0/16"), "d", now=0, ttl=20)  # same deadline as "b": insertion order
    c.insert(1, MacAddress.parse("02:00:00:00:00:01"), "mac", now=0, ttl=15)
    assert c.next_deadline() == 10
    assert c.expire(now=9.5) == []
    assert [e.value for e in c.expire(now=20)] == ["a", "mac", "b", "d"]
    assert c.next_deadline() == 30
    assert [e.value for e in c.expire(now=1000)] == ["c"]
    assert c.next_deadline() is None and len(c) == 0


def test_replacement_moves_the_deadline_and_the_old_one_does_nothing():
    c = MapCache()
    first = c.insert(1, N("10.1.0.0/16"), "old", now=0, ttl=10)
    second = c.insert(1, N("10.1.0.0/16"), "new", now=5, ttl=100, action=None)
    assert (first.expires_at, second.expires_at) == (10, 105)
    assert len(c) == 1
    assert c.next_deadline() == 105  # the stale heap item for t=10 is skipped
    assert c.expire(now=50) == []
    assert c.lookup(1, A("10.1.0.1"), now=50) is second
    # and shortening the TTL works too
    third = c.insert(1, N("10.1.0.0/16"), "short", now=60, ttl=1)
    assert c.next_deadline() == 61
    assert c.expire(now=61) == [third]


def test_replacing_positive_by_negative_and_back():
    c = MapCache()
    c.insert(1, N("10.1.0.0/16"), "pos", now=0, ttl=60)
    c.insert(1, N("10.1.0.0/16"), None, now=1, ttl=60, action=Action.DROP_POLICY_DENIED)
    hit = c.lookup(1, A("10.1.0.1"), now=2)
    assert hit.negative and hit.action is Action.DROP_POLICY_DENIED
    c.insert(1, N("10.1.0.0/16"), "pos again", now=3, ttl=60)
    assert not c.lookup(1, A("10.1.0.1"), now=4).negative


def test_action_is_the_codecs_so_a_decoded_record_action_goes_in_as_is():
    assert Action is WireAction
    c = MapCache()
    entry = c.insert(1, N("10.2.0.0/16"), None, now=0, ttl=60, action=WireAction(3))
    assert entry.action is Action.DROP_NO_REASON


def test_remove_is_exact_and_cancels_the_deadline():
    c = MapCache()
    c.insert(1, N("10.1.0.0/16"), "x", now=0, ttl=10)
    with pytest.raises(PrefixNotFound):
        c.remove(1, N("10.1.0.0/17"))
    removed = c.remove(1, N("10.1.0.0/16"))
    assert removed.value == "x"
    assert c.next_deadline() is None
    assert c.expire(now=100) == []
    with pytest.raises(PrefixNotFound):
        c.remove(1, N("10.1.0.0/16"))


def test_infinite_and_zero_ttl():
    c = MapCache()
    forever = c.insert(1, N("10.0.0.0/8"), "static", now=0, ttl=math.inf)
    c.insert(1, N("10.1.0.0/16"), "gone", now=0, ttl=0)
    assert c.next_deadline() == 0
    assert c.lookup(1, A("10.1.0.1"), now=0) is forever  # a TTL of 0 is never visible
    assert [e.value for e in c.expire(now=0)] == ["gone"]
    assert c.next_deadline() is None
    assert c.lookup(1, A("10.1.0.1"), now=1e12) is forever


def test_mac_entries_are_exact():
    c = MapCache()
    mac = MacAddress.parse("02:00:00:00:01:0a")
    c.insert(5, mac, "host", now=0, ttl=60)
    assert c.lookup(5, mac, now=1).value == "host"
    assert c.lookup(5, MacAddress.parse("02:00:00:00:01:0b"), now=1) is None
    assert c.lookup(5, mac, now=60) is None
    assert c.get(5, mac).value == "host"


def test_within_lists_entries_inside_a_prefix():
    c = MapCache()
    for text in ("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "11.0.0.0/8"):
        c.insert(1, N(text), text, now=0, ttl=60)
    assert [e.value for e in c.within(1, N("10.1.0.0/16"))] == ["10.1.0.0/16", "10.1.2.0/24"]


def test_entries_are_frozen():
    entry = MapCache().insert(1, N("10.0.0.0/8"), "x", now=0, ttl=1)
    assert isinstance(entry, CacheEntry)
    with pytest.raises(AttributeError):
        entry.expires_at = 5  # type: ignore[misc]


@pytest.mark.parametrize("kwargs", [
    {"now": -1, "ttl": 1}, {"now": math.nan, "ttl": 1}, {"now": math.inf, "ttl": 1}, {"now": "0", "ttl": 1},
    {"now": 0, "ttl": -5}, {"now": 0, "ttl": math.nan}, {"now": 0, "ttl": True},
    {"now": 0, "ttl": 1, "action": 3},
])
def test_bad_times_and_actions_are_refused(kwargs):
    c = MapCache()
    with pytest.raises(EidError):
        c.insert(1, N("10.0.0.0/8"), "x", **kwargs)
    assert len(c) == 0 and c.next_deadline() is None


def test_bad_keys_are_refused_and_leave_no_trace():
    c = MapCache()
    with pytest.raises(EidError):
        c.insert(1, "10.0.0.0/8", "x", now=0, ttl=1)  # type: ignore[arg-type]
    with pytest.raises(EidError):
        c.insert(1 << 24, N("10.0.0.0/8"), "x", now=0, ttl=1)
    assert len(c) == 0 and c.next_deadline() is None


def test_heavy_replacement_does_not_grow_the_heap_without_bound():
    c = EidCache()  # the MapCache's table of plain entries, which owns the heap
    for i in range(5000):
        c.insert(1, N("10.1.0.0/16"), i, now=i, ttl=10)
    assert len(c._heap) <= 2 * 1 + 64 + 1
    assert c.next_deadline() == 4999 + 10


# ------------------------------------------------------------ model check

PREFIXES = [N(t) for t in ("0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32",
                          "10.2.0.0/16", "2001:db8::/32", "2001:db8:1::/48")]
MACS = [MacAddress(bytes.fromhex("000000000001")), MacAddress(bytes.fromhex("000000000002"))]
ADDRS = [A(t) for t in ("10.1.2.3", "10.1.2.4", "10.1.9.9", "10.2.0.1", "10.9.0.1", "11.0.0.1",
                        "2001:db8:1::1", "2001:db8:2::1", "2001:db9::1")]


class MapCacheMachine(RuleBasedStateMachine):
    """Random inserts, removes and clock steps against a plain dict of live entries."""

    def __init__(self):
        super().__init__()
        self.cache = MapCache(locators=_locators_of)
        self.model: dict = {}   # (iid, eid) -> (entry, insertion number)
        self.now = 0.0
        self.n = 0

    @rule(iid=st.sampled_from([1, 2]), eid=st.sampled_from(PREFIXES + MACS),
          ttl=st.one_of(st.integers(0, 50), st.just(math.inf)),
          action=st.one_of(st.none(), st.sampled_from(list(Action))))
    def insert(self, iid, eid, ttl, action):
        entry = self.cache.insert(iid, eid, self.n, now=self.now, ttl=ttl, action=action)
        assert entry.expires_at == self.now + ttl
        self.model[(iid, eid)] = (entry, self.n)
        self.n += 1

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def remove(self, data):
        key = data.draw(st.sampled_from(sorted(self.model, key=str)))
        assert self.cache.remove(*key) == self.model.pop(key)[0]

    @rule(step=st.integers(0, 30))
    def tick(self, step):
        self.now += step
        due = sorted((v for v in self.model.values() if v[0].expires_at <= self.now),
                     key=lambda v: (v[0].expires_at, v[1]))
        assert self.cache.expire(self.now) == [entry for entry, _ in due]
        for entry, _ in due:
            del self.model[(entry.iid, entry.eid)]

    @rule(iid=st.sampled_from([1, 2]), address=st.sampled_from(ADDRS + MACS), ahead=st.integers(0, 20))
    def lookup(self, iid, address, ahead):
        at = self.now + ahead
        live = [e for (i, eid), (e, _) in self.model.items() if i == iid and not e.expired(at)
                and (eid == address if isinstance(address, MacAddress)
                     else not isinstance(eid, MacAddress) and eid.version == address.version and address in eid)]
        want = max(live, key=lambda e: 48 if isinstance(e.eid, MacAddress) else e.eid.prefixlen, default=None)
        assert self.cache.lookup(iid, address, at) == want

    @invariant()
    def deadline_and_size(self):
        finite = [e.expires_at for e, _ in self.model.values() if not math.isinf(e.expires_at)]
        assert self.cache.next_deadline() == (min(finite) if finite else None)
        assert len(self.cache) == len(self.model)
        assert sorted(map(str, self.cache)) == sorted(str(e) for e, _ in self.model.values())
        assert self.cache.locators() == {loc for e, _ in self.model.values() if not e.negative
                                         for loc in _locators_of(e.value)}


def _locators_of(value: int) -> tuple:
    """The state machine's values are insertion numbers: each names a locator or two, some shared."""
    return (f"r{value % 3}", f"r{value % 5}")


MapCacheMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TestMapCacheAgainstModel = MapCacheMachine.TestCase


def test_changes_count_every_change_and_values_sweep_every_entry_without_order():
    c = MapCache()
    seen = c.changes
    c.insert(1, N("10.1.0.0/16"), "a", now=0, ttl=10)
    c.insert(1, N("10.1.0.7/32"), "host", now=0, ttl=100)
    c.insert(2, N("2001:db8::/32"), "v6", now=0, ttl=100)
    assert c.changes == seen + 3
    assert sorted(e.value for e in c.values()) == sorted(e.value for e in c) == ["a", "host", "v6"]
    c.lookup(1, A("10.1.0.7"), now=1)
    assert c.changes == seen + 3  # reading changes nothing
    c.expire(20)
    assert c.changes == seen + 4 and sorted(e.value for e in c.values()) == ["host", "v6"]
    c.remove(1, N("10.1.0.7/32"))
    assert c.changes == seen + 5 and [e.value for e in c.values()] == ["v6"]


def test_the_locators_of_positive_entries_are_counted_as_entries_come_and_go():
    """An old site solicits every locator of its map-cache once per departure: counted, not swept."""
    c = MapCache(locators=lambda value: value)
    c.insert(1, N("10.2.0.0/16"), ("198.18.2.2",), now=0, ttl=10)
    c.insert(1, N("10.3.0.0/16"), ("198.18.3.2", "198.18.4.2", "198.18.3.2"), now=0, ttl=100)
    c.insert(1, N("10.9.0.0/16"), None, now=0, ttl=100, action=Action.NATIVELY_FORWARD)  # negative: none
    assert c.locators() == {"198.18.2.2", "198.18.3.2", "198.18.4.2"}
    c.insert(1, N("10.3.0.0/16"), ("198.18.3.2",), now=1, ttl=100)  # replaced: 198.18.4.2 is gone
    assert c.locators() == {"198.18.2.2", "198.18.3.2"}
    c.insert(1, N("10.3.0.7/32"), ("198.18.2.2",), now=1, ttl=100)
    c.expire(20)  # 10.2.0.0/16 goes; 10.3.0.7/32 still names 198.18.2.2
    assert c.locators() == {"198.18.2.2", "198.18.3.2"}
    c.remove(1, N("10.3.0.7/32"))
    assert c.locators() == {"198.18.3.2"}
    with pytest.raises(TypeError):
        MapCache().locators()
