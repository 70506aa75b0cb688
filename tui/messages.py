"""Messages workers post when data is ready; only their handlers (on the UI thread) touch widgets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from requiem.analytics import ExecutionDetail, Snapshot


class HealthReady(Message):
    """The core's health facts (hash, versions, sandbox) are known; the history comes next."""

    def __init__(self, health: dict[str, Any]) -> None:
        super().__init__()
        self.health = health


class SnapshotReady(Message):
    """A refresh gathered a new snapshot of the history."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class RefreshFailed(Message):
    """A refresh could not read the history (busy, unreadable); the last data stays on screen."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class FindingsReady(Message):
    """The doctor ran: its findings, or the error that stopped it."""

    def __init__(self, findings: list[dict[str, Any]] | None, error: str | None = None) -> None:
        super().__init__()
        self.findings = findings
        self.error = error


class DetailReady(Message):
    """An execution's detail was read (None: no such execution), or failed to be."""

    def __init__(self, detail: ExecutionDetail | None, error: str | None = None) -> None:
        super().__init__()
        self.detail = detail
        self.error = error


class ReportReady(Message):
    """A deeper view's data (CAS report, mismatch report) was gathered, or failed to be."""

    def __init__(self, report: dict[str, Any] | None, error: str | None = None) -> None:
        super().__init__()
        self.report = report
        self.error = error
