"""The `requiem` command line: parse arguments, call one function, print one JSON document."""

from __future__ import annotations

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
from requiem.json_text import pretty

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any

# Commands that would run the Requiem engine; FORCE_RUST=1 hands them back to the caller.
_ENGINE_COMMANDS = frozenset({"exec"})
# Diagnostics whose report names a missing BLAKE3 as a blocker instead of failing on it.
_HASH_DIAGNOSTICS = frozenset({"doctor", "validate-replacement"})


def emit(document: Any) -> None:
    """Write the one JSON document of this invocation to stdout."""
    sys.stdout.write(pretty(document) + "\n")
    sys.stdout.flush()


# The options of the plain `exec` shapes: required ones, then optional ones.
_PLAIN_EXEC = {"run": (("--request", "--out"), ("--engine",)),
               "batch": (("--requests", "--out"), ("--engine", "--jobs"))}


def _plain_exec(argv: list[str]) -> Any:
    """The arguments of a plain `[--home H] exec run --request R --out O [--engine E]` or
    `[--home H] exec batch --requests R --out O [--jobs N] [--engine E]`, or None.

    `exec run` is the command scripts call thousands of times, and argparse with its
    translation and terminal-size lookups costs each start ~8 ms (~8M instructions of a
    one-request batch, callgrind). Only these exact shapes (each option once, its value in the
    next word, a known engine, a plain decimal --jobs) are taken here; anything else, --help
    and every mistake included, goes through argparse and its error messages.
    """
    options: dict[str, str] = {}
    shape: list[str] = []  # the words in order, each option standing for itself and its value
    words = iter(argv)
    for word in words:
        if word in ("--home", "--request", "--requests", "--out", "--engine", "--jobs"):
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
    if shape[:1] != ["exec"] or len(shape) < 2 or shape[1] not in _PLAIN_EXEC:
        return None
    required, optional = _PLAIN_EXEC[shape[1]]
    given = shape[2:]
    if (not all(option in given for option in required)
            or not all(option in required or option in optional for option in given)
            or options.get("engine", "requiem") not in ("requiem", "rust", "dual")
            or not _plain_count(options.get("jobs", "1"))):
        return None
    from requiem.commands.exec import cmd_batch, cmd_run

    if shape[1] == "run":
        return _Arguments(command="exec", exec_command="run", home=options.get("home"),
                          request=options["request"], out=options["out"],
                          engine=options.get("engine"), handler=cmd_run, bounded=True)
    return _Arguments(command="exec", exec_command="batch", home=options.get("home"),
                      requests=options["requests"], out=options["out"],
                      jobs=int(options.get("jobs", "1")), engine=options.get("engine"),
                      handler=cmd_batch, bounded=False)


class _Arguments:
    """A plain command line's arguments, named as argparse would name them (types'
    SimpleNamespace would cost every cold start the types module's import)."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def _plain_count(value: str) -> bool:
    """A count argparse's int() reads the same way: ASCII digits, and few of them."""
    return value.isascii() and value.isdigit() and len(value) <= 6


def _plain_health(argv: list[str]) -> Any:
    """The arguments of a plain `[--home H] health` (the handshake scripts poll), or None."""
    if argv == ["health"] or (len(argv) == 3 and argv[0] == "--home" and argv[2] == "health"
                              and not argv[1].startswith("-")):
        from requiem.commands.health import cmd_health

        return _Arguments(command="health", home=argv[1] if len(argv) == 3 else None,
                          handler=cmd_health, bounded=True)
    return None


def _plain(argv: list[str]) -> Any:
    """The arguments of a plain `exec run`, `exec batch` or `health`, parsed without argparse,
    or None. `bounded`: a short command that may skip the cyclic GC and interpreter teardown."""
    return _plain_exec(argv) or _plain_health(argv)


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

    A plain `exec run` or `health` is short and bounded, so it skips the cyclic GC, whose passes
    over the freshly imported modules cost ~9M instructions. A plain `exec batch` may run for
    hours and keeps the GC, with the modules imported so far frozen out of its passes. All
    three skip interpreter teardown (~20M) by leaving through os._exit once their output is
    flushed: they have closed their backends, files, records and workers by then. Everything
    else exits normally.
    """
    argv = sys.argv[1:]
    if (args := _plain(argv)) is None:
        raise SystemExit(main(argv))
    import gc

    if args.bounded:
        gc.disable()
    else:
        gc.freeze()
    code = _run(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    console_main()
