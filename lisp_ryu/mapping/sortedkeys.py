"""A sorted set of equal-length byte strings (packed addresses), for the host routes of a prefix table.

Host routes live in a dict by packed address (the longest match of their
address whenever stored), not in the C trie: a trie node, its two pytricia
entries and an `ipaddress` network each cost hundreds of bytes, and a
Map-Server holds a million of them.  What the dict cannot answer — the
neighbours of an address (the widest negative prefix), the hosts inside a
prefix, the hosts after a cursor — this index answers: sorted chunks of a
few hundred keys, with each chunk's last key in a list beside them, so an
insert moves a few hundred pointers, not a million.  Equal-length big-endian
byte strings sort as the addresses they pack.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Iterable, Iterator

#: Keys per chunk: a chunk splits at twice this.
LOAD = 512


class SortedKeys:
    """Sorted unique keys with add, discard, neighbours and range scans in O(log n + LOAD)."""

    __slots__ = ("_chunks", "_lasts", "_len")

    def __init__(self, keys: Iterable[bytes] = (), unique: bool = False) -> None:
        """`unique`: the caller knows `keys` holds each key once (a restore's million need no set)."""
        ordered = sorted(keys if unique else set(keys))
        self._chunks: list[list[bytes]] = [ordered[i:i + LOAD] for i in range(0, len(ordered), LOAD)]
        self._lasts: list[bytes] = [chunk[-1] for chunk in self._chunks]
        self._len = len(ordered)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            yield from chunk

    def __contains__(self, key: object) -> bool:
        at = bisect_left(self._lasts, key)  # type: ignore[arg-type]
        if at == len(self._lasts):
            return False
        chunk = self._chunks[at]
        i = bisect_left(chunk, key)  # type: ignore[arg-type]
        return i < len(chunk) and chunk[i] == key

    def add(self, key: bytes) -> bool:
        """Insert `key`; False if it was already there."""
        lasts, chunks = self._lasts, self._chunks
        if not chunks:
            chunks.append([key])
            lasts.append(key)
            self._len = 1
            return True
        at = bisect_left(lasts, key)
        if at == len(lasts):  # past every key: the last chunk grows (the common case of rising keys)
            at -= 1
            chunk = chunks[at]
            chunk.append(key)
            lasts[at] = key
        else:
            chunk = chunks[at]
            i = bisect_left(chunk, key)
            if chunk[i] == key:
                return False
            chunk.insert(i, key)
        self._len += 1
        if len(chunk) > 2 * LOAD:
            chunks[at:at + 1] = [chunk[:LOAD], chunk[LOAD:]]
            lasts[at:at + 1] = [chunk[LOAD - 1], chunk[-1]]
        return True

    def discard(self, key: bytes) -> bool:
        """Remove `key`; False if it was not there."""
        lasts, chunks = self._lasts, self._chunks
        at = bisect_left(lasts, key)
        if at == len(lasts):
            return False
        chunk = chunks[at]
        i = bisect_left(chunk, key)
        if i == len(chunk) or chunk[i] != key:
            return False
        del chunk[i]
        self._len -= 1
        if not chunk:
            del chunks[at], lasts[at]
        elif i == len(chunk):
            lasts[at] = chunk[-1]
        return True

    def neighbours(self, key: bytes) -> tuple[bytes | None, bytes | None]:
        """The greatest key below `key` and the least above it (None where there is none)."""
        lasts, chunks = self._lasts, self._chunks
        at = bisect_left(lasts, key)
        below = above = None
        if at < len(lasts):
            chunk = chunks[at]
            i = bisect_left(chunk, key)
            if i:
                below = chunk[i - 1]
            elif at:
                below = lasts[at - 1]
            j = bisect_right(chunk, key)
            if j < len(chunk):
                above = chunk[j]
            elif at + 1 < len(chunks):
                above = chunks[at + 1][0]
        elif lasts:
            below = lasts[-1]
        return below, above

    def from_key(self, key: bytes, inclusive: bool = True) -> Iterator[bytes]:
        """Keys from `key` on (>= key, or > key), in order."""
        lasts, chunks = self._lasts, self._chunks
        at = (bisect_left if inclusive else bisect_right)(lasts, key)
        if at == len(chunks):
            return
        chunk = chunks[at]
        yield from chunk[(bisect_left if inclusive else bisect_right)(chunk, key):]
        for chunk in chunks[at + 1:]:
            yield from chunk

    def between(self, low: bytes, high: bytes) -> Iterator[bytes]:
        """Keys k with low <= k <= high, in order."""
        for key in self.from_key(low):
            if key > high:
                return
            yield key

    def check(self) -> None:
        """Raise RuntimeError if the chunks are out of order or their index is stale (for tests)."""
        flat = list(self)
        if flat != sorted(set(flat)) or len(flat) != self._len:
            raise RuntimeError("sorted keys out of order, repeated or miscounted")
        if any(not chunk for chunk in self._chunks) or self._lasts != [chunk[-1] for chunk in self._chunks]:
            raise RuntimeError("sorted keys' chunk index is stale")

