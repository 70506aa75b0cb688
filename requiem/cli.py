"""The `requiem` command line: parse arguments, call one function, print one JSON document."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NoReturn

from requiem.errors import EXIT_FORCE_RUST, EXIT_USAGE, INVALID_REQUEST, RequiemError

# Commands that would run the Requiem engine; FORCE_RUST=1 hands them back to the caller.
_ENGINE_COMMANDS = frozenset({"exec"})


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


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; cheap to build (no heavy imports)."""
    from requiem.commands import register_all

    parser = JsonArgumentParser(prog="requiem", description=__doc__)
    parser.add_argument("--home", help="state directory (default $REQUIEM_HOME or ./.requiem)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=JsonArgumentParser)
    register_all(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `requiem` console script."""
    args = build_parser().parse_args(argv)
    if args.command in _ENGINE_COMMANDS and os.environ.get("FORCE_RUST") == "1":
        emit({"ok": False, "force_rust": True,
              "message": "FORCE_RUST=1: the Requiem engine is disabled; use the Rust engine"})
        return EXIT_FORCE_RUST
    try:
        from requiem import hashing

        hashing.require()
        document, code = args.handler(args)
    except RequiemError as exc:
        emit(exc.to_json())
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    if document is not None:
        emit(document)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
