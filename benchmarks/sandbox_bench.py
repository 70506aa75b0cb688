"""Sandbox spawn cost per request against a bare `bwrap --unshare-all --cap-drop ALL ... /bin/true` loop."""

# python benchmarks/sandbox_bench.py [--rounds 200] [--ballast-mib 1024] [--json]
# With the engine holding 1 GiB of touched memory (where a fork would copy page tables and preexec_fn
# would cost ~30 ms), each round runs the anchor and the backend once, in a shuffled order so that load
# from elsewhere on the machine hits both alike. Target: each backend's median <= 1.3x the anchor's.

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from requiem.sandbox import LaunchSpec, select_backend  # noqa: E402

TARGET = 1.3
WARMUP = 10


def ballast(mib: int) -> bytearray:
    """Allocate and touch every page, so the memory is really resident in the engine."""
    block = bytearray(mib << 20)
    block[::4096] = b"x" * len(block[::4096])
    return block


def anchor_argv() -> list[str]:
    argv = ["bwrap", "--unshare-all", "--cap-drop", "ALL", "--die-with-parent", "--ro-bind", "/usr", "/usr"]
    for link in ("/bin", "/lib", "/lib64", "/sbin"):
        if os.path.islink(link):
            argv += ["--symlink", os.readlink(link), link]
    return argv + ["--proc", "/proc", "--dev", "/dev", "/bin/true"]


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": round(statistics.median(ordered), 3), "p90_ms": round(ordered[len(ordered) * 9 // 10], 3),
            "mean_ms": round(statistics.fmean(ordered), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--ballast-mib", type=int, default=1024)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    args = parser.parse_args()

    held = ballast(args.ballast_mib)
    rss_mib = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
    workspace = tempfile.mkdtemp(prefix="requiem-bench-")
    null = os.open("/dev/null", os.O_WRONLY)
    spec = LaunchSpec("/bin/true", ["true"], {"PATH": "/usr/bin:/bin"}, workspace, workspace, null, null)
    backends = {name: select_backend(name) for name in ("bwrap", "zygote")}
    anchor = anchor_argv()
    # Each case returns (spawn+wait, spawn+wait+kill_tree) in ms; the runner always calls kill_tree.
    def request(name: str):  # type: ignore[no-untyped-def]
        def run() -> tuple[float, float]:
            start = time.perf_counter()
            child = backends[name].spawn(spec)
            exit = child.wait(None)
            waited = time.perf_counter()
            child.kill_tree()
            done = time.perf_counter()
            assert exit is not None and exit.exit_code == 0, exit
            return (waited - start) * 1000, (done - start) * 1000
        return run

    def bare() -> tuple[float, float]:
        start = time.perf_counter()
        subprocess.run(anchor, check=True, stdout=null, stderr=null)
        elapsed = (time.perf_counter() - start) * 1000
        return elapsed, elapsed

    # One phase per backend, each interleaved with its own anchor samples: the zygote prepares its next
    # run in the background, which must not be billed to the bwrap backend's phase.
    # Other work on the machine moves every figure (2 vCPUs here): say how busy it was.
    report: dict[str, object] = {"rounds": args.rounds, "ballast_mib": args.ballast_mib, "engine_rss_mib": rss_mib,
                                 "euid": os.geteuid(), "target_ratio": TARGET,
                                 "loadavg_before": open("/proc/loadavg").read().split()[0]}
    for name in ("bwrap", "zygote"):
        cases = {"anchor": bare, name: request(name)}
        samples: dict[str, list[tuple[float, float]]] = {case: [] for case in cases}
        order = list(cases)
        for round_no in range(WARMUP + args.rounds):
            random.shuffle(order)
            for case in order:
                result = cases[case]()
                if round_no >= WARMUP:
                    samples[case].append(result)
        anchor_stats = summary([s[0] for s in samples["anchor"]])
        wait_stats = summary([s[0] for s in samples[name]])
        full_stats = summary([s[1] for s in samples[name]])
        report[name] = {"anchor": anchor_stats, "spawn+wait": wait_stats, "spawn+wait+kill_tree": full_stats,
                        "ratio": round(wait_stats["median_ms"] / anchor_stats["median_ms"], 3),
                        "ratio_with_kill_tree": round(full_stats["median_ms"] / anchor_stats["median_ms"], 3)}
    report["loadavg_after"] = open("/proc/loadavg").read().split()[0]
    for backend in backends.values():
        backend.close()
    shutil.rmtree(workspace, ignore_errors=True)
    del held

    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"{args.rounds} rounds per backend, engine RSS {rss_mib} MiB, euid {os.geteuid()}, load average "
          f"{report['loadavg_before']} -> {report['loadavg_after']}; medians (p90) in ms")
    for name in ("bwrap", "zygote"):
        entry = report[name]
        assert isinstance(entry, dict)
        anchor, wait, full = entry["anchor"], entry["spawn+wait"], entry["spawn+wait+kill_tree"]
        verdict = "ok" if entry["ratio"] <= TARGET else "OVER TARGET"
        print(f"  {name:6} backend spawn+wait {wait['median_ms']:5.2f} ({wait['p90_ms']:5.2f})   anchor "
              f"bwrap --unshare-all --cap-drop ALL --die-with-parent ... /bin/true {anchor['median_ms']:5.2f} "
              f"({anchor['p90_ms']:5.2f})   ratio {entry['ratio']:.2f}x [{verdict}]; with kill_tree "
              f"{full['median_ms']:.2f}, {entry['ratio_with_kill_tree']:.2f}x")


if __name__ == "__main__":
    main()
