"""`requiem doctor` and `requiem validate-replacement`: is this machine fit to run Requiem?"""

from __future__ import annotations

import argparse
from typing import Any

from requiem.commands import home_of
from requiem.errors import EXIT_FAILED, EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem.diagnostics import doctor
    from requiem.errors import CONFIG_INVALID, RequiemError
    from requiem.home import Home

    try:
        home = home_of(args)
    except RequiemError as exc:
        if exc.code != CONFIG_INVALID:
            raise
        # Doctor must still run to report the broken config as a blocker.
        home = Home.resolve(args.home, args.cas)
    report = doctor(home)
    return report, EXIT_OK if report["ok"] else EXIT_FAILED


def cmd_validate_replacement(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem.diagnostics import validate_replacement

    report = validate_replacement(home_of(args))
    return report, EXIT_OK if report["ok"] else EXIT_FAILED


def register(commands: Any) -> None:
    doctor = commands.add_parser("doctor", help="blockers and warnings, each with its fix")
    doctor.add_argument("--cas", help="CAS root (default <home>/cas)")
    doctor.set_defaults(handler=cmd_doctor)
    replace = commands.add_parser("validate-replacement",
                                  help="may Requiem replace the legacy engine here?")
    replace.add_argument("--cas", help="CAS root (default <home>/cas)")
    replace.set_defaults(handler=cmd_validate_replacement)
