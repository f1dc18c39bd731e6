"""When the destination of a planned move asks an announced, silent workload to answer (xtr/asking.py)."""

from __future__ import annotations

import ipaddress
import itertools

import yaml

from lisp_ryu import config
from lisp_ryu.effects import PacketOut
from lisp_ryu.xtr import asking as m
from lisp_ryu.xtr.core import XtrCore
from unit.xtr.test_register_bursts import CONFIG

ip = ipaddress.ip_address
WORKLOAD, WORKLOAD_MAC = ip("10.1.0.10"), "02:00:00:01:00:0a"


def test_asks_back_off_end_with_one_before_the_window_closes_and_keep_to_their_rate():
    """An announced workload is asked ASK_FIRST after the announcement, then after gaps that
    double up to ASK_GAP_MAX, and once more ASK_BEFORE_END before its window ends; a planned
    evacuation's hundreds of workloads are asked ASK_BURST at a time, ASK_RATE a second."""
    cfg = config.parse(yaml.safe_load(CONFIG)).xtrs[0]  # dc2, learning hosts of 10.1.0.0/16
    counter = itertools.count(1000)
    xtr = XtrCore(cfg, nonces=lambda: next(counter))
    xtr.expect(42, WORKLOAD, 0.0, timeout=30.0, port=5, mac=WORKLOAD_MAC)
    asked_at = []
    now = 0.0
    while (deadline := xtr.next_deadline()) is not None and deadline < 30.0:
        now = deadline
        if any(isinstance(e, PacketOut) and e.out_port == 5 for e in xtr.handle_timer(now)):
            asked_at.append(round(now, 3))
    assert asked_at == [1.0, 3.0, 7.0, 15.0, 23.0, 29.0]  # gaps 2, 4, 8, 8, then the last before 30 - 1

    crowd = [ip(f"10.1.1.{k}") for k in range(1, 101)]
    for k, workload in enumerate(crowd):
        xtr.expect(42, workload, 100.0, timeout=30.0, port=10 + k, mac=WORKLOAD_MAC)
    sent = []
    now = 100.0
    first_round_ends = 100.0 + m.ASK_FIRST + (len(crowd) - 1) // m.ASK_BURST * m.ASK_BURST / m.ASK_RATE
    while (deadline := xtr.next_deadline()) is not None and deadline <= first_round_ends + 1e-6:
        now = deadline
        sent += [now for e in xtr.handle_timer(now) if isinstance(e, PacketOut)]
    assert len(sent) == len(crowd)  # each asked once, by the end of the first round
    assert max(sent) - min(sent) >= (len(crowd) - m.ASK_BURST) / m.ASK_RATE - 1e-6
    per_second = max(sum(1 for t in sent if a <= t < a + 1.0) for a in sent)
    assert per_second <= m.ASK_RATE + m.ASK_BURST
