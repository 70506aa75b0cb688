"""`requiem demo`: a real mixed workload, recorded, with one corrupt object for triage."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from requiem import history
from requiem.cas import Cas
from requiem.home import Home
from tests.conftest import result_stored, run_cli

# Waves 0-3 hold every kind of request (the timeout and refusals run in wave 3).
TEST_WAVES = 4
_built: dict[Path, tuple[Path, dict[str, Any]]] = {}


def shared_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One demo home per test process (read-only for users; copy it to change it)."""
    base = tmp_path_factory.getbasetemp()
    if base not in _built:
        from requiem.demo import run_demo

        home = base / "demo-home"
        _built[base] = (home, run_demo(Home.resolve(str(home)), waves=TEST_WAVES))
    return _built[base]


def copy_home(source: Path, target: Path) -> Path:
    """A private copy of a home that a test may add to."""
    shutil.copytree(source, target)
    return target


def test_demo_command_builds_a_history_in_under_30_seconds(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    started = time.perf_counter()
    got = run_cli("demo", "--home", str(home), timeout=60)
    elapsed = time.perf_counter() - started
    assert got.returncode == 0, got.stderr
    summary = json.loads(got.stdout)
    assert elapsed < 30, summary
    assert summary["ok"] is True and summary["home"] == str(home)
    assert summary["next"] == f"requiem-tui --home {home}"
    with history.open_history(Home.resolve(str(home)), read_only=True) as con:
        executions = con.sql("SELECT count(*) FROM executions").fetchall()[0][0]
    assert executions >= summary["requests"]


def test_demo_runs_every_kind_of_request_for_real(tmp_path_factory: pytest.TempPathFactory) -> None:
    home, summary = shared_demo(tmp_path_factory)
    assert {"ok", "failed", "timeout", "refused"} <= set(summary["outcomes"])
    with history.open_history(Home.resolve(str(home)), read_only=True) as con:
        rows = dict(con.sql("""
            SELECT kind, n FROM (
              SELECT 'timeout' AS kind, count(*) AS n FROM executions
                WHERE termination_reason = 'timeout'
              UNION ALL SELECT 'path_escape', count(*) FROM executions
                WHERE error_code = 'path_escape'
              UNION ALL SELECT 'failed', count(*) FROM executions
                WHERE NOT ok AND termination_reason = 'exited'
              UNION ALL SELECT 'mismatching', count(*) FROM dual_runs WHERE mismatch
              UNION ALL SELECT 'agreeing', count(*) FROM dual_runs WHERE NOT mismatch
              UNION ALL SELECT 'zstd puts', count(*) FROM cas_events WHERE encoding = 'zstd'
              UNION ALL SELECT 'identity puts', count(*) FROM cas_events
                WHERE encoding = 'identity'
              UNION ALL SELECT 'drifting', count(*) FROM (SELECT request_digest FROM executions
                WHERE result_digest IS NOT NULL GROUP BY 1
                HAVING count(DISTINCT result_digest) > 1)
              UNION ALL SELECT 'gc runs', count(*) FROM cas_gc_runs)""").fetchall())
    assert all(n >= 1 for n in rows.values()), rows
    # Every execution row is a real run: its result document is in the CAS (in its pack, as a
    # batch stores it).
    cas = Cas(home / "cas")
    with history.open_history(Home.resolve(str(home)), read_only=True) as con:
        documents = con.sql("SELECT result_object, result_pack FROM executions "
                            "WHERE result_object IS NOT NULL").fetchall()
    assert documents and any(pack for _, pack in documents)
    assert all(result_stored(cas, {"result_object": digest, "result_pack": pack})
               for digest, pack in documents)


def test_demo_corrupts_one_object_and_records_the_verify(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    home, summary = shared_demo(tmp_path_factory)
    victim = summary["corrupted"]
    assert summary["verify"]["corrupt"] == [victim]
    assert Cas(home / "cas").verify_object(victim) is not None
    with history.open_history(Home.resolve(str(home)), read_only=True) as con:
        corrupt = con.sql("SELECT corrupt_count, corrupt FROM cas_verify_runs").fetchall()
    assert corrupt[-1][0] == 1 and victim in corrupt[-1][1]
