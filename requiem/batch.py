"""`exec batch`: many requests from a JSONL file in one long-lived process."""

from __future__ import annotations

import os
from contextlib import contextmanager

from requiem import canonical, contract
from requiem.engines import HANDED_OFF, Session, Ticket, result_line
from requiem.errors import INVALID_REQUEST, QUOTA_EXCEEDED, RequiemError
from requiem.home import Home

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every start
if TYPE_CHECKING:
    from typing import Any, Callable, Iterator

    from requiem.contract import Request

MAX_JOBS = 64
# From this many requests a batch finishes its runs in a second process (requiem.finisher):
# forking it costs a few milliseconds, a second core pays that back within a few dozen runs.
# REQUIEM_BATCH_FINISHER=always|never overrides the choice.
FINISHER_MIN_REQUESTS = 32


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM ends a batch as Ctrl-C does, so the records of the runs that finished are flushed."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; a caller's own thread keeps the default
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
                 engine: str | None, behind: Ticket | None, slot: int,
                 meanwhile: Callable[[], None] | None = None) -> Ticket:
    """Start one parsed line's request; `behind` (this worker's previous run) settles meanwhile."""
    document, request, error = parsed
    if error is not None:
        if behind is not None:
            behind.result()  # its GC guard goes before the refusal's record takes one
        return Ticket.ready(session.refuse(error, engine))
    return session.submit(document, engine, behind=behind, slot=slot, request=request,
                          meanwhile=meanwhile)


def _in_order(session: Session, lines: list[bytes], engine: str | None) -> list[Ticket]:
    """One request at a time, each run's bookkeeping (and the next line's validation) done
    while the next run's command runs.

    The last run is settled by the session's close, on an interrupt too.
    """
    tickets: list[Ticket] = []
    ahead: list[tuple[int, tuple[Any, Request | None, RequiemError | None]]] = []
    for slot, line in enumerate(lines):
        parsed = ahead.pop()[1] if ahead and ahead[-1][0] == slot else _parse(line)
        ahead.clear()

        def parse_next(following: int = slot + 1) -> None:
            if following < len(lines):
                ahead.append((following, _parse(lines[following])))

        tickets.append(_submit_line(session, parsed, engine, tickets[-1] if tickets else None,
                                    slot, parse_next))
    return tickets


def _in_parallel(session: Session, lines: list[bytes], engine: str | None,
                 jobs: int) -> list[Ticket]:
    """`jobs` workers taking lines in turn, each pipelining its own runs as _in_order does."""
    import threading

    tickets: list[Ticket | None] = [None] * len(lines)
    order = iter(range(len(lines)))
    taking = threading.Lock()
    stop = threading.Event()
    failures: list[BaseException] = []

    def work() -> None:
        behind = None
        try:
            while not stop.is_set():
                with taking:
                    index = next(order, None)
                if index is None:
                    return
                behind = tickets[index] = _submit_line(session, _parse(lines[index]), engine,
                                                       behind, index)
        except BaseException as exc:
            failures.append(exc)
            stop.set()

    workers = [threading.Thread(target=work, name=f"requiem-batch-{n}") for n in range(jobs)]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join()
    finally:
        stop.set()  # an interrupt: workers finish the run in hand and take no more
        for worker in workers:
            worker.join()
    if failures:
        raise failures[0]
    return [ticket for ticket in tickets if ticket is not None]


def _wants_finisher(requests: int) -> bool:
    choice = os.environ.get("REQUIEM_BATCH_FINISHER", "auto")
    if choice in ("always", "never"):
        return choice == "always"
    return requests >= FINISHER_MIN_REQUESTS


def run_batch(home: Home, requests_path: str, out_path: str, jobs: int = 1,
              engine: str | None = None) -> dict[str, Any]:
    """Run every line of a JSONL file; write results in input order; summarise."""
    if not 1 <= jobs <= MAX_JOBS:
        raise RequiemError(INVALID_REQUEST, f"--jobs must be between 1 and {MAX_JOBS}")
    try:
        with open(requests_path, "rb") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise RequiemError(INVALID_REQUEST, f"cannot read {requests_path}: {exc.strerror}") from None
    work = [line for line in lines if line.strip()]
    finisher = None
    if _wants_finisher(len(work)):
        from requiem.finisher import Finisher

        finisher = Finisher(home)  # forked before this process starts any thread
    try:
        session = Session(home, group_commit=True, finisher=finisher)
        try:
            with _terminate_as_interrupt():
                tickets = (_in_order(session, work, engine) if jobs == 1
                           else _in_parallel(session, work, engine, jobs))
                results = [ticket.result() for ticket in tickets]
        finally:
            session.close()  # flushes the queued records, on an interrupt too
        if finisher is None:
            return write_results([result_line(r) for r in results],
                                 sum(1 for r in results if r.get("ok") is not True), out_path)
        for slot, result in enumerate(results):
            if result is not HANDED_OFF:
                finisher.hand_ready(slot, result)
        return finisher.finish(len(results), out_path)
    finally:
        if finisher is not None:
            finisher.abort()  # after an interrupt or failure: it records what it was handed


def write_results(lines: list[bytes], failed: int, out_path: str) -> dict[str, Any]:
    """The results file, one JSON line per request in input order (atomic); the summary."""
    temp = f"{out_path}.{os.getpid()}.part"
    try:
        with open(temp, "wb") as handle:
            handle.writelines(lines)
        os.replace(temp, out_path)
    except OSError as exc:
        raise RequiemError(QUOTA_EXCEEDED, f"cannot write {out_path}: {exc.strerror}") from None
    return {"ok": failed == 0, "requests": len(lines), "succeeded": len(lines) - failed,
            "failed": failed, "out": os.path.abspath(out_path)}
