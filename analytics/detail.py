"""One execution in full: its history row, request and result from the CAS, output, trace, diff."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from requiem import history, result_pack
from requiem.analytics.executions import execution_record
from requiem.analytics.source import HomeLike, as_home, first_row
from requiem.cas import Cas
from requiem.errors import RequiemError

READ_LIMIT = 64 << 10  # of stdout and stderr shown
DOCUMENT_LIMIT = 16 << 20  # request and result documents are read whole, up to this


@dataclass(frozen=True)
class Content:
    """What the CAS gave back for one digest: text (maybe cut at the limit) or why it could not."""

    digest: str | None
    text: str | None = None
    size: int = 0
    truncated: bool = False
    error: str | None = None


@dataclass(frozen=True)
class ExecutionDetail:
    """An execution's history row and everything the CAS holds about it."""

    record: dict[str, Any]
    request: Content
    result: Content
    stdout: Content
    stderr: Content
    trace_events: list[dict[str, Any]] = field(default_factory=list)
    dual_run: dict[str, Any] | None = None

    @property
    def result_document(self) -> dict[str, Any] | None:
        """The stored result document, parsed (None when it is missing or unreadable)."""
        return _json(self.result)

    @property
    def request_document(self) -> dict[str, Any] | None:
        """The stored (redacted) request document, parsed."""
        return _json(self.request)


def _json(content: Content) -> dict[str, Any] | None:
    if content.text is None or content.truncated:
        return None
    try:
        value = json.loads(content.text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_content(cas: Cas, digest: str | None, limit: int = READ_LIMIT) -> Content:
    """An object's content as text (invalid UTF-8 escaped), checked; errors are kept, not raised."""
    if not digest:
        return Content(digest, error="not recorded")
    try:
        size = cas.info(digest).original_size
        data = cas.read_bytes(digest, limit=limit)
    except RequiemError as exc:
        return Content(digest, error=f"{exc.code}: {exc.message}")
    return Content(digest, data.decode("utf-8", "backslashreplace"), size, size > len(data))


def read_result(cas: Cas, record: dict[str, Any]) -> Content:
    """The run's result document, alone or out of its batch's pack (requiem.result_pack)."""
    digest, pack = record.get("result_object"), record.get("result_pack")
    if not digest or not pack:
        return read_content(cas, digest, DOCUMENT_LIMIT)
    try:
        data = result_pack.read_result(cas, digest, pack)
    except RequiemError as exc:
        return Content(digest, error=f"{exc.code}: {exc.message}")
    return Content(digest, data.decode("utf-8", "backslashreplace"), len(data))


def _comparison(con: Any, record: dict[str, Any]) -> dict[str, Any] | None:
    """The dual-run comparison this execution took part in, if any."""
    if not record.get("dual_run") or not record.get("result_object"):
        return None
    row = first_row(con, """
        SELECT * EXCLUDE (diff), diff::VARCHAR AS diff FROM dual_runs
        WHERE request_id = ? AND ? IN (primary_result_object, secondary_result_object)
        ORDER BY recorded_at DESC LIMIT 1""", [record["request_id"], record["result_object"]])
    if row is not None:
        row["diff"] = json.loads(row["diff"]) if row["diff"] else {}
    return row


def execution_detail(home: HomeLike, record_id: str,
                     limit: int = READ_LIMIT) -> ExecutionDetail | None:
    """An execution by record id: row and comparison in one short hold, then CAS reads outside it."""
    resolved = as_home(home)
    with history.open_history(resolved, read_only=True) as con:
        record = execution_record(con, record_id)
        comparison = _comparison(con, record) if record else None
    if record is None:
        return None
    cas = Cas(resolved.cas_root)
    result = read_result(cas, record)
    return ExecutionDetail(
        record=record,
        request=read_content(cas, record.get("request_object"), DOCUMENT_LIMIT),
        result=result,
        stdout=read_content(cas, record.get("stdout_digest"), limit),
        stderr=read_content(cas, record.get("stderr_digest"), limit),
        trace_events=(_json(result) or {}).get("trace_events") or [],
        dual_run=comparison,
    )
