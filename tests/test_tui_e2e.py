"""The real `requiem-tui` in a real terminal (tmux): read the screen, press keys, see it change."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.test_demo import shared_demo

TMUX = shutil.which("tmux")
TUI = Path(sys.executable).with_name("requiem-tui")

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install tmux)")


class Terminal:
    """One tmux session on a private server socket, 160x48, running one command."""

    def __init__(self, command: list[str]) -> None:
        self.socket = f"requiem-e2e-{uuid.uuid4().hex[:8]}"
        self._tmux("new-session", "-d", "-s", "tui", "-x", "160", "-y", "48", *command)

    def _tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        # os.environ, not the C environment: readline (loaded by pytest) sets COLUMNS=80 there,
        # which the TUI would obey over the pane's real size.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.run([TMUX or "tmux", "-L", self.socket, *args], capture_output=True,
                              text=True, timeout=10, env=env)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "tui").stdout

    def press(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "tui", *keys)

    def alive(self) -> bool:
        return self._tmux("has-session", "-t", "tui").returncode == 0

    def wait_for(self, check: Callable[[str], bool], timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.screen()
            if check(shown):
                return shown
            time.sleep(0.1)
        raise AssertionError(f"the screen never matched; it shows:\n{self.screen()}")

    def close(self) -> None:
        self._tmux("kill-server")


@pytest.fixture
def terminal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Terminal]:
    home = shared_demo(tmp_path_factory)[0]
    term = Terminal([str(TUI), "--home", str(home), "--refresh", "1"])
    yield term
    term.close()


def _only_timeouts(screen: str) -> bool:
    """Whether the executions panel (left of the lines below its header) shows only timeouts."""
    if "request id" not in screen:
        return False
    lines = screen[screen.index("request id"):].splitlines()[1:]
    table = "\n".join(line.split("││")[0] for line in lines)
    return "timeout" in table and " exit " not in table and "  ok  " not in table


def test_tui_in_a_terminal_shows_everything_then_answers_keys(terminal: Terminal) -> None:
    first = terminal.wait_for(lambda s: "blake3" in s and "comparisons" in s and " ok " in s)
    # Health, sandbox states spelled out and the dual-run panel, at once, with no keypress.
    for shown in ("Health", "Sandbox capabilities", "enforced", "Dual-run mismatches",
                  "digest_mismatch", "Recent executions", "CAS", "On-call"):
        assert shown in first, f"{shown!r} not on screen:\n{first}"
    terminal.press("/")
    terminal.wait_for(lambda s: "filter: command" in s)  # typed before the box opens, keys are commands
    terminal.press("-l", "timeout")
    terminal.press("Enter")
    # A capture can catch the frame half drawn (the new title above the old rows): wait until
    # the rows agree with the title.
    filtered = terminal.wait_for(lambda s: "matching “timeout”" in s and _only_timeouts(s))
    assert _only_timeouts(filtered)
    terminal.press("?")
    terminal.wait_for(lambda s: "Keys" in s and "command palette" in s)
    terminal.press("Escape")
    terminal.wait_for(lambda s: "command palette" not in s)
    terminal.press("q")
    deadline = time.monotonic() + 10
    while terminal.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not terminal.alive(), "q did not quit"
