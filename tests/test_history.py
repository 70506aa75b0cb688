"""The history: folding, idempotency, quarantine, schema versions, busy holds, ls/show/export."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from requiem import hashing, history_fold, spool
from requiem.history import open_history, record_cas_verify
from requiem.history_schema import SCHEMA_VERSION
from requiem.home import Home
from tests.history_fixtures import dual_run_payload, execution_payload, write_executions


def _count(home: Path, table: str) -> int:
    with open_history(Home.resolve(str(home))) as con:
        return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def _pending(home: Path) -> int:
    return spool.pending_count(home / "spool")


def test_ingest_folds_every_kind_once(cli, home: Path) -> None:
    spool_dir = home / "spool"
    write_executions(spool_dir, 12)
    spool.write_record(spool_dir, "dual_run", dual_run_payload(1, ["digest_mismatch",
                                                                    "timing_diff"]))
    spool.write_record(spool_dir, "dual_run", dual_run_payload(2))
    record_cas_verify(Home.resolve(str(home)), {"ok": False, "mode": "sample", "objects_total": 9,
                                                "objects_checked": 3, "bytes_checked": 120,
                                                "corrupt": [{"digest": "a" * 64,
                                                             "reason": "digest mismatch"}]})
    spool.write_record(spool_dir, "cas_put", {"digest": "b" * 64, "encoding": "zstd",
                                              "original_size": 10, "stored_size": 7,
                                              "existed": False})
    spool.write_record(spool_dir, "bench", {"name": "exec", "p50_ms": 1.5})
    got = cli("history", "ingest")
    assert got.returncode == 0, got.stdout
    assert got.json["folded"] == 17 and got.json["duplicates"] == 0
    assert got.json["quarantined"] == 0 and got.json["schema_version"] == SCHEMA_VERSION
    assert _pending(home) == 0
    with open_history(Home.resolve(str(home))) as con:
        counts = dict(con.execute(
            "SELECT 'executions', count(*) FROM executions UNION ALL "
            "SELECT 'dual_runs', count(*) FROM dual_runs UNION ALL "
            "SELECT 'mismatches', count(*) FROM dual_run_mismatches UNION ALL "
            "SELECT 'verify', count(*) FROM cas_verify_runs UNION ALL "
            "SELECT 'events', count(*) FROM cas_events UNION ALL "
            "SELECT 'bench', count(*) FROM bench_runs").fetchall())
        mismatches = con.execute("SELECT category, severity FROM dual_run_mismatches "
                                 "ORDER BY category").fetchall()
        verify = con.execute("SELECT mode, corrupt_count FROM cas_verify_runs").fetchall()
        row = con.execute("SELECT output_digests, sandbox_enforced, confidence_level, "
                          "max_rss_kib, start_timestamp FROM executions "
                          "WHERE request_id = 'req-0'").fetchall()[0]
    assert counts == {"executions": 12, "dual_runs": 2, "mismatches": 2, "verify": 1,
                      "events": 1, "bench": 1}
    assert mismatches == [("digest_mismatch", "critical"), ("timing_diff", "medium")]
    assert verify == [("sample", 1)]
    assert list(row[0]) == ["out/result.txt"] and row[1] == ["rlimits", "workspace_confinement"]
    assert row[2] == "medium" and row[3] == 3200 and row[4].year == 2026
    again = cli("history", "ingest")
    assert again.json["folded"] == 0 and _count(home, "executions") == 12


def test_a_record_folded_twice_is_counted_once(cli, home: Path, tmp_path: Path) -> None:
    spool_dir = home / "spool"
    write_executions(spool_dir, 3)
    saved = tmp_path / "saved"
    shutil.copytree(spool_dir, saved)
    assert cli("history", "ingest").json["folded"] == 3
    # As after a crash between the commit and the deletes: the files come back.
    for path in saved.iterdir():
        shutil.copy(path, spool_dir / path.name)
    got = cli("history", "ingest").json
    assert (got["folded"], got["duplicates"]) == (0, 3)
    assert _count(home, "executions") == 3 and _pending(home) == 0


def _body_of(home: Path, record_id: str) -> bytes:
    """The canonical bytes of a spooled record, as a pre-segment spool file held them."""
    segment = home / "spool" / spool.active_name("execution")
    found = [split for split in map(spool.split_line, segment.read_bytes().splitlines())
             if split and split[0] == record_id]
    return found[0][1]


def test_legacy_record_files_fold_and_corrupt_ones_are_quarantined(cli, home: Path) -> None:
    spool_dir = home / "spool"
    write_executions(spool_dir, 5)
    good = spool.write_record(spool_dir, "execution", execution_payload(99))
    body = _body_of(home, good)
    (spool_dir / f"2026-03-01_execution_{hashing.hash_bytes(body)}.json").write_bytes(body)
    fake_id = "f" * 64
    schema = b'"schema":%d' % spool.RECORD_SCHEMA
    bad = {
        f"2026-03-01_execution_{'1' * 64}.json": body[: len(body) // 2],  # truncated
        f"2026-03-01_execution_{'2' * 64}.json": b"this is not JSON",
        f"2026-03-01_execution_{'3' * 64}.json": body.replace(schema, b'"schema":7'),
        f"2026-03-01_dual_run_{'4' * 64}.json": body,  # the name says another kind
        f"2026-03-01_execution_{'5' * 64}.json": b'{"kind":"execution","x":"\xff\xfe"}',
        f"2026-03-01_mystery_{fake_id}.json": body.replace(b'"execution"', b'"mystery"'),
        "not-a-record.json": body,
    }
    for name, content in bad.items():
        (spool_dir / name).write_bytes(content)
    got = cli("history", "ingest")
    assert got.returncode == 0, got.stdout
    assert (got.json["folded"], got.json["quarantined"]) == (6, len(bad))
    assert got.json["duplicates"] == 1  # the legacy copy of a record also in a segment
    assert "quarantined spool record" in got.stderr and "not JSON" in got.stderr
    assert sorted(p.name for p in (spool_dir / "quarantine").iterdir()) == sorted(bad)
    assert _pending(home) == 0 and _count(home, "executions") == 6
    doctor = cli("doctor").json
    assert doctor["history"]["quarantined"] == len(bad)
    warning = next(w for w in doctor["warnings"] if w["id"] == "spool_quarantine")
    assert "quarantine" in warning["command"]


def test_a_history_from_a_newer_schema_is_refused_and_the_spool_kept(cli, home: Path) -> None:
    write_executions(home / "spool", 1)
    assert cli("history", "ingest").returncode == 0
    with duckdb.connect(str(home / "history.duckdb")) as con:
        con.execute("INSERT INTO schema_migrations VALUES (?, 'from the future', now())",
                    [SCHEMA_VERSION + 1])
    write_executions(home / "spool", 2, start=10)
    got = cli("history", "ls")
    assert got.returncode == 1
    error = got.json["error"]
    assert error["code"] == "invalid_request" and error["reason"] == "history_schema_newer"
    assert "newer than this Requiem supports" in error["message"]
    assert error["history_schema_version"] == SCHEMA_VERSION + 1
    assert _pending(home) == 2  # nothing was consumed by a fold that could not happen
    doctor = cli("doctor")
    assert doctor.returncode == 1
    assert [b["id"] for b in doctor.json["blockers"]] == ["history_schema_newer"]


HOLDER = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(30)
""")

FOREIGN = textwrap.dedent("""
    import duckdb, sys, time
    con = duckdb.connect(sys.argv[1])
    print("held", flush=True)
    time.sleep(30)
""")


@pytest.mark.parametrize("holder", ["lock_file", "foreign_duckdb"])
def test_a_busy_history_is_history_busy_not_a_duckdb_error(cli, home: Path, holder: str) -> None:
    (home / "config.json").write_text(json.dumps({"config_version": 1,
                                                  "history": {"lock_timeout_s": 0.4}}))
    write_executions(home / "spool", 1)
    assert cli("history", "ingest").returncode == 0
    script, target = ((HOLDER, home / "history.duckdb.lock") if holder == "lock_file"
                      else (FOREIGN, home / "history.duckdb"))
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        got = cli("history", "ls")
    finally:
        proc.kill()
        proc.wait()
    assert got.returncode == 1
    assert got.json["error"]["code"] == "history_busy"
    assert "Could not set lock" not in got.stdout + got.stderr
    assert cli("history", "ls").returncode == 0


def test_ls_filters_and_show_finds_records(cli, home: Path) -> None:
    spool_dir = home / "spool"
    for n, (engine, ok) in enumerate([("requiem", True), ("rust", False), ("rust", True),
                                      ("requiem", False)]):
        spool.write_record(spool_dir, "execution", execution_payload(n, engine=engine, ok=ok))
    spool.write_record(spool_dir, "dual_run", dual_run_payload(1, ["stdout_mismatch"]))
    listed = cli("history", "ls", "--limit", "3").json
    assert listed["total"] == 4 and listed["count"] == 3
    times = [e["recorded_at"] for e in listed["executions"]]
    assert times == sorted(times, reverse=True) and all(t.endswith("Z") for t in times)
    rust = cli("history", "ls", "--engine", "rust").json["executions"]
    assert {e["engine"] for e in rust} == {"rust"} and len(rust) == 2
    failed = cli("history", "ls", "--failed").json["executions"]
    assert {e["request_id"] for e in failed} == {"req-1", "req-3"}
    record_id = rust[0]["record_id"]
    shown = cli("history", "show", record_id[:12]).json
    assert shown["count"] == 1 and shown["records"][0]["record_id"] == record_id
    assert shown["records"][0]["kind"] == "execution"
    by_request = cli("history", "show", "req-1").json["records"]
    assert [r["kind"] for r in by_request] == ["execution", "dual_run"]
    assert by_request[1]["diff"] == {"stdout_mismatch": {"primary": "a", "secondary": "b"}}
    missing = cli("history", "show", "no-such-request")
    assert missing.returncode == 1 and missing.json["error"]["code"] == "invalid_request"


def test_export_parquet_is_hive_partitioned_and_readable(cli, home: Path, tmp_path: Path) -> None:
    import polars as pl

    write_executions(home / "spool", 20)
    spool.write_record(home / "spool", "dual_run", dual_run_payload(3, ["sandbox_diff"]))
    out = tmp_path / "export"
    got = cli("history", "export", "--parquet", str(out))
    assert got.returncode == 0 and got.json["partitioning"] == "hive"
    assert got.json["tables"]["executions"]["rows"] == 20
    days = [p.name for p in (out / "executions").iterdir()]
    assert days and all(d.startswith("day=") for d in days)
    glob = str(out / "executions" / "*" / "*.parquet")
    with duckdb.connect() as con:
        rows, engines = con.execute(f"SELECT count(*), count(DISTINCT engine) FROM "
                                    f"read_parquet('{glob}', hive_partitioning = true)"
                                    ).fetchall()[0]
    assert (rows, engines) == (20, 3)
    frame = pl.read_parquet(str(out / "dual_runs" / "**" / "*.parquet"), hive_partitioning=True)
    assert frame["diff"].dtype == pl.String and frame["categories"][0].to_list() == ["sandbox_diff"]
    again = cli("history", "export", "--parquet", str(out))  # replaces, never duplicates
    assert again.returncode == 0
    assert pl.read_parquet(glob, hive_partitioning=True).height == 20


def test_read_only_holds_create_the_database_and_skip_the_fold(home: Path) -> None:
    write_executions(home / "spool", 2)
    with open_history(Home.resolve(str(home)), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM executions").fetchall() == [(0,)]
    assert _pending(home) == 2
    assert _count(home, "executions") == 2


def test_history_commands_never_print_a_traceback(cli, home: Path) -> None:
    for argv in (["history", "ls"], ["history", "show", "abc"], ["history", "ingest"]):
        got = cli(*argv)
        assert "Traceback" not in got.stderr
        json.loads(got.stdout)
    assert not os.path.exists(home / "spool" / "quarantine")


def test_a_backlog_folds_in_batches(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import requiem.history as history

    holds = []
    real_hold = history._hold

    def counted(place, exclusive):
        holds.append(exclusive)
        return real_hold(place, exclusive)

    monkeypatch.setattr(history, "BATCH_BYTES", 8 << 10)
    monkeypatch.setattr(spool, "SEGMENT_BYTES", 4 << 10)  # writers seal every ~3 records
    monkeypatch.setattr(history, "_hold", counted)
    write_executions(home / "spool", 30)
    assert len(spool.segment_names(home / "spool")) >= 8
    (home / "spool" / f"2026-03-01_execution_{'9' * 64}.json").write_bytes(b"{")
    place = Home.resolve(str(home))
    assert history.ingest(place) == {"folded": 30, "duplicates": 0, "quarantined": 1}
    assert len(holds) >= 3  # the backlog took several holds, so other consumers got turns
    write_executions(home / "spool", 17, start=100)
    with open_history(place) as con:  # more than one batch: the rest folds before the block
        assert con.execute("SELECT count(*) FROM executions").fetchall() == [(47,)]
    assert _pending(home) == 0


def _segment(home: Path, kind: str = "execution") -> Path:
    return home / "spool" / spool.active_name(kind)


def test_a_record_from_before_result_packs_still_folds(cli, home: Path) -> None:
    """Spooled by a Requiem whose records had no result_pack: it folds, the pack as NULL."""
    payload = execution_payload(1)
    del payload["result_pack"]
    body = json.dumps({"kind": "execution", "schema": 1, "recorded_at": "2026-03-01T10:00:00Z",
                       **payload}, separators=(",", ":")).encode()
    spool_dir = home / "spool"
    spool_dir.mkdir(parents=True, exist_ok=True)
    _segment(home).write_bytes(spool.line_of(hashing.hash_bytes(body), body))
    got = cli("history", "ingest")
    assert got.returncode == 0 and (got.json["folded"], got.json["quarantined"]) == (1, 0)
    with open_history(Home.resolve(str(home)), read_only=True) as con:
        assert con.execute("SELECT request_id, result_pack FROM executions").fetchall() == [
            ("req-1", None)]


def test_bad_lines_in_a_segment_are_quarantined_and_the_rest_folds(cli, home: Path) -> None:
    write_executions(home / "spool", 3)
    line = _segment(home).read_bytes().splitlines(keepends=True)[0]
    record_id, body = spool.split_line(line)
    assert hashing.hash_bytes(body) == record_id  # the id in a line is BLAKE3 of its record
    bad = [b"this is not JSON\n",
           line.replace(b'"schema":%d' % spool.RECORD_SCHEMA, b'"schema":7'),
           line.replace(b'"kind":"execution"', b'"kind":"dual_run"'),
           line.replace(record_id.encode(), b"x" * 12),
           line.replace(b'"command":"', b'"command":"\xff\xfe')]
    with open(_segment(home), "ab") as handle:
        handle.write(b"".join(bad))
    write_executions(home / "spool", 2, start=50)
    got = cli("history", "ingest")
    assert got.returncode == 0, got.stdout
    assert (got.json["folded"], got.json["quarantined"]) == (5, len(bad))
    assert "not JSON" in got.stderr and "wrong schema" in got.stderr
    kept = sorted((home / "spool" / "quarantine").iterdir())
    assert sorted(p.read_bytes() + b"\n" for p in kept) == sorted(bad)
    assert _pending(home) == 0 and _count(home, "executions") == 5
    assert cli("doctor").json["history"]["quarantined"] == len(bad)


KILLED_WRITER = textwrap.dedent("""
    import fcntl, os, signal, sys
    from pathlib import Path
    from requiem import spool
    from tests.history_fixtures import execution_payload

    path = Path(sys.argv[1]) / spool.active_name("execution")
    _, line = spool.encode("execution", execution_payload(999))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    fcntl.flock(fd, fcntl.LOCK_SH)
    os.write(fd, line[: len(line) // 2])  # as if the kernel stopped the write here
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("followed", [True, False], ids=["then_more_writes", "last_line"])
def test_a_writer_killed_mid_append_is_quarantined_and_the_rest_folds(
        cli, home: Path, followed: bool) -> None:
    write_executions(home / "spool", 3)
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(home / "spool")],
                            cwd=Path(__file__).resolve().parent.parent, check=False)
    assert killed.returncode == -9
    if followed:  # the next writer ends the torn line first, so its own record stays whole
        write_executions(home / "spool", 2, start=10)
    got = cli("history", "ingest")
    assert got.returncode == 0, got.stdout
    assert (got.json["folded"], got.json["quarantined"]) == (5 if followed else 3, 1)
    assert ("torn last line" in got.stderr) is not followed
    assert _count(home, "executions") == (5 if followed else 3) and _pending(home) == 0


def test_a_record_appended_right_after_a_killed_writers_fragment_still_folds(
        cli, home: Path) -> None:
    # The innocent writer checked the tail before the killed one's partial write landed, so
    # its whole line follows the fragment on the same line.
    write_executions(home / "spool", 2)
    _, torn = spool.encode("execution", execution_payload(998))
    _, innocent = spool.encode("execution", execution_payload(999))
    with open(home / "spool" / spool.active_name("execution"), "ab") as segment:
        segment.write(torn[: len(torn) // 3] + innocent)
    got = cli("history", "ingest")
    assert got.returncode == 0, got.stdout
    assert (got.json["folded"], got.json["quarantined"]) == (3, 1)
    assert "torn fragment" in got.stderr
    assert _count(home, "executions") == 3 and _pending(home) == 0


def test_a_whole_record_that_names_an_output_id_is_never_split(cli, home: Path) -> None:
    # An output called "id" puts {"id":" inside the record: only a torn line may be cut there.
    spool.write_record(home / "spool", "execution",
                       execution_payload(1, outputs={"id": "a" * 64}))
    with open(home / "spool" / spool.active_name("execution"), "ab") as segment:
        segment.write(b"not a record\n")  # sends the segment down the careful path
    got = cli("history", "ingest")
    assert got.returncode == 0, got.stdout
    assert (got.json["folded"], got.json["quarantined"]) == (1, 1)
    assert "torn fragment" not in got.stderr


def test_a_crash_after_commit_before_unlink_folds_nothing_twice(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import requiem.history as history

    write_executions(home / "spool", 4)
    spool.write_record(home / "spool", "dual_run", dual_run_payload(1, ["timing_diff"]))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed between the commit and the unlink")

    monkeypatch.setattr(history_fold, "_settle", crash)
    place = Home.resolve(str(home))
    with pytest.raises(KeyboardInterrupt):
        history.ingest(place)
    monkeypatch.undo()
    assert all(n.startswith("folding.") for n in spool.segment_names(home / "spool"))
    assert history.ingest(place) == {"folded": 0, "duplicates": 5, "quarantined": 0}
    assert _count(home, "executions") == 4 and _count(home, "dual_run_mismatches") == 1
    assert _pending(home) == 0


def test_write_records_appends_a_group_in_one_go(home: Path) -> None:
    records = [("execution", execution_payload(n)) for n in range(40)]
    records.append(("dual_run", dual_run_payload(1)))
    ids = spool.write_records(home / "spool", records)
    assert len(set(ids)) == 41
    assert sorted(spool.segment_names(home / "spool")) == [spool.active_name("dual_run"),
                                                           spool.active_name("execution")]
    pending = spool.pending_records(home / "spool", "execution")
    assert [r["request_id"] for r in pending] == [f"req-{n}" for n in range(40)]
    assert history_fold_count(home) == (41, 40)


def history_fold_count(home: Path) -> tuple[int, int]:
    from requiem.history import ingest

    folded = ingest(Home.resolve(str(home)))["folded"]
    return folded, _count(home, "executions")


def test_ingest_sweeps_temp_files_of_writers_that_died_creating_a_segment(cli, home: Path) -> None:
    spool_dir = home / "spool"
    write_executions(spool_dir, 2)
    orphan = spool_dir / ".4194303.0a1b2c3d4e5f.tmp"  # pid_max on Linux: no live process
    orphan.write_bytes(b'{"id":"')
    mine = spool_dir / f".{os.getpid()}.0a1b2c3d4e5f.tmp"  # a live writer's file stays
    mine.write_bytes(b'{"id":"')
    got = cli("history", "ingest")
    assert got.returncode == 0 and got.json["folded"] == 2, got.stdout
    assert not orphan.exists() and mine.exists()
