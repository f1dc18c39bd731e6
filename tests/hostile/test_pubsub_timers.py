"""Renewals must not grow the timer heap (issue 15, item 1).

Every renewal of one subscription (same xTR-ID), and every refresh of one
registration, used to push a new expiry timer onto the heap: 60k renewals
left 60k heap entries (~0.8 kB each).  A subscription or registration now
keeps at most one live heap entry; a timer that fires before the current
expiry re-arms itself at it.
"""

import tracemalloc

from support.hostile_pubsub import T0, ack_all, make_core, register, subscribe

RENEWALS = 60_000


def test_sixty_thousand_subscription_renewals_leave_the_heap_bounded():
    core = make_core(rate_limit_per_source=1e9)
    register(core, "10.1.0.0/16", ["198.18.1.1"], xtr_id=0xFEED)
    ack_all(core, subscribe(core, "10.1.2.3", T0 + 1), T0 + 1)
    timers = core._state.timers

    def renew(count, start):
        for i in range(count):
            now = T0 + 2 + (start + i) * 0.001
            effects = subscribe(core, "10.1.2.3", now, nonce=1000 + start + i)
            if i % 20 == 0:  # (acknowledging every one would double the test's time, not its reach)
                ack_all(core, effects, now)
            if i % 1000 == 0:
                core.handle_timer(now)

    renew(RENEWALS - 5000, 0)
    assert len(timers) < 100, len(timers)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    renew(5000, RENEWALS - 5000)  # the last 5,000 under tracemalloc (it slows every allocation)
    grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    assert core.subscription_count == 1
    assert len(timers) < 100, len(timers)
    assert grown < 200_000, grown  # was ~1.4 kB per renewal
    # The subscription still expires when it should, once.
    last = max(sub.expires for sub in core.subscriptions())
    core.handle_timer(last - 1)
    assert core.subscription_count == 1
    core.handle_timer(last + 1)
    assert core.subscription_count == 0
    assert core.counters["subscriptions.expired"] == 1


def test_sixty_thousand_registration_refreshes_leave_the_heap_bounded():
    core = make_core(rate_limit_per_source=1e9)
    refreshes = 20_000
    for i in range(refreshes):
        register(core, "10.1.0.0/16", ["198.18.1.1"], now=T0 + i * 0.001, nonce=i)
    assert len(core._state.timers) < 100, len(core._state.timers)
    core.handle_timer(T0 + refreshes * 0.001 + 179)
    assert core.registration_count == 1  # the last refresh still counts
    core.handle_timer(T0 + refreshes * 0.001 + 181)
    assert core.registration_count == 0
    assert core.counters["registrations.expired"] == 1
