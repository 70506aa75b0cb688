"""Durations as `requiem cas gc --grace` reads them, and bucket widths that suit a time span."""

from __future__ import annotations

from datetime import timedelta

from requiem import gc

# Widths a chart's buckets snap to, so bucket edges read as round times.
NICE_WINDOWS = tuple(timedelta(seconds=s) for s in (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400, 604800))

Duration = timedelta | str


def parse_duration(value: Duration) -> timedelta:
    """A timedelta from a timedelta or a string like `250ms`, `30s`, `5m`, `1h`, `7d`."""
    return value if isinstance(value, timedelta) else timedelta(seconds=gc.parse_duration(value))


def auto_window(span: timedelta, buckets: int = 30) -> timedelta:
    """The smallest round bucket width that shows `span` in fewer than `buckets` buckets."""
    for width in NICE_WINDOWS:
        if span < width * buckets:
            return width
    return NICE_WINDOWS[-1]
