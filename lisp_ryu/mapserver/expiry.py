"""When registrations expire: a wheel of one-second buckets instead of a heap entry per registration.

A heap entry, its key tuple and its `State.armed` slot cost ~250 bytes per
registration; here a registration costs one pointer in the list of its
bucket, and each bucket one timer in `State`'s heap, armed at the earliest
expiry in it.  A registration's slot is taken for the expiry it had then
(`EtrRegistration.armed`); a refresh moves its `expires` on in place and
leaves the slot alone, and when the slot comes the registration is put in
the bucket of its new expiry (at most once per lifetime, as the heap entry
re-armed itself before).  A registration that was replaced or removed is
dropped when its slot comes.  Expiry is exact: a bucket's timer fires at the
earliest `armed` in it, and only what is due then is handled.  Registrations
due at the same moment go in the order of their `turn` (drawn once per
Map-Register, full or refreshing), then in the order they took their slots.
"""

from __future__ import annotations

import math
from operator import attrgetter
from typing import Callable, Iterable, Protocol

#: Seconds of expiries per bucket.
GRAIN = 1.0

_set = object.__setattr__  # a registration is frozen but for what its owners move on in place


class Timed(Protocol):
    """What the wheel needs of a registration (`state.EtrRegistration`)."""

    armed: float  # the expiry and turn its slot was taken for: the order of its bucket (which its
    armed_turn: int  # refresh must not change under the bucket, as it moves `expires` and `turn` on)
    expires: float
    turn: int
_ORDER = attrgetter("armed", "armed_turn")


class _Bucket:
    __slots__ = ("regs", "done", "ordered")

    def __init__(self) -> None:
        self.regs: list[Timed] = []
        self.done = 0  # regs[:done] are handled
        self.ordered = True  # regs[done:] sorted by `armed` (appends mostly come in order)


class ExpiryWheel:
    """The registrations' expiry timers: `schedule` is `State.schedule`, kind "reg", key (bucket,)."""

    def __init__(self, schedule: Callable[[float, str, tuple, int], object]) -> None:
        self._schedule = schedule
        self._buckets: dict[int, _Bucket] = {}

    def __len__(self) -> int:
        """Slots taken (live registrations, and replaced or removed ones until their slot comes)."""
        return sum(len(b.regs) - b.done for b in self._buckets.values())

    def add(self, reg: Timed) -> None:
        """Take a slot for `reg` at its current expiry (never, for an infinite one)."""
        when, turn = reg.expires, reg.turn
        _set(reg, "armed", when)
        _set(reg, "armed_turn", turn)
        if math.isinf(when):
            return
        index = int(when // GRAIN)
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = _Bucket()
        regs = bucket.regs
        if regs and (regs[-1].armed, regs[-1].armed_turn) > (when, turn):
            bucket.ordered = False
        regs.append(reg)
        self._schedule(when, "reg", (index,), turn)  # arms only an earlier time than the armed one

    def add_many(self, regs: Iterable[Timed]) -> None:
        """`add` each of `regs` (a restore's), their `armed` and `armed_turn` already set: one timer per
        bucket rather than one `State.schedule` per registration."""
        buckets = self._buckets
        touched: set[int] = set()
        last, slots = None, []
        for reg in regs:
            when = reg.armed
            if when != last:  # (a run of equal expiries: the same bucket)
                if when == math.inf:
                    continue
                index = int(when // GRAIN)
                bucket = buckets.get(index)
                if bucket is None:
                    bucket = buckets[index] = _Bucket()
                    bucket.ordered = False
                last, slots = when, bucket.regs
                touched.add(index)
            slots.append(reg)
        for index in touched:
            bucket = buckets[index]
            if not bucket.ordered:
                bucket.regs[bucket.done:] = sorted(bucket.regs[bucket.done:], key=_ORDER)
                bucket.ordered = True
            head = bucket.regs[bucket.done]
            self._schedule(head.armed, "reg", (index,), head.armed_turn)

    def due(self, key: tuple, now: float, expire: Callable[[Timed], object]) -> None:
        """The bucket `key` fired at `now`: the registrations at its head (one expiry and turn: the
        timer's) that were not refreshed since are given to `expire` (which drops them if they are
        still live), the refreshed ones re-armed.  The bucket's timer is then armed for its new
        head, even if due already: the timers of other kinds due in between go first."""
        (index,) = key
        bucket = self._buckets.get(index)
        if bucket is None:
            return
        regs = bucket.regs
        done = bucket.done
        if not bucket.ordered:
            regs[done:] = sorted(regs[done:], key=_ORDER)  # stable: equal ones keep their order
            bucket.ordered = True
        head = regs[done]
        armed, turn = head.armed, head.armed_turn
        if armed <= now:
            while done < len(regs) and regs[done].armed == armed and regs[done].armed_turn == turn:
                reg = regs[done]
                done += 1
                if reg.expires != armed:  # refreshed since it took this slot: take the one of its new expiry
                    self.add(reg)  # (even if due already: then in its turn among the other timers due)
                else:
                    expire(reg)
        if done == len(regs):
            del self._buckets[index]
            return
        if done > 256 and 2 * done > len(regs):
            del regs[:done]
            done = 0
        bucket.done = done
        if not bucket.ordered:
            regs[done:] = sorted(regs[done:], key=_ORDER)
            bucket.ordered = True
        self._schedule(regs[done].armed, "reg", key, regs[done].armed_turn)

    def clear(self) -> None:
        self._buckets.clear()
