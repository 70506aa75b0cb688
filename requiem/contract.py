"""The request and result contract: validation with JSON-pointer errors, and the digest rules."""

from __future__ import annotations

from requiem import canonical, hashing
from requiem.canonical import escape_pointer
from requiem.sandbox import BACKENDS, CAPABILITIES
from requiem.errors import INVALID_REQUEST, QUOTA_EXCEEDED, RequiemError
from requiem.tuples import named_tuple

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any

MAX_TIMEOUT_MS = 24 * 3600 * 1000
DEFAULT_TIMEOUT_MS = 5000
DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024
DEFAULT_OUTPUT_LIMIT_BYTES = 1 << 30
MAX_OUTPUTS = 256
MAX_ARGV = 100_000
MAX_REQUEST_ID = 128
# Plain sets and affixes, not regular expressions: compiling a pattern at import costs every
# cold `exec run` more than all of this module's checks.
REQUEST_ID_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ" "abcdefghijklmnopqrstuvwxyz"
                                  "0123456789" "_-")
# Names whose values are secrets (any case): stripped from the child, never logged or stored.
SECRET_PREFIXES = ("auth", "cookie")
SECRET_SUFFIXES = ("_token", "_secret", "_key", "_password", "_credential")
TIME_MODES = ("fixed", "system")
# 1980-01-01T00:00:00Z: the earliest time a zip file can hold, the reproducible-builds habit.
FIXED_SOURCE_DATE_EPOCH = "315532800"

REQUEST_FIELDS = frozenset({
    "command", "argv", "request_id", "cwd", "workspace_root", "env", "inputs", "outputs",
    "timeout_ms", "max_output_bytes", "output_limit_bytes", "nonce", "policy",
})
POLICY_FIELDS = frozenset({
    "deterministic", "mode", "env_allowlist", "env_denylist", "required_env", "time_mode",
    "network", "sandbox",
})
SANDBOX_FIELDS = frozenset({"backend", "require", "rlimits", "readonly_paths"})
RLIMIT_FIELDS = frozenset({
    "cpu_seconds", "address_space_bytes", "open_files", "file_size_bytes", "core_bytes",
    "processes",
})
# The outcome, and only the outcome: these keys make the result digest.
RESULT_DIGEST_FIELDS = (
    "request_digest", "ok", "exit_code", "error_code", "termination_reason", "stdout_digest",
    "stderr_digest", "stdout_truncated", "stderr_truncated", "output_digests", "trace_digest",
)


@named_tuple
class SandboxPolicy:
    """What the request asks of the sandbox."""

    backend: str = "auto"
    require: tuple[str, ...] = ()
    rlimits: dict[str, int] = {}
    # Extra host paths the sandbox binds read-only (an interpreter outside /usr, a toolchain).
    readonly_paths: tuple[str, ...] = ()


@named_tuple
class Policy:
    """How a request wants to be run."""

    deterministic: bool = True
    mode: str = "strict"
    env_allowlist: tuple[str, ...] = ()
    env_denylist: tuple[str, ...] = ()
    required_env: dict[str, str] = {}
    time_mode: str = "fixed"
    network: bool = False
    sandbox: SandboxPolicy = SandboxPolicy()


@named_tuple
class Request:
    """A validated request, its digest and the document it came from."""

    document: dict[str, Any]
    command: str
    argv: tuple[str, ...]
    request_id: str
    cwd: str | None
    workspace_root: str
    env: dict[str, str]
    inputs: dict[str, str]
    outputs: tuple[str, ...]
    timeout_ms: int
    max_output_bytes: int
    output_limit_bytes: int
    nonce: Any
    policy: Policy
    request_digest: str
    warnings: tuple[str, ...] = ()


class _Checker:
    """Validates one document, collecting compat-mode warnings."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.warnings: list[str] = []

    def fail(self, pointer: str, message: str, code: str = INVALID_REQUEST) -> RequiemError:
        return RequiemError(code, f"{pointer}: {message}", pointer=pointer)

    def unknown_fields(self, obj: dict[str, Any], allowed: frozenset[str], pointer: str) -> None:
        for key in sorted(set(obj) - allowed):
            where = f"{pointer}/{key}"
            if self.mode == "strict":
                raise self.fail(where, "unknown field (policy.mode is strict)")
            self.warnings.append(f"{where}: unknown field ignored (policy.mode is compat)")

    def object(self, value: Any, pointer: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(pointer, "must be an object")
        return value

    def string(self, value: Any, pointer: str, *, empty: bool = False) -> str:
        if not isinstance(value, str):
            raise self.fail(pointer, "must be a string")
        if not empty and not value:
            raise self.fail(pointer, "must not be empty")
        if "\x00" in value:
            raise self.fail(pointer, "must not contain NUL")
        return value

    def integer(self, value: Any, pointer: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise self.fail(pointer, "must be an integer")
        if not low <= value <= high:
            raise self.fail(pointer, f"must be between {low} and {high}")
        return int(value)

    def boolean(self, value: Any, pointer: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(pointer, "must be true or false")
        return value

    def string_list(self, value: Any, pointer: str, *, limit: int | None = None,
                    empty_items: bool = False) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(pointer, "must be an array of strings")
        if limit is not None and len(value) > limit:
            raise self.fail(pointer, f"has {len(value)} entries; the limit is {limit}",
                            QUOTA_EXCEEDED)
        return tuple(self.string(v, f"{pointer}/{i}", empty=empty_items) for i, v in enumerate(value))

    def env_map(self, value: Any, pointer: str) -> dict[str, str]:
        env = self.object(value, pointer)
        for name, val in env.items():
            where = f"{pointer}/{escape_pointer(name)}"
            if not name or "=" in name or "\x00" in name:
                raise self.fail(where, "environment names must be non-empty, without '=' or NUL")
            self.string(val, where, empty=True)
        return dict(env)


def _policy(c: _Checker, raw: Any) -> Policy:
    doc = c.object(raw, "/policy")
    c.unknown_fields(doc, POLICY_FIELDS, "/policy")
    mode = doc.get("mode", "strict")
    if mode not in ("strict", "compat"):
        raise c.fail("/policy/mode", "must be 'strict' or 'compat'")
    time_mode = doc.get("time_mode", "fixed")
    if time_mode not in TIME_MODES:
        raise c.fail("/policy/time_mode", f"must be one of {', '.join(TIME_MODES)}")
    sandbox = c.object(doc.get("sandbox", {}), "/policy/sandbox")
    c.unknown_fields(sandbox, SANDBOX_FIELDS, "/policy/sandbox")
    backend = sandbox.get("backend", "auto")
    if backend not in BACKENDS:
        raise c.fail("/policy/sandbox/backend", f"must be one of {', '.join(BACKENDS)}")
    require = c.string_list(sandbox.get("require", []), "/policy/sandbox/require")
    for i, cap in enumerate(require):
        if cap not in CAPABILITIES:
            raise c.fail(f"/policy/sandbox/require/{i}", f"unknown capability {cap!r}")
    rlimits_doc = c.object(sandbox.get("rlimits", {}), "/policy/sandbox/rlimits")
    c.unknown_fields(rlimits_doc, RLIMIT_FIELDS, "/policy/sandbox/rlimits")
    rlimits = {
        k: c.integer(v, f"/policy/sandbox/rlimits/{k}", 0, 2**53 - 1)
        for k, v in rlimits_doc.items() if k in RLIMIT_FIELDS
    }
    readonly = c.string_list(sandbox.get("readonly_paths", []), "/policy/sandbox/readonly_paths")
    for i, path in enumerate(readonly):
        if not path.startswith("/"):
            raise c.fail(f"/policy/sandbox/readonly_paths/{i}", "must be an absolute path")
    return Policy(
        deterministic=c.boolean(doc.get("deterministic", True), "/policy/deterministic"),
        mode=mode,
        env_allowlist=c.string_list(doc.get("env_allowlist", []), "/policy/env_allowlist"),
        env_denylist=c.string_list(doc.get("env_denylist", []), "/policy/env_denylist"),
        required_env=c.env_map(doc.get("required_env", {}), "/policy/required_env"),
        time_mode=time_mode,
        network=c.boolean(doc.get("network", False), "/policy/network"),
        sandbox=SandboxPolicy(backend, require, rlimits, readonly),
    )


def request_digest_of(document: dict[str, Any]) -> str:
    """BLAKE3(JCS(the request as received, minus request_id and nonce, secret values redacted)).

    Hashing secret values would let anyone holding the history test guesses against the digest.
    """
    core = {k: v for k, v in redacted_document(document).items() if k not in ("request_id", "nonce")}
    return hashing.hash_bytes(canonical.dumps(core))


def derive_request_id(request_digest: str, nonce: Any) -> str:
    """A deterministic request id from the request digest and the nonce."""
    seed = canonical.dumps({"nonce": nonce, "request_digest": request_digest})
    return "rq_" + hashing.hash_bytes(seed)[:32]


def parse_request(document: Any) -> Request:
    """Validate a parsed request document; raise RequiemError naming the JSON pointer."""
    if not isinstance(document, dict):
        raise RequiemError(INVALID_REQUEST, "/: a request must be a JSON object", pointer="")
    raw_policy = document.get("policy", {})
    mode = raw_policy.get("mode", "strict") if isinstance(raw_policy, dict) else "strict"
    c = _Checker(mode if mode in ("strict", "compat") else "strict")
    c.unknown_fields(document, REQUEST_FIELDS, "")
    if "command" not in document:
        raise c.fail("/command", "is required")
    command = c.string(document["command"], "/command")
    argv = c.string_list(document.get("argv", []), "/argv", limit=MAX_ARGV, empty_items=True)
    policy = _policy(c, raw_policy)
    outputs = c.string_list(document.get("outputs", []), "/outputs", limit=MAX_OUTPUTS)
    inputs = c.object(document.get("inputs", {}), "/inputs")
    for path, digest in inputs.items():
        where = f"/inputs/{escape_pointer(path)}"
        if not path or "\x00" in path:
            raise c.fail(where, "input paths must be non-empty, without NUL")
        if not hashing.is_digest(digest):
            raise c.fail(where, "must be a BLAKE3 digest (64 lowercase hex characters)")
    nonce = document.get("nonce")
    if nonce is not None and not isinstance(nonce, (str, int)) or isinstance(nonce, bool):
        raise c.fail("/nonce", "must be a string or an integer")
    digest = request_digest_of(document)
    if "request_id" in document:
        request_id = c.string(document["request_id"], "/request_id")
        if not 0 < len(request_id) <= MAX_REQUEST_ID or not REQUEST_ID_CHARACTERS.issuperset(
                request_id):
            raise c.fail("/request_id",
                         f"must be 1-{MAX_REQUEST_ID} characters of [A-Za-z0-9_-]")
    else:
        request_id = derive_request_id(digest, nonce)
    cwd = document.get("cwd")
    return Request(
        document=document,
        command=command,
        argv=argv,
        request_id=request_id,
        cwd=None if cwd is None else c.string(cwd, "/cwd"),
        workspace_root=c.string(document.get("workspace_root", "."), "/workspace_root"),
        env=c.env_map(document.get("env", {}), "/env"),
        inputs=dict(inputs),
        outputs=outputs,
        timeout_ms=c.integer(document.get("timeout_ms", DEFAULT_TIMEOUT_MS), "/timeout_ms",
                             1, MAX_TIMEOUT_MS),
        max_output_bytes=c.integer(document.get("max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES),
                                   "/max_output_bytes", 0, 64 << 20),
        output_limit_bytes=c.integer(
            document.get("output_limit_bytes", DEFAULT_OUTPUT_LIMIT_BYTES),
            "/output_limit_bytes", 0, 1 << 40),
        nonce=nonce,
        policy=policy,
        request_digest=digest,
        warnings=tuple(c.warnings),
    )


# Names already judged: a batch asks about the same few environment names for every run.
_secret_verdicts: dict[str, bool] = {}


def is_secret_name(name: str) -> bool:
    """True for environment names whose values must never leave the engine."""
    verdict = _secret_verdicts.get(name)
    if verdict is None:
        verdict = _judge_secret_name(name)
        if len(_secret_verdicts) < 4096:
            _secret_verdicts[name] = verdict
    return verdict


def _judge_secret_name(name: str) -> bool:
    # Two foldings, so that every spelling a case-insensitive match would take counts: casefold
    # maps the Kelvin sign to k, upper maps the dotless ı to I (and İ is taken as I).
    for folded in (name.casefold(), name.upper().replace("\u0130", "I").lower()):
        if folded.startswith(SECRET_PREFIXES) or folded.endswith(SECRET_SUFFIXES):
            return True
    return False


REDACTED = "<redacted>"


def redacted_document(document: dict[str, Any]) -> dict[str, Any]:
    """The request as stored and digested: values of secret-named env entries replaced."""
    doc = dict(document)

    def scrub(env: Any) -> Any:
        if not isinstance(env, dict):
            return env
        return {k: REDACTED if isinstance(k, str) and is_secret_name(k) else v
                for k, v in env.items()}

    if "env" in doc:
        doc["env"] = scrub(doc["env"])
    policy = doc.get("policy")
    if isinstance(policy, dict) and "required_env" in policy:
        doc["policy"] = {**policy, "required_env": scrub(policy["required_env"])}
    return doc


def trace_digest_of(trace_events: list[dict[str, Any]]) -> str:
    """BLAKE3(JCS(trace_events with t_ns removed from each event))."""
    stripped = [{k: v for k, v in event.items() if k != "t_ns"} for event in trace_events]
    return hashing.hash_bytes(canonical.dumps(stripped))


def result_digest_of(result: dict[str, Any]) -> str:
    """BLAKE3(JCS(the outcome fields, every key present, null where it does not apply))."""
    return hashing.hash_bytes(canonical.dumps({k: result.get(k) for k in RESULT_DIGEST_FIELDS}))
