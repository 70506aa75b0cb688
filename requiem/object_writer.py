"""A helper process that writes a group commit's small CAS objects, away from the runs' GIL.

Storing a small object costs a file creation (100-600 us of kernel time on this project's ext4
after a burst of deletions, ~20 us on a quiet one), a write, a rename and often a new fan-out
directory. A thread doing that takes the GIL back from the runs at every one of those calls;
measured, a batch's runs took 15-20 % longer beside such a thread than beside a process
doing the same writes. So a batch forks this helper while it has no other thread: it is sent
(final path, stored bytes) jobs in one pipe write per group, writes and publishes each, and
answers once per group. It ignores SIGINT and SIGTERM (the batch stops itself and flushes what
it finished) and ends when its pipe closes, which also happens when the batch dies.
"""

from __future__ import annotations

import _signal  # signal's C half: the signal module builds enums, ~2.7 ms of a batch's start
import errno
import fcntl
import os
import struct

from requiem.cas_writer import publish, temp_path, write_all
from requiem.sandbox import proc

# One job: the final path's length and the stored bytes' length; (0, 0) asks for the answer.
_JOB = struct.Struct("<II")
_STOP_SIGNALS = (_signal.SIGINT, _signal.SIGTERM)
_READY = b"R"
# Its work can wait for the flush, the batch's own thread cannot. The commands run in sessions
# of their own, which the scheduler's autogroups weigh apart, so this orders the helper against
# the batch process (and anything else in its session) only. With file creations slow (see
# benchmarks/RESULTS.md) a batch measured 1.26-1.29x at 19 against 1.43x at 0 and 1.69x at 10,
# A/B. The price: on a core saturated from the batch's own session, a flush waits longer.
_NICENESS = 19
# Room for a few groups' objects in flight without the batch waiting on the pipe.
_PIPE_BYTES = 1 << 20


class HelperUnavailable(OSError):
    """The helper ended before it was set up: nothing was given to it, its caller writes."""


class ObjectWriter:
    """The batch's side of the helper: write(objects) returns once all are published."""

    def __init__(self, pid: int, jobs: int, answers: int) -> None:
        self.pid = pid
        self._jobs = jobs
        self._answers = answers
        self._ready = False  # its first answer, once set up, not read yet

    @classmethod
    def start(cls, tmp_dir: str, fsync_each: bool) -> ObjectWriter | None:
        """Fork the helper; None where a fork is unsafe (another thread could hold a lock the
        child would inherit held) or refused."""
        if not proc.single_threaded():
            return None
        # Above 0-2, which the helper points at /dev/null: a batch started with stdin or stdout
        # closed would get a pipe there.
        made: list[int] = []
        try:
            made += os.pipe2(os.O_CLOEXEC)
            made += os.pipe2(os.O_CLOEXEC)
            for n, fd in enumerate(made):
                made[n] = proc.above_stdio(fd)
        except OSError:  # out of descriptors: the flusher thread writes instead
            for fd in made:
                os.close(fd)
            return None
        jobs_read, jobs_write, answers_read, answers_write = made
        # Held back until the child ignores them: one landing in between would unwind it into
        # the caller's stack.
        mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
        except OSError:
            pid = -1
        if pid == 0:
            code = 1
            try:
                for signum in _STOP_SIGNALS:
                    _signal.signal(signum, _signal.SIG_IGN)
                _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
                _keep_only(jobs_read, answers_write)
                try:
                    os.nice(_NICENESS)
                except OSError:
                    pass  # a helper at the batch's own priority is still a helper
                write_all(answers_write, _READY)
                _serve(jobs_read, answers_write, tmp_dir, fsync_each)
                code = 0
            finally:
                os._exit(code)
        os.close(jobs_read)
        os.close(answers_write)
        if pid > 0:
            proc.keep_apart(pid)  # a helper, not an orphan a run's kill_tree would take
        try:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)  # a stop signal held back lands here
            if pid < 0:
                raise OSError(errno.EAGAIN, "fork refused")
            try:
                fcntl.fcntl(jobs_write, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
            except OSError:
                pass  # the default 64 KiB: the batch waits on the pipe a little more often
            return cls(pid, jobs_write, answers_read)
        except BaseException as exc:
            os.close(jobs_write)  # the helper reads end-of-file and ends
            os.close(answers_read)
            if pid > 0:
                os.waitpid(pid, 0)
                proc.keep_apart(pid, kept=False)
            if isinstance(exc, OSError):
                return None  # no helper: the flusher thread writes
            raise

    def write(self, objects: list[tuple[bytes, str]]) -> None:
        """Write and publish each (stored bytes, final path); raise the first OSError
        (HelperUnavailable, writing nothing, if the helper never set itself up)."""
        if not self._ready:
            # Its answer was not waited for at the start (~2 ms of a batch's): it came long ago.
            try:
                self._ready = os.read(self._answers, len(_READY)) == _READY
            except OSError:
                pass
            if not self._ready:
                raise HelperUnavailable(5, "the CAS object writer process did not start")  # EIO
        parts = []
        for stored, final in objects:
            path = os.fsencode(final)
            parts += [_JOB.pack(len(path), len(stored)), path, stored]
        parts.append(_JOB.pack(0, 0))
        try:
            write_all(self._jobs, b"".join(parts))
            answer = os.read(self._answers, 4096)
        except BrokenPipeError:
            answer = b""
        if answer == b"ok":
            return
        if not answer:
            raise OSError(5, "the CAS object writer process ended")  # EIO
        code, _, path = answer.partition(b" ")
        raise OSError(int(code), os.strerror(int(code)), os.fsdecode(path))

    def close(self) -> None:
        """End the helper (its pipe closes) and reap it."""
        os.close(self._jobs)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        finally:
            os.close(self._answers)
            proc.keep_apart(self.pid, kept=False)


def _keep_only(*keep: int) -> None:
    """In the helper: every inherited descriptor closed but its pipes (and stderr, for a crash
    report); stdin and stdout on /dev/null, so a caller reading the batch's stdout to its end
    never waits for the helper."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the directory listing's own descriptor, closed already


def _serve(jobs: int, answers: int, tmp_dir: str, fsync_each: bool) -> None:
    stream = open(jobs, "rb", buffering=_PIPE_BYTES)
    failure: OSError | None = None
    made_tmp = False
    while True:
        header = stream.read(_JOB.size)
        if len(header) < _JOB.size:
            return  # the batch closed its end, or died
        path_size, stored_size = _JOB.unpack(header)
        if path_size == 0:
            if failure is None:
                answer = b"ok"
            else:
                answer = b"%d %s" % (failure.errno or 5, os.fsencode(failure.filename or ""))
            write_all(answers, answer)
            failure = None
            continue
        path = stream.read(path_size)
        stored = stream.read(stored_size)
        if len(path) < path_size or len(stored) < stored_size:
            return  # the batch died mid-job: a cut-off object must not be published
        final = os.fsdecode(path)
        try:
            if not made_tmp:
                os.makedirs(tmp_dir, exist_ok=True)
                made_tmp = True
            _write_object(stored, final, tmp_dir, fsync_each)
        except OSError as exc:
            failure = failure or exc


def _write_object(stored: bytes, final: str, tmp_dir: str, fsync_each: bool) -> None:
    temp = temp_path(tmp_dir)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        try:
            write_all(fd, stored)
            publish(temp, final)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
        if fsync_each:
            os.fsync(fd)  # after the rename, as the store's own deferred fsyncs are
    finally:
        os.close(fd)
