"""JSON text read and written by CPython's C accelerator `_json`, without the `json` package.

`import json` costs every cold start ~14M instructions (it compiles `re` patterns the C
accelerator never uses), and `json.loads`/`json.dumps` with options build a new decoder or
encoder object per call. The scanner and encoder below are the ones `json` itself uses, built
once. Their output is byte for byte `json`'s, which the tests check.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any, Callable

__all__ = ["Scanner", "ascii_string", "compact", "compact_bytes", "loads", "pretty", "use_orjson"]

_WHITESPACE = " \t\n\r"

# A str as a JSON string literal, every non-ASCII character escaped; and as it is.
ascii_string: Callable[[str], str] = _json.encode_basestring_ascii
_string: Callable[[str], str] = _json.encode_basestring


def _unencodable(value: object) -> Any:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


# Arguments: markers (None: no cycle check; a cycle ends in RecursionError, not json's
# ValueError, and documents here are trees), default, string encoder, indent (unsupported by
# the C encoder before 3.13), key and item separators, sort_keys, skipkeys, allow_nan.
_sorted_compact = _json.make_encoder(None, _unencodable, _string, None, ":", ",", True, False, False)
_compact = _json.make_encoder(None, _unencodable, _string, None, ":", ",", False, False, False)


def compact(value: Any, *, sort_keys: bool = True) -> str:
    """`json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False, allow_nan=False)`."""
    return "".join((_sorted_compact if sort_keys else _compact)(value, 0))


# orjson.dumps, once use_orjson() has paid for the import.
_orjson_dumps: Callable[..., bytes] | None = None
# Its options, sorted or not; both refuse dates and dataclasses (as json does) instead of writing them.
_ORJSON_SORTED = _ORJSON_IN_ORDER = 0


def use_orjson() -> bool:
    """Let compact_bytes encode with orjson from now on; False when it is not installed.

    orjson encodes a run's result ~10x faster than the C accelerator (~35 us of a batch run's
    wall time), but importing it costs ~24 ms (it loads dataclasses, uuid and datetime): a
    long batch takes it, a short one and a cold `exec run` do not.
    """
    global _orjson_dumps, _ORJSON_SORTED, _ORJSON_IN_ORDER
    try:
        import orjson
    except ImportError:
        return False
    _ORJSON_IN_ORDER = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
    _ORJSON_SORTED = orjson.OPT_SORT_KEYS | _ORJSON_IN_ORDER
    _orjson_dumps = orjson.dumps
    return True


def compact_bytes(value: Any, *, sort_keys: bool = True, errors: str = "strict") -> bytes:
    """compact(value) in UTF-8, with `errors` for lone surrogates.

    After use_orjson(): the same bytes for strings, integers, booleans, null, lists and dicts
    with str keys; floats in another but equally exact form (`1e-7` for `1e-07`). Where compact
    raises, orjson writes NaN and infinities as null and UUIDs, enums and numpy values as their
    values (the engine's documents hold none: its results and records are built from parsed
    JSON, clocks and rusage). What orjson will not encode (lone surrogates, integers beyond 64
    bits, subclasses of tuple, keys that are not str, dates, dataclasses) goes through compact.
    """
    if _orjson_dumps is not None:
        try:
            return _orjson_dumps(value, option=_ORJSON_SORTED if sort_keys else _ORJSON_IN_ORDER)
        except TypeError:  # orjson.JSONEncodeError
            pass
    return compact(value, sort_keys=sort_keys).encode("utf-8", errors)


def _decode_error(message: str, text: str, position: int) -> ValueError:
    """json.JSONDecodeError as the C scanner raises it (json.decoder is imported only on error)."""
    from json import JSONDecodeError

    return JSONDecodeError(message, text, position)


class Scanner:
    """A strict JSON parser: one document, whitespace around it, hooks as `json.loads` takes them."""

    strict = True
    object_hook = None
    parse_float = float
    parse_int = int

    def __init__(self, object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
                 parse_constant: Callable[[str], Any] | None = None) -> None:
        # The C scanner reads these attributes once, here.
        self.object_pairs_hook = object_pairs_hook
        self.parse_constant = parse_constant or {"NaN": float("nan"), "Infinity": float("inf"),
                                                 "-Infinity": float("-inf")}.__getitem__
        self._scan = _json.make_scanner(self)

    def loads(self, text: str) -> Any:
        """The value of one JSON document; ValueError (a json.JSONDecodeError) when it is not one."""
        if text.startswith("\ufeff"):
            raise _decode_error("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        start = len(text) - len(text.lstrip(_WHITESPACE))
        try:
            value, end = self._scan(text, start)
        except StopIteration as stop:
            raise _decode_error("Expecting value", text, stop.value) from None
        except SystemError:
            # The C scanner raises its syntax errors as json.decoder.JSONDecodeError, looked up
            # in sys.modules only: without json.decoder loaded it fails like this. Load it and
            # scan again, which raises the syntax error itself.
            import json.decoder  # noqa: F401

            value, end = self._scan(text, start)
        if end != len(text) and text[end:].strip(_WHITESPACE):
            raise _decode_error("Extra data", text, len(text) - len(text[end:].lstrip(_WHITESPACE)))
        return value


_PLAIN = Scanner()


def loads(text: str) -> Any:
    """One JSON document, as `json.loads(text)` reads it."""
    return _PLAIN.loads(text)


def pretty(value: Any) -> str:
    """`json.dumps(value, indent=2, ensure_ascii=False)`."""
    chunks: list[str] = []
    _pretty(value, chunks, "\n")
    return "".join(chunks)


def _pretty(value: Any, out: list[str], newline: str) -> None:
    if isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        inner = newline + "  "
        separator = "{" + inner
        for key, item in value.items():
            out.append(separator)
            out.append(_string(_key(key)))
            out.append(": ")
            _pretty(item, out, inner)
            separator = "," + inner
        out.append(newline + "}")
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return
        inner = newline + "  "
        separator = "[" + inner
        for item in value:
            out.append(separator)
            _pretty(item, out, inner)
            separator = "," + inner
        out.append(newline + "]")
    else:
        out.append(_scalar(value))


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    return _unencodable(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (int, float)):
        return _scalar(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {key.__class__.__name__}")
