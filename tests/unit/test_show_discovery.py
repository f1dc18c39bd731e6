"""`lisp-ryu show` without --url finds a running lab's controller from the lab's state file,
and when nothing answers, says every place it looked."""

from __future__ import annotations

import json
import socket

import pytest

from lisp_ryu import cli
from lisp_ryu.glue import mapserver_cli
from lisp_ryu.lab import state as lab_state
from support.json_server import json_server


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def nowhere(monkeypatch, tmp_path):
    """No lab here, and the default URLs point at closed ports."""
    monkeypatch.setenv(lab_state.LAB_DIR_ENV, str(tmp_path / "lab"))
    monkeypatch.delenv(mapserver_cli.URL_ENV, raising=False)
    monkeypatch.setattr(mapserver_cli, "DEFAULT_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(mapserver_cli, "DEFAULT_CONTROLLER_URL", f"http://127.0.0.1:{closed_port()}")
    return tmp_path


def lab_with_rest(url: str) -> lab_state.LabState:
    return lab_state.LabState(name="t", topology="/t.yaml", prefix="lt-", lab_dir="/x", status="up",
                              controller="198.19.0.1", controller_port=6653, management_bridge="lt-mgmt",
                              namespaces=(), root_interfaces=(), sites=(), hosts=(), nodes=(), map_server=None,
                              map_server_address=None, controller_rest=url)


def test_without_url_show_says_where_it_looked(nowhere, capsys):
    assert cli.main(["show", "health"]) == 1
    err = capsys.readouterr().err
    assert "looked at" in err
    assert mapserver_cli.DEFAULT_URL in err and mapserver_cli.DEFAULT_CONTROLLER_URL in err


def test_without_url_show_reads_the_running_labs_controller(nowhere, capsys):
    with json_server(lambda: {"status": "ok", "healthy": True, "xtrs": {}}) as (url, server):
        lab_state.write_state(lab_with_rest(url))
        assert cli.main(["show", "health", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["status"] == "ok"
        # The lab's controller gone: the error names the state file's address first.
        server.shutdown()
        server.server_close()
        assert cli.main(["show", "health"]) == 1
        err = capsys.readouterr().err
        assert f"{url} (the lab controller's REST API, from {lab_state.state_path()})" in err


def test_rest_url_follows_the_controllers_options():
    from lisp_ryu.lab import controller as lab_controller

    assert lab_controller.rest_url(()) == "http://127.0.0.1:8080"
    assert lab_controller.rest_url(("--wsapi-port", "8181")) == "http://127.0.0.1:8181"
    assert lab_controller.rest_url(("--wsapi-host=10.0.0.1", "--wsapi-port=81")) == "http://10.0.0.1:81"
