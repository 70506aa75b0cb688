"""CLI command groups: each module adds its subcommands and lazily imports what they use.

A module here may import only the standard library and light requiem modules at import time,
so that `requiem health` and `requiem exec run` start fast.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable

Handler = Callable[[argparse.Namespace], tuple[Any, int]]

# Registration order is the order of `requiem --help`.
MODULES = ("health", "cas", "exec", "history", "metrics", "config", "diagnose", "proof", "bench",
           "demo")


def home_of(args: argparse.Namespace) -> Any:
    """The Home for this invocation (--home, $REQUIEM_HOME, ./.requiem; --cas overrides)."""
    from requiem.home import Home

    return Home.resolve(getattr(args, "home", None), getattr(args, "cas", None))


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def register_all(commands: Any) -> None:
    """Let every command module that exists add its subcommands."""
    import importlib

    here = os.path.dirname(__file__)
    for name in MODULES:
        if os.path.exists(os.path.join(here, f"{name}.py")):
            importlib.import_module(f"requiem.commands.{name}").register(commands)
