"""The seams of the Map-Server core: how its parts are composed, and its one fast-path entry.

The parts (registry, resolver, pubsub, northbound, journal) share `state.State` and never import the
dispatcher (`service`) back, nor each other in a cycle.  The server loop (`reply_quickly`) and
`handle_control` (the Ryu app's way in) answer plain Map-Requests through the same function, so
both get the answer cache and both forward to an ETR that answers for itself.
"""

from __future__ import annotations

import ast
import ipaddress
import pathlib

import lisp_ryu.mapserver as package
from lisp_ryu.wire import decode_message

from mapserver_helpers import DC1_KEY, DC2_KEY, ETR1, ETR2, ITR, T0, make_core
from support import packets

CORE = ("answer_cache", "journal", "northbound", "pubsub", "registry", "resolver", "service", "shaping", "state",
        "store", "views")


def imports_of(name: str) -> set[str]:
    """The lisp_ryu.mapserver modules `name` imports, wherever the import statement is."""
    tree = ast.parse((pathlib.Path(package.__file__).parent / f"{name}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # from .x import y / from . import x
                found.update([module] if module else [alias.name for alias in node.names])
            elif module.startswith("lisp_ryu.mapserver."):
                found.add(module.split(".")[2])
            elif module == "lisp_ryu.mapserver":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[2] for alias in node.names
                         if alias.name.startswith("lisp_ryu.mapserver."))
    return found & set(CORE)


def test_no_part_imports_the_dispatcher_and_the_core_has_no_import_cycle():
    graph = {name: imports_of(name) for name in CORE}
    assert all("service" not in imported for name, imported in graph.items() if name not in ("service", "views"))
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for imported in graph[name]:
            visit(imported, (*path, name))
        done.add(name)

    for name in CORE:
        visit(name, ())


def registered_core():
    core = make_core()
    core.handle_control(packets.map_register([packets.record("10.1.0.0/16", ["198.18.1.1"])], DC1_KEY, proxy=True),
                        ETR1, 4342, T0)
    core.handle_control(packets.map_register([packets.record("10.2.0.0/16", ["198.18.2.1"])], DC2_KEY), ETR2, 4342,
                        T0)
    return core


def test_handle_control_answers_through_the_fast_path_and_its_answer_cache():
    core = registered_core()
    request = packets.map_request_ecm("10.1.0.1", [ITR], nonce=5)
    replies = [core.handle_control(request, ITR, 4342, T0 + 1) for _ in range(3)]
    assert all(len(reply) == 1 and reply[0].destination == ITR for reply in replies)
    assert decode_message(replies[0][0].payload).records[0].locators[0].address == ETR1
    # In on the second miss, a hit on the third: the same cache as the server loop's.
    assert core.answer_cache["entries"] == 1 and core.answer_cache["hits"] == 1
    assert core.counters["sent.map_reply"] == 3 and core.counters["received.map_request"] == 3


def test_the_fast_path_forwards_to_an_etr_that_answers_for_itself():
    core = registered_core()
    request = packets.map_request_ecm("10.2.0.9", [ITR], nonce=6)
    datagram, destination, port = core.reply_quickly(request, ITR, T0 + 1)
    assert datagram is request and ipaddress.ip_address(destination) == ETR2 and port == 4342
    [forwarded] = core.handle_control(request, ITR, 4342, T0 + 1)
    assert (forwarded.destination, forwarded.port, forwarded.payload) == (ETR2, 4342, request)
    assert core.counters["sent.map_request_forwarded"] == 2 and core.answer_cache["entries"] == 0


def test_a_rate_limited_forward_is_dropped_and_counted_as_the_full_path_does():
    quick, full = registered_core(), registered_core()
    full.quick_path = False
    for core in (quick, full):
        core.limiter = type(core.limiter)(rate=1.0, burst=1)
    request = packets.map_request_ecm("10.2.0.9", [ITR], nonce=7)
    sent = [[(e.destination, e.port, e.payload) for e in core.handle_control(request, ITR, 4342, T0 + 1)]
            for core in (quick, full) for _ in range(2)]
    assert sent[:2] == sent[2:] and [len(s) for s in sent[:2]] == [1, 0]
    assert quick.counters == full.counters and quick.counters["dropped.rate_limited"] == 1
