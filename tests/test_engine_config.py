"""config.json drives engine selection, dual sampling, the diff log, CAS and sandbox defaults."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli
from tests.test_exec import PLAIN, run_request, spool_records


def _config(home: Path, **sections: dict) -> None:
    (home / "config.json").write_text(json.dumps({"config_version": 1, **sections}))


def test_default_engine_dual_and_diff_log(home: Path, tmp_path: Path) -> None:
    _config(home, engine_selection_policy={"default_engine": "dual",
                                           "dual_run_diff_output": "diffs"})
    run_request(home, tmp_path, {"command": "date", "argv": ["+%N"], "policy": PLAIN})
    assert len(spool_records(home, "dual_run")) == 1
    lines = (home / "diffs" / "diffs.log").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["status"] == "mismatch"


def test_environment_beats_the_file(home: Path, tmp_path: Path) -> None:
    _config(home, engine_selection_policy={"default_engine": "dual"})
    run_request(home, tmp_path, {"command": "true", "policy": PLAIN},
                env={"REQUIEM_DEFAULT_ENGINE": "requiem"})
    assert spool_records(home, "dual_run") == []


def test_sampling_rate_one_makes_every_run_dual(home: Path, tmp_path: Path) -> None:
    _config(home, engine_selection_policy={"dual_run_sampling_rate": 1.0})
    for _ in range(3):
        run_request(home, tmp_path, {"command": "true", "policy": PLAIN})
    assert len(spool_records(home, "dual_run")) == 3


def test_required_sandbox_capabilities_refuse_weaker_runs(home: Path, tmp_path: Path) -> None:
    _config(home, sandbox={"required": ["network_isolation"]})
    code, result = run_request(home, tmp_path, {"command": "true", "policy": PLAIN})
    assert code == 1 and result["error"]["code"] == "sandbox_unavailable"
    assert "network_isolation" in result["error"]["missing"]


def test_invalid_config_is_config_invalid(home: Path, tmp_path: Path) -> None:
    _config(home, engine_selection_policy={"default_engine": "turbo"})
    code, result = run_request(home, tmp_path, {"command": "true", "policy": PLAIN})
    assert code == 1 and result["error"]["code"] == "config_invalid"


def test_cas_settings_apply_to_put(home: Path, tmp_path: Path) -> None:
    _config(home, cas={"root": "store", "compression": "zstd", "level": 9})
    src = tmp_path / "f.txt"
    src.write_text("log line\n" * 1000)
    got = run_cli("cas", "put", "--in", str(src), home=home)
    assert got.json["encoding"] == "zstd"
    assert (home / "store" / "v2" / "objects").is_dir()
