"""Execution figures beside their anchors, measured in one run.

Run: .venv/bin/python benchmarks/exec_bench.py
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
    req.write_text(json.dumps({"command": "/bin/true", "workspace_root": str(work),
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


def bench_batch(work: Path, backend: str, count: int = 300) -> None:
    request = {"command": "/bin/true", "workspace_root": str(work),
               "policy": {"sandbox": {"backend": backend}}}
    lines = work / "batch.jsonl"
    lines.write_text((json.dumps(request) + "\n") * count)
    out = work / "batch.out"
    home = work / f"home-batch-{backend}"
    ours, anchor = [], []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([REQUIEM, "--home", str(home), "exec", "batch", "--requests", str(lines),
                        "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
        ours.append((time.perf_counter() - start) / count)
        impl = select_backend(backend)
        start = time.perf_counter()
        for _ in range(count):
            with open(os.devnull, "wb") as sink:
                spec = LaunchSpec(executable="/bin/true", argv=["/bin/true"], env={},
                                  cwd=str(work), workspace=str(work), stdout_fd=sink.fileno(),
                                  stderr_fd=sink.fileno())
                child = impl.spawn(spec)
                child.wait(None)
                child.kill_tree()
        anchor.append((time.perf_counter() - start) / count)
        impl.close()
    o, a = statistics.median(ours), statistics.median(anchor)
    print(f"| `exec batch` per request, {backend} backend ({count} requests) | {o * 1000:.2f} ms "
          f"| {a * 1000:.2f} ms (bare Python loop: same backend's spawn + wait) | {o / a:.2f}x "
          f"| <= 1.3x |")


def main() -> None:
    backends = sys.argv[1:] or ["none"]
    base = Path(__file__).parent / ".work"
    base.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        work = Path(tmp)
        print("| figure | requiem | anchor | ratio | goal |")
        print("|---|---|---|---|---|")
        for backend in backends:
            bench_cold_run(work, backend)
            bench_batch(work, backend)


if __name__ == "__main__":
    main()
