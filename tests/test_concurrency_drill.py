"""The concurrency drill: many producers, one process folding and querying every 200 ms."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from requiem import spool
from requiem.history import ingest, open_history
from requiem.home import Home
from tests.conftest import cli_command

LOOPS = 8
RUNS = 50

# Folds and queries every 200 ms until told to stop; any error is printed and fails the drill.
FOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from requiem.history import open_history
    from requiem.home import Home

    home, stop = Home.resolve(sys.argv[1]), Path(sys.argv[2])
    rounds = errors = 0
    while not stop.exists():
        try:
            with open_history(home) as con:
                con.execute("SELECT engine, count(*) FROM executions GROUP BY engine").fetchall()
            rounds += 1
        except Exception as exc:
            errors += 1
            print(f"folder error: {type(exc).__name__}: {exc}", file=sys.stderr)
        time.sleep(0.2)
    print(rounds, errors)
""")

# One producer loop: RUNS spool records through the real record function.
SPOOLER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from requiem.spool import write_record
    from tests.history_fixtures import execution_payload

    spool_dir, loop, runs = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    for n in range(runs):
        write_record(spool_dir, "execution", execution_payload(loop * 1000 + n))
        time.sleep(0.01)
""")

REPO = Path(__file__).resolve().parent.parent


def _start_folder(home: Path, stop: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", FOLDER, str(home), str(stop)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish_folder(folder: subprocess.Popen[str], stop: Path) -> tuple[int, int, str]:
    stop.touch()
    out, err = folder.communicate(timeout=60)
    rounds, errors = (int(x) for x in out.split())
    return rounds, errors, err


def test_spool_producers_and_a_folder_lose_nothing(home: Path, tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    folder = _start_folder(home, stop)
    producers = [subprocess.Popen([sys.executable, "-c", SPOOLER, str(home / "spool"), str(i),
                                   str(RUNS)], cwd=REPO, stderr=subprocess.PIPE, text=True)
                 for i in range(LOOPS)]
    failures = [p.communicate(timeout=60)[1] for p in producers if p.wait(timeout=60) != 0]
    rounds, errors, err = _finish_folder(folder, stop)
    assert failures == [] and (errors, err) == (0, "")
    assert rounds >= 2
    with open_history(Home.resolve(str(home))) as con:
        ids = con.execute("SELECT request_id FROM executions").fetchall()
    assert sorted(r for (r,) in ids) == sorted(f"req-{i * 1000 + n}" for i in range(LOOPS)
                                               for n in range(RUNS))
    assert spool.pending_count(home / "spool") == 0


@pytest.mark.slow
def test_exec_runs_and_a_folder_lose_nothing(home: Path, tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"command": "/bin/true"}))
    stop = tmp_path / "stop"
    folder = _start_folder(home, stop)

    def loop(index: int) -> list[str]:
        problems = []
        for n in range(RUNS):
            out = tmp_path / f"out-{index}-{n}.json"
            got = subprocess.run(cli_command() + ["--home", str(home), "exec", "run",
                                                  "--request", str(request), "--out", str(out)],
                                 capture_output=True, text=True, cwd=tmp_path, timeout=120,
                                 check=False)
            if got.returncode != 0 or got.stderr or json.loads(out.read_text())["ok"] is not True:
                problems.append(f"loop {index} run {n}: rc={got.returncode} {got.stderr[-300:]}")
        return problems

    with ThreadPoolExecutor(LOOPS) as pool:
        problems = [p for found in pool.map(loop, range(LOOPS)) for p in found]
    rounds, errors, err = _finish_folder(folder, stop)
    assert problems == [] and (errors, err) == (0, "")
    assert rounds >= 2
    with open_history(Home.resolve(str(home))) as con:
        recorded = con.execute("SELECT count(*), count(DISTINCT record_id) FROM executions "
                               "WHERE ok").fetchall()[0]
    assert recorded == (LOOPS * RUNS, LOOPS * RUNS)
    assert spool.pending_count(home / "spool") == 0


# Group commits as fast as they go, into segments small enough that writers seal them too.
BATCHER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from requiem import spool
    from tests.history_fixtures import execution_payload

    spool.SEGMENT_BYTES = 64 << 10
    spool_dir, loop, batches = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    for b in range(batches):
        spool.write_records(spool_dir, [("execution", execution_payload(loop * 10000 + b * 10 + n))
                                        for n in range(10)])
""")


def test_group_writers_and_a_tight_folding_loop_lose_and_duplicate_nothing(home: Path) -> None:
    writers = [subprocess.Popen([sys.executable, "-c", BATCHER, str(home / "spool"), str(i), "250"],
                                cwd=REPO, stderr=subprocess.PIPE, text=True) for i in range(4)]
    place = Home.resolve(str(home))
    totals = {"folded": 0, "duplicates": 0, "quarantined": 0}
    rounds = 0
    while any(w.poll() is None for w in writers):
        for key, value in ingest(place).items():
            totals[key] += value
        rounds += 1
    failures = [w.communicate()[1] for w in writers if w.returncode != 0]
    for key, value in ingest(place).items():
        totals[key] += value
    assert failures == [] and rounds >= 3
    assert totals == {"folded": 10000, "duplicates": 0, "quarantined": 0}
    with open_history(place) as con:
        ids = con.execute("SELECT request_id FROM executions").fetchall()
    assert sorted(r for (r,) in ids) == sorted(f"req-{i * 10000 + n}" for i in range(4)
                                               for n in range(2500))
    assert spool.pending_count(home / "spool") == 0
