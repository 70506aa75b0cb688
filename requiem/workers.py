"""`exec batch --jobs N`: N forked worker processes, each running requests one after another.

Threads would share one GIL, and a run's bookkeeping is Python: two threads ran a batch slower
than one. Worker processes each run a pipeline of their own (validate, spawn, collect, finish
the run behind) with their own group commit, on their own core. The batch process forks them
before it starts any thread, hands out line numbers through a pipe (4-byte records, so a read
takes exactly one and the workers balance themselves), and gathers each worker's results
through its own pipe when their records are durable. Workers ignore SIGINT and SIGTERM: on an interrupt the batch process
takes back the line numbers not yet handed out, each worker finishes and records its run in
hand, and the batch ends as a single-process one does.
"""

from __future__ import annotations

import os
import select
import signal
import struct

from requiem.errors import ERROR_CODES, INVALID_REQUEST, RequiemError

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Iterator

    from requiem.home import Home

_SLOT = struct.Struct("<I")
_RESULT = struct.Struct("<IIB")  # line length, slot, succeeded (255: a failure message)
_FAILURE = 255
_SLOTS_AT_ONCE = 1024  # 4 KiB of line numbers: one atomic pipe write


def run_in_workers(home: Home, lines: list[bytes], engine: str | None,
                   jobs: int) -> list[tuple[bool, bytes]]:
    """Run every line in `jobs` worker processes; return (succeeded, result line) in order.

    KeyboardInterrupt (SIGINT, or SIGTERM as the batch maps it) is raised once the workers
    have stopped and recorded their runs in hand.
    """
    slots_read, slots_write = os.pipe()
    outputs: dict[int, int] = {}  # result pipe: worker pid
    batch_pid = os.getpid()
    for _ in range(jobs):
        result_read, result_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # a worker: it never returns into the caller's stack
            code = 1
            try:
                os.close(slots_write)
                os.close(result_read)
                for other in outputs:
                    os.close(other)
                code = _work(home, lines, engine, slots_read, result_write, batch_pid)
            finally:
                os._exit(code)
        os.close(result_write)
        outputs[result_read] = pid
    return _gather(lines, slots_read, slots_write, outputs)


def _gather(lines: list[bytes], slots_read: int, slots_write: int,
            outputs: dict[int, int]) -> list[tuple[bool, bytes]]:
    """Hand out line numbers and gather results until every worker has ended."""
    results: list[tuple[bool, bytes] | None] = [None] * len(lines)
    failure: RequiemError | None = None
    interrupted = False
    handed = 0
    buffers = {fd: bytearray() for fd in outputs}
    poller = select.poll()
    for fd in outputs:
        poller.register(fd, select.POLLIN)
    os.set_blocking(slots_write, False)
    poller.register(slots_write, select.POLLOUT)
    writing = True

    def stop_handing_out() -> None:
        nonlocal writing
        if writing:
            poller.unregister(slots_write)
            os.close(slots_write)
            writing = False
        # Take back what the workers have not read yet: each ends after its run in hand.
        os.set_blocking(slots_read, False)
        try:
            while os.read(slots_read, 1 << 16):
                pass
        except BlockingIOError:
            pass

    def step() -> None:
        nonlocal handed, writing, failure
        for fd, _event in poller.poll():
            if fd == slots_write:
                upto = min(handed + _SLOTS_AT_ONCE, len(lines))
                try:
                    written = os.write(slots_write, b"".join(
                        _SLOT.pack(slot) for slot in range(handed, upto)))
                except BlockingIOError:
                    continue
                handed += written // _SLOT.size
                if handed == len(lines):
                    poller.unregister(slots_write)
                    os.close(slots_write)
                    writing = False
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                poller.unregister(fd)
                del buffers[fd]
                continue
            buffer = buffers[fd]
            buffer += chunk
            while len(buffer) >= _RESULT.size:
                size, slot, succeeded = _RESULT.unpack_from(buffer)
                if len(buffer) < _RESULT.size + size:
                    break
                body = bytes(buffer[_RESULT.size:_RESULT.size + size])
                del buffer[:_RESULT.size + size]
                if succeeded == _FAILURE:
                    failure = failure or _failure_of(body)
                    stop_handing_out()
                else:
                    results[slot] = bool(succeeded), body

    try:
        while buffers:
            try:
                step()
            except KeyboardInterrupt:
                interrupted = True
                stop_handing_out()
    finally:
        if writing:
            os.close(slots_write)
        os.close(slots_read)
        for fd in buffers:
            os.close(fd)
        crashed = [pid for pid in outputs.values() if os.waitpid(pid, 0)[1] != 0]
    if interrupted:
        raise KeyboardInterrupt
    if failure is not None:
        raise failure
    if crashed or any(result is None for result in results):
        raise RequiemError(INVALID_REQUEST, f"{len(crashed)} batch worker process(es) ended "
                           "without finishing their runs")
    return results  # type: ignore[return-value]


def _failure_of(body: bytes) -> RequiemError:
    code, _, message = body.decode("utf-8", "replace").partition("\n")
    return RequiemError(code if code in ERROR_CODES else INVALID_REQUEST, message)


def _slots(slots_read: int, batch_pid: int) -> Iterator[int]:
    """Line numbers as the batch process hands them out, until it stops or dies (the numbers
    already in the pipe are then left alone)."""
    while os.getppid() == batch_pid:
        try:
            record = os.read(slots_read, _SLOT.size)
        except InterruptedError:
            continue
        if len(record) < _SLOT.size:
            return
        yield _SLOT.unpack(record)[0]


def _work(home: Home, lines: list[bytes], engine: str | None, slots_read: int,
          result_write: int, batch_pid: int) -> int:
    """A worker: run the lines handed out; report the results once their records are durable."""
    from requiem.batch import in_order
    from requiem.engines import Session

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the batch process decides when we stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    frames: list[bytes] = []  # sent when the records are durable, in one go: no wakeup per run

    def report(slot: int, succeeded: bool, line: bytes) -> None:
        frames.append(_RESULT.pack(len(line), slot, succeeded) + line)

    try:
        session = Session(home, group_commit=True)
        try:
            in_order(session, lines, engine, _slots(slots_read, batch_pid), report)
        finally:
            session.close()  # the last run settled, every record durable
        _write_all(result_write, b"".join(frames))
    except BrokenPipeError:
        return 1  # the batch process is gone: nobody to report to
    except RequiemError as exc:
        return _report_failure(result_write, exc.code, exc.message)
    except Exception as exc:
        return _report_failure(result_write, INVALID_REQUEST, f"batch worker: {exc!r}")
    return 0


def _report_failure(result_write: int, code: str, message: str) -> int:
    body = f"{code}\n{message}".encode()
    try:
        _write_all(result_write, _RESULT.pack(len(body), 0, _FAILURE) + body)
    except OSError:
        pass
    return 0  # reported: the batch process raises it


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]

