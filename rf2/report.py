"""``rf2 report``: one self-contained HTML page for a results directory, to attach to a message.

The page holds, in order: what was run (the setup line and ``sweep.toml``, every optimisation
spec in words), the MDAC table per metric with its 95 % intervals, verdicts and the noise-floor
row (``mdac_summary.csv``), every figure of :mod:`rf2.plots` embedded as a base64 PNG, the tier
diagnostics (``tiers/summary.csv``: users, training events and their share, JSD, Cramér's V per
mapping), each tier's simulated system cost (``upload_mb``, ``compute_h``, ``participations``,
``dropped`` of the result rows), the failed runs (``runs/*.failed.json``) and the planned runs
that are missing.

Self-contained: no scripts, no external style sheets, fonts or images, no network requests; every
piece of text from the directory (names, specs, error messages) is escaped with
:func:`html.escape`. Everything here is a pure function of the directory except
:func:`write_report`, which writes the page.
"""
from __future__ import annotations

import base64
import html
import io
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from rf2.evaluation import OVERALL
from rf2.plots import TIER_ORDER, _order, describe_spec, load_plan, tier_names

COST_METRICS = {  # result-row metric -> column heading (totals over the run, per tier)
    "upload_mb": "upload (MB)",
    "compute_h": "compute (h, simulated)",
    "participations": "participations (client-rounds)",
    "dropped": "dropped (client-rounds)",
}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1500px; box-sizing: border-box;
       color: #222; line-height: 1.4; padding: 0 16px; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.86em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; vertical-align: top; }
th { background: #f2f2f2; } td.text { text-align: left; } td.name, th.name { text-align: left; font-family: ui-monospace, monospace; }
td.above { background: #fde2d4; font-weight: 600; } td.within { color: #555; } td.none { color: #999; }
tr.floor td { background: #eef2f7; font-style: italic; }
small.v { display: block; white-space: nowrap; font-size: 0.8em; font-weight: normal; color: #555; }
pre { background: #f7f7f7; padding: 8px 12px; border: 1px solid #ddd; overflow-x: auto; font-size: 0.86em; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; max-width: 75em; } .bad { color: #a40000; } .ok { color: #1a6b1a; }
nav a { margin-right: 1em; } div.wide { overflow-x: auto; }
"""


def esc(value) -> str:
    """Any value as HTML-safe text (``<``, ``>``, ``&`` and both quotes escaped)."""
    return html.escape("" if value is None else str(value), quote=True)


def _num(v, fmt: str = "{:.2f}") -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return esc(v)
    return "–" if not np.isfinite(f) else fmt.format(f)


def html_table(frame: pd.DataFrame, name_cols: int = 1, classes: list[list[str]] | None = None,
               row_classes: list[str] | None = None) -> str:
    """A DataFrame as an escaped HTML table (the first ``name_cols`` columns left-aligned as names).
    Cell values are used as text, so format numbers before."""
    head = "".join(f'<th class="{"name" if i < name_cols else ""}">{esc(c)}</th>' for i, c in enumerate(frame.columns))
    body = []
    for r, row in enumerate(frame.itertuples(index=False)):
        tds = []
        for i, v in enumerate(row):
            cls = ["name"] if i < name_cols else [] if isinstance(v, _Html) or _numeric(v) else ["text"]
            if classes is not None:
                cls += [classes[r][i]] if classes[r][i] else []
            tds.append(f'<td class="{" ".join(cls)}">{v if isinstance(v, _Html) else esc(v)}</td>')
        rc = f' class="{esc(row_classes[r])}"' if row_classes and row_classes[r] else ""
        body.append(f"<tr{rc}>{''.join(tds)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _numeric(v) -> bool:
    return isinstance(v, (int, float, np.number)) or bool(re.fullmatch(r"[-+]?[\d,.]+ ?%?|–|-", str(v).strip()))


class _Html(str):
    """Text already escaped and marked up by this module (not escaped again by :func:`html_table`)."""


def png_data_uri(fig, dpi: int = 100) -> str:
    """A matplotlib figure as a ``data:image/png;base64,...`` URI (the figure is closed)."""
    from rf2.plots import _plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    _plt().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# -- sections ------------------------------------------------------------------------------------
def mdac_section(summary: pd.DataFrame, mappings: list[str] | None, opts: list[str] | None) -> str:
    """Per metric: optimisation x mapping cells ``MDAC [lo, hi]`` (pp) with the verdict, the overall
    relative change beside it, and the noise-floor row."""
    if summary.empty:
        return '<p class="note">No MDAC yet: no optimised run has its <code>none</code> baseline.</p>'
    out = []
    metrics = _order(summary["metric"], ["auc"]) if "metric" in summary else [None]
    for metric in metrics:
        s = summary[summary["metric"] == metric] if metric is not None else summary
        ms = _order([*(mappings or []), *s["mapping"]], mappings or [])  # planned first, missing ones too
        os_ = _order([*(opts or []), *s["optimization"]], opts or [])
        cell = s.set_index(["optimization", "mapping"])
        rows, classes = [], []
        for o in os_:
            row, cls = [o, describe_spec(o, tier_names(s))], ["", ""]
            for m in ms:
                if (o, m) not in cell.index:
                    row.append(_Html('<span class="bad">x missing</span>'))
                    cls.append("none")
                    continue
                r = cell.loc[(o, m)]
                r = r.iloc[0] if isinstance(r, pd.DataFrame) else r
                verdict = str(r.get("verdict", ""))
                txt = f"{_num(100 * r['mdac'])}"
                if np.isfinite(float(r.get("mdac_lo", np.nan))):
                    txt += f" [{_num(100 * r['mdac_lo'])}, {_num(100 * r['mdac_hi'])}]"
                ov = r.get(f"rc_{OVERALL}", np.nan)
                txt = esc(txt) + f'<small class="v">{esc(verdict)}; overall {_num(100 * ov, "{:+.2f}")} %</small>'
                row.append(_Html(txt))
                cls.append({"above floor": "above", "within noise": "within"}.get(verdict, "none"))
            rows.append(row)
            classes.append(cls)
        floor_row, floor_cls = ["noise floor", "none retrained, same tiers (MDAC [.., hi])"], ["", ""]
        for m in ms:
            f = s[s["mapping"] == m]
            fl = f["floor"].dropna() if "floor" in f else pd.Series(dtype=float)
            hi = f["floor_hi"].dropna() if "floor_hi" in f else pd.Series(dtype=float)
            floor_row.append(f"{_num(100 * fl.iloc[0])}" + (f" [.., {_num(100 * hi.iloc[0])}]" if len(hi) else "")
                             if len(fl) else "–")
            floor_cls.append("")
        table = pd.DataFrame(rows + [floor_row], columns=["optimisation", "meaning (low/mid/high)", *ms])
        n = int(s["n_seeds"].max()) if "n_seeds" in s and s["n_seeds"].notna().any() else 0
        label = (metric or "metric").upper()
        out.append(
            f"<h3>MDAC of {esc(label)} (percentage points)</h3>"
            f'<p class="note">Each cell: MDAC (RF² Eq. 2, the largest minus the smallest tier\'s relative change) of the '
            f"{n}-seed mean tier changes, [95% paired-bootstrap interval over users]; the verdict against the mapping's "
            "noise floor (<em>above floor</em>, shaded: the MDAC exceeds the floor's in at least 97.5% of paired bootstrap "
            "replicates; <em>within noise</em>: it does not); and the overall relative change of all users vs <code>none</code>. The last row is the noise "
            "floor: the MDAC of <code>none</code> retrained with the same tiers.</p>"
            + html_table(table, name_cols=2, classes=classes + [floor_cls], row_classes=[""] * len(rows) + ["floor"]))
    return "\n".join(out)


def tiers_section(results_dir: Path, mappings: list[str] | None) -> str:
    """Per mapping (mean over seeds): users, training events and their share per tier, JSD, Cramér's V."""
    f = results_dir / "tiers" / "summary.csv"
    if not f.exists():
        return '<p class="note">No tier diagnostics (tiers/summary.csv) in this directory.</p>'
    t = pd.read_csv(f)
    tiers = _order([c[len("users_"):] for c in t.columns if c.startswith("users_")], list(TIER_ORDER))
    cols = {f"users_{x}": f"users {x}" for x in tiers}
    cols |= {f"train_events_{x}": f"train events {x}" for x in tiers}
    cols |= {f"train_event_share_{x}": f"share of train events {x}" for x in tiers}
    cols |= {"mean_jsd": "mean JSD", "cramers_v": "Cramér's V"}
    have = [c for c in cols if c in t]
    g = t.groupby("mapping", sort=False)
    agg = g[have].mean()
    agg = agg.reindex(_order(agg.index, mappings or []))
    n = g["seed"].nunique() if "seed" in t else pd.Series(1, index=agg.index)
    rows = []
    for m, r in agg.iterrows():
        row = [m, int(n.get(m, 1))]
        for c in have:
            row.append(f"{100 * r[c]:.1f} %" if "share" in c else _num(r[c], "{:.3f}") if c in ("mean_jsd", "cramers_v")
                       else f"{r[c]:,.0f}")
        rows.append(row)
    table = pd.DataFrame(rows, columns=["mapping", "seeds", *[cols[c] for c in have]])
    return ('<p class="note">How unequal the tiers are (tier_mapping.report), mean over the seeds\' tier assignments: '
            "users and training events per tier, each tier's share of all training events, the mean Jensen–Shannon "
            "divergence between the tiers' item distributions and Cramér's V of the tier × item table "
            "(0 = independent, 1 = determined).</p>" + html_table(table))


def cost_section(rows: pd.DataFrame, mappings: list[str] | None, opts: list[str] | None) -> str:
    """Per optimisation and tier: simulated upload MB, compute hours, participations and drops (totals
    per run, mean over seeds and mappings), and the same per mapping in a collapsed table."""
    have = [m for m in COST_METRICS if m in set(rows["metric"])]
    if not have:
        return '<p class="note">No system-cost rows in the results.</p>'
    c = rows[rows["metric"].isin(have)]
    if "replicate" in c:
        c = c[c["replicate"].fillna(0) == 0]
    tiers = _order(c["tier"], [*TIER_ORDER, OVERALL])
    order = _order(c["optimization"], ["none", *(opts or [])])

    def table(frame: pd.DataFrame, keys: list[str]) -> str:
        p = frame.pivot_table(index=keys, columns=["metric", "tier"], values="value", aggfunc="mean")
        p = p.reset_index()
        rank = {o: i for i, o in enumerate(order)}
        mrank = {m: i for i, m in enumerate(_order(p["mapping"], mappings or []))} if "mapping" in keys else {}
        sort_key = [(mrank.get(r[("mapping", "")], 0) if mrank else 0, rank.get(r[("optimization", "")], 0))
                    for _, r in p.iterrows()]
        p = p.iloc[sorted(range(len(p)), key=sort_key.__getitem__)]
        head1 = "".join(f'<th class="name" rowspan="2">{esc(k)}</th>' for k in keys)
        head1 += "".join(f'<th colspan="{len(tiers)}">{esc(COST_METRICS[m])}</th>' for m in have)
        head2 = "".join(f"<th>{esc('all' if t == OVERALL else t)}</th>" for _ in have for t in tiers)
        body = []
        for _, r in p.iterrows():
            tds = "".join(f'<td class="name">{esc(r[(k, "")])}</td>' for k in keys)
            for m in have:
                fmt = "{:,.3f}" if m == "compute_h" else "{:,.1f}"
                tds += "".join(f"<td>{_num(r.get((m, t), np.nan), fmt)}</td>" for t in tiers)
            body.append(f"<tr>{tds}</tr>")
        return (f'<div class="wide"><table><thead><tr>{head1}</tr><tr>{head2}</tr></thead>'
                f"<tbody>{''.join(body)}</tbody></table></div>")

    return ('<p class="note">Simulated system cost of each run (rf2.system: per-tier device profiles), totals over the '
            "whole run per tier, mean over seeds and mappings (noise-floor replicates left out). "
            "Participations and drops count client-rounds.</p>" + table(c, ["optimization"])
            + "<details><summary>per mapping</summary>" + table(c, ["mapping", "optimization"]) + "</details>")


def failed_section(failures: pd.DataFrame) -> str:
    if failures.empty:
        return '<p class="ok">No failed runs.</p>'
    f = failures.copy()
    f["error"] = f["error"].map(lambda e: str(e) if len(str(e)) <= 400 else str(e)[:400] + " …")
    return (f'<p class="bad">{len(f)} run(s) failed (recorded in runs/*.failed.json); they are missing from the '
            "tables and figures (x), never counted as zero, and <code>rf2 sweep</code> retries them.</p>"
            + html_table(f, name_cols=2))


def planned_runs(results_dir: Path) -> pd.DataFrame:
    """Every run ``sweep.toml`` plans, with its id and state: ``finished``, ``failed`` or ``missing``."""
    from rf2.store import ResultsStore
    from rf2.sweep import run_id

    spec = load_plan(results_dir)
    if spec is None:
        return pd.DataFrame(columns=["mapping", "optimization", "seed", "replicate", "run_id", "state"])
    finished = set(ResultsStore(results_dir).finished())
    failed = {p.name[: -len(".failed.json")] for p in (results_dir / "runs").glob("*.failed.json")}
    out = []
    for cfg in spec.configs():
        rid = run_id(cfg)
        state = "finished" if rid in finished else "failed" if rid in failed else "missing"
        out.append({"mapping": cfg.mapping, "optimization": cfg.optimization, "seed": cfg.seed,
                    "replicate": cfg.replicate, "run_id": rid, "state": state})
    return pd.DataFrame(out)


def missing_section(plan: pd.DataFrame) -> str:
    if plan.empty:
        return '<p class="note">No sweep.toml: the planned runs are unknown.</p>'
    miss = plan[plan["state"] == "missing"].drop(columns=["state"])
    counts = plan["state"].value_counts()
    head = (f'<p>{len(plan)} planned runs: {counts.get("finished", 0)} finished, {counts.get("failed", 0)} failed, '
            f'{counts.get("missing", 0)} missing (never run or not finished).</p>')
    if miss.empty:
        return head + '<p class="ok">No planned run is missing.</p>'
    miss = miss.assign(replicate=miss["replicate"].map(lambda r: "noise floor" if r else ""))
    return head + '<p class="note">Run <code>rf2 sweep --config DIR/sweep.toml --out DIR</code> again to finish them.</p>' \
        + html_table(miss, name_cols=2)


def figures_section(figures: dict[str, str]) -> str:
    if not figures:
        return '<p class="note">No figures (nothing to draw yet).</p>'
    return "\n".join(f'<figure><img alt="{esc(name)}" src="{uri}"><figcaption class="note">{esc(name)}</figcaption>'
                     "</figure>" for name, uri in figures.items())


# -- the page ------------------------------------------------------------------------------------
def build_report(results_dir: str | Path, metric: str = "auc", figures: bool = True) -> str:
    """The whole page for ``results_dir`` as one HTML string (figures embedded as data URIs)."""
    from rf2 import __version__
    from rf2.plots import _summary, describe_setup, make_figures
    from rf2.results import load_failures, load_results

    results_dir = Path(results_dir)
    spec = load_plan(results_dir)
    mappings = list(spec.mappings) if spec else None
    opts = [o for o in spec.optimization_list if o != "none"] if spec else None
    rows = load_results(results_dir)
    summary_file = results_dir / "mdac_summary.csv"
    if summary_file.exists() and summary_file.stat().st_size > 1:
        summary = pd.read_csv(summary_file)
    elif not rows.empty:
        summary = _summary(results_dir, rows, metric).assign(metric=metric)
    else:
        summary = pd.DataFrame()
    setup = describe_setup(rows, n_seeds=len(spec.seeds) if spec else None) if not rows.empty else "no finished runs"
    plan = planned_runs(results_dir)
    failures = load_failures(results_dir)
    figs: dict[str, str] = {}
    if figures and not rows.empty:
        try:
            figs = {name: png_data_uri(f) for name, f in make_figures(results_dir, metric).items()}
        except ValueError as exc:
            figs = {}
            fig_note = str(exc)
        else:
            fig_note = ""
    else:
        fig_note = "" if figures else "figures left out"
    toml = (results_dir / "sweep.toml").read_text() if (results_dir / "sweep.toml").exists() else "(no sweep.toml)"
    key_opts = opts if opts is not None else _order(summary.get("optimization", pd.Series(dtype=str)), [])
    key = pd.DataFrame([[o, describe_spec(o)] for o in key_opts], columns=["spec", "meaning (low/mid/high tiers)"])
    n_fin = int((plan["state"] == "finished").sum()) if len(plan) else rows["run_id"].nunique() if "run_id" in rows else 0
    status = (f"{n_fin} of {len(plan)} planned runs finished, {len(failures)} failed, "
              f"{int((plan['state'] == 'missing').sum()) if len(plan) else 0} missing") if len(plan) else \
        f"{n_fin} finished runs, {len(failures)} failed"
    sections = [
        ("settings", "What was run",
         f"<p><strong>{esc(setup)}</strong><br>{esc(status)}</p><pre>{esc(toml)}</pre>"
         + (html_table(key, name_cols=2) if len(key) else "")),
        ("mdac", "MDAC with intervals, verdicts and the noise floor", mdac_section(summary, mappings, opts)),
        ("figures", "Figures", (f'<p class="note">{esc(fig_note)}</p>' if fig_note else "") + figures_section(figs)),
        ("tiers", "Tier diagnostics", tiers_section(results_dir, mappings)),
        ("cost", "System cost per tier", cost_section(rows, mappings, opts) if not rows.empty else "<p>No runs.</p>"),
        ("failed", "Failed runs", failed_section(failures)),
        ("missing", "Missing runs", missing_section(plan)),
    ]
    nav = "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title, _ in sections)
    body = "\n".join(f'<section id="{sid}"><h2>{esc(title)}</h2>\n{content}</section>' for sid, title, content in sections)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = f"rf2 report: {results_dir.resolve().name}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n"
            f"<h1>{esc(title)}</h1><p class=\"note\">{esc(setup)} · written {esc(when)} by rf2 {esc(__version__)} from "
            f"<code>{esc(results_dir)}</code></p><nav>{nav}</nav>\n{body}\n</body></html>\n")


def write_report(results_dir: str | Path, out: str | Path | None = None, metric: str = "auc") -> Path:
    """Write :func:`build_report` to ``out`` (default ``DIR/report.html``); returns the path."""
    results_dir = Path(results_dir)
    out = Path(out) if out else results_dir / "report.html"
    page = build_report(results_dir, metric)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
