"""PrefixTable and MacTable: exact and longest-prefix operations, checked against brute force.

Also the EID values they key on: instance-ID and prefix validation, and MAC EIDs
(the codec's MacAddress).
"""

import ipaddress
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from lisp_ryu import wire
from lisp_ryu.mapping import (
    EidError,
    MacAddress,
    MacTable,
    MAX_IID,
    PrefixNotFound,
    PrefixTable,
    check_iid,
    parse_network,
)

N = ip_network
A = ip_address


def table_of(*specs):
    t = PrefixTable()
    for iid, text in specs:
        t.insert(iid, N(text), text)
    return t


# ---------------------------------------------------------------- EID values


def test_parse_network_accepts_both_families_and_host_routes():
    assert parse_network("10.1.0.0/16") == ipaddress.IPv4Network("10.1.0.0/16")
    assert parse_network(" 2001:db8::/32 ") == ipaddress.IPv6Network("2001:db8::/32")
    assert parse_network("10.1.2.3") == ipaddress.IPv4Network("10.1.2.3/32")
    assert parse_network("::/0").prefixlen == 0


@pytest.mark.parametrize("text", ["10.1.2.3/16", "10.0.0.0/33", "2001:db8::1/32", "banana", "", "10.0.0.0/-1"])
def test_parse_network_refuses_bad_prefixes_and_names_them(text):
    with pytest.raises(EidError, match="bad EID prefix"):
        parse_network(text)


def test_parse_network_refuses_non_strings():
    with pytest.raises(EidError, match="expected a prefix string"):
        parse_network(ipaddress.IPv4Network("10.0.0.0/8"))  # type: ignore[arg-type]


@pytest.mark.parametrize("iid", [-1, MAX_IID + 1, True, 1.0, "1", None])
def test_check_iid_refuses_what_is_not_a_24_bit_int(iid):
    with pytest.raises(EidError, match="instance-ID"):
        check_iid(iid)


def test_check_iid_accepts_the_range_ends():
    assert check_iid(0) == 0
    assert check_iid(MAX_IID) == MAX_IID


def test_mac_eids_are_the_codecs_mac_address():
    assert MacAddress is wire.MacAddress


@pytest.mark.parametrize("text", ["02:00:00:00:01:0a", "02-00-00-00-01-0A"])
def test_mac_parses_common_notations(text):
    mac = MacAddress.parse(text)
    assert int(mac) == 0x02000000010A
    assert str(mac) == "02:00:00:00:01:0a"
    assert mac.value == bytes.fromhex("02000000010a")


@pytest.mark.parametrize("text", ["02:00:00:00:01", "02:00:00:00:01:0g", "0200.0000.010a", ""])
def test_mac_refuses_malformed_text(text):
    with pytest.raises(ValueError, match="not a MAC address"):
        MacAddress.parse(text)


@pytest.mark.parametrize("value", [bytes(5), bytes(7), 1, "02:00:00:00:01:0a"])
def test_mac_refuses_what_is_not_six_bytes(value):
    with pytest.raises(ValueError):
        MacAddress(value)


# ---------------------------------------------------------------- examples


def test_longest_match_picks_the_most_specific_prefix():
    t = table_of((1, "0.0.0.0/0"), (1, "10.0.0.0/8"), (1, "10.1.0.0/16"), (1, "10.1.2.3/32"))
    assert t.longest_match(1, A("10.1.2.3")) == (N("10.1.2.3/32"), "10.1.2.3/32")
    assert t.longest_match(1, A("10.1.2.4")) == (N("10.1.0.0/16"), "10.1.0.0/16")
    assert t.longest_match(1, A("10.200.0.1")) == (N("10.0.0.0/8"), "10.0.0.0/8")
    assert t.longest_match(1, A("192.0.2.1")) == (N("0.0.0.0/0"), "0.0.0.0/0")


def test_ipv6_uses_the_full_128_bits_including_default_and_host_routes():
    t = table_of((0, "::/0"), (0, "2001:db8::/32"), (0, "2001:db8::1/128"), (0, "2001:db8:0:0:8000::/65"))
    assert t.longest_match(0, A("2001:db8::1"))[0] == N("2001:db8::1/128")
    assert t.longest_match(0, A("2001:db8::2"))[0] == N("2001:db8::/32")
    # bit 64 set: only the /65 distinguishes it from ::2, deep in the low half of the address
    assert t.longest_match(0, A("2001:db8::8000:0:0:2"))[0] == N("2001:db8:0:0:8000::/65")
    assert t.longest_match(0, A("2001:db9::"))[0] == N("::/0")
    t.remove(0, N("::/0"))
    assert t.longest_match(0, A("2001:db9::")) is None
    t.check_invariants()


def test_instance_ids_and_families_never_leak_into_each_other():
    t = table_of((1, "10.0.0.0/8"), (2, "10.1.0.0/16"), (1, "::/0"))
    assert t.longest_match(1, A("10.1.0.1"))[0] == N("10.0.0.0/8")
    assert t.longest_match(2, A("10.1.0.1"))[0] == N("10.1.0.0/16")
    assert t.longest_match(2, A("10.2.0.1")) is None
    assert t.longest_match(3, A("10.1.0.1")) is None
    # ::/0 in iid 1 does not catch IPv4 addresses (pytricia alone would mix the families)
    assert t.longest_match(1, A("11.0.0.1")) is None
    assert t.longest_match(1, A("::ffff:11.0.0.1"))[0] == N("::/0")


def test_insert_replaces_and_reports_it():
    t = PrefixTable()
    assert t.insert(1, N("10.0.0.0/8"), "a") is False
    assert t.insert(1, N("10.0.0.0/8"), "b") is True
    assert len(t) == 1
    assert t.get(1, N("10.0.0.0/8")) == "b"
    assert t.longest_match(1, A("10.0.0.1")) == (N("10.0.0.0/8"), "b")


def test_get_is_exact_and_contains_works_on_keys():
    t = table_of((1, "10.0.0.0/8"))
    assert t.get(1, N("10.0.0.0/16")) is None
    assert t.get(1, N("10.0.0.0/16"), "dflt") == "dflt"
    assert t.get(1, N("0.0.0.0/0")) is None
    assert (1, N("10.0.0.0/8")) in t
    assert (1, N("10.0.0.0/9")) not in t
    assert (2, N("10.0.0.0/8")) not in t
    assert "10.0.0.0/8" not in t


def test_a_branch_point_is_not_a_stored_prefix():
    # 10.0.0.0/8 and 10.128.0.0/9 force no branch; 10.1/16 and 10.2/16 branch at 10.0.0.0/14.
    t = table_of((1, "10.1.0.0/16"), (1, "10.2.0.0/16"))
    assert t.get(1, N("10.0.0.0/14")) is None
    assert (1, N("10.0.0.0/14")) not in t
    assert t.covering(1, N("10.0.0.0/14")) is None
    with pytest.raises(PrefixNotFound):
        t.remove(1, N("10.0.0.0/14"))
    t.insert(1, N("10.0.0.0/14"), "now stored")  # turning a branch point into a prefix
    assert t.longest_match(1, A("10.3.0.1")) == (N("10.0.0.0/14"), "now stored")
    t.check_invariants()


def test_values_are_every_stored_value_whether_a_trie_holds_host_routes_only_or_not():
    t = table_of((1, "10.0.0.1/32"), (1, "10.0.0.2/32"), (1, "2001:db8::1/128"),  # host routes only
                 (2, "10.0.0.0/8"), (2, "10.0.0.3/32"), (2, "10.1.0.0/16"))  # mixed
    assert sorted(t.values()) == sorted(v for _, _, v in t) == sorted(
        ["10.0.0.1/32", "10.0.0.2/32", "2001:db8::1/128", "10.0.0.0/8", "10.0.0.3/32", "10.1.0.0/16"])
    t.remove(2, N("10.0.0.0/8"))
    t.remove(2, N("10.1.0.0/16"))  # now host routes only there too
    assert sorted(t.values()) == ["10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32", "2001:db8::1/128"]


def test_remove_returns_the_value_and_absent_prefixes_raise_a_clear_key_error():
    t = table_of((1, "10.0.0.0/8"), (1, "10.1.0.0/16"))
    assert t.remove(1, N("10.0.0.0/8")) == "10.0.0.0/8"
    assert t.longest_match(1, A("10.2.0.1")) is None
    with pytest.raises(PrefixNotFound) as err:
        t.remove(1, N("10.0.0.0/8"))
    assert isinstance(err.value, KeyError)
    assert str(err.value) == "prefix [1]10.0.0.0/8 is not in the table"
    with pytest.raises(PrefixNotFound):
        t.remove(9, N("10.0.0.0/8"))
    t.remove(1, N("10.1.0.0/16"))
    assert len(t) == 0 and list(t) == []
    t.check_invariants()


def test_covering_and_more_specifics():
    t = table_of((1, "10.0.0.0/8"), (1, "10.1.0.0/16"), (1, "10.1.2.0/24"), (1, "10.2.0.0/16"), (1, "11.0.0.0/8"))
    assert t.covering(1, N("10.1.2.128/25")) == (N("10.1.2.0/24"), "10.1.2.0/24")
    assert t.covering(1, N("10.1.2.0/24"))[0] == N("10.1.2.0/24")
    assert t.covering(1, N("10.1.2.0/24"), strict=True)[0] == N("10.1.0.0/16")
    assert t.covering(1, N("10.0.0.0/8"), strict=True) is None
    assert t.covering(1, N("0.0.0.0/0")) is None
    assert [n for n, _ in t.more_specifics(1, N("10.0.0.0/8"))] == [
        N("10.0.0.0/8"), N("10.1.0.0/16"), N("10.1.2.0/24"), N("10.2.0.0/16")]
    assert [n for n, _ in t.more_specifics(1, N("10.0.0.0/8"), strict=True)] == [
        N("10.1.0.0/16"), N("10.1.2.0/24"), N("10.2.0.0/16")]
    assert [n for n, _ in t.more_specifics(1, N("10.0.0.0/14"))] == [
        N("10.1.0.0/16"), N("10.1.2.0/24"), N("10.2.0.0/16")]
    assert [n for n, _ in t.more_specifics(1, N("0.0.0.0/0"))][-1] == N("11.0.0.0/8")
    assert t.more_specifics(1, N("12.0.0.0/8")) == []
    assert t.more_specifics(1, N("10.3.0.0/16")) == []
    assert t.more_specifics(2, N("0.0.0.0/0")) == []


def test_iteration_is_sorted_by_iid_family_address_length():
    t = table_of((2, "10.0.0.0/8"), (1, "2001:db8::/32"), (1, "10.1.0.0/16"), (1, "10.0.0.0/8"), (1, "0.0.0.0/0"))
    assert [(i, str(n)) for i, n, _ in t] == [
        (1, "0.0.0.0/0"), (1, "10.0.0.0/8"), (1, "10.1.0.0/16"), (1, "2001:db8::/32"), (2, "10.0.0.0/8")]


def test_bad_arguments_raise_eid_errors_not_silent_misses():
    t = table_of((1, "10.0.0.0/8"))
    with pytest.raises(EidError, match="IPv4Network/IPv6Network"):
        t.insert(1, "10.0.0.0/8", "x")  # type: ignore[arg-type]
    with pytest.raises(EidError, match="instance-ID"):
        t.insert(-1, N("10.0.0.0/8"), "x")
    with pytest.raises(EidError, match="instance-ID"):
        t.insert(MAX_IID + 1, N("10.0.0.0/8"), "x")
    with pytest.raises(EidError, match="IPv4Address/IPv6Address"):
        t.longest_match(1, "10.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(EidError, match="IPv4Address/IPv6Address"):
        t.longest_match(1, N("10.0.0.0/8"))  # type: ignore[arg-type]
    with pytest.raises(EidError, match="IPv4Address/IPv6Address"):
        t.longest_match(5, "10.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(EidError, match="instance-ID"):
        t.longest_match(True, A("10.0.0.1"))  # type: ignore[arg-type]
    with pytest.raises(EidError):
        t.covering(1, A("10.0.0.1"))  # type: ignore[arg-type]
    with pytest.raises(EidError):
        t.more_specifics(1, "10.0.0.0/8")  # type: ignore[arg-type]
    assert len(t) == 1


def test_mac_table_is_exact_per_instance():
    t = MacTable()
    mac = MacAddress.parse("02:00:00:00:01:0a")
    other = MacAddress.parse("02:00:00:00:01:0b")
    assert t.insert(5, mac, "h1") is False
    assert t.insert(5, mac, "h1'") is True
    assert t.longest_match(5, mac) == (mac, "h1'")
    assert t.longest_match(5, other) is None
    assert t.longest_match(6, mac) is None
    assert t.get(5, other, "dflt") == "dflt"
    assert (5, mac) in t and (6, mac) not in t
    t.insert(4, other, "h2")
    assert list(t) == [(4, other, "h2"), (5, mac, "h1'")]
    assert t.remove(5, mac) == "h1'"
    with pytest.raises(PrefixNotFound, match=r"MAC \[5\]02:00:00:00:01:0a"):
        t.remove(5, mac)
    with pytest.raises(EidError, match="MacAddress"):
        t.insert(5, "02:00:00:00:01:0a", "x")  # type: ignore[arg-type]
    assert len(t) == 1


def test_mac_table_keys_by_the_48_bit_value_however_the_mac_was_written():
    t = MacTable()
    t.insert(5, MacAddress.parse("02-00-00-00-01-0A"), "h1")
    same = MacAddress(bytes.fromhex("02000000010a"))
    assert same in [mac for _iid, mac, _v in t]
    assert t.get(5, same) == "h1" and (5, same) in t
    assert t.insert(5, same, "h1'") is True
    assert len(t) == 1


# ------------------------------------------------------ brute-force oracle

IIDS = [0, 1, MAX_IID]


def clustered_int(width):
    """Addresses that share leading bits often, so random prefixes nest and overlap."""
    return st.builds(
        lambda hi, mid, lo: (hi << (width - 3)) | (mid << (width - 12)) | lo,
        st.integers(0, 7), st.integers(0, 3), st.integers(0, (1 << (width - 12)) - 1))


def networks(width):
    cls = IPv4Network if width == 32 else IPv6Network
    lengths = st.one_of(st.integers(0, width), st.integers(0, 14), st.sampled_from([0, 1, width - 1, width]))
    return st.builds(lambda a, plen: cls((a >> (width - plen) << (width - plen) if plen else 0, plen)),
                     clustered_int(width), lengths)


def addresses(width):
    return clustered_int(width).map(lambda a: ip_address(a.to_bytes(width // 8, "big")))


any_network = st.one_of(networks(32), networks(128))


def oracle_lpm(model, iid, address):
    best = None
    for (m_iid, net) in model:
        if m_iid == iid and net.version == address.version and address in net:
            if best is None or net.prefixlen > best.prefixlen:
                best = net
    return best


class PrefixTableMachine(RuleBasedStateMachine):
    """Random inserts/removes in several instances and both families, compared with a dict."""

    def __init__(self):
        super().__init__()
        self.table = PrefixTable()
        self.model: dict[tuple[int, object], object] = {}
        self.counter = 0

    @rule(iid=st.sampled_from(IIDS), net=any_network)
    def insert(self, iid, net):
        self.counter += 1
        replaced = self.table.insert(iid, net, self.counter)
        assert replaced == ((iid, net) in self.model)
        self.model[(iid, net)] = self.counter

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def remove_present(self, data):
        key = data.draw(st.sampled_from(sorted(self.model, key=lambda k: (k[0], k[1].version, k[1]))))
        assert self.table.remove(*key) == self.model.pop(key)

    @rule(iid=st.sampled_from(IIDS), net=any_network)
    def remove_maybe_absent(self, iid, net):
        if (iid, net) in self.model:
            assert self.table.remove(iid, net) == self.model.pop((iid, net))
        else:
            with pytest.raises(PrefixNotFound):
                self.table.remove(iid, net)

    @rule(iid=st.sampled_from(IIDS), data=st.data())
    def longest_match(self, iid, data):
        address = data.draw(st.one_of(addresses(32), addresses(128), self.stored_edge_address()))
        want = oracle_lpm(self.model, iid, address)
        got = self.table.longest_match(iid, address)
        assert got == (None if want is None else (want, self.model[(iid, want)]))

    def stored_edge_address(self):
        """First and last addresses of stored prefixes: where off-by-one bugs live."""
        nets = [net for (_iid, net) in self.model] or [N("10.0.0.0/8")]
        return st.sampled_from(nets).flatmap(lambda n: st.sampled_from([n.network_address, n.broadcast_address]))

    @rule(iid=st.sampled_from(IIDS), net=any_network)
    def covering_and_more_specifics(self, iid, net):
        containing = [n for (i, n) in self.model if i == iid and n.version == net.version and net.subnet_of(n)]
        want = max(containing, key=lambda n: n.prefixlen, default=None)
        got = self.table.covering(iid, net)
        assert got == (None if want is None else (want, self.model[(iid, want)]))
        strict = [n for n in containing if n != net]
        want_strict = max(strict, key=lambda n: n.prefixlen, default=None)
        assert self.table.covering(iid, net, strict=True) == (
            None if want_strict is None else (want_strict, self.model[(iid, want_strict)]))
        inside = sorted(n for (i, n) in self.model if i == iid and n.version == net.version and n.subnet_of(net))
        assert [n for n, _ in self.table.more_specifics(iid, net)] == inside
        assert [n for n, _ in self.table.more_specifics(iid, net, strict=True)] == [n for n in inside if n != net]

    @invariant()
    def consistent(self):
        self.table.check_invariants()
        assert len(self.table) == len(self.model)
        assert [(i, n, v) for i, n, v in self.table] == [
            (i, n, self.model[(i, n)]) for (i, n) in sorted(self.model, key=lambda k: (k[0], k[1].version, k[1]))]
        assert sorted(self.table.values()) == sorted(self.model.values())


PrefixTableMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TestPrefixTableAgainstOracle = PrefixTableMachine.TestCase
