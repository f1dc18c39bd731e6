"""Core effects carried out the way the controller carries them out, for tests that drive a core alone."""

from __future__ import annotations

from lisp_ryu.effects import RegisterChanges


def as_the_glue_runs(core, effects: list, now: float) -> list:
    """`effects` with a `RegisterChanges` replaced by the Map-Registers the core then builds,
    last, as `Controller.run` sends them after the switches' flows."""
    rest = [e for e in effects if not isinstance(e, RegisterChanges)]
    return rest + core.register_changes(now) if len(rest) != len(effects) else rest
