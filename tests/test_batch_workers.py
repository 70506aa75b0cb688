"""`exec batch --jobs N`: worker processes that end with the batch, whichever way it ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from requiem import spool
from requiem.cas import Cas
from tests.conftest import cli_command
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
    assert all(cas.verify_object(r["result_object"]) is None for r in records)
