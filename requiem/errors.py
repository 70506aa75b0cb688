"""The contract's error codes and the one exception type that carries them."""

from __future__ import annotations

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any


HASH_UNAVAILABLE = "hash_unavailable_blake3"
PATH_ESCAPE = "path_escape"
TIMEOUT = "timeout"
QUOTA_EXCEEDED = "quota_exceeded"
JSON_PARSE_ERROR = "json_parse_error"
JSON_DUPLICATE_KEY = "json_duplicate_key"
MISSING_INPUT = "missing_input"
SPAWN_FAILED = "spawn_failed"
CAS_INTEGRITY_FAILED = "cas_integrity_failed"
REPLAY_FAILED = "replay_failed"
DRIFT_DETECTED = "drift_detected"
ENGINE_UNAVAILABLE = "engine_unavailable"
CONFIG_INVALID = "config_invalid"
INVALID_REQUEST = "invalid_request"
SANDBOX_UNAVAILABLE = "sandbox_unavailable"
HISTORY_BUSY = "history_busy"

ERROR_CODES = frozenset(
    {
        HASH_UNAVAILABLE, PATH_ESCAPE, TIMEOUT, QUOTA_EXCEEDED, JSON_PARSE_ERROR,
        JSON_DUPLICATE_KEY, MISSING_INPUT, SPAWN_FAILED, CAS_INTEGRITY_FAILED, REPLAY_FAILED,
        DRIFT_DETECTED, ENGINE_UNAVAILABLE, CONFIG_INVALID, INVALID_REQUEST,
        SANDBOX_UNAVAILABLE, HISTORY_BUSY,
    }
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_FORCE_RUST = 3


class RequiemError(Exception):
    """A failure with a contract error code, a human message and optional JSON detail."""

    def __init__(self, code: str, message: str, exit_code: int = EXIT_FAILED, **detail: Any) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code
        self.detail = detail

    def to_json(self) -> dict[str, Any]:
        """The contract's error document: {"ok": false, "error": {"code", "message", ...}}."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        error.update(self.detail)
        return {"ok": False, "error": error}
