"""config.json: its schema, validation with JSON-pointer paths, and the settings it yields.

```json
{
  "config_version": 1,
  "engine_selection_policy": {"default_engine": "requiem", "dual_run_sampling_rate": 0.01,
                              "dual_run_diff_output": "/var/log/requiem/diffs"},
  "cas": {"root": "/srv/requiem/cas", "compression": "zstd", "level": 3},
  "sandbox": {"required": ["workspace_confinement", "rlimits"]},
  "history": {"path": "history.duckdb", "lock_timeout_s": 10},
  "legacy_engine": {"path": "/usr/local/bin/requiem-rust"}
}
```

Relative CAS, history and diff-output paths resolve against the home directory; the legacy
engine's path is used as given (absolute, or a name looked up on PATH). The environment beats the
file:
REQUIEM_DEFAULT_ENGINE, REQUIEM_ENGINE_DUAL_RATE, REQUIEM_RUST_ENGINE.
"""

from __future__ import annotations

import os

from requiem import canonical
from requiem.errors import CONFIG_INVALID, INVALID_REQUEST, RequiemError

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any, Callable

    # A checker returns an error message for a bad value, or None.
    Checker = Callable[[Any], str | None]

CONFIG_VERSION = 1
ENGINES = ("requiem", "rust", "dual")



def _string(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "must be a non-empty string"


def _number(low: float, high: float) -> Checker:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number between {low} and {high}, not {value!r}"
        return None if low <= value <= high else f"must be between {low} and {high}, not {value}"
    return check


def _integer(low: int, high: int) -> Checker:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer between {low} and {high}, not {value!r}"
        return None if low <= value <= high else f"must be between {low} and {high}, not {value}"
    return check


def _one_of(*choices: str) -> Checker:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}, not {value!r}"
    return check


def _capabilities(value: Any) -> str | None:
    from requiem.sandbox.base import CAPABILITIES

    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return "must be a list of capability names"
    unknown = [v for v in value if v not in CAPABILITIES]
    return f"unknown capabilities {unknown}; known: {', '.join(CAPABILITIES)}" if unknown else None


# Sections are objects of fields; each field has a checker and a default.
SCHEMA: dict[str, dict[str, tuple[Checker, Any]]] = {
    "engine_selection_policy": {
        "default_engine": (_one_of(*ENGINES), "requiem"),
        "dual_run_sampling_rate": (_number(0, 1), 0.0),
        "dual_run_diff_output": (_string, None),
    },
    "cas": {
        "root": (_string, None),
        "compression": (_one_of("identity", "zstd"), "identity"),
        "level": (_integer(1, 22), 3),
    },
    "sandbox": {"required": (_capabilities, [])},
    "history": {"path": (_string, None), "lock_timeout_s": (_number(0, 3600), 10.0)},
    "legacy_engine": {"path": (_string, None)},
}

_ENV = (
    ("REQUIEM_DEFAULT_ENGINE", "engine_selection_policy", "default_engine", str),
    ("REQUIEM_ENGINE_DUAL_RATE", "engine_selection_policy", "dual_run_sampling_rate", float),
    ("REQUIEM_RUST_ENGINE", "legacy_engine", "path", str),
)


def _all_pointers() -> list[str]:
    return ["/config_version"] + [f"/{s}/{f}" for s, fields in SCHEMA.items() for f in fields]


def _suggest(name: str, siblings: list[str]) -> str | None:
    """The closest known field: a sibling first, then any field anywhere (it may be misplaced)."""
    import difflib  # only when a field is unknown: every engine start loads this module

    close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.7)
    if close:
        return close[0]
    by_leaf = {p.rsplit("/", 1)[1]: p for p in _all_pointers()}
    close = difflib.get_close_matches(name, list(by_leaf), n=1, cutoff=0.7)
    return by_leaf[close[0]] if close else None


def validate(document: Any) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Check a parsed config against the schema; return (errors, warnings), each with a pointer."""
    errors: list[dict[str, str]] = []
    warnings: list[dict[str, str]] = []
    if not isinstance(document, dict):
        return [{"pointer": "", "message": "the config must be a JSON object"}], []
    version = document.get("config_version")
    if "config_version" not in document:
        errors.append({"pointer": "/config_version", "message": "config_version is required"})
    elif isinstance(version, bool) or not isinstance(version, int) or version < 1:
        errors.append({"pointer": "/config_version", "message": "must be a positive integer"})
    elif version > CONFIG_VERSION:
        errors.append({"pointer": "/config_version",
                       "message": f"version {version} is newer than this Requiem supports "
                                  f"({CONFIG_VERSION})"})
    top_names = ["config_version", *SCHEMA]
    for key, value in document.items():
        if key == "config_version":
            continue
        if key not in SCHEMA:
            warnings.append(_unknown(f"/{_escape(key)}", key, top_names))
            continue
        if not isinstance(value, dict):
            errors.append({"pointer": f"/{key}", "message": "must be an object"})
            continue
        fields = SCHEMA[key]
        for name, item in value.items():
            pointer = f"/{key}/{_escape(name)}"
            if name not in fields:
                warnings.append(_unknown(pointer, name, list(fields)))
                continue
            problem = fields[name][0](item)
            if problem:
                errors.append({"pointer": pointer, "message": problem})
    return errors, warnings


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _unknown(pointer: str, name: str, siblings: list[str]) -> dict[str, str]:
    warning = {"pointer": pointer, "message": f"unknown field {name!r} (ignored)"}
    suggestion = _suggest(name, siblings)
    if suggestion:
        parent = pointer.rsplit("/", 1)[0]
        suggested = suggestion if suggestion.startswith("/") else f"{parent}/{suggestion}"
        warning["did_you_mean"] = suggested
        warning["message"] += f"; did you mean {suggested}?"
    return warning


def validate_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The `config validate` report; non-JSON raises json_parse_error with the position."""
    try:
        document = canonical.load_file(path)
    except RequiemError as exc:
        if exc.code != INVALID_REQUEST:  # json_parse_error and friends keep their own code
            raise
        raise RequiemError(CONFIG_INVALID, exc.message) from None
    errors, warnings = validate(document)
    report: dict[str, Any] = {
        "ok": not errors,
        "file": os.path.abspath(path),
        "config_version": document.get("config_version") if isinstance(document, dict) else None,
        "errors": errors,
        "warnings": warnings,
    }
    if errors:
        first = errors[0]
        where = first["pointer"] or "/"
        report["error"] = {"code": CONFIG_INVALID,
                           "message": f"{len(errors)} error(s); first at {where}: "
                                      f"{first['message']}"}
    return report


def defaults() -> dict[str, Any]:
    """The settings when no config file exists."""
    settings: dict[str, Any] = {"config_version": CONFIG_VERSION}
    for section, fields in SCHEMA.items():
        settings[section] = {name: (list(d) if isinstance(d, list) else d)
                             for name, (_, d) in fields.items()}
    return settings


def load_config(home: Any) -> dict[str, Any]:
    """The effective settings of a home: defaults, then config.json, then the environment.

    Raises config_invalid when the file breaks the schema (json_* when it is not JSON).
    Relative CAS, history and diff-output paths come back resolved against the home.
    """
    settings = defaults()
    path = home.config_location
    if os.path.exists(path):
        document = canonical.load_file(path)
        errors, _ = validate(document)
        if errors:
            raise RequiemError(CONFIG_INVALID,
                               f"{path}: {errors[0]['pointer'] or '/'}: {errors[0]['message']} "
                               f"(run `requiem config validate --file {path}`)", errors=errors)
        for section, fields in SCHEMA.items():
            for name, value in document.get(section, {}).items():
                if name in fields:
                    settings[section][name] = value
    for variable, section, name, convert in _ENV:
        raw = os.environ.get(variable)
        if raw is None or raw == "":
            continue
        try:
            value = convert(raw)
        except ValueError:
            value = raw
        problem = SCHEMA[section][name][0](value)
        if problem:
            raise RequiemError(CONFIG_INVALID, f"${variable}: {problem}", variable=variable)
        settings[section][name] = value
    for section, name in (("cas", "root"), ("history", "path"),
                          ("engine_selection_policy", "dual_run_diff_output")):
        value = settings[section][name]
        if value is not None:
            settings[section][name] = os.path.join(home.root_location, value)
    return settings
