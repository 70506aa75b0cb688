"""Execution figures beside their anchors, measured in one run.

Run: .venv/bin/python benchmarks/exec_bench.py [none] [auto] [zygote]

`exec batch --jobs 2` is set against a bare loop on two threads, like against like: on two
cores a second job overlaps one run's bookkeeping with the next run's process.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bare_loop import seconds_per_spawn  # noqa: E402

BIN = Path(sys.executable).parent
REQUIEM = str(BIN / "requiem")
BARE_LOOP = str(Path(__file__).resolve().parent / "bare_loop.py")


def wall(argv: list[str]) -> float:
    """Seconds argv takes to run; a failure stops the benchmark with its stderr."""
    start = time.perf_counter()
    done = subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{argv[:4]}... exited {done.returncode}: {done.stderr.decode(errors='replace')}")
    return elapsed


def bench_cold_run(work: Path, backend: str, rounds: int = 40) -> None:
    req = work / f"true-{backend}.json"
    req.write_text(json.dumps({"command": "/bin/true", "workspace_root": str(work / "ws"),
                               "policy": {"sandbox": {"backend": backend}}}))
    out = work / "out.json"
    home = work / f"home-{backend}"
    ours, anchor = [], []
    for _ in range(rounds):
        ours.append(wall([REQUIEM, "--home", str(home), "exec", "run", "--request", str(req),
                          "--out", str(out)]))
        anchor.append(wall([sys.executable, "-I", "-c", "import blake3"]) + wall(["/bin/true"]))
    assert json.loads(out.read_text())["ok"], out.read_text()
    p50, a50 = statistics.median(ours), statistics.median(anchor)
    print(f"| cold `requiem exec run` of /bin/true, {backend} backend (full result, CAS, spool) "
          f"| p50 {p50 * 1000:.1f} ms | p50 {a50 * 1000:.1f} ms "
          f"(`python -I -c 'import blake3'` + `/bin/true`) | {p50 / a50:.2f}x "
          f"| p50 <= 40 ms |")


def instructions(argv: list[str]) -> int | None:
    """Instructions one process executes (callgrind: the same count however busy the machine)."""
    import re
    import shutil

    if not shutil.which("valgrind"):
        return None
    got = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
                         capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", got.stderr)
    return int(found.group(1)) if found else None


def bench_cold_instructions(work: Path) -> None:
    """The cold run's CPU work against the anchor's, in instructions (load-independent)."""
    req = work / "true-instructions.json"
    req.write_text(json.dumps({"command": "/bin/true", "workspace_root": str(work / "ws"),
                               "policy": {"sandbox": {"backend": "none"}}}))
    home = str(work / "home-instructions")
    run = [sys.executable, REQUIEM, "--home", home, "exec", "run", "--request", str(req),
           "--out", str(work / "out-instructions.json")]
    subprocess.run(run, check=True, stdout=subprocess.DEVNULL)  # the home exists: a warm CAS
    ours = instructions(run)
    anchor = instructions([sys.executable, "-I", "-c", "import blake3"])
    if ours is None or anchor is None:
        print("| cold `exec run` instructions | (valgrind not installed: skipped) | | | |")
        return
    print(f"| cold `requiem exec run` of /bin/true, none backend, CPU work (callgrind, engine "
          f"process only) | {ours / 1e6:.0f}M instructions | {anchor / 1e6:.0f}M "
          f"(`python -I -c 'import blake3'`) | {ours / anchor:.2f}x | (explains the p50) |",
          flush=True)


def bench_batch(work: Path, backend: str, jobs: int, count: int = 300, rounds: int = 5) -> None:
    """`exec batch --jobs N` per request against a bare loop on N threads, rounds interleaved.

    Both are timed as processes, from outside: the loop is a Python program too
    (benchmarks/bare_loop.py), so each side's start is counted once. The loop's spawns alone,
    timed inside this process, are printed beside it: earlier sessions' anchor, which counts
    the batch's start and not the loop's.
    """
    request = {"command": "/bin/true", "workspace_root": str(work / "ws"),
               "policy": {"sandbox": {"backend": backend}}}
    lines = work / "batch.jsonl"
    lines.write_text((json.dumps(request) + "\n") * count)
    out = work / "batch.out"
    home = work / f"home-batch-{backend}"
    # The loop reads the backend's capability probe from a cache, as the batch reads its home's.
    probes = str(work / "probe-cache")
    seconds_per_spawn(backend, str(work / "ws"), 1, cache_dir=probes)
    ours, loop, spawns = [], [], []
    for _ in range(rounds):
        ours.append(wall([REQUIEM, "--home", str(home), "exec", "batch", "--requests", str(lines),
                          "--out", str(out), "--jobs", str(jobs)]) / count)
        loop.append(wall([sys.executable, BARE_LOOP, backend, str(work / "ws"), str(count),
                          str(jobs), probes]) / count)
        spawns.append(seconds_per_spawn(backend, str(work / "ws"), count, jobs, probes))
    o, a, s = (statistics.median(x) for x in (ours, loop, spawns))
    threads = f"{jobs} thread{'s' if jobs > 1 else ''}"
    print(f"| `exec batch --jobs {jobs}` per request, {backend} backend ({count} requests, "
          f"median of {rounds}; both timed as processes, each start counted) | {o * 1000:.2f} ms "
          f"| {a * 1000:.2f} ms (bare Python loop on {threads}, as a program: same backend's "
          f"spawn + wait) | {o / a:.2f}x | <= 1.3x |", flush=True)
    print(f"| the same batch against the loop's spawns alone (timed in process: no start on "
          f"its side) | {o * 1000:.2f} ms | {s * 1000:.2f} ms | {o / s:.2f}x | (not like for "
          f"like) |", flush=True)


def bench_batch_marginal(work: Path, backend: str, small: int = 800, large: int = 2000,
                         rounds: int = 5) -> None:
    """What one more request costs a running batch: (T(large) - T(small)) / (large - small).

    The per-request figure above also carries the batch's start (~30 ms, a cold process and
    its session); this one leaves it out, as the in-process loop has none. Both sizes are past
    requiem.batch.ORJSON_FROM_LINES, so the encoder's import is part of the start on both.
    """
    from requiem.batch import ORJSON_FROM_LINES

    assert ORJSON_FROM_LINES <= small < large
    request = {"command": "/bin/true", "workspace_root": str(work / "ws"),
               "policy": {"sandbox": {"backend": backend}}}
    home = work / f"home-marginal-{backend}"

    def batch_seconds(count: int) -> float:
        lines = work / f"batch-{count}.jsonl"
        lines.write_text((json.dumps(request) + "\n") * count)
        start = time.perf_counter()
        subprocess.run([REQUIEM, "--home", str(home), "exec", "batch", "--requests", str(lines),
                        "--out", str(work / "batch.out")], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start

    ours, anchor = [], []
    for _ in range(rounds):
        ours.append((batch_seconds(large) - batch_seconds(small)) / (large - small))
        anchor.append(seconds_per_spawn(backend, str(work / "ws"), small))
    o, a = statistics.median(ours), statistics.median(anchor)
    print(f"| `exec batch --jobs 1` marginal cost of a request, {backend} backend ((T({large}) - "
          f"T({small})) / {large - small}, median of {rounds}) | {o * 1000:.2f} ms | "
          f"{a * 1000:.2f} ms (bare Python loop on 1 thread) | {o / a:.2f}x | <= 1.3x |",
          flush=True)


def creation_cost(work: Path, count: int = 200) -> float:
    """Seconds one file creation takes in the work directory, the files kept until the end.

    A batch creates files (a pack of result documents per group, a new request's object, the
    store's fan-out directories) and the bare loop none, so the batch figures move with this
    cost. On this machine's journal-less ext4 it ranges from ~20 us to ~600 us: the inode
    allocator steps over every inode deleted in the last minutes, and removing a previous run's
    work directory deletes thousands.
    """
    folder = work / "creation-probe"
    folder.mkdir()
    start = time.perf_counter()
    for n in range(count):
        os.close(os.open(folder / str(n), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    return (time.perf_counter() - start) / count


def main() -> None:
    backends = sys.argv[1:] or ["none"]
    # Bytecode first: with PYTHONDONTWRITEBYTECODE set, an edited module would be recompiled
    # on every cold start and the figure would measure the compiler.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "requiem", "tui", "analytics"],
                   cwd=Path(__file__).resolve().parent.parent, check=True,
                   stdout=subprocess.DEVNULL)
    base = Path(__file__).parent / ".work"
    base.mkdir(exist_ok=True)
    # Fresh homes each run, in a directory left in place: removing a run's ~10k files slows
    # every file creation near them for minutes (see creation_cost), so `make clean` does it.
    work = Path(tempfile.mkdtemp(prefix="exec-", dir=base))
    # The workspace apart from the homes, as in real use: a home inside a sandboxed
    # workspace is masked by extra mounts the bare loop would not pay for.
    (work / "ws").mkdir()
    # The batch figures move with whatever else shares the two cores: say how busy they were.
    print("load average at the start: %.2f %.2f %.2f" % os.getloadavg())
    print(f"file creation here: {creation_cost(work) * 1e6:.0f} us a file "
          f"({work.relative_to(base.parent.parent)}, left for `make clean`)")
    print("| figure | requiem | anchor | ratio | goal |")
    print("|---|---|---|---|---|")
    bench_cold_instructions(work)
    for backend in backends:
        bench_cold_run(work, backend)
        for jobs in (1, 2):
            bench_batch(work, backend, jobs)
        if backend == "none":
            bench_batch_marginal(work, backend)


if __name__ == "__main__":
    main()
