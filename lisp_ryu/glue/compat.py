"""Every Ryu 4.34 / eventlet quirk this project works around, in one place.

Ryu 4.34 is unmaintained.  On Python 3.11 it runs with eventlet 0.33.3 and
dnspython 2.2.1 (pinned in requirements.txt; setuptools<67 for its build is
pinned in constraints.txt), but `ryu.app.wsgi` still imports
`eventlet.wsgi.ALREADY_HANDLED`, which eventlet dropped.  `apply()` restores
that name before anything imports Ryu; `run_ryu_manager()` applies it and then
hands over to ryu-manager's own main().
"""

from __future__ import annotations

import sys

_applied = False


def apply() -> None:
    """Patch eventlet so that `ryu.app.wsgi` imports.  Idempotent."""
    global _applied
    if _applied:
        return
    import eventlet.wsgi

    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        # Ryu only compares a response body against this sentinel by identity.
        eventlet.wsgi.ALREADY_HANDLED = object()
    _applied = True


def _tolerate_busy_wsapi_port() -> None:
    """Ryu's manager dies when the REST port (--wsapi-port, default 8080) is taken, e.g. by another
    controller on the same machine.  Keep the controller (the data plane) running without its REST
    API instead, and say so in the log."""
    import logging

    from ryu.app import wsgi
    from ryu.cmd import manager

    original = wsgi.start_service

    def start_service(app_mgr):
        try:
            return original(app_mgr)
        except OSError as exc:
            logging.getLogger("lisp_ryu").error("REST API not served: cannot listen on %s:%s (%s); "
                                                "pass --wsapi-port to choose another port",
                                                wsgi.CONF.wsapi_host, wsgi.CONF.wsapi_port, exc.strerror)
            return None

    manager.wsgi.start_service = start_service


def run_ryu_manager(argv: list[str]) -> int:
    """Run ryu-manager with `argv` (its own options and app modules)."""
    apply()
    from ryu.cmd import manager

    _tolerate_busy_wsapi_port()

    sys.argv = ["ryu-manager", *argv]
    manager.main()
    return 0
