"""`exec replay`, `digest verify` and `exec batch`."""

from __future__ import annotations

import json
from pathlib import Path

from requiem.cas import HEADER_SIZE, Cas
from tests.conftest import run_cli
from tests.test_exec import PLAIN


def _run(home: Path, tmp_path: Path, request: dict) -> tuple[Path, Path]:
    req, out = tmp_path / "req.json", tmp_path / "out.json"
    req.write_text(json.dumps(request))
    run_cli("exec", "run", "--request", str(req), "--out", str(out), home=home)
    return req, out


def test_replay_of_a_deterministic_run_passes(home: Path, tmp_path: Path) -> None:
    req, out = _run(home, tmp_path, {"command": "echo", "argv": ["hi"], "policy": PLAIN})
    got = run_cli("exec", "replay", "--request", str(req), "--result", str(out), home=home)
    assert got.returncode == 0 and got.json["ok"] is True


def test_replay_names_the_first_differing_field_and_bytes(home: Path, tmp_path: Path) -> None:
    req, out = _run(home, tmp_path, {"command": "date", "argv": ["+%N"], "policy": PLAIN})
    got = run_cli("exec", "replay", "--request", str(req), "--result", str(out), home=home)
    assert got.returncode == 1
    error = got.json["error"]
    assert error["code"] == "replay_failed"
    assert error["divergence"]["field"] == "stdout_digest"
    assert error["divergence"]["bytes"]["offset"] < 10


def test_replay_detects_corrupt_recorded_content(home: Path, tmp_path: Path) -> None:
    req, out = _run(home, tmp_path, {"command": "echo", "argv": ["payload"], "policy": PLAIN})
    digest = json.loads(out.read_text())["stdout_digest"]
    path = Cas(home / "cas").object_path(digest)
    raw = bytearray(path.read_bytes())
    raw[HEADER_SIZE] ^= 1
    path.write_bytes(bytes(raw))
    got = run_cli("exec", "replay", "--request", str(req), "--result", str(out), home=home)
    assert got.returncode == 1
    assert got.json["error"]["content"]["stdout_digest"]["ok"] is False


def test_digest_verify_recomputes_and_catches_tampering(home: Path, tmp_path: Path) -> None:
    req, out = _run(home, tmp_path, {"command": "echo", "argv": ["hi"], "policy": PLAIN})
    good = run_cli("digest", "verify", "--result", str(out), "--request", str(req))
    assert good.returncode == 0 and good.json["ok"]
    doc = json.loads(out.read_text())
    doc["exit_code"] = 1
    out.write_text(json.dumps(doc))
    bad = run_cli("digest", "verify", "--result", str(out))
    assert bad.returncode == 1 and bad.json["checks"]["result_digest"]["ok"] is False


def test_batch_matches_single_runs(home: Path, tmp_path: Path) -> None:
    requests = [{"command": "echo", "argv": [str(i)], "policy": PLAIN} for i in range(12)]
    requests.append({"command": "nope-not-here", "policy": PLAIN})
    lines = tmp_path / "r.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in requests) + "\n{broken\n")
    out = tmp_path / "o.jsonl"
    got = run_cli("exec", "batch", "--requests", str(lines), "--out", str(out), "--jobs", "3",
                  home=home)
    assert got.returncode == 1
    assert got.json["requests"] == 14 and got.json["failed"] == 2
    results = [json.loads(l) for l in out.read_text().splitlines()]
    singles = []
    for i, request in enumerate(requests[:3]):
        req, single = tmp_path / f"s{i}.json", tmp_path / f"s{i}.out"
        req.write_text(json.dumps(request))
        run_cli("exec", "run", "--request", str(req), "--out", str(single), home=home)
        singles.append(json.loads(single.read_text()))
    assert [r["result_digest"] for r in results[:3]] == [s["result_digest"] for s in singles]
    assert [r["stdout"] for r in results[:12]] == [f"{i}\n" for i in range(12)]
    assert results[12]["error"]["code"] == "spawn_failed"
    assert results[13]["error"]["code"] == "json_parse_error"
