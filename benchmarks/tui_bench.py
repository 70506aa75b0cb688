"""requiem-tui figures beside their anchors, measured in one run (ratios, not absolutes).

Run: .venv/bin/python benchmarks/tui_bench.py [--executions 1000000] [--rebuild]

- first paint: `requiem-tui` in a 160x48 pty, from process start to its first frame and to the
  first frame with data; anchor: a bare Textual app's first frame, measured the same way.
- refresh: `requiem.analytics.snapshot` over a history of N executions (fold check, one
  read-only hold, every query, Polars frames, CAS walk, host facts); anchor: the same SQL
  statements straight in DuckDB on one read-only connection.
- the app: from `r` to the new data on screen (headless, 160x48), and the event loop's
  longest stall meanwhile (the UI stays responsive when that stays small).

The N-execution history is built once under build/tui-bench/ through the real fold path
(spool-format records, folded by requiem.history in 65536-record transactions), from the
payloads tests/history_fixtures.py makes, plus ~1 % dual-run comparisons and a small CAS.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import pty
import random
import select
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from requiem import canonical, hashing, history, history_fold, spool  # noqa: E402
from requiem.home import Home  # noqa: E402
from tests import history_fixtures as fixtures  # noqa: E402

BIN = Path(sys.executable).parent
BUILD = ROOT / "build" / "tui-bench"
EPOCH = datetime(2026, 2, 1)
CHUNK = 65536  # records per fold while building the history


def row(name: str, ours: float, anchor: float | None, unit: str, goal: str) -> None:
    ratio = f"{ours / anchor:.2f}x" if anchor else "—"
    shown = f"{anchor:.4g} {unit}" if anchor is not None else "—"
    print(f"| {name} | {ours:.4g} {unit} | {shown} | {ratio} | {goal} |", flush=True)


def median_ms(run: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


# -- the history ---------------------------------------------------------------------------

def _records(start: int, stop: int, rng: random.Random) -> Any:
    """(kind, recorded_at, payload) for executions start..stop, with ~1 % comparisons."""
    for n in range(start, stop):
        when = EPOCH + timedelta(seconds=n * 2.5)
        roll = rng.random()
        payload = fixtures.execution_payload(
            n, engine=fixtures.ENGINES[n % 3], ok=roll >= 0.1,
            termination_reason="timeout" if roll < 0.01 else "exited",
            duration_ms=round(rng.lognormvariate(2.5, 1.0), 3), dual_run=n % 100 == 0)
        # Requests repeat (a fleet runs the same jobs), so drift has groups to look through.
        payload["request_digest"] = fixtures.digest_of(f"request {n % 200_000}")
        yield "execution", when, payload
        if n % 100 == 0:
            categories = rng.choice([[], [], [], ["timing_diff"], ["metadata_diff"],
                                     ["digest_mismatch", "stdout_mismatch"]])
            yield "dual_run", when, fixtures.dual_run_payload(n, categories)


def build_history(home: Home, count: int) -> None:
    """Fold `count` executions into the home's history through requiem.history's fold."""
    rng = random.Random(6)
    counts = {"folded": 0, "duplicates": 0, "quarantined": 0}
    started = time.perf_counter()
    spool_dir = Path(home.spool_dir)
    for start in range(0, count, CHUNK):
        lines: dict[str, list[bytes]] = {}
        for kind, when, payload in _records(start, min(count, start + CHUNK), rng):
            record = {"kind": kind, "schema": spool.RECORD_SCHEMA,
                      "recorded_at": when.isoformat(timespec="microseconds") + "Z", **payload}
            body = canonical.stable_dumps(record)
            lines.setdefault(kind, []).append(spool.line_of(hashing.hash_bytes(body), body))
        spool_dir.mkdir(parents=True, exist_ok=True)
        for kind, kind_lines in lines.items():  # sealed segments, as a fold hands them over
            (spool_dir / spool.sealed_name(kind)).write_bytes(b"".join(kind_lines))
        with history._hold(home, exclusive=True) as con:
            history_fold.fold_some(con, spool_dir, counts, None)
        sys.stderr.write(f"\rbuilding: {counts['folded']:,} records folded "
                         f"({time.perf_counter() - started:.0f} s)\033[K")
    sys.stderr.write("\n")


def build_cas(home: Home, objects: int) -> None:
    from requiem.cas import Cas

    cas = Cas(home.cas_root)
    for n in range(objects):
        cas.put_bytes(f"output {n}\n".encode() * (1 + n % 50),
                      encoding="zstd" if n % 5 == 0 else "identity")


def bench_home(count: int, rebuild: bool) -> Home:
    root = BUILD / f"home-{count}"
    done = root / ".complete"
    if rebuild or not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        home = Home.resolve(str(root))
        build_history(home, count)
        build_cas(home, 2000)
        done.touch()
    return Home.resolve(str(root))


# -- refresh -------------------------------------------------------------------------------

def recorded_queries(home: Home) -> list[tuple[str, Any]]:
    """The SQL one snapshot runs, captured by wrapping analytics' single query helper."""
    from requiem.analytics import cas, executions, mismatches, overview, source

    seen: list[tuple[str, Any]] = []
    real = source.frame

    def recording(con: Any, sql: str, params: Any = None) -> Any:
        seen.append((sql, params))
        return real(con, sql, params)

    modules = (source, executions, mismatches, cas)
    for module in modules:
        module.frame = recording  # type: ignore[attr-defined]
    try:
        overview.snapshot(home)
    finally:
        for module in modules:
            module.frame = real  # type: ignore[attr-defined]
    return seen


def bench_refresh(home: Home, count: int) -> None:
    import duckdb

    from requiem import analytics

    inventory = analytics.CasInventory(home.cas_root)
    analytics.snapshot(home, inventory=inventory)  # warm: probes, imports, page cache
    queries = recorded_queries(home)
    path = str(history.history_path(home))

    def straight() -> None:
        con = duckdb.connect(path, read_only=True)
        for sql, params in queries:
            con.execute(sql, params).fetchall()
        con.close()

    anchor = median_ms(straight, 5)
    ours = median_ms(lambda: analytics.snapshot(home, inventory=inventory), 5)
    row(f"refresh, {count:,} executions (ms)", ours, anchor, "ms",
        "<= 250 ms (anchor: same SQL straight in DuckDB)")
    filtered = median_ms(lambda: analytics.snapshot(home, inventory=inventory,
                                                    filter="no-such-thing"), 3)
    row("refresh with a filter that matches nothing (ms)", filtered, anchor, "ms", "—")
    with analytics.read_history(home) as con:
        drift = median_ms(lambda: analytics.drift(con), 3)
    row("drift over the whole history, deep view (ms)", drift, None, "ms", "—")
    report = median_ms(lambda: analytics.cas_report(home, inventory), 3)
    row("CAS view with GC candidates, deep view (ms)", report, None, "ms", "—")


def bench_app(home: Home, count: int) -> None:
    from requiem.tui import RequiemApp

    async def run() -> tuple[float, float]:
        app = RequiemApp(home, refresh_s=3600)
        async with app.run_test(size=(160, 48)) as pilot:
            while app.snapshot is None:
                await pilot.pause(0.05)
            await app.workers.wait_for_complete()
            await pilot.pause(0.2)
            ticks: list[float] = []
            app.set_interval(0.005, lambda: ticks.append(time.perf_counter()))
            await pilot.pause(0.1)
            started = time.perf_counter()
            app.refresh_now()  # what the timer does every --refresh seconds
            await app.workers.wait_for_complete()
            await pilot.pause()  # the handler has run and the screen is painted
            elapsed = (time.perf_counter() - started) * 1000
            window = [t for t in ticks if t >= started]
            stall = max((b - a for a, b in zip(window, window[1:])), default=0.0) * 1000
            return elapsed, stall

    results = [asyncio.run(run()) for _ in range(3)]
    row(f"app: refresh to new data on screen, {count:,} executions (ms)",
        statistics.median(r[0] for r in results), None, "ms", "<= 250 ms")
    row("app: longest event-loop stall during that refresh (ms)",
        statistics.median(r[1] for r in results), 5.0, "ms",
        "UI responsive (anchor: the 5 ms tick)")


# -- first paint ---------------------------------------------------------------------------

def first_frames(argv: list[str], markers: tuple[str, ...]) -> dict[str, float]:
    """Seconds from process start until each marker appears on a 160x48 pty."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 48, 160, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    seen: dict[str, float] = {}
    screen = b""
    try:
        while len(seen) < len(markers) and time.perf_counter() - started < 30:
            if select.select([master], [], [], 0.005)[0]:
                try:
                    screen += os.read(master, 1 << 16)
                except OSError:
                    break
                for marker in markers:
                    if marker not in seen and marker.encode() in screen:
                        seen[marker] = time.perf_counter() - started
    finally:
        os.write(master, b"q")
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.close(master)
    return seen


def bench_first_paint(home: Home, label: str) -> None:
    bare = Path(tempfile.mkdtemp()) / "bare.py"
    bare.write_text("from textual.app import App\nfrom textual.widgets import Static\n"
                    "class Bare(App):\n    def compose(self):\n        yield Static('ready')\n"
                    "    def key_q(self):\n        self.exit()\nBare().run()\n")
    anchor = statistics.median(first_frames([sys.executable, str(bare)], ("ready",))["ready"]
                               for _ in range(3))
    markers = ("Sandbox capabilities", "blake3", "comparisons")
    runs = [first_frames([str(BIN / "requiem-tui"), "--home", str(home.root), "--refresh",
                          "3600"], markers) for _ in range(3)]
    frame, health, data = (statistics.median(r.get(m, float("nan")) for r in runs)
                           for m in markers)
    row(f"first paint from process start, {label} (s)", frame, anchor, "s",
        "<= 1.0 s (anchor: bare Textual app)")
    row(f"first frame with hash + sandbox, {label} (s)", health, anchor, "s", "—")
    row(f"first frame with every panel's data, {label} (s)", data, anchor, "s", "—")
    shutil.rmtree(bare.parent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    home = bench_home(args.executions, args.rebuild)
    print("| figure | requiem | anchor | ratio | goal |")
    print("|---|---|---|---|---|")
    bench_refresh(home, args.executions)
    bench_app(home, args.executions)
    with tempfile.TemporaryDirectory(prefix="requiem-tui-bench-") as tmp:
        from requiem.demo import run_demo

        demo = Home.resolve(str(Path(tmp) / "demo"))
        run_demo(demo)
        bench_first_paint(demo, "demo home")
    bench_first_paint(home, f"{args.executions:,} executions")


if __name__ == "__main__":
    main()
