"""The determinism gate: one request, many runs, sequential and concurrent → one result digest."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import cli_command, run_cli

# Runs on the system python3 (the fixed PATH), which the sandbox can see; the venv cannot.
HASH_SCRIPT = (
    "import hashlib\n"
    "rows = sorted(open('in/data.txt').read().split())\n"
    "print(hashlib.sha256('\\n'.join(rows).encode()).hexdigest())\n"
)


def _workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "in").mkdir(parents=True)
    (ws / "in" / "data.txt").write_text("pear\napple\nfig\nbanana\n" * 50)
    (ws / "tree" / "b").mkdir(parents=True)
    (ws / "tree" / "a.txt").write_text("alpha\n")
    (ws / "tree" / "b" / "c.txt").write_text("gamma\n")
    (ws / "hash.py").write_text(HASH_SCRIPT)
    return ws


def _requests(ws: Path) -> dict[str, dict]:
    # Concurrent workers share one workspace (its path is part of the request digest), so the
    # archive goes to stdout: a shared output file would be rewritten under another run's feet.
    base = {"workspace_root": str(ws), "timeout_ms": 20000}
    return {
        "sort": {**base, "command": "sort", "argv": ["in/data.txt"]},
        "python": {**base, "command": "python3", "argv": ["hash.py"]},
        "tar": {**base, "command": "tar",
                "argv": ["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner",
                         "--mode=go-w", "-cf", "-", "tree"]},
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sort", "python", "tar"])
def test_one_result_digest_over_200_sequential_and_3_concurrent_workers(
        home: Path, tmp_path: Path, name: str) -> None:
    ws = _workspace(tmp_path)
    request = _requests(ws)[name]
    batch = tmp_path / "r.jsonl"
    batch.write_text((json.dumps(request) + "\n") * 200)
    out = tmp_path / "o.jsonl"
    got = run_cli("exec", "batch", "--requests", str(batch), "--out", str(out), home=home,
                  timeout=600)
    assert got.returncode == 0, got.stdout[-2000:]
    digests = {json.loads(line)["result_digest"] for line in out.read_text().splitlines()}

    req = tmp_path / "req.json"
    req.write_text(json.dumps(request))

    def worker(index: int) -> set[str]:
        seen = set()
        for round_ in range(4):
            result_path = tmp_path / f"w{index}-{round_}.json"
            subprocess.run(cli_command() + ["--home", str(home), "exec", "run", "--request",
                                            str(req), "--out", str(result_path)],
                           check=True, capture_output=True, timeout=120)
            seen.add(json.loads(result_path.read_text())["result_digest"])
        return seen

    with ThreadPoolExecutor(3) as pool:
        for seen in pool.map(worker, range(3)):
            digests |= seen
    assert len(digests) == 1, digests


@pytest.mark.parametrize("argv", [["date", "+%N"], ["head", "-c", "16", "/dev/urandom"]])
def test_nondeterministic_commands_are_caught_by_dual_run(home: Path, tmp_path: Path,
                                                          argv: list[str]) -> None:
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"command": argv[0], "argv": argv[1:]}))
    out = tmp_path / "out.json"
    run_cli("exec", "run", "--engine", "dual", "--request", str(req), "--out", str(out), home=home)
    report = json.loads(out.read_text())["dual_run"]
    assert {"digest_mismatch", "stdout_mismatch"} <= set(report["categories"])
    assert report["severities"]["digest_mismatch"] == "critical"
