"""`requiem-tui`: the operator's live view of a Requiem home (what on-call lives in)."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Static

from requiem.tui.executions import ExecutionsPanel
from requiem.tui.messages import FindingsReady, HealthReady, RefreshFailed, SnapshotReady
from requiem.tui.panels import CasPanel, HealthPanel, MismatchPanel, SandboxPanel, WarningsPanel

if TYPE_CHECKING:
    from requiem.analytics import CasInventory, Probes, Snapshot
    from requiem.home import Home

DEFAULT_REFRESH_S = 2.0
DEFAULT_LIMIT = 200
# The doctor re-hashes 32 whole CAS objects and probes the machine: worth doing at start, on
# `r` and every few minutes, never every refresh.
DOCTOR_EVERY_S = 300.0


class StatusBar(Static):
    """One line: which home, when the data was read and how long that took, or what failed."""

    def show(self, home: Home, snap: Snapshot, every_s: float) -> None:
        self.update(Text.assemble(
            ("requiem-tui ", "bold"), (str(home.root), "cyan"),
            f" · refreshed {snap.taken_at:%H:%M:%S} UTC in {snap.elapsed_ms:.0f} ms · every "
            f"{every_s:g} s", *((" · filter: ", (snap.filter, "bold yellow")) if snap.filter
                                else ())))

    def failed(self, error: str) -> None:
        self.update(Text(f"refresh failed (the last data stays on screen): {error}", "bold red"))


class RequiemApp(App[None]):
    """Health, sandbox, dual-run mismatches, CAS and recent executions, refreshed live.

    Every refresh runs in a thread worker that posts a message; the next one is scheduled only
    when it has been shown, so refreshes never overlap and the history is held only while one
    runs. Only message handlers touch widgets.
    """

    CSS_PATH = "app.tcss"
    TITLE = "requiem-tui"
    BINDINGS = [
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("r", "refresh", "Refresh"),
        Binding("c", "open_cas", "CAS"),
        Binding("m", "open_mismatches", "Mismatches"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, home: Home, refresh_s: float = DEFAULT_REFRESH_S,
                 limit: int = DEFAULT_LIMIT, probes: Probes | None = None,
                 doctor_every_s: float = DOCTOR_EVERY_S) -> None:
        super().__init__()
        self.home = home
        self.refresh_s = refresh_s
        self.limit = limit
        self.probes = probes
        self.doctor_every_s = doctor_every_s
        self.snapshot: Snapshot | None = None
        self.filter_text = ""
        self._inventory: CasInventory | None = None
        self._refreshing = False
        self._refresh_again = False
        self._timer: Timer | None = None
        self._doctor_running = False
        self._doctor_at = float("-inf")

    def compose(self) -> ComposeResult:
        yield StatusBar(Text("requiem-tui · reading the history…", "dim"), id="status")
        with Horizontal(id="top"):
            yield HealthPanel(id="health")
            yield SandboxPanel(id="sandbox")
        with Horizontal(id="middle"):
            yield MismatchPanel(id="mismatches")
            yield CasPanel(id="cas")
        with Horizontal(id="bottom"):
            yield ExecutionsPanel(id="executions")
            yield WarningsPanel(id="warnings")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#executions-table").focus()
        self.action_refresh()

    # -- refresh: worker -> message -> handler -> next timer ---------------------------------

    def action_refresh(self) -> None:
        """Refresh now and run the doctor again."""
        self.refresh_now(doctor=True)

    def refresh_now(self, doctor: bool = False) -> None:
        """Read the history now (a refresh in flight is followed by another); maybe the doctor."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if doctor or time.monotonic() - self._doctor_at >= self.doctor_every_s:
            self._start_doctor()
        if self._refreshing:
            self._refresh_again = True
            return
        self._refreshing = True
        self._load_snapshot(self.filter_text, first=self.snapshot is None)

    def _start_doctor(self) -> None:
        # It waits for the first data, which it would otherwise slow down.
        if self._doctor_running or self.snapshot is None:
            return
        self._doctor_running = True
        self._doctor_at = time.monotonic()
        self._run_doctor()

    def inventory(self) -> CasInventory:
        """The CAS inventory shared by refreshes and the CAS view (headers are read once)."""
        if self._inventory is None:
            from requiem.analytics import CasInventory

            self._inventory = CasInventory(self.home.cas_root)
        return self._inventory

    @work(thread=True, exit_on_error=False, group="refresh")
    def _load_snapshot(self, filter_text: str, first: bool) -> None:
        try:
            if first:
                # The first paint need not wait for Polars and DuckDB: the core knows these facts.
                from requiem.diagnostics import health

                self.post_message(HealthReady((self.probes.health if self.probes else health)(
                    self.home)))
            from requiem.analytics import snapshot

            snap = snapshot(self.home, limit=self.limit, filter=filter_text or None,
                            inventory=self.inventory(), probes=self.probes)
        except Exception as exc:  # busy or broken history: say so, keep the last data
            self.post_message(RefreshFailed(f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(SnapshotReady(snap))

    @work(thread=True, exit_on_error=False, group="doctor")
    def _run_doctor(self) -> None:
        from requiem.analytics import findings

        try:
            found = findings(self.home, self.probes)
        except Exception as exc:  # the doctor failing is itself a finding to show
            self.post_message(FindingsReady(None, f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(FindingsReady(found))

    @on(HealthReady)
    def _health_ready(self, message: HealthReady) -> None:
        if self.snapshot is None:
            self.query_one(HealthPanel).show_core(message.health)
            self.query_one(SandboxPanel).show(message.health)

    @on(SnapshotReady)
    def _snapshot_ready(self, message: SnapshotReady) -> None:
        snap = self.snapshot = message.snapshot
        with self.batch_update():
            for panel in (HealthPanel, MismatchPanel, CasPanel):
                self.query_one(panel).show(snap)
            self.query_one(SandboxPanel).show(snap.health)
            self.query_one(ExecutionsPanel).show(snap)
            self.query_one(StatusBar).show(self.home, snap, self.refresh_s)
        self._refreshed()

    @on(RefreshFailed)
    def _refresh_failed(self, message: RefreshFailed) -> None:
        self.query_one(StatusBar).failed(message.error)
        self._refreshed()

    def _refreshed(self) -> None:
        self._refreshing = False
        if self._doctor_at == float("-inf"):
            self._start_doctor()
        if self._refresh_again:
            self._refresh_again = False
            self.refresh_now()
        else:
            self._timer = self.set_timer(self.refresh_s, self.refresh_now)

    @on(FindingsReady)
    def _findings_ready(self, message: FindingsReady) -> None:
        self._doctor_running = False
        self.query_one(WarningsPanel).show(message.findings, message.error)

    # -- navigation -----------------------------------------------------------------------

    @on(ExecutionsPanel.FilterChanged)
    def _filter_changed(self, message: ExecutionsPanel.FilterChanged) -> None:
        self.filter_text = message.text
        self.refresh_now()

    @on(ExecutionsPanel.Opened)
    def _open_execution(self, message: ExecutionsPanel.Opened) -> None:
        from requiem.tui.detail import DetailScreen

        self.push_screen(DetailScreen(self.home, message.record_id))

    def action_filter(self) -> None:
        self.query_one(ExecutionsPanel).open_filter()

    def action_help(self) -> None:
        from requiem.tui.help import HelpScreen

        self.push_screen(HelpScreen())

    def action_open_cas(self) -> None:
        from requiem.tui.views import CasScreen

        clock = self.probes.clock() if self.probes else None
        self.push_screen(CasScreen(self.home, self.inventory(), now=clock))

    def action_open_mismatches(self) -> None:
        from requiem.tui.views import MismatchScreen

        self.push_screen(MismatchScreen(self.home))

    def action_open_sandbox(self) -> None:
        from requiem.tui.views import SandboxScreen

        if self.snapshot is not None:
            self.push_screen(SandboxScreen(self.snapshot.health.get("sandbox_capabilities", {})))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Refresh now", "Read the history and run the doctor again",
                            self.action_refresh)
        yield SystemCommand("Filter executions", "Show only executions matching a text",
                            self.action_filter)
        yield SystemCommand("CAS view", "Largest objects, GC candidates, last verify and GC",
                            self.action_open_cas)
        yield SystemCommand("Mismatches and drift", "Newest mismatching dual runs, drifting "
                            "requests", self.action_open_mismatches)
        yield SystemCommand("Sandbox reasons", "Every capability's state with its full reason",
                            self.action_open_sandbox)
        yield SystemCommand("Keys and panels", "What each key does and each panel shows",
                            self.action_help)


def _positive(convert: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: a number (int or float) that must be > 0."""

    def parse(text: str) -> float:
        value = convert(text)
        if value <= 0:
            raise argparse.ArgumentTypeError("must be > 0")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `requiem-tui` console script."""
    from requiem.commands import home_of
    from requiem.errors import RequiemError
    from requiem.home import Home

    parser = argparse.ArgumentParser(prog="requiem-tui", description=__doc__)
    parser.add_argument("--home", help="state directory (default $REQUIEM_HOME or ./.requiem)")
    parser.add_argument("--refresh", type=_positive(float), default=DEFAULT_REFRESH_S,
                        metavar="SECONDS",
                        help=f"seconds between refreshes (default {DEFAULT_REFRESH_S:g})")
    parser.add_argument("--limit", type=_positive(int), default=DEFAULT_LIMIT,
                        help=f"recent executions shown (default {DEFAULT_LIMIT})")
    args = parser.parse_args(argv)
    try:
        home = home_of(args)
    except RequiemError:
        home = Home.resolve(args.home)  # the health panel shows why config.json is invalid
    RequiemApp(home, refresh_s=args.refresh, limit=args.limit).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
