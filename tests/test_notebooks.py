"""The analyst notebooks run top to bottom on a real history, on this venv's Python."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
KERNEL = "requiem-venv"


@pytest.fixture
def private_jupyter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec for this interpreter in a temp dir; the user's Jupyter setup is never read."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "requiem (venv)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    for variable, name in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                           ("JUPYTER_DATA_DIR", "data"), ("IPYTHONDIR", "ipython")):
        monkeypatch.setenv(variable, str(tmp_path / name))
    return KERNEL


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_a_demo_history(path: Path, private_jupyter: str, tmp_path: Path,
                                         tmp_path_factory: pytest.TempPathFactory,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    from tests.test_demo import shared_demo

    home, summary = shared_demo(tmp_path_factory)
    monkeypatch.setenv("REQUIEM_HOME", str(home))
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        "commit notebooks without outputs"
    NotebookClient(notebook, timeout=120, kernel_name=private_jupyter,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    last = notebook.cells[-1]["outputs"][0]["data"]["text/plain"]
    report = ast.literal_eval(last)
    assert report["executions"] >= summary["requests"]
    assert report["drifting_requests"] >= 1
    assert report["unreferenced_objects"] == 3  # the demo's puts no request used
