"""Host routes live beside the tries (a dict and a sorted index): every query must answer as if they
were in them.  Checked against a brute-force model on random tables dense in host routes."""

from __future__ import annotations

import ipaddress
import random

import pytest

import lisp_ryu.mapping.sortedkeys as sortedkeys
from lisp_ryu.mapping import PrefixTable
from lisp_ryu.mapping.eid import AddressCovered
from lisp_ryu.mapping.sortedkeys import SortedKeys


def _random_network(rng: random.Random, width: int, bits: int):
    cls = ipaddress.IPv4Network if width == 32 else ipaddress.IPv6Network
    plen = rng.choice([width] * 3 + list(range(width - bits, width + 1)))
    address = rng.getrandbits(bits) << (width - bits)
    if rng.random() < 0.3:
        address |= (1 << (width - bits)) - 1
    return cls((address >> (width - plen) << (width - plen), plen))


def _order(net):
    return int(net.network_address), net.prefixlen


@pytest.mark.parametrize("seed", range(40))
def test_queries_answer_as_a_brute_force_model(seed):
    rng = random.Random(seed)
    width = rng.choice([32, 128])
    bits = rng.choice([4, 6, 8])
    table: PrefixTable[str] = PrefixTable()
    model: dict = {}
    for _ in range(60):
        net = _random_network(rng, width, bits)
        if model and rng.random() < 0.3:
            gone = rng.choice(list(model))
            assert table.remove(5, gone) == model.pop(gone)
        else:
            assert table.insert(5, net, str(net)) == (net in model)
            model[net] = str(net)
        table.check_invariants()
        ordered = sorted(model, key=_order)
        assert len(table) == len(model)
        assert [(n, v) for _, n, v in table] == [(n, model[n]) for n in ordered]
        assert sorted(table.values()) == sorted(model.values())
        hosts = sorted((n for n in model if n.prefixlen == width), key=_order)
        by_address = list(table.values_by_address())
        assert by_address[:len(hosts)] == [model[n] for n in hosts]
        assert sorted(by_address) == sorted(model.values())
        q = _random_network(rng, width, bits)
        assert table.get(5, q) == model.get(q) and ((5, q) in table) == (q in model)
        assert table.more_specifics(5, q) == [(n, model[n]) for n in ordered if n.subnet_of(q)]
        assert table.more_specifics(5, q, strict=True) == [(n, model[n]) for n in ordered
                                                           if n.subnet_of(q) and n != q]
        around = [n for n in model if q.subnet_of(n)]
        covering = table.covering(5, q)
        assert (covering and covering[0]) == (max(around, key=lambda n: n.prefixlen) if around else None)
        strict = [n for n in around if n != q]
        covering = table.covering(5, q, strict=True)
        assert covering == ((lambda n: (n, model[n]))(max(strict, key=lambda n: n.prefixlen)) if strict else None)
        assert [(n, v) for _, n, v in table.items_after(5, q)] == [(n, model[n]) for n in ordered
                                                                   if _order(n) > _order(q)]
        address = q.network_address
        holding = [n for n in model if address in n]
        match = table.longest_match(5, address)
        assert (match and match[0]) == (max(holding, key=lambda n: n.prefixlen) if holding else None)
        length = table.longest_match_length_packed(5, address.packed)
        assert (length and length[0]) == (match and match[0].prefixlen)
        if holding:
            with pytest.raises(AddressCovered):
                table.widest_negative(5, address)
        else:
            hole = table.widest_negative(5, address)
            assert address in hole and not any(hole.overlaps(n) for n in model)
            assert hole.prefixlen == 0 or any(hole.supernet().overlaps(n) for n in model)


def test_insert_packed_is_insert_in_bulk():
    rng = random.Random(7)
    nets = {_random_network(rng, 32, 10) for _ in range(3000)} | {_random_network(rng, 128, 10) for _ in range(300)}
    bulk: PrefixTable[str] = PrefixTable()
    one: PrefixTable[str] = PrefixTable()
    one.insert(3, ipaddress.ip_network("10.0.0.1/32"), "before")  # a table not empty: keys added one by one
    bulk.insert(3, ipaddress.ip_network("10.0.0.1/32"), "before")
    for net in nets:
        one.insert(3, net, str(net))
    bulk.insert_packed([(3, net.network_address.packed + bytes((net.prefixlen,)), str(net)) for net in nets])
    bulk.check_invariants()
    assert list(bulk) == list(one) and len(bulk) == len(one)


def test_sorted_keys_against_a_set(monkeypatch):
    monkeypatch.setattr(sortedkeys, "LOAD", 3)  # chunks split and vanish often
    for seed in range(100):
        rng = random.Random(seed)
        keys = SortedKeys(bytes([rng.randrange(40)]) for _ in range(rng.randrange(10)))
        model = set(keys)
        for _ in range(80):
            key = bytes([rng.randrange(40)])
            if rng.random() < 0.5:
                assert keys.add(key) == (key not in model)
                model.add(key)
            else:
                assert keys.discard(key) == (key in model)
                model.discard(key)
            keys.check()
            ordered = sorted(model)
            assert list(keys) == ordered and len(keys) == len(ordered) and (key in keys) == (key in model)
            q, high = bytes([rng.randrange(40)]), bytes([rng.randrange(40)])
            below, above = [k for k in ordered if k < q], [k for k in ordered if k > q]
            assert keys.neighbours(q) == (below[-1] if below else None, above[0] if above else None)
            assert list(keys.from_key(q)) == [k for k in ordered if k >= q]
            assert list(keys.from_key(q, inclusive=False)) == above
            assert list(keys.between(q, high)) == [k for k in ordered if q <= k <= high]
