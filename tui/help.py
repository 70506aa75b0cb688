"""The `?` screen: what each key does and what each panel shows."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = (
    ("?", "this help (Esc closes it)"),
    ("/", "filter recent executions (Enter applies, Esc clears)"),
    ("r", "refresh now (also re-runs the doctor)"),
    ("Tab / Shift+Tab", "move between panels"),
    ("Enter", "open what the focused panel or row leads to"),
    ("Esc", "back to the previous screen"),
    ("s / S", "sort the executions by the next column / reverse the order"),
    ("1-7", "in an execution's detail: summary, stdout, stderr, trace, diff, JSON"),
    ("c", "CAS: largest objects, GC candidates, last verify"),
    ("m", "dual-run mismatches and drifting requests"),
    ("Ctrl+P", "command palette"),
    ("q", "quit"),
)
PANELS = (
    ("Health", "hash primitive, versions, default engine and dual-run rate, spool backlog, "
               "history size, last ingest, host CPU, memory and free disk"),
    ("Sandbox", "each capability enforced / partial / unsupported on this machine, with why"),
    ("Dual-run", "mismatches by category with severity, rate, and the rate over time"),
    ("CAS", "objects, bytes, compression ratio, last verify (corrupt objects), last GC"),
    ("Executions", "the newest runs only (bounded); Enter opens result, output, trace, diff"),
    ("On-call", "`requiem doctor` findings, each with the command that addresses it"),
)


class HelpScreen(ModalScreen[None]):
    """Keys and panels, over the main screen."""

    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        keys = Table(title="Keys", box=None, title_style="bold", padding=(0, 2))
        keys.add_column(style="bold cyan", no_wrap=True)
        keys.add_column()
        for key, what in KEYS:
            keys.add_row(key, what)
        panels = Table(title="Panels", box=None, title_style="bold", padding=(0, 2))
        panels.add_column(style="bold", no_wrap=True)
        panels.add_column()
        for name, what in PANELS:
            panels.add_row(name, what)
        with VerticalScroll(id="help"):
            yield Static(keys)
            yield Static(Text(""))
            yield Static(panels)
            yield Static(Text("Numbers come from requiem.analytics; times are UTC.", "dim"))
