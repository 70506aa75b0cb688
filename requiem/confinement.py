"""Workspace confinement: host paths resolved through symlinks and `..` must stay inside."""

from __future__ import annotations

import os

from requiem.errors import INVALID_REQUEST, PATH_ESCAPE, RequiemError


def workspace_root(path: str, base: str | None = None) -> str:
    """The real, absolute workspace directory; invalid_request if it is not a directory."""
    joined = path if os.path.isabs(path) else os.path.join(base or os.getcwd(), path)
    real = _kernel_realpath(joined)
    if real is None:
        real = os.path.realpath(joined)
        if not os.path.isdir(real):
            raise RequiemError(INVALID_REQUEST, f"/workspace_root: not a directory: {path}",
                               pointer="/workspace_root")
    return real


def _kernel_realpath(directory: str) -> str | None:
    """The directory's real path as the kernel resolved it opening it (three syscalls where it
    was named by it, five otherwise; realpath walks every component); None when it is no
    directory or /proc cannot say."""
    try:
        fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
        if real == directory:
            # Named as opened: the name reached it from this process's root, and it is no
            # longer than the name the kernel gives it now (a removed one reads back longer).
            return real
        opened = os.fstat(fd)
        # The name must lead back to the directory opened: one removed meanwhile reads back
        # with " (deleted)", one outside this process's root (a chroot) by a name inside it.
        found = os.stat(real) if real.startswith("/") else None
    except OSError:
        return None
    finally:
        os.close(fd)
    if found is None or (found.st_dev, found.st_ino) != (opened.st_dev, opened.st_ino):
        return None
    return real


def inside(root: str, path: str, pointer: str) -> str:
    """Resolve `path` (relative to root, or absolute) and return it if it stays inside root.

    The check is on the fully resolved path with a separator after the root, so `/ws_evil`
    is not inside `/ws`, and a symlink or `..` that leads out is a path_escape.
    """
    joined = path if os.path.isabs(path) else os.path.join(root, path)
    real = os.path.realpath(joined)
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        raise RequiemError(PATH_ESCAPE, f"{pointer}: {path!r} resolves outside the workspace",
                           pointer=pointer)
    return real
