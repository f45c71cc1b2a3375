"""The paper's figures from a results directory (PNG by default).

* :func:`plot_mdac` — MDAC per optimisation, bars grouped by tier mapping (RF² Figure 6/7): the
  MDAC of the seed-mean tier changes with its paired-bootstrap interval, the mapping's noise floor
  as a dash, cells not above the floor hatched; a run that failed or is missing is drawn as an
  empty slot marked ``x`` (never as a zero bar).
* :func:`plot_tier_change` — each tier's relative AUC change per optimisation with its interval,
  one panel per mapping (RF² Figure 8).
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


def _yerr(values, lo, hi):
    """Asymmetric error bars from an interval; zero where the interval is unknown."""
    v, lo, hi = (np.asarray(a, dtype=float) for a in (values, lo, hi))
    down = np.where(np.isfinite(lo) & np.isfinite(v), np.maximum(v - lo, 0), 0)
    up = np.where(np.isfinite(hi) & np.isfinite(v), np.maximum(hi - v, 0), 0)
    return np.vstack([down, up])


def plot_mdac(summary: pd.DataFrame, path: str | Path | None = None, mappings=None, optimizations=None, title: str = "",
              metric: str = "auc"):
    """MDAC per optimisation and mapping from :func:`rf2.results.mdac_table` ``(summary=True)``:
    bars = MDAC of the seed-mean per-tier changes with their bootstrap interval; a grey dash on each
    bar = that mapping's noise floor (``none`` retrained, same tiers); bars whose interval does not
    clear the floor are hatched and pale; a missing cell is an ``x`` (never a zero bar)."""
    plt = _plt()
    mappings = _order(summary["mapping"], mappings or [])
    opts = _order(summary["optimization"], optimizations or [])
    cell = summary.set_index(["optimization", "mapping"])
    get = lambda col, o, m: float(cell[col].get((o, m), np.nan)) if col in cell else np.nan  # noqa: E731
    fig, ax = plt.subplots(figsize=(min(15, max(8, 0.35 * len(opts) * len(mappings))), 4.8))
    width = 0.8 / max(len(mappings), 1)
    x = np.arange(len(opts))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, m in enumerate(mappings):
        xs = x + (j - (len(mappings) - 1) / 2) * width
        ys = np.array([get("mdac", o, m) for o in opts]) * 100
        lo = np.array([get("mdac_lo", o, m) for o in opts]) * 100
        hi = np.array([get("mdac_hi", o, m) for o in opts]) * 100
        floor = np.array([get("floor", o, m) for o in opts]) * 100
        within = np.array([str(cell["verdict"].get((o, m), "")) == "within noise" if "verdict" in cell else False
                           for o in opts])
        c = colors[j % len(colors)]
        ax.bar(xs[~within], np.nan_to_num(ys[~within]), width, color=c, label=m,
               yerr=_yerr(ys, lo, hi)[:, ~within], capsize=2, ecolor="0.2")
        if within.any():
            ax.bar(xs[within], np.nan_to_num(ys[within]), width, color=c, alpha=0.35, hatch="//", edgecolor=c,
                   yerr=_yerr(ys, lo, hi)[:, within], capsize=2, ecolor="0.2")
        ok = np.isfinite(floor)
        ax.hlines(floor[ok], xs[ok] - width / 2, xs[ok] + width / 2, colors="0.3", linestyles="-", lw=2.2,
                  label="noise floor (none retrained)" if j == 0 and ok.any() else None)
        for xi, yi in zip(xs, ys):
            if np.isnan(yi):
                ax.text(xi, 0, "x", ha="center", va="bottom", fontsize=8, color="crimson")
    ax.set_xticks(x, opts, rotation=40, ha="right")
    ax.set_ylabel(f"MDAC of {metric.upper()} (%)")
    n = int(summary["n_seeds"].max()) if "n_seeds" in summary and len(summary) else 0
    ax.set_title(title or f"MDAC (RF² Eq. 2) of the seed-mean tier changes, {n} seed(s), 95% bootstrap interval;\n"
                          "hatched = not above the noise floor; x = missing/failed", fontsize=10)
    ax.legend(title="tier mapping", fontsize=8, ncol=min(3, len(mappings) + 1))
    fig.tight_layout()
    return _save(fig, path)


def plot_tier_change(summary: pd.DataFrame, path: str | Path | None = None, mappings=None, optimizations=None,
                     metric="auc"):
    """Each tier's relative change (seed mean, with its bootstrap interval) per optimisation, one
    panel per mapping (RF² Figure 8); panels share the y-axis."""
    plt = _plt()
    mappings = _order(summary["mapping"], mappings or [])
    opts = _order(summary["optimization"], optimizations or [])
    tiers = [c[3:] for c in summary.columns if c.startswith("rc_") and not c.endswith(("_lo", "_hi"))]
    fig, axes = plt.subplots(len(mappings), 1, figsize=(min(14, max(8, 0.7 * len(opts))), 2.8 * len(mappings)),
                             squeeze=False, sharey=True)
    for ax, m in zip(axes[:, 0], mappings):
        sub = summary[summary["mapping"] == m].set_index("optimization").reindex(opts)
        width = 0.8 / len(tiers)
        x = np.arange(len(opts))
        for j, t in enumerate(tiers):
            v = sub[f"rc_{t}"].to_numpy(dtype=float) * 100
            lo = sub.get(f"rc_{t}_lo", pd.Series(np.nan, index=sub.index)).to_numpy(dtype=float) * 100
            hi = sub.get(f"rc_{t}_hi", pd.Series(np.nan, index=sub.index)).to_numpy(dtype=float) * 100
            ax.bar(x + (j - (len(tiers) - 1) / 2) * width, np.nan_to_num(v), width, yerr=_yerr(v, lo, hi), capsize=1.5,
                   label="all users" if t == OVERALL else t, color=None if t != OVERALL else "0.5", ecolor="0.3")
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(x, opts if ax is axes[-1, 0] else [""] * len(opts), rotation=40, ha="right")
        ax.set_ylabel(f"{metric.upper()} change (%)")
        ax.set_title(f"{m}: relative {metric.upper()} change per tier vs none (RF² Eq. 1, Figure 8), seed mean "
                     "with 95% interval", fontsize=9)
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


def _summary(results_dir: Path, rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The sweep's ``mdac_summary.csv`` for ``metric`` when it is current, else computed."""
    from rf2.results import mdac_table

    f = results_dir / "mdac_summary.csv"
    if f.exists() and f.stat().st_size > 1:
        try:
            s = pd.read_csv(f)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            s = pd.DataFrame()
        if "metric" in s:
            s = s[s["metric"] == metric]
            if len(s):
                return s
    return mdac_table(rows, metric, scores=results_dir, summary=True)


def plot_results(results_dir: str | Path, out: str | Path | None = None, metric: str = "auc") -> list[Path]:
    """All figures for a results directory; returns the files written."""
    from rf2.results import load_results
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
    summary = _summary(results_dir, rows, metric)
    if summary.empty:
        raise ValueError(f"{results_dir}: no optimised run has its 'none' baseline yet, so there is no MDAC to plot")
    if opts:  # show planned-but-missing runs as missing
        grid = pd.MultiIndex.from_product([opts, mappings], names=["optimization", "mapping"]).to_frame(index=False)
        summary = grid.merge(summary, on=["optimization", "mapping"], how="left")
    written = [plot_mdac(summary, out / f"mdac_{metric}.png", mappings, opts, metric=metric),
               plot_tier_change(summary.dropna(subset=["mdac"]), out / f"tier_change_{metric}.png", mappings, opts, metric)]
    if (results_dir / "tiers").is_dir():
        written.append(plot_tier_items(results_dir / "tiers", out / "tier_items.png", mappings))
    return written
