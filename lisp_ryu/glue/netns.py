"""Open sockets inside a network namespace from a process that stays outside.

A socket belongs for life to the namespace it was created in, so the
controller (in the root namespace) can send LISP control messages from each
xTR's RLOC and serve the Map-Server's underlay address by creating those
sockets inside the lab's namespaces.  `setns(2)` switches only the calling
thread, so the switch happens on a dedicated OS thread that dies afterwards:
the caller's threads never change namespace.  Under eventlet's monkey
patching (ryu-manager patches threads) `threading` would give a green thread
sharing the caller's OS thread, so the original module is used then.
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
from typing import Callable, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(netns: str) -> str:
    """`ip netns` name -> its bind-mount path; a path is returned unchanged."""
    return netns if netns.startswith("/") else os.path.join(NETNS_RUN_DIR, netns)


def _os_threading():
    """The real `threading` module, also under eventlet's monkey patching.

    Eventlet is looked up, not imported: a process that has not imported it has not patched
    anything, and importing eventlet 0.33 inside a worker of a ThreadPoolExecutor left that
    worker's thread unjoinable (the pool's shutdown waited forever: `lisp-ryu lab evacuate`
    hung after making its interfaces)."""
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("thread"):
        return patcher.original("threading")
    import threading

    return threading


def run_in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Call `fn()` on a fresh OS thread inside `netns` (None: here) and return
    its result or raise its exception."""
    if netns is None:
        return fn()
    path = netns_path(netns)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(f"network namespace {netns!r} does not exist ({path})") from None
    result: dict = {}

    def target() -> None:
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({path}): {os.strerror(err)}")
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            result["error"] = exc

    try:
        thread = _os_threading().Thread(target=target, name=f"netns-{os.path.basename(path)}", daemon=True)
        thread.start()
        thread.join()
    finally:
        os.close(fd)
    if "error" in result:
        raise result["error"]
    return result["value"]


RCVBUF = 4 << 20


def open_udp_socket(netns: str | None, bind: tuple[str, int], family: int = socket.AF_INET) -> socket.socket:
    """A UDP socket created in `netns` and bound to `bind` (address, port)."""

    def make() -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:  # a burst (an evacuation: a Map-Notify per moved EID) waits here while the thread pushes flows
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            except OSError:
                pass  # the kernel's default, capped by net.core.rmem_max
            sock.bind(bind)
        except OSError as exc:
            sock.close()
            where = f"netns {netns}" if netns else "the current namespace"
            raise OSError(exc.errno, f"cannot bind UDP {bind[0]}:{bind[1]} in {where}: {exc.strerror}") from None
        return sock

    return run_in_netns(netns, make)
