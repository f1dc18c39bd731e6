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
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import yaml

from lisp_ryu.wire import MAX_IID

T = TypeVar("T")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Reader = Callable[[Any, str], T]

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_REQUIRED: Any = object()


class InputError(ValueError):
    """An input value is missing or wrong: `path` names the field, `problem` says why.

    `source` is where the input came from (a file name) when there is one;
    the message is "source: path: problem" without the empty parts.
    """

    def __init__(self, path: str, problem: str, source: str | None = None) -> None:
        self.path = path
        self.problem = problem
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
        raise InputError(path, f"expected a non-empty string, got {raw!r}")
    return raw


def boolean(raw: Any, path: str) -> bool:
    if not isinstance(raw, bool):
        raise InputError(path, f"expected true or false, got {raw!r}")
    return raw


def integer(raw: Any, path: str, lo: int, hi: int, *, from_string: bool = False) -> int:
    """An integer in lo..hi (never a bool).  `from_string` also takes "42", "0x2a" (Python syntax)."""
    if from_string and isinstance(raw, str):
        try:
            raw = int(raw, 0)
        except ValueError:
            pass
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise InputError(path, f"expected an integer, got {raw!r}")
    if not lo <= raw <= hi:
        raise InputError(path, f"{raw} is out of range {lo}..{hi}")
    return raw


def int_range(lo: int, hi: int, *, from_string: bool = False) -> Reader[int]:
    """A reader of integers in lo..hi (see `integer`)."""
    return lambda raw, path: integer(raw, path, lo, hi, from_string=from_string)


def iid(raw: Any, path: str) -> int:
    """An instance-ID: 24 bits on the wire."""
    return integer(raw, path, 0, MAX_IID)


def positive_number(raw: Any, path: str) -> float:
    """A number above zero (an int or a float, never a bool)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw <= 0:
        raise InputError(path, f"expected a positive number, got {raw!r}")
    return float(raw)


def fraction(raw: Any, path: str) -> float:
    """A number in [0, 1)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 <= raw < 1:
        raise InputError(path, f"expected a number in [0, 1), got {raw!r}")
    return float(raw)


def one_of(choices: Iterable[str]) -> Reader[str]:
    """A reader of one of `choices` (an enumeration given by its names)."""
    names = tuple(choices)

    def read(raw: Any, path: str) -> str:
        if raw not in names:
            raise InputError(path, f"{raw!r} is not one of {', '.join(names)}")
        return raw

    return read


def mac(raw: Any, path: str, *, unicast: bool = False) -> str:
    """A MAC address as xx:xx:xx:xx:xx:xx, returned in lower case; `unicast` rejects multicast ones."""
    if not isinstance(raw, str) or not _MAC_RE.match(raw.lower()):
        raise InputError(path, f"{raw!r} is not a MAC address like 02:00:00:00:00:01")
    if unicast and int(raw[:2], 16) & 1:
        raise InputError(path, f"{raw} is a multicast MAC address")
    return raw.lower()


# --------------------------------------------------------------------------- addresses


def address(raw: Any, path: str, version: int | None = None) -> IPAddress:
    """An IP address ("198.18.0.1", "2001:db8::1"); `version=4` takes only IPv4.

    The IPv4-only form follows `ipaddress.IPv4Address`, which also takes the
    integer form of an address (the lab topology always did).
    """
    if version == 4:
        try:
            return ipaddress.IPv4Address(raw)
        except (ValueError, TypeError):
            raise InputError(path, f"{raw!r} is not an IPv4 address") from None
    if isinstance(raw, (str, ipaddress.IPv4Address, ipaddress.IPv6Address)):
        try:
            return ipaddress.ip_address(str(raw))
        except ValueError:
            pass
    raise InputError(path, f"{raw!r} is not an IP address")


def prefix(raw: Any, path: str, version: int | None = None) -> IPNetwork:
    """A strict IP prefix ("10.1.0.0/16"; a bare address is a host prefix; no host bits set).

    `version=4` takes only IPv4, following `ipaddress.IPv4Network` like `address`.
    """
    if version == 4:
        try:
            return ipaddress.IPv4Network(raw)
        except (ValueError, TypeError) as exc:
            raise InputError(path, f"{raw!r} is not an IPv4 prefix ({exc})") from None
    if not isinstance(raw, (str, ipaddress.IPv4Network, ipaddress.IPv6Network)):
        raise InputError(path, f"{raw!r} is not an IP prefix like 10.1.0.0/16")
    try:
        return ipaddress.ip_network(str(raw), strict=True)
    except ValueError as exc:
        raise InputError(path, f"{raw!r} is not an IP prefix ({exc})") from None


def interface(raw: Any, path: str) -> ipaddress.IPv4Interface:
    """An IPv4 host address with its subnet, "ADDRESS/LENGTH" (not the network or broadcast address)."""
    if not isinstance(raw, str) or "/" not in raw:
        raise InputError(path, f"{raw!r} is not ADDRESS/LENGTH")
    try:
        iface = ipaddress.IPv4Interface(raw)
    except ValueError:
        raise InputError(path, f"{raw!r} is not an IPv4 ADDRESS/LENGTH") from None
    net = iface.network
    if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
        raise InputError(path, f"{raw} is the network or broadcast address of {net}")
    return iface


# --------------------------------------------------------------------------- files


def load_yaml(path: str | Path) -> Any:
    """The YAML tree of a file; InputError (source = the file) if it cannot be read or parsed."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError("", f"cannot read: {exc.strerror}", str(path)) from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError("", f"not valid YAML: {exc}", source) from None


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
        raise InputError(path, f"{_short(raw)} is not 1..{IDENTIFIER_MAX} ASCII letters, digits, '.', '_' or '-'")
    return raw


def decimal(raw: Any, path: str, lo: int, hi: int) -> int:
    """An integer in lo..hi written in decimal digits (a URL path segment or a query parameter)."""
    text = raw.strip() if isinstance(raw, str) else raw
    if not isinstance(text, str) or not text.isascii() or not text.lstrip("-").isdigit() or len(text) > 20:
        raise InputError(path, f"not an integer: {_short(raw)}")
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
        raise InputError(path, f"not valid JSON: {_short(str(exc))}") from None
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


def _short(raw: Any, limit: int = 80) -> str:
    """`repr(raw)` cut to `limit` characters: an error message must not echo a megabyte back."""
    text = repr(raw)
    return text if len(text) <= limit else text[:limit] + "...'"
