"""The writers' guard keeps an exclusive GC out while held, and only then, whatever reuses it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from requiem.cas_guard import write_guard

# Another process asks for the GC's exclusive lock without waiting: exit 0 if it got it.
GC_PROBE = ("import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\n"
            "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n"
            "    sys.exit(1)\n")


def gc_could_start(cas_root: Path) -> bool:
    probe = [sys.executable, "-c", GC_PROBE, str(cas_root / "gc.lock")]
    return subprocess.run(probe, timeout=60, check=False).returncode == 0


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_hold_keeps_the_gc_out_until_it_ends_each_time_it_is_taken(tmp_path: Path) -> None:
    cas_root = tmp_path / "cas"
    for _ in range(3):
        with write_guard(cas_root):
            assert not gc_could_start(cas_root)
        assert gc_could_start(cas_root)
    before = open_descriptors()
    for _ in range(50):
        with write_guard(cas_root):
            pass
    assert open_descriptors() == before  # every hold closes what it opened


def test_concurrent_holds_in_one_process_each_keep_the_gc_out(tmp_path: Path) -> None:
    cas_root = tmp_path / "cas"
    first, second = write_guard(cas_root), write_guard(cas_root)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc_could_start(cas_root)  # the second hold has open files of its own
    second.__exit__(None, None, None)
    assert gc_could_start(cas_root)


def test_a_child_forked_inside_a_hold_does_not_end_the_parents(tmp_path: Path) -> None:
    cas_root = tmp_path / "cas"
    guard = write_guard(cas_root)
    guard.__enter__()
    pid = os.fork()
    if pid == 0:  # the child leaves the hold it inherited, as code after a fork would
        try:
            guard.__exit__(None, None, None)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert not gc_could_start(cas_root)
    guard.__exit__(None, None, None)
    assert gc_could_start(cas_root)


def test_a_forked_child_never_shares_the_parents_idle_descriptors(tmp_path: Path) -> None:
    cas_root = tmp_path / "cas"
    with write_guard(cas_root):
        pass  # leaves an idle pair: if the child took it, the parent's next hold would end its hold
    held_r, held_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            with write_guard(cas_root):
                os.write(held_w, b"x")
                os.read(done_r, 1)
        finally:
            os._exit(0)
    try:
        os.read(held_r, 1)
        with write_guard(cas_root):
            pass
        assert not gc_could_start(cas_root)  # the child still holds
    finally:
        os.write(done_w, b"x")
        os.waitpid(pid, 0)
        for fd in (held_r, held_w, done_r, done_w):
            os.close(fd)
    assert gc_could_start(cas_root)


def test_a_hold_ended_by_an_exception_still_lets_the_gc_in(tmp_path: Path) -> None:
    cas_root = tmp_path / "cas"
    try:
        with write_guard(cas_root):
            raise KeyError("a run that failed midway")
    except KeyError:
        pass
    assert gc_could_start(cas_root)


def test_a_child_forked_inside_a_hold_keeps_its_copy_after_the_parent_leaves(tmp_path: Path) -> None:
    cas_root = tmp_path / "cas"
    go_r, go_w = os.pipe()
    with write_guard(cas_root):
        pid = os.fork()
        if pid == 0:  # holds the open files it inherited until told to go
            try:
                os.read(go_r, 1)
            finally:
                os._exit(0)
    try:
        assert not gc_could_start(cas_root)  # the parent left; the child's inherited hold stands
    finally:
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
        os.close(go_r)
        os.close(go_w)
    assert gc_could_start(cas_root)


def test_a_store_removed_and_made_again_is_guarded_by_its_new_lock(tmp_path: Path) -> None:
    import shutil

    cas_root = tmp_path / "cas"
    with write_guard(cas_root):
        pass  # an idle pair, open on the files about to be removed
    shutil.rmtree(cas_root)
    with write_guard(cas_root):
        assert not gc_could_start(cas_root)
    assert gc_could_start(cas_root)


def test_one_guard_object_is_one_hold(tmp_path: Path) -> None:
    cas_root = tmp_path / "cas"
    guard = write_guard(cas_root)
    with guard:
        with pytest.raises(RuntimeError):
            guard.__enter__()
        assert not gc_could_start(cas_root)
    assert gc_could_start(cas_root)
    with guard:  # taken again once left
        assert not gc_could_start(cas_root)
    assert gc_could_start(cas_root)



def test_a_hold_tried_without_waiting_is_refused_while_a_gc_holds_or_waits(tmp_path: Path) -> None:
    from requiem.cas_guard import exclusive_guard

    cas_root = tmp_path / "cas"
    tried = write_guard(cas_root)
    with exclusive_guard(cas_root):
        assert not tried.try_enter()
    assert tried.try_enter()  # and then it is a hold like any other
    assert not gc_could_start(cas_root)
    tried.__exit__(None, None, None)
    assert gc_could_start(cas_root)


def test_a_running_command_does_not_keep_the_gc_waiting(tmp_path: Path) -> None:
    """A run takes its guard ahead while its command runs, and lets go once it runs long."""
    import json
    import time

    from tests.conftest import cli_command
    from tests.test_exec import PLAIN

    request = tmp_path / "sleep.json"
    request.write_text(json.dumps({"command": "sleep", "argv": ["2"], "policy": PLAIN,
                                   "workspace_root": str(tmp_path)}))
    home = tmp_path / "home"
    run = subprocess.Popen([*cli_command(), "--home", str(home), "exec", "run", "--request",
                            str(request), "--out", str(tmp_path / "out.json")])
    try:
        deadline = time.monotonic() + 30
        while not (home / "cas" / "gc.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the command has run for longer than the first check
        assert run.poll() is None, "the command ended too soon to tell"
        assert gc_could_start(home / "cas")
    finally:
        assert run.wait(timeout=60) == 0
