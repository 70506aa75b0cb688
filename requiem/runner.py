"""The runner: one request, start to finish — confine, materialise, spawn, capture, digest."""

from __future__ import annotations

import os
import stat
import time

import requiem
from requiem import confinement, contract, sandbox
from requiem.cas import Cas, CasWriter
from requiem.cas_guard import write_guard
from requiem.cas_lease import lease
from requiem.contract import Request
from requiem.errors import (
    INVALID_REQUEST,
    MISSING_INPUT,
    QUOTA_EXCEEDED,
    SPAWN_FAILED,
    TIMEOUT,
    RequiemError,
)
from requiem.clock import utc_now_iso
from requiem.tuples import named_tuple

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping

FIXED_PATH = "/usr/local/bin:/usr/bin:/bin"
DETERMINISTIC_UMASK = 0o022
# How often a running command's captured output is measured against its limit.
_POLL_SECONDS = 0.05
# A dual run copies the workspace to a new path; larger workspaces keep their path.
MAX_WORKSPACE_COPY_BYTES = 64 << 20


@named_tuple
class Perturbation:
    """How a dual run's secondary differs from the primary (reprotest-style variations)."""

    host_env: dict[str, str]
    umask: int = 0o077
    hostname: str = "requiem-perturbed"
    reverse_env_order: bool = True

    @classmethod
    def default(cls) -> "Perturbation":
        host = dict(os.environ)
        host.update({"TZ": "Pacific/Kiritimati", "LANG": "fr_FR.UTF-8", "LC_ALL": "fr_FR.UTF-8"})
        return cls(host_env=host)


class Trace:
    """The run's trace events: {seq, t_ns, type, data}, data free of pids and clock readings."""

    def __init__(self, start_ns: int) -> None:
        self._start = start_ns
        self.events: list[dict[str, Any]] = []

    def add(self, type_: str, **data: Any) -> None:
        self.events.append({"seq": len(self.events), "t_ns": time.monotonic_ns() - self._start,
                            "type": type_, "data": data})


def build_env(request: Request, workspace: str, host_env: Mapping[str, str]) -> dict[str, str]:
    """The child's environment: from the policy, then the request; secrets always stripped."""
    policy = request.policy
    if policy.deterministic:
        env = {"TZ": "UTC", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0",
               "HOME": workspace, "PATH": FIXED_PATH}
        if policy.time_mode == "fixed":
            env["SOURCE_DATE_EPOCH"] = contract.FIXED_SOURCE_DATE_EPOCH
    else:
        env = dict(host_env)
    env.update(request.env)
    for name in policy.env_allowlist:
        if name in host_env:
            env[name] = host_env[name]
    for name in policy.env_denylist:
        env.pop(name, None)
    env.update(policy.required_env)
    return {k: v for k, v in sorted(env.items()) if not contract.is_secret_name(k)}


def resolve_command(command: str, cwd: str) -> str:
    """The executable's host path: looked up on the fixed PATH when it has no slash."""
    if "/" in command:
        candidates = [command if os.path.isabs(command) else os.path.join(cwd, command)]
    else:
        candidates = [os.path.join(d, command) for d in FIXED_PATH.split(":")]
    for path in candidates:
        try:
            mode = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise RequiemError(SPAWN_FAILED, f"cannot reach {path}: {exc.strerror}") from None
        if stat.S_ISDIR(mode):
            raise RequiemError(SPAWN_FAILED, f"command is a directory: {path}")
        if not os.access(path, os.X_OK):
            raise RequiemError(SPAWN_FAILED, f"command is not executable: {path}")
        return path
    raise RequiemError(SPAWN_FAILED, f"command not found: {command!r} (PATH={FIXED_PATH})")


def determinism_confidence(request: Request, report: sandbox.SandboxReport) -> dict[str, Any]:
    """high / medium / best_effort, with the reasons that lowered it."""
    reasons: list[str] = []
    score = 1.0
    if not request.policy.deterministic:
        reasons.append("policy.deterministic=false: the host environment reaches the command")
        score -= 0.5
    if request.policy.time_mode == "system":
        reasons.append("time_mode=system: SOURCE_DATE_EPOCH not pinned")
        score -= 0.1
    if request.policy.network:
        reasons.append("policy.network=true: network reachable")
        score -= 0.2
    wanted = ["workspace_confinement", "process_isolation"]
    if not request.policy.network:
        wanted.append("network_isolation")
    for cap in wanted + [c for c in request.policy.sandbox.require if c not in wanted]:
        state = report.state(cap)
        if state != "enforced":
            reasons.append(f"sandbox_capability_{state}: {cap}")
            score -= 0.1 if state == "partial" else 0.2
    score = round(max(score, 0.0), 2)
    level = "high" if score >= 0.9 else "medium" if score >= 0.5 else "best_effort"
    return {"level": level, "score": score, "reasons": reasons}


def _inline(data: bytes) -> tuple[str, str]:
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        import base64

        return base64.b64encode(data).decode("ascii"), "base64"


def copy_workspace(workspace: str, keep_out: tuple[str, ...]) -> str | None:
    """A copy of a small workspace at a new path (for a dual run), or None if too large.

    Taken before the primary runs, so the secondary starts from the same files.
    """
    excluded = {os.path.realpath(p) for p in keep_out}
    total = 0
    for root, dirs, files in os.walk(workspace):
        dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(root, d)) not in excluded]
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
            if total > MAX_WORKSPACE_COPY_BYTES:
                return None

    def ignore(directory: str, names: list[str]) -> set[str]:
        return {n for n in names if os.path.realpath(os.path.join(directory, n)) in excluded}

    import shutil
    import tempfile

    target = tempfile.mkdtemp(prefix="requiem-dual-ws-")
    shutil.copytree(workspace, target, symlinks=True, dirs_exist_ok=True, ignore=ignore)
    return os.path.realpath(target)


def _mover(old: str, new: str | None) -> Callable[[str], str]:
    """Maps request paths under the old workspace root to the new one (identity when not moved)."""
    prefix = old.rstrip("/") + "/"

    def move(path: str) -> str:
        if new is not None and (path == old or path.startswith(prefix)):
            return new + path[len(old):]
        return path

    return move


class Runner:
    """Runs requests against one home's CAS, reusing sandbox backends across runs."""

    def __init__(self, cas: Cas, required: tuple[str, ...] = (),
                 probe_cache: str | None = None, protected: tuple[str, ...] = ()) -> None:
        self.cas = cas
        # The Requiem home and CAS: a sandboxed command must never see or write them.
        self.protected = tuple(os.path.realpath(p) for p in protected)
        # Capabilities config.json requires of every run, on top of each request's own.
        self.required = required
        # Where the sandbox probe's findings are cached between processes (the home).
        self.probe_cache = probe_cache
        self._backends: dict[str, sandbox.Backend] = {}
        # The next run's stdout and stderr captures, made while a command runs (captures_ahead).
        self._captures_ahead: tuple[CasWriter, CasWriter] | None = None

    def backend(self, name: str) -> sandbox.Backend:
        if name not in self._backends:
            self._backends[name] = sandbox.select_backend(name, cache_dir=self.probe_cache)
        return self._backends[name]

    def close(self) -> None:
        try:
            for writer in self._captures_ahead or ():
                writer.abort()
            self._captures_ahead = None
        finally:
            for backend in self._backends.values():
                backend.close()

    def captures_ahead(self) -> None:
        """Make the next run's stdout and stderr captures now, if it can: a batch calls this
        while a command runs, so the next one starts ~12 us sooner after it ends. If they
        cannot be made (a full disk, no descriptor left), the running command is left alone:
        the next run makes its own, and fails there as it would have."""
        if self._captures_ahead is None:
            try:
                self._captures_ahead = self.captures()
            except (OSError, RequiemError):
                pass

    def captures(self) -> tuple[CasWriter, CasWriter]:
        """A run's stdout and stderr captures: the ones made ahead, or new ones."""
        made, self._captures_ahead = self._captures_ahead, None
        if made is not None:
            return made
        stdout = self.cas.writer()
        try:
            return stdout, self.cas.writer()
        except BaseException:
            stdout.abort()
            raise

    def run(self, request: Request, perturbation: Perturbation | None = None,
            on_result: Callable[[dict[str, Any]], None] | None = None,
            moved_to: str | None = None) -> dict[str, Any]:
        """Run one validated request and return its result document (refusals raise).

        on_result is called with the result while the objects it names are guarded against a
        concurrent GC (the caller records the run there). moved_to runs it in a copy of the
        workspace at another path, absolute request paths following the move.
        """
        launch = self.start(request, perturbation, moved_to)
        try:
            launch.collect()
            return launch.finish(on_result)
        finally:
            launch.close()

    def start(self, request: Request, perturbation: Perturbation | None = None,
              moved_to: str | None = None) -> Launch:
        """Prepare the workspace and start the command; the caller collects, finishes, closes."""
        launch = Launch(self, request, perturbation, moved_to)
        try:
            launch.spawn()
        except BaseException:
            launch.close()
            raise
        return launch

    def masked_paths(self, workspace: str, backend: str) -> tuple[str, ...]:
        """The protected paths inside this workspace; refuses workspaces a sandbox cannot keep."""
        if backend == "none":
            return ()  # nothing is enforced, and the report says so
        from requiem.sandbox._layout import covers_system

        if covers_system(workspace):
            raise RequiemError(INVALID_REQUEST, f"/workspace_root: {workspace} contains system "
                               "directories (/usr, /etc, /tmp, /run); a sandboxed workspace must not",
                               pointer="/workspace_root")
        root = workspace.rstrip("/") + "/"
        masked = []
        for path in self.protected:
            # A workspace below the home is fine (the rest of the home is not mounted); one that
            # is the home or the CAS could only run with its own contents hidden.
            if path == workspace:
                raise RequiemError(INVALID_REQUEST, f"/workspace_root: {workspace} is the Requiem "
                                   "home or CAS itself", pointer="/workspace_root")
            if path.startswith(root):
                os.makedirs(path, exist_ok=True)  # a mount needs its mount point
                masked.append(path)
        return tuple(masked)


class Launch:
    """One request in flight: spawned, then collected (workspace quiet), then finished.

    A batch finishes one run while the next one's command runs: everything after collect()
    touches only the run's own captures and the CAS, never the workspace.
    """

    def __init__(self, runner: Runner, request: Request, perturbation: Perturbation | None,
                 moved_to: str | None) -> None:
        self.runner = runner
        self.request = request
        self._perturbation = perturbation
        self._moved_to = moved_to
        # The lease on the inputs and the GC guard, entered in that order: held until the run's
        # record is queued (contextlib's ExitStack would cost every cold start its import).
        self._held: list[lease | write_guard] = []
        # The GC guard collect() needs, taken while the command runs (guard_ahead), if it was.
        self._guard_ahead: write_guard | None = None
        self._stdout: CasWriter | None = None
        self._stderr: CasWriter | None = None
        self._child: sandbox.Child | None = None
        # Set by collect(): why the command ended, how, and the exit code the result reports.
        self._reason = ""
        self._exit: sandbox.Exit | None = None
        self._exit_code: int | None = None
        self._output_digests: dict[str, str | None] = {}

    def spawn(self) -> None:
        """Confine, materialise the inputs, build the environment and start the command."""
        request = self.request
        runner = self.runner
        workspace = confinement.workspace_root(request.workspace_root)
        move = _mover(workspace, self._moved_to)
        self.start_ns = time.monotonic_ns()
        self.start_ts = utc_now_iso()
        trace = self.trace = Trace(self.start_ns)
        trace.add("request", request_digest=request.request_digest)
        # From copying the inputs out until the record names them, a GC must spare them.
        self._hold(lease(runner.cas.root, request.inputs.values()))
        workspace = self.workspace = self._moved_to or workspace
        cwd_path = move(request.cwd or ".")
        # The workspace is resolved already: its own "." needs no second walk through realpath.
        cwd = workspace if cwd_path == "." else confinement.inside(workspace, cwd_path, "/cwd")
        # The workspace itself was found a directory as it was resolved.
        if cwd is not workspace and not os.path.isdir(cwd):
            raise RequiemError(SPAWN_FAILED, f"/cwd: not a directory: {request.cwd}")
        self._output_paths = {p: move(p) for p in request.outputs}
        for path, where in self._output_paths.items():
            confinement.inside(workspace, where, f"/outputs/{path}")
        self._materialise_inputs(workspace, move)
        if request.inputs:
            trace.add("inputs", input_digests=dict(sorted(request.inputs.items())))
        perturbation = self._perturbation
        host_env = perturbation.host_env if perturbation else os.environ
        env = self.env = build_env(request, workspace, host_env)
        if perturbation and perturbation.reverse_env_order:
            env = dict(reversed(list(env.items())))
        executable = resolve_command(request.command, cwd)
        deterministic = request.policy.deterministic
        backend = runner.backend(request.policy.sandbox.backend)
        masked = runner.masked_paths(workspace, backend.name)
        stdout, stderr = self._stdout, self._stderr = runner.captures()
        spec = sandbox.LaunchSpec(
            executable=executable,
            argv=[request.command, *request.argv],
            env=env,
            cwd=cwd,
            workspace=workspace,
            stdout_fd=stdout.fileno(),
            stderr_fd=stderr.fileno(),
            umask=DETERMINISTIC_UMASK if deterministic or not perturbation else perturbation.umask,
            hostname="requiem" if deterministic or not perturbation else perturbation.hostname,
            allow_network=request.policy.network,
            rlimits=sandbox.Rlimits(**request.policy.sandbox.rlimits),
            readonly_paths=request.policy.sandbox.readonly_paths,
            masked_paths=masked,
        )
        self.report = backend.report(spec)
        sandbox.check_required(
            self.report, list(dict.fromkeys((*request.policy.sandbox.require, *runner.required))))
        trace.add("spawn", command=request.command, argc=len(request.argv) + 1)
        try:
            self._child = backend.spawn(spec)
        except OSError as exc:
            raise RequiemError(SPAWN_FAILED, f"cannot start {request.command!r}: {exc.strerror}",
                               errno=exc.errno) from None
        self._deadline = time.monotonic() + request.timeout_ms / 1000

    def _materialise_inputs(self, workspace: str, move: Callable[[str], str]) -> None:
        cas = self.runner.cas
        for path, digest in sorted(self.request.inputs.items()):
            pointer = f"/inputs/{path}"
            target = confinement.inside(workspace, move(path), pointer)
            if not cas.contains(digest):
                raise RequiemError(MISSING_INPUT, f"{pointer}: {digest} is not in the CAS",
                                   pointer=pointer, digest=digest)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            # Directories made above may not change where the target resolves; check again.
            target = confinement.inside(workspace, move(path), pointer)
            cas.get_to_file(digest, target)

    def guard_ahead(self) -> None:
        """Take the GC guard collect() needs now, while the command runs, unless a GC holds or
        waits for it (never wait here: the command's timeout and output limit are unwatched).

        A batch calls this once the work it does while a command runs is done: taken after the
        command ends, the guard's five syscalls stood between one command and the next. One
        still running at collect()'s first check lets go of it, so no GC waits on a long command.
        """
        if self._guard_ahead is None:
            guard = write_guard(self.runner.cas.root)
            if guard.try_enter():
                self._held.append(guard)
                self._guard_ahead = guard

    def _let_go_of_guard_ahead(self) -> None:
        guard, self._guard_ahead = self._guard_ahead, None
        if guard is not None:
            self._held.remove(guard)
            guard.__exit__(None, None, None)

    def collect(self) -> None:
        """Wait for the command (to its timeout or output limit), kill its tree, store outputs."""
        assert self._child is not None and self._stdout is not None and self._stderr is not None
        child, stdout, stderr, request = self._child, self._stdout, self._stderr, self.request
        reason = "exited"
        exit_info = None
        try:
            while True:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    # A command found ended is reported as ended: the result says what the
                    # command did, not when the engine looked. A batch looks late only by what
                    # it does while a command runs, which it skips for short timeouts
                    # (engines.OVERLAP_FROM_TIMEOUT_MS).
                    exit_info = child.wait(0)
                    if exit_info is not None:
                        break
                    reason = "timeout"
                    self._let_go_of_guard_ahead()  # killing its tree may take long
                    break
                exit_info = child.wait(min(remaining, _POLL_SECONDS))
                if exit_info is not None:
                    break
                self._let_go_of_guard_ahead()  # a long command: a GC may go first
                if max(stdout.written_size(), stderr.written_size()) > request.output_limit_bytes:
                    reason = "output_limit"
                    break
        finally:
            # Always: a timeout or limit kills the tree; a clean exit still reaps escapees.
            child.kill_tree()
        if exit_info is None:
            exit_info = child.wait(None)
        self._reason, self._exit = reason, exit_info
        # From the first object stored until the record names it, a GC must wait. Here, not at
        # the first store: in a batch finish() runs while the next command runs, and a wait at
        # the GC's gate there would leave that command's timeout and output limit unwatched.
        if self._guard_ahead is None:
            self._hold(write_guard(self.runner.cas.root))
        exit_code = None
        if reason == "exited":
            # A death by signal N is exit code 128+N, the shell's convention: bwrap can only report
            # it that way, so every backend does, and the digest cannot depend on the backend.
            exit_code = exit_info.exit_code if exit_info.signal is None else 128 + exit_info.signal
        self._exit_code = exit_code
        self.trace.add("exit", exit_code=exit_code, termination_reason=reason)
        for path, where in sorted(self._output_paths.items()):
            self._output_digests[path] = self._collect_output(path, where)
        if self._output_digests:
            self.trace.add("outputs", output_digests=self._output_digests)
        # The run ends here, whether finish() follows at once or after the next run's spawn.
        self._end_ns = time.monotonic_ns()
        self._end_ts = utc_now_iso()

    def _collect_output(self, path: str, where: str) -> str | None:
        try:
            # The command may have replaced the output with a symlink out of the workspace.
            real = confinement.inside(self.workspace, where, f"/outputs/{path}")
        except RequiemError:
            self.trace.add("output_rejected", path=path, reason="path_escape")
            return None
        try:
            mode = os.lstat(real).st_mode
        except FileNotFoundError:
            self.trace.add("output_missing", path=path)
            return None
        if not stat.S_ISREG(mode):
            self.trace.add("output_rejected", path=path, reason="not a regular file")
            return None
        return self.runner.cas.put_file(real).digest

    def finish(self, on_result: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Store the captured streams and build the result; on_result records it."""
        request, report, trace = self.request, self.report, self.trace
        reason, exit_info, exit_code = self._reason, self._exit, self._exit_code
        assert exit_info is not None, "finish() before collect()"
        streams = {}
        for name, writer in (("stdout", self._stdout), ("stderr", self._stderr)):
            assert writer is not None
            size = writer.written_size()
            inline = writer.read_prefix(request.max_output_bytes) if size else b""
            writer.adopt_written(limit=request.output_limit_bytes,
                                 detach=self._child is not None and self._child.strays_possible,
                                 written=size)
            info = writer.commit()
            text, encoding = _inline(inline)
            streams[name] = {
                "digest": info.digest,
                "text": text,
                "encoding": encoding,
                "truncated": size > request.max_output_bytes,
                "bytes": size,
            }
        ok = reason == "exited" and exit_code == 0
        result: dict[str, Any] = {
            "ok": ok,
            "exit_code": exit_code,
            "error_code": {"timeout": TIMEOUT, "output_limit": QUOTA_EXCEEDED}.get(reason),
            "termination_reason": reason,
            "stdout": streams["stdout"]["text"],
            "stderr": streams["stderr"]["text"],
            "stdout_encoding": streams["stdout"]["encoding"],
            "stderr_encoding": streams["stderr"]["encoding"],
            "stdout_truncated": streams["stdout"]["truncated"],
            "stderr_truncated": streams["stderr"]["truncated"],
            "stdout_bytes": streams["stdout"]["bytes"],
            "stderr_bytes": streams["stderr"]["bytes"],
            "stdout_digest": streams["stdout"]["digest"],
            "stderr_digest": streams["stderr"]["digest"],
            "output_digests": self._output_digests,
            "trace_events": trace.events,
            "trace_digest": contract.trace_digest_of(trace.events),
            "request_digest": request.request_digest,
        }
        result["result_digest"] = contract.result_digest_of(result)
        result.update({
            "request_id": request.request_id,
            "policy_applied": {
                "deterministic": request.policy.deterministic,
                "mode": request.policy.mode,
                "time_mode": request.policy.time_mode,
                "network": request.policy.network,
                "sandbox_backend": report.backend,
                "env_keys": sorted(self.env),
            },
            "sandbox_applied": report.to_json(),
            "determinism_confidence": determinism_confidence(request, report),
            "resource_usage": exit_info.rusage,
            "signal": exit_info.signal,
            "start_timestamp": self.start_ts,
            "end_timestamp": self._end_ts,
            "duration_ms": round((self._end_ns - self.start_ns) / 1e6, 3),
            "engine": "requiem",
            "engine_version": requiem.ENGINE_VERSION,
            "contract_version": requiem.CONTRACT_VERSION,
        })
        if request.warnings:
            result["warnings"] = list(request.warnings)
        if on_result is not None:
            on_result(result)
        return result

    def close(self) -> None:
        """Release everything the run holds: a live command, its captures, guard and lease."""
        try:
            if self._child is not None and self._exit is None:
                self._child.kill_tree()
        finally:
            for writer in (self._stdout, self._stderr):
                if writer is not None:
                    writer.abort()
            self._release_held()

    def _hold(self, context: lease | write_guard) -> None:
        context.__enter__()
        self._held.append(context)

    def _release_held(self) -> None:
        """Exit what the run holds, latest first; every one is exited, the first failure raised."""
        failure: BaseException | None = None
        while self._held:
            try:
                self._held.pop().__exit__(None, None, None)
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
