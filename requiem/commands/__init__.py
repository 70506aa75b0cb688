"""CLI command groups: each module adds its subcommands and lazily imports what they use.

A module here may import only the standard library and light requiem modules at import time,
so that `requiem health` and `requiem exec run` start fast.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    import argparse
    from typing import Any, Callable

    Handler = Callable[[argparse.Namespace], tuple[Any, int]]


# Registration order is the order of `requiem --help`.
MODULES = ("health", "cas", "gc", "exec", "history", "metrics", "config", "diagnose", "proof",
           "bench", "demo")
# Top-level commands whose module is not named after them.
COMMAND_MODULES = {"digest": "exec", "drift": "bench", "doctor": "diagnose",
                   "validate-replacement": "diagnose"}
# Modules that add subcommands to another module's group (gc adds `cas gc`, `cas pin`).
COMPANION_MODULES = {"cas": ("gc",)}


def home_of(args: argparse.Namespace) -> Any:
    """The Home for this invocation (--home, $REQUIEM_HOME, ./.requiem; --cas, else config)."""
    from requiem.home import Home

    home = Home.resolve(getattr(args, "home", None), getattr(args, "cas", None))
    if getattr(args, "cas", None) is None and os.path.exists(home.config_location):
        from requiem.config import load_config

        root = load_config(home)["cas"]["root"]
        if root:
            home = home._replace(cas_location=str(root))
    return home


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    import argparse

    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def register(commands: Any, command: str | None = None) -> None:
    """Add the subcommands of the module serving `command`, or of every module.

    Building every parser costs milliseconds (argparse looks up translations per string), so a
    known command registers only its own module: `requiem exec run` must start fast.
    """
    import importlib

    here = os.path.dirname(__file__)
    wanted = COMMAND_MODULES.get(command or "", command)
    names = [wanted, *COMPANION_MODULES.get(wanted, ())] if wanted in MODULES else list(MODULES)
    for name in names:
        if os.path.exists(os.path.join(here, f"{name}.py")):
            importlib.import_module(f"requiem.commands.{name}").register(commands)
