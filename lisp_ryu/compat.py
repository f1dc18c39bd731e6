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


def run_ryu_manager(argv: list[str]) -> int:
    """Run ryu-manager with `argv` (its own options and app modules)."""
    apply()
    from ryu.cmd import manager

    sys.argv = ["ryu-manager", *argv]
    manager.main()
    return 0
