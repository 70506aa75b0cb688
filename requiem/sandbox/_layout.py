"""The filesystem a sandboxed command sees, as mount operations both backends apply in order; stdlib only."""

from __future__ import annotations

import functools
import os

# Only these system trees are shown: binding `/` whole would expose every pathname unix socket on the host
# (docker.sock, dbus, ...) to a network-isolated command, and /root and /home besides.
SYSTEM_DIRS = ("/usr", "/etc")
ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SCRATCH_DIRS = ("/tmp", "/run")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


@functools.lru_cache(maxsize=1)
def _base() -> tuple[tuple[str, ...], ...]:
    ops = [["ro", d, d] for d in SYSTEM_DIRS if os.path.isdir(d)]
    for link in ROOT_LINKS:
        if os.path.islink(link):
            ops.append(["symlink", os.readlink(link), link])
        elif os.path.isdir(link):
            ops.append(["ro", link, link])
    ops += [["proc", "/proc"], ["dev", "/dev"]] + [["tmpfs", d] for d in SCRATCH_DIRS]
    return tuple(tuple(op) for op in ops)


def base_layout() -> list[list[str]]:
    """The part every run shares: ro system dirs, root symlinks as on the host, fresh proc and dev, scratch."""
    return [list(op) for op in _base()]  # the host's / does not change under us: look once


def run_layout(workspace: str, readonly_paths: tuple[str, ...] = (),
               masked_paths: tuple[str, ...] = ()) -> list[list[str]]:
    """The part one run adds: its read-only extras, its writable workspace, masks inside it."""
    # Real paths: a source is later opened below another root, where absolute symlinks would mislead.
    ops = [["ro", real, real] for real in map(os.path.realpath, readonly_paths)]
    real_ws = os.path.realpath(workspace)
    return ops + [["rw", real_ws, real_ws]] + [["tmpfs", m] for m in map(os.path.realpath, masked_paths)]


def layout(workspace: str, readonly_paths: tuple[str, ...] = (),
           masked_paths: tuple[str, ...] = ()) -> list[list[str]]:
    """Every mount operation of a run, in order."""
    return base_layout() + run_layout(workspace, readonly_paths, masked_paths)


def covers_system(workspace: str) -> bool:
    """Whether a writable bind of this workspace would lay over the system or scratch dirs."""
    real = os.path.realpath(workspace).rstrip("/") + "/"
    return any((d + "/").startswith(real) for d in (*SYSTEM_DIRS, *SCRATCH_DIRS, "/proc", "/dev"))


def visible(path: str, ops: list[list[str]]) -> bool:
    """Whether a host path is reachable inside the layout (so exec of it can work)."""
    real = os.path.realpath(path)
    for op in ops:
        if op[0] in ("ro", "rw") and (real == op[2] or real.startswith(op[2].rstrip("/") + "/")):
            return True
    return False
