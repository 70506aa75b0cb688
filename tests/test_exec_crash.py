"""A killed engine loses nothing already stored and leaves no partial record behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from requiem import spool
from requiem.cas import Cas
from tests.conftest import cli_command, run_cli


def test_kill_9_mid_run_leaves_no_partial_state(home: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    keep = tmp_path / "keep.txt"
    keep.write_text("stored before the crash\n")
    kept = run_cli("cas", "put", "--in", str(keep), home=home).json["digest"]
    marker = ws / "child.pid"
    req = tmp_path / "req.json"
    req.write_text(json.dumps({
        "command": "sh", "argv": ["-c", f"yes | head -c 50000000; "
                                        f"while true; do echo beat >> {marker.name}; sleep 0.1; done"],
        "workspace_root": str(ws), "timeout_ms": 60000}))
    proc = subprocess.Popen(cli_command() + ["--home", str(home), "exec", "run", "--request",
                                             str(req), "--out", str(tmp_path / "out.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    spool_dir = home / "spool"
    names = sorted(p.name for p in spool_dir.iterdir()) if spool_dir.exists() else []
    assert names == [spool.active_name("cas_put")], names  # the engine spooled nothing
    assert {r["kind"] for r in spool.pending_records(spool_dir)} == {"cas_put"}
    store = Cas(home / "cas")  # the next start sweeps the dead engine's temp files
    assert os.listdir(home / "cas" / "v2" / "tmp") == []
    assert store.verify()["ok"]
    assert store.read_bytes(kept) == b"stored before the crash\n"
    health = run_cli("health", home=home).json
    if "process_isolation" in health["sandbox_capabilities"]["enforced"]:
        # Die-with-parent: the sandboxed command went with the engine, so its heartbeat stops.
        time.sleep(0.5)
        size = marker.stat().st_size
        time.sleep(1.0)
        assert marker.stat().st_size == size, "sandboxed child outlived the killed engine"
