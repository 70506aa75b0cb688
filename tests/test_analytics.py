"""requiem.analytics: each number the TUI shows, checked against the history it comes from."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import polars as pl
import pytest

from requiem import analytics, hashing, history, spool
from requiem.cas import Cas
from requiem.home import Home
from tests import history_fixtures as hf
from tests.test_demo import shared_demo

START = datetime(2026, 3, 1, 10, 0, 0)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[datetime]]:
    """Spool records stamped at chosen times: append a time, write a record, it carries it."""
    times = [START]

    def now() -> str:
        return times[-1].isoformat(timespec="microseconds") + "Z"

    monkeypatch.setattr(spool, "utc_now_iso", now)
    yield times


def write(home: Path, kind: str, payload: dict[str, Any]) -> str:
    return spool.write_record(home / "spool", kind, payload)


def test_recent_executions_are_the_newest_first_and_bounded(home: Path,
                                                            clock: list[datetime]) -> None:
    for n in range(30):
        clock.append(START + timedelta(seconds=n))
        write(home, "execution", hf.execution_payload(n, ok=n % 4 != 0))
    with analytics.read_history(home) as con:
        recent = analytics.recent_executions(con, limit=10)
    assert recent["request_id"].to_list() == [f"req-{n}" for n in range(29, 19, -1)]
    assert recent["outcome"].to_list()[:4] == ["ok", "failed", "ok", "ok"]  # 28 % 4 == 0


def test_filter_searches_the_whole_history_not_just_the_newest_rows(
        home: Path, clock: list[datetime]) -> None:
    for n in range(50):
        clock.append(START + timedelta(seconds=n))
        payload = hf.execution_payload(n, refused=n == 3, ok=n != 3)
        if n == 3:
            payload["error_code"] = "path_escape"
        write(home, "execution", payload)
    with analytics.read_history(home) as con:
        assert analytics.recent_executions(con, 5, "PATH_ESCAPE")["request_id"].to_list() == [
            "req-3"]
        assert analytics.recent_executions(con, 5, "refused")["request_id"].to_list() == ["req-3"]
        digest = hf.digest_of("request 7")[:10]
        assert analytics.recent_executions(con, 5, digest)["request_id"].to_list() == ["req-7"]
        assert analytics.recent_executions(con, 5, "nothing-like-this").is_empty()
        # A filter is data, never SQL nor a LIKE pattern.
        assert analytics.recent_executions(con, 5, "'; DROP TABLE executions; --").is_empty()
        assert analytics.recent_executions(con, 5, "%").is_empty()
        assert con.sql("SELECT count(*) FROM executions").fetchall()[0][0] == 50


def test_outcomes_and_latency_percentiles_match_the_rows(home: Path) -> None:
    hf.write_executions(home / "spool", 200)
    with analytics.read_history(home) as con:
        outcomes = analytics.execution_outcomes(con)
        latency = analytics.latency_percentiles(con)
        rows = con.sql("SELECT engine, ok, termination_reason, duration_ms "
                       "FROM executions").pl()
    assert outcomes["total"] == 200
    assert outcomes["ok"] == rows.filter(pl.col("ok")).height
    assert outcomes["timeout"] == rows.filter(pl.col("termination_reason") == "timeout").height
    assert outcomes["ok"] + outcomes["failed"] + outcomes["timeout"] + outcomes["refused"] == 200
    overall = latency.row(0, named=True)
    assert overall["engine"] == "all" and overall["runs"] == 200
    expected = rows["duration_ms"].quantile(0.99, interpolation="linear")
    assert overall["p99_ms"] == pytest.approx(expected)
    per_engine = {r["engine"]: r["runs"] for r in latency.iter_rows(named=True)}
    assert per_engine == {"all": 200, **dict(rows.group_by("engine").len().iter_rows())}


def test_drift_is_one_request_with_more_than_one_result(home: Path) -> None:
    write(home, "execution", hf.execution_payload(1, ok=True))
    write(home, "execution", hf.execution_payload(1, ok=False))  # same request, other result
    write(home, "execution", hf.execution_payload(2, ok=True))
    write(home, "execution", hf.execution_payload(2, ok=True, duration_ms=99.0))  # same result
    with analytics.read_history(home) as con:
        drifting = analytics.drift(con)
    assert drifting["request_digest"].to_list() == [hf.digest_of("request 1")]
    assert drifting.row(0, named=True)["runs"] == 2
    assert drifting.row(0, named=True)["results"] == 2


def test_mismatch_rates_per_category_per_bucket(home: Path, clock: list[datetime]) -> None:
    plan = [  # (minute, categories) of each comparison
        (0, []), (0, ["digest_mismatch", "stdout_mismatch"]), (0, []), (0, []),
        (2, ["timing_diff"]), (2, ["digest_mismatch", "exit_code_mismatch"]),
    ]
    for n, (minute, categories) in enumerate(plan):
        clock.append(START + timedelta(minutes=minute, seconds=n))
        write(home, "dual_run", hf.dual_run_payload(n, categories))
    with analytics.read_history(home) as con:
        rates = analytics.mismatch_rates(con, "1m")
        summary = analytics.mismatch_summary(con)
        totals = analytics.comparison_totals(con)
        window = analytics.series_window(con, buckets=30)
        newest = analytics.mismatch_rates(con, "1m", buckets=2)["bucket"].unique().sort()
    digest = rates.filter(pl.col("category") == "digest_mismatch")
    assert digest["bucket"].to_list() == [START + timedelta(minutes=m) for m in range(3)]
    assert digest["comparisons"].to_list() == [4, 0, 2]
    assert digest["mismatches"].to_list() == [1, 0, 1]
    assert digest["rate"].to_list() == [0.25, None, 0.5]
    assert rates.height == 3 * 7  # every bucket, every known category
    by_category = {r["category"]: r for r in summary.iter_rows(named=True)}
    assert list(by_category)[:2] == ["digest_mismatch", "exit_code_mismatch"]
    assert by_category["digest_mismatch"]["mismatches"] == 2
    assert by_category["digest_mismatch"]["rate"] == pytest.approx(2 / 6)
    assert by_category["sandbox_diff"]["mismatches"] == 0
    assert by_category["timing_diff"]["severity"] == "medium"
    assert totals["comparisons"] == 6 and totals["mismatching"] == 3
    assert totals["critical"] == 2 and totals["medium"] == 1
    assert window == timedelta(seconds=5)  # a 125 s span in fewer than 30 buckets
    assert newest.to_list() == [START + timedelta(minutes=1), START + timedelta(minutes=2)]


def test_cas_stats_and_gc_candidates_follow_the_roots(home: Path) -> None:
    resolved = Home.resolve(str(home))
    cas = Cas(resolved.cas_root)
    used = cas.put_bytes(b"an input the history references\n")
    kept = cas.put_bytes(b"pinned by hand\n")
    loose = cas.put_bytes(b"log line\n" * 5000, encoding="zstd")
    (home / "pins").mkdir()
    (home / "pins" / kept.digest).touch()
    write(home, "execution", hf.execution_payload(1, inputs={"in.txt": used.digest}))
    objects = analytics.cas_objects(home)
    stats = analytics.cas_stats(objects, top=1)
    assert stats["objects"] == 3
    assert stats["by_encoding"] == {"identity": 2, "zstd": 1}
    assert stats["original_bytes"] == sum(o.original_size for o in (used, kept, loose))
    assert stats["compression_ratio"] == pytest.approx(
        stats["original_bytes"] / stats["stored_bytes"], rel=1e-3)
    assert stats["top"]["digest"].to_list() == [loose.digest]
    later = analytics.utc_now() + timedelta(hours=2)
    with analytics.read_history(home) as con:
        pins = {kept.digest}
        now_candidates = analytics.gc_candidates(con, objects, "0s", later, pins)
        young = analytics.gc_candidates(con, objects, "1h", later - timedelta(hours=2), pins)
    assert now_candidates["digest"].to_list() == [loose.digest]
    assert young.is_empty()
    report = analytics.cas_report(resolved)
    assert report["unreferenced"]["digest"].to_list() == [loose.digest]
    assert report["unreferenced"]["gc_eligible"].to_list() == [False]  # younger than 1h


def test_inventory_reads_each_header_once(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cas = Cas(home / "cas")
    for n in range(5):
        cas.put_bytes(f"object {n}".encode())
    inventory = analytics.CasInventory(home / "cas")
    assert inventory.scan().height == 5
    reads = itertools.count()
    original = Cas.info
    monkeypatch.setattr(Cas, "info", lambda self, digest: (next(reads), original(self, digest))[1])
    cas.put_bytes(b"one more")
    cas.remove(hashing.hash_bytes(b"object 0"))
    assert inventory.scan().height == 5
    assert next(reads) == 1  # only the new object's header was read


def test_overview_gathers_everything_in_one_hold(tmp_path_factory: pytest.TempPathFactory,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    demo, _ = shared_demo(tmp_path_factory)
    holds = []
    original = history.open_history

    def counting(home: Any, read_only: bool = False) -> Any:
        holds.append(read_only)
        return original(home, read_only)

    monkeypatch.setattr(history, "open_history", counting)
    snap = analytics.snapshot(demo, limit=25)
    assert holds == [True]
    assert snap.executions.height == 25
    assert snap.health["hash_primitive"] == "blake3"
    assert snap.cas["objects"] == len(list(Cas(demo / "cas").list_digests()))
    assert snap.last_verify is not None and snap.last_verify["corrupt_count"] == 1
    assert snap.mismatches["category"].to_list()[:3] == [
        "digest_mismatch", "exit_code_mismatch", "stdout_mismatch"]


def test_execution_detail_reads_output_trace_and_diff(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    demo, summary = shared_demo(tmp_path_factory)
    with analytics.read_history(demo) as con:
        mismatch = analytics.recent_mismatches(con, 1).row(0, named=True)
        corrupt = con.sql("SELECT record_id FROM executions WHERE stdout_digest = ?",
                          params=[summary["corrupted"]]).fetchall()[0][0]
    detail = analytics.execution_detail(demo, mismatch["primary_record_id"])
    assert detail is not None
    assert detail.dual_run is not None and detail.dual_run["mismatch"] is True
    assert detail.dual_run["categories"] == mismatch["categories"]
    assert detail.result_document["result_digest"] == detail.record["result_digest"]
    assert [e["type"] for e in detail.trace_events][:2] == ["request", "spawn"]
    assert detail.stdout.error is None and detail.stdout.text is not None
    broken = analytics.execution_detail(demo, corrupt)
    assert broken is not None and broken.stdout.error.startswith("cas_integrity_failed")
    assert analytics.execution_detail(demo, "0" * 64) is None


def test_doctor_findings_keep_the_command_beside_each_problem() -> None:
    report = {"ok": False,
              "blockers": [{"id": "cas_corrupt", "message": "1 corrupt",
                            "command": "requiem cas verify --all"}],
              "warnings": [{"id": "sandbox_partial", "message": "rlimits is partial",
                            "command": "requiem health"}]}
    assert analytics.doctor_findings(report) == [
        {"level": "blocker", "id": "cas_corrupt", "message": "1 corrupt",
         "command": "requiem cas verify --all"},
        {"level": "warning", "id": "sandbox_partial", "message": "rlimits is partial",
         "command": "requiem health"}]


def test_durations_read_like_the_gc_grace_flag() -> None:
    assert analytics.parse_duration("90s") == timedelta(seconds=90)
    assert analytics.parse_duration("250ms") == timedelta(milliseconds=250)
    assert analytics.auto_window(timedelta(minutes=10), buckets=30) == timedelta(seconds=30)
    assert analytics.auto_window(timedelta(0)) == timedelta(seconds=1)
