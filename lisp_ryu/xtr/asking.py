"""A planned move's destination asks a silent workload to answer at its new port (xtr/frames.py).

A workload announced with its new port and not seen there yet is asked: one that sends nothing
by itself is learned by its answer, instead of being lost when the window closes (the move's
flows serve it until then).  First ASK_FIRST seconds after the announcement, then twice as long
after each ask up to ASK_GAP_MAX, and once more ASK_BEFORE_END before the window ends; at most
ASK_RATE a second per xTR, ASK_BURST at a time.  Asking every workload of a planned evacuation
every 0.5 s (400 packet-outs a second) raised its outages by half (p50 0.28 -> 0.44 s).
"""

from __future__ import annotations

from typing import Any, Callable

from lisp_ryu.effects import PacketOut
from lisp_ryu.xtr.frames import ask_to_answer
from lisp_ryu.xtr.state import PlannedMove

ASK_FIRST = 1.0
ASK_GAP_MAX = 8.0
ASK_BEFORE_END = 1.0
ASK_RATE = 50.0
ASK_BURST = 10


def next_ask_at(now: float, move: PlannedMove) -> float | None:
    """When a workload asked `move.asked` times is asked next: the gap doubles from ASK_FIRST up
    to ASK_GAP_MAX, and the last ask comes ASK_BEFORE_END before the window ends (None: no more)."""
    gap = min(ASK_FIRST * 2 ** move.asked, ASK_GAP_MAX)
    last = move.until - ASK_BEFORE_END
    if now + gap < last:
        return now + gap
    return last if now < last else None


def ask_due(expected: dict, now: float, gateway_of: Callable[[int, Any], Any], router_mac: str) -> list[PacketOut]:
    """The asks due now among the `expected` moves ((iid, address) -> PlannedMove), ASK_BURST at most
    (the rest wait their turn), each from the gateway of its subnet (`gateway_of(iid, address)`,
    else `router_mac` and no address); each move's next ask is set."""
    due = sorted(((m.ask_at, key) for key, m in expected.items()
                  if m.ask_at is not None and m.ask_at <= now and m.at is not None), key=lambda d: d[0])
    asks: list[PacketOut] = []
    for i, (_, key) in enumerate(due):
        move = expected[key]
        if i >= ASK_BURST:  # the rest wait their turn, ASK_RATE a second
            move.ask_at = now + (i // ASK_BURST) * ASK_BURST / ASK_RATE
            continue
        gateway = gateway_of(*key)
        frame = ask_to_answer(key[1], move.at.mac, gateway.mac if gateway else router_mac,
                              gateway.ip if gateway else None)
        if frame is None:
            move.ask_at = None  # no IPv6 gateway to ask from: wait for the workload's own packets
            continue
        move.asked += 1
        move.ask_at = next_ask_at(now, move)
        asks.append(PacketOut(0, frame, out_port=move.at.port))
    return asks
