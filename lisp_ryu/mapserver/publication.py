"""What one message's publications send (`pubsub.PubSub.publish`): the changed records gathered per
destination, and cut into the Map-Notifies that carry them."""

from __future__ import annotations

from typing import Iterator

from lisp_ryu.mapserver.shaping import distinct, shape
from lisp_ryu.mapserver.state import EtrRegistration, IPNetwork, State, Subscription
from lisp_ryu.wire import EidPrefix, MapNotify, MappingRecord

#: Records per Map-Notify of a publication, and their bytes (more go in further Map-Notifies): the record
#: count is 8 bits, and a Notify must fit an unfragmented datagram with its headers and authentication data.
MAX_RECORDS_PER_NOTIFY = 255
MAX_NOTIFY_RECORD_BYTES = 1300


class Batch:
    """The publications of one message (or of one change) by destination, in the order they came."""

    __slots__ = ("former", "subscribers")

    def __init__(self) -> None:
        #: (ETR address, port, site, algorithm, key ID) -> (records, prefixes): the ETRs that held a prefix.
        self.former: dict[tuple, tuple[list[MappingRecord], list[tuple[int, IPNetwork]]]] = {}
        #: (ITR-RLOC, port, site of the xTR-ID) -> (subscriptions by key, records, prefixes).  One Map-Notify
        #: per ITR and key: what a change sends is bounded by the ITRs, not by their subscriptions.
        self.subscribers: dict[tuple, tuple[dict, list[MappingRecord], list[tuple[int, IPNetwork]]]] = {}

    def add(self, state: State, iid: int, net: IPNetwork, record: MappingRecord | None,
            holders: list[EtrRegistration], subscriptions: list[Subscription]) -> None:
        """`net` changed to `record` (None: gone): tell `holders` and the overlapping `subscriptions`."""
        policy = state.policy
        shaped = record is not None and not policy.empty
        if record is None:
            record = MappingRecord.for_prefix(EidPrefix(net.network_address, net.prefixlen, iid), (), ttl=0,
                                              action=state.negative_action)
        entry = state.registered.get(iid, net) if shaped else None
        for reg in holders:
            records, nets = self.former.setdefault((reg.source, reg.port, reg.site, reg.algorithm, reg.key_id),
                                                   ([], []))
            records.append(record)
            nets.append((iid, net))
        for sub in subscriptions:
            told: tuple[MappingRecord, ...] = (record,)
            if shaped:  # what each of this subscriber's hosts may see of the new record
                probe = sub.prefix.network_address if sub.prefix.subnet_of(net) else net.network_address
                told = distinct(shape(iid, net, record, entry.site if entry else None, source, sub.itr_rloc, probe,
                                      policy, state.config.negative_ttl_minutes)
                                for source in sub.source_eids or (None,))
            members, records, nets = self.subscribers.setdefault(
                (sub.itr_rloc, sub.port, state.xtr_sites.get(sub.xtr_id)), ({}, [], []))
            members[(sub.iid, sub.prefix, sub.xtr_id)] = sub
            records.extend(told)
            if not nets or nets[-1] != (iid, net):
                nets.append((iid, net))


def notify_parts(records: tuple[MappingRecord, ...]) -> Iterator[tuple[MappingRecord, ...]]:
    """`records` in order, cut into the Map-Notifies that carry them (`MAX_RECORDS_PER_NOTIFY`,
    `MAX_NOTIFY_RECORD_BYTES`; a lone record larger than the bytes goes alone)."""
    if len(records) <= 1:
        yield records
        return
    part: list[MappingRecord] = []
    size = 0
    for record in records:
        length = len(MapNotify(nonce=0, records=(record,)).encode()) - _EMPTY_NOTIFY
        if part and (len(part) == MAX_RECORDS_PER_NOTIFY or size + length > MAX_NOTIFY_RECORD_BYTES):
            yield tuple(part)
            part, size = [], 0
        part.append(record)
        size += length
    yield tuple(part)


def about(nets: list[tuple[int, IPNetwork]]) -> str:
    """What a publication's Map-Notify is about, for its log line."""
    iid, net = nets[0]
    return f"Map-Notify for {net} iid {iid}" + (f" and {len(nets) - 1} other prefix(es)" if len(nets) > 1 else "")


_EMPTY_NOTIFY = len(MapNotify(nonce=0, records=()).encode())
