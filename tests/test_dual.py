"""Dual-run: every mismatch category is detected against an engine that differs on purpose."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import requiem
from tests.test_exec import PLAIN, run_request, spool_records

LEGACY = Path(__file__).with_name("legacy_engine.py")


@pytest.fixture
def legacy_env(tmp_path: Path) -> dict[str, str]:
    """Environment that makes tests/legacy_engine.py the configured legacy (rust) engine."""
    wrapper = tmp_path / "legacy-engine"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {LEGACY} \"$@\"\n")
    wrapper.chmod(0o755)
    return {"REQUIEM_RUST_ENGINE": str(wrapper),
            "LEGACY_ENGINE_VERSION": requiem.ENGINE_VERSION,
            "LEGACY_CONTRACT_VERSION": requiem.CONTRACT_VERSION}


EXPECTED = {
    "none": [],
    "exit_code": ["digest_mismatch", "exit_code_mismatch"],
    "stdout": ["digest_mismatch", "stdout_mismatch"],
    "stderr": ["digest_mismatch", "stderr_mismatch"],
    "sandbox": ["sandbox_diff"],
    "timing": ["timing_diff"],
    "metadata": ["metadata_diff"],
}


@pytest.mark.parametrize("quirk", sorted(EXPECTED))
def test_each_category_is_detected(home: Path, tmp_path: Path, legacy_env: dict[str, str],
                                   quirk: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    code, result = run_request(
        home, tmp_path,
        {"command": "echo", "argv": ["same"], "workspace_root": str(ws), "policy": PLAIN},
        "--engine", "dual", env={**legacy_env, "LEGACY_QUIRK": quirk})
    assert code == 0, result
    report = result["dual_run"]
    assert report["secondary_engine"] == "rust"
    # On a loaded machine two runs of echo can really differ by more than the timing
    # threshold: timing_diff is then a true report, so only the timing quirk must show it.
    noise = set() if quirk == "timing" else {"timing_diff"}
    assert sorted(set(report["categories"]) - noise) == sorted(EXPECTED[quirk]), report
    assert report["mismatch"] is bool(report["categories"])
    for category in report["categories"]:
        assert report["severities"][category] in ("critical", "high", "medium")
    if quirk == "stdout":
        assert report["diff"]["stdout"]["offset"] == len("same\n")
    comparisons = spool_records(home, "dual_run")
    assert len(comparisons) == 1 and comparisons[0]["categories"] == report["categories"]
    # The primary's own result is what --out holds, its digest untouched by the comparison.
    assert "result_digest" in result and result["engine"] == "requiem"


def test_rust_engine_alone(home: Path, tmp_path: Path, legacy_env: dict[str, str]) -> None:
    code, result = run_request(home, tmp_path, {"command": "echo", "argv": ["x"], "policy": PLAIN},
                               "--engine", "rust", env=legacy_env)
    assert code == 0 and result["stdout"] == "x\n"


def test_rust_engine_unconfigured_is_engine_unavailable(home: Path, tmp_path: Path) -> None:
    code, result = run_request(home, tmp_path, {"command": "true", "policy": PLAIN},
                               "--engine", "rust")
    assert code == 1 and result["error"]["code"] == "engine_unavailable"


def test_perturbed_requiem_secondary_catches_nondeterminism(home: Path, tmp_path: Path) -> None:
    code, result = run_request(home, tmp_path, {"command": "date", "argv": ["+%N"],
                                                "policy": PLAIN}, "--engine", "dual")
    report = result["dual_run"]
    assert report["secondary_engine"] == "requiem-perturbed"
    assert {"digest_mismatch", "stdout_mismatch"} <= set(report["categories"])


def test_perturbed_secondary_agrees_on_deterministic_commands(home: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "data").write_text("3\n1\n2\n")
    code, result = run_request(home, tmp_path, {"command": "sort", "argv": ["data"],
                                                "workspace_root": str(ws), "policy": PLAIN},
                               "--engine", "dual")
    assert result["dual_run"]["categories"] in ([], ["timing_diff"])


def test_dual_rate_samples_default_runs(home: Path, tmp_path: Path) -> None:
    run_request(home, tmp_path, {"command": "true", "policy": PLAIN},
                env={"REQUIEM_ENGINE_DUAL_RATE": "1.0"})
    run_request(home, tmp_path, {"command": "true", "policy": PLAIN},
                env={"REQUIEM_ENGINE_DUAL_RATE": "0"})
    assert len(spool_records(home, "dual_run")) == 1


def test_secondary_starts_from_the_workspace_the_primary_saw(home: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "log").write_text("start\n")
    code, result = run_request(home, tmp_path, {
        "command": "sh", "argv": ["-c", "echo x >> log; wc -l < log"], "workspace_root": str(ws),
        "cwd": str(ws), "outputs": [str(ws / "log")], "policy": PLAIN}, "--engine", "dual")
    assert code == 0, result
    assert result["stdout"] == "2\n"
    assert result["dual_run"]["categories"] in ([], ["timing_diff"]), result["dual_run"]
