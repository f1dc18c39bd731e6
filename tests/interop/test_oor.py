"""Interoperability with a third-party LISP implementation: Open Overlay Router 1.3.0 (Debian 12).

Both directions, over real UDP between network namespaces (198.18.200.0/24 exists only there):

1. OOR as Map-Server/Map-Resolver, our `XtrCore` as ETR and ITR (`lo-oorms-*` <-> `lo-xtr-*`):
   our HMAC-SHA-1 Map-Registers are accepted and OOR's Map-Notify verifies; a Map-Request (ECM)
   is answered by OOR itself (proxy-reply) or forwarded to our ETR, which answers our ITR; what
   OOR sends decodes with our codec and without "Malformed" in Wireshark.
2. OOR as xTR, our `lisp-ryu mapserver` (`lo-lrms-*` <-> `lo-oorx-*`): OOR's Map-Register is
   accepted, OOR accepts our Map-Notify, and our ITR's Map-Request is answered by OOR as the ETR
   (forwarded by our server) or by our server (proxy-reply).

OOR comes from `make oor` (the Debian package extracted into .cache/oor/root, never installed).
Each OOR runs in its own namespace with a private /tmp (its API socket /tmp/oor-ipc and its
/tmp/oor-id would otherwise be shared), under the name `lo-oor`.  Without OOR or root the tests
skip; LISP_RYU_REQUIRE_INTEROP=1 (CI) turns that skip into a failure.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import json
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lisp_ryu.config import EidPrefixConfig, MapServerRef, RlocConfig, RlocProbingConfig, XtrConfig
from lisp_ryu.effects import PacketOut
from lisp_ryu.glue.controller import ControlEndpoint, Controller
from lisp_ryu.glue.netns import open_udp_socket
from lisp_ryu.lab.capture import Capture, decode
from lisp_ryu.wire import (
    AuthAlgorithm,
    AuthResult,
    EidPrefix,
    EncapsulatedControlMessage,
    Locator,
    MapNotify,
    MappingRecord,
    MapRegister,
    MapReply,
    MapRequest,
    ReplicationList,
    RleEntry,
    check_authentication,
    decode_message,
)
from lisp_ryu.xtr.core import XtrCore
from support import packets
from support.underlay import FakeSwitch

pytestmark = [pytest.mark.interop, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
OOR_ROOT = Path(os.environ.get("LISP_RYU_OOR_ROOT", REPO / ".cache" / "oor" / "root"))
KEY = "oor-secret"
START_TIMEOUT = 20.0
LISP_CONTROL = 4342


def _oor_binary() -> tuple[Path, Path | None] | None:
    """(oor, the directory of the libraries extracted beside it, if any), or None."""
    binary = OOR_ROOT / "usr" / "sbin" / "oor"  # extracted by `make oor`
    if binary.is_file():
        libdirs = sorted((OOR_ROOT / "usr" / "lib").glob("*-linux-gnu*"))
        return binary, libdirs[0] if libdirs else None
    installed = Path("/usr/sbin/oor")  # its libraries are the system's
    return (installed, None) if installed.is_file() else None


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "interop tests need root (network namespaces)"
    for tool in ("ip", "tcpdump", "stdbuf", "bash"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if _oor_binary() is None:
        return (f"Open Overlay Router is not available ({OOR_ROOT}/usr/sbin/oor nor /usr/sbin/oor): "
                "run `make oor` (apt-get download openoverlayrouter + dpkg-deb -x, no service started)")
    return None


@pytest.fixture(autouse=True)
def _require_oor():
    reason = _unavailable()
    if reason:
        if os.environ.get("LISP_RYU_REQUIRE_INTEROP") == "1":
            pytest.fail(f"LISP_RYU_REQUIRE_INTEROP=1 but {reason}")
        pytest.skip(reason)


def _need_tshark() -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")


# ---------------------------------------------------------------------------- namespaces


def _ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def _namespaces() -> set[str]:
    return {line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()}


class Link:
    """Two `lo-` namespaces joined by one veth pair created directly inside them (never in ours)."""

    def __init__(self, left: str, right: str, left_if: str, right_if: str,
                 left_addrs: list[str], right_addrs: list[str]) -> None:
        tag = f"{os.getpid() % 0x10000:04x}"
        self.left, self.right = f"{left}-{tag}", f"{right}-{tag}"
        self.left_if, self.right_if = left_if, right_if
        self._addrs = {self.left: (left_if, left_addrs), self.right: (right_if, right_addrs)}

    def __enter__(self) -> "Link":
        try:
            for ns in (self.left, self.right):
                _ip("netns", "add", ns)
            _ip("link", "add", self.left_if, "netns", self.left, "type", "veth",
                "peer", "name", self.right_if, "netns", self.right)
            for ns, (ifname, addrs) in self._addrs.items():
                for addr in addrs:
                    _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", ifname)
                _ip("-n", ns, "link", "set", ifname, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
            # OOR takes an RLOC whose interface is not yet operationally UP as down and registers
            # its mapping with no locator at all (fixed only by a re-register ~4 s later): start it
            # on a link that is up.
            deadline = time.monotonic() + 5
            while not all(" state UP " in _ip("-n", ns, "-o", "link", "show", "dev", ifname)
                          for ns, (ifname, _) in self._addrs.items()):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"veth {self.left_if}/{self.right_if} did not come up")
                time.sleep(0.05)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for ns in (self.left, self.right):
            if ns in _namespaces():
                _ip("netns", "del", ns)  # takes the veth pair with it


def _assert_torn_down(before: set[str], link: Link) -> None:
    assert _namespaces() == before - {link.left, link.right}, "a namespace was left behind"
    root_links = {line.split(":")[1].strip().split("@")[0] for line in _ip("-o", "link").splitlines()}
    assert not root_links & {link.left_if, link.right_if}, "a veth was left in the root namespace"


# ---------------------------------------------------------------------------- OOR


class Oor:
    """One OOR daemon in `netns`, with its config and a private /tmp in `workdir`."""

    def __init__(self, netns: str, workdir: Path, config: str) -> None:
        binary, libdir = _oor_binary()  # type: ignore[misc]
        self.netns = netns
        self.dir = workdir
        self.dir.mkdir(parents=True)
        (self.dir / "oor.conf").write_text(config)
        # Copies, not links: /tmp is bind-mounted over for OOR, which would hide a checkout
        # that lives under /tmp (as CI's does).  Named lo-oor so the process is recognisable.
        shutil.copy2(binary, self.dir / "lo-oor")
        if libdir is not None:
            shutil.copytree(libdir, self.dir / "lib", symlinks=True)
        else:
            (self.dir / "lib").mkdir()
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None

    def start(self, ready: str) -> "Oor":
        # `ip netns exec` gives the command its own mount namespace (slave to ours): the bind
        # mount over /tmp is private to OOR and dies with it.  stdbuf: OOR logs to stdout when
        # not daemonised, fully buffered into a pipe otherwise.
        script = ('mount --bind "$0" /tmp && export LD_LIBRARY_PATH=/tmp/lib && '
                  'exec stdbuf -oL -eL /tmp/lo-oor -f /tmp/oor.conf')
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.netns, "bash", "-c", script, str(self.dir)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        self._reader = threading.Thread(target=self._read, name="lo-oor-log", daemon=True)
        self._reader.start()
        if not self.wait_for(ready, START_TIMEOUT):
            self.stop()
            raise RuntimeError(f"OOR did not start in {self.netns}:\n{self.log()}")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.dir / "oor.out", "w") as out:
            for line in self.proc.stdout:
                out.write(line)
                out.flush()
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    self._cond.notify_all()

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc is not None and self.proc.poll() is not None):
                    return False
                self._cond.wait(min(left, 0.2))
            return True

    def log(self) -> str:
        with self._cond:
            return "\n".join(self.lines[-80:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
        assert proc.returncode is not None and not Path(f"/proc/{proc.pid}").exists(), "OOR is still running"


# ---------------------------------------------------------------------------- our xTR core


def _xtr_config(name: str, rloc: str, prefixes: list[str], map_server: str, *, proxy_reply: bool,
                key: str = KEY, algorithm: str = "sha1") -> XtrConfig:
    ms = ipaddress.ip_address(map_server)
    return XtrConfig(
        name=name, dpid=1, rlocs=(RlocConfig(ipaddress.ip_address(rloc)),), tunnel_port=100,
        eid_prefixes=tuple(EidPrefixConfig(ipaddress.ip_network(p)) for p in prefixes),
        map_servers=(MapServerRef(ms, key, algorithm=algorithm),) if prefixes else (),
        map_resolvers=(ms,), proxy_reply=proxy_reply, rloc_probing=RlocProbingConfig(enabled=False),
    )


@dataclass
class Node:
    """One XtrCore behind the controller: the UDP socket on its RLOC (port 4342) in a namespace, a fake switch."""

    core: XtrCore
    sock: object
    endpoint: ControlEndpoint
    switch: FakeSwitch
    received: list[tuple[str, int, bytes]] = field(default_factory=list)

    @property
    def packet_outs(self) -> list[PacketOut]:
        return self.switch.packet_outs


class Driver:
    """The real controller (lisp_ryu.glue.controller) on real sockets; each xTR's switch is a fake."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.nodes: list[Node] = []
        self.controller = Controller()
        nonces = itertools.count(secrets.randbits(48))
        self._nonces = lambda: next(nonces)

    def add(self, config: XtrConfig) -> Node:
        config = dataclasses.replace(config, dpid=len(self.nodes) + 1)  # one switch each
        sock = open_udp_socket(self.netns, (str(config.rlocs[0].address), LISP_CONTROL))
        core = XtrCore(config, nonces=self._nonces)
        endpoint = self.controller.add_endpoint(ControlEndpoint(f"xtr {config.name}", core, sock.sendto,
                                                                dpid=config.dpid,
                                                                receivers={config.rlocs[0].address: sock}))
        switch = FakeSwitch(config.dpid)
        self.controller.switch_connected(switch)
        switch.answer(self.controller)
        node = Node(core, sock, endpoint, switch)
        self.nodes.append(node)
        return node

    def close(self) -> None:
        for node in self.nodes:
            node.sock.close()

    def apply(self, node: Node, effects: list) -> None:
        self.controller.run(node.endpoint, effects)

    def start(self, node: Node) -> None:
        self.apply(node, node.core.start(time.monotonic()))

    def pump(self, until, timeout: float) -> bool:
        """Deliver datagrams and timers until `until()` holds (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        socks = {node.sock: node for node in self.nodes}
        while not until():
            now = time.monotonic()
            if now >= deadline:
                return False
            ready, _, _ = select.select(list(socks), [], [], min(0.05, deadline - now))
            for sock in ready:
                node = socks[sock]
                data, (src, port) = sock.recvfrom(65535)
                node.received.append((src, port, data))
                self.controller.datagram(node.endpoint, data, src, port, node.core.config.rlocs[0].address)
            self.controller.run_timers()
        return True


def _registered(node: Node) -> bool:
    return all(reg.registered for reg in node.core.registrations)


def _cached(node: Node, eid: str) -> list[str] | None:
    entry = node.core.cache.lookup(0, ipaddress.ip_address(eid), time.monotonic())
    if entry is None:
        return None
    return [str(loc.address) for loc in entry.value.record.locators]


def _miss(driver: Driver, node: Node, source: str, destination: str, packet: bytes) -> None:
    driver.apply(node, node.core.handle_miss(1, 0, ipaddress.ip_address(source), ipaddress.ip_address(destination),
                                             packet, time.monotonic()))


def _payloads(pcap: Path, source: str) -> list[bytes]:
    """The outer UDP payloads `source` sent, from a capture (first occurrence: the outer header)."""
    out = decode(pcap, "-T", "fields", "-E", "occurrence=f", "-e", "ip.src", "-e", "udp.payload")
    found = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[0] == source and parts[1]:
            found.append(bytes.fromhex(parts[1].replace(":", "")))
    return found


def _assert_clean_dissection(pcap: Path) -> str:
    text = decode(pcap, "-d", f"udp.port=={LISP_CONTROL},lisp", "-V")
    assert "Malformed" not in text and "[Expert Info (Error" not in text, text
    return text


# ---------------------------------------------------------------------------- 1. OOR as Map-Server

MS_ADDR = "198.18.200.1"
RLOC_A, RLOC_B = "198.18.200.2", "198.18.200.3"
RLOC_C = "198.18.200.4"

OOR_MS_CONFIG = """\
debug = 2
operating-mode = MS
control-iface = lo-ms0
lisp-site {{
    eid-prefix = 10.71.0.0/16
    key-type = 1
    key = {key}
    iid = 0
    accept-more-specifics = false
}}
lisp-site {{
    eid-prefix = 10.72.0.0/16
    key-type = 1
    key = {key}
    iid = 0
    accept-more-specifics = false
}}
"""


@pytest.fixture
def oor_ms(tmp_path):
    """OOR as Map-Server/Map-Resolver at 198.18.200.1 in lo-oorms-*, our side in lo-xtr-*."""
    before = _namespaces()
    link = Link("lo-oorms", "lo-xtr", "lo-ms0", "lo-xtr0", [MS_ADDR], [RLOC_A, RLOC_B, RLOC_C])
    oor = driver = None
    try:
        link.__enter__()
        oor = Oor(link.left, tmp_path / "oor-ms", OOR_MS_CONFIG.format(key=KEY)).start("started...")
        driver = Driver(link.right)
        yield link, oor, driver
    finally:
        if driver is not None:
            driver.close()
        if oor is not None:
            oor.stop()
        link.__exit__()
        _assert_torn_down(before, link)


@pytest.mark.tshark
def test_our_xtr_registers_with_oor_and_resolves_through_it(oor_ms, tmp_path):
    _need_tshark()
    link, oor, driver = oor_ms
    a = driver.add(_xtr_config("a", RLOC_A, ["10.71.0.0/16"], MS_ADDR, proxy_reply=True))
    b = driver.add(_xtr_config("b", RLOC_B, ["10.72.0.0/16"], MS_ADDR, proxy_reply=True))
    pcap = tmp_path / "oor-ms.pcap"
    with Capture(link.right, link.right_if, f"udp port {LISP_CONTROL}", pcap, count=1000, timeout=1.0):
        driver.start(a)
        driver.start(b)
        assert driver.pump(lambda: _registered(a) and _registered(b), timeout=5), oor.log()
        # ITR: a packet from 10.71.0.10 to 10.72.0.20 misses; OOR answers the Map-Request itself.
        _miss(driver, a, "10.71.0.10", "10.72.0.20", b"held packet")
        assert driver.pump(lambda: _cached(a, "10.72.0.20") is not None, timeout=5), (a.core.counters, oor.log())

    # Registration: one Map-Register each, acknowledged by a Map-Notify that verified (HMAC-SHA-1,
    # the full 20-byte digest, algorithm ID 1) -- the core counts it only after auth.verify.
    for node, prefix, rloc in ((a, "10.71.0.0/16", RLOC_A), (b, "10.72.0.0/16", RLOC_B)):
        assert node.core.counters.get("map_register_sent") == 1, node.core.counters
        assert node.core.counters.get("map_notify_for_register") == 1, node.core.counters
        assert "map_notify_bad_auth" not in node.core.counters
        [(src, port, raw)] = [r for r in node.received if isinstance(decode_message(r[2]), MapNotify)]
        notify = decode_message(raw)
        assert (src, port) == (MS_ADDR, LISP_CONTROL)
        assert notify.algorithm_id == AuthAlgorithm.HMAC_SHA_1_96 and len(notify.authentication_data) == 20
        assert check_authentication(raw, KEY) is AuthResult.OK
        assert [(str(r.eid_prefix), [str(l.address) for l in r.locators]) for r in notify.records] == [(prefix, [rloc])]
        assert notify.xtr_id == node.core.xtr_id and notify.site_id == node.core.site_id  # echoed (I bit)

    # Resolution: OOR's Map-Server proxy-replied (the Map-Reply comes from it, not from b) and the
    # map-cache holds b's prefix -> b's RLOC; the held packet went back.
    assert _cached(a, "10.72.0.20") == [RLOC_B]
    entry = a.core.cache.lookup(0, ipaddress.ip_address("10.72.0.20"), time.monotonic())
    assert str(entry.eid) == "10.72.0.0/16" and entry.value.source == MS_ADDR
    assert not entry.value.record.authoritative  # RFC 9301 5.4: a proxy Map-Reply MUST NOT set A
    assert a.core.counters.get("map_reply_received") == 1
    assert [p.data for p in a.packet_outs] == [b"held packet"]
    assert b.core.counters.get("map_request_answered") is None  # b was never asked

    # Everything OOR sent: decodes with our codec, re-encodes to the same bytes, and Wireshark
    # dissects it without a Malformed or error expert info.
    sent_by_oor = _payloads(pcap, MS_ADDR)
    kinds = [type(decode_message(p)).__name__ for p in sent_by_oor]
    assert sorted(kinds) == ["MapNotify", "MapNotify", "MapReply"], kinds
    for payload in sent_by_oor:
        assert decode_message(payload).encode() == payload
    text = _assert_clean_dissection(pcap)
    for expected in ("Map-Register", "Map-Notify", "Encapsulated Control Message", "Map-Reply",
                     "Authentication Data Length: 20", "EID Prefix: 10.72.0.0/16"):
        assert expected in text, expected


def test_oor_forwards_map_request_to_our_etr(oor_ms):
    """Without proxy-reply, OOR's Map-Server forwards the ECM to our ETR, which answers our ITR."""
    link, oor, driver = oor_ms
    a = driver.add(_xtr_config("a", RLOC_A, ["10.71.0.0/16"], MS_ADDR, proxy_reply=False))
    b = driver.add(_xtr_config("b", RLOC_B, ["10.72.0.0/16"], MS_ADDR, proxy_reply=False))
    driver.start(a)
    driver.start(b)
    assert driver.pump(lambda: _registered(a) and _registered(b), timeout=5), oor.log()
    _miss(driver, a, "10.71.0.10", "10.72.0.20", b"held packet")
    assert driver.pump(lambda: _cached(a, "10.72.0.20") is not None, timeout=5), (a.core.counters, oor.log())

    # b got the Map-Request from OOR inside an ECM, with a's RLOC as ITR-RLOC, and answered it.
    forwarded = [decode_message(raw) for src, _, raw in b.received if src == MS_ADDR]
    ecms = [m for m in forwarded if isinstance(m, EncapsulatedControlMessage)]
    assert len(ecms) == 1 and isinstance(ecms[0].message, MapRequest), forwarded
    assert [str(r) for r in ecms[0].message.itr_rlocs] == [RLOC_A]
    assert b.core.counters.get("map_request_answered") == 1
    entry = a.core.cache.lookup(0, ipaddress.ip_address("10.72.0.20"), time.monotonic())
    assert str(entry.eid) == "10.72.0.0/16" and entry.value.source == RLOC_B  # from the ETR itself
    assert entry.value.record.authoritative
    assert [p.data for p in a.packet_outs] == [b"held packet"]


def test_oor_acknowledges_only_what_it_can_verify(oor_ms):
    """A wrong key is not acknowledged (RFC-correct).  HMAC-SHA-256-128 (RFC 9301 algorithm 2) is not
    acknowledged either: OOR 1.3.0 implements HMAC-SHA-1-96 only (key-type 1), so an xTR pointed at
    it must use algorithm sha1 -- our default.  Our core keeps retrying, without a false success."""
    link, oor, driver = oor_ms
    wrong = driver.add(_xtr_config("wrong", RLOC_A, ["10.71.0.0/16"], MS_ADDR, proxy_reply=False, key="not-it"))
    sha256 = driver.add(_xtr_config("sha256", RLOC_B, ["10.72.0.0/16"], MS_ADDR, proxy_reply=False,
                                    algorithm="sha256"))
    good = driver.add(_xtr_config("good", RLOC_C, ["10.72.0.0/16"], MS_ADDR, proxy_reply=False))
    for node in (wrong, sha256, good):
        driver.start(node)
    assert driver.pump(lambda: _registered(good), timeout=5), oor.log()
    driver.pump(lambda: False, timeout=1.5)  # the others' first retry (after 1 s) is not answered either
    for node in (wrong, sha256):
        assert not _registered(node)
        assert node.core.counters.get("map_register_sent", 0) >= 2, node.core.counters
        assert node.received == [], [decode_message(r[2]) for r in node.received]
    assert good.core.counters.get("map_notify_for_register") == 1


def test_predictive_rlocs_registered_with_oor_reach_our_itr(oor_ms):
    """Another ETR registers with OOR's Map-Server a prefix whose best locator is a Replication List
    Entry (RFC 8060 LCAF 13; draft-ietf-lisp-predictive-rlocs), the plain RLOC behind it; OOR's
    proxy Map-Reply hands it to our ITR, which then sends every packet to each RLOC in it."""
    link, oor, driver = oor_ms
    a = driver.add(_xtr_config("a", RLOC_A, ["10.71.0.0/16"], MS_ADDR, proxy_reply=True))
    driver.start(a)
    assert driver.pump(lambda: _registered(a), timeout=5), oor.log()
    rle = ReplicationList((RleEntry(ipaddress.ip_address(RLOC_B)), RleEntry(ipaddress.ip_address(RLOC_C))))
    record = MappingRecord.for_prefix(EidPrefix.from_network("10.72.0.0/16", 0), (
        Locator(rle, priority=1, weight=100), Locator(ipaddress.ip_address(RLOC_B), priority=2, weight=100)), ttl=10)
    register = packets.map_register([record], KEY, nonce=0x5EED, proxy=True, want_notify=True)
    etr = open_udp_socket(link.right, (RLOC_C, LISP_CONTROL))
    try:
        etr.sendto(register, (MS_ADDR, LISP_CONTROL))
        assert select.select([etr], [], [], 5)[0], ("OOR did not acknowledge the Map-Register", oor.log())
        notify = decode_message(etr.recvfrom(65535)[0])
    finally:
        etr.close()
    assert isinstance(notify, MapNotify) and notify.nonce == 0x5EED
    # OOR echoes the locators (plain ones first: their order in a record carries nothing).
    echoed = {(loc.address, loc.priority) for loc in notify.records[0].locators}
    assert echoed == {(rle, 1), (ipaddress.ip_address(RLOC_B), 2)}, notify

    _miss(driver, a, "10.71.0.10", "10.72.0.20", b"held packet")
    assert driver.pump(lambda: _cached(a, "10.72.0.20") is not None, timeout=5), (a.core.counters, oor.log())
    (remote,) = [r for r in a.core.plan().remotes if str(r.prefix) == "10.72.0.0/16"]
    assert remote.replicate == (ipaddress.ip_address(RLOC_B), ipaddress.ip_address(RLOC_C)), remote
    assert [p.data for p in a.packet_outs] == [b"held packet"]


# ---------------------------------------------------------------------------- 2. OOR as xTR

OUR_MS = "198.18.200.10"
OOR_RLOC = "198.18.200.11"
OUR_ITR = "198.18.200.12"
READY = re.compile(r"lisp-ryu mapserver: udp \S+ in netns \S+ http (http://[0-9.]+:\d+)")

OUR_MS_CONFIG = f"""\
map_server:
  sites:
    - name: oor
      key: {KEY}
      eid_prefixes:
        - {{prefix: 10.81.0.0/16}}
"""

OOR_XTR_CONFIG = """\
debug = 2
map-request-retries = 2
operating-mode = xTR
encapsulation = LISP
rloc-probing {{
    rloc-probe-interval = 0
    rloc-probe-retries = 0
    rloc-probe-retries-interval = 1
}}
nat_traversal_support = off
map-resolver = {{
{resolvers}
}}
{servers}database-mapping {{
    eid-prefix = 10.81.0.0/16
    iid = 0
    rloc-iface {{
        interface = {iface}
        ip_version = 4
        priority = 1
        weight = 100
    }}
}}
"""
OOR_MAP_SERVER = """\
map-server {{
    address = {ms}
    key-type = 1
    key = {key}
    proxy-reply = {proxy}
}}
"""


def oor_xtr_config(map_servers: list[str], *, proxy: bool, iface: str) -> str:
    """An OOR xTR that registers 10.81.0.0/16 (its RLOC on `iface`) with each of `map_servers`
    under KEY and resolves through them, in that order."""
    return OOR_XTR_CONFIG.format(
        resolvers=",\n".join(f"    {ms}" for ms in map_servers), iface=iface,
        servers="".join(OOR_MAP_SERVER.format(ms=ms, key=KEY, proxy="on" if proxy else "off") for ms in map_servers))


class OurMapServer:
    """`lisp-ryu mapserver --netns`: LISP on 198.18.200.10:4342 in the namespace, HTTP on 127.0.0.1."""

    def __init__(self, netns: str, workdir: Path) -> None:
        workdir.mkdir(parents=True)
        (workdir / "mapserver.yaml").write_text(OUR_MS_CONFIG)
        self.log_path = workdir / "mapserver.log"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lisp_ryu", "mapserver", "--config", str(workdir / "mapserver.yaml"),
             "--listen", f"{OUR_MS}:{LISP_CONTROL}", "--netns", netns, "--http", "127.0.0.1:0",
             "--data-dir", str(workdir / "data")],
            stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        match = READY.search(line)
        if not match:
            self.stop()
            raise RuntimeError(f"mapserver did not start: {line!r}\n{self.log_path.read_text()}")
        self.url = match.group(1)

    def get(self, resource: str) -> dict:
        with urllib.request.urlopen(f"{self.url}/lisp/v1/{resource}", timeout=10) as response:
            return json.load(response)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture
def oor_xtr_lab(tmp_path):
    """Our Map-Server (and an ITR) in lo-lrms-*, OOR as xTR in lo-oorx-*; start OOR with `start(proxy)`."""
    before = _namespaces()
    link = Link("lo-lrms", "lo-oorx", "lo-m0", "lo-x0", [OUR_MS, OUR_ITR], [OOR_RLOC])
    server = driver = None
    oors: list[Oor] = []
    try:
        link.__enter__()
        server = OurMapServer(link.left, tmp_path / "mapserver")
        driver = Driver(link.left)

        def start(proxy: bool) -> Oor:
            config = oor_xtr_config([OUR_MS], proxy=proxy, iface="lo-x0")
            oors.append(Oor(link.right, tmp_path / "oor-xtr", config))
            return oors[-1].start("Starting xTR")

        yield link, server, driver, start
    finally:
        if driver is not None:
            driver.close()
        for oor in oors:
            oor.stop()
        if server is not None:
            server.stop()
        link.__exit__()
        _assert_torn_down(before, link)


def _wait_registration(server: OurMapServer, prefix: str, rloc: str, timeout: float) -> dict | None:
    """The registration of `prefix` once its mapping holds `rloc`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in server.get("registrations").get("registrations", []):
            if entry["prefix"] == prefix and rloc in [loc["address"] for loc in entry["mapping"]["locators"]]:
                return entry
        time.sleep(0.2)
    return None


def _show_registrations(server: OurMapServer) -> str:
    return subprocess.run([sys.executable, "-m", "lisp_ryu", "show", "registrations", "--url", server.url],
                          capture_output=True, text=True, check=True, timeout=30).stdout


@pytest.mark.tshark
def test_oor_xtr_registers_with_our_mapserver_and_answers_as_etr(oor_xtr_lab, tmp_path):
    _need_tshark()
    link, server, driver, start = oor_xtr_lab
    pcap = tmp_path / "oor-xtr.pcap"
    with Capture(link.left, link.left_if, f"udp port {LISP_CONTROL}", pcap, count=1000, timeout=1.0):
        oor = start(proxy=False)
        entry = _wait_registration(server, "10.81.0.0/16", OOR_RLOC, timeout=15)
        assert entry is not None, oor.log()
        # Our Map-Notify (HMAC-SHA-1) verified on OOR's side.
        assert oor.wait_for("Map-Notify message confirms correct registration of 10.81.0.0/16", 5), oor.log()

        itr = driver.add(_xtr_config("itr", OUR_ITR, [], OUR_MS, proxy_reply=False))
        driver.start(itr)
        _miss(driver, itr, "10.1.0.10", "10.81.0.5", b"held packet")
        assert driver.pump(lambda: _cached(itr, "10.81.0.5") is not None, timeout=5), (itr.core.counters, oor.log())

    assert entry["site"] == "oor" and [e["source"].split(":")[0] for e in entry["etrs"]] == [OOR_RLOC]
    assert [e["proxy_reply"] for e in entry["etrs"]] == [False]
    shown = _show_registrations(server)
    assert "10.81.0.0/16" in shown and f"{OOR_RLOC}(1/100)" in shown and "oor" in shown, shown
    counters = server.get("counters")["counters"]
    assert counters.get("accepted.map_register", 0) >= 1, counters

    # The Map-Reply came from OOR as the ETR (our server forwarded the Map-Request): OOR's RLOC,
    # authoritative, and back at the port our ITR sent from.
    cached = itr.core.cache.lookup(0, ipaddress.ip_address("10.81.0.5"), time.monotonic())
    assert str(cached.eid) == "10.81.0.0/16" and cached.value.source == OOR_RLOC
    assert [str(l.address) for l in cached.value.record.locators] == [OOR_RLOC]
    assert cached.value.record.authoritative
    assert [p.data for p in itr.packet_outs] == [b"held packet"]

    sent_by_oor = [decode_message(p) for p in _payloads(pcap, OOR_RLOC)]
    registers = [m for m in sent_by_oor if isinstance(m, MapRegister)]
    replies = [m for m in sent_by_oor if isinstance(m, MapReply)]
    assert registers and replies, sent_by_oor
    assert all(r.algorithm_id == AuthAlgorithm.HMAC_SHA_1_96 and len(r.authentication_data) == 20
               for r in registers)
    assert [[(str(rec.eid_prefix), [str(l.address) for l in rec.locators]) for rec in r.records]
            for r in registers] == [[("10.81.0.0/16", [OOR_RLOC])]] * len(registers)
    assert not any(r.proxy_map_reply for r in registers) and all(r.want_map_notify for r in registers)
    assert all(check_authentication(p, KEY) is AuthResult.OK
               for p in _payloads(pcap, OOR_RLOC) if isinstance(decode_message(p), MapRegister))
    for payload in _payloads(pcap, OOR_RLOC):
        assert decode_message(payload).encode() == payload
    text = _assert_clean_dissection(pcap)
    for expected in ("Map-Register", "Map-Notify", "Encapsulated Control Message", "Map-Reply",
                     "EID Prefix: 10.81.0.0/16"):
        assert expected in text, expected


def test_oor_xtr_proxy_reply_is_answered_by_our_mapserver(oor_xtr_lab):
    link, server, driver, start = oor_xtr_lab
    oor = start(proxy=True)
    entry = _wait_registration(server, "10.81.0.0/16", OOR_RLOC, timeout=15)
    assert entry is not None, oor.log()
    assert [e["proxy_reply"] for e in entry["etrs"]] == [True]
    assert oor.wait_for("Map-Notify message confirms correct registration of 10.81.0.0/16", 5), oor.log()

    itr = driver.add(_xtr_config("itr", OUR_ITR, [], OUR_MS, proxy_reply=False))
    driver.start(itr)
    _miss(driver, itr, "10.1.0.10", "10.81.0.5", b"held packet")
    assert driver.pump(lambda: _cached(itr, "10.81.0.5") is not None, timeout=5), (itr.core.counters, oor.log())
    cached = itr.core.cache.lookup(0, ipaddress.ip_address("10.81.0.5"), time.monotonic())
    assert str(cached.eid) == "10.81.0.0/16" and cached.value.source == OUR_MS  # our server answered
    assert not cached.value.record.authoritative  # RFC 9301 5.4: a proxy Map-Reply MUST NOT set A
    assert cached.value.record.ttl == 10  # OOR's record TTL, handed on
    assert [str(l.address) for l in cached.value.record.locators] == [OOR_RLOC]
    assert not any("Received Encapsulated" in line and "Map-Request" in line for line in oor.lines), oor.log()
