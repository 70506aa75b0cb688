"""`requiem history …`: fold the spool, list and show records, export Parquet."""

from __future__ import annotations

import argparse
from typing import Any

from requiem.commands import home_of, non_negative_int
from requiem.errors import EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem.history import SCHEMA_VERSION, history_path, ingest

    home = home_of(args)
    counts = ingest(home)
    return {"ok": True, **counts, "history": str(history_path(home)),
            "schema_version": SCHEMA_VERSION}, EXIT_OK


def cmd_ls(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem.history_queries import list_executions

    return list_executions(home_of(args), args.limit, args.engine, args.failed), EXIT_OK


def cmd_show(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem.history_queries import show

    return show(home_of(args), args.id), EXIT_OK


def cmd_export(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem.history_queries import export_parquet

    return export_parquet(home_of(args), args.parquet), EXIT_OK


def register(commands: Any) -> None:
    history = commands.add_parser("history", help="execution history (DuckDB)")
    actions = history.add_subparsers(dest="history_command", required=True)
    actions.add_parser("ingest", help="fold the spool into the history").set_defaults(
        handler=cmd_ingest)
    ls = actions.add_parser("ls", help="newest executions first")
    ls.add_argument("--limit", type=non_negative_int, default=20)
    ls.add_argument("--engine", help="only this engine (requiem, rust, dual)")
    ls.add_argument("--failed", action="store_true", help="only executions that failed")
    ls.set_defaults(handler=cmd_ls)
    show = actions.add_parser("show", help="a record by id (or id prefix) or request_id")
    show.add_argument("id")
    show.set_defaults(handler=cmd_show)
    export = actions.add_parser("export", help="write the history as Hive-partitioned Parquet")
    export.add_argument("--parquet", required=True, metavar="DIR")
    export.set_defaults(handler=cmd_export)
