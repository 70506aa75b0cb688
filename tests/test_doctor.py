"""`requiem doctor` and `requiem validate-replacement`: blockers, warnings and their fixes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from requiem import diagnostics
from requiem.home import Home
from tests.conftest import run_cli
from tests.history_fixtures import write_executions
from tests.test_cli_health import FAKE_BLAKE3


def _corrupt_one_object(cli, tmp_path: Path) -> str:
    source = tmp_path / "blob"
    source.write_bytes(b"precious content\n" * 100)
    digest = cli("cas", "put", "--in", str(source)).json["digest"]
    home = Path(cli("health").json["home"])
    path = home / "cas" / "v2" / "objects" / digest[:2] / digest[2:4] / digest
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    return digest


def test_doctor_on_a_fresh_home(cli, home: Path) -> None:
    got = cli("doctor")
    doc = got.json
    assert got.returncode == (0 if doc["ok"] else 1)
    assert doc["blockers"] == [] and doc["ok"] is True
    for key in ("engine_version", "protocol_version", "contract_version", "hash",
                "sandbox_capabilities", "cas", "disk", "memory", "history", "rollback"):
        assert key in doc
    assert doc["hash"]["hash_primitive"] == "blake3"
    assert doc["rollback"]["env"] == {"FORCE_RUST": "1"}
    assert doc["history"]["exists"] is False and doc["history"]["schema_version"] is None
    assert doc["disk"]["free_bytes"] > 0 and doc["memory"]["total_bytes"] > 0
    caps = doc["sandbox_capabilities"]
    missing = set(caps["unsupported"]) | set(caps["partial"])
    flagged = {w["capability"] for w in doc["warnings"] if w["id"].startswith("sandbox_")}
    assert flagged == missing
    assert all(w["command"].startswith(("requiem ", "ls ", "free ", "pip ")) for w in
               doc["warnings"])


def test_doctor_imports_duckdb_only_when_a_history_exists(home: Path) -> None:
    probe = (
        "import sys\n"
        "from requiem.cli import main\n"
        f"main(['--home', {str(home)!r}, 'doctor'])\n"
        "sys.stderr.write(str('duckdb' in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=False)
    assert proc.stderr.strip().splitlines()[-1] == "False"
    write_executions(home / "spool", 1)
    assert run_cli("history", "ingest", home=home).returncode == 0
    doc = run_cli("doctor", home=home).json
    assert doc["history"]["exists"] is True and doc["history"]["schema_version"] >= 1


def test_doctor_blocks_on_a_corrupt_cas_sample(cli, tmp_path: Path) -> None:
    digest = _corrupt_one_object(cli, tmp_path)
    got = cli("doctor")
    assert got.returncode == 1
    blocker = next(b for b in got.json["blockers"] if b["id"] == "cas_corrupt")
    assert blocker["command"] == "requiem cas verify --all"
    assert blocker["corrupt"][0]["digest"] == digest


def test_doctor_blocks_on_an_invalid_config(cli, home: Path) -> None:
    (home / "config.json").write_text(json.dumps({"config_version": 1, "cas": {"level": 0}}))
    got = cli("doctor")
    assert got.returncode == 1
    blocker = next(b for b in got.json["blockers"] if b["id"] == "config_invalid")
    assert blocker["command"].startswith("requiem config validate --file")


def test_doctor_blocks_on_a_required_capability_the_machine_lacks(cli, home: Path) -> None:
    caps = cli("health").json["sandbox_capabilities"]
    lacking = sorted(set(caps["partial"]) | set(caps["unsupported"]))
    if not lacking:
        pytest.skip("this machine enforces every sandbox capability")
    (home / "config.json").write_text(json.dumps({"config_version": 1,
                                                  "sandbox": {"required": lacking[:1]}}))
    blockers = cli("doctor").json["blockers"]
    assert [b["capability"] for b in blockers if b["id"] == "sandbox_required_missing"] == \
        lacking[:1]


def test_validate_replacement_passes_its_self_check(cli) -> None:
    got = cli("validate-replacement")
    assert got.returncode == 0, got.stdout
    doc = got.json
    assert doc["ok"] is True and doc["blockers"] == []
    assert (doc["hash_primitive"], doc["hash_backend"]) == ("blake3", "blake3-rust")
    assert [c["name"] for c in doc["checks"]] == ["hash_vectors", "canonical_json",
                                                  "cas_round_trip"]
    assert all(c["ok"] for c in doc["checks"])


def test_validate_replacement_blocks_on_a_corrupt_cas_sample(cli, tmp_path: Path) -> None:
    _corrupt_one_object(cli, tmp_path)
    got = cli("validate-replacement")
    assert got.returncode == 1
    assert [b["id"] for b in got.json["blockers"]] == ["cas_corrupt"]


def test_validate_replacement_fails_closed_without_blake3(home: Path, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "blake3.py").write_text(FAKE_BLAKE3["wrong_vectors"])
    got = run_cli("validate-replacement", home=home, env={"PYTHONPATH": str(shadow)})
    assert got.returncode == 1
    doc = got.json
    assert doc.get("error", {}).get("code") == "hash_unavailable_blake3" or \
        any(b["id"] == "hash_backend" for b in doc["blockers"])


def test_validate_replacement_names_each_hash_blocker(home: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diagnostics.hashing, "status", lambda: {
        "hash_primitive": "sha256", "hash_backend": "fallback", "hash_version": None,
        "hash_available": False, "compat_warning": True, "reason": "simulated"})
    doc = diagnostics.validate_replacement(Home.resolve(str(home)))
    assert doc["ok"] is False
    assert [b["id"] for b in doc["blockers"]] == ["hash_not_blake3", "hash_backend"]
