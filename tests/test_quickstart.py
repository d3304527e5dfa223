"""docs/quickstart.ipynb runs top to bottom in a real Jupyter kernel, twice in a row (a re-run replaces its run),
without a tqdm warning, and is kept without outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "quickstart.ipynb"


def test_quickstart_is_saved_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)


def test_quickstart_notebook_runs_in_a_kernel(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("NNLAB_QUICKSTART_OUT", str(tmp_path))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend, as in Jupyter
    monkeypatch.delenv("NNLAB_PROGRESS", raising=False)  # tqdm's notebook bars, as in Jupyter
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as the test process (conftest): tiny models, a shared CPU
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parents[1])}})
    with client.setup_kernel():  # Run All twice in one kernel, as a user re-running the notebook does
        for _ in range(2):
            first = (tmp_path / "lenet" / "metrics.json").stat().st_mtime_ns if (tmp_path / "lenet").is_dir() else 0
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)  # raises CellExecutionError on an error output
    assert first and (tmp_path / "lenet" / "metrics.json").stat().st_mtime_ns > first  # the run was replaced
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    streams = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "TqdmWarning" not in streams and "IProgress not found" not in streams  # ipywidgets: the notebook extra
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)  # the bars drawn
    # a cell's result, after what it printed or displayed on the way (tqdm's widgets, notes on stderr)
    by_source = {c.source.splitlines()[0]: [o for o in c.outputs if o.output_type == "execute_result"]
                 for c in nb.cells if c.cell_type == "code"}
    accuracy = float(by_source['accuracy = run.metrics["test"]["accuracy"]'][0]["data"]["text/plain"])
    assert accuracy > 0.7
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 3  # history, confusion, the predicted digits (the study shows a Markdown table)
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "epoch 1/2" in printed and "epoch 2/2" in printed
    study = by_source["result = nnlab.study(RECIPE, grid={\"alpha\": {}, \"gamma\": {\"model.name\": "
                      "\"lenet_gamma\"}}, seeds=2,"]
    assert "| alpha |" in [o for o in study if "text/markdown" in o.get("data", {})][0]["data"]["text/markdown"]
    assert (tmp_path / "lenet" / "metrics.json").is_file() and (tmp_path / "study" / "report.md").is_file()
