"""Registrations in a snapshot as rows per ETR context: the context's fields once, then a flat array of
six values per registration (instance-ID, `prefix_key`, record bytes, registered at, expires, nonce).

A restart then unpacks arrays of plain values, not a map per registration,
and reads a row without decoding text (`stored_records.restore_rows`).  A
group is a snapshot's alone: the journal keeps one entry per registration,
and `journal.replay` lets the journal's entries replace rows they name.
Anything a row cannot say in this form (a damaged value) reads as the entry
it stands for (`expand`), and is then judged like one.
"""

from __future__ import annotations

import ipaddress
from socket import AF_INET, inet_pton
from typing import Iterable, Iterator

import msgpack

from lisp_ryu.mapserver.state import EtrContext, EtrRegistration, prefix_key, prefix_text

#: The "t" of a group of rows.
GROUP = "regs"
#: Values per registration in a group's "rows".
WIDTH = 6
#: The entry keys a group holds once (those `journal.registration_entry` takes from the context).
CONTEXT_KEYS = ("etr", "site", "src", "port", "proxy", "kid", "alg", "xid", "sid")


def context_fields(context: EtrContext) -> dict:
    xid = context.xtr_id
    return {"etr": context.etr, "site": context.site, "src": str(context.source), "port": context.port,
            "proxy": context.proxy_reply, "kid": context.key_id, "alg": context.algorithm,
            "xid": None if xid is None else xid.to_bytes(16, "big"), "sid": context.site_id}


def encode_groups(regs: Iterable[EtrRegistration]) -> Iterator[bytes]:
    """`regs` as encoded groups, one per context (by identity: contexts are shared per message)."""
    groups: dict[int, tuple[EtrContext, list]] = {}
    for reg in regs:
        context = reg.context
        group = groups.get(id(context))  # (each context is held by its registrations meanwhile)
        if group is None:
            group = groups[id(context)] = (context, [])
        group[1].extend((reg.iid, reg.key, reg.rec, reg.registered_at, reg.expires, reg.nonce))
    packer = msgpack.Packer(use_bin_type=True)
    for context, rows in groups.values():
        yield packer.pack({"t": GROUP, **context_fields(context), "rows": rows})


def grouped(entries: Iterable[dict]) -> Iterator[dict]:
    """Entries as a snapshot holds them now: registration entries (those with a canonical prefix text)
    as groups, first, their rows in address order as a compaction writes them
    (`PrefixTable.values_by_address`); every other entry after them, as it is."""
    groups: dict[tuple, list] = {}
    rest, keyed = [], []
    for entry in entries:
        key = canonical_key(entry.get("net")) if entry.get("t") == "reg" else None
        if key is None:
            rest.append(entry)
        else:
            keyed.append((entry.get("iid") if type(entry.get("iid")) is int else -1, len(key), key, entry))
    keyed.sort(key=lambda item: item[:3])
    for *_, key, entry in keyed:
        try:
            rows = groups.setdefault(tuple(entry.get(k) for k in CONTEXT_KEYS), [])
        except TypeError:  # an unhashable field: left as the entry it is
            rest.append(entry)
            continue
        rows.extend((entry.get("iid"), key, entry.get("rec"), entry.get("at"), entry.get("exp"), entry.get("n")))
    for shared, rows in groups.items():
        yield {"t": GROUP, **dict(zip(CONTEXT_KEYS, shared)), "rows": rows}
    yield from rest


def expand(group: dict) -> Iterator[dict]:
    """The registration entries a group holds, as the journal writes them (a damaged row included: the
    entry it gives is then refused like any damaged entry)."""
    shared = {k: group.get(k) for k in CONTEXT_KEYS}
    rows = group.get("rows")
    if not isinstance(rows, list):
        yield {"t": "reg", "iid": None}  # no rows: counted as one bad entry
        return
    for at in range(0, len(rows) - len(rows) % WIDTH, WIDTH):
        iid, key, rec, registered_at, expires, nonce = rows[at:at + WIDTH]
        yield {"t": "reg", "iid": iid, "net": key_text(key), **shared, "rec": rec, "at": registered_at,
               "exp": expires, "n": nonce}
    if len(rows) % WIDTH:
        yield {"t": "reg", "iid": None}  # a cut row: counted as bad, not dropped unseen


def key_text(key: object) -> str | None:
    """The prefix text of a row's key; None if the key is no `prefix_key`."""
    if type(key) is not bytes or len(key) not in (5, 17) or key[-1] > 8 * (len(key) - 1):
        return None
    return prefix_text(key)


def canonical_key(net: object) -> bytes | None:
    """The `prefix_key` of a prefix text written as `prefix_text` writes it, else None."""
    if type(net) is not str:
        return None
    address, _, length = net.partition("/")
    if not length.isdigit() or len(length) > 3:
        return None
    try:
        if ":" not in address:
            key = inet_pton(AF_INET, address) + bytes((int(length),))
            return key if key[-1] <= 32 and prefix_text(key) == net else None
        key = prefix_key(ipaddress.IPv6Network(net))
    except (OSError, ValueError):
        return None
    return key if prefix_text(key) == net else None
