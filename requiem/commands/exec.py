"""`requiem exec run|batch|replay` and `requiem digest verify`."""

from __future__ import annotations

import os

from requiem.commands import home_of
from requiem.errors import EXIT_FAILED, EXIT_OK, INVALID_REQUEST, RequiemError
from requiem.json_text import pretty

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any
    import argparse


def write_json(path: str, document: Any) -> None:
    """Write a JSON file atomically (temp beside it, rename)."""
    temp = f"{path}.{os.getpid()}.part"
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write(pretty(document) + "\n")
    os.replace(temp, path)


def _exit_code(document: dict[str, Any]) -> int:
    return EXIT_OK if document.get("ok") is True else EXIT_FAILED


def cmd_run(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem import canonical
    from requiem.engines import Session

    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):  # before running anything: the result would have nowhere to go
        raise RequiemError(INVALID_REQUEST, f"--out: no such directory: {out_dir}")
    try:
        session = Session(home_of(args))
    except RequiemError as exc:  # e.g. config_invalid: the caller still finds --out
        write_json(args.out, exc.to_json())
        return exc.to_json(), exc.exit_code
    try:
        try:
            document = canonical.load_file(args.request)
        except RequiemError as exc:
            result = session.refuse(exc, args.engine)
        else:
            result = session.execute(document, args.engine)
    finally:
        session.close()
    write_json(args.out, result)
    return result, _exit_code(result)


def cmd_batch(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem.batch import run_batch

    summary = run_batch(home_of(args), args.requests, args.out, jobs=args.jobs, engine=args.engine)
    return summary, EXIT_OK if summary["failed"] == 0 else EXIT_FAILED


def cmd_replay(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem.replay import replay

    report = replay(home_of(args), args.request, args.result)
    return report, _exit_code(report)


def cmd_digest_verify(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem.replay import verify_digests

    report = verify_digests(args.result, args.request)
    return report, _exit_code(report)


def register(commands: Any) -> None:
    exec_ = commands.add_parser("exec", help="run requests")
    sub = exec_.add_subparsers(dest="exec_command", required=True)
    engines = ["requiem", "rust", "dual"]

    run = sub.add_parser("run", help="run one request")
    run.add_argument("--request", required=True)
    run.add_argument("--out", required=True)
    run.add_argument("--engine", choices=engines)
    run.set_defaults(handler=cmd_run)

    batch = sub.add_parser("batch", help="run a JSONL file of requests in one process (--jobs N: N workers)")
    batch.add_argument("--requests", required=True)
    batch.add_argument("--out", required=True)
    batch.add_argument("--jobs", type=int, default=1)
    batch.add_argument("--engine", choices=engines)
    batch.set_defaults(handler=cmd_batch)

    replay = sub.add_parser("replay", help="re-run a request and check its recorded result")
    replay.add_argument("--request", required=True)
    replay.add_argument("--result", required=True)
    replay.add_argument("--cas", help="CAS root (default <home>/cas)")
    replay.set_defaults(handler=cmd_replay)

    digest = commands.add_parser("digest", help="digest checks")
    digest_sub = digest.add_subparsers(dest="digest_command", required=True)
    verify = digest_sub.add_parser("verify", help="recompute a result's digests from the file")
    verify.add_argument("--result", required=True)
    verify.add_argument("--request", help="also recompute request_digest from this request")
    verify.set_defaults(handler=cmd_digest_verify)
