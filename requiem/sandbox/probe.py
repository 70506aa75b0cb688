"""What this machine can really do: every primitive tried in a throwaway child, with the errno as evidence."""

# The attempts run in a `python -I -S` helper (never a fork of the engine) while the bwrap canary runs
# beside it: about 30 ms on this machine when idle. That is paid once per process; a caller that names a
# cache directory (health, exec run) also keeps the answer in a file, keyed by everything it depends on
# that can be read cheaply: kernel, boot, our uids, the seccomp/NNP/capability state we were started in,
# the user namespace we live in, the userns sysctls, the LSM list, and the identity of bwrap, prlimit,
# setpriv and of the probe code. A stale entry could only over-claim until a run shows otherwise, and runs
# do: the zygote refuses to exec when a planned step fails, bwrap runs are checked per run (namespaces)
# and fail rather than run weaker. Entries expire after ten minutes all the same.

from __future__ import annotations

import _thread  # threading.Lock is _thread.allocate_lock: see requiem/__init__.py on imports
import json  # ASCII-escaped: the cache holds paths, which need not be UTF-8
import os
import sys
import time

from requiem.sandbox.base import LaunchSpec, SandboxReport
from requiem.sandbox.plan import bwrap_plan, choose, zygote_plan

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
_CACHE_FILE = "sandbox-probe.json"
_CACHE_TTL_S = 600
_KEY_FILES = ("/proc/sys/kernel/random/boot_id", "/proc/sys/user/max_user_namespaces",
              "/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "/proc/sys/kernel/unprivileged_userns_clone",
              "/sys/kernel/security/lsm")
_lock = _thread.allocate_lock()
_cached: dict[str, Any] | None = None


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return "-"


def _stat(path: str | None) -> str:
    try:
        st = os.stat(path or "")
    except OSError:
        return "-"
    return f"{path}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _cache_key(tools: dict[str, str | None]) -> list[str]:
    status = [line for line in _read("/proc/self/status").splitlines()
              if line.startswith(("Seccomp", "NoNewPrivs", "CapBnd", "CapEff"))]
    code = [_stat(os.path.join(_HERE, name)) for name in sorted(os.listdir(_HERE))
            if name.startswith("_") and name.endswith(".py")]
    return [*os.uname(), sys.executable, f"{os.geteuid()}:{os.getegid()}", *status,
            os.readlink("/proc/self/ns/user"), *(_read(p) for p in _KEY_FILES),
            *(_stat(path) for path in tools.values()), *code]


def _which(name: str) -> str | None:
    """shutil.which without importing shutil (and fnmatch and re): health must start fast."""
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(folder or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _run(tools: dict[str, str | None]) -> dict[str, Any]:
    import ast
    import subprocess

    from requiem.sandbox.proc import helper_argv  # ctypes and subprocess: not for a cache hit

    from requiem.sandbox import bwrap

    started = time.perf_counter()
    helper = subprocess.Popen(helper_argv("_probes", "main()"), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/", start_new_session=True)
    canary = bwrap.canary(tools)  # meanwhile
    try:
        out, err = helper.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        helper.kill()
        out, err = helper.communicate()
    result: dict[str, Any] = {}
    try:
        for part in ast.literal_eval(out.decode()):
            result.update(part)
    except (ValueError, SyntaxError):
        tail = err.decode(errors="replace").strip().splitlines()
        result["helper"] = {"ok": False, "evidence": f"probe helper exit {helper.returncode}: "
                                                     f"{tail[-1] if tail else 'no output'}"}
    result.update(bwrap=canary, tools=tools, elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
                  host={"euid": os.geteuid(), "kernel": os.uname().release, "arch": os.uname().machine})
    return result


def probe(cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """{primitive: {ok, evidence, errno}} plus bwrap's canary and the tools found; computed once per process."""
    global _cached
    with _lock:
        if _cached is not None:
            return _cached
        tools = {name: _which(name) for name in ("bwrap", "prlimit", "setpriv")}
        key = _cache_key(tools)
        path = os.path.join(cache_dir, _CACHE_FILE) if cache_dir else None
        if path is not None:
            try:
                with open(path, encoding="utf-8") as handle:
                    doc = json.loads(handle.read())
                if doc["key"] == key and 0 <= time.time() - doc["at"] < _CACHE_TTL_S:
                    _cached = {**doc["probe"], "cached": True}
                    return _cached
            except (OSError, ValueError, KeyError, TypeError):
                pass
        result = _run(tools)
        if path is not None:
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                tmp = os.path.join(os.path.dirname(path), f".{_CACHE_FILE}.{os.getpid()}")
                with open(tmp, "w", encoding="utf-8") as handle:
                    handle.write(json.dumps({"key": key, "at": time.time(), "probe": result}))
                os.replace(tmp, path)
            except OSError:
                pass  # a read-only home only costs the next process another probe
        _cached = {**result, "cached": False}
        return _cached


def machine_capabilities(cache_dir: str | os.PathLike[str] | None = None) -> SandboxReport:
    """What the best backend available here enforces for a default run, and why that backend."""
    found = probe(cache_dir)
    name, why = choose(found)
    spec = LaunchSpec("/bin/true", ["true"], {}, "/", "/", -1, -1)
    if name == "bwrap":
        report = bwrap_plan(found, spec).report
    elif name == "zygote":
        report = zygote_plan(found, spec).report
    else:
        report = SandboxReport.from_states({}, "none")
    return report._replace(backend_reason=why)
