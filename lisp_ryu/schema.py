"""One path-aware reader for every input a user writes: configuration, lab topologies, REST bodies.

A reader takes a raw value from a YAML or JSON tree and the path of the
field it sits at (`map_server.sites[0].eid_prefixes[1].prefix`) and returns
the checked value, or raises `InputError` naming that path and what is wrong,
so the user can fix the input without reading code.  Each front door (the
config file, a topology file, a REST request) reads with the same readers;
it only adds where the input came from (`InputError.source`, a file name).

Pure: the only I/O is `load_yaml` reading a file.  Only the stdlib, PyYAML
and the protocol constants of `wire` (itself stdlib-only), so every layer
above may use it.

Hostile input ends in an `InputError` too, never another exception: files are
read as bytes and must be UTF-8 (the error names the byte offset); YAML is
read by a SafeLoader that refuses duplicate keys, nesting deeper than
`MAX_DEPTH`, integers longer than `MAX_INT_DIGITS` and aliases that expand to
more than `MAX_ALIAS_NODES` nodes in all (a "billion laughs" document is
refused while it is read, before anything is built); numbers are finite; and
the text of every error is bounded whatever the value it quotes.
"""

from __future__ import annotations

import codecs
import ipaddress
import math
import re
import reprlib
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import yaml

from lisp_ryu.wire import MAX_IID

T = TypeVar("T")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Reader = Callable[[Any, str], T]

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_REQUIRED: Any = object()

# Bounds on what a file may make the reader do.  A configuration is a few
# levels deep and reuses an anchor for a key or a short list; these are far
# above any real file and far below what costs time or memory.
MAX_FILE_BYTES = 16 << 20
MAX_DEPTH = 64  # nested lists/mappings
MAX_ALIAS_NODES = 10_000  # nodes that aliases add, counting each alias at its expanded size
MAX_INT_DIGITS = 100  # the longest integer any field takes has 39 digits (a 128-bit value)
MAX_PATH = 200  # characters of a path in an error message
MAX_PROBLEM = 400  # characters of the problem in an error message

_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxstring, _SHOW.maxother = 2, 60, 60
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = _SHOW.maxset = 4
_SHOW.maxlong = 40


def show(raw: Any) -> str:
    """A bounded repr of an input value, for error messages (the value may be huge or self-referencing)."""
    if isinstance(raw, int) and not isinstance(raw, bool) and raw.bit_length() > 128:
        return f"an integer of about {int(raw.bit_length() * 0.30103) + 1} digits"
    return _SHOW.repr(raw)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


class InputError(ValueError):
    """An input value is missing or wrong: `path` names the field, `problem` says why.

    `source` is where the input came from (a file name) when there is one;
    the message is "source: path: problem" without the empty parts.
    """

    def __init__(self, path: str, problem: str, source: str | None = None) -> None:
        # Bounded here as well as by `show`: a path may hold a key of any length.
        self.path = path = _clip(path, MAX_PATH)
        self.problem = problem = _clip(problem, MAX_PROBLEM)
        self.source = source
        super().__init__(": ".join(part for part in (source, path, problem) if part))

    @property
    def field(self) -> str:
        """The path, under the name the REST layer's 400 answers use."""
        return self.path


def join(path: str, key: object) -> str:
    """The path of `key` inside the mapping at `path`."""
    return f"{path}.{key}" if path else str(key)


def _kind(value: Any) -> str:
    return type(value).__name__


# --------------------------------------------------------------------------- containers


class Node:
    """A mapping in the input at `path`; remembers the keys read so `done` can reject the others.

    `null_is_absent`: a key whose value is null counts as not given (YAML
    `key:` with no value); otherwise null is a value, which readers reject.
    `root` names the whole input in errors when `path` is empty ("body" for
    a REST body).
    """

    def __init__(self, value: Any, path: str = "", *, null_is_absent: bool = False, root: str = "") -> None:
        if not isinstance(value, dict):
            raise InputError(path or root, f"expected a mapping, got {_kind(value)}")
        self.value = value
        self.path = path
        self.null_is_absent = null_is_absent
        self._seen: set[str] = set()

    def child(self, key: str) -> str:
        return join(self.path, key)

    def error(self, key: str, problem: str) -> InputError:
        """An error about `key` of this mapping (about the mapping itself if `key` is "")."""
        return InputError(self.child(key) if key else self.path, problem)

    def has(self, key: str) -> bool:
        self._seen.add(key)
        return key in self.value and not (self.null_is_absent and self.value[key] is None)

    def raw(self, key: str, default: Any = None) -> Any:
        """The unchecked value of `key`, or `default` if it is not given."""
        return self.value[key] if self.has(key) else default

    def get(self, key: str, read: Reader[T], default: Any = _REQUIRED) -> T:
        """`key` read with `read`; `default` if not given (an error if there is no default)."""
        if not self.has(key):
            if default is _REQUIRED:
                raise self.error(key, "missing required key")
            return default
        return read(self.value[key], self.child(key))

    def node(self, key: str) -> Node | None:
        """The mapping at `key`, or None if it is not given."""
        if not self.has(key):
            return None
        return Node(self.value[key], self.child(key), null_is_absent=self.null_is_absent)

    def nodes(self, key: str, *, required: bool = False, min_len: int = 0) -> list[Node]:
        """The list of mappings at `key` ([] if not given and not `required`)."""
        if not self.has(key):
            if required:
                raise self.error(key, "missing required key")
            return []
        return seq(self.value[key], self.child(key),
                   lambda v, p: Node(v, p, null_is_absent=self.null_is_absent), min_len=min_len)

    def values(self, key: str, read: Reader[T], *, required: bool = False, min_len: int = 0) -> tuple[T, ...]:
        """The list at `key`, each item read with `read` (() if not given and not `required`)."""
        if not self.has(key):
            if required:
                raise self.error(key, "missing required key")
            return ()
        return tuple(seq(self.value[key], self.child(key), read, min_len=min_len))

    def expect(self, required: Iterable[str] = (), optional: Iterable[str] = ()) -> Node:
        """Check the keys up front: unknown keys first, then missing ones (in sorted order)."""
        required = set(required)
        self._seen |= required | set(optional)
        self._check_unknown()
        for key in sorted(required):
            if not self.has(key):
                raise self.error(key, "missing required key")
        return self

    def done(self) -> None:
        """Reject keys nobody asked for: a typo must not be silently ignored."""
        self._check_unknown()

    def _check_unknown(self) -> None:
        unknown = sorted(set(map(str, self.value)) - self._seen)
        if unknown:
            raise self.error(unknown[0], f"unknown key (expected one of: {', '.join(sorted(self._seen))})")


def seq(raw: Any, path: str, item: Reader[T], *, min_len: int = 0, max_len: int | None = None) -> list[T]:
    """A list, each item read with `item` at `path[i]`."""
    if not isinstance(raw, list):
        raise InputError(path, f"expected a list, got {_kind(raw)}")
    if len(raw) < min_len:
        raise InputError(path, f"needs at least {min_len} entr{'y' if min_len == 1 else 'ies'}")
    if max_len is not None and len(raw) > max_len:
        raise InputError(path, f"at most {max_len} entries")
    return [item(v, f"{path}[{i}]") for i, v in enumerate(raw)]


# --------------------------------------------------------------------------- scalars


def string(raw: Any, path: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise InputError(path, f"expected a non-empty string, got {show(raw)}")
    return raw


def boolean(raw: Any, path: str) -> bool:
    if not isinstance(raw, bool):
        raise InputError(path, f"expected true or false, got {show(raw)}")
    return raw


def integer(raw: Any, path: str, lo: int, hi: int, *, from_string: bool = False) -> int:
    """An integer in lo..hi (never a bool).  `from_string` also takes "42", "0x2a" (Python syntax)."""
    if from_string and isinstance(raw, str):
        try:
            raw = int(raw, 0)
        except ValueError:
            pass
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise InputError(path, f"expected an integer, got {show(raw)}")
    if not lo <= raw <= hi:
        raise InputError(path, f"{show(raw)} is out of range {lo}..{hi}")
    return raw


def int_range(lo: int, hi: int, *, from_string: bool = False) -> Reader[int]:
    """A reader of integers in lo..hi (see `integer`)."""
    return lambda raw, path: integer(raw, path, lo, hi, from_string=from_string)


def iid(raw: Any, path: str) -> int:
    """An instance-ID: 24 bits on the wire."""
    return integer(raw, path, 0, MAX_IID)


def openflow_port(raw: Any, path: str) -> int:
    """An OpenFlow port number: a physical or logical port, 1..OFPP_MAX (0xffffff00)."""
    return integer(raw, path, 1, 0xFFFFFF00)


def finite_number(raw: Any, path: str, expected: str = "a finite number") -> float:
    """An int or a float (never a bool), finite: NaN and the infinities are no setting's value.

    NaN compares false with everything, so a NaN rate or interval passes every
    range check and then breaks whatever uses it (a rate limiter that drops
    every datagram, a TTL that never expires).
    """
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise InputError(path, f"expected {expected}, got {show(raw)}")
    try:
        value = float(raw)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise InputError(path, f"expected {expected}, got {show(raw)} (only finite numbers)")
    return value


def positive_number(raw: Any, path: str) -> float:
    """A finite number above zero (an int or a float, never a bool)."""
    value = finite_number(raw, path, "a finite number above zero")
    if value <= 0:
        raise InputError(path, f"expected a finite number above zero, got {show(raw)}")
    return value


def fraction(raw: Any, path: str) -> float:
    """A number in [0, 1)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 <= raw < 1:
        raise InputError(path, f"expected a number in [0, 1), got {show(raw)}")
    return float(raw)


def one_of(choices: Iterable[str]) -> Reader[str]:
    """A reader of one of `choices` (an enumeration given by its names)."""
    names = tuple(choices)

    def read(raw: Any, path: str) -> str:
        if raw not in names:
            raise InputError(path, f"{show(raw)} is not one of {', '.join(names)}")
        return raw

    return read


def mac(raw: Any, path: str, *, unicast: bool = False) -> str:
    """A MAC address as xx:xx:xx:xx:xx:xx, returned in lower case; `unicast` rejects multicast ones."""
    if not isinstance(raw, str) or not _MAC_RE.match(raw.lower()):
        raise InputError(path, f"{show(raw)} is not a MAC address like 02:00:00:00:00:01")
    if unicast and int(raw[:2], 16) & 1:
        raise InputError(path, f"{raw} is a multicast MAC address")
    return raw.lower()


# --------------------------------------------------------------------------- addresses


def address(raw: Any, path: str, version: int | None = None) -> IPAddress:
    """An IP address written as a string ("198.18.0.1", "2001:db8::1"); `version=4` takes only IPv4.

    Never the integer form `ipaddress` also takes: `address: 1` is a typo,
    not 0.0.0.1.
    """
    if isinstance(raw, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        raw = str(raw)
    if isinstance(raw, str):
        try:
            parsed = ipaddress.ip_address(raw)
        except ValueError:
            pass
        else:
            if version is None or parsed.version == version:
                return parsed
    raise InputError(path, f"{show(raw)} is not an {f'IPv{version}' if version else 'IP'} address")


def prefix(raw: Any, path: str, version: int | None = None) -> IPNetwork:
    """A strict IP prefix ("10.1.0.0/16"; a bare address is a host prefix; no host bits set).

    Written as a string, like `address`; `version=4` takes only IPv4.
    """
    kind = "IPv4 prefix" if version == 4 else "IP prefix"
    if isinstance(raw, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        raw = str(raw)
    if not isinstance(raw, str):
        raise InputError(path, f"{show(raw)} is not an {kind} like 10.1.0.0/16")
    try:
        net = ipaddress.ip_network(raw, strict=True)
    except ValueError as exc:
        raise InputError(path, f"{show(raw)} is not an {kind} ({exc})") from None
    if version is not None and net.version != version:
        raise InputError(path, f"{show(raw)} is not an {kind}")
    return net


def interface(raw: Any, path: str) -> ipaddress.IPv4Interface:
    """An IPv4 host address with its subnet, "ADDRESS/LENGTH" (not the network or broadcast address)."""
    if not isinstance(raw, str) or "/" not in raw:
        raise InputError(path, f"{show(raw)} is not ADDRESS/LENGTH")
    try:
        iface = ipaddress.IPv4Interface(raw)
    except ValueError:
        raise InputError(path, f"{show(raw)} is not an IPv4 ADDRESS/LENGTH") from None
    net = iface.network
    if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
        raise InputError(path, f"{raw} is the network or broadcast address of {net}")
    return iface


def endpoint(raw: Any, path: str, default_port: int, *, min_port: int = 1) -> tuple[IPAddress, int]:
    """ADDR:PORT -> (address, port): "192.0.2.1:4342", "[2001:db8::1]:4342", or a bare address.

    A bare address (IPv4 or IPv6) takes `default_port`.  An IPv6 address with
    a port must be bracketed: "2001:db8::1:2" is the address 2001:db8::1:2 on
    the default port, never port 2 of 2001:db8::1.  Every error says so.
    """
    how = (f"write ADDR:PORT as 192.0.2.1:{default_port} or [2001:db8::1]:{default_port}; "
           f"a bare address takes port {default_port}")

    def bad(why: str) -> InputError:
        return InputError(path, f"{show(raw)}: {why} ({how})")

    if not isinstance(raw, str):
        raise InputError(path, f"expected \"ADDR:PORT\" as a string, got {show(raw)}: quote it "
                               f"(unquoted, YAML reads forms like 1:20 as a number) ({how})")
    port_text: str | None
    if raw.startswith("["):
        host, close, rest = raw[1:].partition("]")
        if not close:
            raise bad("no closing ']'")
        if rest and not rest.startswith(":"):
            raise bad(f"{show(rest)} after ']'")
        port_text = rest[1:] if rest else None
    elif raw.count(":") >= 2:
        host, port_text = raw, None  # a bare IPv6 address
    else:
        host, colon, port_text = raw.partition(":")
        if not colon:
            port_text = None
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        what = "not an IP address" if host == raw else f"{show(host)} is not an IP address"
        raise bad(what + (" (names are not resolved)" if "." in host else "")) from None
    if raw.startswith("[") and addr.version != 6:
        raise bad("brackets are for IPv6 addresses; an IPv4 address is written 192.0.2.1:PORT")
    if port_text is None:
        return addr, default_port
    if not _PORT_RE.fullmatch(port_text):
        raise bad(f"the port {show(port_text)} is not a number")
    port = int(port_text)
    if not min_port <= port <= 65535:
        raise bad(f"port {port} is out of range {min_port}..65535")
    return addr, port


# --------------------------------------------------------------------------- files


def load_yaml(path: str | Path) -> Any:
    """The YAML tree of a file; InputError (source = the file) if it cannot be read or parsed."""
    source = str(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InputError("", f"cannot read: {exc.strerror}", source) from None
    if len(data) > MAX_FILE_BYTES:
        raise InputError("", f"larger than {MAX_FILE_BYTES >> 20} MiB: not a configuration file", source)
    return parse_yaml(decode(data, source), source)


_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
         (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def decode(data: bytes, source: str) -> str:
    """The text of a file's bytes: UTF-8 (a BOM is allowed), else InputError naming the offending byte."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise InputError("", f"the file is {name} (it starts with a {name} byte order mark): "
                                 "save it as UTF-8", source)
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise InputError("", f"not UTF-8 text: a NUL byte at offset {nul} (line {line}; "
                             "UTF-16 or a binary file?): save it as UTF-8", source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError("", f"not UTF-8 text: the byte at offset {exc.start} (line {line}) is {data[exc.start]:#04x} "
                             f"({exc.reason}): save it as UTF-8", source) from None
    return text.removeprefix("\ufeff")


def parse_yaml(text: str, source: str) -> Any:
    """The YAML tree of `text`, read with the limits of `_Loader`; InputError (source = `source`) otherwise."""
    loader = None
    try:
        loader = _Loader(text)
        return loader.get_single_data()
    except InputError as exc:
        raise InputError(exc.path, exc.problem, source) from None
    except yaml.MarkedYAMLError as exc:
        where = f" (line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1})" \
            if exc.problem_mark else ""
        what = "; ".join(part for part in (exc.context, exc.problem) if part)
        raise InputError("", f"not valid YAML: {' '.join(what.split())}{where}", source) from None
    except yaml.YAMLError as exc:
        raise InputError("", f"not valid YAML: {' '.join(str(exc).split())}", source) from None
    except (ValueError, TypeError, OverflowError) as exc:
        # A scalar YAML resolves but cannot build (a timestamp like 2001-13-01).
        raise InputError("", f"not valid YAML: {' '.join(str(exc).split())}", source) from None
    finally:
        if loader is not None:
            loader.dispose()


_MERGE = "tag:yaml.org,2002:merge"
_INT = "tag:yaml.org,2002:int"


class _Loader(yaml.SafeLoader):
    """PyYAML's SafeLoader with limits, checked while the document is composed (before anything is built).

    It tracks the path of the node being composed, so each refusal names it:
    a duplicate key (YAML would keep the last one silently), nesting deeper
    than MAX_DEPTH, an integer longer than MAX_INT_DIGITS, an alias to a node
    that contains it, and aliases that add more than MAX_ALIAS_NODES nodes in
    all.  Aliases stay usable for what they are for (one key or a short list
    written once); what is refused is the expansion, so the check is on the
    expanded size, counted in the composed node graph, not by building it.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._paths: list[str] = []  # the path of every node being composed, outermost first
        self._sizes: dict[int, int] = {}  # id(node) -> its node count with aliases expanded (finished nodes)
        self._aliased = 0

    def _path(self, parent: yaml.Node | None, index: Any) -> str:
        base = self._paths[-1] if self._paths else ""
        if isinstance(index, int) and not isinstance(index, bool):
            return f"{base}[{index}]"
        if isinstance(index, yaml.ScalarNode):
            return join(base, index.value)
        if isinstance(index, yaml.Node):
            return join(base, "?")
        return base  # the root, or a mapping key

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        path = self._path(parent, index)
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self._sizes.get(id(target))
                if size is None:
                    raise InputError(path, f"alias *{_clip(event.anchor, 40)} refers to a node that contains it")
                self._aliased += size
                if self._aliased > MAX_ALIAS_NODES:
                    raise InputError(path, f"aliases expand to more than {MAX_ALIAS_NODES} nodes "
                                           "(refused: a document that multiplies itself through aliases)")
            return super().compose_node(parent, index)
        if len(self._paths) >= MAX_DEPTH:
            raise InputError(_clip(path, 60), f"nested deeper than {MAX_DEPTH} levels")
        self._paths.append(path)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._paths.pop()
        self._sizes[id(node)] = 1 + self._check(node, path)
        return node

    def _check(self, node: yaml.Node, path: str) -> int:
        """Refuse what `node` may not hold; return the expanded size of its children."""
        sizes = self._sizes
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _INT and len(node.value) > MAX_INT_DIGITS:
                raise InputError(path, f"an integer of {len(node.value)} digits")
            return 0
        if isinstance(node, yaml.SequenceNode):
            return sum(sizes[id(item)] for item in node.value)
        seen: dict[tuple[str, str], yaml.Node] = {}
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE:
                first = seen.setdefault((key.tag, key.value), key)
                if first is not key:
                    raise InputError(join(path, key.value),
                                     f"duplicate key (first at line {first.start_mark.line + 1}, again at line "
                                     f"{key.start_mark.line + 1}; YAML would keep only the last one)")
        return sum(sizes[id(key)] + sizes[id(value)] for key, value in node.value)


# --------------------------------------------------------------------------- REST requests

IDENTIFIER_MAX = 64
_IDENTIFIER_RE = re.compile(r"[A-Za-z0-9._-]+")


def identifier(raw: Any, path: str) -> str:
    """A name an API user gives an object: 1..64 ASCII letters, digits, '.', '_' or '-'.

    It travels in URLs, logs and files, each of which would escape anything
    else its own way; refusing the rest at creation keeps every created
    object addressable by its URL.
    """
    if not isinstance(raw, str) or not 1 <= len(raw) <= IDENTIFIER_MAX or not _IDENTIFIER_RE.fullmatch(raw):
        raise InputError(path, f"{show(raw)} is not 1..{IDENTIFIER_MAX} ASCII letters, digits, '.', '_' or '-'")
    return raw


def decimal(raw: Any, path: str, lo: int, hi: int) -> int:
    """An integer in lo..hi written in decimal digits (a URL path segment or a query parameter)."""
    text = raw.strip() if isinstance(raw, str) else raw
    if not isinstance(text, str) or not text.isascii() or not text.lstrip("-").isdigit() or len(text) > 20:
        raise InputError(path, f"not an integer: {show(raw)}")
    value = int(text)
    if value < lo:
        raise InputError(path, f"must be at least {lo}")
    if value > hi:
        raise InputError(path, f"must be at most {hi}")
    return value


def json_document(raw: bytes, path: str, *, max_bytes: int, max_depth: int) -> Any:
    """A JSON document of at most `max_bytes` bytes (UTF-8) and `max_depth` levels of nesting.

    A document nested deeper than Python's recursion limit would otherwise
    end the decoder with a RecursionError, and one just under it would
    reach every reader (and every error message) at that depth.
    """
    import json  # here: the readers above are YAML's

    if len(raw) > max_bytes:
        raise InputError(path, f"larger than {max_bytes} bytes")
    try:
        value = json.loads(raw)
    except RecursionError:
        raise InputError(path, f"nested deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid JSON: {_clip(str(exc), 80)}") from None
    if _depth_exceeds(value, max_depth):
        raise InputError(path, f"nested deeper than {max_depth} levels")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` has containers nested more than `limit` deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False
