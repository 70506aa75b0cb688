"""The main screen's summary panels: health, sandbox, dual-run mismatches, CAS and on-call."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.binding import Binding
from textual.widgets import Static

from requiem.tui.format import (
    LEVEL_STYLE,
    SEVERITY_STYLE,
    STATE_STYLE,
    ago,
    count,
    human_bytes,
    human_duration,
    percent,
    short,
    sparkline,
)

if TYPE_CHECKING:
    from requiem.analytics import Snapshot

STATES = ("enforced", "partial", "unsupported")


def _grid() -> Table:
    """Two columns: a dim label and a value that is cut, not wrapped, when it is too long."""
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
    return grid


class Panel(Static, can_focus=True):
    """A bordered block of the main screen; Tab moves between panels."""

    TITLE = ""

    def __init__(self, *, id: str) -> None:
        super().__init__(Text("loading…", style="dim"), id=id)

    def on_mount(self) -> None:
        self.border_title = self.TITLE


class HealthPanel(Panel):
    """Hash primitive, versions, engine policy, spool, history file and host."""

    TITLE = "Health"

    def show_core(self, health: dict[str, Any]) -> None:
        """What the core knows before the history is read: hash facts and versions."""
        grid = _grid()
        self._core_rows(grid, health)
        grid.add_row("", Text("reading the history…", "dim"))
        self.update(grid)

    @staticmethod
    def _core_rows(grid: Table, health: dict[str, Any]) -> None:
        if health.get("hash_available"):
            grid.add_row("hash", Text.assemble(
                (str(health["hash_primitive"]), "bold green"),
                f" · {health['hash_backend']} {health['hash_version']} · self-test ok"))
        else:
            grid.add_row("hash", Text(f"UNAVAILABLE: {health.get('reason')}", "bold red"))
        grid.add_row("engine", f"{health.get('engine_version')} · protocol "
                               f"{health.get('protocol_version')} · contract "
                               f"{health.get('contract_version')} · CAS "
                               f"{health.get('cas_format_version')}")

    def show(self, snap: Snapshot) -> None:
        policy, host, now = snap.policy, snap.host, snap.taken_at
        grid = _grid()
        self._core_rows(grid, snap.health)
        policy_text = Text(f"default {policy['default_engine']} · dual-run "
                           f"{percent(policy['dual_run_sampling_rate'], 0)} sampled")
        if policy["error"]:
            policy_text = Text(f"config invalid: {policy['error']}", "bold red")
        grid.add_row("policy", policy_text)
        spool = snap.spool
        grid.add_row("spool", Text.assemble(
            (f"{count(spool['pending'])} pending", "yellow" if spool["pending"] else ""),
            " · ", (f"{count(spool['quarantined'])} quarantined",
                    "bold red" if spool["quarantined"] else ""),
            f" · {count(spool['folded'])} folded now"))
        grid.add_row("history", f"{count(snap.outcomes.get('total'))} executions · "
                                f"{human_bytes(snap.database['bytes'])}")
        grid.add_row("ingest", f"last {ago(snap.database['last_ingest'], now)}")
        grid.add_row("host", f"CPU {host['cpu_percent']:.0f}% of {host['cpu_count']} · "
                             f"load {host['load_1m']:.2f}")
        grid.add_row("memory", f"{human_bytes(host['memory_used'])} of "
                               f"{human_bytes(host['memory_total'])} used")
        grid.add_row("disk", f"{human_bytes(host['disk_free'])} free of "
                             f"{human_bytes(host['disk_total'])}")
        self.update(grid)


class SandboxPanel(Panel):
    """Each capability's state on this machine (spelled out, coloured) and the reason for it."""

    TITLE = "Sandbox capabilities"
    BINDINGS = [Binding("enter", "app.open_sandbox", "Reasons")]

    def show(self, health: dict[str, Any]) -> None:
        caps = health.get("sandbox_capabilities") or {}
        reasons = caps.get("reasons") or {}
        self.border_title = (f"{self.TITLE} · " + " · ".join(
            f"{len(caps.get(state) or [])} {state}" for state in STATES))
        self.border_subtitle = f"backend {caps.get('backend', '—')}"
        grid = Table.grid(padding=(0, 1), expand=True)
        grid.add_column(no_wrap=True, width=12)
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True, overflow="ellipsis", ratio=1, style="dim")
        for state in STATES:
            for capability in caps.get(state) or []:
                grid.add_row(Text(state, STATE_STYLE[state]), capability,
                             reasons.get(capability, ""))
        if caps.get("backend_reason"):
            grid.add_row("", Text("backend", "dim"), caps["backend_reason"])
        self.update(grid)


class MismatchPanel(Panel):
    """Dual-run mismatch counts and rates by category, with a sparkline of the rate over time."""

    TITLE = "Dual-run mismatches"
    BINDINGS = [Binding("enter", "app.open_mismatches", "Mismatches")]

    def show(self, snap: Snapshot) -> None:
        totals, now = snap.comparisons, snap.taken_at
        compared = totals.get("comparisons") or 0
        mismatching = totals.get("mismatching") or 0
        summary = Text.assemble(
            f"{count(compared)} comparisons · ",
            (f"{count(mismatching)} mismatching", "bold red" if mismatching else "green"),
            f" ({percent(totals.get('rate'))}) · worst: ",
            *[part for severity in SEVERITY_STYLE for part in (
                (f"{count(totals.get(severity))} {severity}", SEVERITY_STYLE[severity]), " ")])
        rates: dict[str, list[float | None]] = defaultdict(list)
        for row in snap.mismatch_series.iter_rows(named=True):
            rates[row["category"]].append(row["rate"])
        table = Table(box=None, expand=True, header_style="dim", padding=(0, 1))
        table.add_column("category", no_wrap=True)
        table.add_column("severity", no_wrap=True)
        table.add_column("count", justify="right", no_wrap=True)
        table.add_column("rate", justify="right", no_wrap=True)
        table.add_column(f"rate per {human_duration(snap.window)}", no_wrap=True, ratio=1)
        table.add_column("last seen", no_wrap=True, justify="right")
        for row in snap.mismatches.iter_rows(named=True):
            style = SEVERITY_STYLE.get(row["severity"], "")
            table.add_row(Text(row["category"], style if row["mismatches"] else "dim"),
                          Text(row["severity"], style), count(row["mismatches"]),
                          percent(row["rate"]), sparkline(rates.get(row["category"], [])),
                          ago(row["last_seen"], now) if row["last_seen"] else "—")
        self.update(Group(summary, table))


class CasPanel(Panel):
    """Objects, bytes, compression, the last verify (corrupt objects first) and the last GC."""

    TITLE = "CAS"
    BINDINGS = [Binding("enter", "app.open_cas", "CAS view")]

    def show(self, snap: Snapshot) -> None:
        cas, now = snap.cas, snap.taken_at
        grid = _grid()
        encodings = " · ".join(f"{name} {n}" for name, n in cas["by_encoding"].items())
        grid.add_row("objects", f"{count(cas['objects'])} ({encodings or 'empty'})")
        grid.add_row("bytes", f"{human_bytes(cas['original_bytes'])} → "
                              f"{human_bytes(cas['stored_bytes'])} stored · ratio "
                              f"{cas['compression_ratio']:.2f}×")
        malformed = cas["malformed"].height
        grid.add_row("malformed", Text(count(malformed), "bold red" if malformed else ""))
        verify = snap.last_verify
        if verify is None:
            grid.add_row("verify", Text("never run: requiem cas verify --all", "yellow"))
        else:
            bad = verify["corrupt_count"]
            grid.add_row("verify", Text(
                f"{count(bad)} corrupt of {count(verify['objects_checked'])} checked "
                f"({verify['mode']}) · {ago(verify['recorded_at'], now)}",
                "bold red" if bad else "green"))
            for item in verify["corrupt"][:2]:
                reason = str(item["reason"]).removeprefix(f"object {item['digest']}: ")
                grid.add_row("", Text(f"{short(item['digest'])} {reason}", "red"))
        gc = snap.last_gc
        if gc is None:
            grid.add_row("gc", Text("never run: requiem cas gc", "dim"))
        else:
            grid.add_row("gc", f"{gc['mode'].replace('_', ' ')} · {count(gc['candidates'])} "
                               f"candidates ({human_bytes(gc['candidate_bytes'])}) · "
                               f"{count(gc['deleted'])} deleted · {ago(gc['recorded_at'], now)}")
        grid.add_row("", Text("c / Enter: largest objects, GC candidates", "dim italic"))
        self.update(grid)


class WarningsPanel(Panel):
    """On-call: the doctor's blockers and warnings, each with the command that addresses it."""

    TITLE = "On-call"

    def show(self, findings: list[dict[str, Any]] | None, error: str | None) -> None:
        if findings is None:
            self.border_title = f"{self.TITLE} · doctor failed"
            self.update(Text(f"requiem doctor could not run: {error}\n  $ requiem doctor",
                             "bold red"))
            return
        levels = [f["level"] for f in findings]
        self.border_title = (f"{self.TITLE} · {levels.count('blocker')} blockers · "
                             f"{levels.count('warning')} warnings")
        if not findings:
            self.update(Text("✓ doctor: no blockers, no warnings", "green"))
            return
        text = Text()
        for finding in findings:
            text.append("● ", LEVEL_STYLE.get(finding["level"], ""))
            text.append(f"{finding['message']}\n")
            if finding["command"]:
                text.append(f"  $ {finding['command']}\n", "bold cyan")
        self.update(text)
