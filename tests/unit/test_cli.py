"""The `lisp-ryu` entry point: help everywhere, config checking, and the Ryu launcher."""

import subprocess
import sys

import pytest

from lisp_ryu import cli

LISP_RYU = [sys.executable, "-m", "lisp_ryu"]


@pytest.mark.parametrize("argv", [[], ["controller"], ["lab"], ["check-config"], ["demo"]])
def test_help_everywhere(argv):
    out = subprocess.run([*LISP_RYU, *argv, "--help"], capture_output=True, text=True, check=True)
    assert "usage: lisp-ryu" in out.stdout


def test_check_config_reports_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("map_server:\n  sites:\n    - {name: dc1, key: k, eid_prefixes: [{prefix: 10.0.0.1/8}]}\n")
    out = subprocess.run([*LISP_RYU, "check-config", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "map_server.sites[0].eid_prefixes[0].prefix" in out.stderr


def test_unknown_arguments_are_rejected_outside_controller(capsys):
    with pytest.raises(SystemExit):
        cli.main(["check-config", "x.yaml", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_controller_passes_ryu_options_through():
    """ryu-manager's own options reach it, and Ryu's wsgi imports under the compat patch."""
    out = subprocess.run([*LISP_RYU, "controller", "--version"], capture_output=True, text=True)
    # --version is not an option of ours: ryu-manager answers it.
    assert "ryu-manager 4.34" in out.stdout + out.stderr, out.stderr


def test_compat_patch_lets_ryu_wsgi_import():
    code = "from lisp_ryu.glue import compat; compat.apply(); import ryu.app.wsgi; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_controller_launches_the_ryu_app_module():
    """The module `lisp-ryu controller` hands to ryu-manager exists and defines the Ryu app."""
    code = (f"from lisp_ryu.glue import compat; compat.apply(); import importlib, inspect; "
            f"from ryu.base.app_manager import RyuApp; m = importlib.import_module({cli.APP_MODULE!r}); "
            f"print([n for n, c in inspect.getmembers(m, inspect.isclass) if issubclass(c, RyuApp) and c is not RyuApp"
            f" and c.__module__ == m.__name__])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "['LispApp']", out.stderr
