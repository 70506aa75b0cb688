"""The `requiem` command line: parse arguments, call one function, print one JSON document."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NoReturn

from requiem.errors import (
    ENGINE_UNAVAILABLE,
    EXIT_FAILED,
    EXIT_FORCE_RUST,
    EXIT_USAGE,
    INVALID_REQUEST,
    QUOTA_EXCEEDED,
    RequiemError,
)

# Commands that would run the Requiem engine; FORCE_RUST=1 hands them back to the caller.
_ENGINE_COMMANDS = frozenset({"exec"})
# Diagnostics whose report names a missing BLAKE3 as a blocker instead of failing on it.
_HASH_DIAGNOSTICS = frozenset({"doctor", "validate-replacement"})


class JsonArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are contract JSON on stdout with exit 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        emit(RequiemError(INVALID_REQUEST, f"usage: {message}").to_json())
        raise SystemExit(EXIT_USAGE)


def emit(document: Any) -> None:
    """Write the one JSON document of this invocation to stdout."""
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


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

    parser = JsonArgumentParser(prog="requiem", description=__doc__)
    parser.add_argument("--home", help="state directory (default $REQUIEM_HOME or ./.requiem)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=JsonArgumentParser)
    register(commands, _command_word(argv) if argv is not None else None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `requiem` console script."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    if args.command in _ENGINE_COMMANDS and os.environ.get("FORCE_RUST") == "1":
        error = RequiemError(ENGINE_UNAVAILABLE, "FORCE_RUST=1: the Requiem engine is disabled; "
                             "use the Rust engine", exit_code=EXIT_FORCE_RUST, force_rust=True)
        emit({**error.to_json(), "force_rust": True})
        return EXIT_FORCE_RUST
    try:
        from requiem import hashing

        if args.command not in _HASH_DIAGNOSTICS:
            hashing.require()
        document, code = args.handler(args)
    except RequiemError as exc:
        emit(exc.to_json())
        return exc.exit_code
    except OSError as exc:  # a path the user named that cannot be read or written
        import errno

        code = QUOTA_EXCEEDED if exc.errno in (errno.ENOSPC, errno.EDQUOT) else INVALID_REQUEST
        where = f"{exc.filename}: " if exc.filename else ""
        emit(RequiemError(code, f"{where}{exc.strerror or exc}", errno=exc.errno).to_json())
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    if document is not None:
        emit(document)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
