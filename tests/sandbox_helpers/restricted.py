"""Probe, choose and attack from a process that lost a primitive: `restricted.py WORKDIR`."""

# Prints one JSON document: what the probe saw, what `auto` chose and reported, and what real escape
# attempts through that backend did to the host, so the test can hold the report against the facts.

import json
import os
import sys
import time
from pathlib import Path

import harness

from requiem.errors import RequiemError
from requiem.sandbox import select_backend
from requiem.sandbox.probe import probe


def main(workdir: Path) -> None:
    ws, outside = workdir / "ws", workdir / "outside"
    found = probe()
    out = {"probe": {k: [v.get("ok"), v.get("errno"), v.get("evidence")] for k, v in found.items()
                     if isinstance(v, dict) and "ok" in v}}
    try:
        select_backend("bwrap")
        out["bwrap_error"] = None
    except RequiemError as exc:
        out["bwrap_error"] = exc.code
    backend = select_backend("auto")
    report = backend.report(harness.spec_for(ws, ["x"], 1, 2))
    out["report"] = report.to_json()
    # No readonly_paths: without a mount namespace the host's `outside` is visible anyway. Only `outside`
    # is attacked: with nothing confining writes, the attempts land on the host.
    fs = harness.attack(backend, ws, "fs", ws, outside, outside, "0")
    out["fs"] = fs.found
    out["host_outside"] = sorted(os.listdir(outside))
    listeners = harness.Listeners(workdir)
    try:
        out["net"] = harness.attack(backend, ws, "net", *listeners.args()).found
        time.sleep(0.2)
        out["received"] = listeners.drain()
    finally:
        listeners.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
