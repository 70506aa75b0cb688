"""Deeper views opened from the main screen: CAS triage, mismatches and drift, sandbox reasons."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from requiem.tui.format import (
    SEVERITY_STYLE,
    STATE_STYLE,
    clock,
    count,
    human_bytes,
    human_duration,
)
from requiem.tui.messages import ReportReady

if TYPE_CHECKING:
    from datetime import datetime

    from requiem.analytics import CasInventory
    from requiem.home import Home


class ReportScreen(Screen[None]):
    """A screen whose data one worker gathers (one short hold) and one handler renders."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("r", "reload", "Reload")]
    TITLE = ""

    def __init__(self, home: Home) -> None:
        super().__init__()
        self.home = home

    def compose(self) -> ComposeResult:
        yield Static(Text(f"{self.TITLE} · loading…", "dim"), classes="view-title")
        yield from self.body()
        yield Footer()

    def body(self) -> ComposeResult:
        """The widgets the report fills."""
        raise NotImplementedError

    def gather(self) -> dict[str, Any]:
        """Read the report (runs in a worker thread: no widgets here)."""
        raise NotImplementedError

    def show(self, report: dict[str, Any]) -> None:
        """Fill the widgets from the report (runs on the UI thread)."""
        raise NotImplementedError

    def on_mount(self) -> None:
        self.action_reload()

    @work(thread=True, exclusive=True, exit_on_error=False, group="report")
    def action_reload(self) -> None:
        try:
            report = self.gather()
        except Exception as exc:  # a viewer shows any failure instead of crashing
            self.post_message(ReportReady(None, f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(ReportReady(report))

    @on(ReportReady)
    def _ready(self, message: ReportReady) -> None:
        title = self.query_one(".view-title", Static)
        if message.report is None:
            title.update(Text(f"{self.TITLE}: {message.error}", "bold red"))
            return
        self.show(message.report)


def _table(widget: DataTable[Any], *columns: str) -> DataTable[Any]:
    widget.clear(columns=True)
    widget.add_columns(*columns)
    return widget


class CasScreen(ReportScreen):
    """The CAS: totals, the largest objects, GC candidates, the last verify and GC."""

    TITLE = "CAS"

    def __init__(self, home: Home, inventory: CasInventory,
                 now: datetime | None = None) -> None:
        super().__init__(home)
        self.inventory = inventory
        self.now = now

    def body(self) -> ComposeResult:
        with TabbedContent():
            with TabPane("Largest objects", id="cas-top"):
                yield DataTable(id="top-table", cursor_type="row")
            with TabPane("GC candidates", id="cas-gc"):
                yield DataTable(id="gc-table", cursor_type="row")
            with TabPane("Verify & GC", id="cas-verify"):
                with VerticalScroll():
                    yield Static(id="verify-body")

    def gather(self) -> dict[str, Any]:
        from requiem.analytics import cas_report

        return cas_report(self.home, self.inventory, top=100, now=self.now)

    def show(self, report: dict[str, Any]) -> None:
        grace = human_duration(report["grace"])
        self.query_one(".view-title", Static).update(Text.assemble(
            ("CAS ", "bold"), f"{self.home.cas_root} · {count(report['objects'])} objects · "
            f"{human_bytes(report['original_bytes'])} → {human_bytes(report['stored_bytes'])} "
            f"stored · ratio {report['compression_ratio']:.2f}× · "
            f"{count(report['unreferenced'].height)} unreferenced"))
        top = _table(self.query_one("#top-table", DataTable), "digest", "encoding", "original",
                     "stored", "ratio", "created (UTC)")
        for row in report["top"].iter_rows(named=True):
            ratio = row["original_size"] / row["stored_size"] if row["stored_size"] else 1.0
            top.add_row(row["digest"], row["encoding"], human_bytes(row["original_size"]),
                        human_bytes(row["stored_size"]), f"{ratio:.2f}×",
                        clock(row["created_at"]))
        gc = _table(self.query_one("#gc-table", DataTable), "digest", "encoding", "stored",
                    "age", f"at the default grace ({grace})")
        for row in report["unreferenced"].iter_rows(named=True):
            gc.add_row(row["digest"], row["encoding"], human_bytes(row["stored_size"]),
                       "—" if row["age_s"] is None else f"{row['age_s'] / 3600:.1f} h",
                       Text("candidate", "yellow") if row["gc_eligible"]
                       else Text("young: kept", "dim"))
        self.query_one("#verify-body", Static).update(self._verify(report))

    def _verify(self, report: dict[str, Any]) -> Table:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column()
        verify = report["last_verify"]
        if verify is None:
            grid.add_row("verify", Text("never run", "yellow"))
        else:
            grid.add_row("verify", f"{verify['mode']} at {clock(verify['recorded_at'])} UTC: "
                                   f"{count(verify['objects_checked'])} of "
                                   f"{count(verify['objects_total'])} objects checked, "
                                   f"{human_bytes(verify['bytes_checked'])}")
            for item in verify["corrupt"]:
                grid.add_row(Text("corrupt", "bold red"),
                             Text(f"{item['digest']}\n{item['reason']}", "red"))
        gc = report["last_gc"]
        if gc is not None:
            grid.add_row("gc", f"{gc['mode'].replace('_', ' ')} at {clock(gc['recorded_at'])} "
                               f"UTC: {count(gc['objects_scanned'])} scanned, "
                               f"{count(gc['candidates'])} candidates "
                               f"({human_bytes(gc['candidate_bytes'])}), "
                               f"{count(gc['deleted'])} deleted")
        for label, command in (("re-check", "requiem cas verify --all"),
                               ("inspect", "requiem cas info --digest DIGEST"),
                               ("gc dry run", "requiem cas gc"),
                               ("reclaim", "requiem cas gc --execute")):
            grid.add_row(label, Text(f"$ {command}", "bold cyan"))
        return grid


class MismatchScreen(ReportScreen):
    """The newest mismatching comparisons (Enter opens the primary run) and drifting requests."""

    TITLE = "Dual-run mismatches and drift"
    BINDINGS = [Binding("enter", "open_run", "Open run", show=False)]

    def body(self) -> ComposeResult:
        with TabbedContent():
            with TabPane("Recent mismatches", id="mismatch-recent"):
                yield DataTable(id="mismatch-table", cursor_type="row")
            with TabPane("Drift", id="mismatch-drift"):
                yield DataTable(id="drift-table", cursor_type="row")

    def gather(self) -> dict[str, Any]:
        from requiem import history
        from requiem.analytics import comparison_totals, drift, recent_mismatches

        with history.open_history(self.home, read_only=True) as con:
            return {"totals": comparison_totals(con), "recent": recent_mismatches(con, 200),
                    "drift": drift(con, 200)}

    def show(self, report: dict[str, Any]) -> None:
        totals = report["totals"]
        self.query_one(".view-title", Static).update(Text.assemble(
            (self.TITLE, "bold"), f" · {count(totals['mismatching'])} of "
            f"{count(totals['comparisons'])} comparisons mismatched · "
            f"{count(report['drift'].height)} requests drifted (one request, several results)"))
        recent = _table(self.query_one("#mismatch-table", DataTable), "time (UTC)", "request id",
                        "engines", "worst", "categories")
        for row in report["recent"].iter_rows(named=True):
            recent.add_row(clock(row["recorded_at"]), Text(row["request_id"] or ""),
                           f"{row['primary_engine']} vs {row['secondary_engine']}",
                           Text(row["max_severity"] or "",
                                SEVERITY_STYLE.get(row["max_severity"] or "", "")),
                           ", ".join(row["categories"] or []),
                           key=row["primary_record_id"] or None)
        drift = _table(self.query_one("#drift-table", DataTable), "request digest", "command",
                       "runs", "results", "first seen", "last seen")
        for row in report["drift"].iter_rows(named=True):
            drift.add_row(row["request_digest"], Text(row["command"] or ""), row["runs"],
                          row["results"], clock(row["first_seen"]), clock(row["last_seen"]))

    def action_open_run(self) -> None:
        from requiem.tui.detail import DetailScreen

        table = self.query_one("#mismatch-table", DataTable)
        if not table.row_count:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if key:
            self.app.push_screen(DetailScreen(self.home, key))


class SandboxScreen(Screen[None]):
    """Every sandbox capability with its full reason, and why this backend was chosen."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, capabilities: dict[str, Any]) -> None:
        super().__init__()
        self.capabilities = capabilities

    def compose(self) -> ComposeResult:
        caps = self.capabilities
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True, style="bold")
        grid.add_column()
        for state in ("enforced", "partial", "unsupported"):
            for capability in caps.get(state) or []:
                grid.add_row(Text(state, STATE_STYLE[state]), capability,
                             (caps.get("reasons") or {}).get(capability, ""))
        grid.add_row("", "backend", f"{caps.get('backend')}: {caps.get('backend_reason', '')}")
        yield Static(Text.assemble(("Sandbox capabilities", "bold"),
                                   " · what this machine enforces, as `requiem health` reports it"),
                     classes="view-title")
        with VerticalScroll():
            yield Static(grid)
        yield Footer()
