"""The `requiem` command line: parse arguments, call one function, print one JSON document."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, NoReturn

from requiem.errors import EXIT_FAILED, EXIT_FORCE_RUST, EXIT_OK, EXIT_USAGE, INVALID_REQUEST, RequiemError

Handler = Callable[[argparse.Namespace], tuple[Any, int]]


class _JsonArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are contract JSON on stdout with exit 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        _emit(RequiemError(INVALID_REQUEST, f"usage: {message}").to_json())
        raise SystemExit(EXIT_USAGE)


def _emit(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _progress(message: str) -> None:
    """Progress for long operations goes to stderr, and only when stderr is a terminal."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{message}\033[K")
        sys.stderr.flush()


# -- handlers -------------------------------------------------------------------------------


def _home(args: argparse.Namespace) -> Any:
    from requiem.home import Home

    return Home.resolve(getattr(args, "home", None), getattr(args, "cas", None))


def _cas(args: argparse.Namespace) -> Any:
    from requiem.cas import Cas

    return Cas(_home(args).cas_root)


def cmd_health(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem.diagnostics import health

    doc = health(_home(args))
    return doc, EXIT_OK if doc["hash_available"] else EXIT_FAILED


def cmd_cas_put(args: argparse.Namespace) -> tuple[Any, int]:
    encoding = args.compress or "identity"
    info = _cas(args).put_file(args.input, encoding=encoding, level=args.level)
    return {"ok": True, **info.to_json()}, EXIT_OK


def cmd_cas_get(args: argparse.Namespace) -> tuple[Any, int]:
    info = _cas(args).get_to_file(args.digest, args.out)
    return {"ok": True, "out": os.path.abspath(args.out), **info.to_json()}, EXIT_OK


def cmd_cas_info(args: argparse.Namespace) -> tuple[Any, int]:
    return {"ok": True, **_cas(args).info(args.digest).to_json()}, EXIT_OK


def cmd_cas_ls(args: argparse.Namespace) -> tuple[Any, int]:
    objects = []
    for item in _cas(args).list_objects():
        if isinstance(item, tuple):
            objects.append({"digest": item[0], "malformed": item[1]})
        else:
            objects.append(item.to_json())
    objects.sort(key=lambda o: o["digest"])
    return {"ok": True, "count": len(objects), "objects": objects}, EXIT_OK


def cmd_cas_stats(args: argparse.Namespace) -> tuple[Any, int]:
    return {"ok": True, **_cas(args).stats(top=args.top)}, EXIT_OK


def cmd_cas_verify(args: argparse.Namespace) -> tuple[Any, int]:
    _progress("verifying CAS objects…")
    report = _cas(args).verify(sample=None if args.all else args.sample, seed=args.seed)
    _progress("")
    return report, EXIT_OK if report["ok"] else EXIT_FAILED


# -- parser ---------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; cheap to build (no heavy imports)."""
    parser = _JsonArgumentParser(prog="requiem", description=__doc__)
    parser.add_argument("--home", help="state directory (default $REQUIEM_HOME or ./.requiem)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_JsonArgumentParser)

    health = commands.add_parser("health", help="hash, versions and sandbox capabilities")
    health.set_defaults(handler=cmd_health)

    cas = commands.add_parser("cas", help="the content-addressed store")
    cas_commands = cas.add_subparsers(dest="cas_command", required=True)

    def cas_parser(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = cas_commands.add_parser(name, help=help_text)
        sub.add_argument("--cas", help="CAS root (default <home>/cas)")
        sub.set_defaults(handler=handler)
        return sub

    put = cas_parser("put", cmd_cas_put, "store a file")
    put.add_argument("--in", dest="input", required=True)
    put.add_argument("--compress", choices=["zstd", "identity"])
    put.add_argument("--level", type=int, default=3)
    get = cas_parser("get", cmd_cas_get, "write an object's content to a file")
    get.add_argument("--digest", required=True)
    get.add_argument("--out", required=True)
    info = cas_parser("info", cmd_cas_info, "an object's metadata")
    info.add_argument("--digest", required=True)
    cas_parser("ls", cmd_cas_ls, "list objects")
    stats = cas_parser("stats", cmd_cas_stats, "counts, bytes, ratio, largest objects")
    stats.add_argument("--top", type=_positive_int, default=10)
    verify = cas_parser("verify", cmd_cas_verify, "re-hash objects; exit 1 if any is corrupt")
    mode = verify.add_mutually_exclusive_group()
    mode.add_argument("--all", action="store_true", default=True)
    mode.add_argument("--sample", type=_positive_int)
    verify.add_argument("--seed", type=int, help="seed for --sample (reproducible choice)")
    return parser


_FORCE_RUST_COMMANDS = frozenset({"exec"})


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `requiem` console script."""
    args = build_parser().parse_args(argv)
    if getattr(args, "sample", None) is not None:
        args.all = False
    if args.command in _FORCE_RUST_COMMANDS and os.environ.get("FORCE_RUST") == "1":
        _emit({"ok": False, "force_rust": True,
               "message": "FORCE_RUST=1: the Requiem engine is disabled; use the Rust engine"})
        return EXIT_FORCE_RUST
    try:
        from requiem import hashing

        hashing.require()
        document, code = args.handler(args)
    except RequiemError as exc:
        _emit(exc.to_json())
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    _emit(document)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
