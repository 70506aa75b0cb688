"""History figures beside their anchors, measured in one run: spool write, fold, cold metrics.

Run: .venv/bin/python benchmarks/history_bench.py [--records 1000000] [--scratch /dev/shm]

The spool-write latency is measured on the disk (a temp dir), one write_record per record.
The 1M-record spool is made through the real spool.write_records in groups of GROUP records
(group commit, as the batch executor writes; one record per call would take minutes of
fdatasync alone) on the scratch filesystem (tmpfs when available); the output says so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from requiem import canonical, spool  # noqa: E402
from requiem.home import Home  # noqa: E402
from tests.history_fixtures import execution_payload, executions  # noqa: E402

BIN = Path(sys.executable).parent
REQUIEM = str(BIN / "requiem")
WORKERS = 2
GROUP = 1000


def row(name: str, ours: str, anchor: str, goal: str) -> None:
    print(f"| {name} | {ours} | {anchor} | {goal} |", flush=True)


def bench_spool_write(work: Path, count: int = 2000) -> None:
    """Median latency of write_record against a bare append+fdatasync of the same bytes."""
    spool_dir = work / "spool"
    payloads = [execution_payload(n) for n in range(count)]
    ours = []
    for payload in payloads:
        start = time.perf_counter()
        spool.write_record(spool_dir, "execution", payload)
        ours.append(time.perf_counter() - start)
    _, line = spool.encode("execution", payloads[0])
    anchor = []
    raw = work / "raw.jsonl"
    for _ in range(count):
        start = time.perf_counter()
        fd = os.open(raw, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, line)
        os.fdatasync(fd)
        os.close(fd)
        anchor.append(time.perf_counter() - start)
    row("spool write_record, median (disk)", f"{statistics.median(ours) * 1e3:.3f} ms",
        f"{statistics.median(anchor) * 1e3:.3f} ms (bare open+append+fdatasync, same bytes)",
        "<= 1 ms")


def _generate(args: tuple[str, int, int]) -> None:
    spool_dir, start, count = args
    for first in range(start, start + count, GROUP):
        size = min(GROUP, start + count - first)
        spool.write_records(Path(spool_dir), executions(first, size, seed=first, packed=True))


def generate(home: Path, records: int) -> float:
    """Spool `records` execution records through the real write_records, on all cores."""
    share = -(-records // WORKERS)
    jobs = [(str(home / "spool"), i * share, min(share, records - i * share))
            for i in range(WORKERS)]
    start = time.perf_counter()
    with Pool(WORKERS) as pool:
        pool.map(_generate, jobs)
    return time.perf_counter() - start


def arrow_anchor_same_table(home: Path, scratch: Path) -> float:
    """Rows/s of DuckDB inserting the folded executions from Arrow into a fresh database."""
    import duckdb

    from requiem.history_schema import migrate

    with duckdb.connect(str(home / "history.duckdb"), read_only=True) as con:
        folded = con.sql("SELECT * FROM executions").to_arrow_table()
    target = scratch / "anchor.duckdb"
    with duckdb.connect(str(target)) as con:
        migrate(con, str(target))
        start = time.perf_counter()
        con.register("folded", folded)
        con.execute("BEGIN TRANSACTION")
        con.execute("INSERT INTO executions SELECT * FROM folded")
        con.execute("COMMIT")
        elapsed = time.perf_counter() - start
    target.unlink()
    return folded.num_rows / elapsed


def arrow_anchor_four_columns(scratch: Path, rows: int = 1_000_000) -> float:
    """Rows/s of the research anchor: 1M rows of BIGINT, 64-char VARCHAR, DOUBLE, INT."""
    import duckdb
    import pyarrow as pa

    table = pa.table({"a": pa.array(range(rows), pa.int64()),
                      "b": pa.array([f"{n:064x}" for n in range(rows)], pa.string()),
                      "c": pa.array([n * 0.5 for n in range(rows)], pa.float64()),
                      "d": pa.array([n % 1000 for n in range(rows)], pa.int32())})
    target = scratch / "anchor4.duckdb"
    with duckdb.connect(str(target)) as con:
        con.execute("CREATE TABLE t (a BIGINT, b VARCHAR, c DOUBLE, d INTEGER)")
        con.register("four", table)
        start = time.perf_counter()
        con.execute("INSERT INTO t SELECT * FROM four")
        elapsed = time.perf_counter() - start
    target.unlink()
    return rows / elapsed


def filesystem_floor(scratch: Path, body: bytes, count: int = 100_000) -> float:
    """Files/s of the least a fold must do per record: open, read, close, unlink."""
    floor_dir = scratch / "floor"
    floor_dir.mkdir()
    dir_fd = os.open(floor_dir, os.O_RDONLY)
    for n in range(count):
        fd = os.open(f"{n}.json", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=dir_fd)
        os.write(fd, body)
        os.close(fd)
    names = os.listdir(floor_dir)
    start = time.perf_counter()
    for name in names:
        fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
        os.read(fd, 65536)
        os.close(fd)
        os.unlink(name, dir_fd=dir_fd)
    elapsed = time.perf_counter() - start
    os.close(dir_fd)
    floor_dir.rmdir()
    return count / elapsed


def cold(argv: list[str], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--scratch", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = parser.parse_args()
    began = time.perf_counter()
    print("| figure | requiem | anchor | goal |\n|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory(prefix="history-bench-disk-") as disk:
        bench_spool_write(Path(disk))
    with tempfile.TemporaryDirectory(prefix="history-bench-", dir=args.scratch) as scratch_dir:
        scratch = Path(scratch_dir)
        home_dir = scratch / "home"
        made = generate(home_dir, args.records)
        print(f"(spooled {args.records} records with write_records, {GROUP} per call, on "
              f"{WORKERS} processes in {made:.1f} s, under "
              f"{args.scratch or tempfile.gettempdir()})", flush=True)
        from requiem.history import ingest

        start = time.perf_counter()
        counts = ingest(Home.resolve(str(home_dir)))
        fold = time.perf_counter() - start
        assert counts["folded"] == args.records, counts
        size = (home_dir / "history.duckdb").stat().st_size
        same_table = arrow_anchor_same_table(home_dir, scratch)
        four = arrow_anchor_four_columns(scratch)
        body = canonical.stable_dumps({"kind": "execution", **execution_payload(0)})
        floor = filesystem_floor(scratch, body)
        rate = args.records / fold
        row(f"fold {args.records} spool records (ingest, incl. delete)",
            f"{rate / 1e3:.0f}k records/s ({fold:.1f} s; history {size / 1e6:.0f} MB)",
            f"{same_table / 1e3:.0f}k rows/s (DuckDB Arrow insert of the same table); "
            f"{four / 1e3:.0f}k rows/s (4-column Arrow insert); "
            f"{floor / 1e3:.0f}k files/s (bare open+read+close+unlink: the old one-file-per-record "
            "ceiling)", ">= 200k records/s")
        metrics = cold([REQUIEM, "--home", str(home_dir), "metrics", "--format", "prom"])
        duck = cold([sys.executable, "-c", "import duckdb,sys; c=duckdb.connect(sys.argv[1], "
                     "read_only=True); c.execute('SELECT count(*) FROM executions').fetchall()",
                     str(home_dir / "history.duckdb")])
        row(f"`requiem metrics --format prom` cold over {args.records} executions",
            f"{metrics:.2f} s", f"{duck:.2f} s (cold python: import duckdb, open, count(*))",
            "<= 1.5 s")
        shutil.rmtree(home_dir)
    print(f"(total {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
