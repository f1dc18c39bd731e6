"""The expiry wheel against a reference: every registration expires exactly at its last expiry, in
(expiry, turn) order, whatever refreshes moved it on, with one timer per bucket."""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass

import pytest

from lisp_ryu.mapserver.expiry import GRAIN, ExpiryWheel


@dataclass(eq=False)
class Reg:
    name: int
    expires: float
    turn: int
    armed: float = 0.0
    armed_turn: int = 0


class Clock:
    """`State.schedule` and the timer loop of `MapServer.handle_timer`, reduced to the "reg" kind."""

    def __init__(self) -> None:
        self.timers: list = []
        self.armed: dict = {}
        self.sequence = itertools.count(1)

    def schedule(self, when, kind, key, turn=None):
        turn = next(self.sequence) if turn is None else turn
        if self.armed.get((kind, key), float("inf")) <= when:
            return
        self.armed[(kind, key)] = when
        heapq.heappush(self.timers, (when, turn, kind, key))

    def run(self, wheel: ExpiryWheel, now: float, expire) -> None:
        while self.timers and self.timers[0][0] <= now:
            when, _, kind, key = heapq.heappop(self.timers)
            if self.armed.get((kind, key)) != when:
                continue
            del self.armed[(kind, key)]
            wheel.due(key, now, expire)


@pytest.mark.parametrize("seed", range(30))
def test_expiries_are_exact_and_ordered_whatever_the_refreshes(seed):
    rng = random.Random(seed)
    clock = Clock()
    wheel = ExpiryWheel(clock.schedule)
    live: dict[int, Reg] = {}
    expired: list[tuple[float, int, int]] = []
    now = 0.0

    def expire(reg):
        if live.get(reg.name) is reg:
            assert reg.expires <= now
            expired.append((reg.expires, reg.turn, reg.name))
            del live[reg.name]

    for step in range(400):
        now += rng.choice([0.0, 0.3, 1.0, 2.5]) * GRAIN
        name = rng.randrange(40)
        turn = next(clock.sequence)
        lifetime = rng.choice([3.0, 5.0, 5.5, 180.0])
        if name in live and rng.random() < 0.6:  # a refresh: moved on in place (later: time moved on)
            reg = live[name]
            if now + lifetime > reg.expires:
                reg.expires, reg.turn = now + lifetime, turn
        else:  # a new registration (replacing any former one)
            live[name] = reg = Reg(name, now + lifetime, turn)
            wheel.add(reg)
        before = len(expired)
        clock.run(wheel, now, expire)
        due = sorted((r.expires, r.turn, r.name) for r in live.values() if r.expires <= now)
        assert not due, due  # nothing due is left
        assert expired[before:] == sorted(expired[before:])  # in (expiry, turn) order
        assert len(clock.timers) <= 2 * (200 / GRAIN) + 64  # timers per bucket, not per registration
    now += 1000
    clock.run(wheel, now, expire)
    assert not live and len(wheel) == 0
