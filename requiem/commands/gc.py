"""`requiem cas gc`, `cas pin`, `cas unpin`: garbage collection of the CAS and its pins."""

from __future__ import annotations

import argparse
from typing import Any

from requiem.commands import home_of, non_negative_int
from requiem.errors import EXIT_OK


def _duration(text: str) -> str:
    """argparse type: a duration with a ms|s|m|h|d suffix (kept as text for the report)."""
    from requiem.errors import RequiemError
    from requiem.gc import parse_duration

    try:
        parse_duration(text)
    except RequiemError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text


def cmd_gc(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem.gc import collect

    return collect(home_of(args), execute=args.execute, grace=args.grace, limit=args.limit), EXIT_OK


def cmd_pin(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem.gc import pin

    return pin(home_of(args), args.digest, pinned=True), EXIT_OK


def cmd_unpin(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem.gc import pin

    return pin(home_of(args), args.digest, pinned=False), EXIT_OK


def _cas_subcommands(commands: Any) -> Any:
    """The `cas` group's subcommand table (commands/cas.py creates the group)."""
    cas = commands.choices["cas"]
    # argparse keeps a group's subparsers only as one of its actions.
    return next(a for a in cas._actions if isinstance(a, argparse._SubParsersAction))


def register(commands: Any) -> None:
    from requiem.gc import DEFAULT_GRACE

    cas_commands = _cas_subcommands(commands)
    gc = cas_commands.add_parser("gc", help="delete unreferenced objects (dry run by default)")
    gc.add_argument("--cas", help="CAS root (default <home>/cas)")
    gc.add_argument("--execute", action="store_true", help="delete (default: only list)")
    gc.add_argument("--grace", type=_duration, default=DEFAULT_GRACE,
                    help=f"keep objects younger than this at GC start (ms|s|m|h|d; "
                         f"default {DEFAULT_GRACE})")
    gc.add_argument("--limit", type=non_negative_int, default=100,
                    help="candidates to list (counts are always complete)")
    gc.set_defaults(handler=cmd_gc)
    for name, handler, text in (("pin", cmd_pin, "keep an object whatever the history says"),
                                ("unpin", cmd_unpin, "drop a pin")):
        sub = cas_commands.add_parser(name, help=text)
        sub.add_argument("--cas", help="CAS root (default <home>/cas)")
        sub.add_argument("--digest", required=True)
        sub.set_defaults(handler=handler)
