"""One execution in full: summary, stdout/stderr from the CAS, trace events, dual-run diff, JSON."""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any

from rich.json import JSON
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from requiem.tui.format import SEVERITY_STYLE, clock, millis, outcome
from requiem.tui.messages import DetailReady

if TYPE_CHECKING:
    from requiem.analytics import Content, ExecutionDetail
    from requiem.home import Home

# Pretty-printing is for documents a person reads; bigger ones are shown as they are.
PRETTY_LIMIT = 256 << 10
# (pane id, label); the number keys 1-7 open them.
PANES = (("summary", "Summary"), ("stdout", "stdout"), ("stderr", "stderr"), ("trace", "Trace"),
         ("diff", "Dual-run diff"), ("result", "Result JSON"), ("request", "Request JSON"))
SUMMARY_FIELDS = (
    "record_id", "request_id", "engine", "command", "exit_code", "error_code",
    "termination_reason", "recorded_at", "start_timestamp", "end_timestamp", "duration_ms",
    "confidence_level", "confidence_score", "confidence_reasons", "sandbox_enforced",
    "sandbox_partial", "sandbox_unsupported", "cpu_user_s", "cpu_sys_s", "max_rss_kib",
    "request_digest", "result_digest", "stdout_digest", "stderr_digest", "trace_digest",
    "input_digests", "output_digests", "request_object", "result_object", "result_pack",
)


def _json_view(content: Content) -> Text | JSON:
    if content.error:
        return Text(f"{content.digest}: {content.error}", "bold red")
    text = content.text or ""
    if len(text) > PRETTY_LIMIT:
        return Text(text)
    try:
        return JSON(text)
    except ValueError:
        return Text(text)


def _stream_view(name: str, content: Content) -> Text:
    if content.error:
        return Text.assemble((f"{name} {content.digest}: {content.error}\n", "bold red"),
                             ("  $ requiem cas verify --all", "bold cyan"))
    body = Text(content.text or "")
    if not content.text:
        body = Text(f"({name} was empty)", "dim")
    if content.truncated:
        body.append(f"\n… cut at {len(content.text or '')} of {content.size} bytes; whole: "
                    f"requiem cas get --digest {content.digest} --out FILE", "yellow")
    return body


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "—"
    if isinstance(value, dict):
        return "\n".join(f"{k} → {v}" for k, v in value.items()) or "—"
    return "—" if value is None else str(value)


class DetailScreen(Screen[None]):
    """An execution's detail, read in a worker (one short hold, then the CAS)."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back"),
                *(Binding(str(n), f"show_tab('{pane}')", label, show=False)
                  for n, (pane, label) in enumerate(PANES, start=1))]

    def __init__(self, home: Home, record_id: str) -> None:
        super().__init__()
        self.home = home
        self.record_id = record_id
        self.detail: ExecutionDetail | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text(f"execution {self.record_id} · loading…", "dim"), id="detail-title")
        with TabbedContent(id="detail-tabs"):
            for n, (pane_id, label) in enumerate(PANES, start=1):
                with TabPane(f"{n} {label}", id=pane_id):
                    if pane_id == "trace":
                        yield DataTable(id="trace-table", cursor_type="row")
                    else:
                        with VerticalScroll():
                            yield Static(id=f"{pane_id}-body")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    def action_show_tab(self, pane: str) -> None:
        self.query_one(TabbedContent).active = pane

    @work(thread=True, exit_on_error=False, group="detail")
    def load(self) -> None:
        from requiem.analytics import execution_detail

        try:
            detail = execution_detail(self.home, self.record_id)
        except Exception as exc:  # a viewer shows any failure instead of crashing
            self.post_message(DetailReady(None, f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(DetailReady(detail))

    @on(DetailReady)
    def _ready(self, message: DetailReady) -> None:
        title = self.query_one("#detail-title", Static)
        if message.detail is None:
            title.update(Text(message.error or f"no execution {self.record_id} in the history",
                              "bold red"))
            return
        self.detail = detail = message.detail
        record = detail.record
        request = detail.request_document or {}
        command = shlex.join([str(record["command"] or ""), *map(str, request.get("argv") or [])])
        title.update(Text.assemble(
            ("execution ", "dim"), (record["record_id"][:16], "bold"), " · ",
            (command[:80], "bold"), " · ", outcome(record), " · ",
            f"{millis(record['duration_ms'])} ms · {record['engine']} · "
            f"{clock(record['recorded_at'])} UTC"))
        self.query_one("#summary-body", Static).update(self._summary(detail))
        self.query_one("#stdout-body", Static).update(_stream_view("stdout", detail.stdout))
        self.query_one("#stderr-body", Static).update(_stream_view("stderr", detail.stderr))
        self.query_one("#result-body", Static).update(_json_view(detail.result))
        self.query_one("#request-body", Static).update(_json_view(detail.request))
        self.query_one("#diff-body", Static).update(self._diff(detail.dual_run))
        trace = self.query_one("#trace-table", DataTable)
        trace.add_columns("seq", "t (ms)", "type", "data")
        for event in detail.trace_events:
            trace.add_row(event.get("seq"), Text(f"{event.get('t_ns', 0) / 1e6:.3f}",
                                                 justify="right"),
                          Text(str(event.get("type"))),
                          Text(json.dumps(event.get("data"), sort_keys=True)))

    @staticmethod
    def _summary(detail: ExecutionDetail) -> Table:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column()
        record = detail.record
        grid.add_row("outcome", outcome(record))
        for name in SUMMARY_FIELDS:
            grid.add_row(name, Text(_value(record.get(name))))
        for name, content in (("request object", detail.request), ("result document", detail.result),
                              ("stdout", detail.stdout), ("stderr", detail.stderr)):
            if content.error and content.digest:
                grid.add_row(Text(name, "bold red"), Text(content.error, "bold red"))
        return grid

    @staticmethod
    def _diff(comparison: dict[str, Any] | None) -> Text | Table:
        if comparison is None:
            return Text("not part of a dual-run comparison", "dim")
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column()
        grid.add_row("engines", f"{comparison['primary_engine']} vs "
                                f"{comparison['secondary_engine']}")
        severities = comparison.get("severities") or {}
        categories = Text()
        for category in comparison.get("categories") or []:
            severity = severities.get(category, "")
            categories.append(f"{category} ({severity})  ", SEVERITY_STYLE.get(severity, ""))
        grid.add_row("mismatch", categories if comparison["mismatch"] else Text("none", "green"))
        grid.add_row("results", f"{comparison['primary_result_digest']}\n"
                                f"{comparison['secondary_result_digest']}")
        grid.add_row("diff", JSON.from_data(comparison.get("diff") or {}))
        return grid
