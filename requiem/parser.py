"""The argument parser of the `requiem` command line; usage errors are contract JSON."""

from __future__ import annotations

import argparse
import sys

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every start
if TYPE_CHECKING:
    from typing import NoReturn

from requiem.errors import EXIT_USAGE, INVALID_REQUEST, RequiemError


class JsonArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are contract JSON on stdout with exit 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        from requiem.cli import emit

        emit(RequiemError(INVALID_REQUEST, f"usage: {message}").to_json())
        raise SystemExit(EXIT_USAGE)


def _command_word(argv: list[str]) -> str | None:
    """The top-level command in argv (the first word that is not --home or its value)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--home":
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser for argv's command (all commands when argv names none)."""
    from requiem.commands import register

    parser = JsonArgumentParser(prog="requiem",
                                description="Run commands deterministically and provably.")
    parser.add_argument("--home", help="state directory (default $REQUIEM_HOME or ./.requiem)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=JsonArgumentParser)
    register(commands, _command_word(argv) if argv is not None else None)
    return parser
