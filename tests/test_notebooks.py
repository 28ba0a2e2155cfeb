"""The notebooks in notebooks/ run top to bottom, headless, without errors.

01-03 run in order (02 trains on the store 01 writes, 03 reports on 02's
runs), 04 (your own data: Banking77's CSV files) on its own, in one temporary work folder (``BERTVISION_NB_WORKDIR``), on a kernel
whose spec is written at test time to point at this interpreter, so the
notebooks see the same environment as the tests (and this checkout's
bertvision, as ``pip install -e .`` gives it). Committed notebooks carry the
outputs of a small real run (``scripts/execute_notebooks.py``), use the
Python API and put nothing on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = ["01_extract.ipynb", "02_fit.ipynb", "03_report.ipynb"]
OWN_DATA = "04_own_data.ipynb"
KERNEL = "bertvision-test"
# the notebooks' size knobs: every cell runs the same code at any size, so the test runs them small
# (64 SST-2 training examples, 32 dev; 80 Banking77 rows a split; 2 epochs a fit)
LIMIT, OWN_SAMPLE, EPOCHS = 64, 80, 2


@pytest.fixture(scope="module")
def notebook_env(tmp_path_factory, shared_data):
    """A kernel spec for this interpreter (under a temporary JUPYTER_PATH)
    and the environment variables the notebooks read, set for the module."""
    root = tmp_path_factory.mktemp("notebooks")
    prefix = root / "jupyter"
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", KERNEL],
                   check=True, capture_output=True)
    spec = prefix / "share" / "jupyter" / "kernels" / KERNEL / "kernel.json"
    argv = json.loads(spec.read_text())["argv"]
    assert argv[0] == sys.executable, argv
    env = {"JUPYTER_PATH": str(prefix / "share" / "jupyter"), "BERTVISION_NB_WORKDIR": str(root / "work"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "BERTVISION_SHARED_DATA": str(shared_data), "BERTVISION_NB_LIMIT": str(LIMIT),
           "BERTVISION_NB_OWN_SAMPLE": str(OWN_SAMPLE), "BERTVISION_NB_EPOCHS": str(EPOCHS)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield root / "work"
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.mark.parametrize("name", [*NOTEBOOKS, OWN_DATA])
def test_committed_executed_with_the_api(name):
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code"
    assert all(c.execution_count is not None for c in code), f"{name} is committed unexecuted"
    assert all(o.output_type != "error" for c in code for o in c.outputs), f"{name} is committed with an error"
    assert sum(bool(c.outputs) for c in code) >= len(code) - 1, f"{name}: cells without outputs"
    source = "\n".join(c.source for c in code)
    assert "sys.path" not in source and "import bertvision as bv" in source


def _execute(name: str) -> nbformat.NotebookNode:
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    # an extra first cell (not in the file) reports the kernel's interpreter
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=600,
                            resources={"metadata": {"path": str(REPO / "notebooks")}})
    client.execute()
    return nb


def _execute_checked(name: str) -> nbformat.NotebookNode:
    nb = _execute(name)
    first = "".join(o.get("text", "") for o in nb.cells[0].outputs).strip()
    assert first == sys.executable, f"{name}: kernel ran {first!r}, not this interpreter"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{name}: {errors[0].ename}: {errors[0].evalue}"
    return nb


def test_notebooks_run_in_order(notebook_env):
    for name in NOTEBOOKS:
        _execute_checked(name)
    work = notebook_env
    assert (work / f"store-sst2-cls-{LIMIT}" / "manifest.json").is_file()
    report = json.loads((work / f"report-sst2-{LIMIT}" / "report.json").read_text())
    assert {"metric_vs_params", "layer_weights", "wall_time"} <= set(report["charts"])


def test_own_data_notebook_runs(notebook_env):
    """04: Banking77's train.csv/test.csv as your own files (a seeded sample
    per split) through extract, fit, evaluate/predict and the report."""
    _execute_checked(OWN_DATA)
    work = notebook_env
    manifest = json.loads((work / f"store-banking77-{OWN_SAMPLE}" / "manifest.json").read_text())
    assert manifest["task"] == "banking77" and set(manifest["splits"]) == {"train", "dev", "test"}
    assert all(split["num_records"] == OWN_SAMPLE for split in manifest["splits"].values())
    report = json.loads((work / f"report-banking77-{OWN_SAMPLE}" / "report.json").read_text())
    assert report["runs"] == 2 and {"per_class_f1", "confusion_matrix"} <= set(report["charts"])
