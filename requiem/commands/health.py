"""`requiem health`: the handshake."""

from __future__ import annotations

from requiem.commands import home_of
from requiem.errors import EXIT_FAILED, EXIT_OK

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    import argparse
    from typing import Any


def cmd_health(args: argparse.Namespace) -> tuple[Any, int]:
    from requiem.diagnostics import health

    doc = health(home_of(args))
    return doc, EXIT_OK if doc["hash_available"] else EXIT_FAILED


def register(commands: Any) -> None:
    sub = commands.add_parser("health", help="hash, versions and sandbox capabilities")
    sub.set_defaults(handler=cmd_health)
