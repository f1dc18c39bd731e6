"""Reflection (issue 15, item 8): requests from many spoofed sources naming a victim as ITR-RLOC.

Before, only the outer source was rate-limited: a Map-Resolver answered a
spoofed ITR-RLOC with 43x the bytes sent for a 255-locator mapping (162x
for subscribing requests).  Now each ITR-RLOC has a byte credit of 4x the
requests naming it (plus 256 B/s and a 4 kB burst), whatever their source.
"""

import ipaddress

from lisp_ryu.mapserver.service import REFLECTION_BURST, REFLECTION_FACTOR, REFLECTION_RATE

from support import packets
from support.hostile_pubsub import T0, VICTIM, make_core, register

LOCATORS = [str(ipaddress.ip_address("198.18.0.0") + i) for i in range(1, 256)]
SECONDS = 2.0


def flood(core, subscribe: bool) -> tuple[int, int]:
    """1,000 sources, each well inside its own rate limit, naming the victim: (bytes sent, bytes to the victim)."""
    sent = received = 0
    count = 4000
    for i in range(count):
        payload = packets.map_request_ecm("10.1.2.3", [VICTIM], nonce=i, subscribe=subscribe,
                                          xtr_id=0xBAD0000 + i if subscribe else None, site_id=1 if subscribe else None)
        sent += len(payload)
        now = T0 + 1 + i * SECONDS / count
        effects = core.handle_control(payload, ipaddress.ip_address(0x7F000001 + i % 1000), 4342, now)
        received += sum(len(e.payload) for e in effects if e.destination == VICTIM)
    for step in range(1, 6):
        received += sum(len(e.payload) for e in core.handle_timer(T0 + 1 + SECONDS + step)
                        if e.destination == VICTIM)
    return sent, received


def bound(sent: int, seconds: float) -> float:
    return REFLECTION_FACTOR * sent + REFLECTION_RATE * seconds + REFLECTION_BURST + 9216


def test_a_spoofed_itr_rloc_gets_at_most_the_allowed_factor_of_plain_answers():
    core = make_core()
    register(core, "10.1.0.0/16", LOCATORS)
    sent, received = flood(core, subscribe=False)
    assert received <= bound(sent, SECONDS + 6), received / sent  # was 43x
    assert core.counters["dropped.reflection_limited"] > 3000


def test_a_spoofed_itr_rloc_gets_at_most_the_allowed_factor_of_confirmations():
    core = make_core()
    register(core, "10.1.0.0/16", LOCATORS)
    sent, received = flood(core, subscribe=True)
    assert received <= bound(sent, SECONDS + 6), received / sent  # was 162x
    assert core.subscription_count == 0


def test_a_live_itr_is_answered_as_before():
    """A requester asking for itself (source = ITR-RLOC), at a sane rate, gets every answer."""
    core = make_core()
    register(core, "10.1.0.0/16", ["198.18.1.1", "198.18.1.2"])
    itr = ipaddress.ip_address("198.18.9.9")
    answered = 0
    for i in range(1000):
        payload = packets.map_request_ecm(f"10.1.{i // 250}.{i % 250}", [itr], nonce=i)
        answered += len(core.handle_control(payload, itr, 4342, T0 + i * 0.01))
    assert answered == 1000
