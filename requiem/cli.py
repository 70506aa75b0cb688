"""The `requiem` command line: parse arguments, call one function, print one JSON document."""

from __future__ import annotations

import json
import os
import sys

from requiem.errors import (
    ENGINE_UNAVAILABLE,
    EXIT_FAILED,
    EXIT_FORCE_RUST,
    INVALID_REQUEST,
    QUOTA_EXCEEDED,
    RequiemError,
)

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any

# Commands that would run the Requiem engine; FORCE_RUST=1 hands them back to the caller.
_ENGINE_COMMANDS = frozenset({"exec"})
# Diagnostics whose report names a missing BLAKE3 as a blocker instead of failing on it.
_HASH_DIAGNOSTICS = frozenset({"doctor", "validate-replacement"})


def emit(document: Any) -> None:
    """Write the one JSON document of this invocation to stdout."""
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _plain_exec_run(argv: list[str]) -> Any:
    """The arguments of a plain `[--home H] exec run --request R --out O [--engine E]`, or None.

    `exec run` is the command scripts call thousands of times, and argparse with its
    translation and terminal-size lookups costs each start ~8 ms. Only this exact shape (each
    option once, its value in the next word, a known engine) is taken here; anything else,
    --help and every mistake included, goes through argparse and its error messages.
    """
    options: dict[str, str] = {}
    shape: list[str] = []  # the words in order, each option standing for itself and its value
    words = iter(argv)
    for word in words:
        if word in ("--home", "--request", "--out", "--engine"):
            value = next(words, None)
            if word in shape or value is None or value.startswith("-"):
                return None
            options[word[2:]] = value
            shape.append(word)
        elif word.startswith("-"):
            return None
        else:
            shape.append(word)
    if shape[:1] == ["--home"]:
        shape.pop(0)  # the only top-level option, and argparse wants it before the command
    if (shape[:2] != ["exec", "run"] or sorted(shape[2:]) not in (
            ["--out", "--request"], ["--engine", "--out", "--request"])
            or options.get("engine", "requiem") not in ("requiem", "rust", "dual")):
        return None
    from types import SimpleNamespace

    from requiem.commands.exec import cmd_run

    return SimpleNamespace(command="exec", exec_command="run", home=options.get("home"),
                           request=options["request"], out=options["out"],
                           engine=options.get("engine"), handler=cmd_run)


def _plain_health(argv: list[str]) -> Any:
    """The arguments of a plain `[--home H] health` (the handshake scripts poll), or None."""
    if argv == ["health"] or (len(argv) == 3 and argv[0] == "--home" and argv[2] == "health"
                              and not argv[1].startswith("-")):
        from types import SimpleNamespace

        from requiem.commands.health import cmd_health

        return SimpleNamespace(command="health", home=argv[1] if len(argv) == 3 else None,
                               handler=cmd_health)
    return None


def _plain(argv: list[str]) -> Any:
    """The arguments of a plain `exec run` or `health`, parsed without argparse, or None."""
    return _plain_exec_run(argv) or _plain_health(argv)


def main(argv: list[str] | None = None) -> int:
    """Run one `requiem` command line and return its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if (args := _plain(argv)) is None:
        from requiem.parser import build_parser

        args = build_parser(argv).parse_args(argv)
    return _run(args)


def _run(args: Any) -> int:
    """Run parsed arguments: print the command's one JSON document, return its exit code."""
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


def console_main() -> None:
    """The `requiem` console script: main(), with a lighter start and end for the plain commands.

    A plain `exec run` or `health` is short and bounded, so it skips what only long processes
    need: the cyclic GC, whose passes over the freshly imported modules cost ~9M instructions, and
    interpreter teardown (~20M), by leaving through os._exit once its output is flushed (the
    run has closed its backends, files and records by then). Everything else exits normally.
    """
    argv = sys.argv[1:]
    if (args := _plain(argv)) is None:
        raise SystemExit(main(argv))
    import gc

    gc.disable()
    code = _run(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    console_main()
