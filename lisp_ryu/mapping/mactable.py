"""MAC EIDs (AFI 16389) per instance-ID: a sibling of `table.PrefixTable` with the same method names.

MACs have no prefixes, so longest match is exact match: one code path in
callers such as the map-cache, no fake mask lengths in a trie.
"""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

from .eid import EidError, MacAddress, PrefixNotFound, check_iid

V = TypeVar("V")


class MacTable(Generic[V]):
    """MAC EID -> value per instance-ID: exact match only, same method names as PrefixTable.

    MACs have no hierarchy to match on, so a dict is both simpler and faster
    than pretending they are /48 prefixes in a trie.
    """

    def __init__(self) -> None:
        self._map: dict[tuple[int, int], tuple[MacAddress, V]] = {}

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, key: object) -> bool:
        if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], MacAddress)):
            return False
        return (key[0], int(key[1])) in self._map

    def __iter__(self) -> Iterator[tuple[int, MacAddress, V]]:
        """(iid, mac, value) sorted by instance-ID then MAC."""
        for (iid, _), (mac, value) in sorted(self._map.items(), key=lambda kv: kv[0]):
            yield iid, mac, value

    @staticmethod
    def _key(iid: int, mac: MacAddress) -> tuple[int, int]:
        check_iid(iid)
        if not isinstance(mac, MacAddress):
            raise EidError(f"expected a MacAddress, got {type(mac).__name__} {mac!r}")
        return (iid, int(mac))

    def insert(self, iid: int, mac: MacAddress, value: V) -> bool:
        """Store or replace; True if it replaced an entry."""
        key = self._key(iid, mac)
        replaced = key in self._map
        self._map[key] = (mac, value)
        return replaced

    def remove(self, iid: int, mac: MacAddress) -> V:
        """Remove and return the value; PrefixNotFound if absent."""
        try:
            return self._map.pop(self._key(iid, mac))[1]
        except KeyError:
            raise PrefixNotFound(f"MAC [{iid}]{mac} is not in the table") from None

    def get(self, iid: int, mac: MacAddress, default: V | None = None) -> V | None:
        item = self._map.get(self._key(iid, mac))
        return default if item is None else item[1]

    def longest_match(self, iid: int, mac: MacAddress) -> tuple[MacAddress, V] | None:
        """Exact match, under PrefixTable's name so callers need no special case."""
        return self._map.get(self._key(iid, mac))
