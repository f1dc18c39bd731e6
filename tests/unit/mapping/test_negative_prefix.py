"""The widest negative prefix (RFC 9301 negative Map-Reply EID-prefix) against a brute-force oracle."""

from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisp_ryu.mapping import AddressCovered, EidError, PrefixTable

N = ip_network
A = ip_address


def table_of(iid, *texts):
    t = PrefixTable()
    for text in texts:
        t.insert(iid, N(text), text)
    return t


def oracle(nets, address):
    """Walk every mask length from /0 down: the first prefix around `address` that overlaps nothing."""
    cls = IPv4Network if address.version == 4 else IPv6Network
    for length in range(address.max_prefixlen + 1):
        candidate = cls((int(address), length), strict=False)
        if not any(candidate.overlaps(n) for n in nets if n.version == address.version):
            return candidate
    raise AssertionError("unreachable: an uncovered address always has a free host route")


@pytest.mark.parametrize(("stored", "address", "want"), [
    ((), "10.9.0.1", "0.0.0.0/0"),
    (("10.0.0.0/8",), "11.8.0.1", "11.0.0.0/8"),
    # OOR answered 11.8.0.0/13 for 10.9.0.1 with 10.1.0.0/16 registered; the RFC's answer:
    (("10.1.0.0/16",), "10.9.0.1", "10.8.0.0/13"),
    (("10.1.0.0/16",), "192.0.2.1", "128.0.0.0/1"),
    (("10.1.0.0/16",), "0.0.0.1", "0.0.0.0/5"),
    (("10.1.0.0/16", "10.3.0.0/16"), "10.2.0.1", "10.2.0.0/16"),
    (("128.0.0.0/1",), "1.2.3.4", "0.0.0.0/1"),
    (("10.1.2.3/32",), "10.1.2.2", "10.1.2.2/32"),
    (("10.1.2.2/32", "10.1.2.0/31"), "10.1.2.3", "10.1.2.3/32"),
    (("255.255.255.255/32",), "255.255.255.254", "255.255.255.254/32"),
    (("2001:db8::/32",), "2001:db9::1", "2001:db9::/32"),
    (("2001:db8::1/128",), "2001:db8::", "2001:db8::/128"),
    (("2001:db8::/32",), "3000::1", "3000::/4"),
    (("2001:db8::/32",), "::1", "::/3"),
])
def test_examples(stored, address, want):
    t = table_of(42, *stored)
    got = t.widest_negative(42, A(address))
    assert got == N(want)
    assert got == oracle([N(s) for s in stored], A(address))


def test_other_families_and_instances_do_not_count():
    t = PrefixTable()
    t.insert(1, N("::/0"), "v6 default")
    t.insert(2, N("0.0.0.0/0"), "iid 2 default")
    assert t.widest_negative(1, A("10.0.0.1")) == N("0.0.0.0/0")
    assert t.widest_negative(3, A("2001:db8::1")) == N("::/0")


def test_a_covered_address_is_an_error_naming_the_covering_prefix():
    t = table_of(7, "10.0.0.0/8", "10.1.0.0/16")
    with pytest.raises(AddressCovered) as err:
        t.widest_negative(7, A("10.1.2.3"))
    assert err.value.covering == N("10.1.0.0/16")
    assert "[7]10.1.2.3 is covered by stored prefix [7]10.1.0.0/16" in str(err.value)
    with pytest.raises(AddressCovered):
        table_of(7, "0.0.0.0/0").widest_negative(7, A("1.1.1.1"))


def test_bad_arguments():
    t = table_of(1, "10.0.0.0/8")
    with pytest.raises(EidError):
        t.widest_negative(1, "11.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(EidError):
        t.widest_negative(-1, A("11.0.0.1"))


def test_the_hole_reopens_when_prefixes_go():
    t = table_of(1, "10.1.0.0/16", "10.2.0.0/16")
    assert t.widest_negative(1, A("10.3.0.1")) == N("10.3.0.0/16")
    t.remove(1, N("10.2.0.0/16"))
    assert t.widest_negative(1, A("10.3.0.1")) == N("10.2.0.0/15")
    t.remove(1, N("10.1.0.0/16"))
    assert t.widest_negative(1, A("10.3.0.1")) == N("0.0.0.0/0")


# -------------------------------------------------------------- properties


def clustered(width):
    """Addresses sharing leading bits often, so holes are narrow and nested."""
    return st.builds(
        lambda hi, mid, lo: (hi << (width - 3)) | (mid << (width - 10)) | lo,
        st.integers(0, 7), st.integers(0, 7), st.integers(0, (1 << (width - 10)) - 1))


@st.composite
def table_and_address(draw, width):
    cls = IPv4Network if width == 32 else IPv6Network
    lengths = st.one_of(st.integers(1, width), st.integers(1, 16))
    nets = draw(st.lists(
        st.builds(lambda a, plen: cls((a, plen), strict=False), clustered(width), lengths), max_size=25))
    # Addresses next to stored prefixes are the interesting ones: one off either end.
    near = [int(n.network_address) - 1 for n in nets] + [int(n.broadcast_address) + 1 for n in nets]
    near = [x for x in near if 0 <= x < 1 << width]
    raw = draw(st.one_of(clustered(width), st.sampled_from(near)) if near else clustered(width))
    return nets, ip_address(raw.to_bytes(width // 8, "big"))


def check_against_oracle(nets, address):
    t = PrefixTable()
    for n in nets:
        t.insert(9, n, None)
    covering = [n for n in nets if address in n]
    if covering:
        with pytest.raises(AddressCovered) as err:
            t.widest_negative(9, address)
        assert err.value.covering == max(covering, key=lambda n: n.prefixlen)
        return
    got = t.widest_negative(9, address)
    assert address in got
    assert not any(got.overlaps(n) for n in nets)
    if got.prefixlen:
        parent = got.supernet()
        assert any(parent.overlaps(n) for n in nets)
    assert got == oracle(nets, address)


@settings(max_examples=300, deadline=None)
@given(table_and_address(32))
def test_ipv4_matches_the_oracle(case):
    check_against_oracle(*case)


@settings(max_examples=200, deadline=None)
@given(table_and_address(128))
def test_ipv6_matches_the_oracle(case):
    check_against_oracle(*case)


@settings(max_examples=100, deadline=None)
@given(table_and_address(32), st.data())
def test_still_right_after_removals(case, data):
    """Removing prefixes must leave the shape index answering as if they were never there."""
    nets, address = case
    nets = list(dict.fromkeys(nets))  # a duplicate would be removed under its twin's feet
    t = PrefixTable()
    for n in nets:
        t.insert(9, n, None)
    keep = data.draw(st.lists(st.booleans(), min_size=len(nets), max_size=len(nets)))
    for n, k in zip(nets, keep):
        if not k:
            t.remove(9, n)
    kept = [n for n, k in zip(nets, keep) if k]
    t.check_invariants()
    if not any(address in n for n in kept):
        assert t.widest_negative(9, address) == oracle(kept, address)
