"""Hostile configurations: every bad input ends in one clear error naming the file and the field.

A table of bad configuration files (encodings, alias bombs, nesting, duplicate
keys, NaN and infinities, ADDR:PORT forms, plain bad values), each read by
`config.load` and the lab topology reader, must raise the readers' error type
(`ConfigError`/`InputError`) and nothing else, with a short message, in well
under a second.  A few go through `lisp-ryu check-config` to see what a user
sees, and odd data directories through `lisp-ryu mapserver --data-dir`.
"""

from __future__ import annotations

import codecs
import ipaddress
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest

from lisp_ryu import config, schema
from lisp_ryu.config import ConfigError
from lisp_ryu.glue.mapserver_cli import parse_endpoint
from lisp_ryu.lab import topology_load
from lisp_ryu.mapping.policy import Rule, StaticMapping
from lisp_ryu.schema import InputError

REPO = Path(__file__).resolve().parents[2]
MAX_MESSAGE = 600  # characters: an error is one readable line, whatever the input
# A guard against runaway work (alias expansion, quadratic parsing), not a speed figure: an
# input that blows up takes minutes, a loaded CI machine a few seconds at most.
MAX_SECONDS = 10.0

BASE = """\
map_server:
  sites:
    - name: dc1
      key: k
      eid_prefixes: [{prefix: 10.1.0.0/16}]
xtrs:
  - name: dc1
    dpid: 1
    rlocs: [{address: 198.18.1.2}]
    tunnel_port: 100
    eid_prefixes: [{prefix: 10.1.0.0/16}]
    map_servers: [{address: 198.18.0.100, key: k}]
"""


def ms(line: str) -> str:
    """BASE with `line` added to the map_server section."""
    return BASE.replace("map_server:\n", f"map_server:\n  {line}\n", 1)


def xtr(line: str) -> str:
    """BASE with `line` added to the (only) xTR."""
    return BASE + f"    {line}\n"


def probing(line: str) -> str:
    return xtr(f"rloc_probing: {{{line}}}")


def bomb(use: str) -> str:
    """A billion-laughs document (9^7 leaves from 7 short lines) whose last level is used at `use`."""
    levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, cur in zip("abcdef", "bcdefg"):
        levels.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(levels) + "\n" + use


def latin1_offset() -> tuple[bytes, int]:
    data = ms('negative_action: "caf\u00e9"').encode("latin-1")
    return data, data.index(b"\xe9")


LATIN1, LATIN1_AT = latin1_offset()
DEEP = 20_000

# (id, file content, the error's path ("" = about the whole file), words its problem must hold)
CASES: list[tuple[str, str | bytes, str, str]] = [
    # ---- encodings: read as bytes, named by offset
    ("utf16-le-bom", codecs.BOM_UTF16_LE + BASE.encode("utf-16-le"), "", "UTF-16"),
    ("utf16-be-bom", codecs.BOM_UTF16_BE + BASE.encode("utf-16-be"), "", "UTF-16"),
    ("utf32-le-bom", codecs.BOM_UTF32_LE + BASE.encode("utf-32-le"), "", "UTF-32"),
    ("utf16-no-bom", BASE.encode("utf-16-le"), "", "offset 1"),
    ("latin1-value", LATIN1, "", f"offset {LATIN1_AT}"),
    ("latin1-comment", BASE.encode() + b"# r\xe9sum\xe9\n", "", f"offset {len(BASE) + 3}"),
    ("truncated-utf8", BASE.encode() + b"# \xe2\x82", "", f"offset {len(BASE) + 2}"),
    ("utf8-surrogate", BASE.encode() + b"# \xed\xa0\x80\n", "", f"offset {len(BASE) + 2}"),
    ("nul-byte", BASE.encode() + b"\x00\n", "", f"offset {len(BASE)}"),
    # ---- YAML structure
    # Refused where the aliases first add up past the budget (the bomb's 5th level), used or not.
    ("alias-bomb-scalar", bomb(ms("negative_action: *g")), "e[0]", "alias"),
    ("alias-bomb-list", bomb(xtr("map_resolvers: *g")), "e[0]", "alias"),
    ("alias-bomb-unused", bomb("h: [*g, *g]\n" + BASE), "e[0]", "alias"),
    ("alias-bomb-key", bomb("? *g\n: 1\n"), "e[0]", "alias"),
    ("alias-bomb-wide", "a: &a [" + ",".join(["x"] * 5000) + "]\nb: [*a, *a, *a]\n", "b[1]", "alias"),
    ("recursive-alias", ms("netns: &n [*n]"), "map_server.netns[0]", "contains it"),
    ("deep-lists", "xtrs: " + "[" * DEEP + "]" * DEEP + "\n", "xtrs" + "[0]" * 15, "deeper than 64"),
    ("deep-mappings", "x: " + "{a: " * DEEP + "1" + "}" * DEEP + "\n", "x" + ".a" * 25, "deeper than 64"),
    ("deep-block", "".join("  " * i + "a:\n" for i in range(200)), "a" + ".a" * 25, "deeper than 64"),
    ("bad-timestamp", ms("registration_ttl: 2001-13-01"), "", "month must be in 1..12"),
    ("control-char", ms('netns: "a\x01"'), "", "not valid YAML"),
    ("dup-top-key", BASE + "map_server: {}\n", "map_server", "duplicate key"),
    ("dup-site-key", BASE.replace("key: k\n", "key: k\n      key: other\n", 1), "map_server.sites[0].key",
     "duplicate key"),
    ("dup-flow-key", BASE.replace("{address: 198.18.1.2}", "{address: 198.18.1.2, address: 198.18.1.3}"),
     "xtrs[0].rlocs[0].address", "duplicate key"),
    ("dup-after-merge", "d: &d {a: 1}\nm: {<<: *d, b: 2, b: 3}\n", "m.b", "duplicate key"),
    ("undefined-alias", ms("netns: *nowhere"), "", "undefined alias"),
    ("unclosed-bracket", BASE + "rest: [unclosed\n", "", "not valid YAML"),
    ("tab-indent", BASE + "rest:\n\ttoken: x\n", "", "not valid YAML"),
    ("python-tag", ms("netns: !!python/object/apply:os.system [true]"), "", "not valid YAML"),
    ("unknown-tag", ms("netns: !secret x"), "", "not valid YAML"),
    ("huge-int", ms("registration_ttl: " + "9" * 5000), "map_server.registration_ttl", "digits"),
    ("huge-int-hex", ms("notify_retries: 0x" + "f" * 5000), "map_server.notify_retries", "digits"),
    ("unhashable-key", BASE + "? [a, b]\n: 1\n", "", "not valid YAML"),
    ("merge-scalar", BASE + "rest: {<<: 1}\n", "", "not valid YAML"),
    ("two-documents", BASE + "---\n" + BASE, "", "not valid YAML"),
    ("top-level-list", "- 1\n- 2\n", "", "expected a mapping"),
    ("top-level-scalar", "just text\n", "", "expected a mapping"),
    ("long-unknown-key", BASE + "? " + "k" * 200_000 + "\n: 1\n", "k" * 20, "unknown key"),
    ("long-string", ms("negative_action: " + "x" * 1_000_000), "map_server.negative_action", "not one of"),
    ("long-anchor", ms("netns: *" + "a" * 100_000), "", "undefined alias"),
    # ---- finite numbers only
    *[(f"{field}={v}", ms(f"{field}: {v}"), f"map_server.{field}", "finite")
      for field in ("rate_limit_per_source", "notify_retry_interval", "registration_ttl")
      for v in (".nan", ".NaN", ".inf", "-.inf", "1.0e+400")],
    *[(f"register_interval={v}", xtr(f"register_interval: {v}"), "xtrs[0].register_interval", "finite")
      for v in (".nan", ".inf")],
    *[(f"rloc_probing.{field}={v}", probing(f"{field}: {v}"), f"xtrs[0].rloc_probing.{field}", "finite")
      for field in ("interval", "timeout", "answer_rate", "answer_burst", "answer_rate_total")
      for v in (".nan", ".inf")],
    ("jitter=nan", probing("jitter: .nan"), "xtrs[0].rloc_probing.jitter", "[0, 1)"),
    ("notify_retries=inf", ms("notify_retries: .inf"), "map_server.notify_retries", "integer"),
    ("negative_ttl=nan", ms("negative_ttl_minutes: .nan"), "map_server.negative_ttl_minutes", "integer"),
    # ---- ADDR:PORT
    ("listen-v6-unclosed", ms('listen: "[2001:db8::1"'), "map_server.listen", "[2001:db8::1]:4342"),
    ("listen-v6-unopened", ms('listen: "2001:db8::1]:4342"'), "map_server.listen", "[2001:db8::1]:4342"),
    ("listen-v6-no-port", ms('listen: "[2001:db8::1]:"'), "map_server.listen", "port"),
    ("listen-v6-big-port", ms('listen: "[2001:db8::1]:70000"'), "map_server.listen", "65535"),
    ("listen-v6-junk", ms('listen: "[2001:db8::1]x"'), "map_server.listen", "[2001:db8::1]:4342"),
    ("listen-v4-no-port", ms('listen: "10.0.0.1:"'), "map_server.listen", "port"),
    ("listen-v4-name-port", ms('listen: "10.0.0.1:lisp"'), "map_server.listen", "port"),
    ("listen-v4-plus-port", ms('listen: "10.0.0.1:+80"'), "map_server.listen", "port"),
    ("listen-v4-underscore", ms('listen: "10.0.0.1:4_342"'), "map_server.listen", "port"),
    ("listen-v4-space", ms('listen: "10.0.0.1: 80"'), "map_server.listen", "port"),
    ("listen-no-host", ms('listen: ":4342"'), "map_server.listen", "address"),
    ("listen-port-zero", ms('listen: "10.0.0.1:0"'), "map_server.listen", "1..65535"),
    ("listen-base60", ms("listen: 1:2"), "map_server.listen", "quote"),
    ("listen-int", ms("listen: 4342"), "map_server.listen", "quote"),
    ("listen-v4-brackets", ms('listen: "[10.0.0.1]:4342"'), "map_server.listen", "IPv4"),
    ("listen-hostname", ms('listen: "ms.example:4342"'), "map_server.listen", "address"),
    ("listen-v6-bad", ms('listen: "2001:db8::1::2"'), "map_server.listen", "[2001:db8::1]:4342"),
    ("listen-list", ms('listen: ["10.0.0.1", 4342]'), "map_server.listen", "ADDR:PORT"),
    # ---- plain bad values (the readers' everyday work)
    ("dpid-zero", BASE.replace("dpid: 1", "dpid: 0"), "xtrs[0].dpid", "out of range"),
    ("dpid-text", BASE.replace("dpid: 1", "dpid: zz"), "xtrs[0].dpid", "datapath id"),
    ("rloc-int", BASE.replace("{address: 198.18.1.2}", "{address: 3323068674}"), "xtrs[0].rlocs[0].address",
     "not an IP address"),
    ("iid-25-bits", BASE.replace("{prefix: 10.1.0.0/16}", "{prefix: 10.1.0.0/16, iid: 16777216}", 1),
     "map_server.sites[0].eid_prefixes[0].iid", "out of range"),
    ("host-bits", BASE.replace("10.1.0.0/16", "10.1.0.1/16", 1), "map_server.sites[0].eid_prefixes[0].prefix",
     "host bits"),
    ("empty-key", BASE.replace("key: k\n", 'key: ""\n', 1), "map_server.sites[0].key", "non-empty"),
    ("bool-port", BASE.replace("tunnel_port: 100", "tunnel_port: true"), "xtrs[0].tunnel_port", "integer"),
    ("unknown-section", BASE + "mapserver: {}\n", "mapserver", "unknown key"),
]


def _write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "lisp.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _refused(load, path: Path) -> InputError:
    started = time.perf_counter()
    try:
        load(str(path))
    except InputError as exc:
        error = exc
    else:
        raise AssertionError("accepted")
    elapsed = time.perf_counter() - started
    assert elapsed < MAX_SECONDS, f"took {elapsed:.2f} s"
    return error


def test_the_table_is_at_least_the_issue_s_72():
    assert len(CASES) >= 72 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name,content,path,words", CASES, ids=[c[0] for c in CASES])
def test_bad_configuration_is_one_clear_error(tmp_path, name, content, path, words):
    file = _write(tmp_path, content)
    error = _refused(config.load, file)
    assert type(error) is ConfigError
    text = str(error)
    assert error.source == str(file) and text.startswith(f"{file}: ")
    # (long paths are cut short in the message)
    assert error.path.startswith(path) if name.startswith(("deep", "long")) else error.path == path, error.path
    assert words in error.problem, text[:MAX_MESSAGE]
    assert len(text) <= MAX_MESSAGE, f"{len(text)} characters: {text[:200]}..."
    assert "\n" not in text


# The reader-level cases also hold for the lab's topology files (same loader).
TOPOLOGY_READER_CASES = [c for c in CASES if c[2] == "" or c[0].startswith(("alias", "deep", "dup-top"))]


@pytest.mark.parametrize("name,content,path,words", TOPOLOGY_READER_CASES, ids=[c[0] for c in TOPOLOGY_READER_CASES])
def test_bad_topology_file_is_one_clear_error(tmp_path, name, content, path, words):
    file = _write(tmp_path, content)
    error = _refused(topology_load.load, file)
    assert isinstance(error, ConfigError) and error.source == str(file)
    assert len(str(error)) <= MAX_MESSAGE and "\n" not in str(error)


TWO_DC = (REPO / "topologies" / "two-dc.yaml").read_text()


@pytest.mark.parametrize("old,new,path", [
    ("- {address: 198.18.1.2, priority", "- {address: 3323068674, priority", "sites[0].rlocs[0].address"),
    ("gateway: 10.1.0.1}", "gateway: 167837697}", "sites[0].eid_prefixes[0].gateway"),
    ("controller: 198.19.0.1 ", "controller: 3323134721 ", "management.controller"),
    ("subnet: 198.19.0.0/24", "subnet: 3323133952", "management.subnet"),
])
def test_topology_refuses_the_integer_form_of_an_address(old, new, path):
    assert old in TWO_DC
    with pytest.raises(InputError) as info:
        topology_load.loads(TWO_DC.replace(old, new, 1), "two-dc.yaml")
    assert info.value.path == path and "IPv4" in info.value.problem


# --------------------------------------------------------------------------- what still loads


def test_legitimate_yaml_features_still_load(tmp_path):
    """A UTF-8 BOM, non-ASCII comments, anchors and aliases of small nodes, a bare IPv6 listen address."""
    text = (BASE.replace("key: k", "key: &key s3cret", 1)
            .replace("{address: 198.18.0.100, key: k}", "{address: 198.18.0.100, key: *key}")
            .replace("map_server:\n", 'map_server:\n  listen: "2001:db8::1:2"\n', 1))
    file = _write(tmp_path, codecs.BOM_UTF8 + ("# caf\u00e9\n" + text).encode())
    cfg = config.load(str(file))
    assert cfg.xtrs[0].map_servers[0].key == "s3cret" == cfg.map_server.sites[0].key
    # A bare IPv6 address is the address, on the default port: [2001:db8::1]:2 says port 2.
    assert cfg.map_server.listen == (ipaddress.ip_address("2001:db8::1:2"), 4342)


def test_anchors_and_merge_keys_within_the_alias_budget(tmp_path):
    text = BASE.replace("map_server:\n", "map_server:\n  sites: &sites\n", 1).replace("  sites:\n", "", 1)
    shared = "defaults: &d {priority: 1, weight: 100}\n"
    text = text.replace("{address: 198.18.1.2}", "{<<: *d, address: 198.18.1.2}")
    tree = schema.parse_yaml(shared + text, "t.yaml")
    assert tree["xtrs"][0]["rlocs"][0] == {"priority": 1, "weight": 100, "address": "198.18.1.2"}


@pytest.mark.parametrize("text,expected", [
    ("10.0.0.1:4342", ("10.0.0.1", 4342)),
    ("10.0.0.1", ("10.0.0.1", 4342)),
    ("[2001:db8::1]:2", ("2001:db8::1", 2)),
    ("[2001:db8::1]", ("2001:db8::1", 4342)),
    ("2001:db8::1:2", ("2001:db8::1:2", 4342)),
    ("::", ("::", 4342)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
])
def test_one_addr_port_parser_for_config_and_cli(tmp_path, text, expected):
    want = (ipaddress.ip_address(expected[0]), expected[1])
    assert parse_endpoint(text, 4342) == want
    if want[1]:
        assert config.load(str(_write(tmp_path, ms(f'listen: "{text}"')))).map_server.listen == want


@pytest.mark.parametrize("text", ["[2001:db8::1", "10.0.0.1:x", "2001:db8::1::2", ":4342", "10.0.0.1:65536"])
def test_cli_endpoint_errors_say_how_to_write_it(text):
    with pytest.raises(ValueError) as info:
        parse_endpoint(text, 4342)
    assert "ADDR:PORT" in str(info.value) or "port" in str(info.value)


# --------------------------------------------------------------------------- REST / policy bodies


@pytest.mark.parametrize("build,body,field", [
    (StaticMapping.from_dict, {"iid": 0, "prefix": "10.0.0.0/8", "rlocs": [{"address": "192.0.2.1"}],
                               "ttl_minutes": math.nan}, "ttl_minutes"),
    (StaticMapping.from_dict, {"iid": 0, "prefix": "10.0.0.0/8", "rlocs": [{"address": "192.0.2.1"}],
                               "ttl_minutes": math.inf}, "ttl_minutes"),
    (StaticMapping.from_dict, {"iid": 0, "prefix": "10.0.0.0/8",
                               "rlocs": [{"address": "192.0.2.1", "priority": math.nan}]}, "rlocs[0].priority"),
    (StaticMapping.from_dict, {"iid": 0, "prefix": "1" * 1_000_000, "rlocs": [{"address": "192.0.2.1"}]},
     "prefix"),
    (Rule.from_dict, {"id": "r", "iid": 0, "action": "x" * 1_000_000, "destinations": ["10.0.0.0/8"]}, "action"),
    (Rule.from_dict, {"id": "r", "iid": 0, "action": "deny", "destinations": [["10.0.0.0/8"] * 100_000]},
     "destinations[0]"),
])
def test_rest_bodies_get_short_errors(build, body, field):
    started = time.perf_counter()
    with pytest.raises(InputError) as info:
        build(body)
    assert time.perf_counter() - started < MAX_SECONDS
    assert info.value.field == field and len(str(info.value)) <= MAX_MESSAGE


# --------------------------------------------------------------------------- what a user sees


def _lisp_ryu(*argv: str, timeout: float = 20) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "lisp_ryu", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env)


CLI_CASES = ["utf16-le-bom", "latin1-value", "alias-bomb-scalar", "deep-lists", "huge-int",
             "registration_ttl=.nan", "dup-top-key", "listen-v6-unclosed"]


@pytest.mark.parametrize("name", CLI_CASES)
def test_check_config_prints_one_line_and_exits_1(tmp_path, name):
    (content,) = [c[1] for c in CASES if c[0] == name]
    file = _write(tmp_path, content)
    started = time.perf_counter()
    out = _lisp_ryu("check-config", str(file))
    assert time.perf_counter() - started < 10
    assert out.returncode == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {file}: ") and len(lines[0]) <= MAX_MESSAGE + 10


def test_check_config_shows_where_the_map_server_listens(tmp_path):
    out = _lisp_ryu("check-config", str(_write(tmp_path, ms('listen: "2001:db8::1:2"'))))
    assert out.returncode == 0 and "map-server listen [2001:db8::1:2]:4342" in out.stdout


# --------------------------------------------------------------------------- odd data directories


def _snapshot(generation) -> bytes:
    return msgpack.packb({"format": 1, "generation": generation, "entries": []}, use_bin_type=True)


def _odd_snapshot_dir(d: Path) -> None:
    (d / "snapshot.msgpack").mkdir()


def _odd_journal_dir(d: Path) -> None:
    (d / "journal-0.msgpack").mkdir()


def _odd_generation(value):
    def make(d: Path) -> None:
        (d / "snapshot.msgpack").write_bytes(_snapshot(value))
    return make


def _odd_data_dir_is_file(d: Path) -> None:
    d.rmdir()
    d.write_text("not a directory")


DATA_DIR_CASES = [
    ("snapshot-is-a-directory", _odd_snapshot_dir, "snapshot.msgpack"),
    ("journal-is-a-directory", _odd_journal_dir, "journal-0.msgpack"),
    # The store's reader names the field and the file.
    ("generation-text", _odd_generation("x"), "generation"),
    ("generation-nan", _odd_generation(math.nan), "generation"),
    ("generation-none", _odd_generation(None), "generation"),
    ("data-dir-is-a-file", _odd_data_dir_is_file, "File exists"),
]


@pytest.mark.parametrize("name,make,words", DATA_DIR_CASES, ids=[c[0] for c in DATA_DIR_CASES])
def test_mapserver_refuses_an_odd_data_dir_in_one_line(tmp_path, name, make, words):
    conf = _write(tmp_path, BASE)
    data = tmp_path / "data"
    data.mkdir()
    make(data)
    try:
        out = _lisp_ryu("mapserver", "--config", str(conf), "--data-dir", str(data), "--listen", "127.0.0.1:0",
                        "--http", "off", timeout=15)
    except subprocess.TimeoutExpired:
        raise AssertionError("the server started on an odd data dir") from None
    assert out.returncode == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and str(data) in errors[0] and words in errors[0], out.stderr[-2000:]
