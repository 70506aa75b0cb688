"""A batch's results file: one JSON line per request, in input order, written as runs settle."""

from __future__ import annotations

import _signal  # signal's C half: the signal module builds enums, ~2.7 ms of a batch's start
import errno
import os
import stat

from requiem.cas_writer import write_all
from requiem.errors import QUOTA_EXCEEDED, RequiemError
from requiem.result_pack import named_in_line

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every start
if TYPE_CHECKING:
    from typing import Any

    from requiem.group_commit import PackName

# Settled lines are written in chunks about this size: one write every hundred runs or so.
_CHUNK_BYTES = 256 << 10


class ResultsFile:
    """Result lines written to a temp file in `out_path`'s directory as they settle, put in
    place by finish() (so a batch's results appear whole or not at all) or dropped by discard().

    In a --jobs 1 batch a line waits only until the group commit has named the pack holding its
    result document, so the batch holds a few groups' lines, not every line of its run (~2.6 KB
    each); a --jobs N batch hands its workers' lines over at the end.
    """

    def __init__(self, out_path: str) -> None:
        self.out_path = out_path
        self._name = os.path.basename(out_path)  # "" for a path ending in "/": a directory
        self._temp_name: str | None = None  # while the file is unnamed
        self._fd: int | None = None
        self._dir: int | None = None
        # Opened before any request runs: a batch with nowhere to put its results runs nothing.
        try:
            self._dir = os.open(os.path.dirname(out_path) or ".",
                                os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                if not self._name or stat.S_ISDIR(os.stat(self._name, dir_fd=self._dir).st_mode):
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
            except FileNotFoundError:
                pass
            self._fd = self._unnamed_file()
            if self._fd is None:
                self._temp_name, self._fd = self._named_file()
        except BaseException as exc:
            self.discard()
            if isinstance(exc, OSError):
                raise self._error(exc) from None
            raise
        self._waiting: list[tuple[bool, bytes, str | None, PackName | None]] = []
        self._chunk: list[bytes] = []
        self._chunk_bytes = 0
        self.requests = 0
        self.failed = 0

    def _unnamed_file(self) -> int | None:
        """An unnamed file in the directory (O_TMPFILE: a batch killed outright leaves none
        behind), or None where the filesystem or a missing /proc cannot give one a name later."""
        try:
            fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666, dir_fd=self._dir)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                return None
            raise
        if not os.path.exists(f"/proc/self/fd/{fd}"):  # finish() names it through /proc
            os.close(fd)
            return None
        return fd

    def _named_file(self) -> tuple[str, int]:
        """A new temp file beside the results file, under a name no other batch holds."""
        while True:
            name = f"{self._name}.{os.urandom(6).hex()}.part"
            try:
                return name, os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                     0o666, dir_fd=self._dir)
            except FileExistsError:
                continue

    @property
    def waiting(self) -> int:
        """How many queued lines are not written yet."""
        return len(self._waiting)

    def add(self, succeeded: bool, line: bytes, document: str | None = None,
            pack: PackName | None = None) -> None:
        """Queue one request's result line. `pack`: where a group commit that packs its result
        document (`document`, by digest) names the pack; the line waits for it, then names it
        too."""
        self._waiting.append((succeeded, line, document, pack))

    def write_settled(self) -> None:
        """Write the queued lines up to the first whose pack is not named yet."""
        settled = 0
        for succeeded, line, document, pack in self._waiting:
            if pack is not None:
                if pack.digest is None:  # the flusher thread has not stored it yet
                    break
                line = named_in_line(line, document, pack.digest)
            self._chunk.append(line)
            self._chunk_bytes += len(line)
            self.requests += 1
            self.failed += not succeeded
            settled += 1
        del self._waiting[:settled]
        if self._chunk_bytes >= _CHUNK_BYTES:
            self._write_chunk()

    def finish(self) -> dict[str, Any]:
        """Write what is left, put the file in place and return the batch's summary."""
        assert self._fd is not None and self._dir is not None, "finish() after discard()"
        if self._waiting:
            raise RuntimeError(f"{len(self._waiting)} results were never settled")
        self._write_chunk()
        # Stop signals held back while the file gets its names, so that it is never left under
        # a temp name; one that came meanwhile is raised once it is in place (the batch is
        # then reported interrupted, its results file complete).
        mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, ())  # as it is, to put back
        try:
            _signal.pthread_sigmask(_signal.SIG_BLOCK, (_signal.SIGINT, _signal.SIGTERM))
            if self._temp_name is None:  # a name first: linkat cannot replace a file there
                self._temp_name = self._link_temp_name()
            os.replace(self._temp_name, self._name, src_dir_fd=self._dir, dst_dir_fd=self._dir)
            self._temp_name = None
        except OSError as exc:
            self.discard()
            raise self._error(exc) from None
        finally:
            try:
                _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
            finally:
                self._close()
        return {"ok": self.failed == 0, "requests": self.requests,
                "succeeded": self.requests - self.failed, "failed": self.failed,
                "out": os.path.abspath(self.out_path)}

    def _link_temp_name(self) -> str:
        while True:
            name = f"{self._name}.{os.urandom(6).hex()}.part"
            try:
                # With a directory descriptor, os.link is linkat(..., AT_SYMLINK_FOLLOW).
                os.link(f"/proc/self/fd/{self._fd}", name, dst_dir_fd=self._dir)
                return name
            except FileExistsError:
                continue

    def discard(self) -> None:
        """Drop the temp file (a batch that failed or was interrupted hands out no results)."""
        try:
            if self._temp_name is not None and self._dir is not None:
                os.unlink(self._temp_name, dir_fd=self._dir)
        except OSError:
            pass  # a temp file left behind is no reason to hide why the batch stopped
        finally:
            self._temp_name = None
            self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        directory, self._dir = self._dir, None
        try:
            if fd is not None:
                os.close(fd)
        finally:
            if directory is not None:
                os.close(directory)

    def _write_chunk(self) -> None:
        if not self._chunk:
            return
        assert self._fd is not None
        try:
            write_all(self._fd, b"".join(self._chunk))
        except OSError as exc:
            raise self._error(exc) from None
        self._chunk.clear()
        self._chunk_bytes = 0

    def _error(self, exc: OSError) -> RequiemError:
        return RequiemError(QUOTA_EXCEEDED, f"cannot write {self.out_path}: {exc.strerror}")
