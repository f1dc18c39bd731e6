"""The one prefix-table type: longest-prefix match per (instance-ID, family).

Longest-prefix match runs in C (pytricia, one Patricia trie per instance-ID and
address family).  Beside it each trie keeps a *shape* index: a second pytricia
holding every node of the compressed binary trie of the stored prefixes (the
prefixes themselves plus the branch points between them), each mapped to a
`_Node` that knows its two children.  A C longest-match in the shape index
lands on the deepest node around any address or prefix in one call, so

* the widest negative prefix is one lookup plus one XOR (no scan, no bit loop),
* `more_specifics` visits only the answer's subtree,
* insert and remove touch O(1) nodes after that lookup.

Full-length prefixes (host routes: /32, /128) are not in the tries but in a
dict by packed address plus a sorted index of those (`SortedKeys`): such a
prefix is the longest match of its address whenever stored, a dict finds it
in one or two memory accesses where the trie walks twenty nodes, and a trie
node, two pytricia entries and a network object per host cost several times
the dict entry (a Map-Server holds a million workloads, each a /32).  Their
networks are made when asked for; the widest negative prefix also keeps
clear of the nearest host on either side of the address.

pytricia quirks this module works around (checked with pytricia 1.3.0):
* it keeps host bits ("10.1.2.3/8" is stored as such) and silently clamps a
  too-long mask: we accept only `ipaddress` networks, which are strict;
* one trie accepts both families side by side: we keep a trie per family;
* an int key wider than 32 bits fails with SystemError: addresses go in as
  packed bytes, which is also the fastest key form it accepts;
* `children`/`parent` need the prefix to be present and answer with strings
  (IPv6 ones in the old IPv4-compatible form, "::0.1.0.0/112"): the shape
  index answers those questions instead.

MAC EIDs (AFI 16389) have no prefixes: `mactable.MacTable` is their sibling.
"""

from __future__ import annotations

import ipaddress
from typing import Generic, Iterable, Iterator, TypeVar

import pytricia

from .eid import (
    AddressCovered,
    IPAddress,
    IPNetwork,
    PrefixNotFound,
    check_address,
    check_iid,
    check_network,
)
from .sortedkeys import SortedKeys

V = TypeVar("V")

_ABSENT = object()  # a host route's value may be anything, None included

_NETWORK_CLASS = {32: ipaddress.IPv4Network, 128: ipaddress.IPv6Network}


class _Node:
    """A node of the compressed trie: a stored prefix or a branch point.

    Branch points (stored=False) always have two children, except the /0 root
    that every trie keeps so that every lookup has a deepest node.
    """

    __slots__ = ("addr", "plen", "net", "value", "stored", "zero", "one")

    def __init__(self, addr: int, plen: int, net: IPNetwork | None, value: object, stored: bool) -> None:
        self.addr = addr
        self.plen = plen
        self.net = net
        self.value = value
        self.stored = stored
        self.zero: _Node | None = None
        self.one: _Node | None = None


class _Trie:
    """Prefixes of one (instance-ID, family): the C LPM trie plus the shape index."""

    __slots__ = ("width", "stored", "shape", "root", "count", "hosts", "order")

    def __init__(self, width: int) -> None:
        self.width = width
        # Stored prefixes only -> the (network, value) pair a lookup returns, ready made:
        # handing back the trie's own object saves building a tuple and, at a million
        # prefixes, a cache miss on the node per lookup.
        self.stored = pytricia.PyTricia(width)
        self.shape = pytricia.PyTricia(width)  # every trie node -> _Node
        self.root = _Node(0, 0, None, None, False)
        self.shape.insert(bytes(width // 8), 0, self.root)
        self.count = 0
        # Full-length prefixes, not in `stored` nor `shape`: packed address -> value, and those addresses sorted.
        self.hosts: dict[bytes, object] = {}
        self.order = SortedKeys()

    # -- helpers -----------------------------------------------------------
    def _bit(self, addr: int, pos: int) -> int:
        """Bit `pos` of `addr`, counting from the most significant (pos 0)."""
        return (addr >> (self.width - 1 - pos)) & 1

    @staticmethod
    def _set_child(parent: _Node, side: int, child: _Node | None) -> None:
        if side:
            parent.one = child
        else:
            parent.zero = child

    def _network(self, addr: int, plen: int) -> IPNetwork:
        """An `ipaddress` network for (addr, plen): the prefix key form pytricia accepts."""
        shift = self.width - plen
        return _NETWORK_CLASS[self.width]((addr >> shift << shift, plen))

    def host_network(self, packed: bytes) -> IPNetwork:
        """The network of a stored host route (made when asked for: the table keeps none)."""
        return _NETWORK_CLASS[self.width]((int.from_bytes(packed, "big"), self.width))

    def merged(self, nodes: Iterator[_Node], hosts: Iterator[bytes]) -> Iterator[tuple[IPNetwork, object]]:
        """(network, value) of trie nodes and host routes, both in order, merged in (address, length) order."""
        values = self.hosts
        host = next(hosts, None)
        at = -1 if host is None else int.from_bytes(host, "big")
        for node in nodes:
            while host is not None and at < node.addr:  # (equal address: the node is shorter, so first)
                yield self.host_network(host), values[host]
                host = next(hosts, None)
                at = -1 if host is None else int.from_bytes(host, "big")
            yield node.net, node.value  # type: ignore[misc]
        while host is not None:
            yield self.host_network(host), values[host]
            host = next(hosts, None)

    def _key(self, node: _Node) -> IPNetwork:
        """A prefix key pytricia accepts for exact operations on `node`."""
        return node.net if node.net is not None else self._network(node.addr, node.plen)

    def _parent(self, node: _Node) -> _Node:
        """The node directly above `node`: the deepest one around its one-bit-shorter supernet.

        (pytricia's own `parent` would answer with a string to parse back.)
        The root is never pruned, so a non-root node always has one.
        """
        return self.shape.get(self._network(node.addr, node.plen - 1))

    def _inside(self, addr: int, plen: int, outer_addr: int, outer_plen: int) -> bool:
        """Whether prefix (addr, plen) lies inside prefix (outer_addr, outer_plen)."""
        shift = self.width - outer_plen
        return outer_plen <= plen and (addr >> shift) == (outer_addr >> shift)

    # -- mutation ----------------------------------------------------------
    def insert(self, net: IPNetwork, value: object) -> bool:
        """Store `net` -> `value`; return True if it replaced a stored prefix."""
        addr, plen = int(net.network_address), net.prefixlen
        if plen == self.width:
            packed = net.network_address.packed
            replaced = packed in self.hosts
            self.hosts[packed] = value
            if not replaced:
                self.order.add(packed)
                self.count += 1
            return replaced
        above: _Node = self.shape.get(net)  # deepest node containing net (the root at worst)
        if above.plen == plen:  # net is already a node: a stored prefix or a branch point
            replaced = above.stored
            above.net, above.value, above.stored = net, value, True
            self.stored.insert(net, (net, value))
            if not replaced:
                self.count += 1
            return replaced
        node = _Node(addr, plen, net, value, True)
        side = self._bit(addr, above.plen)
        below = above.one if side else above.zero
        if below is None:
            self._set_child(above, side, node)
        elif self._inside(below.addr, below.plen, addr, plen):
            self._set_child(node, self._bit(below.addr, plen), below)
            self._set_child(above, side, node)
        else:
            # Neither contains the other: they split at their first differing bit.
            split = self.width - (addr ^ below.addr).bit_length()
            branch_addr = addr >> (self.width - split) << (self.width - split)
            branch = _Node(branch_addr, split, None, None, False)
            self._set_child(branch, self._bit(addr, split), node)
            self._set_child(branch, self._bit(below.addr, split), below)
            self._set_child(above, side, branch)
            self.shape.insert(branch_addr.to_bytes(self.width // 8, "big"), split, branch)
        packed = net.network_address.packed
        self.shape.insert(packed, plen, node)
        self.stored.insert(packed, plen, (net, value))
        self.count += 1
        return False

    def remove(self, net: IPNetwork) -> object:
        """Forget `net` and return its value; PrefixNotFound if it is not stored."""
        if net.prefixlen == self.width:
            packed = net.network_address.packed
            try:
                value = self.hosts.pop(packed)
            except KeyError:
                raise PrefixNotFound(f"prefix {net} is not in the table") from None
            self.order.discard(packed)
            self.count -= 1
            return value
        node: _Node = self.shape.get(net)
        if node.plen != net.prefixlen or not node.stored:
            raise PrefixNotFound(f"prefix {net} is not in the table")
        value = node.value
        self.stored.delete(net)
        self.count -= 1
        node.stored, node.value = False, None
        if node is self.root:
            node.net = None
            return value
        kids = (node.zero is not None) + (node.one is not None)
        if kids == 2:  # still needed as a branch point
            node.net = None
            return value
        self._splice(node)
        return value

    def _splice(self, node: _Node) -> None:
        """Remove an unstored node with at most one child, and a branch point left with one."""
        parent = self._parent(node)
        only = node.zero if node.zero is not None else node.one
        self.shape.delete(self._key(node))
        node.net = None
        self._set_child(parent, self._bit(node.addr, parent.plen), only)
        if only is None and parent is not self.root and not parent.stored:
            self._splice(parent)  # a branch point with one child left: at most one level

    # -- queries -----------------------------------------------------------
    def top_inside(self, net: IPNetwork) -> _Node | None:
        """The shortest node inside `net` (net itself if it is a node), or None."""
        addr, plen = int(net.network_address), net.prefixlen
        above: _Node = self.shape.get(net)
        if above.plen == plen:
            return above
        below = above.one if self._bit(addr, above.plen) else above.zero
        if below is not None and self._inside(below.addr, below.plen, addr, plen):
            return below
        return None

    def widest_negative_length(self, addr: int, packed: bytes) -> int:
        """Mask length of the widest prefix around an uncovered address that overlaps nothing.

        The deepest node containing the address is a branch point (or the root).
        Every stored prefix that is not around it lies in its two subtrees, and
        the subtree on the address's side starts with one node `below` that
        does not contain the address.  So the answer is one bit longer than
        the address's common prefix with `below`: any shorter prefix contains
        `below`, and this one excludes it and the other side.
        """
        above: _Node = self.shape.get(packed)
        below = above.one if self._bit(addr, above.plen) else above.zero
        if below is None:  # only the root can lack a child
            length = above.plen + 1
        else:
            length = self.width - (addr ^ below.addr).bit_length() + 1
        if self.hosts:  # and clear of the hosts: the nearest on each side is the one sharing most bits
            for host in filter(None, self.order.neighbours(packed)):
                length = max(length, self.width - (addr ^ int.from_bytes(host, "big")).bit_length() + 1)
        return length

    def check(self) -> None:
        """Verify the shape index against the trie it describes (for tests).

        Raises RuntimeError rather than asserting, so it also runs under `python -O`.
        """
        seen: list[_Node] = []
        stack = [self.root]
        while stack:
            node = stack.pop()
            seen.append(node)
            kids = [k for k in (node.zero, node.one) if k is not None]
            if not node.stored and node is not self.root and len(kids) != 2:
                raise RuntimeError(f"branch point /{node.plen} has {len(kids)} children")
            for side, kid in ((0, node.zero), (1, node.one)):
                if kid is None:
                    continue
                if kid.plen <= node.plen or not self._inside(kid.addr, kid.plen, node.addr, node.plen):
                    raise RuntimeError("child not inside its parent")
                if self._bit(kid.addr, node.plen) != side:
                    raise RuntimeError("child on the wrong side")
                stack.append(kid)
        # pytricia prints some IPv6 keys in the old IPv4-compatible form ("::0.1.0.0/112"):
        # compare parsed networks, not strings.
        if any(n.plen == self.width for n in seen):
            raise RuntimeError("a host route is in the trie")
        self.order.check()
        if set(self.order) != set(self.hosts) or any(len(k) != self.width // 8 for k in self.hosts):
            raise RuntimeError(f"host index {list(self.order)} != host routes {sorted(self.hosts)}")
        shape_keys = sorted(self._key(n) for n in seen)
        if shape_keys != sorted(ipaddress.ip_network(k) for k in self.shape.keys()):
            raise RuntimeError(f"shape index {sorted(self.shape.keys())} != trie nodes {shape_keys}")
        stored_keys = sorted(n.net for n in seen if n.stored)  # type: ignore[type-var]
        if (stored_keys != sorted(ipaddress.ip_network(k) for k in self.stored.keys())
                or len(stored_keys) + len(self.hosts) != self.count):
            raise RuntimeError("stored index out of step with the trie")
        for n in seen:
            pair = self.stored.get(n.net) if n.stored else None
            if n.stored and (pair is None or pair[0] != n.net or pair[1] is not n.value):
                raise RuntimeError(f"stored index holds a stale value for {n.net}")

    def walk(self, top: _Node | None) -> Iterator[_Node]:
        """Stored nodes under `top` (inclusive) in address order, shorter first."""
        stack = [top] if top is not None else []
        while stack:
            node = stack.pop()
            if node.stored:
                yield node
            if node.one is not None:
                stack.append(node.one)
            if node.zero is not None:
                stack.append(node.zero)

    def walk_after(self, addr: int, plen: int) -> Iterator[_Node]:
        """Stored nodes that `walk` yields after prefix (addr, plen), whether or not it is stored.

        A subtree whose whole address range lies below `addr` holds nothing later and is
        skipped at once, so finding the place costs the depth of the trie, not the prefixes
        before it: a cursor over a changing table (the views' pages) resumes in O(depth).
        """
        key, width = (addr, plen), self.width
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node.addr | ((1 << (width - node.plen)) - 1) < addr:
                continue
            if node.stored and (node.addr, node.plen) > key:
                yield node
            if node.one is not None:
                stack.append(node.one)
            if node.zero is not None:
                stack.append(node.zero)


class PrefixTable(Generic[V]):
    """EID prefix -> value, with longest-prefix match, per instance-ID and family.

    Used alike by the map-cache, the Map-Server's registrations and policy, so
    every one of them gets the same lookups and the same negative-prefix rule.
    Instance-IDs never leak into each other: a lookup in iid 7 sees only iid 7.
    """

    def __init__(self) -> None:
        self._tries: dict[tuple[int, int], _Trie] = {}
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __contains__(self, key: object) -> bool:
        """`(iid, network) in table`: exact presence."""
        if not (isinstance(key, tuple) and len(key) == 2):
            return False
        iid, network = key
        trie = self._trie(iid, network)
        if trie is not None and network.prefixlen == trie.width:
            return network.network_address.packed in trie.hosts
        return self._exact(iid, network) is not None

    def __iter__(self) -> Iterator[tuple[int, IPNetwork, V]]:
        """(iid, network, value) sorted by instance-ID, family, address, then length."""
        for (iid, _version) in sorted(self._tries):
            trie = self._tries[(iid, _version)]
            for net, value in trie.merged(trie.walk(trie.root), iter(trie.order)):
                yield iid, net, value  # type: ignore[misc]

    def items_after(self, iid: int, network: IPNetwork) -> Iterator[tuple[int, IPNetwork, V]]:
        """What `iter` yields after (iid, network), which need not be stored: a stable cursor."""
        check_iid(iid)
        check_network(network)
        start = (iid, network.version)
        for key in sorted(self._tries):
            if key < start:
                continue
            trie = self._tries[key]
            if key == start:  # hosts after (address, length): a greater address, or this one if shorter
                nodes = trie.walk_after(int(network.network_address), network.prefixlen)
                hosts = trie.order.from_key(network.network_address.packed, network.prefixlen < trie.width)
            else:
                nodes, hosts = trie.walk(trie.root), iter(trie.order)
            for net, value in trie.merged(nodes, hosts):
                yield key[0], net, value  # type: ignore[misc]

    def values(self) -> Iterator[V]:
        """Every stored value, in no promised order: `iter` without the sorting and, where a trie
        holds host routes only (a Map-Server's usual million), without walking it."""
        for trie in self._tries.values():
            yield from trie.hosts.values()  # type: ignore[misc]
            if len(trie.hosts) != trie.count:
                for node in trie.walk(trie.root):
                    yield node.value  # type: ignore[misc]

    def values_by_address(self) -> Iterator[V]:
        """Every stored value, host routes in address order per instance-ID and family, then the
        others: what a snapshot writes, so that a restore's `insert_packed` sorts a run already in order."""
        for slot in sorted(self._tries):
            trie = self._tries[slot]
            hosts = trie.hosts
            if hosts:
                yield from map(hosts.__getitem__, trie.order)  # type: ignore[misc]
            if len(hosts) != trie.count:
                for node in trie.walk(trie.root):
                    yield node.value  # type: ignore[misc]

    def check_invariants(self) -> None:
        """Raise RuntimeError if any internal index disagrees with another (for tests)."""
        total = 0
        for trie in self._tries.values():
            if trie.count == 0:
                raise RuntimeError("an empty trie was kept")
            trie.check()
            total += trie.count
        if total != self._len:
            raise RuntimeError(f"length {self._len} != stored prefixes {total}")

    def _trie(self, iid: int, network: IPNetwork) -> _Trie | None:
        check_iid(iid)
        check_network(network)
        return self._tries.get((iid, network.version))

    def _exact(self, iid: int, network: IPNetwork) -> _Node | None:
        trie = self._trie(iid, network)
        if trie is None:
            return None
        node: _Node = trie.shape.get(network)
        if node.plen == network.prefixlen and node.stored:
            return node
        return None

    def insert(self, iid: int, network: IPNetwork, value: V) -> bool:
        """Store or replace the value of an exact prefix; True if it replaced one."""
        check_iid(iid)
        check_network(network)
        key = (iid, network.version)
        trie = self._tries.get(key)
        if trie is None:
            trie = self._tries[key] = _Trie(network.max_prefixlen)
        replaced = trie.insert(network, value)
        if not replaced:
            self._len += 1
        return replaced

    def insert_packed(self, items: Iterable[tuple[int, bytes, V]]) -> None:
        """`insert` many (iid, key, value), a key being a prefix's packed address then its mask length
        (one byte), e.g. a restore's: host routes go in their dict, and their sorted index is built
        once at the end rather than key by key."""
        tries, fresh = self._tries, {}
        last, hosts, added = None, {}, []
        for iid, key, value in items:
            packed, plen = key[:-1], key[-1]
            width = 8 * len(packed)
            if plen != width or type(iid) is not int or width not in _NETWORK_CLASS:
                self.insert(iid, _NETWORK_CLASS.get(width, _NETWORK_CLASS[32])((packed, plen)), value)
                continue
            slot = (iid, 4 if width == 32 else 6)
            if slot != last:
                trie = tries.get(slot)
                if trie is None:
                    check_iid(iid)
                    trie = tries[slot] = _Trie(width)
                last, hosts = slot, trie.hosts
                added = fresh.setdefault(trie, [])
            if packed not in hosts:
                added.append(packed)
            hosts[packed] = value
        for trie, keys in fresh.items():
            trie.count += len(keys)
            self._len += len(keys)
            if trie.order:
                for packed in keys:
                    trie.order.add(packed)
            else:
                trie.order = SortedKeys(keys, unique=True)

    def remove(self, iid: int, network: IPNetwork) -> V:
        """Remove an exact prefix and return its value; PrefixNotFound if absent."""
        trie = self._trie(iid, network)
        if trie is None:
            raise PrefixNotFound(f"prefix [{iid}]{network} is not in the table")
        try:
            value = trie.remove(network)
        except PrefixNotFound:
            raise PrefixNotFound(f"prefix [{iid}]{network} is not in the table") from None
        self._len -= 1
        if trie.count == 0:
            del self._tries[(iid, network.version)]
        return value  # type: ignore[return-value]

    def get(self, iid: int, network: IPNetwork, default: V | None = None) -> V | None:
        """Value stored for exactly this prefix, else `default` (no longest match)."""
        trie = self._trie(iid, network)
        if trie is not None and network.prefixlen == trie.width:
            return trie.hosts.get(network.network_address.packed, default)  # type: ignore[return-value]
        node = self._exact(iid, network)
        return default if node is None else node.value  # type: ignore[return-value]

    def longest_match(self, iid: int, address: IPAddress) -> tuple[IPNetwork, V] | None:
        """The most specific stored prefix containing `address`, with its value."""
        try:
            trie = self._tries.get((iid, address.version)) if type(iid) is int else None
            if trie is not None:
                packed = address.packed
                value = trie.hosts.get(packed, _ABSENT)
                return trie.stored.get(packed) if value is _ABSENT else (trie.host_network(packed), value)
        except AttributeError:
            pass  # not an address: reported below
        check_iid(iid)
        check_address(address)
        return None

    def longest_match_packed(self, iid: int, packed: bytes) -> tuple[IPNetwork, V] | None:
        """`longest_match` for an address given as its 4 or 16 network-order bytes (the hot path)."""
        trie = self._tries.get((iid, 4 if len(packed) == 4 else 6))
        if trie is None:
            return None
        value = trie.hosts.get(packed, _ABSENT)
        return trie.stored.get(packed) if value is _ABSENT else (trie.host_network(packed), value)

    def longest_match_length_packed(self, iid: int, packed: bytes) -> tuple[int, V] | None:
        """(mask length, value) of `longest_match_packed`, without making a network: the hot path."""
        trie = self._tries.get((iid, 4 if len(packed) == 4 else 6))
        if trie is None:
            return None
        value = trie.hosts.get(packed, _ABSENT)
        if value is not _ABSENT:
            return trie.width, value  # type: ignore[return-value]
        pair = trie.stored.get(packed)
        return None if pair is None else (pair[0].prefixlen, pair[1])

    def covering(self, iid: int, network: IPNetwork, *, strict: bool = False) -> tuple[IPNetwork, V] | None:
        """The longest stored prefix that contains `network` (itself included unless `strict`)."""
        trie = self._trie(iid, network)
        if trie is None:
            return None
        if strict:
            if network.prefixlen == 0:
                return None
            if network.prefixlen == trie.width:  # a host: what contains it but itself is in the trie
                return trie.stored.get(network.network_address.packed)
            # Whatever strictly contains a prefix contains its one-bit-shorter supernet.
            network = network.supernet()
        elif network.prefixlen == trie.width:
            value = trie.hosts.get(network.network_address.packed, _ABSENT)
            if value is not _ABSENT:
                return network, value  # type: ignore[return-value]
        return trie.stored.get(network)

    def more_specifics(self, iid: int, network: IPNetwork, *, strict: bool = False) -> list[tuple[IPNetwork, V]]:
        """Stored prefixes inside `network` (itself included unless `strict`), in address order."""
        trie = self._trie(iid, network)
        if trie is None:
            return []
        plen = network.prefixlen
        if plen == trie.width:
            value = trie.hosts.get(network.network_address.packed, _ABSENT)
            return [] if strict or value is _ABSENT else [(network, value)]  # type: ignore[list-item]
        nodes = (node for node in trie.walk(trie.top_inside(network)) if not (strict and node.plen == plen))
        hosts = trie.order.between(network.network_address.packed, network.broadcast_address.packed)
        return list(trie.merged(nodes, hosts))  # type: ignore[arg-type]

    def widest_negative(self, iid: int, address: IPAddress) -> IPNetwork:
        """The least-specific prefix around `address` that overlaps no stored prefix.

        This is the EID-prefix of a negative Map-Reply (RFC 9301 §8.1): as wide
        as possible so the ITR caches one entry for the whole hole, but never
        covering a registered EID.  An address that a stored prefix covers has
        no such prefix: that raises AddressCovered (naming the prefix), since
        the caller should have answered with the mapping instead.
        """
        check_iid(iid)
        check_address(address)
        cls = _NETWORK_CLASS[address.max_prefixlen]
        trie = self._tries.get((iid, address.version))
        if trie is None:
            return cls((0, 0))
        packed = address.packed
        if packed in trie.hosts:
            raise AddressCovered(iid, address, trie.host_network(packed))
        hit = trie.stored.get(packed)
        if hit is not None:
            raise AddressCovered(iid, address, hit[0])
        addr = int(address)
        length = trie.widest_negative_length(addr, packed)
        width = trie.width
        return cls((addr >> (width - length) << (width - length), length))
