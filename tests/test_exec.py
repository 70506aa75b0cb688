"""`requiem exec run`: results, digests, environment, confinement, timeouts, bad requests."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from requiem import canonical, contract, hashing
from requiem.cas import Cas
from tests.conftest import run_cli

PLAIN = {"sandbox": {"backend": "none"}}


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


def run_request(home: Path, tmp_path: Path, request: Any, *extra: str,
                env: dict[str, str] | None = None, raw: bytes | None = None) -> tuple[int, Any]:
    """Write a request, run `requiem exec run`, return (exit code, result from --out)."""
    req = tmp_path / f"req-{time.monotonic_ns()}.json"
    req.write_bytes(raw if raw is not None else json.dumps(request).encode())
    out = tmp_path / f"out-{time.monotonic_ns()}.json"
    got = run_cli("exec", "run", "--request", str(req), "--out", str(out), *extra,
                  home=home, env=env)
    assert json.loads(got.stdout) == json.loads(out.read_text()), "stdout and --out agree"
    return got.returncode, json.loads(out.read_text())


def spool_records(home: Path, kind: str = "execution") -> list[dict[str, Any]]:
    from requiem.spool import pending_records

    return pending_records(home / "spool", kind)


def test_echo_result_has_every_contract_field(home: Path, tmp_path: Path, ws: Path) -> None:
    code, result = run_request(home, tmp_path, {
        "command": "echo", "argv": ["hello"], "workspace_root": str(ws), "policy": PLAIN})
    assert code == 0
    assert result["ok"] is True and result["exit_code"] == 0 and result["error_code"] is None
    assert result["stdout"] == "hello\n"
    assert result["stdout_digest"] == hashing.hash_bytes(b"hello\n")
    assert result["stderr_digest"] == hashing.hash_bytes(b"")
    for field in ("trace_events", "trace_digest", "request_digest", "result_digest",
                  "policy_applied", "sandbox_applied", "determinism_confidence", "request_id",
                  "start_timestamp", "end_timestamp", "duration_ms", "engine_version",
                  "contract_version", "stdout_truncated", "stderr_truncated", "output_digests",
                  "termination_reason"):
        assert field in result, field
    assert set(result["sandbox_applied"]) >= {"enforced", "partial", "unsupported"}
    assert result["determinism_confidence"]["level"] in ("high", "medium", "best_effort")
    # Every digest recomputes from the document alone, with RFC 8785 and BLAKE3.
    assert result["trace_digest"] == contract.trace_digest_of(result["trace_events"])
    assert result["result_digest"] == contract.result_digest_of(result)
    assert all({"seq", "t_ns", "type", "data"} == set(e) for e in result["trace_events"])
    # stdout lives in the CAS.
    assert Cas(home / "cas").read_bytes(result["stdout_digest"]) == b"hello\n"


def test_request_digest_ignores_request_id_and_nonce(home: Path, tmp_path: Path, ws: Path) -> None:
    base = {"command": "true", "workspace_root": str(ws), "policy": PLAIN}
    _, a = run_request(home, tmp_path, base)
    _, b = run_request(home, tmp_path, {**base, "request_id": "job-7", "nonce": "n1"})
    expected = hashing.hash_bytes(canonical.dumps(base))
    assert a["request_digest"] == b["request_digest"] == expected
    assert a["result_digest"] == b["result_digest"]
    assert b["request_id"] == "job-7"
    assert a["request_id"].startswith("rq_")
    _, c = run_request(home, tmp_path, {**base, "nonce": "n1"})
    _, d = run_request(home, tmp_path, {**base, "nonce": "n1"})
    assert c["request_id"] == d["request_id"] != a["request_id"]


def test_failing_command_exits_1_with_a_result(home: Path, tmp_path: Path, ws: Path) -> None:
    code, result = run_request(home, tmp_path, {
        "command": "sh", "argv": ["-c", "echo oops >&2; exit 3"], "workspace_root": str(ws),
        "policy": PLAIN})
    assert code == 1
    assert result["ok"] is False and result["exit_code"] == 3
    assert result["stderr"] == "oops\n" and result["termination_reason"] == "exited"


def test_deterministic_environment(home: Path, tmp_path: Path, ws: Path) -> None:
    code, result = run_request(
        home, tmp_path,
        {"command": "env", "workspace_root": str(ws), "env": {"MY_VAR": "1", "API_TOKEN": "s3cr3t",
                                                              "ÉNV": "ü"},
         "policy": {**PLAIN, "env_allowlist": ["ALLOWED_FROM_HOST"], "required_env": {"REQ": "x"}}},
        env={"ALLOWED_FROM_HOST": "yes", "NOT_ALLOWED": "no", "GITHUB_TOKEN": "leak"})
    assert code == 0
    lines = dict(line.split("=", 1) for line in result["stdout"].splitlines())
    assert lines["TZ"] == "UTC" and lines["LC_ALL"] == "C.UTF-8"
    assert lines["SOURCE_DATE_EPOCH"] == contract.FIXED_SOURCE_DATE_EPOCH
    assert lines["PYTHONHASHSEED"] == "0" and lines["HOME"] == str(ws)
    assert lines["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert lines["MY_VAR"] == "1" and lines["ALLOWED_FROM_HOST"] == "yes" and lines["REQ"] == "x"
    assert lines["ÉNV"] == "ü"
    assert "NOT_ALLOWED" not in lines and "API_TOKEN" not in lines and "GITHUB_TOKEN" not in lines
    assert "API_TOKEN" not in result["policy_applied"]["env_keys"]


def test_secrets_are_never_stored(home: Path, tmp_path: Path, ws: Path) -> None:
    run_request(home, tmp_path, {"command": "true", "workspace_root": str(ws), "policy": PLAIN,
                                 "env": {"DB_PASSWORD": "hunter2-value", "AUTHORIZATION": "x9y8"}})
    for path in [*home.rglob("*")]:
        if path.is_file():
            data = path.read_bytes()
            assert b"hunter2-value" not in data and b"x9y8" not in data, path


def test_a_command_that_ended_in_time_is_no_timeout_however_late_it_is_collected(
        tmp_path: Path, ws: Path) -> None:
    """A batch collects a run after its other work; the result must not depend on that work."""
    from requiem.runner import Runner

    request = contract.parse_request({"command": "true", "workspace_root": str(ws),
                                      "timeout_ms": 100, "policy": PLAIN})
    runner = Runner(Cas(tmp_path / "cas"))
    launch = runner.start(request)
    try:
        time.sleep(0.3)  # the command ended long ago; its deadline has passed too
        launch.collect()
        result = launch.finish()
    finally:
        launch.close()
        runner.close()
    assert result["termination_reason"] == "exited" and result["ok"], result


def test_timeout_kills_the_whole_tree(home: Path, tmp_path: Path, ws: Path) -> None:
    marker = ws / "escapee.pid"
    script = (f"import os, time\n"
              f"if os.fork() == 0:\n"
              f"    os.setsid()\n"
              f"    if os.fork() == 0:\n"
              f"        open({str(marker)!r}, 'w').write(str(os.getpid()))\n"
              f"        time.sleep(60)\n"
              f"    os._exit(0)\n"
              f"time.sleep(60)\n")
    start = time.monotonic()
    code, result = run_request(home, tmp_path, {
        "command": "python3", "argv": ["-c", script], "workspace_root": str(ws),
        "timeout_ms": 1500, "policy": {**PLAIN, "deterministic": False}})
    assert time.monotonic() - start < 20
    assert code == 1
    assert result["termination_reason"] == "timeout" and result["error_code"] == "timeout"
    assert result["exit_code"] is None
    pid = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), "setsid grandchild survived the timeout"


def test_inputs_are_materialised_and_outputs_collected(home: Path, tmp_path: Path, ws: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("b\nc\na\n")
    digest = run_cli("cas", "put", "--in", str(data), home=home).json["digest"]
    code, result = run_request(home, tmp_path, {
        "command": "sh", "argv": ["-c", "mkdir -p out && sort in/data.txt > out/sorted.txt"],
        "workspace_root": str(ws), "inputs": {"in/data.txt": digest},
        "outputs": ["out/sorted.txt", "out/missing.txt"], "policy": PLAIN})
    assert code == 0, result
    sorted_digest = result["output_digests"]["out/sorted.txt"]
    assert sorted_digest == hashing.hash_bytes(b"a\nb\nc\n")
    assert result["output_digests"]["out/missing.txt"] is None
    assert Cas(home / "cas").read_bytes(sorted_digest) == b"a\nb\nc\n"


def test_missing_input_is_refused(home: Path, tmp_path: Path, ws: Path) -> None:
    code, result = run_request(home, tmp_path, {
        "command": "true", "workspace_root": str(ws), "inputs": {"x": "a" * 64}, "policy": PLAIN})
    assert code == 1 and result["error"]["code"] == "missing_input"


@pytest.mark.parametrize("field, value", [
    ("cwd", ".."),
    ("cwd", "/etc"),
    ("outputs", ["../outside.txt"]),
    ("outputs", ["link/passwd"]),
    ("inputs", {"../evil": "a" * 64}),
    ("cwd", "EVIL_SIBLING"),
])
def test_path_escapes_are_refused(home: Path, tmp_path: Path, ws: Path, field: str, value: Any) -> None:
    (ws / "link").symlink_to("/etc")
    evil = tmp_path / "ws_evil"
    evil.mkdir()
    if value == "EVIL_SIBLING":
        value = str(evil)  # the /ws vs /ws_evil prefix trap
    code, result = run_request(home, tmp_path, {
        "command": "true", "workspace_root": str(ws), field: value, "policy": PLAIN})
    assert code == 1
    assert result["error"]["code"] == "path_escape"
    assert result["error"]["pointer"].startswith(f"/{field}")
    refused = spool_records(home)[-1]
    assert refused["termination_reason"] == "refused" and refused["error_code"] == "path_escape"


def test_a_workspace_root_is_taken_by_its_real_path_however_it_is_named(tmp_path: Path,
                                                                         ws: Path) -> None:
    from requiem import confinement
    from requiem.errors import RequiemError

    real = os.path.realpath(ws)
    (tmp_path / "via-link").symlink_to(ws)
    (ws / "sub").mkdir()
    for name in (real, real + "/", real + "//sub/..", str(tmp_path / "via-link"),
                 str(tmp_path / "via-link" / "sub" / "..")):
        assert confinement.workspace_root(name) == real, name
    assert confinement.workspace_root(os.path.relpath(real, tmp_path), base=str(tmp_path)) == real
    (ws / "file").write_text("x")
    for not_a_directory in (str(ws / "file"), str(ws / "missing"), str(tmp_path / "via-link" / "file")):
        with pytest.raises(RequiemError) as refused:
            confinement.workspace_root(not_a_directory)
        assert refused.value.code == "invalid_request"


def test_output_replaced_by_a_symlink_out_is_not_collected(home: Path, tmp_path: Path, ws: Path) -> None:
    code, result = run_request(home, tmp_path, {
        "command": "ln", "argv": ["-s", "/etc/passwd", "leak.txt"], "workspace_root": str(ws),
        "outputs": ["leak.txt"], "policy": PLAIN})
    assert result["output_digests"] == {"leak.txt": None}
    assert any(e["type"] == "output_rejected" for e in result["trace_events"])


@pytest.mark.parametrize("raw, code", [
    (b"not json", "json_parse_error"),
    (b'{"command": "true", "command": "false"}', "json_duplicate_key"),
    (b'{"argv": []}', "invalid_request"),
    (b'{"command": 5}', "invalid_request"),
    (b'{"command": "tr\\u0000ue"}', "invalid_request"),
    (b'{"command": "true", "argv": "x"}', "invalid_request"),
    (b'{"command": "true", "env": {"A": 1}}', "invalid_request"),
    (b'{"command": "true", "env": {"A=B": "x"}}', "invalid_request"),
    (b'{"command": "true", "timeout_ms": 0}', "invalid_request"),
    (b'{"command": "true", "timeout_ms": 99999999999}', "invalid_request"),
    (b'{"command": "true", "timeout_ms": "5"}', "invalid_request"),
    (b'{"command": "true", "request_id": "a/b"}', "invalid_request"),
    (b'{"command": "true", "request_id": "' + b"x" * 500 + b'"}', "invalid_request"),
    (b'{"command": "true", "bogus": 1}', "invalid_request"),
    (b'{"command": "true", "outputs": ' + json.dumps(["f%d" % i for i in range(300)]).encode()
     + b"}", "quota_exceeded"),
    (b'{"command": "true", "argv": ' + json.dumps(["a"] * 100_001).encode() + b"}",
     "quota_exceeded"),
    (b"[1, 2]", "invalid_request"),
    (b'{"command": "true", "policy": {"sandbox": {"require": ["x-ray"]}}}', "invalid_request"),
    (b'{"command": "definitely-not-a-command-xyz"}', "spawn_failed"),
    (b'{"command": "/etc/passwd"}', "spawn_failed"),
    (b'{"command": "/usr"}', "spawn_failed"),
], ids=lambda v: v if isinstance(v, str) else v[:30].decode("ascii", "replace"))
def test_malformed_requests_get_a_contract_error(home: Path, tmp_path: Path, raw: bytes,
                                                 code: str) -> None:
    exit_code, result = run_request(home, tmp_path, None, raw=raw)
    assert exit_code == 1
    assert result["ok"] is False and result["error"]["code"] == code, result
    assert "Traceback" not in json.dumps(result)


def test_unknown_fields_are_warned_in_compat_mode(home: Path, tmp_path: Path, ws: Path) -> None:
    code, result = run_request(home, tmp_path, {
        "command": "true", "workspace_root": str(ws), "extra": 1,
        "policy": {**PLAIN, "mode": "compat"}})
    assert code == 0 and result["warnings"] == ["/extra: unknown field ignored (policy.mode is compat)"]


def test_argv_of_100k_entries_runs(home: Path, tmp_path: Path, ws: Path) -> None:
    code, result = run_request(home, tmp_path, {
        "command": "sh", "argv": ["-c", 'echo "$#"', "sh", *(["x"] * 99_996)],
        "workspace_root": str(ws), "policy": PLAIN})
    assert code == 0 and result["stdout"] == "99996\n"


def test_inline_output_is_capped_with_truncation_flags(home: Path, tmp_path: Path, ws: Path) -> None:
    code, result = run_request(home, tmp_path, {
        "command": "head", "argv": ["-c", "100000", "/dev/zero"], "workspace_root": str(ws),
        "max_output_bytes": 1000, "policy": PLAIN})
    assert code == 0
    assert result["stdout_truncated"] is True and result["stdout_bytes"] == 100000
    assert result["stdout_digest"] == hashing.hash_bytes(b"\0" * 100000)


@pytest.mark.slow
def test_output_flood_is_stopped_at_the_limit(home: Path, tmp_path: Path, ws: Path) -> None:
    # 5 GB asked for; the engine keeps the first output_limit_bytes and stops the command.
    code, result = run_request(home, tmp_path, {
        "command": "head", "argv": ["-c", "5000000000", "/dev/zero"], "workspace_root": str(ws),
        "output_limit_bytes": 64 << 20, "timeout_ms": 60000, "policy": PLAIN})
    assert code == 1
    assert result["termination_reason"] == "output_limit"
    assert result["error_code"] == "quota_exceeded"
    info = Cas(home / "cas").info(result["stdout_digest"])
    assert info.original_size == 64 << 20


def test_force_rust_exits_3_before_any_work(home: Path, tmp_path: Path) -> None:
    req = tmp_path / "r.json"
    req.write_text('{"command": "true"}')
    got = run_cli("exec", "run", "--request", str(req), "--out", str(tmp_path / "o.json"),
                  home=home, env={"FORCE_RUST": "1"})
    assert got.returncode == 3 and got.json["force_rust"] is True
    assert not (tmp_path / "o.json").exists() and not (home / "spool").exists()


def test_every_run_writes_one_spool_record(home: Path, tmp_path: Path, ws: Path) -> None:
    run_request(home, tmp_path, {"command": "true", "workspace_root": str(ws), "policy": PLAIN})
    run_request(home, tmp_path, None, raw=b"{bad")
    records = spool_records(home)
    assert [r["termination_reason"] for r in records].count("exited") == 1
    assert [r["error_code"] for r in records].count("json_parse_error") == 1
    ok = next(r for r in records if r["ok"])
    cas = Cas(home / "cas")
    stored = canonical.loads(cas.read_bytes(ok["result_object"]))
    assert stored["result_digest"] == ok["result_digest"]
    assert canonical.loads(cas.read_bytes(ok["request_object"]))["command"] == "true"


def test_request_digest_does_not_depend_on_secret_values(home: Path, tmp_path: Path, ws: Path) -> None:
    base = {"command": "true", "workspace_root": str(ws), "policy": PLAIN}
    _, a = run_request(home, tmp_path, {**base, "env": {"API_TOKEN": "first-secret"}})
    _, b = run_request(home, tmp_path, {**base, "env": {"API_TOKEN": "other-secret"}})
    assert a["request_digest"] == b["request_digest"]
    stored = canonical.loads(Cas(home / "cas").read_bytes(a["request_object"]))
    assert stored["env"] == {"API_TOKEN": "<redacted>"}
    assert contract.request_digest_of(stored) == a["request_digest"]


def test_exit_codes_above_128_read_the_same_on_every_backend(home: Path, tmp_path: Path,
                                                              ws: Path) -> None:
    for script in ("exit 137", "kill -9 $$"):
        outcomes = []
        for backend in ("none", "auto"):
            _, result = run_request(home, tmp_path, {
                "command": "sh", "argv": ["-c", script], "workspace_root": str(ws),
                "policy": {"sandbox": {"backend": backend}}})
            exit_event = next(e["data"] for e in result["trace_events"] if e["type"] == "exit")
            outcomes.append((result["exit_code"], result["termination_reason"], exit_event))
        assert outcomes[0] == outcomes[1] == (137, "exited", {"exit_code": 137,
                                                              "termination_reason": "exited"})


def test_a_sandboxed_command_cannot_touch_the_home_inside_its_workspace(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    home = ws / ".requiem"
    req = tmp_path / "r.json"
    req.write_text(json.dumps({"command": "sh", "argv": ["-c",
        "mkdir -p .requiem && echo '{\"config_version\": 1, \"legacy_engine\": {\"path\": \"x\"}}'"
        " > .requiem/config.json"], "workspace_root": str(ws)}))
    got = run_cli("exec", "run", "--request", str(req), "--out", str(tmp_path / "o.json"),
                  home=home)
    result = json.loads((tmp_path / "o.json").read_text())
    if "workspace_confinement" not in result.get("sandbox_applied", {}).get("enforced", []):
        pytest.skip("no sandbox backend enforces workspace confinement here")
    assert got.returncode == 0, result
    assert not (home / "config.json").exists()
    assert "home inside the workspace is hidden" in result["sandbox_applied"]["reasons"][
        "workspace_confinement"]


def test_a_workspace_over_system_directories_is_refused(home: Path, tmp_path: Path) -> None:
    code, result = run_request(home, tmp_path, {"command": "true", "workspace_root": "/"})
    assert code == 1 and result["error"]["code"] == "invalid_request"
    assert result["error"]["pointer"] == "/workspace_root"


@pytest.mark.parametrize("case", ["out_dir_missing", "request_is_a_directory", "request_missing"])
def test_bad_request_and_out_paths_are_contract_errors(home: Path, tmp_path: Path, case: str) -> None:
    good = tmp_path / "r.json"
    good.write_text('{"command": "true"}')
    request, out = {
        "out_dir_missing": (good, tmp_path / "no" / "such" / "o.json"),
        "request_is_a_directory": (tmp_path, tmp_path / "o.json"),
        "request_missing": (tmp_path / "absent.json", tmp_path / "o.json"),
    }[case]
    got = run_cli("exec", "run", "--request", str(request), "--out", str(out), home=home)
    assert got.returncode == 1
    assert got.json["error"]["code"] == "invalid_request"
    assert "Traceback" not in got.stderr
