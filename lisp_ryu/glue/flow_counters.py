"""Reading flows' packet counters from a switch: what its data plane did, not what its tables hold.

A barrier reply says a switch's tables hold what was sent before it.  A userspace
ovs-vswitchd applies a table change to the flows it has cached (its datapath flows) later,
in its revalidator threads: in the lab, on two busy cores, a destination still forwarded a
moving workload's traffic by a flow its tables no longer held 8-17 ms after the barrier.
A flow's packet counter moves only when packets took it, so a count tells that the data
plane uses it.  No count proves nothing: OVS credits a rule at once with the packet that made
a datapath flow, but one its revalidators changed in place only at their next pass (every
0.5 s by default; seen in the lab: a destination that had forwarded the workload's traffic
elsewhere before showed nothing for 0.29 s while delivering it).
"""

from __future__ import annotations

from typing import Any

ALL_COOKIE_BITS = 0xFFFFFFFFFFFFFFFF


class Reading:
    """The packets counted by the flows one request matched; None until the whole reply is in."""

    def __init__(self) -> None:
        self.packets: int | None = None
        self._sum = 0


class FlowCounters:
    """Multipart flow-stats requests of ours (not the tables' read at connection), by switch and
    xid (each switch numbers its own messages)."""

    def __init__(self) -> None:
        self._pending: dict[tuple[int, int], Reading] = {}

    def ask(self, datapath: Any, table: int, cookie: int) -> Reading:
        """Send a flow-stats request for the flows of `table` with exactly `cookie`."""
        parser, ofp = datapath.ofproto_parser, datapath.ofproto
        request = parser.OFPFlowStatsRequest(datapath, 0, table, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie,
                                             ALL_COOKIE_BITS, parser.OFPMatch())
        datapath.set_xid(request)
        reading = self._pending[(datapath.id, request.xid)] = Reading()
        datapath.send_msg(request)
        return reading

    def take(self, dpid: int, xid: int, body: list, more: bool) -> bool:
        """One part of a flow-stats reply: True if it answered one of our requests."""
        reading = self._pending.get((dpid, xid))
        if reading is None:
            return False
        reading._sum += sum(stats.packet_count for stats in body)
        if not more:
            del self._pending[(dpid, xid)]
            reading.packets = reading._sum
        return True

    def forget(self, reading: Reading) -> None:
        """A request whose answer nobody waits for any longer (a switch that never answered)."""
        for key in [k for k, r in self._pending.items() if r is reading]:
            del self._pending[key]
