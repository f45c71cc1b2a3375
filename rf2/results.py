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

    rows = []
    for f in sorted((Path(path) / "runs").glob("*.failed.json")):
        info = json.loads(f.read_text())
        rows.append({**{k: info["config"].get(k) for k in ("mapping", "optimization", "seed")}, "error": info["error"]})
    return pd.DataFrame(rows, columns=["mapping", "optimization", "seed", "error"])


def mdac_table(rows: pd.DataFrame, metric: str = "auc") -> pd.DataFrame:
    """One row per optimised run: its per-tier relative change (Eq. 1, ``rc_<tier>``), the overall
    change, and MDAC (Eq. 2: the largest difference between two tiers' relative changes)."""
    m = rows[rows["metric"] == metric]
    if m.empty:
        return pd.DataFrame()
    keys = [c for c in config_columns() if c in m.columns and c != "optimization"]
    wide = m.pivot_table(index=keys + ["optimization"], columns="tier", values="value", aggfunc="first").reset_index()
    tiers = [c for c in wide.columns if c not in keys + ["optimization"]]
    tier_order = [t for t in ("low", "mid", "high") if t in tiers] + sorted(t for t in tiers if t not in ("low", "mid", "high", OVERALL))
    base = wide[wide["optimization"] == "none"].drop(columns="optimization")
    opt = wide[wide["optimization"] != "none"]
    merged = opt.merge(base, on=keys, how="left", suffixes=("", "_base"))
    out = merged[keys + ["optimization"]].copy()
    for t in tier_order + [OVERALL]:
        out[f"{metric}_{t}"] = merged[t]
        out[f"rc_{t}"] = (merged[t] - merged[f"{t}_base"]) / merged[f"{t}_base"]
    rc = out[[f"rc_{t}" for t in tier_order]]
    out["mdac"] = rc.max(axis=1) - rc.min(axis=1)
    out.loc[rc.isna().any(axis=1), "mdac"] = np.nan  # missing baseline or tier: no MDAC, not zero
    return out.reset_index(drop=True)


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
