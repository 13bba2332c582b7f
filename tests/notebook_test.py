"""docs/experiments.ipynb runs top to bottom in a kernel of this environment, so it cannot rot."""

import re

import pytest

from conftest import ROOT, require

NOTEBOOK = ROOT / "docs" / "experiments.ipynb"


@pytest.mark.slow
def test_the_experiments_notebook_runs_and_trains_its_grid(mnist_dir, monkeypatch):
  nbformat, nbclient = require("nbformat"), require("nbclient")
  require("ipykernel")
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  for cell in notebook.cells:  # kept without outputs in git: what it shows is what it computes
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, cell.source[:80]
  monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the kernel inherits the environment
  monkeypatch.setenv("MNIST_DATA_DIR", mnist_dir)
  nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
  text = "".join(o.get("text", "") for o in outputs)
  # The grid: three learning rates x two seeds, every run trained: its final loss well
  # below chance's ln 10 = 2.30 (the loss, not eval-mode accuracy, which swings this early).
  rows = re.findall(r"lr (\S+)\s+final training loss ([\d.]+)\s+([\d.]+)", text)
  assert [lr for lr, *_ in rows] == ["0.001", "0.01", "0.1"], text
  assert all(float(loss) < 1.5 for _, *losses in rows for loss in losses), text
  assert any("image/png" in o.get("data", {}) for o in outputs)  # and its plot
