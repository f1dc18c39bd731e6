"""The shared input readers: what each accepts, and errors that name the field's path."""

import ipaddress
import math

import pytest

from lisp_ryu import config, schema
from lisp_ryu.lab.topology import TopologyError
from lisp_ryu.mapping.policy import PolicyError
from lisp_ryu.schema import InputError, Node


def error_of(read, raw, path="a.b[0].c", **kw):
    with pytest.raises(InputError) as info:
        read(raw, path, **kw)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")
    return info.value


# --------------------------------------------------------------------------- the error


def test_input_error_message_and_field():
    e = InputError("rlocs[0].address", "'x' is not an IP address")
    assert str(e) == "rlocs[0].address: 'x' is not an IP address"
    assert e.field == e.path == "rlocs[0].address" and e.source is None
    assert str(InputError("xtrs[0].dpid", "bad", "lisp.yaml")) == "lisp.yaml: xtrs[0].dpid: bad"
    assert str(InputError("", "cannot read: No such file", "lisp.yaml")) == "lisp.yaml: cannot read: No such file"


def test_front_door_errors_are_input_errors():
    e = config.ConfigError("lisp.yaml", "rest.token", "bad")
    assert isinstance(e, InputError) and (e.source, e.path, e.problem) == ("lisp.yaml", "rest.token", "bad")
    assert issubclass(TopologyError, config.ConfigError)
    assert PolicyError is InputError  # what the REST layer turns into 400 with `.field`


# --------------------------------------------------------------------------- scalars


def test_integer_range_and_type():
    assert schema.integer(7, "p", 0, 10) == 7
    assert "out of range 0..10" in error_of(schema.integer, 11, lo=0, hi=10).problem
    assert "expected an integer" in error_of(schema.integer, True, lo=0, hi=10).problem
    assert "expected an integer" in error_of(schema.integer, "7", lo=0, hi=10).problem
    assert schema.integer("0x10", "p", 0, 100, from_string=True) == 16
    assert schema.int_range(1, 2)(2, "p") == 2
    error_of(schema.int_range(1, 2), 3)


def test_iid_is_24_bits():
    assert schema.iid((1 << 24) - 1, "iid") == (1 << 24) - 1
    error_of(schema.iid, 1 << 24)
    error_of(schema.iid, -1)


def test_numbers():
    assert schema.positive_number(2, "p") == 2.0
    for bad in (0, -1.5, True, "3"):
        error_of(schema.positive_number, bad)
    assert schema.fraction(0, "p") == 0.0 and schema.fraction(0.5, "p") == 0.5
    for bad in (1, -0.1, False):
        error_of(schema.fraction, bad)
    # Finite only: NaN passes every comparison, infinity is no rate, interval or TTL.
    for bad in (math.nan, math.inf, -math.inf, 10 ** 400):
        assert "finite" in error_of(schema.positive_number, bad).problem
    assert schema.finite_number(-2, "p") == -2.0
    error_of(schema.fraction, math.nan)


def test_strings_booleans_enums():
    assert schema.string("x", "p") == "x"
    error_of(schema.string, "")
    error_of(schema.string, 3)
    assert schema.boolean(False, "p") is False
    error_of(schema.boolean, "yes")
    read = schema.one_of(("allow", "deny"))
    assert read("deny", "p") == "deny"
    assert "not one of allow, deny" in error_of(read, "block").problem


def test_mac():
    assert schema.mac("02:AB:00:00:00:01", "p") == "02:ab:00:00:00:01"
    assert schema.mac("03:00:00:00:00:01", "p") == "03:00:00:00:00:01"
    assert "multicast" in error_of(schema.mac, "03:00:00:00:00:01", unicast=True).problem
    error_of(schema.mac, "02:00:00:00:01")
    error_of(schema.mac, 2)


# --------------------------------------------------------------------------- addresses


def test_addresses():
    assert schema.address("2001:db8::1", "p") == ipaddress.ip_address("2001:db8::1")
    assert schema.address(ipaddress.ip_address("10.0.0.1"), "p") == ipaddress.ip_address("10.0.0.1")
    for bad in ("10.0.0.300", 167772161, None, ["10.0.0.1"]):
        error_of(schema.address, bad)
    assert schema.address("10.0.0.1", "p", version=4) == ipaddress.IPv4Address("10.0.0.1")
    assert "IPv4" in error_of(schema.address, "2001:db8::1", version=4).problem
    # The integer form `ipaddress` also takes is a typo in a file, never 0.0.0.1.
    assert "IPv4" in error_of(schema.address, 1, version=4).problem


def test_prefixes_are_strict():
    assert schema.prefix("10.1.0.0/16", "p") == ipaddress.ip_network("10.1.0.0/16")
    assert schema.prefix("10.1.0.9", "p").prefixlen == 32  # a bare address is a host prefix
    assert "host bits" in error_of(schema.prefix, "10.1.0.1/16").problem
    error_of(schema.prefix, 10)
    assert schema.prefix("10.1.0.0/16", "p", version=4) == ipaddress.IPv4Network("10.1.0.0/16")
    error_of(schema.prefix, "2001:db8::/32", version=4)
    error_of(schema.prefix, 167772160, version=4)


def test_endpoint_forms():
    v6 = ipaddress.ip_address("2001:db8::1")
    assert schema.endpoint("[2001:db8::1]:2", "p", 4342) == (v6, 2)
    assert schema.endpoint("[2001:db8::1]", "p", 4342) == (v6, 4342)
    assert schema.endpoint("2001:db8::1", "p", 4342) == (v6, 4342)
    assert schema.endpoint("2001:db8::1:2", "p", 4342) == (ipaddress.ip_address("2001:db8::1:2"), 4342)
    assert schema.endpoint("192.0.2.1:80", "p", 4342) == (ipaddress.ip_address("192.0.2.1"), 80)
    assert schema.endpoint("192.0.2.1:0", "p", 4342, min_port=0)[1] == 0
    for bad in ("192.0.2.1:0", "[2001:db8::1", "[192.0.2.1]:80", "192.0.2.1: 80", "192.0.2.1:+80", 62, None):
        assert "[2001:db8::1]:4342" in error_of(schema.endpoint, bad, default_port=4342).problem


def test_show_is_bounded():
    assert len(schema.show("x" * 10 ** 6)) < 100
    assert len(schema.show([[["x"] * 10 ** 5] * 10 ** 3])) < 200
    assert schema.show(10 ** 5000) == "an integer of about 5001 digits"
    loop: list = []
    loop.append(loop)
    assert len(schema.show(loop)) < 50
    assert len(str(InputError("k" * 10 ** 5, "x" * 10 ** 5, "f.yaml"))) < 700


def test_interface():
    iface = schema.interface("198.18.1.2/24", "p")
    assert iface.ip == ipaddress.IPv4Address("198.18.1.2") and iface.network.prefixlen == 24
    assert "network or broadcast" in error_of(schema.interface, "198.18.1.0/24").problem
    assert schema.interface("198.18.1.0/31", "p").ip == ipaddress.IPv4Address("198.18.1.0")
    assert "ADDRESS/LENGTH" in error_of(schema.interface, "198.18.1.2").problem


# --------------------------------------------------------------------------- containers


def test_seq_names_each_item():
    assert schema.seq([1, 2], "xs", schema.int_range(0, 9)) == [1, 2]
    with pytest.raises(InputError) as info:
        schema.seq([1, 20], "xs", schema.int_range(0, 9))
    assert info.value.path == "xs[1]"
    assert "expected a list" in error_of(schema.seq, {"a": 1}, item=schema.string).problem
    assert "at least 1 entry" in error_of(schema.seq, [], item=schema.string, min_len=1).problem
    assert "at most 2 entries" in error_of(schema.seq, [1, 2, 3], item=schema.string, max_len=2).problem


def test_node_paths_defaults_and_unknown_keys():
    node = Node({"a": 1, "inner": {"b": "x"}, "items": [{"c": True}]}, "top")
    assert node.get("a", schema.int_range(0, 9)) == 1
    assert node.get("missing", schema.string, "dflt") == "dflt"
    inner = node.node("inner")
    assert inner.path == "top.inner" and inner.get("b", schema.string) == "x"
    (item,) = node.nodes("items")
    assert item.path == "top.items[0]"
    with pytest.raises(InputError) as info:
        item.get("d", schema.boolean)
    assert info.value.path == "top.items[0].d" and "missing required key" in info.value.problem
    node.done()
    extra = Node({"a": 1, "typo": 2}, "top")
    extra.get("a", schema.int_range(0, 9))
    with pytest.raises(InputError) as info:
        extra.done()
    assert info.value.path == "top.typo" and "unknown key (expected one of: a)" in info.value.problem


def test_node_null_is_absent_only_when_asked():
    assert Node({"a": None}, null_is_absent=True).get("a", schema.string, "d") == "d"
    with pytest.raises(InputError) as info:
        Node({"a": None}, "n").get("a", schema.string, "d")
    assert info.value.path == "n.a"


def test_node_expect_checks_unknown_then_missing():
    with pytest.raises(InputError) as info:
        Node({"x": 1}, "s").expect({"a", "b"}, {"c"})
    assert info.value.path == "s.x" and "unknown key" in info.value.problem
    with pytest.raises(InputError) as info:
        Node({"c": 1}, "s").expect({"b", "a"}, {"c"})
    assert info.value.path == "s.a"
    assert Node({"a": 1}, "s").expect({"a"}).value == {"a": 1}


def test_node_of_a_non_mapping_names_its_path_or_root():
    with pytest.raises(InputError) as info:
        Node([1], "sites[2]")
    assert info.value.path == "sites[2]" and "expected a mapping, got list" in info.value.problem
    with pytest.raises(InputError) as info:
        Node("text", root="body")
    assert info.value.field == "body"


# --------------------------------------------------------------------------- files


def test_load_yaml_names_the_file(tmp_path):
    good = tmp_path / "a.yaml"
    good.write_text("a: [1, 2]\n")
    assert schema.load_yaml(good) == {"a": [1, 2]}
    with pytest.raises(InputError) as info:
        schema.load_yaml(tmp_path / "missing.yaml")
    assert info.value.source == str(tmp_path / "missing.yaml") and "cannot read" in str(info.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML") as info:
        schema.load_yaml(bad)
    assert str(info.value).startswith(str(bad)) and "(line 2, column 1)" in str(info.value)


@pytest.mark.parametrize("data,words", [
    (b"\xff\xfea\x00:\x00", "UTF-16 (it starts with a UTF-16 byte order mark)"),
    (b"a: caf\xe9\n", "the byte at offset 6 (line 1) is 0xe9"),
    (b"a: 1\nb: \x00\n", "a NUL byte at offset 8 (line 2"),
])
def test_load_yaml_reads_utf8_bytes_only(tmp_path, data, words):
    path = tmp_path / "a.yaml"
    path.write_bytes(data)
    with pytest.raises(InputError) as info:
        schema.load_yaml(path)
    assert info.value.source == str(path) and words in info.value.problem
    path.write_bytes(b"\xef\xbb\xbfa: caf\xc3\xa9\n")  # a UTF-8 BOM is fine
    assert schema.load_yaml(path) == {"a": "caf\u00e9"}


@pytest.mark.parametrize("text,path,words", [
    ("a: 1\nb: {c: 1, c: 2}\n", "b.c", "duplicate key (first at line 2, again at line 2"),
    ("a: 1\na: 2\n", "a", "duplicate key"),
    ("a: &x [*x]\n", "a[0]", "contains it"),
    ("a: " + "[" * 65 + "]" * 65, "a" + "[0]" * 19 + "[\u2026", "deeper than 64"),  # a long path cut short
    ("a: " + "9" * 101, "a", "101 digits"),
    ("x: &x [" + ",".join("1" * 3000) + "]\ny: [*x, *x, *x, *x]\n", "y[3]", "more than 10000 nodes"),
])
def test_loader_limits_name_the_path(text, path, words):
    with pytest.raises(InputError) as info:
        schema.parse_yaml(text, "f.yaml")
    assert info.value.path == path and words in info.value.problem and info.value.source == "f.yaml"


def test_loader_keeps_merge_keys_and_small_aliases():
    tree = schema.parse_yaml("d: &d {a: 1, b: 2}\nm: {<<: *d, b: 3}\nl: [*d, *d]\n" + "a" * 64 + ": 1\n", "f")
    assert tree["m"] == {"a": 1, "b": 3} and tree["l"] == [{"a": 1, "b": 2}] * 2
    assert schema.parse_yaml("a: " + "[" * 63 + "]" * 63, "f")  # 64 levels with the root
