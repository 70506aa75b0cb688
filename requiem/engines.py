"""Engines behind one seam: requiem (native), rust (any protocol-speaking executable), dual."""

from __future__ import annotations

import _thread  # threading.Lock is _thread.allocate_lock: see requiem/__init__.py on imports
import os

from requiem import canonical, confinement, contract
from requiem.cas import Cas
from requiem.cas_guard import write_guard
from requiem.contract import Request
from requiem.errors import ENGINE_UNAVAILABLE, ERROR_CODES, INVALID_REQUEST, RequiemError
from requiem.hashing import hash_bytes
from requiem.home import Home
from requiem.json_text import compact_bytes
from requiem.runner import Perturbation, Runner
from requiem.spool import write_record

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any, Callable
    from requiem.group_commit import GroupCommit, PackName
    from requiem.runner import Launch

ENGINE_NAMES = ("requiem", "rust", "dual")
# A batch finishes a run while the next one's command runs only if that command's timeout is
# at least this long: a shorter deadline could pass unwatched (see Launch.collect).
OVERLAP_FROM_TIMEOUT_MS = 1000


class RequiemEngine:
    """The native engine: the runner in this process."""

    def __init__(self, cas: Cas, perturbation: Perturbation | None = None,
                 required: tuple[str, ...] = (), probe_cache: str | None = None,
                 protected: tuple[str, ...] = ()) -> None:
        self._runner = Runner(cas, required, probe_cache, protected)
        self._perturbation = perturbation

    def run(self, request: Request,
            on_result: Callable[[dict[str, Any]], None] | None = None,
            moved_to: str | None = None) -> dict[str, Any]:
        return self._runner.run(request, self._perturbation, on_result, moved_to)

    def start(self, request: Request) -> Launch:
        """Start the request's command; the caller collects, finishes and closes the launch."""
        return self._runner.start(request, self._perturbation)

    def captures_ahead(self) -> None:
        """Make the next run's output captures while a command runs (see Runner)."""
        self._runner.captures_ahead()

    def close(self) -> None:
        self._runner.close()


class ExternalEngine:
    """The legacy engine: an executable speaking `exec run --request R --out O`."""

    name = "rust"

    def __init__(self, executable: str) -> None:
        if not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
            raise RequiemError(ENGINE_UNAVAILABLE, f"legacy engine is not executable: {executable}")
        self.executable = executable

    def run(self, request: Request) -> dict[str, Any]:
        import subprocess
        import tempfile

        with tempfile.TemporaryDirectory(prefix="requiem-legacy-") as tmp:
            req_path = os.path.join(tmp, "request.json")
            out_path = os.path.join(tmp, "result.json")
            with open(req_path, "wb") as handle:
                handle.write(canonical.dumps(request.document))
            try:
                subprocess.run(
                    [self.executable, "exec", "run", "--request", req_path, "--out", out_path],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    timeout=request.timeout_ms / 1000 + 30,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise RequiemError(ENGINE_UNAVAILABLE, f"legacy engine failed: {exc}") from None
            try:
                result = canonical.load_file(out_path, max_bytes=256 << 20)
            except (OSError, RequiemError) as exc:
                raise RequiemError(ENGINE_UNAVAILABLE,
                                   f"legacy engine wrote no valid result: {exc}") from None
        if not isinstance(result, dict):
            raise RequiemError(ENGINE_UNAVAILABLE, "legacy engine result is not a JSON object")
        if result.get("ok") is False and isinstance(result.get("error"), dict):
            error = result["error"]
            raise RequiemError(error.get("code", ENGINE_UNAVAILABLE)
                               if error.get("code") in ERROR_CODES else ENGINE_UNAVAILABLE,
                               f"legacy engine: {error.get('message')}")
        return result

    def close(self) -> None:
        pass


class Ticket:
    """A submitted run's result: ready, or computed when first asked for (once; a failure to
    compute it is raised again on every later ask)."""

    def __init__(self, settle: Callable[[], dict[str, Any]]) -> None:
        self._settle: Callable[[], dict[str, Any]] | None = settle
        self._result: dict[str, Any] | None = None
        self._failure: BaseException | None = None
        # The result as one compact JSON line, when recording it produced those bytes anyway.
        self.line: bytes | None = None
        # Where a group commit names the pack holding its result document, if it packs it,
        # for the results line to name it too.
        self.pack: PackName | None = None

    @property
    def settled(self) -> bool:
        return self._settle is None

    @classmethod
    def ready(cls, result: dict[str, Any]) -> "Ticket":
        ticket = cls(lambda: result)
        ticket.result()
        return ticket

    def result(self) -> dict[str, Any]:
        if self._settle is not None:
            settle, self._settle = self._settle, None
            try:
                self._result = settle()
            except BaseException as exc:
                self._failure = exc
                raise
        if self._failure is not None:
            raise self._failure
        assert self._result is not None
        return self._result


class Session:
    """One process's engines over one home: runs requests, records history, reuses backends."""

    def __init__(self, home: Home, group_commit: bool = False) -> None:
        from requiem.config import load_config

        self.home = home
        self.config = load_config(home)
        self.cas = Cas(home.cas_location)
        # A batch commits its records in groups; a single run's record is durable on return.
        self._group: GroupCommit | None = None
        if group_commit:
            from requiem.group_commit import GroupCommit

            self._group = GroupCommit(self.cas, home.spool_location)
        self._native = RequiemEngine(self.cas, required=self._required(),
                                     probe_cache=home.root_location, protected=self._protected())
        self._perturbed: RequiemEngine | None = None
        self._unsettled: list[Ticket] = []
        self._unsettled_lock = _thread.allocate_lock()

    def _required(self) -> tuple[str, ...]:
        return tuple(self.config["sandbox"]["required"])

    def _protected(self) -> tuple[str, ...]:
        return (self.home.root_location, self.home.cas_location)

    def close(self) -> None:
        """Finish the runs still unsettled, then (with a group commit) make every queued record
        durable, then release the backends."""
        try:
            try:
                for ticket in self._take_unsettled():
                    try:
                        ticket.result()
                    except Exception:
                        pass  # raised again to whoever asks for that result
            finally:
                if self._group is not None:
                    self._group.close()
        finally:
            self._native.close()
            if self._perturbed:
                self._perturbed.close()

    def _spool(self, kind: str, payload: dict[str, Any]) -> None:
        if self._group is not None:
            self._group.add(kind, payload)
        else:
            write_record(self.home.spool_location, kind, payload)

    def _legacy(self) -> ExternalEngine:
        path = self.config["legacy_engine"]["path"]
        if not path:
            raise RequiemError(ENGINE_UNAVAILABLE,
                               "no legacy engine configured (REQUIEM_RUST_ENGINE or config.json)")
        if "/" not in path:
            import shutil

            path = shutil.which(path) or path
        return ExternalEngine(path)

    def choose(self, requested: str | None) -> str:
        """The engine for this run: as asked, else the configured default, sampled into dual."""
        if requested is not None:
            if requested not in ENGINE_NAMES:
                raise RequiemError(INVALID_REQUEST, f"unknown engine {requested!r}")
            return requested
        policy = self.config["engine_selection_policy"]
        default = policy["default_engine"]
        rate = float(policy["dual_run_sampling_rate"])
        if default != "requiem" or rate <= 0:
            return default
        import random

        return "dual" if random.random() < rate else "requiem"

    def refuse(self, exc: RequiemError, engine: str | None = None) -> dict[str, Any]:
        """Record a request refused before it could be parsed; return its error document."""
        self._record_refusal(None, None, exc, engine or "requiem")
        return exc.to_json()

    def execute(self, document: Any, engine: str | None = None) -> dict[str, Any]:
        """Validate and run one request document; return the result or the error document."""
        return self.submit(document, engine).result()

    def submit(self, document: Any, engine: str | None = None,
               behind: Ticket | None = None, request: Request | None = None,
               meanwhile: Callable[[], None] | None = None) -> Ticket:
        """Start one request; its ticket gives the result. `behind` is settled meanwhile.

        `request`: the document validated already. `meanwhile` is called while a native run's
        command runs, once the run behind is settled (a batch validates its next line there).

        A batch passes the previous run's ticket: that run's bookkeeping (streams, digests,
        record) is done while this run's command runs. The run behind holds the GC guard until
        it is settled, so it is settled first wherever this run would take the guard itself.
        """
        def settle_behind() -> None:
            if behind is not None:
                behind.result()

        try:
            if request is None:
                request = contract.parse_request(document)
        except RequiemError as exc:
            settle_behind()
            self._record_refusal(document, None, exc, engine or "requiem")
            return Ticket.ready(exc.to_json())
        try:
            chosen = self.choose(engine)
        except RequiemError as exc:
            settle_behind()
            return Ticket.ready(exc.to_json())
        if chosen != "requiem":
            settle_behind()
            other = Ticket(lambda: self._dual(request, other) if chosen == "dual"
                           else self._run_legacy(request, document, other))
            other.result()
            return other
        if request.inputs:
            settle_behind()  # this run's lease is written under the guard
        elif request.timeout_ms < OVERLAP_FROM_TIMEOUT_MS:
            # Its deadline is watched from its spawn on, not after the run behind's bookkeeping
            # (which can take long: hashing a large output): the two never overlap.
            settle_behind()
            meanwhile = None
        try:
            launch = self._native.start(request)
        except RequiemError as exc:
            settle_behind()
            self._record_refusal(document, request, exc, chosen)
            return Ticket.ready(exc.to_json())
        try:
            settle_behind()  # the run behind's failure is its own: this run is dropped, not blamed
            if meanwhile is not None:
                meanwhile()
                self._native.captures_ahead()  # more runs follow
            launch.guard_ahead()  # after the run behind let go of its own: see write_guard
        except BaseException:
            launch.close()
            raise
        try:
            launch.collect()
        except RequiemError as exc:
            launch.close()
            self._record_refusal(document, request, exc, chosen)
            return Ticket.ready(exc.to_json())
        except BaseException:
            launch.close()
            raise
        ticket = Ticket(lambda: self._finish_native(launch, request, document, ticket))
        with self._unsettled_lock:
            # Kept until settled, so close() finishes it even if the caller never got it back.
            self._unsettled = [t for t in self._unsettled if not t.settled] + [ticket]
        return ticket

    def _take_unsettled(self) -> list[Ticket]:
        with self._unsettled_lock:
            unsettled, self._unsettled = self._unsettled, []
        return [t for t in unsettled if not t.settled]

    def _finish_native(self, launch: Launch, request: Request, document: Any,
                       ticket: Ticket) -> dict[str, Any]:
        def record(result: dict[str, Any]) -> None:
            ticket.line = self._record_execution(request, result, "requiem", dual_run=False,
                                                 ticket=ticket)

        try:
            return launch.finish(record)
        except RequiemError as exc:
            launch.close()  # lets go of the guard the refusal's record takes again
            self._record_refusal(document, request, exc, "requiem")
            return exc.to_json()
        finally:
            launch.close()

    def _run_legacy(self, request: Request, document: Any, ticket: Ticket) -> dict[str, Any]:
        try:
            result = self._legacy().run(request)
        except RequiemError as exc:
            self._record_refusal(document, request, exc, "rust")
            return exc.to_json()
        with write_guard(self.cas.root):
            self._record_execution(request, result, "rust", dual_run=False, ticket=ticket)
        return result

    def _dual(self, request: Request, ticket: Ticket) -> dict[str, Any]:
        try:
            legacy = self._legacy()
            secondary_engine = legacy.name
        except RequiemError:
            legacy = None
            secondary_engine = "requiem-perturbed"
        copy = None
        try:
            if legacy is None:
                from requiem.runner import copy_workspace

                # Before the primary runs: the secondary must start from the same files.
                copy = copy_workspace(confinement.workspace_root(request.workspace_root),
                                      (self.home.root_location, self.home.cas_location))
            try:
                primary = self._native.run(request, lambda r: self._record_execution(
                    request, r, "requiem", dual_run=True, ticket=ticket))
            except RequiemError as exc:
                self._record_refusal(request.document, request, exc, "dual")
                return exc.to_json()
            try:
                if legacy is not None:
                    secondary = legacy.run(request)
                    with write_guard(self.cas.root):
                        self._record_execution(request, secondary, secondary_engine, dual_run=True)
                else:
                    if self._perturbed is None:
                        self._perturbed = RequiemEngine(
                            self.cas, Perturbation.default(), self._required(),
                            self.home.root_location, self._protected())
                    secondary = self._perturbed.run(request, lambda r: self._record_execution(
                        request, r, secondary_engine, dual_run=True), moved_to=copy)
            except RequiemError as exc:
                secondary = exc.to_json()
        finally:
            if copy is not None:
                import shutil

                shutil.rmtree(copy, ignore_errors=True)
        from requiem import dual

        report = dual.compare(primary, secondary, read=self._read_quietly)
        report.update({"primary_engine": "requiem", "secondary_engine": secondary_engine})
        self._spool("dual_run", {
            "request_id": request.request_id,
            "request_digest": request.request_digest,
            **report,
            "primary_result_object": primary.get("result_object"),
            "secondary_result_object": secondary.get("result_object"),
        })
        self._append_diff_log(request, report)
        primary["dual_run"] = report
        return primary

    def _append_diff_log(self, request: Request, report: dict[str, Any]) -> None:
        """One JSON line per comparison in <dual_run_diff_output>/diffs.log, for `tail -f`."""
        directory = self.config["engine_selection_policy"]["dual_run_diff_output"]
        if not directory:
            return
        os.makedirs(directory, exist_ok=True)
        line = {"request_id": request.request_id, "request_digest": request.request_digest,
                "status": "mismatch" if report["mismatch"] else "match", **report}
        with open(os.path.join(directory, "diffs.log"), "ab") as log:
            log.write(canonical.stable_dumps(line) + b"\n")

    def _read_quietly(self, digest: str) -> bytes | None:
        try:
            return self.cas.read_bytes(digest, limit=1 << 20)
        except RequiemError:
            return None

    def _store_json(self, document: dict[str, Any]) -> str:
        return self.cas.put_bytes(canonical.stable_dumps(document)).digest

    def _record_execution(self, request: Request, result: dict[str, Any], engine: str,
                          dual_run: bool, ticket: Ticket | None = None) -> bytes:
        """Store the request object and the result document and spool the run's record; return
        the result as one compact JSON line (the document and its own digest). The ticket of
        the run whose result this is learns where its pack is named, if it goes into one."""
        request_bytes, result_bytes = _objects_of(request, result)
        self.cas.put_bytes(request_bytes, digest=result["request_object"])
        record = _execution_record(request, result, engine, dual_run)
        if self._group is not None and self._group.packable(result_bytes):
            named = self._group.add("execution", record, document=result_bytes)  # into the pack
            if ticket is not None:
                ticket.pack = named
        else:
            self.cas.put_bytes(result_bytes, digest=result["result_object"], fresh=True)
            self._spool("execution", record)
        return b"%s,\"result_object\":\"%s\"}\n" % (result_bytes[:-1],
                                                      result["result_object"].encode())

    def _record_refusal(self, document: Any, request: Request | None, exc: RequiemError,
                        engine: str) -> None:
        with write_guard(self.cas.root):
            self._write_refusal(document, request, exc, engine)

    def _write_refusal(self, document: Any, request: Request | None, exc: RequiemError,
                       engine: str) -> None:
        from requiem.clock import utc_now_iso

        command = document.get("command") if isinstance(document, dict) else None
        now = utc_now_iso()
        self._spool("execution", {
            "engine": engine,
            "request_id": request.request_id if request else None,
            "request_digest": request.request_digest if request else None,
            "result_digest": None,
            "ok": False,
            "exit_code": None,
            "error_code": exc.code,
            "termination_reason": "refused",
            "command": command if isinstance(command, str) else None,
            "stdout_digest": None,
            "stderr_digest": None,
            "trace_digest": None,
            "output_digests": {},
            "input_digests": dict(request.inputs) if request else {},
            "request_object": (self._store_json(contract.redacted_document(request.document))
                               if request else None),
            "result_object": None,
            "start_timestamp": now,
            "end_timestamp": now,
            "duration_ms": 0.0,
            "sandbox_applied": None,
            "determinism_confidence": None,
            "resource_usage": {},
            "dual_run": engine == "dual",
            "queue_full": False,
        })


def _objects_of(request: Request, result: dict[str, Any]) -> tuple[bytes, bytes]:
    """The bytes of a run's request object and result document; their digests go into the
    result."""
    request_bytes = canonical.stable_dumps(contract.redacted_document(request.document))
    result["request_object"] = hash_bytes(request_bytes)
    # In the result's own key order, as `exec run` prints it: nothing reads the object's key
    # order, and sorting its keys cost every run ~8 of the ~28 us its encoding takes.
    result_bytes = compact_bytes({k: v for k, v in result.items() if k not in ("result_object", "dual_run")},
                                 sort_keys=False, errors="surrogatepass")
    result["result_object"] = hash_bytes(result_bytes)
    return request_bytes, result_bytes


def _execution_record(request: Request, result: dict[str, Any], engine: str,
                      dual_run: bool) -> dict[str, Any]:
    """The history record of one execution (its objects named in the result already)."""
    return {
        "engine": engine,
        "request_id": result.get("request_id", request.request_id),
        "request_digest": request.request_digest,
        "result_digest": result.get("result_digest"),
        "ok": bool(result.get("ok")),
        "exit_code": result.get("exit_code"),
        "error_code": result.get("error_code"),
        "termination_reason": result.get("termination_reason"),
        "command": request.command,
        "stdout_digest": result.get("stdout_digest"),
        "stderr_digest": result.get("stderr_digest"),
        "trace_digest": result.get("trace_digest"),
        "output_digests": result.get("output_digests") or {},
        "input_digests": dict(request.inputs),
        "request_object": result["request_object"],
        "result_object": result["result_object"],
        "result_pack": None,  # or the group commit's pack holding the result document
        "start_timestamp": result.get("start_timestamp"),
        "end_timestamp": result.get("end_timestamp"),
        "duration_ms": result.get("duration_ms"),
        "sandbox_applied": _caps_only(result.get("sandbox_applied")),
        "determinism_confidence": result.get("determinism_confidence"),
        "resource_usage": result.get("resource_usage") or {},
        "dual_run": dual_run,
        "queue_full": False,
    }


def _caps_only(applied: Any) -> dict[str, Any] | None:
    if not isinstance(applied, dict):
        return None
    return {k: applied.get(k, []) for k in ("enforced", "partial", "unsupported")}
