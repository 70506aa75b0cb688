"""A batch's small CAS objects are written by a helper process it forks, ends and survives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from requiem import spool
from requiem.cas import Cas
from tests.conftest import cli_command
from tests.test_batch_order import _run_batch, _stray_request, _stray_seen
from tests.test_exec import PLAIN

# In a fresh interpreter: the test process has threads (pytest-xdist), where no helper is forked.
_HELPER_ROUND_TRIP = """
import json, os, sys
from requiem.cas import Cas
cas = Cas(sys.argv[1])
cas.defer_syncs(writer_process=True)
helper = cas._object_writer.pid
digests = [cas.put_bytes(b"object %d" % n).digest for n in range(50)]
cas.sync_deferred()
on_disk = all(os.path.exists(str(cas.object_path(d))) for d in digests)
cas.close()
try:
    os.waitpid(helper, os.WNOHANG)
    reaped = False
except ChildProcessError:
    reaped = True
print(json.dumps({"on_disk": on_disk, "reaped": reaped, "digests": digests,
                  "helper_is_child": helper != os.getpid()}))
"""


def test_small_objects_go_through_a_forked_helper_that_is_reaped(tmp_path: Path) -> None:
    got = subprocess.run([sys.executable, "-c", _HELPER_ROUND_TRIP, str(tmp_path / "cas")],
                         capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parent.parent)
    assert got.returncode == 0, got.stderr
    report = json.loads(got.stdout)
    assert report["on_disk"] and report["reaped"] and report["helper_is_child"]
    cas = Cas(tmp_path / "cas")
    assert all(cas.verify_object(d) is None for d in report["digests"])
    assert list((tmp_path / "cas" / "v2" / "tmp").iterdir()) == []


def test_with_another_thread_running_the_flusher_thread_writes_them(tmp_path: Path) -> None:
    """A fork beside another thread could copy a lock that thread holds: none is forked."""
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        cas = Cas(tmp_path / "cas")
        cas.defer_syncs(writer_process=True)
        assert cas._object_writer is None
        digest = cas.put_bytes(b"written in this process").digest
        cas.sync_deferred()
        assert cas.verify_object(digest) is None
        cas.close()
    finally:
        stop.set()
        other.join()


def test_a_write_the_helper_cannot_make_is_reported_with_its_errno(tmp_path: Path) -> None:
    script = """
import sys
from requiem.cas import Cas
from requiem.errors import RequiemError
cas = Cas(sys.argv[1])
cas.defer_syncs(writer_process=True)
digest = cas.put_bytes(b"its fan-out directory is a file").digest
open(f"{cas.objects_dir}/{digest[:2]}", "w").close()
try:
    cas.sync_deferred()
except RequiemError as exc:
    print(exc.code, exc.detail.get("errno"), cas.contains(digest))
cas.put_bytes(b"the helper goes on after a failure")
cas.sync_deferred()
cas.close()
"""
    got = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cas")],
                         capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parent.parent)
    assert got.returncode == 0, got.stderr
    import errno

    assert got.stdout.split() == ["invalid_request", str(errno.ENOTDIR), "False"]


def _batch(tmp_path: Path, home: Path, requests: list[dict]) -> subprocess.Popen[str]:
    lines = tmp_path / "r.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in requests))
    return subprocess.Popen(cli_command() + ["--home", str(home), "exec", "batch", "--requests",
                                             str(lines), "--out", str(tmp_path / "o.jsonl")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _slow_requests(tmp_path: Path, count: int) -> list[dict]:
    return [{"command": "sh", "argv": ["-c", f"echo {n}; sleep 0.05"],
             "workspace_root": str(tmp_path), "policy": PLAIN} for n in range(count)]


def _wait_for_flushes(home: Path, count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and spool.pending_count(home / "spool") < count:
        time.sleep(0.05)


def _helper_of(batch_pid: int) -> int:
    """The batch's forked helper: a child running the batch's own command line, seen twice
    (a run's child shows it too for the instant between its vfork and its exec)."""
    def copies() -> set[int]:
        # Read each time: just after the batch's exec, its own command line may read empty.
        with open(f"/proc/{batch_pid}/cmdline", "rb") as handle:
            own = handle.read()
        with open(f"/proc/{batch_pid}/task/{batch_pid}/children") as handle:
            children = [int(pid) for pid in handle.read().split()]
        found = set()
        for pid in children:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    if own and handle.read() == own:
                        found.add(pid)
            except FileNotFoundError:
                pass
        return found

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        first = copies()
        time.sleep(0.2)
        lasting = first & copies()
        if len(lasting) == 1:
            return lasting.pop()
    raise AssertionError("no helper process found")


@pytest.mark.slow
def test_ctrl_c_to_the_whole_group_still_records_the_finished_runs(home: Path,
                                                                   tmp_path: Path) -> None:
    """The helper shares the terminal's process group: it ignores the signal, and the batch
    still writes the objects of the runs it finished before their records."""
    batch = _batch(tmp_path, home, _slow_requests(tmp_path, 200))
    _wait_for_flushes(home, 3)
    os.killpg(batch.pid, signal.SIGINT)
    _, stderr = batch.communicate(timeout=60)
    assert batch.returncode == 130 and "Traceback" not in stderr, stderr
    records = spool.pending_records(home / "spool", "execution")
    assert 3 <= len(records) < 200
    cas = Cas(home / "cas")
    assert all(cas.verify_object(r["result_object"]) is None for r in records)


@pytest.mark.slow
def test_a_batch_whose_helper_dies_fails_cleanly_and_keeps_what_it_flushed(
        home: Path, tmp_path: Path) -> None:
    batch = _batch(tmp_path, home, _slow_requests(tmp_path, 200))
    helper = _helper_of(batch.pid)
    _wait_for_flushes(home, 2)
    flushed = spool.pending_records(home / "spool", "execution")
    os.kill(helper, signal.SIGKILL)
    stdout, stderr = batch.communicate(timeout=60)
    assert batch.returncode == 1 and "Traceback" not in stderr, stderr
    error = json.loads(stdout)
    assert error["ok"] is False and error["error"]["code"] == "invalid_request", stdout
    assert "writer process ended" in error["error"]["message"]
    assert not (tmp_path / "o.jsonl").exists()
    records = spool.pending_records(home / "spool", "execution")
    assert len(records) >= len(flushed)
    cas = Cas(home / "cas")
    assert all(cas.verify_object(r["result_object"]) is None for r in records)


def test_a_runs_escapee_is_killed_and_the_helper_is_not(home: Path, tmp_path: Path) -> None:
    """A run's kill_tree takes the orphans re-parented to the batch, never its helper."""
    ws = tmp_path / "ws"
    ws.mkdir()
    after = {"command": "echo", "argv": ["after"], "workspace_root": str(ws), "policy": PLAIN}
    results = _run_batch(home, tmp_path, [_stray_request(ws)] + [after] * 20)
    assert [r["stdout"] for r in results] == ["first"] + ["after\n"] * 20
    pid, _ = _stray_seen(ws)
    assert not Path(f"/proc/{pid}").exists(), "the escapee outlived its run"
    records = spool.pending_records(home / "spool", "execution")
    cas = Cas(home / "cas")
    assert len(records) == 21 and all(cas.verify_object(r["result_object"]) is None
                                      for r in records)
