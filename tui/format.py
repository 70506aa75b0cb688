"""How numbers read on screen: sizes, ages, rates, sparklines, digests and state colours."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Sequence

from rich.text import Text

SPARK = "▁▂▃▄▅▆▇█"
STATE_STYLE = {"enforced": "bold green", "partial": "bold yellow", "unsupported": "bold red"}
SEVERITY_STYLE = {"critical": "bold red", "high": "dark_orange", "medium": "yellow"}
OUTCOME_STYLE = {"ok": "green", "failed": "red", "timeout": "magenta", "refused": "yellow"}
LEVEL_STYLE = {"blocker": "bold red", "warning": "yellow"}


def human_bytes(size: int | float | None) -> str:
    """1536 -> '1.5 KiB' (binary units, as `df -h` and the CAS report)."""
    if size is None:
        return "—"
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, index = float(size), 0
    while abs(value) >= 1024 and index < len(units) - 1:
        value, index = value / 1024, index + 1
    return f"{value:.0f} B" if index == 0 else f"{value:.1f} {units[index]}"


def human_duration(delta: timedelta) -> str:
    """A short span: '45 s', '12 min', '3 h', '2 d'."""
    seconds = max(delta.total_seconds(), 0)
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds / 86400:.0f} d"


def ago(then: datetime | None, now: datetime) -> str:
    """'3 s ago' (or 'never' when there is no time)."""
    return "never" if then is None else f"{human_duration(now - then)} ago"


def percent(rate: float | None, digits: int = 1) -> str:
    """0.1234 -> '12.3%' ('—' when there is no rate)."""
    return "—" if rate is None else f"{rate * 100:.{digits}f}%"


def count(number: int | None) -> str:
    """1234567 -> '1,234,567'."""
    return "—" if number is None else f"{number:,}"


def millis(value: float | None) -> str:
    """A run time in ms, with precision that suits its size."""
    if value is None:
        return "—"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def sparkline(values: Sequence[float | None]) -> Text:
    """One glyph per bucket, scaled to the largest; a blank where a bucket has no data."""
    peak = max((v for v in values if v is not None), default=0.0)
    text = Text()
    for value in values:
        if value is None:
            text.append(" ")
        else:
            level = 0 if peak <= 0 else round(value / peak * (len(SPARK) - 1))
            text.append(SPARK[level], style="red" if value > 0 else "green")
    return text


def short(digest: str | None, width: int = 12) -> str:
    """The first characters of a digest (enough to find it with `requiem cas info`)."""
    return "—" if not digest else digest[:width]


def clock(moment: datetime | None) -> str:
    """'11-22 01:47:13' for a history timestamp (UTC); sorts in time order within a year."""
    return "—" if moment is None else moment.strftime("%m-%d %H:%M:%S")


def outcome(row: dict[str, Any]) -> Text:
    """An execution's outcome in words: ok, exit 3, timeout, refused path_escape."""
    kind = row["outcome"]
    label = {"failed": f"exit {row.get('exit_code')}",
             "refused": f"refused {row.get('error_code') or ''}".strip()}.get(kind, kind)
    return Text(label, style=OUTCOME_STYLE.get(kind, ""))
