"""`exec batch --jobs N`: worker processes that end with the batch, whichever way it ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from requiem import spool
from requiem.cas import Cas
from tests.conftest import cli_command, result_stored
from tests.test_exec import PLAIN


def _start_batch(home: Path, tmp_path: Path, count: int) -> subprocess.Popen:
    requests = [{"command": "sh", "argv": ["-c", f"echo {n}; sleep 0.05"],
                 "workspace_root": str(tmp_path), "policy": PLAIN} for n in range(count)]
    lines = tmp_path / "r.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in requests))
    return subprocess.Popen(cli_command() + ["--home", str(home), "exec", "batch", "--requests",
                                             str(lines), "--out", str(tmp_path / "o.jsonl"),
                                             "--jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _workers_of(pid: int) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            found = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except FileNotFoundError:
            found = []
        if len(found) == 2:
            return found
        time.sleep(0.02)
    raise AssertionError("the batch did not start its two workers")


def _wait_until_recorded(home: Path, count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and spool.pending_count(home / "spool") < count:
        time.sleep(0.05)


def _gone(pids: list[int], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() and
                   "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2] for pid in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_a_killed_worker_fails_the_batch_with_a_json_error(home: Path, tmp_path: Path) -> None:
    batch = _start_batch(home, tmp_path, 200)
    workers = _workers_of(batch.pid)
    _wait_until_recorded(home, 1)
    os.kill(workers[0], signal.SIGKILL)
    stdout, stderr = batch.communicate(timeout=120)
    assert batch.returncode == 1 and "Traceback" not in stderr, stderr
    error = json.loads(stdout)
    assert error["ok"] is False and "worker" in error["error"]["message"]
    assert not (tmp_path / "o.jsonl").exists()
    assert _gone(workers)


@pytest.mark.slow
def test_workers_stop_when_the_batch_process_is_killed(home: Path, tmp_path: Path) -> None:
    """The line numbers already in the pipe are not run: a worker sees its batch is gone,
    finishes its run in hand, makes its records durable and ends."""
    batch = _start_batch(home, tmp_path, 400)
    workers = _workers_of(batch.pid)
    _wait_until_recorded(home, 1)
    os.kill(batch.pid, signal.SIGKILL)
    batch.communicate(timeout=30)
    assert _gone(workers), "workers went on after their batch died"
    records = spool.pending_records(home / "spool", "execution")
    assert 1 <= len(records) < 400
    cas = Cas(home / "cas")
    assert all(result_stored(cas, r) for r in records)


def _batch(home: Path, tmp_path: Path, requests: list[dict], jobs: str) -> list[dict]:
    from tests.conftest import run_cli

    lines = tmp_path / "r.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in requests))
    got = run_cli("exec", "batch", "--requests", str(lines), "--out", str(tmp_path / "o.jsonl"),
                  "--jobs", jobs, home=home)
    assert got.returncode == 0, got.stdout + got.stderr
    return [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]


def test_commands_see_the_default_stop_signals_whatever_the_jobs(home: Path, tmp_path: Path,
                                                                 jobs: str) -> None:
    """Workers outlast SIGINT and SIGTERM with a handler, not by ignoring them: an ignored
    signal would stay ignored in every command, and `kill` inside a request would not work."""
    request = {"command": "sh", "argv": ["-c", "grep SigIgn /proc/self/status"],
               "workspace_root": str(tmp_path), "policy": PLAIN}
    for result in _batch(home, tmp_path, [request] * 2, jobs):
        ignored = int(result["stdout"].split()[1], 16)
        assert not ignored & (1 << (signal.SIGINT - 1) | 1 << (signal.SIGTERM - 1)), result


def test_a_worker_takes_a_line_only_once_its_command_has_ended(home: Path,
                                                               tmp_path: Path) -> None:
    """While one worker's command is long, the other runs every short request: a line taken
    ahead would wait behind the long one."""
    def request(script: str) -> dict:
        return {"command": "sh", "argv": ["-c", script], "workspace_root": str(tmp_path),
                "policy": PLAIN}

    results = _batch(home, tmp_path, [request("echo $PPID; sleep 2")] +
                     [request("echo $PPID")] * 3, "2")
    workers = [r["stdout"].strip() for r in results]
    assert len(set(workers[1:])) == 1 and workers[0] not in workers[1:], workers


def test_jobs_with_other_threads_alive_run_in_this_process(home: Path, tmp_path: Path) -> None:
    """A fork copies no thread but the caller's, and every lock another thread holds: with
    other threads alive, --jobs N runs in this process."""
    import threading

    from requiem.batch import run_batch
    from requiem.home import Home

    lines = tmp_path / "r.jsonl"
    lines.write_text(json.dumps({"command": "sh", "argv": ["-c", "echo $PPID"],
                                 "workspace_root": str(tmp_path), "policy": PLAIN}) + "\n" * 1
                     + json.dumps({"command": "true", "workspace_root": str(tmp_path),
                                   "policy": PLAIN}) + "\n")
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        summary = run_batch(Home.resolve(str(home)), str(lines), str(tmp_path / "o.jsonl"),
                            jobs=2)
    finally:
        stop.set()
        other.join()
    assert summary["ok"] is True
    first = json.loads((tmp_path / "o.jsonl").read_text().splitlines()[0])
    assert first["stdout"].strip() == str(os.getpid())


def test_a_batch_with_workers_leaves_no_descriptor_behind(home: Path, tmp_path: Path) -> None:
    """In a fresh process (no thread but the main one, so the workers are forked)."""
    lines = tmp_path / "r.jsonl"
    lines.write_text((json.dumps({"command": "true", "workspace_root": str(tmp_path),
                                  "policy": PLAIN}) + "\n") * 6)
    script = f"""
import os
from requiem import batch
from requiem.home import Home
assert batch._forkable()
home = Home.resolve({str(home)!r})
batch.run_batch(home, {str(lines)!r}, {str(tmp_path / "o.jsonl")!r}, jobs=3)
before = len(os.listdir("/proc/self/fd"))
batch.run_batch(home, {str(lines)!r}, {str(tmp_path / "o.jsonl")!r}, jobs=3)
print(before, len(os.listdir("/proc/self/fd")))
"""
    got = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=False)
    assert got.returncode == 0, got.stderr
    before, after = got.stdout.split()
    assert before == after


@pytest.mark.slow
def test_sigterm_to_the_batch_process_alone_stops_the_commands_in_hand(home: Path,
                                                                      tmp_path: Path) -> None:
    """As with --jobs 1: the commands in hand are killed, not waited for."""
    requests = [{"command": "sh", "argv": ["-c", f"sleep 3; touch done-{n}"],
                 "workspace_root": str(tmp_path), "policy": PLAIN} for n in range(4)]
    lines = tmp_path / "r.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in requests))
    batch = subprocess.Popen(cli_command() + ["--home", str(home), "exec", "batch", "--requests",
                                              str(lines), "--out", str(tmp_path / "o.jsonl"),
                                              "--jobs", "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = _workers_of(batch.pid)
    time.sleep(0.5)  # both commands are running
    batch.send_signal(signal.SIGTERM)
    _, stderr = batch.communicate(timeout=60)
    assert batch.returncode == 130 and "Traceback" not in stderr, stderr
    assert _gone(workers)
    time.sleep(3.5)  # past the moment the commands would have finished
    assert list(tmp_path.glob("done-*")) == []


def test_a_stop_signal_ignored_by_the_caller_stays_ignored(home: Path, tmp_path: Path,
                                                           jobs: str) -> None:
    """A batch started in the background (SIGINT ignored) passes that on to its commands
    whatever the jobs, as a single process would."""
    request = {"command": "sh", "argv": ["-c", "grep SigIgn /proc/self/status"],
               "workspace_root": str(tmp_path), "policy": PLAIN}
    lines = tmp_path / "r.jsonl"
    lines.write_text((json.dumps(request) + "\n") * 2)
    got = subprocess.run(cli_command() + ["--home", str(home), "exec", "batch", "--requests",
                                          str(lines), "--out", str(tmp_path / "o.jsonl"),
                                          "--jobs", jobs],
                         capture_output=True, text=True, timeout=120, check=False,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert got.returncode == 0, got.stdout + got.stderr
    for line in (tmp_path / "o.jsonl").read_text().splitlines():
        ignored = int(json.loads(line)["stdout"].split()[1], 16)
        assert ignored & 1 << (signal.SIGINT - 1) and not ignored & 1 << (signal.SIGTERM - 1)
