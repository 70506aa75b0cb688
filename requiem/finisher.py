"""A batch's finishing process: a second core stores each run's objects and records it.

One Python thread cannot both run commands and finish them at the pace a bare spawn loop
sets: the GIL holds every run's bookkeeping in line with the next spawn. So a large batch
forks this process first. The batch process validates, spawns, collects, stores the captured
streams and builds the result (while the next command runs); it hands each run's request and
result objects and its history record here, with its hold on the GC guard (the descriptor
itself, so no collector can come between the two processes). This process stores the two
objects, queues the record in its group commit (fsyncs waited for here, not there) and, after
the last flush, writes the results file in input order. It ignores SIGINT and SIGTERM: it ends
when the batch process hangs up, after making durable the records of every run it was handed,
so a batch killed outright loses no handed run's record.
"""

from __future__ import annotations

import marshal
import os
import signal
import socket
import struct
import sys
import threading

from requiem.errors import ERROR_CODES, INVALID_REQUEST, RequiemError

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any

    from requiem.engines import Finished
    from requiem.home import Home

_FRAME = struct.Struct("<IB")  # payload length, descriptors carried
_RUN, _READY, _END = "run", "ready", "end"
# Below malloc's mmap threshold: a larger read buffer costs an mmap and munmap every read.
_READ_SIZE = 64 << 10


class FinisherGone(RequiemError):
    """The finishing process ended before the batch did."""


class Finisher:
    """The batch side of a finishing process: hands runs over, then asks for the summary."""

    def __init__(self, home: Home) -> None:
        from requiem.sandbox import proc

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # the finishing process: it never returns into the caller's stack
            code = 1
            try:
                ours.close()
                code = _serve(theirs, home)
            finally:
                os._exit(code)
        theirs.close()
        # Room for bursts: the finisher stalls while its flusher holds the GIL, and a full
        # socket would stall the batch with it (the kernel caps this at net.core.wmem_max).
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.pid = pid
        proc.helper(pid)
        self._socket = ours
        self._sending = threading.Lock()
        self._ended = False

    def hand_run(self, slot: int, finished: Finished, guard: int) -> None:
        """Hand over a finished run's objects and record, and a copy of its GC-guard descriptor."""
        self._send((_RUN, slot, finished), [guard])

    def hand_ready(self, slot: int, result: dict[str, Any]) -> None:
        """Hand over a result finished here (a refusal, a dual or legacy run)."""
        self._send((_READY, slot, result), [])

    def finish(self, count: int, out_path: str) -> dict[str, Any]:
        """Have the results file written; return the finishing process's summary."""
        self._send((_END, count, out_path), [])
        reply = self._close()
        if reply is None:
            raise FinisherGone(INVALID_REQUEST, "the batch's finishing process ended unexpectedly")
        return reply

    def abort(self) -> None:
        """Hang up (no results file); the runs handed over are still recorded."""
        if not self._ended:
            self._close()

    def _send(self, message: tuple[Any, ...], fds: list[int]) -> None:
        data = marshal.dumps(message)
        frame = _FRAME.pack(len(data), len(fds)) + data
        try:
            with self._sending:
                if fds:
                    sent = socket.send_fds(self._socket, [frame], fds)
                    if sent < len(frame):
                        self._socket.sendall(frame[sent:])
                else:
                    self._socket.sendall(frame)
        except OSError:
            reply = self._close()  # a finisher that failed says why before it hangs up
            raise FinisherGone(INVALID_REQUEST, "the batch's finishing process ended "
                               "unexpectedly") if reply is None else _failure(reply) from None

    def _close(self) -> dict[str, Any] | None:
        """Stop sending, read the reply, reap the process."""
        from requiem.sandbox import proc

        self._ended = True
        reply = None
        try:
            self._socket.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := self._socket.recv(1 << 16):
                chunks.append(chunk)
            if chunks:
                reply = marshal.loads(b"".join(chunks))
        except (OSError, EOFError, ValueError, TypeError):
            reply = None
        finally:
            self._socket.close()
            os.waitpid(self.pid, 0)
            proc.unhelper(self.pid)
        if reply is not None and "error_code" in reply:
            raise _failure(reply)
        return reply


def _failure(reply: dict[str, Any]) -> RequiemError:
    code = reply.get("error_code")
    return FinisherGone(code if code in ERROR_CODES else INVALID_REQUEST,
                        str(reply.get("message", "the batch's finishing process failed")))


class _Frames:
    """Frames read off the socket, each with the descriptors sent beside it."""

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock
        self._buffer = bytearray()
        self._fds: list[int] = []

    def __iter__(self) -> Any:
        while True:
            while len(self._buffer) >= _FRAME.size:
                size, count = _FRAME.unpack_from(self._buffer)
                if len(self._buffer) < _FRAME.size + size:
                    break
                # A descriptor arrives with the first byte of the send it rode on: its frame's.
                fds, self._fds = self._fds[:count], self._fds[count:]
                data = bytes(self._buffer[_FRAME.size:_FRAME.size + size])
                del self._buffer[:_FRAME.size + size]
                yield marshal.loads(data), fds
            data, fds, _flags, _address = socket.recv_fds(self._socket, _READ_SIZE, 64)
            self._fds += fds
            if not data:
                self.discard()
                return
            self._buffer += data

    def discard(self) -> None:
        """Refuse what is still to come and drop it: a socket closed unread would make the
        batch process's read of our reply fail (ECONNRESET)."""
        try:
            self._socket.shutdown(socket.SHUT_RD)  # the batch process's next send fails
            while True:
                data, fds, _flags, _address = socket.recv_fds(self._socket, _READ_SIZE, 64)
                self._fds += fds
                if not data:
                    break
        except OSError:
            pass
        for fd in self._fds:
            os.close(fd)  # unrecorded runs' guards: their objects are unnamed, a GC may go
        self._fds = []


def _serve(sock: socket.socket, home: Home) -> int:
    """The finishing process: finish each handed run; after the last flush, the results file."""
    from requiem.engines import Session, result_line

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the batch process decides when we stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    results: dict[int, tuple[bool, bytes]] = {}  # slot: (succeeded, results-file line)
    end: tuple[int, str] | None = None
    reply: dict[str, Any] | None = None
    # The group commit's flusher thread waits on fsyncs; between them it needs the GIL back
    # from this busy thread at once, not after the default 5 ms.
    sys.setswitchinterval(0.0002)
    frames = _Frames(sock)
    try:
        session = Session(home, group_commit=True)
        try:
            for (kind, slot, payload), fds in frames:
                try:
                    if kind == _RUN:
                        results[slot] = session.record_finished(payload)
                    elif kind == _READY:
                        results[slot] = payload.get("ok") is True, result_line(payload)
                    elif kind == _END:
                        end = slot, payload
                        break
                finally:
                    for fd in fds:
                        os.close(fd)  # the record is queued: the group commit holds the guard
        finally:
            session.close()  # every record handed over becomes durable, on a failure too
        if end is not None:
            from requiem.batch import write_results

            count, out_path = end
            ordered = [results[slot] for slot in range(count)]
            reply = write_results([line for _, line in ordered],
                                  sum(1 for ok, _ in ordered if not ok), out_path)
    except RequiemError as exc:
        reply = {"error_code": exc.code, "message": exc.message}
    except Exception as exc:  # said to the batch process, which raises it there
        reply = {"error_code": INVALID_REQUEST, "message": f"finishing process: {exc!r}"}
    if reply is not None:
        try:
            sock.sendall(marshal.dumps(reply))
        except OSError:
            pass
    if end is None:
        frames.discard()  # failed midway: the batch process may still be sending
    sock.close()
    return 0
