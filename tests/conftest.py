"""Shared fixtures: a temp home and a runner for the real `requiem` CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BIN_DIR = Path(sys.executable).parent
_SCRATCH_HOME = tempfile.mkdtemp(prefix="requiem-test-home-")
# Anything a test runs without --home must not write a .requiem into the checkout.
os.environ["REQUIEM_HOME"] = _SCRATCH_HOME
REQUIEM = str(BIN_DIR / "requiem") if (BIN_DIR / "requiem").exists() else None


@dataclass
class CliResult:
    """What one `requiem` invocation did."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def cli_command() -> list[str]:
    """The argv prefix that runs the installed `requiem` console script."""
    return [REQUIEM] if REQUIEM else [sys.executable, "-m", "requiem.cli"]


def run_cli(*args: str, home: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120, cwd: Path | None = None) -> CliResult:
    """Run `requiem [--home H] ARGS…` for real and capture its output."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    argv = cli_command() + (["--home", str(home)] if home else []) + list(args)
    proc = subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=timeout,
                          cwd=cwd, stdin=subprocess.DEVNULL)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh Requiem home directory."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def cli(home: Path):
    """Run the real CLI against the test's home: cli("cas", "ls")."""

    def _run(*args: str, **kwargs: Any) -> CliResult:
        return run_cli(*args, home=home, **kwargs)

    return _run


@pytest.fixture(params=["1", "2"])
def jobs(request: pytest.FixtureRequest) -> str:
    """`exec batch --jobs` for a test that holds for both: this process, and worker processes."""
    return request.param


def result_stored(cas: Any, record: dict[str, Any]) -> bool:
    """Whether an execution record's result document is in the CAS, intact: an object of its
    own, or a line of its batch's pack (requiem.result_pack)."""
    from requiem.errors import RequiemError
    from requiem.hashing import hash_bytes
    from requiem.result_pack import read_result

    try:
        document = read_result(cas, record["result_object"], record.get("result_pack"))
    except RequiemError:
        return False
    return hash_bytes(document) == record["result_object"]
