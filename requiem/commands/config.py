"""`requiem config validate`: check a config file against the schema."""

from __future__ import annotations

import argparse
from typing import Any

from requiem.commands import home_of
from requiem.errors import EXIT_FAILED, EXIT_OK


def cmd_validate(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem.config import validate_file

    report = validate_file(args.file or home_of(args).config_path)
    return report, EXIT_OK if report["ok"] else EXIT_FAILED


def register(commands: Any) -> None:
    config = commands.add_parser("config", help="the configuration file")
    actions = config.add_subparsers(dest="config_command", required=True)
    validate = actions.add_parser("validate", help="exit 0 when valid, 1 with pointed errors")
    validate.add_argument("--file", help="config file (default <home>/config.json)")
    validate.set_defaults(handler=cmd_validate)
