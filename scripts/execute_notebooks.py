"""Execute notebooks/*.ipynb in order and save them with their outputs (what
is committed): a small real run, BERTVISION_NB_LIMIT (default here 256) SST-2
training examples (04_own_data: BERTVISION_NB_OWN_SAMPLE, default 300 Banking77
rows per split), everything written under notebooks/_work.

    .venv/bin/python scripts/execute_notebooks.py            # all four, in order
    .venv/bin/python scripts/execute_notebooks.py 02_fit     # one (its inputs must exist)
"""

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["01_extract", "02_fit", "03_report", "04_own_data"]


def main(names: list[str]) -> int:
    os.environ.setdefault("BERTVISION_NB_LIMIT", "256")
    # this checkout's bertvision, also where it is not pip-installed (scripts/setup_venv.sh installs it)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    for name in names or NOTEBOOKS:
        path = REPO / "notebooks" / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, kernel_name="python3", timeout=1200,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        for cell in nb.cells:  # TensorFlow's start-up lines and library warnings are not the notebook's results
            if cell.cell_type == "code":
                cell.outputs = [o for o in cell.outputs if o.get("name") != "stderr"]
        nbformat.write(nb, path)
        print(f"{path.relative_to(REPO)}: executed, outputs saved")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
