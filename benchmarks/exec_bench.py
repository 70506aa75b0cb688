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

from requiem.sandbox import LaunchSpec, select_backend  # noqa: E402

BIN = Path(sys.executable).parent
REQUIEM = str(BIN / "requiem")


def wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


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


def bare_loop(backend: str, work: Path, count: int, threads: int) -> float:
    """Seconds per spawn + wait of /bin/true through the backend, from `threads` threads."""
    from concurrent.futures import ThreadPoolExecutor

    impl = select_backend(backend)

    def spawn_one(_: int) -> None:
        with open(os.devnull, "wb") as sink:
            spec = LaunchSpec(executable="/bin/true", argv=["/bin/true"], env={},
                              cwd=str(work / "ws"), workspace=str(work / "ws"),
                              stdout_fd=sink.fileno(),
                              stderr_fd=sink.fileno())
            child = impl.spawn(spec)
            child.wait(None)
            child.kill_tree()

    start = time.perf_counter()
    if threads == 1:
        for n in range(count):
            spawn_one(n)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(spawn_one, range(count)))
    elapsed = time.perf_counter() - start
    impl.close()
    return elapsed / count


def bench_batch(work: Path, backend: str, jobs: int, count: int = 300, rounds: int = 5) -> None:
    """`exec batch --jobs N` per request against a bare loop on N threads, rounds interleaved."""
    request = {"command": "/bin/true", "workspace_root": str(work / "ws"),
               "policy": {"sandbox": {"backend": backend}}}
    lines = work / "batch.jsonl"
    lines.write_text((json.dumps(request) + "\n") * count)
    out = work / "batch.out"
    home = work / f"home-batch-{backend}"
    ours, anchor = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([REQUIEM, "--home", str(home), "exec", "batch", "--requests", str(lines),
                        "--out", str(out), "--jobs", str(jobs)], check=True,
                       stdout=subprocess.DEVNULL)
        ours.append((time.perf_counter() - start) / count)
        anchor.append(bare_loop(backend, work, count, jobs))
    o, a = statistics.median(ours), statistics.median(anchor)
    print(f"| `exec batch --jobs {jobs}` per request, {backend} backend ({count} requests, "
          f"median of {rounds}) | {o * 1000:.2f} ms | {a * 1000:.2f} ms (bare Python loop on "
          f"{jobs} thread{'s' if jobs > 1 else ''}: same backend's spawn + wait) "
          f"| {o / a:.2f}x | <= 1.3x |", flush=True)


def bench_batch_marginal(work: Path, backend: str, small: int = 300, large: int = 1500,
                         rounds: int = 5) -> None:
    """What one more request costs a running batch: (T(large) - T(small)) / (large - small).

    The per-request figure above also carries the batch's start (~50 ms, a cold process and
    its session) spread over 300 requests; this one leaves it out, as the bare loop has none.
    """
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
        anchor.append(bare_loop(backend, work, small, 1))
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
