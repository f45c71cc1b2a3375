"""Reading results back: tidy rows, relative change (Eq. 1) and MDAC (Eq. 2) against baselines.

Every run's rows carry its full config, so a baseline is found by matching every config column
except ``optimization`` (and ``run_id``) with a run whose optimisation is ``none``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rf2.config import RunConfig
from rf2.evaluation import OVERALL

RESULT_COLUMNS = ("tier", "metric", "value", "n_events", "n_users")


def config_columns() -> list[str]:
    return list(RunConfig.__dataclass_fields__)


def load_results(path: str | Path) -> pd.DataFrame:
    """All finished runs of a results directory (or one CSV) as one tidy frame.

    Only runs committed by :class:`rf2.store.ResultsStore` count (their record vouches for the
    CSV's bytes); a directory from an older rf2 raises :class:`rf2.store.ResultsFormatError`."""
    from rf2.store import ResultsStore, check_format

    path = Path(path)
    if path.is_file():
        return pd.read_csv(path)
    if not (path / "runs").is_dir():
        raise FileNotFoundError(f"{path} is not a results directory (no runs/ folder); run `rf2 sweep` first")
    check_format(path)
    files = sorted(ResultsStore(path).finished().values())
    if not files:
        return pd.DataFrame(columns=[*RESULT_COLUMNS, *config_columns(), "run_id"])
    return with_config_defaults(pd.concat([pd.read_csv(f) for f in files], ignore_index=True))


def with_config_defaults(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows written before a setting existed get its default (the value those runs used), so
    baselines still pair with their runs and no group is dropped for a missing key."""
    defaults = RunConfig().to_dict()
    for k, v in defaults.items():
        if isinstance(v, (dict, list)):
            continue
        if k not in rows.columns:
            rows[k] = v
        elif rows[k].isna().any():
            rows[k] = rows[k].fillna(v)
    return rows


def load_failures(path: str | Path) -> pd.DataFrame:
    import json

    from rf2.store import warn_damaged

    rows = []
    for f in sorted((Path(path) / "runs").glob("*.failed.json")):
        try:
            info = json.loads(f.read_text(encoding="utf-8"))
            rows.append({**{k: info["config"].get(k) for k in ("mapping", "optimization", "seed")},
                         "error": info["error"]})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            warn_damaged(f, f"{type(exc).__name__}: {exc}", "left out of the failures")
    return pd.DataFrame(rows, columns=["mapping", "optimization", "seed", "error"])


def _pairs(rows: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Every run paired with its baseline: one row per optimised run (``kind = "run"``) and per
    noise-floor replicate of ``none`` (``kind = "floor"``), with per-tier values of both."""
    m = rows[rows["metric"] == metric]
    if m.empty:
        return pd.DataFrame(), [], []
    m = m.copy()
    if "replicate" not in m.columns:
        m["replicate"] = 0
    if "run_id" not in m.columns:
        m["run_id"] = ""
    keys = [c for c in config_columns() if c in m.columns and c not in ("optimization", "replicate")]
    wide = m.pivot_table(index=keys + ["optimization", "replicate", "run_id"], columns="tier", values="value",
                         aggfunc="first").reset_index()
    tiers = [c for c in wide.columns if c not in keys + ["optimization", "replicate", "run_id"]]
    tier_order = [t for t in ("low", "mid", "high") if t in tiers] + sorted(t for t in tiers if t not in ("low", "mid", "high", OVERALL))
    is_none = wide["optimization"] == "none"
    base = wide[is_none & (wide["replicate"] == 0)].drop(columns=["optimization", "replicate"])
    runs = wide[~is_none & (wide["replicate"] == 0)].assign(kind="run")
    floor = wide[is_none & (wide["replicate"] > 0)].assign(kind="floor")
    merged = pd.concat([runs, floor], ignore_index=True).merge(base, on=keys, how="left", suffixes=("", "_base"))
    return merged, keys, tier_order


def _with_changes(merged: pd.DataFrame, keys: list[str], tier_order: list[str], metric: str) -> pd.DataFrame:
    out = merged[keys + ["optimization", "replicate", "kind", "run_id", "run_id_base"]].copy()
    for t in tier_order + [OVERALL]:
        out[f"{metric}_{t}"] = merged[t] if t in merged else np.nan
        out[f"rc_{t}"] = (merged[t] - merged[f"{t}_base"]) / merged[f"{t}_base"] if t in merged else np.nan
    rc = out[[f"rc_{t}" for t in tier_order]]
    out["mdac"] = rc.max(axis=1) - rc.min(axis=1)
    out.loc[rc.isna().any(axis=1), "mdac"] = np.nan  # missing baseline or tier: no MDAC, not zero
    return out


def _scores_loader(scores):
    """``scores``: a results directory, a ``run_id -> EvalScores`` mapping or callable, or None."""
    if scores is None:
        return lambda rid: None
    if isinstance(scores, (str, Path)):
        from rf2.store import ResultsStore

        store = ResultsStore(scores)
        cache: dict = {}

        def load(rid):
            if rid not in cache:
                cache[rid] = store.scores(rid) if isinstance(rid, str) and rid else None
            return cache[rid]

        return load
    if callable(scores):
        return scores
    return lambda rid: scores.get(rid)


def _scored_pairs(g: pd.DataFrame, load) -> tuple[list, list, list]:
    """``(pairs, row labels, draw keys)`` of the rows of ``g`` whose run and baseline both have
    scores; the draw key is the baseline's run id, so every run against one baseline shares its
    user draws."""
    pairs, idx, keys = [], [], []
    for i, r in g.iterrows():
        o, b = load(r["run_id"]), load(r["run_id_base"])
        if o is not None and b is not None:
            pairs.append((o, b))
            idx.append(i)
            keys.append(str(r["run_id_base"]))
    return pairs, idx, keys


def mdac_table(rows: pd.DataFrame, metric: str = "auc", scores=None, n_boot: int = 1000, level: float = 0.95,
               boot_seed: int = 0, summary: bool = False) -> pd.DataFrame:
    """MDAC per optimised run or per cell over seeds; see :func:`mdac_tables`."""
    per_run, cells = mdac_tables(rows, metric, scores, n_boot, level, boot_seed)
    return cells if summary else per_run


def mdac_tables(rows: pd.DataFrame, metric: str = "auc", scores=None, n_boot: int = 1000, level: float = 0.95,
                boot_seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(per_run, summary)``: MDAC per optimised run (``summary=False``) or per cell over seeds (``summary=True``).

    Per run: its per-tier relative change (Eq. 1, ``rc_<tier>``), the overall change, and MDAC
    (Eq. 2: the largest difference between two tiers' relative changes). With ``scores`` (a results
    directory, or ``run_id -> EvalScores``) every MDAC also gets a paired-bootstrap interval
    (``mdac_lo``, ``mdac_hi`` at ``level``), the noise floor of its mapping and seed (``floor``: the
    MDAC of ``none`` retrained, same tiers; see :mod:`rf2.evaluation.uncertainty`), a ``verdict``
    (:func:`~rf2.evaluation.uncertainty.floor_test`: the MDAC exceeds the floor's in at least
    97.5 % of paired replicates) and ``p_within`` (the share of replicates in which it does not).
    Runs without scores get ``nan`` intervals and the verdict ``no scores``.

    ``summary``: one row per (mapping, optimisation, other settings) over its seeds:
    ``n_seeds``, the seed-mean per-tier changes ``rc_<tier>`` with ``rc_<tier>_lo/_hi``, ``mdac``
    (MDAC of the seed-mean changes) with ``mdac_lo/_hi``, ``mean_mdac`` (mean of per-seed MDACs)
    with its interval, ``floor`` / ``floor_hi`` (the noise floor combined the same way), ``verdict``,
    ``p_within``.
    Values are fractions (0.05 = 5 %)."""
    merged, keys, tier_order = _pairs(rows, metric)
    if merged.empty:
        return pd.DataFrame(), pd.DataFrame()
    per_run = _with_changes(merged, keys, tier_order, metric)
    load = _scores_loader(scores)
    from rf2.evaluation.uncertainty import NO_FLOOR, NO_SCORES, cell_estimate, floor_test

    cell_keys = [k for k in keys if k != "seed"]
    cells = []
    per_run["mdac_lo"] = per_run["mdac_hi"] = np.nan
    per_run = per_run.sort_values("seed", kind="stable")  # seeds in the same order in every cell (paired draws)
    for (_, g) in per_run.groupby(cell_keys + ["optimization", "kind"], sort=False, dropna=False):
        pairs, idx, draw_keys = _scored_pairs(g, load)
        est = None
        if pairs:
            try:
                est = cell_estimate(pairs, metric, n_boot, level, boot_seed, keys=draw_keys)
            except ValueError:
                est = None
        if est is not None:
            per_run.loc[idx, "mdac_lo"] = est.seed_mdac_lo
            per_run.loc[idx, "mdac_hi"] = est.seed_mdac_hi
        seeds = [int(per_run.loc[i, "seed"]) for i in idx]
        cells.append((g, est, seeds, idx))

    # the floor of each (settings, seed) and of each settings cell, with its replicates
    floor_seed: dict = {}
    floor_cell: dict = {}
    for g, est, seeds, idx in cells:
        if g.iloc[0]["kind"] != "floor":
            continue
        ck = tuple(g.iloc[0][k] for k in cell_keys)
        floor_cell[ck] = (g, est)
        for i, r in g.iterrows():  # every floor run's MDAC, with its replicates where it has scores
            reps = est.seed_mdac_reps[idx.index(i)] if est is not None and i in idx else None
            floor_seed[ck + (int(r["seed"]),)] = (r["mdac"], reps)
    per_run["floor"] = np.nan
    per_run["verdict"] = NO_SCORES
    per_run["p_within"] = np.nan
    for g, est, seeds, idx in cells:
        if g.iloc[0]["kind"] != "run":
            continue
        ck = tuple(g.iloc[0][k] for k in cell_keys)
        for i, r in g.iterrows():
            f = floor_seed.get(ck + (int(r["seed"]),))
            per_run.loc[i, "floor"] = f[0] if f else np.nan
            if i in idx and est is not None:
                reps = est.seed_mdac_reps[idx.index(i)]
                v, p = floor_test(reps, f[1] if f else None, level)
                per_run.loc[i, ["verdict", "p_within"]] = [v, p]
    runs = per_run[per_run["kind"] == "run"].sort_index()
    runs = runs.drop(columns=["kind", "replicate", "run_id_base"]).reset_index(drop=True)

    out = []
    for g, est, seeds, idx in cells:
        first = g.iloc[0]
        if first["kind"] == "floor":
            continue
        row = {k: first[k] for k in cell_keys + ["optimization"]}
        row["n_seeds"] = int(g["seed"].nunique())
        rc_cols = [f"rc_{t}" for t in tier_order + [OVERALL]]
        complete = est is not None and est.n_seeds == len(g)
        if complete:
            for j, c in enumerate(rc_cols):
                row[c], row[f"{c}_lo"], row[f"{c}_hi"] = est.rc[j], est.rc_lo[j], est.rc_hi[j]
            row.update(mdac=est.mdac, mdac_lo=est.mdac_lo, mdac_hi=est.mdac_hi, mean_mdac=est.mean_mdac,
                       mean_mdac_lo=est.mean_mdac_lo, mean_mdac_hi=est.mean_mdac_hi)
        else:  # no (or not all) scores: point estimates only
            mean_rc = g[rc_cols].mean()
            for c in rc_cols:
                row[c], row[f"{c}_lo"], row[f"{c}_hi"] = mean_rc[c], np.nan, np.nan
            t = mean_rc[[f"rc_{t}" for t in tier_order]]
            row.update(mdac=float(t.max() - t.min()) if t.notna().all() else np.nan, mdac_lo=np.nan, mdac_hi=np.nan,
                       mean_mdac=float(g["mdac"].mean()), mean_mdac_lo=np.nan, mean_mdac_hi=np.nan)
        fg, fest = floor_cell.get(tuple(first[k] for k in cell_keys), (None, None))
        row["floor"] = fest.mdac if fest is not None else np.nan
        row["floor_hi"] = fest.mdac_hi if fest is not None else np.nan
        if not complete:
            row["verdict"], row["p_within"] = NO_SCORES, np.nan
        elif fest is None or fest.n_seeds != est.n_seeds:
            row["verdict"], row["p_within"] = NO_FLOOR, np.nan
        else:
            row["verdict"], row["p_within"] = floor_test(est.mdac_reps, fest.mdac_reps, level)
        out.append(row)
    return runs, pd.DataFrame(out)


def noise_floor_table(rows: pd.DataFrame, metric: str = "auc", scores=None, n_boot: int = 1000, level: float = 0.95,
                      boot_seed: int = 0) -> pd.DataFrame:
    """The noise floor per mapping (and other settings) over seeds: MDAC of ``none`` retrained with
    the same tiers against ``none`` (``mdac``, ``mdac_lo``, ``mdac_hi``, ``mean_mdac``, ...)."""
    merged, keys, tier_order = _pairs(rows, metric)
    if merged.empty:
        return pd.DataFrame()
    floor_only = merged[merged["kind"] == "floor"]
    if floor_only.empty:
        return pd.DataFrame()
    cell_keys = [k for k in keys if k != "seed"]
    load = _scores_loader(scores)
    from rf2.evaluation.uncertainty import cell_estimate

    per = _with_changes(floor_only, keys, tier_order, metric)
    out = []
    for _, g in per.groupby(cell_keys, sort=False, dropna=False):
        pairs, _, draw_keys = _scored_pairs(g, load)
        row = {k: g.iloc[0][k] for k in cell_keys}
        row["n_seeds"] = int(g["seed"].nunique())
        if len(pairs) == len(g):
            est = cell_estimate(pairs, metric, n_boot, level, boot_seed, keys=draw_keys)
            row.update(mdac=est.mdac, mdac_lo=est.mdac_lo, mdac_hi=est.mdac_hi, mean_mdac=est.mean_mdac,
                       mean_mdac_lo=est.mean_mdac_lo, mean_mdac_hi=est.mean_mdac_hi)
        else:
            row.update(mdac=np.nan, mdac_lo=np.nan, mdac_hi=np.nan, mean_mdac=float(g["mdac"].mean()),
                       mean_mdac_lo=np.nan, mean_mdac_hi=np.nan)
        out.append(row)
    return pd.DataFrame(out)


def mdac_pivot(mdac: pd.DataFrame, mappings: list[str] | None = None, optimizations: list[str] | None = None) -> pd.DataFrame:
    """Optimisation x mapping table of MDAC (%), mean over seeds, in sweep order."""
    if mdac.empty:
        return pd.DataFrame()
    t = mdac.pivot_table(index="optimization", columns="mapping", values="mdac", aggfunc="mean") * 100
    if optimizations:
        t = t.reindex([o for o in optimizations if o in t.index])
    if mappings:
        t = t[[m for m in mappings if m in t.columns]]
    return t


def summary_pivot(summary: pd.DataFrame, mappings: list[str] | None = None, optimizations: list[str] | None = None,
                  metric: str | None = None) -> pd.DataFrame:
    """Optimisation x mapping table of strings ``MDAC [lo, hi]`` in %, marked ``*`` when above the
    noise floor, with a last row ``noise floor`` (from :func:`mdac_table` ``(summary=True)``)."""
    if summary.empty:
        return pd.DataFrame()
    if metric is not None and "metric" in summary:
        summary = summary[summary["metric"] == metric]

    def cell(r) -> str:
        if not np.isfinite(r["mdac"]):
            return "-"
        if not np.isfinite(r.get("mdac_lo", np.nan)):
            return f"{100 * r['mdac']:.2f}"
        mark = " *" if r.get("verdict") == "above floor" else ""
        return f"{100 * r['mdac']:.2f} [{100 * r['mdac_lo']:.2f}, {100 * r['mdac_hi']:.2f}]{mark}"

    s = summary.assign(text=[cell(r) for _, r in summary.iterrows()])
    t = s.pivot_table(index="optimization", columns="mapping", values="text", aggfunc="first")
    if optimizations:
        t = t.reindex([o for o in optimizations if o in t.index])
    if mappings:
        t = t[[m for m in mappings if m in t.columns]]
    if "floor" in s:
        fl = s.groupby("mapping")["floor"].first()
        hi = s.groupby("mapping")["floor_hi"].first() if "floor_hi" in s else pd.Series(dtype=float)
        t.loc["noise floor"] = [(f"{100 * fl[m]:.2f}" + (f" (<= {100 * hi[m]:.2f})" if m in hi and np.isfinite(hi[m]) else ""))
                                if m in fl and np.isfinite(fl[m]) else "-" for m in t.columns]
    return t.fillna("-")
