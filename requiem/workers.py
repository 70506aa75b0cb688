"""`exec batch --jobs N`: N forked worker processes, each running requests one after another.

Threads would share one GIL, and a run's bookkeeping is Python: two threads ran a batch slower
than one. Worker processes each run a pipeline of their own (validate, spawn, collect, finish
the run behind) with their own group commit, on their own core. The batch process forks them
before it starts any thread, hands out line numbers through a pipe (4-byte records, so a read
takes exactly one and the workers balance themselves; a worker takes the next only once its
command has ended) and gathers each worker's results through its own pipe once their records
are durable. SIGINT or SIGTERM stops each worker as they stop a single-process batch: the
command in hand killed, the records of the runs that finished made durable; the batch process
takes back the line numbers not yet read and passes SIGTERM on to workers the signal missed.
A worker whose batch process dies finishes its run in hand and stops. A stop signal the
batch was started with ignored stays ignored, in the workers and their commands as with
--jobs 1.
"""

from __future__ import annotations

import os
import select
import signal
import struct

from requiem.cas_writer import write_all
from requiem.errors import ERROR_CODES, INVALID_REQUEST, RequiemError

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any, Iterator

    from requiem.group_commit import PackName
    from requiem.home import Home

_SLOT = struct.Struct("<I")
_RESULT = struct.Struct("<IIB")  # line length, slot, succeeded (255: a failure message)
_FAILURE = 255
_SLOTS_AT_ONCE = 1024  # 4 KiB of line numbers: one atomic pipe write
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_in_workers(home: Home, lines: list[bytes], engine: str | None,
                   jobs: int) -> list[tuple[bool, bytes]]:
    """Run every line in `jobs` worker processes; return (succeeded, result line) in order.

    KeyboardInterrupt is raised after SIGINT or SIGTERM, once the workers have stopped and
    recorded their runs in hand.
    """
    slots_read, slots_write = os.pipe()
    outputs: dict[int, int] = {}  # result pipe: worker pid
    batch_pid = os.getpid()
    # Held back from the first fork until each side has its own handlers: a signal landing in
    # a child before then would unwind it into the caller's stack.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        for _ in range(jobs):
            result_read, result_write = os.pipe()
            try:
                pid = os.fork()
            except OSError:
                os.close(result_read)
                os.close(result_write)
                if not outputs:
                    raise
                break  # fewer workers than asked: the ones started share the lines
            if pid == 0:  # a worker: it never returns into the caller's stack
                code = 1
                try:
                    os.close(slots_write)
                    os.close(result_read)
                    for other in outputs:
                        os.close(other)
                    code = _work(home, lines, engine, slots_read, result_write, batch_pid, mask)
                finally:
                    os._exit(code)
            os.close(result_write)
            outputs[result_read] = pid
        gathering = _Gathering(lines, slots_read, slots_write, outputs)
    except BaseException:
        _abandon(slots_read, slots_write, outputs)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    try:
        return gathering.run(mask)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # also when run() failed early


def _abandon(slots_read: int, slots_write: int, outputs: dict[int, int]) -> None:
    """Stop the workers already started (no line handed out yet) and reap them."""
    os.close(slots_write)  # they read end-of-file and stop
    os.close(slots_read)
    for fd, pid in outputs.items():
        os.close(fd)
        os.waitpid(pid, 0)


class _Gathering:
    """The batch process's side: line numbers out, results in, until every worker has ended."""

    def __init__(self, lines: list[bytes], slots_read: int, slots_write: int,
                 outputs: dict[int, int]) -> None:
        self.lines = lines
        self.results: list[tuple[bool, bytes] | None] = [None] * len(lines)
        self.failure: RequiemError | None = None
        self.interrupted = False
        self.handed = 0
        self.slots_read = slots_read
        self.slots_write: int | None = slots_write
        self.outputs = outputs
        self.buffers = {fd: bytearray() for fd in outputs}
        self.poller = select.poll()
        for fd in outputs:
            self.poller.register(fd, select.POLLIN)
        os.set_blocking(slots_write, False)
        self.poller.register(slots_write, select.POLLOUT)

    def run(self, mask: set[signal.Signals]) -> list[tuple[bool, bytes]]:
        """Gather until every worker has ended; `mask`: the signal mask to restore once this
        process's handlers are in place."""
        # A signal only sets a flag and wakes the poll: a KeyboardInterrupt raised between a
        # read and its parsing would drop a worker's bytes and misalign its frames.
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        os.set_blocking(wake_read, False)
        self.poller.register(wake_read, select.POLLIN)
        previous = {signum: signal.signal(signum, self._interrupt) for signum in _STOP_SIGNALS
                    if signal.getsignal(signum) is not signal.SIG_IGN}
        previous_wakeup = signal.set_wakeup_fd(wake_write)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        forwarded = False
        try:
            while self.buffers:
                for fd, _event in self.poller.poll():
                    if fd == wake_read:
                        _drain(wake_read)
                    elif fd == self.slots_write:
                        self._hand_out()
                    elif fd in self.buffers:  # not one closed by an earlier event of this poll
                        self._take(fd)
                if self.interrupted and not forwarded:
                    forwarded = True
                    self._stop_handing_out()
                    self._forward_stop()
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(wake_read)
            os.close(wake_write)
            self._stop_handing_out()
            os.close(self.slots_read)
            for fd in self.buffers:
                os.close(fd)
            crashed = [pid for pid in self.outputs.values() if os.waitpid(pid, 0)[1] != 0]
        if self.interrupted:
            raise KeyboardInterrupt
        if self.failure is not None:
            raise self.failure
        if crashed or any(result is None for result in self.results):
            raise RequiemError(INVALID_REQUEST, f"{len(crashed)} batch worker process(es) ended "
                               "without finishing their runs")
        return self.results  # type: ignore[return-value]

    def _interrupt(self, signum: int, frame: Any) -> None:
        self.interrupted = True

    def _forward_stop(self) -> None:
        """SIGTERM to the workers: a SIGTERM sent to this process alone missed them."""
        for fd, pid in self.outputs.items():
            if fd in self.buffers:  # still running
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def _hand_out(self) -> None:
        assert self.slots_write is not None
        upto = min(self.handed + _SLOTS_AT_ONCE, len(self.lines))
        try:
            written = os.write(self.slots_write, b"".join(
                _SLOT.pack(slot) for slot in range(self.handed, upto)))
        except BlockingIOError:
            return
        self.handed += written // _SLOT.size  # whole records: writes up to 4 KiB are atomic
        if self.handed == len(self.lines):
            self._close_slots()

    def _close_slots(self) -> None:
        if self.slots_write is not None:
            self.poller.unregister(self.slots_write)
            os.close(self.slots_write)
            self.slots_write = None

    def _stop_handing_out(self) -> None:
        """Take back the line numbers not yet read: each worker ends after its run in hand."""
        self._close_slots()
        os.set_blocking(self.slots_read, False)
        _drain(self.slots_read)

    def _take(self, fd: int) -> None:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            self.poller.unregister(fd)
            del self.buffers[fd]
            os.close(fd)
            return
        buffer = self.buffers[fd]
        buffer += chunk
        while len(buffer) >= _RESULT.size:
            size, slot, succeeded = _RESULT.unpack_from(buffer)
            if len(buffer) < _RESULT.size + size:
                break
            body = bytes(buffer[_RESULT.size:_RESULT.size + size])
            del buffer[:_RESULT.size + size]
            if succeeded == _FAILURE:
                self.failure = self.failure or _failure_of(body)
                self._stop_handing_out()
            else:
                self.results[slot] = bool(succeeded), body


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 1 << 16):
            pass
    except BlockingIOError:
        pass


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


def _stop(signum: int, frame: Any) -> None:
    """SIGINT or SIGTERM in a worker: a KeyboardInterrupt, as in a single-process batch, once
    (the batch process passes SIGTERM on, so a Ctrl-C may bring both: the second must not
    interrupt the flush of the records). A handler, not SIG_IGN, until then: an ignored signal
    would stay ignored in every command the worker runs."""
    for stop_signal in _STOP_SIGNALS:
        signal.signal(stop_signal, signal.SIG_IGN)
    raise KeyboardInterrupt


def _work(home: Home, lines: list[bytes], engine: str | None, slots_read: int,
          result_write: int, batch_pid: int, mask: set[signal.Signals]) -> int:
    """A worker: run the lines handed out; report the results once their records are durable."""
    from requiem.batch import in_order
    from requiem.cas_format import space_error
    from requiem.engines import Session
    from requiem.result_pack import named_in_line

    for signum in _STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _stop)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    # Sent when the records are durable, in one go: no wakeup per run.
    reported: list[tuple[int, bool, bytes, str | None, PackName | None]] = []

    def report(slot: int, succeeded: bool, line: bytes, document: str | None,
               pack: PackName | None) -> None:
        reported.append((slot, succeeded, line, document, pack))

    try:
        session = Session(home, group_commit=True)
        try:
            # No look-ahead: a line taken early would wait behind this run's command.
            in_order(session, lines, engine, _slots(slots_read, batch_pid), report,
                     look_ahead=False)
        finally:
            session.close()  # the last run settled, every record durable
        frames = []
        reported.reverse()
        while reported:  # each line dropped as its frame is made: one copy of them at a time
            slot, succeeded, line, document, pack = reported.pop()
            if pack is not None:
                line = named_in_line(line, document, pack.digest)
            frames.append(_RESULT.pack(len(line), slot, succeeded) + line)
        write_all(result_write, b"".join(frames))
    except KeyboardInterrupt:
        return 130  # the records of the runs that finished are durable; no results are wanted
    except BrokenPipeError:
        return 1  # the batch process is gone: nobody to report to
    except RequiemError as exc:
        return _report_failure(result_write, exc.code, exc.message)
    except OSError as exc:
        failure = space_error(exc, "running a batch worker")
        return _report_failure(result_write, failure.code, failure.message)
    except Exception as exc:
        return _report_failure(result_write, INVALID_REQUEST, f"batch worker: {exc!r}")
    return 0


def _report_failure(result_write: int, code: str, message: str) -> int:
    body = f"{code}\n{message}".encode()
    try:
        write_all(result_write, _RESULT.pack(len(body), 0, _FAILURE) + body)
    except OSError:
        pass
    return 0  # reported: the batch process raises it
