"""Wall-clock timestamps for records and metadata (never part of a digest)."""

from __future__ import annotations

import time

# (second, its formatted prefix): formatting a date costs more than the rest of a stamp, and a
# batch stamps the same second many times over.
_last_second: tuple[int, str] = (-1, "")


def utc_now_iso() -> str:
    """UTC now as ISO 8601 with microseconds and a Z, e.g. 2026-11-22T01:02:03.456789Z."""
    global _last_second
    seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _last_second
    if cached[0] != seconds:
        cached = _last_second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{cached[1]}.{micros:06d}Z"
