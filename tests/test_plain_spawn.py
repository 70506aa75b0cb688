"""The engine's own spawn does what Popen(close_fds=True, start_new_session=True) did, errors included."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from requiem.sandbox.proc import PidfdChild, spawn

_SIGPIPE_BIT = 1 << (13 - 1)  # SigIgn in /proc/<pid>/status is a mask of signal numbers - 1


def run(tmp_path: Path, argv: list[str], **options: object) -> tuple[int, str]:
    out = tmp_path / "out"
    with open(out, "wb") as stdout, open(os.devnull, "rb") as stdin:
        settings = {"cwd": str(tmp_path), "env": {}, **options}
        pid = spawn(argv, argv[0], stdin=stdin.fileno(), stdout=stdout.fileno(),
                    stderr=stdout.fileno(), **settings)  # type: ignore[arg-type]
        child = PidfdChild(pid)
        exit_info = child.wait(30)
    assert exit_info is not None
    return exit_info.exit_code, out.read_text()  # type: ignore[return-value]


def test_a_spawned_command_gets_its_cwd_env_umask_and_own_session(tmp_path: Path) -> None:
    script = ('pwd; umask; printf "%s\\n" "$GREETING"; '
              'read -r pid comm state ppid pgrp session rest < /proc/$$/stat; '
              'test "$session" = "$$" && echo own-session; '
              'grep SigIgn /proc/$$/status')
    code, out = run(tmp_path, ["/bin/sh", "-c", script], env={"GREETING": "hello"}, umask=0o027)
    lines = out.splitlines()
    assert code == 0
    assert lines[:4] == [str(tmp_path), "0027", "hello", "own-session"]
    assert int(lines[4].split()[1], 16) & _SIGPIPE_BIT == 0  # Python ignores SIGPIPE; commands must not


def test_a_spawned_command_sees_only_its_stdio(tmp_path: Path) -> None:
    stray = os.open(tmp_path, os.O_RDONLY)
    os.set_inheritable(stray, True)
    try:
        code, out = run(tmp_path, ["/bin/ls", "/proc/self/fd"])
    finally:
        os.close(stray)
    assert code == 0
    assert sorted(int(fd) for fd in out.split()) == [0, 1, 2, 3]  # 3: ls's own directory handle


@pytest.mark.parametrize("case", ["not_executable", "missing", "missing_cwd"])
def test_a_command_that_cannot_start_raises_oserror_naming_what_failed(tmp_path: Path, case: str) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    argv, cwd, expected = {
        "not_executable": ([str(script)], str(tmp_path), (errno.EACCES, str(script))),
        "missing": ([str(tmp_path / "absent")], str(tmp_path), (errno.ENOENT, str(tmp_path / "absent"))),
        "missing_cwd": (["/bin/true"], str(tmp_path / "gone"), (errno.ENOENT, str(tmp_path / "gone"))),
    }[case]
    with pytest.raises(OSError) as failure:
        run(tmp_path, argv, cwd=cwd)
    assert (failure.value.errno, failure.value.filename) == expected


def test_spawn_works_with_the_standard_descriptors_closed(tmp_path: Path) -> None:
    # With 0-2 closed, the failure pipe would land on them and be overwritten by the child's stdio.
    code = (f"import os\nfrom requiem.sandbox.proc import PidfdChild, spawn\n"
            f"out = os.open({str(tmp_path / 'o')!r}, os.O_WRONLY | os.O_CREAT)\n"
            "os.close(0); os.close(1); os.close(2)\n"
            "child = PidfdChild(spawn(['/bin/echo', 'fine'], '/bin/echo', stdin=out, stdout=out, "
            "stderr=out, cwd='/', env={}))\n"
            "os._exit(child.wait(30).exit_code)\n")
    got = subprocess.run([sys.executable, "-c", code], timeout=60, check=False)
    assert got.returncode == 0
    assert (tmp_path / "o").read_text() == "fine\n"


@pytest.mark.parametrize("refusal", [errno.ENOSYS, errno.EPERM, errno.EMFILE])
def test_a_child_is_waited_for_by_polling_where_pidfds_are_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: int) -> None:
    # ENOSYS: kernels before 5.3, valgrind; EPERM: seccomp profiles; EMFILE: no descriptor left.
    def no_pidfds(pid: int) -> int:
        raise OSError(refusal, os.strerror(refusal))

    monkeypatch.setattr(os, "pidfd_open", no_pidfds)
    with open(os.devnull, "rb") as null:
        pid = spawn(["/bin/sleep", "0.3"], "/bin/sleep", stdin=null.fileno(), stdout=null.fileno(),
                    stderr=null.fileno(), cwd="/", env={})
    child = PidfdChild(pid)
    assert child.wait(0.01) is None
    exit_info = child.wait(None)
    assert exit_info is not None and exit_info.exit_code == 0 and exit_info.rusage

