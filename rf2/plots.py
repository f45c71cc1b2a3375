"""The paper's figures from a results directory (PNG by default), each readable without the code:
its title names the dataset, model, K (clients per round), epochs and seeds; its axes say their
units; a key under the plot says what every optimisation spec means per tier (from the parsed
optimisation, :meth:`optimizations.base.Optimization.describe`); panels that are compared share
their y-scale; a planned run that failed or is missing is an ``x`` (never a zero bar) and legends
list only the series that are drawn.

* :func:`plot_mdac` — MDAC per optimisation, bars grouped by tier mapping (RF² Figure 6/7): the
  MDAC of the seed-mean tier changes with its paired-bootstrap interval, the mapping's noise floor
  as a dash, cells not above the floor hatched.
* :func:`plot_tier_change` — each tier's relative change per optimisation with its interval, one
  panel per mapping (RF² Figure 8).
* :func:`plot_tradeoff` — MDAC against the overall relative change, one point per optimisation, one
  panel per mapping: the accuracy–fairness trade-off that an MDAC bar alone hides.
* :func:`plot_tier_items` — each tier's share of the top items, one panel per mapping (Figure 4).

:func:`make_figures` builds them all for a results directory; :func:`plot_results` saves them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rf2.evaluation import OVERALL

TIER_ORDER = ("low", "mid", "high")
MISSING_COLOR = "crimson"


def _plt():
    """pyplot, on the file-only Agg backend unless pyplot is already in use (a notebook keeps its own)."""
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
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


def tier_names(summary: pd.DataFrame) -> list[str]:
    """The tiers of a summary's ``rc_<tier>`` columns, low to high (without ``overall``)."""
    tiers = [c[3:] for c in summary.columns if c.startswith("rc_") and not c.endswith(("_lo", "_hi"))]
    return _order([t for t in tiers if t != OVERALL], TIER_ORDER)


def _values(frame: pd.DataFrame, col: str) -> list:
    if col not in frame:
        return []
    return [v for v in dict.fromkeys(frame[col].dropna().tolist())]


def describe_setup(frame: pd.DataFrame, n_seeds: int | None = None) -> str:
    """``"ml-100k · dlrm · K = 16 clients/round · 1 epoch · 5 seeds"`` from result rows or a
    summary (the columns ``dataset``, ``model``, ``clients_per_round``, ``epochs`` and ``seed`` or
    ``n_seeds``); ``n_seeds`` (e.g. the sweep's planned seeds) overrides the count."""
    def join(col, fmt=str):
        vals = _values(frame, col)
        return "/".join(fmt(v) for v in vals) if vals else "?"

    if n_seeds is None:
        if "seed" in frame and frame["seed"].notna().any():
            n_seeds = int(frame["seed"].nunique())
        elif "n_seeds" in frame and frame["n_seeds"].notna().any():
            n_seeds = int(frame["n_seeds"].max())
    k = join("clients_per_round", lambda v: f"{int(v)}")
    ep = _values(frame, "epochs")
    epochs = "/".join(f"{int(e)}" for e in ep) if ep else "?"
    plural = "" if ep == [1] else "s"
    seeds = "?" if n_seeds is None else f"{n_seeds} seed{'' if n_seeds == 1 else 's'}"
    return f"{join('dataset')} · {join('model')} · K = {k} clients/round · {epochs} epoch{plural} · {seeds}"


def describe_spec(spec: str, tiers=TIER_ORDER) -> str:
    """What an optimisation spec means per tier, from its parsed object (``quant:1:2:8`` ->
    ``"low/mid/high: 4/8/32 bits"``); the spec itself when it cannot be parsed."""
    from optimizations import parse_optimization

    try:
        return parse_optimization(spec).describe(tuple(tiers) or TIER_ORDER)
    except (ValueError, TypeError):
        return str(spec)


def spec_key(optimizations, tiers=TIER_ORDER) -> list[str]:
    """``"spec: meaning"`` lines for a figure's key or a report."""
    return [f"{o}: {describe_spec(o, tiers)}" for o in optimizations]


def _figure(n_panels: int, ncols: int, panel_w: float, panel_h: float, key_lines: list[str], sharex=False):
    """A figure of ``n_panels`` panels (sharing y, and x if ``sharex``) over a key of the specs."""
    plt = _plt()
    nrows = -(-n_panels // ncols)
    key_cols = 1 if ncols * panel_w < 11 else 2
    key_h = 0.3 + 0.19 * (-(-len(key_lines) // key_cols)) if key_lines else 0.0
    fig = plt.figure(figsize=(ncols * panel_w, nrows * panel_h + key_h), layout="constrained")
    gs = fig.add_gridspec(nrows + (1 if key_lines else 0), ncols,
                          height_ratios=[panel_h] * nrows + ([key_h] if key_lines else []))
    axes = []
    for i in range(n_panels):
        first = axes[0] if axes else None
        axes.append(fig.add_subplot(gs[i // ncols, i % ncols], sharey=first, sharex=first if sharex else None))
    if key_lines:
        from matplotlib.patches import Patch

        kax = fig.add_subplot(gs[nrows, :])
        kax.axis("off")
        blank = [Patch(visible=False)] * len(key_lines)
        kax.legend(blank, key_lines, loc="upper left", ncol=key_cols, fontsize=8, frameon=False, handlelength=0,
                   handletextpad=0, columnspacing=2.5, title="optimisation specs, per tier (low → high)",
                   title_fontsize=8, alignment="left", borderaxespad=0)
    return fig, axes


def _missing_handle(label="missing / failed run"):
    from matplotlib.lines import Line2D

    return Line2D([], [], ls="", marker="x", color=MISSING_COLOR, markersize=8, mew=2, label=label)


def _mark_missing(ax, xs, y=0.0) -> None:
    xs = np.asarray(xs, dtype=float)
    if len(xs):
        ax.plot(xs, np.full(len(xs), y), ls="", marker="x", color=MISSING_COLOR, markersize=8, mew=2, zorder=5, clip_on=False)


def _pct(s: pd.Series | None, n: int) -> np.ndarray:
    return np.full(n, np.nan) if s is None else s.to_numpy(dtype=float) * 100


def plot_mdac(summary: pd.DataFrame, path: str | Path | None = None, mappings=None, optimizations=None, title: str = "",
              metric: str = "auc", setup: str | None = None):
    """MDAC per optimisation and mapping from :func:`rf2.results.mdac_table` ``(summary=True)``:
    bars = MDAC of the seed-mean per-tier changes with their bootstrap interval; a grey dash on each
    bar = that mapping's noise floor (``none`` retrained, same tiers); bars whose interval does not
    clear the floor are hatched and pale; a missing cell is an ``x`` (never a zero bar).

    MDAC (RF² Eq. 2) is the largest minus the smallest tier's relative change, so its unit is
    percentage points (pp) of relative change."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    plt = _plt()
    mappings = _order(summary["mapping"], mappings or [])
    opts = _order(summary["optimization"], optimizations or [])
    setup = describe_setup(summary) if setup is None else setup
    cell = summary.set_index(["optimization", "mapping"])
    get = lambda col, o, m: float(cell[col].get((o, m), np.nan)) if col in cell else np.nan  # noqa: E731
    fig, (ax,) = _figure(1, 1, min(16, max(9, 0.38 * len(opts) * max(len(mappings), 1))), 4.6,
                         spec_key(opts, tier_names(summary)))
    width = 0.8 / max(len(mappings), 1)
    x = np.arange(len(opts))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles, any_within, any_floor, any_missing = [], False, False, False
    for j, m in enumerate(mappings):
        xs = x + (j - (len(mappings) - 1) / 2) * width
        ys = np.array([get("mdac", o, m) for o in opts]) * 100
        lo = np.array([get("mdac_lo", o, m) for o in opts]) * 100
        hi = np.array([get("mdac_hi", o, m) for o in opts]) * 100
        floor = np.array([get("floor", o, m) for o in opts]) * 100
        within = np.array([str(cell["verdict"].get((o, m), "")) == "within noise" if "verdict" in cell else False
                           for o in opts])
        have = np.isfinite(ys)
        c = colors[j % len(colors)]
        solid, pale = have & ~within, have & within
        err = _yerr(ys, lo, hi)
        if solid.any():
            ax.bar(xs[solid], ys[solid], width, color=c, yerr=err[:, solid], capsize=2, ecolor="0.2")
        if pale.any():
            ax.bar(xs[pale], ys[pale], width, color=c, alpha=0.35, hatch="//", edgecolor=c, yerr=err[:, pale],
                   capsize=2, ecolor="0.2")
            any_within = True
        if have.any():
            handles.append(Patch(color=c, label=m))
        ok = np.isfinite(floor) & have
        if ok.any():
            ax.hlines(floor[ok], xs[ok] - width / 2, xs[ok] + width / 2, colors="0.3", linestyles="-", lw=2.2)
            any_floor = True
        _mark_missing(ax, xs[~have])
        any_missing |= bool((~have).any())
    if any_floor:
        handles.append(Line2D([], [], color="0.3", lw=2.2, label="noise floor (none retrained)"))
    if any_within:
        handles.append(Patch(facecolor="white", edgecolor="0.4", hatch="//",
                             label="not above the floor (exceeds it in < 97.5% of paired replicates)"))
    if any_missing:
        handles.append(_missing_handle())
    ax.set_xticks(x, opts, rotation=35, ha="right", fontsize=9)
    ax.set_xlabel("optimisation (spec; meaning in the key below)")
    ax.set_ylabel(f"MDAC of {metric.upper()} (pp)")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or f"MDAC of {metric.upper()} per optimisation and tier mapping — {setup}\n"
                          f"MDAC (RF² Eq. 2) = largest − smallest tier's relative {metric.upper()} change, in percentage "
                          "points (pp),\nof the seed-mean tier changes, with its 95% paired-bootstrap interval over users; a bar "
                          "is above the floor\nonly if it exceeds the floor's MDAC in ≥ 97.5% of replicates drawn from the "
                          "same users (a bar over the dash can still be noise)",
                 fontsize=10)
    if handles:
        ax.legend(handles=handles, title="tier mapping", fontsize=8, title_fontsize=8,
                  ncol=min(4, len(handles)), loc="upper right")
    return _save(fig, path)


def plot_tier_change(summary: pd.DataFrame, path: str | Path | None = None, mappings=None, optimizations=None,
                     metric="auc", setup: str | None = None):
    """Each tier's relative change (seed mean, with its bootstrap interval) per optimisation, one
    panel per mapping (RF² Figure 8); panels share the y-axis; a missing cell is an ``x``."""
    plt = _plt()
    mappings = _order(summary["mapping"], mappings or [])
    opts = _order(summary["optimization"], optimizations or [])
    setup = describe_setup(summary) if setup is None else setup
    tiers = tier_names(summary) + ([OVERALL] if f"rc_{OVERALL}" in summary else [])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {t: ("0.55" if t == OVERALL else colors[j % len(colors)]) for j, t in enumerate(tiers)}
    fig, axes = _figure(len(mappings), 1, min(15, max(9, 0.75 * len(opts))), 2.9,
                        spec_key(opts, tier_names(summary)))
    width = 0.8 / max(len(tiers), 1)
    x = np.arange(len(opts))
    for ax, m in zip(axes, mappings):
        sub = summary[summary["mapping"] == m].set_index("optimization").reindex(opts)
        missing_any = False
        for j, t in enumerate(tiers):
            xs = x + (j - (len(tiers) - 1) / 2) * width
            v = _pct(sub.get(f"rc_{t}"), len(opts))
            lo, hi = _pct(sub.get(f"rc_{t}_lo"), len(opts)), _pct(sub.get(f"rc_{t}_hi"), len(opts))
            have = np.isfinite(v)
            if have.any():
                ax.bar(xs[have], v[have], width, yerr=_yerr(v, lo, hi)[:, have], capsize=1.5, ecolor="0.3",
                       color=color[t], label="all users" if t == OVERALL else f"{t} tier")
            _mark_missing(ax, xs[~have])
            missing_any |= bool((~have).any())
        if missing_any:
            ax.add_line(_missing_handle())
        ax.axhline(0, color="black", lw=0.6)
        ax.grid(axis="y", alpha=0.3)
        last = ax is axes[-1]
        ax.set_xticks(x, opts if last else [""] * len(opts), rotation=35, ha="right", fontsize=9)
        if last:
            ax.set_xlabel("optimisation (spec; meaning in the key below)")
        ax.set_ylabel(f"relative {metric.upper()}\nchange vs none (%)")
        ax.set_title(f"tier mapping {m}", fontsize=9, loc="left")
        ax.legend(fontsize=7, ncol=len(tiers) + 1, loc="lower left")
    fig.suptitle(f"Each tier's relative {metric.upper()} change vs none (RF² Eq. 1, Figure 8)\n{setup}\n"
                 "seed mean with its 95% paired-bootstrap interval; same y-scale in every panel", fontsize=10)
    return _save(fig, path)


def _family(spec: str) -> str:
    return str(spec).split(":", 1)[0]


def plot_tradeoff(summary: pd.DataFrame, path: str | Path | None = None, mappings=None, optimizations=None,
                  metric: str = "auc", setup: str | None = None):
    """The accuracy–fairness trade-off: per mapping (one panel each, same axes), every
    optimisation's MDAC (y, pp) against its overall relative change (x, %: all users' metric vs
    ``none``), with the 95 % intervals of both as bars and the mapping's noise floor as a dashed
    line. A low MDAC bought with a large accuracy loss shows up left; missing cells are listed
    under an ``x`` in the panel."""
    plt = _plt()
    mappings = _order(summary["mapping"], mappings or [])
    opts = _order(summary["optimization"], optimizations or [])
    setup = describe_setup(summary) if setup is None else setup
    families = list(dict.fromkeys(_family(o) for o in opts))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^vP*Xh<>p"
    style = {f: (colors[i % len(colors)], markers[i % len(markers)]) for i, f in enumerate(families)}
    ncols = min(3, max(len(mappings), 1))
    fig, axes = _figure(len(mappings), ncols, 5.2, 4.0, spec_key(opts, tier_names(summary)), sharex=True)
    for ax, m in zip(axes, mappings):
        sub = summary[summary["mapping"] == m].set_index("optimization").reindex(opts)
        y = _pct(sub.get("mdac"), len(opts))
        xv = _pct(sub.get(f"rc_{OVERALL}"), len(opts))
        yerr = _yerr(y, _pct(sub.get("mdac_lo"), len(opts)), _pct(sub.get("mdac_hi"), len(opts)))
        xerr = _yerr(xv, _pct(sub.get(f"rc_{OVERALL}_lo"), len(opts)), _pct(sub.get(f"rc_{OVERALL}_hi"), len(opts)))
        drawn = set()
        for i, o in enumerate(opts):
            if not (np.isfinite(y[i]) and np.isfinite(xv[i])):
                continue
            c, mk = style[_family(o)]
            f = _family(o)
            ax.errorbar(xv[i], y[i], xerr=xerr[:, i:i + 1], yerr=yerr[:, i:i + 1], fmt=mk, color=c, ms=6,
                        elinewidth=0.8, capsize=2, alpha=0.9, label=None if f in drawn else f)
            drawn.add(f)
            short = o.split(":", 1)[1] if ":" in o else ""
            if short:
                ax.annotate(short, (xv[i], y[i]), xytext=(4, 3), textcoords="offset points", fontsize=6.5, color="0.25")
        floor = sub["floor"].dropna() * 100 if "floor" in sub else pd.Series(dtype=float)
        if len(floor):
            ax.axhline(float(floor.iloc[0]), color="0.35", ls="--", lw=1, label="noise floor (none retrained)")
        ax.axvline(0, color="black", lw=0.6)
        missing = [o for i, o in enumerate(opts) if not (np.isfinite(y[i]) and np.isfinite(xv[i]))]
        if missing:
            ax.add_line(_missing_handle(f"missing: {', '.join(missing)}" if len(missing) <= 3
                                        else f"missing: {len(missing)} optimisations"))
        ax.grid(alpha=0.3)
        ax.set_title(f"tier mapping {m}", fontsize=9, loc="left")
        ax.set_xlabel(f"overall relative {metric.upper()} change vs none (%)")
        ax.set_ylabel(f"MDAC of {metric.upper()} (pp)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2, loc="best")
    fig.suptitle(f"Accuracy–fairness trade-off: MDAC vs overall {metric.upper()} change per optimisation\n{setup}\n"
                 "seed means with 95% paired-bootstrap intervals; left of 0: accuracy lost; higher: less fair "
                 "across tiers; same axes in every panel", fontsize=10)
    return _save(fig, path)


def plot_tier_items(tiers_dir: str | Path, path: str | Path | None = None, mappings=None, seed: int | None = None):
    """Each tier's share of its clicks going to the top items (RF² Figure 4), one panel per mapping,
    all on one y-scale; the tiers come from the sweep's tier reports (``tiers/*__seed*.csv``)."""
    files = sorted(Path(tiers_dir).glob("*__seed*.csv"))
    if not files:
        raise FileNotFoundError(f"no tier reports in {tiers_dir}")
    top = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    seed = int(top["seed"].min()) if seed is None else seed
    top = top[top["seed"] == seed]
    mappings = _order(top["mapping"], mappings or [])
    dataset = "/".join(str(d) for d in _values(top, "dataset")) or "?"
    fig, axes = _figure(len(mappings), 1, 9, 2.5, [])
    for ax, m in zip(axes, mappings):
        sub = top[top["mapping"] == m]
        share = sub.pivot(index="rank", columns="tier", values="share") * 100
        items = sub.drop_duplicates("rank").set_index("rank")["item"]
        tiers = _order(share.columns, list(TIER_ORDER))
        x = np.arange(len(share))
        width = 0.8 / len(tiers)
        for j, t in enumerate(tiers):
            ax.bar(x + (j - (len(tiers) - 1) / 2) * width, share[t].to_numpy(), width, label=f"{t} tier")
        last = ax is axes[-1]
        ax.set_xticks(x, [f"#{r + 1}\nid {items.get(r, '?')}" if last else "" for r in share.index], fontsize=8)
        if last:
            ax.set_xlabel("most clicked items (popularity rank, item id)")
        ax.set_ylabel("share of the\ntier's clicks (%)")
        ax.set_title(f"tier mapping {m}", fontsize=9, loc="left")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=len(tiers), loc="upper right")
    fig.suptitle(f"Each tier's share of its clicks on the top items (RF² Figure 4) — {dataset}, tiers of seed {seed}; "
                 "same y-scale in every panel", fontsize=10)
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

    if len(rows) and metric not in set(rows["metric"]):
        have = sorted(m for m in rows["metric"].unique() if m == "auc" or "@" in str(m) or m == "log_loss")
        raise ValueError(f"metric {metric!r} is not in {results_dir}'s results; available: {have} "
                         "(ndcg@K/recall@K need ranking_k, loo_* need sampled_k)")
    f = results_dir / "mdac_summary.csv"
    s = pd.DataFrame()
    if f.exists() and f.stat().st_size > 1:
        try:
            s = pd.read_csv(f)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            s = pd.DataFrame()
        s = s[s["metric"] == metric] if "metric" in s else pd.DataFrame()
    if s.empty:
        s = mdac_table(rows, metric, scores=results_dir, summary=True)
    if len(s) and s.duplicated(["optimization", "mapping"]).any():  # cells under several settings (older rf2)
        import sys

        print(f"warning: {results_dir} holds runs under more than one setting for the same mapping and "
              "optimisation; the figures show the last of each (mdac_summary.csv has them all)", file=sys.stderr)
        s = s.drop_duplicates(["optimization", "mapping"], keep="last")
    return s


def load_plan(results_dir: str | Path):
    """The sweep's :class:`~rf2.sweep.SweepSpec` from ``sweep.toml``, or ``None`` without one."""
    from rf2.sweep import SweepSpec

    spec_path = Path(results_dir) / "sweep.toml"
    return SweepSpec.from_toml(spec_path) if spec_path.exists() else None


def figure_data(results_dir: str | Path, metric: str = "auc") -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """``(rows, summary, context)`` for the figures: the finished rows, the cell summary on the
    planned grid (planned-but-missing cells as ``nan``) and ``context`` (mappings, optimisations,
    setup line). Raises ``ValueError`` when there is nothing to draw."""
    from rf2.results import load_results

    results_dir = Path(results_dir)
    spec = load_plan(results_dir)
    mappings = list(spec.mappings) if spec else None
    opts = [o for o in spec.optimization_list if o != "none"] if spec else None
    rows = load_results(results_dir)
    if rows.empty:
        raise ValueError(f"{results_dir}: no finished runs to plot yet")
    summary = _summary(results_dir, rows, metric)
    if summary.empty:
        raise ValueError(f"{results_dir}: no optimised run has its 'none' baseline yet, so there is no MDAC to plot")
    if opts:  # show planned-but-missing runs as missing
        grid = pd.MultiIndex.from_product([opts, mappings], names=["optimization", "mapping"]).to_frame(index=False)
        summary = grid.merge(summary, on=["optimization", "mapping"], how="left")
    setup = describe_setup(rows, n_seeds=len(spec.seeds) if spec else None)
    return rows, summary, {"mappings": mappings, "optimizations": opts, "setup": setup}


def make_figures(results_dir: str | Path, metric: str = "auc") -> dict[str, object]:
    """File name -> matplotlib figure, for every figure of a results directory."""
    results_dir = Path(results_dir)
    _, summary, ctx = figure_data(results_dir, metric)
    m, o, setup = ctx["mappings"], ctx["optimizations"], ctx["setup"]
    figs = {f"mdac_{metric}.png": plot_mdac(summary, None, m, o, metric=metric, setup=setup),
            f"tradeoff_{metric}.png": plot_tradeoff(summary, None, m, o, metric=metric, setup=setup),
            f"tier_change_{metric}.png": plot_tier_change(summary, None, m, o, metric, setup=setup)}
    if (results_dir / "tiers").is_dir() and any((results_dir / "tiers").glob("*__seed*.csv")):
        figs["tier_items.png"] = plot_tier_items(results_dir / "tiers", None, m)
    return figs


def plot_results(results_dir: str | Path, out: str | Path | None = None, metric: str = "auc") -> list[Path]:
    """All figures for a results directory, written to ``out`` (default ``DIR/plots``); returns the files."""
    results_dir = Path(results_dir)
    out = Path(out) if out else results_dir / "plots"
    return [_save(fig, out / name) for name, fig in make_figures(results_dir, metric).items()]
