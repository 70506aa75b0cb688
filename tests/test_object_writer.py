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
from tests.conftest import cli_command, result_stored
from tests.test_batch_order import _run_batch, _stray_request, _stray_seen
from tests.test_exec import PLAIN
from tests.test_group_commit import _on_disk

# In a fresh interpreter: the test process has threads (pytest-xdist), where no helper is forked.
_HELPER_ROUND_TRIP = """
import json, os, sys
from requiem.cas import Cas
cas = Cas(sys.argv[1])
cas.defer_syncs(writer_process=True)
helper = cas._object_writer.pid
digests = [cas.put_bytes(b"object %d" % n).digest for n in range(50)]
cas.sync_deferred()  # once it has answered, the helper has set itself up
nice = os.getpriority(os.PRIO_PROCESS, helper) - os.getpriority(os.PRIO_PROCESS, 0)
on_disk = all(os.path.exists(str(cas.object_path(d))) for d in digests)
cas.close()
try:
    os.waitpid(helper, os.WNOHANG)
    reaped = False
except ChildProcessError:
    reaped = True
print(json.dumps({"on_disk": on_disk, "reaped": reaped, "digests": digests,
                  "helper_is_child": helper != os.getpid(), "nice": nice}))
"""


def _run_script(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """A script in a fresh interpreter (one thread: a helper can be forked), given a store path."""
    got = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cas")],
                         capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parent.parent)
    assert got.returncode == 0, got.stderr
    return got


def test_small_objects_go_through_a_forked_helper_that_is_reaped(tmp_path: Path) -> None:
    report = json.loads(_run_script(_HELPER_ROUND_TRIP, tmp_path).stdout)
    assert report["on_disk"] and report["reaped"] and report["helper_is_child"]
    assert report["nice"] == min(19, 19 - os.getpriority(os.PRIO_PROCESS, 0))  # yields to runs
    cas = Cas(tmp_path / "cas")
    assert all(cas.verify_object(d) is None for d in report["digests"])
    assert list((tmp_path / "cas" / "v2" / "tmp").iterdir()) == []


_HELPER_DEAD_AT_BIRTH = """
import json, os, sys
from requiem import object_writer
from requiem.cas import Cas
object_writer._keep_only = lambda *keep: os._exit(3)  # the helper ends before it is set up
cas = Cas(sys.argv[1])
cas.defer_syncs(writer_process=True)
helper = cas._object_writer.pid
digests = [cas.put_bytes(b"object %d" % n).digest for n in range(5)]
cas.sync_deferred()
try:
    os.waitpid(helper, os.WNOHANG)
    reaped = False
except ChildProcessError:
    reaped = True
print(json.dumps({"digests": digests, "dropped": cas._object_writer is None, "reaped": reaped}))
"""


def test_a_helper_that_never_set_itself_up_leaves_the_writing_to_the_flusher(
        tmp_path: Path) -> None:
    """The batch does not wait for its helper to start; one that died first is no helper."""
    report = json.loads(_run_script(_HELPER_DEAD_AT_BIRTH, tmp_path).stdout)
    assert report["dropped"] and report["reaped"]
    cas = Cas(tmp_path / "cas")
    assert all(cas.verify_object(d) is None for d in report["digests"])


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
import os
digest = cas.put_bytes(b"its fan-out directory is a file").digest
blocker = f"{cas.objects_dir}/{digest[:2]}"
open(blocker, "w").close()
try:
    cas.sync_deferred()
except RequiemError as exc:
    print(exc.code, exc.detail.get("errno"),
          os.path.exists(os.path.join(cas.objects_dir, digest[:2], digest[2:4], digest)))
os.unlink(blocker)
later = cas.put_bytes(b"the helper goes on after a failure").digest
cas.sync_deferred()  # the failed object waited: it is written now, with the later one
print(cas.verify_object(digest), cas.verify_object(later))
cas.close()
"""
    got = _run_script(script, tmp_path)
    import errno

    assert got.stdout.split() == ["invalid_request", str(errno.ENOTDIR), "False", "None", "None"]


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
    assert all(result_stored(cas, r) for r in records)


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
    assert all(result_stored(cas, r) for r in records)


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
    assert len(records) == 21 and all(result_stored(cas, r)
                                      for r in records)


_SYNCFS_AFTER_HELPER = """
import json, os, sys
from requiem import cas_sync
from requiem.cas import Cas
cas = Cas(sys.argv[1])
cas.defer_syncs(writer_process=True)
if cas._syncfs_fd is None or cas._object_writer is None:
    print(json.dumps({"skip": "syncfs or the helper is unavailable here"}))
    sys.exit(0)
digest = cas.put_bytes(b"written by the helper, then synced").digest
path = os.path.join(cas.objects_dir, digest[:2], digest[2:4], digest)
events = []
real = cas_sync.syncfs
cas_sync.syncfs = lambda fd: (events.append(["syncfs", os.path.exists(path)]), real(fd))
cas.sync_deferred()
cas.close()
print(json.dumps({"events": events}))
"""


def test_objects_the_helper_wrote_are_covered_by_the_flushs_syncfs(tmp_path: Path) -> None:
    """The records' fdatasync may follow only a sync that covers their objects' names."""
    report = json.loads(_run_script(_SYNCFS_AFTER_HELPER, tmp_path).stdout)
    if "skip" in report:
        pytest.skip(report["skip"])
    assert report["events"] == [["syncfs", True]]


def test_a_job_cut_off_by_the_batchs_death_is_not_published(tmp_path: Path) -> None:
    from requiem.object_writer import _JOB, _serve

    final = tmp_path / "objects" / "cut-off"
    final.parent.mkdir()
    path = os.fsencode(str(final))
    jobs_read, jobs_write = os.pipe()
    answers_read, answers_write = os.pipe()
    os.write(jobs_write, _JOB.pack(len(path), 60000) + path + b"only the start" * 10)
    os.close(jobs_write)  # the batch died mid-write
    _serve(jobs_read, answers_write, str(tmp_path / "tmp"), fsync_each=False)
    os.close(answers_write)
    assert os.read(answers_read, 100) == b""
    os.close(answers_read)
    assert not final.exists() and list((tmp_path / "tmp").glob("*")) == []


@pytest.mark.parametrize("failure", ["full disk", "interrupt"])
def test_a_waiting_object_a_lookup_fails_to_write_stays_waiting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    """Else the flush would make durable a record naming an object that is on no disk."""
    import errno

    from requiem import cas as cas_module
    from requiem.errors import RequiemError

    cas = Cas(tmp_path / "cas")
    cas.defer_syncs()
    digest = cas.put_bytes(b"named by a queued record").digest

    def fail(*args: object) -> None:
        if failure == "interrupt":
            raise KeyboardInterrupt
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cas_module, "publish", fail)
    with pytest.raises(KeyboardInterrupt if failure == "interrupt" else RequiemError):
        cas.read_bytes(digest)  # a read needs the file: the lookup writes it first
    monkeypatch.undo()
    assert not _on_disk(cas, digest) and list(Path(cas.tmp_dir).iterdir()) == []
    cas.sync_deferred()  # the flush before the record's
    assert cas.verify_object(digest) is None
    cas.close()


def test_a_put_of_bytes_already_waiting_leaves_them_to_the_flusher(tmp_path: Path) -> None:
    """A batch of one request repeated puts the same request object every run."""
    cas = Cas(tmp_path / "cas")
    cas.defer_syncs()
    first = cas.put_bytes(b"the same request object")
    again = cas.put_bytes(b"the same request object")
    assert again.digest == first.digest and not _on_disk(cas, first.digest)
    cas.sync_deferred()
    assert _on_disk(cas, first.digest)
    cas.close()


def test_a_put_after_the_group_commit_closed_is_written_at_once(tmp_path: Path) -> None:
    cas = Cas(tmp_path / "cas")
    cas.defer_syncs()
    cas.close()
    digest = cas.put_bytes(b"after the close").digest
    assert _on_disk(cas, digest)


_WITH_STDIO_CLOSED = """
import os, sys
from requiem import cas_sync
from requiem.cas import Cas
cas_sync.syncfs_descriptor = lambda objects, tmp: None  # leaves descriptor 0 free for a pipe
os.close(0)
os.close(1)
cas = Cas(sys.argv[1])
cas.defer_syncs(writer_process=True)
digest = cas.put_bytes(b"written with stdin and stdout closed").digest
cas.sync_deferred()
print(cas._object_writer is not None, cas.verify_object(digest), file=sys.stderr)
cas.close()
"""


def test_a_batch_started_with_stdin_and_stdout_closed_still_writes_through_its_helper(
        tmp_path: Path) -> None:
    """The helper points 0 and 1 at /dev/null: its pipes must not be there."""
    got = _run_script(_WITH_STDIO_CLOSED, tmp_path)
    assert got.stderr.split() == ["True", "None"]
