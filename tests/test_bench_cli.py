"""`requiem bench run|compare|gate` and `drift analyze`."""

from __future__ import annotations

import json
from pathlib import Path

from requiem import spool
from tests.conftest import run_cli
from tests.test_exec import PLAIN


def _bench(home: Path, tmp_path: Path, name: str, request: dict) -> Path:
    spec = tmp_path / f"{name}.spec.json"
    spec.write_text(json.dumps({"name": name, "request": request, "iterations": 5}))
    out = tmp_path / f"{name}.json"
    run_cli("bench", "run", "--spec", str(spec), "--out", str(out), home=home)
    return out


def test_run_compare_and_gate(home: Path, tmp_path: Path) -> None:
    base = _bench(home, tmp_path, "base", {"command": "true", "policy": PLAIN})
    doc = json.loads(base.read_text())
    assert doc["iterations"] == 5 and len(doc["result_digests"]) == 1
    assert doc["latency_ms"]["p50"] > 0
    slow = json.loads(base.read_text())
    slow["latency_ms"] = {k: v * 3 for k, v in slow["latency_ms"].items()}
    current = tmp_path / "slow.json"
    current.write_text(json.dumps(slow))
    compared = run_cli("bench", "compare", "--baseline", str(base), "--current", str(current))
    assert compared.json["change_percent"]["p50"] == 200.0
    gate = run_cli("bench", "gate", "--baseline", str(base), "--current", str(current),
                   "--threshold", "10")
    assert gate.returncode == 2 and "p50" in gate.json["regressions"]
    same = run_cli("bench", "gate", "--baseline", str(base), "--current", str(base))
    assert same.returncode == 0
    assert spool.pending_records(home / "spool", "bench")


def test_drift_analyze_flags_more_than_one_digest(home: Path, tmp_path: Path) -> None:
    stable = _bench(home, tmp_path, "stable", {"command": "echo", "argv": ["x"], "policy": PLAIN})
    assert run_cli("drift", "analyze", "--bench", str(stable)).returncode == 0
    noisy = _bench(home, tmp_path, "noisy", {"command": "date", "argv": ["+%N"], "policy": PLAIN})
    got = run_cli("drift", "analyze", "--bench", str(noisy))
    assert got.returncode == 1 and got.json["drift_detected"] is True
