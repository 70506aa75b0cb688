"""Wall-clock timestamps for records and metadata (never part of a digest)."""

from __future__ import annotations

import time


def utc_now_iso() -> str:
    """UTC now as ISO 8601 with microseconds and a Z, e.g. 2026-11-22T01:02:03.456789Z."""
    now = time.time()
    seconds = int(now)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((now - seconds) * 1e6):06d}Z"
