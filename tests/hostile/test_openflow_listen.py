"""Who may speak OpenFlow to the controller (the real `lisp-ryu controller` process, on loopback).

Before: Ryu's default, 0.0.0.0 without TLS, so anyone reaching the port could pose as a datapath;
a datapath nobody configured stayed connected and its packet-ins were dropped without a word; and
Ryu's TLS listener served only the first switch (it built its context on the first connection and
popped the certificate while doing so).  Now: loopback unless --ofp-listen-host says otherwise,
TLS with a client certificate checked against --ca-certs for every switch, and an unconfigured
datapath is disconnected, counted and logged once.
"""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import time

import pytest

from support.ryu_process import RyuProcess, listen_sockets

OFP_VERSION = 4  # OpenFlow 1.3
HELLO, FEATURES_REQUEST, FEATURES_REPLY = 0, 5, 6
UNKNOWN_DPID = 0x99


def read_msg(sock) -> tuple[int, int, bytes]:
    header = b""
    while len(header) < 8:
        chunk = sock.recv(8 - len(header))
        if not chunk:
            raise EOFError("closed by the controller")
        header += chunk
    _, kind, length, xid = struct.unpack("!BBHI", header)
    body = b""
    while len(body) < length - 8:
        chunk = sock.recv(length - 8 - len(body))
        if not chunk:
            raise EOFError("closed by the controller")
        body += chunk
    return kind, xid, body


def closed_within(sock, seconds: float) -> bool:
    """Whether the controller ends the session within `seconds` (whatever it sends before that)."""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if not sock.recv(4096):
                return True
        except socket.timeout:
            continue
        except (ConnectionError, ssl.SSLError):
            return True
    return False


def pose_as_switch(sock, dpid: int) -> None:
    """The switch's side of the OpenFlow handshake: hello, then features naming `dpid`."""
    assert read_msg(sock)[0] == HELLO
    sock.sendall(struct.pack("!BBHI", OFP_VERSION, HELLO, 8, 1))
    while True:
        kind, xid, _ = read_msg(sock)
        if kind == FEATURES_REQUEST:
            break
    sock.sendall(struct.pack("!BBHIQIBB2xII", OFP_VERSION, FEATURES_REPLY, 32, xid, dpid, 0, 254, 0, 0, 0))


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    ryu = RyuProcess(tmp_path_factory.mktemp("of-plain"), "rest: {token: t0ken}\n")
    try:
        ryu.wait_listening(ryu.of_port)
        yield ryu
    finally:
        ryu.stop()


def test_openflow_listens_on_loopback_by_default(plain):
    addresses = {address for address, port in listen_sockets() if port == plain.of_port}
    assert addresses == {"127.0.0.1"}, addresses


def test_an_unconfigured_datapath_is_disconnected_counted_and_logged_once(plain):
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", plain.of_port), timeout=5) as sock:
            pose_as_switch(sock, UNKNOWN_DPID)
            assert closed_within(sock, 5.0), "an unconfigured datapath stayed connected"
    plain.wait_listening(plain.rest_port)
    _, counters = plain.get("/lisp/v1/counters")
    assert counters["controller"].get("openflow.unknown_dpid") == 3, counters["controller"]
    log = plain.log()
    assert log.count("dpid 0x99") == 1, log
    assert "Traceback" not in log


# --------------------------------------------------------------------------- TLS


def openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=20)


def make_pki(tmp) -> None:
    """Two CAs (ours and a stranger's), the controller's certificate and a switch certificate from each."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "rogue-ca"):
        openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
                "-subj", f"/CN={ca}", cwd=tmp)
    for name, ca in (("controller", "ca"), ("switch", "ca"), ("rogue-switch", "rogue-ca")):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=tmp)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", cwd=tmp)


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("of-tls")
    make_pki(tmp)
    ryu = RyuProcess(tmp, "rest: {token: t0ken}\n", "--ctl-privkey", str(tmp / "controller.key"),
                     "--ctl-cert", str(tmp / "controller.pem"), "--ca-certs", str(tmp / "ca.pem"),
                     openflow_port_option="--ofp-ssl-listen-port")
    try:
        ryu.wait_listening(ryu.of_port)
        yield ryu, tmp
    finally:
        ryu.stop()


def client(tmp, ca: str, cert: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # OVS checks the CA, not a name
    context.load_verify_locations(str(tmp / f"{ca}.pem"))
    if cert:
        context.load_cert_chain(str(tmp / f"{cert}.pem"), str(tmp / f"{cert}.key"))
    return context


def hello_over_tls(port: int, context: ssl.SSLContext) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw) as sock:
            return read_msg(sock)[0]


def test_tls_handshake_succeeds_for_every_switch_with_a_certificate_from_the_ca(tls):
    ryu, tmp = tls
    for _ in range(3):  # Ryu's own listener failed from the second connection on
        assert hello_over_tls(ryu.of_port, client(tmp, "ca", "switch")) == HELLO


@pytest.mark.parametrize("ca, cert", [("rogue-ca", "switch"), ("ca", None), ("ca", "rogue-switch")],
                         ids=["controller-not-trusted", "no-client-certificate", "client-from-another-ca"])
def test_tls_handshake_fails_without_the_right_ca(tls, ca, cert):
    ryu, tmp = tls
    with pytest.raises((ssl.SSLError, ConnectionError, EOFError)):
        hello_over_tls(ryu.of_port, client(tmp, ca, cert))


def test_tls_refusals_are_counted_and_logged_rate_limited(tls):
    ryu, tmp = tls
    for _ in range(3):
        with pytest.raises((ssl.SSLError, ConnectionError, EOFError)):
            hello_over_tls(ryu.of_port, client(tmp, "ca", "rogue-switch"))
    assert hello_over_tls(ryu.of_port, client(tmp, "ca", "switch")) == HELLO
    time.sleep(0.3)
    _, counters = ryu.get("/lisp/v1/counters")
    assert counters["controller"].get("openflow.tls_refused", 0) >= 3, counters["controller"]
    log = ryu.log()
    assert log.count("OpenFlow TLS handshake from 127.0.0.1 refused") == 1, log
    assert "Traceback" not in log


# --------------------------------------------------------------------------- the argv the CLI builds


@pytest.fixture
def ryu_argv(monkeypatch):
    from lisp_ryu.glue import compat

    seen: list[list[str]] = []
    monkeypatch.setattr(compat, "run_ryu_manager", lambda argv: seen.append(argv) or 0)
    return seen


def test_the_cli_binds_openflow_and_rest_to_loopback_unless_told(ryu_argv):
    from lisp_ryu import cli

    assert cli.main(["controller"]) == 0
    argv = ryu_argv.pop()
    assert argv[argv.index("--ofp-listen-host") + 1] == "127.0.0.1"
    assert argv[argv.index("--wsapi-host") + 1] == "127.0.0.1"
    assert cli.main(["controller", "--ofp-listen-host=198.19.0.1"]) == 0
    argv = ryu_argv.pop()
    assert "--ofp-listen-host=198.19.0.1" in argv and argv.count("127.0.0.1") == 1


def test_the_cli_refuses_half_a_tls_configuration(ryu_argv, capsys):
    from lisp_ryu import cli

    assert cli.main(["controller", "--ctl-privkey", "k.pem"]) == 2
    assert "--ctl-cert" in capsys.readouterr().err and not ryu_argv
