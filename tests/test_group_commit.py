"""`exec batch` commits its records in groups: nothing lost, nothing collected, failures loud."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from requiem import spool
from requiem.cas import Cas
from tests.conftest import cli_command, result_stored, run_cli
from tests.test_exec import PLAIN


def _batch_file(path: Path, ws: Path, count: int, tag: str = "run") -> Path:
    requests = [{"command": "echo", "argv": [f"{tag} {n}"], "workspace_root": str(ws),
                 "policy": PLAIN} for n in range(count)]
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    return path


def _named_digests(result: dict) -> set[str]:
    """The objects a result names (its own document is in its record's pack: result_stored)."""
    names = {result[k] for k in ("stdout_digest", "stderr_digest", "request_object")
             if result.get(k)}
    return names | {d for d in (result.get("output_digests") or {}).values() if d}


def test_a_batch_records_every_run_and_every_refusal(home: Path, tmp_path: Path, jobs: str) -> None:
    lines = _batch_file(tmp_path / "r.jsonl", tmp_path, 40)
    with open(lines, "a") as handle:
        handle.write("{broken\n" + json.dumps({"argv": ["no command"]}) + "\n")
    out = tmp_path / "o.jsonl"
    got = run_cli("exec", "batch", "--requests", str(lines), "--out", str(out), "--jobs", jobs,
                  home=home)
    assert got.returncode == 1 and got.json["requests"] == 42 and got.json["failed"] == 2
    records = spool.pending_records(home / "spool", "execution")
    assert len(records) == 42
    assert sorted(r["termination_reason"] for r in records).count("refused") == 2
    cas = Cas(home / "cas")
    results = [json.loads(line) for line in out.read_text().splitlines()]
    named = set().union(*(_named_digests(r) for r in results if r.get("ok")))
    assert named and all(cas.verify_object(d) is None for d in named)
    assert {r["result_object"] for r in records if r["result_object"]} == {
        r["result_object"] for r in results if r.get("ok")}
    executed = [r for r in records if r["result_object"]]
    assert all(result_stored(cas, r) for r in executed)
    # Each results line names its pack as its record does: the document can be fetched.
    assert all(r["result_pack"] and result_stored(cas, r) for r in results if r.get("ok"))
    # One pack per group, not one object per run: far fewer packs than runs.
    assert all(r["result_pack"] for r in executed)
    assert len({r["result_pack"] for r in executed}) < len(executed) / 4
    # Temp files made ahead and captures discarded behind are all gone when the batch ends.
    assert list((home / "cas" / "v2" / "tmp").iterdir()) == []


@pytest.mark.slow
def test_a_gc_racing_a_batch_never_deletes_what_its_results_name(home: Path, tmp_path: Path,
                                                                jobs: str) -> None:
    lines = _batch_file(tmp_path / "r.jsonl", tmp_path, 600, tag="racing")
    out = tmp_path / "o.jsonl"
    batch = subprocess.Popen(cli_command() + ["--home", str(home), "exec", "batch", "--requests",
                                              str(lines), "--out", str(out), "--jobs", jobs],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    collections = 0
    while batch.poll() is None or collections < 2:
        gc = subprocess.run(cli_command() + ["--home", str(home), "cas", "gc", "--execute",
                                             "--grace", "0s"], capture_output=True, text=True,
                            timeout=120, check=False)
        assert gc.returncode == 0, gc.stdout + gc.stderr
        collections += 1
        time.sleep(0.05)
    stdout, stderr = batch.communicate(timeout=120)
    assert batch.returncode == 0, stdout + stderr
    cas = Cas(home / "cas")
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == 600
    named = set().union(*(_named_digests(r) for r in results))
    assert [d for d in named if not cas.contains(d) or cas.verify_object(d) is not None] == []
    from requiem.history import open_history
    from requiem.home import Home

    with open_history(Home.resolve(str(home))) as con:  # every record, folded
        records = [{"result_object": digest, "result_pack": pack} for digest, pack in con.execute(
            "SELECT result_object, result_pack FROM executions").fetchall()]
    assert len(records) == 600 and all(result_stored(cas, r) for r in records)


def test_a_batch_packs_its_result_documents_and_the_detail_view_reads_them(
        home: Path, tmp_path: Path) -> None:
    from requiem import analytics
    from requiem.history import open_history
    from requiem.home import Home
    from requiem.result_pack import MAX_PACKED_DOCUMENT

    long_output = {"command": "sh", "argv": ["-c", f"head -c {MAX_PACKED_DOCUMENT} /dev/zero | "
                                                    "tr '\\0' x"],
                   "workspace_root": str(tmp_path), "policy": PLAIN, "request_id": "long"}
    lines = _batch_file(tmp_path / "r.jsonl", tmp_path, 30)
    with open(lines, "a") as handle:
        handle.write(json.dumps(long_output) + "\n")
    got = run_cli("exec", "batch", "--requests", str(lines), "--out", str(tmp_path / "o.jsonl"),
                  home=home)
    assert got.returncode == 0, got.stderr
    records = spool.pending_records(home / "spool", "execution")
    cas = Cas(home / "cas")
    packed = [r for r in records if r["request_id"] != "long"]
    (alone,) = [r for r in records if r["request_id"] == "long"]
    assert len(packed) == 30 and all(r["result_pack"] and result_stored(cas, r) for r in packed)
    assert not any(cas.contains(r["result_object"]) for r in packed)  # no object per run
    # A document too big to pack (its inline output) is an object of its own.
    assert alone["result_pack"] is None and cas.verify_object(alone["result_object"]) is None
    lines = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r.get("result_pack") for r in lines] == [r["result_pack"] for r in packed] + [None]
    with open_history(Home.resolve(str(home))) as con:
        record_ids = dict(con.execute("SELECT request_id, record_id FROM executions").fetchall())
    detail = analytics.execution_detail(home, record_ids[packed[0]["request_id"]])
    assert detail is not None and detail.result.error is None
    assert detail.result_document["result_digest"] == packed[0]["result_digest"]
    assert [e["type"] for e in detail.trace_events] == ["request", "spawn", "exit"]
    assert cas.remove(packed[0]["result_pack"])  # the pack lost: the view says so, loudly
    lost = analytics.execution_detail(home, record_ids[packed[0]["request_id"]])
    assert lost is not None and lost.result.error.startswith("missing_input")
    assert packed[0]["result_pack"] in lost.result.error


def test_a_result_is_found_in_its_pack_by_its_own_digest_and_nowhere_else(tmp_path: Path) -> None:
    from requiem import result_pack
    from requiem.errors import CAS_INTEGRITY_FAILED, RequiemError
    from requiem.hashing import hash_bytes

    cas = Cas(tmp_path / "cas")
    documents = [json.dumps({"run": n}).encode() for n in range(3)]
    pack = cas.put_bytes(result_pack.pack(documents)).digest
    for document in documents:
        assert result_pack.read_result(cas, hash_bytes(document), pack) == document
    alone = cas.put_bytes(b'{"run": 9}').digest  # an object of its own, not in that pack
    assert result_pack.read_result(cas, alone, None) == b'{"run": 9}'
    with pytest.raises(RequiemError) as wrong_pack:
        result_pack.read_result(cas, alone, pack)
    assert wrong_pack.value.code == CAS_INTEGRITY_FAILED
    # A results line names its pack before its own digest's key, found by that digest: a key
    # that merely ends in result_object (an output path) or a string holding the text is not it.
    digest = hash_bytes(documents[0])
    nested = {'x"result_object': digest, "result_object": "f" * 64}
    line = json.dumps({"stdout": '"result_object":"x"', "output_digests": nested,
                       "result_object": digest, "dual_run": {"output_digests": nested}},
                      separators=(",", ":")).encode() + b"\n"
    named = json.loads(result_pack.named_in_line(line, digest, pack))
    assert list(named) == ["stdout", "output_digests", "result_pack", "result_object", "dual_run"]
    assert named["result_pack"] == pack and named["output_digests"] == nested
    assert result_pack.named_in_line(line, digest, None) == line
    assert result_pack.named_in_line(line, None, pack) == line


def test_a_record_encoded_before_its_pack_is_known_is_the_same_record_filled_in() -> None:
    from requiem.hashing import hash_bytes
    from tests.history_fixtures import execution_payload

    pack = "ab" * 32
    payload = execution_payload(1)
    unfilled = spool.Unfilled("execution", payload, "result_pack")
    record_id, body = spool.split_line(unfilled.filled(pack))
    assert record_id == hash_bytes(body)
    record = json.loads(body)
    _, whole = spool.split_line(spool.encode("execution", {**payload, "result_pack": pack})[1])
    expected = json.loads(whole)
    assert record.pop("recorded_at") and expected.pop("recorded_at")
    assert record == expected and list(record) == list(expected)
    # A request that held the stand-in text cannot have it filled in in its place.
    stand_in = spool.Unfilled._placeholder
    tricky = spool.Unfilled("execution", {**payload, "command": stand_in}, "result_pack")
    filled = json.loads(spool.split_line(tricky.filled(pack))[1])
    assert filled["command"] == stand_in and filled["result_pack"] == pack
    with pytest.raises(ValueError):
        unfilled.filled("not a digest")


def test_a_group_too_big_for_one_pack_is_split_and_every_document_found(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from requiem import group_commit, result_pack
    from requiem.cas_guard import write_guard
    from requiem.group_commit import GroupCommit
    from requiem.hashing import hash_bytes

    one = b"x" * (result_pack.MAX_PACK_BYTES - 1)  # with its newline, exactly one pack
    assert result_pack.split([one]) == [[one]] and result_pack.split([one, b"y"]) == [[one], [b"y"]]
    assert result_pack.split([]) == []
    # The flusher lingers until close(): one group of 300.
    monkeypatch.setattr(group_commit, "GROUP_TARGET", 1000)
    monkeypatch.setattr(group_commit, "LINGER_SECONDS", 600.0)
    cas = Cas(tmp_path / "cas")
    group = GroupCommit(cas, tmp_path / "spool")
    documents = [json.dumps({"run": n, "pad": "x" * 15000}).encode() for n in range(300)]
    with write_guard(cas.root):
        for n, document in enumerate(documents):
            group.add("execution", {"request_id": f"r{n}", "result_object": hash_bytes(document),
                                    "result_pack": None}, document=document)
    group.close()
    records = spool.pending_records(tmp_path / "spool", "execution")
    assert len(records) == 300 and all(result_stored(cas, r) for r in records)
    packs = [r["result_pack"] for r in records]
    assert len(set(packs)) == 2 and packs == sorted(packs, key=packs.index)  # in order, split once
    assert all(cas.info(p).original_size <= result_pack.MAX_PACK_BYTES for p in set(packs))
    assert list((tmp_path / "cas" / "v2" / "tmp").iterdir()) == []


def test_a_batch_writes_its_results_as_runs_settle_and_a_killed_one_leaves_no_file(
        home: Path, tmp_path: Path) -> None:
    """Results are not held in memory until the end, and are handed out whole or not at all."""
    import signal

    try:
        os.close(os.open(tmp_path, os.O_TMPFILE | os.O_WRONLY))
    except OSError:
        pytest.skip("this filesystem has no unnamed temp files (O_TMPFILE)")
    requests = [{"command": "true", "workspace_root": str(tmp_path), "policy": PLAIN}] * 400
    requests.append({"command": "sleep", "argv": ["30"], "timeout_ms": 60000,
                     "workspace_root": str(tmp_path), "policy": PLAIN})
    lines = tmp_path / "r.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in requests))
    out = tmp_path / "o.jsonl"
    batch = subprocess.Popen(cli_command() + ["--home", str(home), "exec", "batch", "--requests",
                                              str(lines), "--out", str(out)])
    try:
        written = 0
        deadline = time.monotonic() + 60
        while written == 0 and time.monotonic() < deadline and batch.poll() is None:
            time.sleep(0.1)
            for fd in os.listdir(f"/proc/{batch.pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{batch.pid}/fd/{fd}")
                    if target.startswith(str(tmp_path)) and target.endswith("(deleted)"):
                        written = max(written, os.stat(f"/proc/{batch.pid}/fd/{fd}").st_size)
                except OSError:
                    pass
        assert written > 0, "no results were written while the batch ran"
    finally:
        batch.send_signal(signal.SIGKILL)
        batch.wait(timeout=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "r.jsonl"]


@pytest.mark.parametrize("out", ["no-such-dir/o.jsonl", "a-directory", "a-directory/"])
def test_a_batch_with_nowhere_to_put_its_results_runs_nothing(home: Path, tmp_path: Path,
                                                              jobs: str, out: str) -> None:
    lines = _batch_file(tmp_path / "r.jsonl", tmp_path, 3)
    (tmp_path / "a-directory").mkdir()
    got = run_cli("exec", "batch", "--requests", str(lines), "--out", f"{tmp_path}/{out}",
                  "--jobs", jobs, home=home)
    assert got.returncode != 0 and got.json["error"]["code"] == "quota_exceeded", got.stdout
    assert out in got.json["error"]["message"]
    assert spool.pending_records(home / "spool", "execution") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory", "home", "r.jsonl"]


def test_a_results_file_is_put_in_place_beside_other_batches_temp_files(tmp_path: Path) -> None:
    from requiem.results_file import ResultsFile

    out = tmp_path / "o.jsonl"
    stale = tmp_path / f"o.jsonl.{os.getpid()}.part"  # as earlier code named its temp file
    stale.write_text("left by a batch killed long ago\n")
    results = ResultsFile(str(out))
    results.add(True, b'{"ok":true}\n')
    results.add(False, b'{"ok":false}\n')
    results.write_settled()
    assert results.finish() == {"ok": False, "requests": 2, "succeeded": 1, "failed": 1,
                                "out": str(out)}
    assert out.read_bytes() == b'{"ok":true}\n{"ok":false}\n'
    assert stale.read_text() == "left by a batch killed long ago\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl", stale.name]


@pytest.mark.parametrize("engine", ["requiem", "dual"])
def test_every_results_line_names_the_pack_holding_its_document(home: Path, tmp_path: Path,
                                                               jobs: str, engine: str) -> None:
    lines = _batch_file(tmp_path / "r.jsonl", tmp_path, 5)
    out = tmp_path / "o.jsonl"
    got = run_cli("exec", "batch", "--requests", str(lines), "--out", str(out), "--jobs", jobs,
                  "--engine", engine, home=home)
    assert got.returncode == 0, got.stdout + got.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    cas = Cas(home / "cas")
    assert len(results) == 5 and all(r["result_pack"] and result_stored(cas, r) for r in results)
    assert [cas.read_bytes(r["stdout_digest"]) for r in results] == [
        f"run {n}\n".encode() for n in range(5)]  # in input order


def test_a_short_deadline_in_a_batch_is_watched_as_in_a_single_run(home: Path,
                                                                  tmp_path: Path) -> None:
    """The run behind is not finished while a command with a short timeout runs: finishing
    a large output would leave that deadline unwatched, and the command's result would turn
    on the batch's own work."""
    requests = [{"command": "head", "argv": ["-c", "400000000", "/dev/zero"],
                 "max_output_bytes": 0, "workspace_root": str(tmp_path), "policy": PLAIN},
                {"command": "sleep", "argv": ["0.1"], "timeout_ms": 30,
                 "workspace_root": str(tmp_path), "policy": PLAIN}]
    lines = tmp_path / "r.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in requests))
    out = tmp_path / "o.jsonl"
    got = run_cli("exec", "batch", "--requests", str(lines), "--out", str(out), home=home)
    assert got.returncode == 0 or got.json.get("failed") == 1, got.stdout + got.stderr
    big, short = [json.loads(line) for line in out.read_text().splitlines()]
    assert big["ok"] and big["stdout_bytes"] == 400_000_000
    assert short["termination_reason"] == "timeout", short["termination_reason"]


def test_identical_result_documents_each_get_their_records_pack(tmp_path: Path) -> None:
    """A legacy engine may answer the same bytes twice: each record is named in its own line."""
    from requiem.cas_guard import write_guard
    from requiem.group_commit import GroupCommit
    from requiem.hashing import hash_bytes

    cas = Cas(tmp_path / "cas")
    group = GroupCommit(cas, tmp_path / "spool")
    document = b'{"same":"bytes"}'
    records = [{"request_id": f"r{n}", "result_object": hash_bytes(document), "result_pack": None}
               for n in range(2)]
    with write_guard(cas.root):
        for record in records:
            group.add("execution", record, document=document)
    group.close()
    assert records[0]["result_pack"] and records[1]["result_pack"]
    assert all(result_stored(cas, r) for r in records)


@pytest.mark.slow
def test_a_terminated_batch_still_records_the_runs_it_finished(home: Path, tmp_path: Path,
                                                              jobs: str) -> None:
    import signal

    requests = [{"command": "sh", "argv": ["-c", f"echo {n}; sleep 0.1"],
                 "workspace_root": str(tmp_path), "policy": PLAIN} for n in range(200)]
    lines = tmp_path / "r.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in requests))
    out = tmp_path / "o.jsonl"
    batch = subprocess.Popen(cli_command() + ["--home", str(home), "exec", "batch", "--requests",
                                              str(lines), "--out", str(out), "--jobs", jobs],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and spool.pending_count(home / "spool") < 3:
        time.sleep(0.05)  # a few flushes have happened: the batch is well under way
    batch.send_signal(signal.SIGTERM)
    _, stderr = batch.communicate(timeout=60)
    assert batch.returncode == 130 and "Traceback" not in stderr
    assert not out.exists() and not list(tmp_path.glob("o.jsonl.*"))  # nor its temp file
    records = spool.pending_records(home / "spool", "execution")
    cas = Cas(home / "cas")
    assert 3 <= len(records) < 200
    assert all(result_stored(cas, r) for r in records)
    finished = sorted(int(cas.read_bytes(r["stdout_digest"])) for r in records)
    if jobs == "1":
        assert finished == list(range(len(records)))  # every run that finished, in order
    else:  # workers take lines in turn: one may finish a line while another's is killed
        assert len(set(finished)) == len(finished) and finished[-1] < len(records) + 2


def test_a_history_that_cannot_be_written_fails_the_batch_cleanly(home: Path, tmp_path: Path,
                                                                  jobs: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "spool").write_text("not a directory\n")
    lines = _batch_file(tmp_path / "r.jsonl", tmp_path, 5)
    out = tmp_path / "o.jsonl"
    got = run_cli("exec", "batch", "--requests", str(lines), "--out", str(out), "--jobs", jobs,
                  home=home)
    assert got.returncode != 0
    assert got.json["ok"] is False and got.json["error"]["code"]
    assert "Traceback" not in got.stderr
    assert not out.exists()  # results whose records are not durable are not handed out


def test_objects_of_a_queued_record_stay_guarded_until_it_is_durable(tmp_path: Path) -> None:
    from requiem.cas_guard import write_guard
    from requiem.group_commit import GroupCommit

    cas = Cas(tmp_path / "cas")
    group = GroupCommit(cas, tmp_path / "spool")
    flushing = threading.Event()
    real_sync = cas.sync_deferred

    def held_sync() -> None:  # hold the flusher so the record stays queued while we look
        flushing.wait(30)
        real_sync()

    cas.sync_deferred = held_sync  # type: ignore[method-assign]
    with write_guard(cas.root):
        digest = cas.put_bytes(b"named by a queued record").digest
        group.add("execution", {"stdout_digest": digest})
    collector = os.open(os.path.join(cas.root, "gc.lock"), os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):  # what a GC would need to start deleting
            fcntl.flock(collector, fcntl.LOCK_EX | fcntl.LOCK_NB)
        flushing.set()
        group.close()
        fcntl.flock(collector, fcntl.LOCK_EX | fcntl.LOCK_NB)  # durable: the guard is gone
    finally:
        os.close(collector)
    assert [r["stdout_digest"] for r in spool.pending_records(tmp_path / "spool")] == [digest]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_deferred_objects_are_synced_later_and_hold_no_descriptor_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where syncfs(2) is refused, each object keeps a descriptor for its own fsync."""
    from requiem import cas_sync as cas_module

    monkeypatch.setattr(cas_module, "syncfs_descriptor", lambda objects, tmp: None)
    cas = Cas(tmp_path / "cas")
    cas.defer_syncs()
    before = _open_fds()
    streamed = []
    for n in range(10):
        with cas.writer() as writer:
            writer.write(f"streamed object {n}".encode())
            streamed.append(writer.commit().digest)
    assert _open_fds() == before + 10  # one duplicate descriptor per object awaiting its fsync
    small = [cas.put_bytes(f"object {n}".encode()).digest for n in range(10)]
    assert _open_fds() == before + 10  # small objects wait in memory for the flusher: none
    cas.sync_deferred()
    assert _open_fds() == before
    digests = streamed + small
    assert all(cas.verify_object(d) is None for d in digests)


def test_deferred_objects_are_synced_by_one_syncfs(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from requiem import cas_sync as cas_module

    calls = []
    real = cas_module.syncfs
    monkeypatch.setattr(cas_module, "syncfs", lambda fd: (calls.append(fd), real(fd)))
    cas = Cas(tmp_path / "cas")
    cas.defer_syncs()
    if cas._syncfs_fd is None:
        pytest.skip("syncfs(2) is refused here: objects are fsynced one by one")
    calls.clear()
    before = _open_fds()
    digests = [cas.put_bytes(f"object {n}".encode()).digest for n in range(10)]
    assert _open_fds() == before  # no descriptor held per object
    cas.sync_deferred()
    cas.sync_deferred()  # nothing new: no second sync
    assert calls == [cas._syncfs_fd]
    assert all(cas.verify_object(d) is None for d in digests)
    cas.close()
    assert _open_fds() == before - 1  # the store's own descriptor, closed with it


def test_an_object_is_counted_for_syncfs_once_published(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync between an object's write and its rename would not cover the rename: the
    object is owed a sync from its publication on, so the next flush syncs again."""
    from requiem import cas_sync as cas_module

    cas = Cas(tmp_path / "cas")
    cas.defer_syncs()
    if cas._syncfs_fd is None:
        pytest.skip("syncfs(2) is not used on this filesystem or kernel")
    real_publish = cas._publish
    events = []

    def publish_after_a_flush(temp: str, final: str) -> None:
        cas.sync_deferred()  # the flusher ran between the object's write and its rename
        real_publish(temp, final)
        events.append("renamed")

    monkeypatch.setattr(cas, "_publish", publish_after_a_flush)
    real = cas_module.syncfs
    monkeypatch.setattr(cas_module, "syncfs", lambda fd: (events.append("syncfs"), real(fd)))
    with cas.writer() as writer:
        writer.write(b"renamed after a flush")
        writer.commit()
    cas.sync_deferred()  # the flush that writes the object's record
    assert events[-2:] == ["renamed", "syncfs"], events


def test_syncfs_is_kept_to_filesystems_that_honour_it(tmp_path: Path) -> None:
    from requiem.cas_sync import SYNCFS_FILESYSTEMS, filesystem_type

    kind = filesystem_type(os.stat(tmp_path).st_dev)
    cas = Cas(tmp_path / "cas")
    cas.defer_syncs()
    release = tuple(int(p) for p in os.uname().release.split(".")[:2])
    assert (cas._syncfs_fd is not None) == (kind in SYNCFS_FILESYSTEMS and release >= (5, 8))
    assert filesystem_type(os.stat("/proc").st_dev) == "proc"


def test_a_slow_disk_cannot_run_a_batch_out_of_descriptors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from requiem import cas_sync as cas_module
    from requiem.cas import MAX_DEFERRED

    monkeypatch.setattr(cas_module, "syncfs_descriptor", lambda objects, tmp: None)
    cas = Cas(tmp_path / "cas")
    cas.defer_syncs()
    before = _open_fds()
    for n in range(MAX_DEFERRED + 50):  # no flusher runs: past the cap, puts sync inline
        with cas.writer() as writer:
            writer.write(f"object {n}".encode())
            writer.commit()
    assert _open_fds() == before + MAX_DEFERRED
    cas.sync_deferred()
    assert _open_fds() == before


def _on_disk(cas: Cas, digest: str) -> bool:
    return os.path.exists(os.path.join(cas.objects_dir, digest[:2], digest[2:4], digest))


def test_a_small_object_waits_for_the_flusher_yet_is_found_at_once(tmp_path: Path) -> None:
    """A batch's small objects are written by its flusher, never by the run that puts them;
    the store still answers for them in the meantime, as if they were on disk."""
    cas = Cas(tmp_path / "cas")
    cas.defer_syncs()
    looked_up = cas.put_bytes(b"looked up before the flush").digest
    waiting = cas.put_bytes(b"left to the flush").digest
    assert not _on_disk(cas, looked_up) and not _on_disk(cas, waiting)
    assert cas.contains(looked_up)  # the lookup writes it first
    assert _on_disk(cas, looked_up) and not _on_disk(cas, waiting)
    assert cas.put_bytes(b"left to the flush").digest == waiting  # a second put: one object
    assert cas.read_bytes(waiting) == b"left to the flush"
    late = cas.put_bytes(b"written by the flush").digest
    cas.sync_deferred()
    assert _on_disk(cas, late)
    assert all(cas.verify_object(d) is None for d in (looked_up, waiting, late))
    assert not os.listdir(cas.tmp_dir)


def test_small_objects_waiting_in_memory_are_bounded(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from requiem import cas as cas_module

    monkeypatch.setattr(cas_module, "MAX_UNWRITTEN_BYTES", 3 * (cas_module.HEADER_SIZE + 1000))
    cas = Cas(tmp_path / "cas")
    cas.defer_syncs()
    digests = [cas.put_bytes(bytes([n]) * 1000).digest for n in range(6)]
    assert [_on_disk(cas, d) for d in digests] == [False] * 3 + [True] * 3
    cas.sync_deferred()
    assert all(_on_disk(cas, d) for d in digests)
    assert cas._unwritten_bytes == 0


def test_a_small_object_the_flush_cannot_write_fails_the_flush_and_stays_waiting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from requiem import cas as cas_module
    from requiem.errors import RequiemError

    cas = Cas(tmp_path / "cas")
    cas.defer_syncs()
    digest = cas.put_bytes(b"not written at the first flush").digest

    def full(*args: object, **kwargs: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cas_module, "pwrite_all", full)
    with pytest.raises(RequiemError) as failed:
        cas.sync_deferred()
    assert failed.value.code == "quota_exceeded"
    monkeypatch.undo()
    assert not _on_disk(cas, digest) and not os.listdir(cas.tmp_dir)
    cas.sync_deferred()  # the next flush, before any record names it
    assert cas.verify_object(digest) is None
    cas.close()


@pytest.mark.parametrize("damage", ["empty", "short"])
def test_an_object_a_power_cut_left_damaged_is_rewritten_by_the_next_put(
        tmp_path: Path, damage: str) -> None:
    cas = Cas(tmp_path / "cas")
    cas.defer_syncs()
    data = b"published before its fsync\n" * 100
    digest = cas.put_bytes(data).digest
    path = cas.object_path(digest)
    with open(path, "r+b") as handle:  # what a lost writeback leaves behind
        handle.truncate(0 if damage == "empty" else path.stat().st_size - 7)
    fresh = Cas(tmp_path / "cas")
    assert fresh.put_bytes(data).digest == digest
    assert fresh.read_bytes(digest) == data
    # The same damage under a store that remembers the object: the size check catches it.
    with open(path, "r+b") as handle:
        handle.truncate(10)
    assert fresh.put_bytes(data).digest == digest and fresh.read_bytes(digest) == data


def _eventfds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"
        except OSError:
            pass
    return count


def test_a_closed_group_commit_refuses_records_and_closes_again_quietly(tmp_path: Path) -> None:
    from requiem.cas_guard import write_guard
    from requiem.group_commit import GroupCommit

    before = _eventfds()
    cas = Cas(tmp_path / "cas")
    group = GroupCommit(cas, tmp_path / "spool")
    assert _eventfds() == before + 2
    with write_guard(cas.root):
        group.add("execution", {"request_id": "in time"})
    deadline = time.monotonic() + 30
    while not group._ended:  # a close() interrupted once it had waited for the flusher's end
        with group._lock:
            group._closing = True
            os.eventfd_write(group._work, 1)
        time.sleep(0.01)
        assert time.monotonic() < deadline
    assert group._running.acquire(timeout=30)  # ... and kept the lock it waited on
    group.close()  # neither hangs on that lock
    group.close()  # nor fails the second time
    with write_guard(cas.root), pytest.raises(RuntimeError, match="after the group commit closed"):
        group.add("execution", {"request_id": "too late"})
    assert [r["request_id"] for r in spool.pending_records(tmp_path / "spool", "execution")] == [
        "in time"]
    assert _eventfds() == before and group._work == group._room == -1


_CLOSE_IN_A_FORKED_CHILD = """
import json, os, signal, sys, time
from requiem import spool
from requiem.cas import Cas
from requiem.cas_guard import write_guard
from requiem.group_commit import GroupCommit
cas = Cas(sys.argv[1])
group = GroupCommit(cas, sys.argv[1] + "-spool")
with write_guard(cas.root):
    group.add("execution", {"request_id": "before the fork"})
deadline = time.monotonic() + 30
while not cas._spare_temps and time.monotonic() < deadline:
    time.sleep(0.01)  # the flusher has made temp files ahead: the child must not remove them
temps = sorted(os.listdir(cas.tmp_dir))
pid = os.fork()
if pid == 0:  # the parent's state without its flusher: close() leaves the parent's alone
    signal.alarm(20)
    code = 1
    try:
        group.close()
        try:
            group.add("execution", {"request_id": "in the child"})
        except RuntimeError:
            code = 0  # refused, not queued for nobody
    finally:
        os._exit(code)
child = os.waitpid(pid, 0)[1]
kept = sorted(os.listdir(cas.tmp_dir)) == temps and bool(temps)
with write_guard(cas.root):
    group.add("execution", {"request_id": "after the fork"})
    large = cas.put_bytes(os.urandom(1 << 20)).digest
group.close()
print(json.dumps({"child": child, "temps_kept": kept, "large": cas.verify_object(large) is None,
                  "records": [r["request_id"] for r in spool.pending_records(
                      sys.argv[1] + "-spool", "execution")]}))
"""


def test_a_group_commit_forked_with_its_process_is_left_to_the_parent(tmp_path: Path) -> None:
    import sys

    got = subprocess.run([sys.executable, "-c", _CLOSE_IN_A_FORKED_CHILD, str(tmp_path / "cas")],
                         capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parent.parent)
    assert got.returncode == 0, got.stderr
    report = json.loads(got.stdout)
    assert report == {"child": 0, "temps_kept": True, "large": True,
                      "records": ["before the fork", "after the fork"]}, report


def test_a_flusher_failing_between_groups_is_reported_not_silent(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from requiem.cas_guard import write_guard
    from requiem.group_commit import GroupCommit

    real_housekeep = Cas.housekeep
    calls: list[int] = []

    def housekeep_failing_the_second_time(self: Cas, spare: int = 32) -> None:
        calls.append(spare)
        if len(calls) == 2:  # after the first group was written
            raise RuntimeError("housekeeping failed")
        real_housekeep(self, spare)

    monkeypatch.setattr(Cas, "housekeep", housekeep_failing_the_second_time)
    cas = Cas(tmp_path / "cas")
    group = GroupCommit(cas, tmp_path / "spool")
    with write_guard(cas.root):
        group.add("execution", {"request_id": "first"})
    deadline = time.monotonic() + 30
    while group._error is None:
        assert time.monotonic() < deadline, "the flusher neither failed nor said so"
        time.sleep(0.005)
    with write_guard(cas.root), pytest.raises(RuntimeError, match="housekeeping"):
        group.add("execution", {"request_id": "second"})  # refused, not queued forever
    with pytest.raises(RuntimeError, match="housekeeping"):
        group.close()
    assert [r["request_id"] for r in spool.pending_records(tmp_path / "spool", "execution")] == [
        "first"]
    # What it held is let go: the GC guard (a collector gets in), the store's temp files.
    assert group._guard is None
    lock = os.open(tmp_path / "cas" / "gc.lock", os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while a hold is left
    finally:
        os.close(lock)
    assert list((tmp_path / "cas" / "v2" / "tmp").iterdir()) == []
