"""`requiem demo`: build a realistic history in a home by running a mixed workload for real."""

from __future__ import annotations

import argparse
from typing import Any

from requiem.commands import home_of
from requiem.errors import EXIT_OK


def cmd_demo(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem.demo import run_demo, stderr_progress

    summary = run_demo(home_of(args), progress=stderr_progress)
    stderr_progress(f"done in {summary['elapsed_s']} s; next: {summary['next']}\n")
    return summary, EXIT_OK


def register(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="run a mixed workload into a home (then: requiem-tui --home DIR)")
    # `requiem demo --home DIR` as well as `requiem --home DIR demo`.
    demo.add_argument("--home", default=argparse.SUPPRESS,
                      help="state directory (default $REQUIEM_HOME or ./.requiem)")
    demo.set_defaults(handler=cmd_demo)
