"""`requiem bench run|compare|gate` and `requiem drift analyze`."""

from __future__ import annotations

import argparse
from typing import Any

from requiem.commands import home_of
from requiem.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def cmd_run(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem import bench
    from requiem.commands.exec import write_json

    report = bench.run(home_of(args), bench.load(args.spec))
    write_json(args.out, report)
    return report, EXIT_OK if report["ok"] else EXIT_FAILED


def cmd_compare(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem import bench

    return bench.compare(bench.load(args.baseline), bench.load(args.current)), EXIT_OK


def cmd_gate(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem import bench

    report = bench.gate(bench.load(args.baseline), bench.load(args.current), args.threshold)
    return report, EXIT_OK if report["ok"] else EXIT_USAGE


def cmd_drift(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem import bench
    from requiem.commands.exec import write_json

    report = bench.drift(bench.load(args.bench))
    if args.out:
        write_json(args.out, report)
    return report, EXIT_OK if report["ok"] else EXIT_FAILED


def register(commands: Any) -> None:
    bench = commands.add_parser("bench", help="benchmark requests; compare; gate CI")
    sub = bench.add_subparsers(dest="bench_command", required=True)
    run = sub.add_parser("run", help="run a bench spec {request, iterations, warmup}")
    run.add_argument("--spec", required=True)
    run.add_argument("--out", required=True)
    run.set_defaults(handler=cmd_run)
    for name, handler in (("compare", cmd_compare), ("gate", cmd_gate)):
        p = sub.add_parser(name, help=f"{name} two bench results")
        p.add_argument("--baseline", required=True)
        p.add_argument("--current", required=True)
        if name == "gate":
            p.add_argument("--threshold", type=float, default=10.0,
                           help="allowed p50/p95 regression in percent (exit 2 beyond)")
        p.set_defaults(handler=handler)
    drift = commands.add_parser("drift", help="drift analysis")
    drift_sub = drift.add_subparsers(dest="drift_command", required=True)
    analyze = drift_sub.add_parser("analyze", help="more than one result digest = drift")
    analyze.add_argument("--bench", required=True)
    analyze.add_argument("--out")
    analyze.set_defaults(handler=cmd_drift)
