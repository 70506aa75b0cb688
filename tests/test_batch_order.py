"""`exec batch` runs its commands in order, each result the one a single run would give."""

from __future__ import annotations

import json
import time
from pathlib import Path

import blake3
import pytest

from tests.conftest import run_cli
from tests.test_exec import PLAIN


def _run_batch(home: Path, tmp_path: Path, requests: list[dict], failed: int = 0,
               jobs: str = "1") -> list[dict]:
    lines = tmp_path / "r.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in requests))
    out = tmp_path / "o.jsonl"
    got = run_cli("exec", "batch", "--requests", str(lines), "--out", str(out), "--jobs", jobs,
                  home=home)
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


def test_a_batch_result_is_the_single_run_result(home: Path, tmp_path: Path, jobs: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    request = {"command": "sh", "argv": ["-c", "echo out; echo err >&2; exit 3"],
               "workspace_root": str(ws), "policy": PLAIN}
    batch = _run_batch(home, tmp_path, [request] * 3, failed=3, jobs=jobs)
    (tmp_path / "one.json").write_text(json.dumps(request))
    single = run_cli("exec", "run", "--request", str(tmp_path / "one.json"),
                     "--out", str(tmp_path / "one.out"), home=home)
    assert single.returncode == 1
    alone = json.loads((tmp_path / "one.out").read_text())
    assert {r["result_digest"] for r in batch} == {alone["result_digest"]}
    assert all(r["exit_code"] == 3 and r["stderr"] == "err\n" for r in batch)



def test_each_capture_holds_only_its_own_bytes(home: Path, tmp_path: Path, jobs: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    # A long capture stored once, then found again, then short and empty captures, in temp
    # files made ahead by the group commit.
    texts = ["a long line of captured text\n" * 40] * 3 + ["x", "", "y\n", "x"] * 5
    results = _run_batch(home, tmp_path, [
        {"command": "printf", "argv": ["%s", text], "workspace_root": str(ws), "policy": PLAIN}
        for text in texts], jobs=jobs)
    for text, result in zip(texts, results):
        assert result["stdout"] == text
        assert result["stdout_digest"] == blake3.blake3(text.encode()).hexdigest()
    verify = run_cli("cas", "verify", "--all", home=home)
    assert verify.returncode == 0 and verify.json["ok"] is True, verify.stdout
    for result in results[:4]:
        got = run_cli("cas", "get", "--digest", result["stdout_digest"], "--out",
                      str(tmp_path / "got"), home=home)
        assert got.returncode == 0 and (tmp_path / "got").read_text() == result["stdout"]


def test_refusals_and_leased_runs_between_runs_keep_order_and_records(home: Path,
                                                                      tmp_path: Path, jobs: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    source = tmp_path / "in.txt"
    source.write_text("input bytes\n")
    put = run_cli("cas", "put", "--in", str(source), home=home)
    assert put.returncode == 0, put.stdout
    lines = [json.dumps({"command": "echo", "argv": ["one"], "workspace_root": str(ws),
                         "policy": PLAIN}),
             "{not json",
             json.dumps({"command": "cat", "argv": ["in.txt"], "workspace_root": str(ws),
                         "inputs": {"in.txt": put.json["digest"]}, "policy": PLAIN}),
             json.dumps({"command": "no-such-command-here", "workspace_root": str(ws),
                         "policy": PLAIN}),
             json.dumps({"command": "echo", "argv": ["five"], "workspace_root": str(ws),
                         "policy": PLAIN})]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    got = run_cli("exec", "batch", "--requests", str(tmp_path / "r.jsonl"), "--out",
                  str(tmp_path / "o.jsonl"), "--jobs", jobs, home=home)
    assert got.returncode == 1 and got.json["failed"] == 2, got.stdout
    results = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert results[0]["stdout"] == "one\n" and results[2]["stdout"] == "input bytes\n"
    assert results[4]["stdout"] == "five\n"
    assert results[1]["error"]["code"] == "json_parse_error"
    assert results[3]["error"]["code"] == "spawn_failed"
    ingest = run_cli("history", "ingest", home=home)
    # One record per line (two of them refusals), and the put's.
    assert ingest.returncode == 0 and ingest.json["folded"] == 6, ingest.stdout


def test_parallel_jobs_keep_input_order_and_record_every_run(home: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    lines = [json.dumps({"command": "echo", "argv": [str(n)], "workspace_root": str(ws),
                         "policy": PLAIN}) for n in range(40)]
    lines[7] = "[1, 2"  # a refusal among them, in its place
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    got = run_cli("exec", "batch", "--requests", str(tmp_path / "r.jsonl"), "--out",
                  str(tmp_path / "o.jsonl"), "--jobs", "3", home=home)
    assert got.returncode == 1 and got.json["failed"] == 1, got.stdout
    results = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert results[7]["error"]["code"] == "json_parse_error"
    assert [r["stdout"] for n, r in enumerate(results) if n != 7] == [
        f"{n}\n" for n in range(40) if n != 7]
    ingest = run_cli("history", "ingest", home=home)
    assert ingest.returncode == 0 and ingest.json["folded"] == 40, ingest.stdout


def test_a_run_whose_record_cannot_be_written_fails_the_batch_alone(home: Path, tmp_path: Path,
                                                                     monkeypatch) -> None:
    """The run behind failing to settle is its own error: the next run is not refused for it."""
    from requiem import batch, group_commit, spool
    from requiem.errors import QUOTA_EXCEEDED, RequiemError
    from requiem.home import Home

    ws = tmp_path / "ws"
    ws.mkdir()
    lines = tmp_path / "r.jsonl"
    lines.write_text("".join(json.dumps({"command": "echo", "argv": [name], "request_id": name,
                                         "workspace_root": str(ws), "policy": PLAIN}) + "\n"
                             for name in ("one", "two", "three")))
    real_add = group_commit.GroupCommit.add
    calls = []

    def add(self, kind: str, payload: dict, document: bytes | None = None) -> None:
        calls.append(payload.get("request_id"))  # the disk fills for run one's records
        if len(calls) <= 2:
            raise RequiemError(QUOTA_EXCEEDED, "no space left on device (simulated)")
        real_add(self, kind, payload, document)

    monkeypatch.setattr(group_commit.GroupCommit, "add", add)
    try:
        batch.run_batch(Home.resolve(str(home)), str(lines), str(tmp_path / "o.jsonl"))
    except RequiemError as exc:
        assert exc.code == QUOTA_EXCEEDED
    else:
        raise AssertionError("the batch went on past a record it could not write")
    assert calls == ["one", "one"]  # the run, then its refusal; nothing of two or three
    assert spool.pending_records(home / "spool") == []
    assert not (tmp_path / "o.jsonl").exists()


def test_a_ticket_raises_its_failure_on_every_ask() -> None:
    from requiem.engines import Ticket

    attempts = []

    def settle() -> dict:
        attempts.append(1)
        raise KeyboardInterrupt

    ticket = Ticket(settle)
    for _ in range(2):
        try:
            ticket.result()
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("a failed settle returned")
    assert attempts == [1]


_STRAY = ('import os, time; open("stray", "w").write(f"{os.getpid()} {os.fstat(1).st_ino}"); '
          'time.sleep(3)')


def _stray_request(ws: Path) -> dict:
    """Prints, leaves a setsid escapee holding its stdout, and exits at once."""
    return {"command": "sh", "argv": ["-c", f"printf first; setsid python3 -c '{_STRAY}' & "
                                            "sleep 0.5; exit 0"],
            "workspace_root": str(ws), "policy": PLAIN}


def _stray_seen(ws: Path) -> tuple[int, int]:
    marker = ws / "stray"
    deadline = time.monotonic() + 5
    while not (marker.exists() and marker.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid, inode = marker.read_text().split()
    return int(pid), int(inode)


def test_a_worker_kills_the_escapee_of_its_run(home: Path, tmp_path: Path) -> None:
    """Under --jobs, each worker process runs one command at a time: a setsid escapee of its
    run is its orphan alone, and dies with the run."""
    ws = tmp_path / "ws"
    ws.mkdir()
    sleeper = {"command": "sleep", "argv": ["1.5"], "workspace_root": str(ws), "policy": PLAIN}
    results = _run_batch(home, tmp_path, [sleeper, _stray_request(ws)], jobs="2")
    assert results[1]["stdout"] == "first"
    pid, _ = _stray_seen(ws)
    assert not Path(f"/proc/{pid}").exists(), "the escapee outlived its run"


def test_an_escapee_cannot_write_into_a_stored_capture(home: Path, tmp_path: Path) -> None:
    """With another run live in the same process (one Session used from two threads), a plain
    run's setsid escapee cannot be told from the other run's processes and may outlive its
    run, still holding the capture file: the object must be published from a copy."""
    import threading

    from requiem.cas import Cas
    from requiem.engines import Session
    from requiem.home import Home

    ws = tmp_path / "ws"
    ws.mkdir()
    session = Session(Home.resolve(str(home)), group_commit=True)
    sleeper = threading.Thread(target=lambda: session.execute(
        {"command": "sleep", "argv": ["1.5"], "workspace_root": str(ws), "policy": PLAIN}))
    sleeper.start()
    try:
        time.sleep(0.2)  # the other run is live
        result = session.execute(_stray_request(ws))
    finally:
        sleeper.join()
        session.close()
    assert result["stdout"] == "first"
    _, inode = _stray_seen(ws)
    stored = Cas(home / "cas").object_path(result["stdout_digest"]).stat().st_ino
    assert stored != inode, "the object is the file the stray still writes"


def test_closing_a_session_records_a_run_nobody_asked_for(home: Path, tmp_path: Path) -> None:
    """An interrupt may land between a run's submit and its ticket reaching the batch: the
    session still finishes and records that run when it closes."""
    from requiem import spool
    from requiem.engines import Session
    from requiem.home import Home

    ws = tmp_path / "ws"
    ws.mkdir()
    session = Session(Home.resolve(str(home)), group_commit=True)
    ticket = session.submit({"command": "echo", "argv": ["x"], "workspace_root": str(ws),
                             "policy": PLAIN})
    assert not ticket.settled
    session.close()
    assert ticket.settled and ticket.result()["stdout"] == "x\n"
    records = spool.pending_records(home / "spool")
    assert [r["request_digest"] for r in records] == [ticket.result()["request_digest"]]


def test_the_line_recording_made_is_the_result(home: Path, tmp_path: Path) -> None:
    """A batch writes a run's line from its stored result document's bytes (no second
    encoding): it must say exactly what the result says."""
    from requiem.batch import result_line
    from requiem.engines import Session
    from requiem.home import Home

    ws = tmp_path / "ws"
    ws.mkdir()
    session = Session(Home.resolve(str(home)), group_commit=True)
    try:
        ticket = session.submit({"command": "printf", "argv": ["caf\u00e9 \"q\" \\\\ \t"],
                                 "workspace_root": str(ws), "policy": PLAIN, "env": {"A": "1"},
                                 "outputs": ["nothing-made"], "request_id": "line-check"})
        result = ticket.result()
    finally:
        session.close()
    assert ticket.line is not None and ticket.line.endswith(b"}\n")
    assert json.loads(ticket.line) == json.loads(result_line(result))


def test_a_long_batch_encoding_with_orjson_gives_single_runs_digests(tmp_path: Path) -> None:
    # From ORJSON_FROM_LINES lines a batch encodes with orjson: digests may not move, and the
    # records it spools must fold like any others.
    pytest.importorskip("orjson")
    from requiem.batch import ORJSON_FROM_LINES

    home = tmp_path / "home"
    requests = [{"command": "sh", "argv": ["-c", f"echo {n}; echo é{n} >&2"],
                 "workspace_root": str(tmp_path), "policy": {"sandbox": {"backend": "none"}}}
                for n in range(ORJSON_FROM_LINES)]
    lines = tmp_path / "r.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in requests))
    got = run_cli("exec", "batch", "--requests", str(lines), "--out", str(tmp_path / "o.jsonl"),
                  home=home)
    assert got.returncode == 0, got.stdout + got.stderr
    results = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    for n in (0, 7, ORJSON_FROM_LINES - 1):
        single = tmp_path / f"single{n}.json"
        (tmp_path / "req.json").write_text(json.dumps(requests[n]))
        assert run_cli("exec", "run", "--request", str(tmp_path / "req.json"), "--out", str(single),
                       home=home).returncode == 0
        alone = json.loads(single.read_text())
        for field in ("request_digest", "trace_digest", "result_digest", "request_object"):
            assert results[n][field] == alone[field], field
    ingest = run_cli("history", "ingest", home=home)
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr
    listed = run_cli("history", "ls", "--limit", "1000", home=home).json
    assert len(listed["executions"]) == ORJSON_FROM_LINES + 3


@pytest.mark.slow
def test_a_gc_holding_the_store_never_leaves_the_next_command_unwatched(home: Path,
                                                                        tmp_path: Path) -> None:
    """A run waits for a GC before the next command starts, never while it runs: its timeout
    and output limit are watched from its start."""
    import subprocess

    from requiem.cas_guard import exclusive_guard
    from tests.conftest import cli_command

    ws = tmp_path / "ws"
    ws.mkdir()
    first = {"command": "sleep", "argv": ["0.6"], "workspace_root": str(ws), "policy": PLAIN}
    second = {"command": "sleep", "argv": ["10"], "workspace_root": str(ws), "policy": PLAIN,
              "timeout_ms": 500}
    lines = tmp_path / "r.jsonl"
    lines.write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")
    out = tmp_path / "o.jsonl"
    (home / "cas").mkdir(parents=True)
    batch = subprocess.Popen(cli_command() + ["--home", str(home), "exec", "batch", "--requests",
                                              str(lines), "--out", str(out)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    time.sleep(0.35)  # the first command runs
    with exclusive_guard(str(home / "cas")):  # what a GC holds while it deletes
        time.sleep(5)
    batch.communicate(timeout=60)
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert results[1]["termination_reason"] == "timeout"
    # Watched, it ends at its 500 ms; unwatched, when the hold ends, seconds later.
    assert results[1]["duration_ms"] < 2500, results[1]["duration_ms"]
