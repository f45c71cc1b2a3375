"""Figures a reader understands without the code: the setup in the title, units on the axes, the
specs explained from the parsed optimisations, shared y-scales, missing cells as ``x`` and legends
without absent series; the accuracy–fairness trade-off figure."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from optimizations import expand_optimizations, parse_optimization
from rf2.plots import (MISSING_COLOR, describe_setup, plot_mdac, plot_tier_change, plot_tradeoff, spec_key,
                       _plt)

SETUP = {"dataset": "ml-100k", "model": "dlrm", "clients_per_round": 16, "epochs": 1, "n_seeds": 5}


def summary(cells, missing=()) -> pd.DataFrame:
    """A mdac_summary-like frame: cells = {(opt, mapping): mdac}; ``missing`` cells are all-nan."""
    rows = []
    for (o, m), v in cells.items():
        nan = (o, m) in missing
        r = {"optimization": o, "mapping": m, **SETUP}
        for t, rc in (("low", -2 * v), ("mid", -v), ("high", 0.0), ("overall", -v)):
            r |= {f"rc_{t}": np.nan if nan else rc, f"rc_{t}_lo": np.nan if nan else rc - 0.01,
                  f"rc_{t}_hi": np.nan if nan else rc + 0.01}
        r |= {"mdac": np.nan if nan else 2 * v, "mdac_lo": np.nan if nan else v, "mdac_hi": np.nan if nan else 3 * v,
              "floor": 0.01, "floor_hi": 0.02, "verdict": "above floor" if v > 0.01 else "within noise"}
        rows.append(r)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("spec,text", [
    ("quant:1:2:8", "low/mid/high: 4/8/32 bits"),
    ("quant:1:4:16", "low/mid/high: 2/4/32 bits"),
    ("quants:1:2:4", "low/mid/high: 8/16/32 magnitude bits + sign"),
    ("prune:1:2:4", "low/mid/high: 75/50/0% of the update pruned"),
    ("channel:1:2:8", "low/mid/high: 12.5/25/100% of the hidden units"),
    ("exclude-lo", "low tier never trains"),
    ("overselect:0.2", "select ⌊1.2K⌋, drop ⌊0.2K⌋ (low tier first)"),
    ("quant:bits:3:5:32:scope=update", "low/mid/high: 3/5/32 bits (one range per update)"),
    ("none", "plain FedAvg (the baseline)"),
])
def test_specs_are_described_from_the_parsed_optimisation(spec, text):
    assert parse_optimization(spec).describe() == text


def test_every_paper_spec_has_a_description_naming_each_tier():
    for s in expand_optimizations("paper-table1"):
        d = parse_optimization(s).describe()
        assert d and d != s
    assert parse_optimization("quant:1:2:8").describe(("slow", "fast", "new")) == "slow/fast/new: 4/8/32 bits"
    assert spec_key(["quant:1:2:8"]) == ["quant:1:2:8: low/mid/high: 4/8/32 bits"]


def test_setup_line_names_dataset_model_k_epochs_seeds():
    s = summary({("quant:1:2:8", "random"): 0.02})
    assert describe_setup(s) == "ml-100k · dlrm · K = 16 clients/round · 1 epoch · 5 seeds"
    assert describe_setup(s.assign(epochs=3), n_seeds=1).endswith("3 epochs · 1 seed")


def _texts(fig) -> str:
    out = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_title("left"), ax.get_xlabel(), ax.get_ylabel()]
        if ax.get_legend():
            out += [t.get_text() for t in ax.get_legend().get_texts()]
    if fig._suptitle is not None:
        out.append(fig._suptitle.get_text())
    return "\n".join(out)


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []


def test_mdac_figure_states_setup_units_key_and_marks_missing():
    cells = {(o, m): 0.02 for o in ("exclude-lo", "quant:1:2:8") for m in ("random", "dirichlet:0.05")}
    s = summary(cells, missing={("quant:1:2:8", "dirichlet:0.05"), ("exclude-lo", "dirichlet:0.05")})
    fig = plot_mdac(s, mappings=["random", "dirichlet:0.05"], optimizations=["exclude-lo", "quant:1:2:8"])
    text = _texts(fig)
    assert "ml-100k · dlrm · K = 16 clients/round · 1 epoch · 5 seeds" in text
    assert "MDAC of AUC (pp)" in text and "low/mid/high: 4/8/32 bits" in text
    main = fig.axes[0]
    legend = _legend(main)
    assert "random" in legend and "dirichlet:0.05" not in legend  # nothing of it is drawn
    assert "missing / failed run" in legend
    xs = [ln for ln in main.get_lines() if ln.get_marker() == "x" and ln.get_color() == MISSING_COLOR]
    assert sum(len(ln.get_xdata()) for ln in xs) == 2
    _plt().close(fig)


def test_tier_change_panels_share_y_and_mark_missing_cells():
    cells = {(o, m): v for o, v in (("exclude-lo", 0.05), ("quant:1:2:8", 0.01)) for m in ("random", "dirichlet:0.05")}
    s = summary(cells, missing={("quant:1:2:8", "random")})
    fig = plot_tier_change(s, mappings=["random", "dirichlet:0.05"], optimizations=["exclude-lo", "quant:1:2:8"])
    panels = [ax for ax in fig.axes if ax.get_ylabel()]
    assert len(panels) == 2 and panels[0].get_ylim() == panels[1].get_ylim()
    assert "relative AUC\nchange vs none (%)" in panels[0].get_ylabel()
    assert "missing / failed run" in _legend(panels[0]) and "missing / failed run" not in _legend(panels[1])
    assert {"low tier", "mid tier", "high tier", "all users"} <= set(_legend(panels[1]))
    _plt().close(fig)


def test_tradeoff_has_one_point_per_cell_with_interval_bars():
    opts = ["exclude-lo", "quant:1:2:8", "prune:1:2:4"]
    cells = {(o, m): v for o, v in zip(opts, (0.05, 0.01, 0.03)) for m in ("random", "dirichlet:0.05")}
    s = summary(cells, missing={("prune:1:2:4", "random")})
    fig = plot_tradeoff(s, mappings=["random", "dirichlet:0.05"], optimizations=opts)
    panels = [ax for ax in fig.axes if ax.get_xlabel()]
    assert len(panels) == 2 and panels[0].get_ylim() == panels[1].get_ylim()
    assert panels[0].get_xlim() == panels[1].get_xlim()
    assert panels[0].get_xlabel() == "overall relative AUC change vs none (%)"
    assert panels[0].get_ylabel() == "MDAC of AUC (pp)"
    for ax, n in zip(panels, (2, 3)):
        points = [c for c in ax.containers if c.has_xerr and c.has_yerr]
        assert len(points) == n
    # the excluded point: x = overall change -5 %, y = MDAC 10 pp
    x, y = panels[1].containers[0].lines[0].get_data()
    assert np.allclose([x[0], y[0]], [-5.0, 10.0])
    assert "missing: prune:1:2:4" in _legend(panels[0])
    assert "prune" not in _legend(panels[0]) and "prune" in _legend(panels[1])
    assert "noise floor (none retrained)" in _legend(panels[0])
    _plt().close(fig)
