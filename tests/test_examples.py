"""The examples a user copies from run as they are: the notebook and the two scripts."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytestmark = pytest.mark.slow  # each example runs in a process or a kernel of its own


@pytest.fixture
def one_thread(monkeypatch):
    """Small examples run fastest on one thread, and do not fight a busy machine's other cores."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run_script(name, *args, cwd, env):
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_clinical_notebook_executes_and_draws_the_figures(tmp_path, one_thread):
    notebook = nbformat.read(str(EXAMPLES / "clinical_evaluation.ipynb"), as_version=4)
    resources = {"metadata": {"path": str(tmp_path)}}
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources=resources).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert "zerofill" in text and "PSNR" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 4
    assert (tmp_path / "clinical_report" / "report.md").exists()


def test_quickstart_saves_volumes_and_prints_metrics(tmp_path, one_thread):
    out = run_script("quickstart.py", cwd=tmp_path, env=one_thread)
    assert "PSNR" in out and "zerofill x2" in out
    assert {p.name for p in (tmp_path / "quickstart").iterdir()} == {
        "lr.nii.gz",
        "sr.nii.gz",
        "ref.nii.gz",
    }


def test_train_your_own_trains_and_compares(tmp_path, one_thread):
    out = run_script(
        "train_your_own.py", "--steps", "3", "--out", "run", cwd=tmp_path, env=one_thread
    )
    assert (tmp_path / "run" / "best.safetensors").exists()
    assert "cssfn (trained here)" in out and "zerofill" in out
