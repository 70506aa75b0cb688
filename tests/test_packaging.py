"""The distribution installs whole (`pip install .`, not only `-e`): every package, the TUI's CSS."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_a_regular_install_has_every_module(tmp_path: Path) -> None:
    target = tmp_path / "site"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target",
         str(target), str(REPO)], capture_output=True, text=True, timeout=300)
    if built.returncode != 0:
        pytest.skip(f"pip could not build the wheel here: {built.stderr.strip()[-300:]}")
    site_packages = sysconfig.get_paths()["purelib"]
    # -S: no .pth files, so the checkout's editable finder cannot stand in for a missing module.
    probe = (
        f"import sys; sys.path[:0] = [{str(target)!r}, {site_packages!r}]\n"
        "import requiem, requiem.commands, requiem.sandbox, requiem.tui.app, requiem.analytics\n"
        "from importlib import resources\n"
        "assert requiem.__file__.startswith(sys.path[0]), requiem.__file__\n"
        "assert any(p.name.endswith('.tcss') for p in resources.files('requiem.tui').iterdir())\n"
        "from requiem.cli import main\n"
        f"sys.exit(main(['--home', {str(tmp_path / 'home')!r}, 'health']))\n"
    )
    proc = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["hash_primitive"] == "blake3"
