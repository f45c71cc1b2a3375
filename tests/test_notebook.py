"""The per-tier notebook executes top to bottom on a fresh results directory and draws its figures."""
from __future__ import annotations

from pathlib import Path

import pytest

from rf2.sweep import Sweep, SweepSpec

nbformat = pytest.importorskip("nbformat", reason="notebook tests need the test extra: pip install -e '.[test]'")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "per_tier_plots.ipynb"


def test_notebook_runs_on_a_results_directory(tmp_path, monkeypatch):
    spec = SweepSpec(
        base={"dataset": "synthetic", "dataset_options": {"n_users": 120, "n_items": 50, "events_per_user": 10},
              "clients_per_round": 40},
        mappings=("random", "dirichlet:0.05"), optimizations=("exclude-lo", "channel:1:2:4"), seeds=(0,),
    )
    Sweep(spec, tmp_path / "res", progress=False, executor="inprocess").run()
    monkeypatch.setenv("RF2_RESULTS", str(tmp_path / "res"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the per-tier change figure and the item-share figure
    text = "".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", "")) for o in outputs)
    assert "exclude-lo" in text and "8 finished runs" in text  # 6 runs + 2 noise-floor replicates
