"""Strict JSON in (RFC 8259 + I-JSON), canonical JSON out (RFC 8785)."""

from __future__ import annotations

from requiem.errors import (
    INVALID_REQUEST,
    JSON_DUPLICATE_KEY,
    JSON_PARSE_ERROR,
    QUOTA_EXCEEDED,
    RequiemError,
)
from requiem.json_text import Scanner, compact, compact_bytes

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

MAX_DOCUMENT_BYTES = 1 << 20
MAX_DEPTH = 64
# I-JSON: numbers must round-trip through an IEEE-754 double.
_MAX_SAFE_INTEGER = 2**53 - 1


def _reject_constant(name: str) -> Any:
    raise RequiemError(JSON_PARSE_ERROR, f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise RequiemError(JSON_DUPLICATE_KEY, f"duplicate key {key!r}", key=key)
        obj[key] = value
    return obj


def _check_values(value: Any, pointer: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise RequiemError(JSON_PARSE_ERROR, f"nesting deeper than {MAX_DEPTH} at {pointer or '/'}")
    if isinstance(value, str):
        _check_string(value, pointer)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise RequiemError(
                JSON_PARSE_ERROR, f"number at {pointer or '/'} overflows an IEEE-754 double"
            )
    elif isinstance(value, int):
        if abs(value) > _MAX_SAFE_INTEGER:
            raise RequiemError(
                JSON_PARSE_ERROR, f"integer at {pointer or '/'} is outside the I-JSON range (2^53)"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_string(key, pointer)
            _check_values(item, f"{pointer}/{escape_pointer(key)}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_values(item, f"{pointer}/{index}", depth + 1)


def _check_string(text: str, pointer: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequiemError(
            JSON_PARSE_ERROR, f"lone surrogate in a string at {pointer or '/'}"
        ) from None


_STRICT = Scanner(_object_without_duplicates, _reject_constant)


def escape_pointer(key: str) -> str:
    """A key as one JSON-pointer segment (RFC 6901: ~ as ~0, / as ~1)."""
    return key.replace("~", "~0").replace("/", "~1")


def loads(data: bytes | str, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Parse one strict JSON document, raising RequiemError with a contract code on any defect."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise RequiemError(
            QUOTA_EXCEEDED, f"document is {len(raw)} bytes; the limit is {max_bytes}", limit=max_bytes
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequiemError(
            JSON_PARSE_ERROR, f"invalid UTF-8 at byte {exc.start}", position=exc.start
        ) from None
    if text.startswith("\ufeff"):
        raise RequiemError(JSON_PARSE_ERROR, "a byte order mark is not allowed", position=0)
    try:
        value = _STRICT.loads(text)
    except ValueError as exc:
        if not hasattr(exc, "lineno"):  # not a syntax error: an integer too long to convert
            raise RequiemError(JSON_PARSE_ERROR, str(exc)) from None
        raise RequiemError(
            JSON_PARSE_ERROR,
            f"{exc.msg} at line {exc.lineno} column {exc.colno}",  # type: ignore[attr-defined]
            position=exc.pos, line=exc.lineno, column=exc.colno,  # type: ignore[attr-defined]
        ) from None
    except RecursionError:
        raise RequiemError(JSON_PARSE_ERROR, f"nesting deeper than {MAX_DEPTH}") from None
    try:
        _check_values(value, "", 0)
    except RecursionError:
        raise RequiemError(JSON_PARSE_ERROR, f"nesting deeper than {MAX_DEPTH}") from None
    return value


def load_file(path: str | Path, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Read and strictly parse a JSON file without reading more than the size limit allows."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except (IsADirectoryError, FileNotFoundError, PermissionError) as exc:
        raise RequiemError(INVALID_REQUEST, f"cannot read {path}: {exc.strerror}",
                           path=str(path)) from None
    return loads(raw, max_bytes=max_bytes)


def _plain(value: Any) -> bool:
    """True when the stdlib encoder's sorted, compact output is already RFC 8785.

    The two differ only on floats (ES number formatting) and on keys outside the BMP (UTF-16
    sort order); strings escape identically. Digested documents rarely hold either. A loop
    over a stack, exact types first: every digest of every run walks its document here.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is dict:
            for key in item:
                if type(key) is not str or not (key.isascii() or max(key) < "\U00010000"):
                    return False
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is int:
            if not -_MAX_SAFE_INTEGER <= item <= _MAX_SAFE_INTEGER:
                return False
        elif isinstance(item, str):
            continue  # a subclass: encoded as its base
        elif isinstance(item, int):  # bool and IntEnum too
            if not -_MAX_SAFE_INTEGER <= item <= _MAX_SAFE_INTEGER:
                return False
        elif isinstance(item, dict):
            stack.append(dict(item))
        elif isinstance(item, list):
            stack.extend(item)
        else:
            return False  # floats above all: rfc8785 formats them
    return True


def dumps(value: Any) -> bytes:
    """RFC 8785 canonical bytes of a JSON value."""
    if _plain(value):
        try:
            return compact_bytes(value)
        except UnicodeEncodeError:
            pass  # a lone surrogate: let rfc8785 say so
    import rfc8785  # only for floats and non-BMP keys: compact_bytes handles the rest

    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise RequiemError(JSON_PARSE_ERROR, f"value cannot be canonicalised: {exc}") from None


def stable_dumps(value: Any) -> bytes:
    """Deterministic compact JSON for storage (sorted keys); not RFC 8785 for floats.

    Always the C accelerator's (floats as Python writes them), never orjson's: the same document
    stored by a batch and by a single run must be the same object.
    """
    return compact(value).encode("utf-8", "surrogatepass")
