"""The paper's figures from a results directory (PNG by default).

* :func:`plot_mdac` — MDAC per optimisation, bars grouped by tier mapping (RF² Figure 6/7);
  mean over seeds with the seeds' standard deviation as error bars; a run that failed or is missing
  is drawn as an empty slot marked ``x`` (never as a zero bar).
* :func:`plot_tier_change` — each tier's relative AUC change per optimisation, one panel per
  mapping (RF² Figure 8).
* :func:`plot_tier_items` — each tier's share of the top items, one panel per mapping (Figure 4).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rf2.evaluation import OVERALL


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _order(values, preferred) -> list:
    seen = list(dict.fromkeys(values))
    return [v for v in preferred if v in seen] + [v for v in seen if v not in preferred]


def plot_mdac(mdac: pd.DataFrame, path: str | Path | None = None, mappings=None, optimizations=None, title: str = ""):
    plt = _plt()
    mappings = _order(mdac["mapping"], mappings or [])
    opts = _order(mdac["optimization"], optimizations or [])
    g = mdac.groupby(["optimization", "mapping"])["mdac"]
    mean, std, count = g.mean() * 100, g.std() * 100, g.count()
    fig, ax = plt.subplots(figsize=(min(15, max(8, 0.3 * len(opts) * len(mappings))), 4.5))
    width = 0.8 / max(len(mappings), 1)
    x = np.arange(len(opts))
    for j, m in enumerate(mappings):
        xs = x + (j - (len(mappings) - 1) / 2) * width
        ys = np.array([mean.get((o, m), np.nan) for o in opts])
        es = np.array([std.get((o, m), np.nan) if count.get((o, m), 0) > 1 else 0.0 for o in opts])
        err = np.where(np.isnan(ys), 0, np.nan_to_num(es))
        ax.bar(xs, np.nan_to_num(ys), width, yerr=err if err.any() else None, label=m, capsize=2)
        for xi, yi in zip(xs, ys):
            if np.isnan(yi):
                ax.text(xi, 0, "x", ha="center", va="bottom", fontsize=8, color="crimson")
    ax.set_xticks(x, opts, rotation=40, ha="right")
    ax.set_ylabel("MDAC (%)")
    ax.set_title(title or "Fairness impact of each optimisation (MDAC, RF² Eq. 2); x = missing/failed")
    ax.legend(title="tier mapping", fontsize=8, ncol=min(3, len(mappings)))
    fig.tight_layout()
    return _save(fig, path)


def plot_tier_change(mdac: pd.DataFrame, path: str | Path | None = None, mappings=None, optimizations=None, metric="auc"):
    plt = _plt()
    mappings = _order(mdac["mapping"], mappings or [])
    opts = _order(mdac["optimization"], optimizations or [])
    tiers = [c[3:] for c in mdac.columns if c.startswith("rc_")]
    fig, axes = plt.subplots(len(mappings), 1, figsize=(min(14, max(8, 0.7 * len(opts))), 2.6 * len(mappings)), squeeze=False)
    for ax, m in zip(axes[:, 0], mappings):
        sub = mdac[mdac["mapping"] == m].groupby("optimization")[[f"rc_{t}" for t in tiers]].mean() * 100
        sub = sub.reindex(opts)
        width = 0.8 / len(tiers)
        x = np.arange(len(opts))
        for j, t in enumerate(tiers):
            ax.bar(x + (j - (len(tiers) - 1) / 2) * width, sub[f"rc_{t}"].fillna(0).to_numpy(), width,
                   label="total" if t == OVERALL else t, color=None if t != OVERALL else "0.5")
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(x, opts if ax is axes[-1, 0] else [""] * len(opts), rotation=40, ha="right")
        ax.set_ylabel(f"{metric.upper()} change (%)")
        ax.set_title(f"{m}: relative {metric.upper()} change per tier (RF² Eq. 1, Figure 8)", fontsize=10)
        ax.legend(fontsize=7, ncol=len(tiers))
    fig.tight_layout()
    return _save(fig, path)


def plot_tier_items(tiers_dir: str | Path, path: str | Path | None = None, mappings=None, seed: int | None = None):
    plt = _plt()
    files = sorted(Path(tiers_dir).glob("*__seed*.csv"))
    if not files:
        raise FileNotFoundError(f"no tier reports in {tiers_dir}")
    top = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    seed = int(top["seed"].min()) if seed is None else seed
    top = top[top["seed"] == seed]
    mappings = _order(top["mapping"], mappings or [])
    fig, axes = plt.subplots(len(mappings), 1, figsize=(8, 2.4 * len(mappings)), squeeze=False)
    for ax, m in zip(axes[:, 0], mappings):
        share = top[top["mapping"] == m].pivot(index="rank", columns="tier", values="share")
        tiers = _order(share.columns, ["low", "mid", "high"])
        x = np.arange(len(share))
        width = 0.8 / len(tiers)
        for j, t in enumerate(tiers):
            ax.bar(x + (j - (len(tiers) - 1) / 2) * width, share[t].to_numpy(), width, label=t)
        ax.set_xticks(x, [f"#{r + 1}" for r in share.index])
        ax.set_ylabel("share of clicks")
        ax.set_title(f"{m} (seed {seed}): each tier's share of the top items (RF² Figure 4)", fontsize=10)
        ax.legend(fontsize=7, ncol=len(tiers))
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path):
    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def plot_results(results_dir: str | Path, out: str | Path | None = None, metric: str = "auc") -> list[Path]:
    """All figures for a results directory; returns the files written."""
    from rf2.results import load_results, mdac_table
    from rf2.sweep import SweepSpec

    results_dir = Path(results_dir)
    out = Path(out) if out else results_dir / "plots"
    spec_path = results_dir / "sweep.toml"
    mappings, opts = None, None
    if spec_path.exists():
        spec = SweepSpec.from_toml(spec_path)
        mappings, opts = list(spec.mappings), [o for o in spec.optimization_list if o != "none"]
    rows = load_results(results_dir)
    if rows.empty:
        raise ValueError(f"{results_dir}: no finished runs to plot yet")
    mdac = mdac_table(rows, metric)
    if mdac.empty:
        raise ValueError(f"{results_dir}: no optimised run has its 'none' baseline yet, so there is no MDAC to plot")
    if opts:  # show planned-but-missing runs as missing
        grid = pd.MultiIndex.from_product([opts, mappings], names=["optimization", "mapping"]).to_frame(index=False)
        mdac = grid.merge(mdac, on=["optimization", "mapping"], how="left")
    written = [plot_mdac(mdac, out / f"mdac_{metric}.png", mappings, opts),
               plot_tier_change(mdac.dropna(subset=["mdac"]), out / f"tier_change_{metric}.png", mappings, opts, metric)]
    if (results_dir / "tiers").is_dir():
        written.append(plot_tier_items(results_dir / "tiers", out / "tier_items.png", mappings))
    return written
