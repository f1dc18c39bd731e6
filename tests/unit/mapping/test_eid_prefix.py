"""EID values: parsing, validation, and the errors that name the bad input."""

import ipaddress

import pytest

from lisp_ryu.mapping import EidError, EidPrefix, MacAddress, MAX_IID, check_iid, parse_network


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


def test_eid_prefix_parses_lisp_notation_and_prints_it_back():
    p = EidPrefix.parse("[42]10.1.0.0/16")
    assert p == EidPrefix(42, ipaddress.IPv4Network("10.1.0.0/16"))
    assert str(p) == "[42]10.1.0.0/16"
    assert EidPrefix.parse("2001:db8::/48", iid=7).iid == 7
    assert EidPrefix.parse("10.0.0.0/8").iid == 0
    assert EidPrefix.parse("[42]10.1.0.0/16", iid=42).iid == 42


def test_eid_prefix_refuses_two_different_instance_ids():
    with pytest.raises(EidError, match="names instance-ID 42 but 7 was given"):
        EidPrefix.parse("[42]10.1.0.0/16", iid=7)


def test_eid_prefix_validates_fields_and_is_frozen():
    with pytest.raises(EidError):
        EidPrefix(1 << 24, ipaddress.IPv4Network("10.0.0.0/8"))
    with pytest.raises(EidError, match="IPv4Network/IPv6Network"):
        EidPrefix(1, "10.0.0.0/8")  # type: ignore[arg-type]
    with pytest.raises(EidError, match="bad EID prefix"):
        EidPrefix.parse("[1]10.0.0.1/8")
    p = EidPrefix.parse("[1]10.0.0.0/8")
    with pytest.raises(AttributeError):
        p.iid = 2  # type: ignore[misc]


@pytest.mark.parametrize("text", ["02:00:00:00:01:0a", "02-00-00-00-01-0A", "0200.0000.010a"])
def test_mac_parses_common_notations(text):
    mac = MacAddress.parse(text)
    assert mac.value == 0x02000000010A
    assert str(mac) == "02:00:00:00:01:0a"
    assert mac.packed == bytes.fromhex("02000000010a")


@pytest.mark.parametrize("text", ["02:00:00:00:01", "02:00:00:00:01:0g", "02:00-00:00:01:0a", "0200.0000.010", ""])
def test_mac_refuses_malformed_text(text):
    with pytest.raises(EidError, match="bad MAC"):
        MacAddress.parse(text)


@pytest.mark.parametrize("value", [-1, 1 << 48, True, "1"])
def test_mac_refuses_out_of_range_values(value):
    with pytest.raises(EidError):
        MacAddress(value)


def test_eid_prefix_holds_mac_eids():
    p = EidPrefix.parse("[5]02:00:00:00:01:0a")
    assert p.is_mac and p.eid == MacAddress(0x02000000010A)
    assert str(p) == "[5]02:00:00:00:01:0a"
