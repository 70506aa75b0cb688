"""`exec batch`: many requests from a JSONL file, in one long-lived process (or --jobs N)."""

from __future__ import annotations

import _signal  # signal's C half: the signal module builds enums, ~2.7 ms of a batch's start

from requiem import canonical, contract
from requiem.engines import Session, Ticket
from requiem.errors import INVALID_REQUEST, RequiemError
from requiem.home import Home
from requiem.json_text import compact_bytes, use_orjson
from requiem.results_file import ResultsFile

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every start
if TYPE_CHECKING:
    from typing import Any, Callable, Iterator

    from requiem.contract import Request
    from requiem.group_commit import PackName

MAX_JOBS = 64
# From this many lines a batch encodes with orjson. Its import costs ~24 ms (it loads
# dataclasses, uuid and datetime) and it saves ~35 us a run (benchmarks/RESULTS.md, issue 3,
# A/B of the marginal cost): a batch of ~700 breaks even.
ORJSON_FROM_LINES = 700


def _terminate_as_interrupt() -> Any:
    """Make SIGTERM end a batch as Ctrl-C does, so the records of the runs that finished are
    flushed; the handler it replaced (SIG_DFL for one set outside Python), or None off the main
    thread, which sets nothing (only the main thread may set handlers)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = _signal.signal(_signal.SIGTERM, interrupt)
    except ValueError:
        return None
    return _signal.SIG_DFL if previous is None else previous  # None: set outside Python


def _parse(line: bytes) -> tuple[Any, Request | None, RequiemError | None]:
    """A JSONL line as (document, its validated request or None, the JSON error or None).

    An invalid request comes back without one: submitting it validates it again and records
    the refusal in its turn.
    """
    try:
        document = canonical.loads(line)
    except RequiemError as exc:
        return None, None, exc
    try:
        return document, contract.parse_request(document), None
    except RequiemError:
        return document, None, None


def _submit_line(session: Session, parsed: tuple[Any, Request | None, RequiemError | None],
                 engine: str | None, behind: Ticket | None,
                 meanwhile: Callable[[], None] | None = None) -> Ticket:
    """Start one parsed line's request; `behind` (the previous run) settles meanwhile."""
    document, request, error = parsed
    if error is not None:
        if behind is not None:
            behind.result()  # its GC guard goes before the refusal's record takes one
        return Ticket.ready(session.refuse(error, engine))
    return session.submit(document, engine, behind=behind, request=request, meanwhile=meanwhile)


def in_order(session: Session, lines: list[bytes], engine: str | None, slots: Iterator[int],
             report: Callable[[int, bool, bytes, str | None, PackName | None], None],
             look_ahead: bool = True, idle: Callable[[], None] | None = None) -> None:
    """Run the lines numbered by `slots`, one at a time; `report` each result as it settles
    (its slot, whether it succeeded, its results-file line, its document's digest, and where
    the group commit names the pack holding the document, when it packs it).

    Each run's bookkeeping, and (look_ahead) the next line's validation and then `idle`, is
    done while the next run's command runs. Results are reported before their records are
    durable: the caller hands them out only after closing the session (which also settles the
    runs an interrupt left).
    """
    unreported: list[tuple[int, Ticket]] = []
    following = next(slots, None)
    ahead: tuple[int, Any] | None = None  # the next line, validated while this one ran
    while following is not None:
        slot, following = following, None
        parsed = ahead[1] if ahead is not None and ahead[0] == slot else _parse(lines[slot])
        ahead = None
        looked = False

        def validate_next() -> None:
            nonlocal following, ahead, looked
            looked = True
            following = next(slots, None)
            if following is not None:
                ahead = following, _parse(lines[following])
            if idle is not None:
                idle()

        behind = unreported[-1][1] if unreported else None
        unreported.append((slot, _submit_line(session, parsed, engine, behind,
                                              validate_next if look_ahead else None)))
        if not looked:
            following = next(slots, None)
        while unreported and unreported[0][1].settled:
            _report(report, *unreported.pop(0))
    for done, ticket in unreported:
        _report(report, done, ticket)


def _report(report: Callable[[int, bool, bytes, str | None, PackName | None], None],
            slot: int, ticket: Ticket) -> None:
    result = ticket.result()
    report(slot, result.get("ok") is True, ticket.line or result_line(result),
           result.get("result_object"), ticket.pack)


def run_batch(home: Home, requests_path: str, out_path: str, jobs: int = 1,
              engine: str | None = None) -> dict[str, Any]:
    """Run every line of a JSONL file; write results in input order; summarise.

    --jobs 1 runs in this process; --jobs N in N worker processes (requiem.workers).
    """
    if not 1 <= jobs <= MAX_JOBS:
        raise RequiemError(INVALID_REQUEST, f"--jobs must be between 1 and {MAX_JOBS}")
    try:
        with open(requests_path, "rb") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise RequiemError(INVALID_REQUEST, f"cannot read {requests_path}: {exc.strerror}") from None
    work = [line for line in lines if line.strip()]
    del lines
    results = ResultsFile(out_path)
    try:
        if len(work) >= ORJSON_FROM_LINES:
            use_orjson()  # before any worker is forked, so that every worker has it
        previous = _terminate_as_interrupt()
        try:
            if jobs > 1 and len(work) > 1 and _forkable():
                from requiem.workers import run_in_workers

                for succeeded, line in run_in_workers(home, work, engine, min(jobs, len(work))):
                    results.add(succeeded, line)
                results.write_settled()
            else:
                _in_this_process(home, work, engine, results)
            return results.finish()  # under the handler: a SIGTERM now is an interrupt too
        finally:
            if previous is not None:
                _signal.signal(_signal.SIGTERM, previous)
    except BaseException:
        results.discard()
        raise


def _forkable() -> bool:
    """Whether worker processes can be forked here: from the main thread, with no other
    thread, Python's or a native library's (a lock another thread holds would stay held in
    every worker). Otherwise --jobs N runs in this process, with the same results."""
    import threading  # for --jobs N only: a --jobs 1 batch does without it

    from requiem.sandbox.proc import single_threaded

    return threading.current_thread() is threading.main_thread() and single_threaded()


def _in_this_process(home: Home, lines: list[bytes], engine: str | None,
                     results: ResultsFile) -> None:
    session = Session(home, group_commit=True)
    failed: list[RequiemError] = []

    def write_meanwhile() -> None:
        """The settled lines written while a command runs, not between one and the next. A
        failure to write them is raised once that command has ended and is recorded."""
        if not failed:
            try:
                results.write_settled()
            except RequiemError as exc:
                failed.append(exc)

    def report(slot: int, succeeded: bool, line: bytes, document: str | None,
               pack: PackName | None) -> None:
        if failed:
            raise failed[0]
        results.add(succeeded, line, document, pack)
        if results.waiting > 1024:  # refused or other engines' runs: no native command to wait on
            results.write_settled()

    try:
        in_order(session, lines, engine, iter(range(len(lines))), report, idle=write_meanwhile)
    finally:
        session.close()  # flushes the queued records, on an interrupt too
    results.write_settled()  # the last groups' packs are named now


def result_line(result: dict[str, Any]) -> bytes:
    """One result as a line of a batch's results file."""
    return compact_bytes(result, sort_keys=False) + b"\n"
