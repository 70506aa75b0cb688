"""`exec batch` runs its commands in order, each result the one a single run would give."""

from __future__ import annotations

import json
from pathlib import Path

import blake3

from tests.conftest import run_cli
from tests.test_exec import PLAIN


def _run_batch(home: Path, tmp_path: Path, requests: list[dict], failed: int = 0) -> list[dict]:
    lines = tmp_path / "r.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in requests))
    out = tmp_path / "o.jsonl"
    got = run_cli("exec", "batch", "--requests", str(lines), "--out", str(out), home=home)
    assert got.returncode == (1 if failed else 0) and got.json["failed"] == failed, got.stdout
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_each_output_is_captured_before_the_next_command_rewrites_it(home: Path,
                                                                      tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    requests = [{"command": "sh", "argv": ["-c", f"echo {n} >> log; cp log out.txt; cat log"],
                 "workspace_root": str(ws), "outputs": ["out.txt"], "policy": PLAIN}
                for n in range(60)]
    results = _run_batch(home, tmp_path, requests)
    for n, result in enumerate(results):
        expected = "".join(f"{i}\n" for i in range(n + 1))
        assert result["stdout"] == expected
        assert result["output_digests"] == {"out.txt": blake3.blake3(expected.encode()).hexdigest()}


def test_a_directory_made_by_one_request_is_the_next_ones_cwd(home: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    results = _run_batch(home, tmp_path, [
        {"command": "mkdir", "argv": ["made"], "workspace_root": str(ws), "policy": PLAIN},
        {"command": "pwd", "cwd": "made", "workspace_root": str(ws), "policy": PLAIN},
    ])
    assert [r["ok"] for r in results] == [True, True]
    assert results[1]["stdout"] == f"{ws.resolve()}/made\n"


def test_a_batch_result_is_the_single_run_result(home: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    request = {"command": "sh", "argv": ["-c", "echo out; echo err >&2; exit 3"],
               "workspace_root": str(ws), "policy": PLAIN}
    batch = _run_batch(home, tmp_path, [request] * 3, failed=3)
    (tmp_path / "one.json").write_text(json.dumps(request))
    single = run_cli("exec", "run", "--request", str(tmp_path / "one.json"),
                     "--out", str(tmp_path / "one.out"), home=home)
    assert single.returncode == 1
    alone = json.loads((tmp_path / "one.out").read_text())
    assert {r["result_digest"] for r in batch} == {alone["result_digest"]}
    assert all(r["exit_code"] == 3 and r["stderr"] == "err\n" for r in batch)

