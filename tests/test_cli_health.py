"""`requiem health`, fail-closed hashing, the one-JSON-document rule and lazy imports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_layering import loaded_after



def test_health_reports_hash_versions_and_capabilities(cli) -> None:
    got = cli("health")
    assert got.returncode == 0
    doc = got.json
    assert doc["hash_primitive"] == "blake3"
    assert doc["hash_available"] is True
    assert doc["hash_backend"] not in ("fallback", "unavailable")
    assert doc["compat_warning"] is False
    for key in ("hash_version", "engine_version", "protocol_version", "contract_version",
                "cas_format_version"):
        assert doc[key]
    caps = doc["sandbox_capabilities"]
    assert set(caps) >= {"enforced", "partial", "unsupported", "reasons"}
    listed = caps["enforced"] + caps["partial"] + caps["unsupported"]
    assert sorted(listed) == sorted(caps["reasons"]) and len(listed) == 7


FAKE_BLAKE3 = {
    "wrong_vectors": (
        "class blake3:\n"
        "    AUTO = -1\n"
        "    def __init__(self, data=b'', max_threads=1):\n"
        "        pass\n"
        "    def update(self, data):\n"
        "        return self\n"
        "    def hexdigest(self):\n"
        "        return '0' * 64\n"
    ),
    "import_fails": "raise ImportError('simulated missing BLAKE3 extension')\n",
}


@pytest.mark.parametrize("variant", sorted(FAKE_BLAKE3))
@pytest.mark.parametrize("command", [["health"], ["cas", "ls"], ["cas", "verify", "--all"]])
def test_every_command_fails_closed_without_blake3(tmp_path: Path, home: Path, variant: str,
                                                   command: list[str]) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "blake3.py").write_text(FAKE_BLAKE3[variant])
    got = run_cli(*command, home=home, env={"PYTHONPATH": str(shadow)})
    assert got.returncode == 1
    assert got.json["error"]["code"] == "hash_unavailable_blake3"


@pytest.mark.parametrize("variant", sorted(FAKE_BLAKE3))
def test_replacement_check_reports_a_missing_blake3_as_a_blocker(tmp_path: Path, home: Path,
                                                                  variant: str) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "blake3.py").write_text(FAKE_BLAKE3[variant])
    got = run_cli("validate-replacement", home=home, env={"PYTHONPATH": str(shadow)})
    assert got.returncode == 1
    assert got.json["ok"] is False and got.json["blockers"]
    assert got.json["hash_backend"] in ("unavailable", "fallback")


@pytest.mark.parametrize(
    "argv", [["health"], ["cas", "ls"], ["cas", "stats"], ["cas", "verify", "--all"],
             ["cas", "info", "--digest", "a" * 64]]
)
def test_cli_commands_never_import_heavy_libraries(home: Path, argv: list[str]) -> None:
    code = f"from requiem.cli import main\nmain({['--home', str(home), *argv]!r})"
    assert loaded_after(code) == []


def test_every_command_prints_exactly_one_json_document(cli, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    for argv in (["health"], ["cas", "put", "--in", str(tmp_path / "f")], ["cas", "ls"],
                 ["cas", "info", "--digest", "nothex"], ["cas", "nosuch"], ["nosuch"]):
        got = cli(*argv)
        json.loads(got.stdout)  # exactly one document, nothing else on stdout
        assert got.returncode in (0, 1, 2)


def test_usage_errors_exit_2_with_contract_json(cli) -> None:
    got = cli("cas", "put")
    assert got.returncode == 2
    assert got.json["error"]["code"] == "invalid_request"
