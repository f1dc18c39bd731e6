"""xTR-side intent changed over REST that must survive a controller restart: the dynamic-EID
prefixes, in `STATE_FILE` of the Map-Server's data_dir.

A damaged file or entry is logged and skipped: the controller starts with what is good, and
the file is kept aside (`.damaged`) before the next change rewrites it without the damage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from typing import Any

from lisp_ryu import schema
from lisp_ryu.config import EidPrefixConfig
from lisp_ryu.mapserver.store import _atomic_write

LOG = logging.getLogger("lisp_ryu.rest")
STATE_FILE = "rest-intent.json"
MAX_FILE_BYTES = 64 << 20
MAX_DEPTH = 32


def dynamic_prefix(raw: Any, path: str) -> EidPrefixConfig:
    """{"prefix": ..., "iid": ...} (iid 0 when absent), from a REST body or the intent file."""
    node = schema.Node(raw, path, root="body").expect(required={"prefix"}, optional={"iid"})
    return EidPrefixConfig(node.get("prefix", schema.prefix), node.get("iid", schema.iid, 0))


def load(state_file: str | None, xtrs: dict[str, Any]) -> None:
    """Re-apply to `xtrs` (name -> handle with its `core`) the dynamic-EID prefixes changed over
    REST before the last restart."""
    if not state_file or not os.path.exists(state_file):
        return
    try:
        with open(state_file, "rb") as fh:
            data = schema.json_document(fh.read(), "", max_bytes=MAX_FILE_BYTES, max_depth=MAX_DEPTH)
        per_xtr = schema.Node(data, root="the file").node("dynamic_eid_prefixes")
    except (OSError, schema.InputError) as exc:
        LOG.error("%s: cannot restore REST intent (dynamic-EID prefixes keep their configured values): %s",
                  state_file, exc)
        _keep_aside(state_file)
        return
    damaged = False
    for name in (per_xtr.value if per_xtr is not None else {}):
        handle = xtrs.get(name)
        if handle is None:
            LOG.warning("%s: xTR %s is no longer configured; its dynamic-EID prefixes are ignored", state_file, name)
            continue
        items, path = per_xtr.value[name], per_xtr.child(name)
        if not isinstance(items, list):
            LOG.error("%s: %s: expected a list; its dynamic-EID prefixes are ignored", state_file, path)
            damaged = True
            continue
        prefixes = []
        for i, item in enumerate(items):
            try:
                prefixes.append(dynamic_prefix(item, f"{path}[{i}]"))
            except schema.InputError as exc:
                LOG.error("%s: skipping a damaged dynamic-EID prefix: %s", state_file, exc)
                damaged = True
        handle.core.config = dataclasses.replace(handle.core.config, dynamic_eid_prefixes=tuple(prefixes))
        LOG.info("xTR %s: %d dynamic-EID prefixes restored from %s", name, len(prefixes), state_file)
    if damaged:
        _keep_aside(state_file)


def _keep_aside(state_file: str) -> None:
    aside = state_file + ".damaged"
    try:
        shutil.copyfile(state_file, aside)
        LOG.error("%s: a copy as it was is kept in %s", state_file, aside)
    except OSError as exc:
        LOG.error("%s: cannot keep a copy in %s: %s", state_file, aside, exc.strerror)


def save(state_file: str | None, xtrs: dict[str, Any]) -> None:
    """Write every xTR's dynamic-EID prefixes (nothing without a data_dir)."""
    if not state_file:
        return
    data = {"dynamic_eid_prefixes": {
        name: [{"iid": d.iid, "prefix": str(d.prefix)} for d in h.core.config.dynamic_eid_prefixes]
        for name, h in sorted(xtrs.items())}}
    os.makedirs(os.path.dirname(state_file) or ".", exist_ok=True)
    _atomic_write(state_file, json.dumps(data, indent=1).encode())
