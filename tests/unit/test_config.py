"""The YAML configuration: what the issue's example accepts, and errors that name the field."""

import ipaddress
import textwrap

import pytest

from lisp_ryu import config
from lisp_ryu.config import ConfigError

ISSUE_EXAMPLE = """
map_server:
  sites:
    - name: dc1
      key: s3cret            # shared secret for Map-Register authentication
      eid_prefixes:
        - {prefix: 10.1.0.0/16, iid: 42, accept_more_specifics: true}
"""

XTR = """
xtrs:
  - name: dc1
    dpid: "0000000000000101"
    rlocs: [{address: 198.18.1.2}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.1.0.0/16, iid: 42}]
    map_servers: [{address: 198.18.0.100, key: s3cret}]
    gateways: [{subnet: 10.1.0.0/24, ip: 10.1.0.1, mac: "02:00:00:00:01:01", iid: 42}]
    hosts: [{ip: 10.1.0.10, mac: "02:00:00:01:00:0a", port: 1, iid: 42}]
"""


def write(tmp_path, text):
    path = tmp_path / "lisp.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_issue_example_loads(tmp_path):
    cfg = config.load(write(tmp_path, ISSUE_EXAMPLE))
    (site,) = cfg.map_server.sites
    assert site.name == "dc1" and site.key == "s3cret"
    assert site.eid_prefixes[0] == config.EidPrefixConfig(ipaddress.ip_network("10.1.0.0/16"), 42, True)
    assert cfg.map_server.negative_action == "native-forward"


def test_xtr_section_defaults_map_resolver_to_map_server(tmp_path):
    cfg = config.load(write(tmp_path, XTR))
    (xtr,) = cfg.xtrs
    assert xtr.dpid == 0x101
    assert xtr.map_resolvers == (ipaddress.ip_address("198.18.0.100"),)
    assert xtr.rlocs[0].priority == 1 and xtr.rlocs[0].weight == 100
    assert xtr.redirect_seconds == 60.0
    (xtr,) = config.load(write(tmp_path, XTR + "    redirect_seconds: 2.5\n")).xtrs
    assert xtr.redirect_seconds == 2.5


@pytest.mark.parametrize(
    "text, path, words",
    [
        (ISSUE_EXAMPLE.replace("10.1.0.0/16", "10.1.0.1/16"), "map_server.sites[0].eid_prefixes[0].prefix", "host bits"),
        (ISSUE_EXAMPLE.replace("iid: 42", "iid: 99999999"), "map_server.sites[0].eid_prefixes[0].iid", "out of range"),
        (ISSUE_EXAMPLE.replace("key: s3cret", "kee: s3cret"), "map_server.sites[0].key", "required"),
        (ISSUE_EXAMPLE + "      colour: blue\n", "map_server.sites[0].colour", "unknown key"),
        ("map_server:\n  sites: nope\n", "map_server.sites", "expected a list"),
        (XTR.replace("10.1.0.10", "10.9.0.10"), "xtrs[0].hosts[0].ip", "inside none"),
        (XTR.replace('"02:00:00:00:01:01"', "zz"), "xtrs[0].gateways[0].mac", "not a MAC"),
        (XTR.replace("    tunnel_port: 100\n", ""), "xtrs[0].tunnel_port", "required"),
        (XTR + "    redirect_seconds: 0\n", "xtrs[0].redirect_seconds", "above zero"),
        (XTR.replace("key: s3cret}", "key: s3cret, algorithm: md5}"), "xtrs[0].map_servers[0].algorithm", "not one of"),
    ],
)
def test_errors_name_file_field_and_problem(tmp_path, text, path, words):
    source = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(source)
    assert info.value.path == path
    assert words in str(info.value)
    assert str(info.value).startswith(source)


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(write(tmp_path, "map_server: [unclosed\n"))


def test_duplicate_sites_and_dpids_are_rejected(tmp_path):
    dup_site = ISSUE_EXAMPLE + "    - {name: dc1, key: k, eid_prefixes: [{prefix: 10.2.0.0/16}]}\n"
    with pytest.raises(ConfigError, match="duplicate site name"):
        config.load(write(tmp_path, dup_site))
    xtr2 = XTR + XTR.replace("xtrs:\n", "").replace("name: dc1", "name: dc2")
    with pytest.raises(ConfigError, match="also xtrs"):
        config.load(write(tmp_path, xtr2))


def test_map_server_listen_reads_like_the_cli(tmp_path):
    """One ADDR:PORT reader: IPv6 with a port is bracketed, a bare address takes port 4342."""
    def listen(text):
        return config.load(write(tmp_path, ISSUE_EXAMPLE + f'  listen: "{text}"\n')).map_server.listen

    assert listen("[2001:db8::1]:2") == (ipaddress.ip_address("2001:db8::1"), 2)
    assert listen("2001:db8::1:2") == (ipaddress.ip_address("2001:db8::1:2"), 4342)
    assert listen("192.0.2.1") == (ipaddress.ip_address("192.0.2.1"), 4342)
    with pytest.raises(ConfigError, match=r"map_server\.listen: .*\[2001:db8::1\]:4342"):
        listen("2001:db8::1]:2")


@pytest.mark.parametrize("line", ["rate_limit_per_source: .nan", "registration_ttl: .inf",
                                  "notify_retry_interval: .nan"])
def test_map_server_numbers_are_finite(tmp_path, line):
    with pytest.raises(ConfigError, match="only finite numbers") as info:
        config.load(write(tmp_path, ISSUE_EXAMPLE + f"  {line}\n"))
    assert info.value.path == f"map_server.{line.split(':')[0]}"


def test_duplicate_keys_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="duplicate key") as info:
        config.load(write(tmp_path, ISSUE_EXAMPLE + "  negative_action: drop\n  negative_action: no-action\n"))
    assert info.value.path == "map_server.negative_action"
