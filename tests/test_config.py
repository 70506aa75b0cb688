"""`requiem config validate` and load_config: pointers, did-you-mean, versions, environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from requiem.config import load_config
from requiem.errors import RequiemError
from requiem.home import Home

SEED_SHAPE = {
    "config_version": 1,
    "engine_selection_policy": {"default_engine": "requiem", "dual_run_sampling_rate": 0.01,
                                "dual_run_diff_output": "/var/log/requiem/diffs"},
    "cas": {"root": "cas-elsewhere", "compression": "zstd", "level": 9},
    "sandbox": {"required": ["workspace_confinement", "rlimits"]},
    "history": {"path": "db/history.duckdb", "lock_timeout_s": 2.5},
    "legacy_engine": {"path": "/usr/local/bin/requiem-rust"},
}


def _write(tmp_path: Path, document: object, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def test_the_seed_shape_is_valid(cli, tmp_path: Path) -> None:
    got = cli("config", "validate", "--file", str(_write(tmp_path, SEED_SHAPE)))
    assert got.returncode == 0
    assert got.json == {"ok": True, "file": str(tmp_path / "config.json"), "config_version": 1,
                        "errors": [], "warnings": []}


def test_config_version_is_required(cli, tmp_path: Path) -> None:
    document = {k: v for k, v in SEED_SHAPE.items() if k != "config_version"}
    got = cli("config", "validate", "--file", str(_write(tmp_path, document)))
    assert got.returncode == 1
    assert got.json["errors"] == [{"pointer": "/config_version",
                                   "message": "config_version is required"}]
    assert got.json["error"]["code"] == "config_invalid"


def test_a_newer_config_version_is_an_error(cli, tmp_path: Path) -> None:
    got = cli("config", "validate", "--file", str(_write(tmp_path, {"config_version": 2})))
    assert got.returncode == 1 and "newer" in got.json["errors"][0]["message"]


def test_unknown_fields_warn_with_did_you_mean(cli, tmp_path: Path) -> None:
    document = {"config_version": 1, "default_engine": "rust", "cas": {"compresion": "zstd"},
                "histroy": {}, "zzz": 1}
    got = cli("config", "validate", "--file", str(_write(tmp_path, document)))
    assert got.returncode == 0  # warnings alone do not fail validation
    warnings = {w["pointer"]: w.get("did_you_mean") for w in got.json["warnings"]}
    assert warnings == {"/default_engine": "/engine_selection_policy/default_engine",
                        "/cas/compresion": "/cas/compression", "/histroy": "/history",
                        "/zzz": None}


def test_type_errors_carry_json_pointers(cli, tmp_path: Path) -> None:
    document = {"config_version": 1,
                "engine_selection_policy": {"default_engine": "rusty",
                                            "dual_run_sampling_rate": 1.5},
                "cas": {"level": "3", "compression": True},
                "sandbox": {"required": ["rlimits", "magic"]},
                "history": "db.duckdb"}
    got = cli("config", "validate", "--file", str(_write(tmp_path, document)))
    assert got.returncode == 1
    pointers = [e["pointer"] for e in got.json["errors"]]
    assert pointers == ["/engine_selection_policy/default_engine",
                        "/engine_selection_policy/dual_run_sampling_rate", "/cas/level",
                        "/cas/compression", "/sandbox/required", "/history"]
    assert "'rusty'" in got.json["errors"][0]["message"]


def test_a_config_that_is_not_json_reports_the_position(cli, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"config_version": 1,\n "cas": {"root": "x",}}')
    got = cli("config", "validate", "--file", str(path))
    assert got.returncode == 1
    error = got.json["error"]
    assert error["code"] == "json_parse_error"
    assert (error["line"], error["column"]) == (2, 22) and error["position"] == 43


def test_a_missing_file_is_config_invalid(cli, tmp_path: Path) -> None:
    got = cli("config", "validate", "--file", str(tmp_path / "absent.json"))
    assert got.returncode == 1 and got.json["error"]["code"] == "config_invalid"


def test_load_config_defaults_file_and_environment(home: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("REQUIEM_DEFAULT_ENGINE", "REQUIEM_ENGINE_DUAL_RATE", "REQUIEM_RUST_ENGINE"):
        monkeypatch.delenv(variable, raising=False)
    place = Home.resolve(str(home))
    settings = load_config(place)
    assert settings["engine_selection_policy"] == {"default_engine": "requiem",
                                                   "dual_run_sampling_rate": 0.0,
                                                   "dual_run_diff_output": None}
    assert settings["history"]["lock_timeout_s"] == 10.0
    _write(home, SEED_SHAPE)
    settings = load_config(place)
    assert settings["engine_selection_policy"]["dual_run_sampling_rate"] == 0.01
    assert settings["cas"] == {"root": str(home / "cas-elsewhere"), "compression": "zstd",
                               "level": 9}
    assert settings["history"]["path"] == str(home / "db" / "history.duckdb")
    assert settings["legacy_engine"]["path"] == "/usr/local/bin/requiem-rust"
    monkeypatch.setenv("REQUIEM_ENGINE_DUAL_RATE", "1.0")
    monkeypatch.setenv("REQUIEM_DEFAULT_ENGINE", "dual")
    monkeypatch.setenv("REQUIEM_RUST_ENGINE", "/opt/rust-engine")
    settings = load_config(place)
    assert settings["engine_selection_policy"]["default_engine"] == "dual"
    assert settings["engine_selection_policy"]["dual_run_sampling_rate"] == 1.0
    assert settings["legacy_engine"]["path"] == "/opt/rust-engine"
    monkeypatch.setenv("REQUIEM_ENGINE_DUAL_RATE", "often")
    with pytest.raises(RequiemError) as caught:
        load_config(place)
    assert caught.value.code == "config_invalid"


def test_load_config_refuses_an_invalid_file(home: Path) -> None:
    _write(home, {"config_version": 1, "cas": {"level": 99}})
    with pytest.raises(RequiemError) as caught:
        load_config(Home.resolve(str(home)))
    assert caught.value.code == "config_invalid" and "/cas/level" in caught.value.message
