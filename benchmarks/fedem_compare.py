"""FedEM against each of its baselines, per tier, with paired intervals over users.

    python benchmarks/fedem_compare.py RESULTS_DIR [--metric loo_hr@10] [--mapping random] [--draws 1000]

For every optimisation of the sweep (``fedem`` and its baselines, ``none`` = FCF under FedAvg)
prints the seed-mean of the per-user metric per tier, and for ``fedem`` the difference to each
baseline: per seed the mean over users of ``metric(fedem) - metric(baseline)`` (same users, same
seed), averaged over seeds, with a 95 % interval from a stratified bootstrap over users (users
resampled within their tier, the same draw for both runs and every seed; paired). Reads the runs'
``*.scores.npz`` (per-user leave-one-out metrics).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from rf2.evaluation.scores import EvalScores


def load(results: Path, mapping: str, metric: str) -> dict[tuple[str, int], pd.Series]:
    """(optimisation, seed) -> per-user metric (index user), for un-replicated runs of ``mapping``."""
    import json

    out, s = {}, None
    for rec in sorted((results / "runs").glob("*.json")):  # finished runs' records (the sweep may still run)
        r = json.loads(rec.read_text())
        cfg = r.get("config", {})
        if cfg.get("mapping") != mapping or cfg.get("replicate", 0):
            continue
        path = rec.with_suffix(".scores.npz")
        if not path.exists():
            continue
        r = {"optimization": cfg["optimization"], "seed": cfg["seed"]}
        s = EvalScores.from_bytes(path.read_bytes())
        if metric not in s.ranking:
            continue
        out[(r["optimization"], int(r["seed"]))] = pd.Series(s.ranking[metric], index=s.ranking_user)
    if s is None:
        raise SystemExit(f"no finished run of mapping {mapping!r} with scores in {results}")
    return out, s.user_tier, s.tier_names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--metric", default="loo_hr@10")
    ap.add_argument("--mapping", default="random")
    ap.add_argument("--draws", type=int, default=1000)
    args = ap.parse_args()
    runs, user_tier, names = load(args.results, args.mapping, args.metric)
    opts = sorted({o for o, _ in runs}, key=lambda o: (o != "fedem", o))
    seeds = sorted({s for _, s in runs})
    users = np.array(sorted(set.intersection(*(set(v.index) for v in runs.values()))))
    tier = user_tier[users]
    groups = {n: np.flatnonzero(tier == t) for t, n in enumerate(names)}
    groups["overall"] = np.arange(users.size)
    rng = np.random.default_rng(0)
    draws = {g: [rng.choice(ix, ix.size) for _ in range(args.draws)] for g, ix in groups.items() if g != "overall"}
    draws["overall"] = [np.concatenate([draws[g][i] for g in names]) for i in range(args.draws)]
    print(f"{args.metric}, mapping {args.mapping}, {len(seeds)} seeds {seeds}, {users.size} users; "
          f"seed-mean of the per-user mean, by tier\n")
    print("| optimisation | " + " | ".join(groups) + " |\n|---|" + "---|" * len(groups))
    for o in opts:
        have = [s for s in seeds if (o, s) in runs]
        vals = [np.mean([runs[(o, s)].loc[users].to_numpy()[ix].mean() for s in have]) for ix in groups.values()]
        print(f"| {o} ({len(have)} seeds) | " + " | ".join(f"{v:.4f}" for v in vals) + " |")
    if "fedem" not in opts:
        return
    print(f"\nfedem minus each baseline, {args.metric} (absolute), seed-mean [95 % paired user bootstrap]\n")
    print("| baseline | " + " | ".join(groups) + " |\n|---|" + "---|" * len(groups))
    for o in opts:
        if o == "fedem":
            continue
        have = [s for s in seeds if (o, s) in runs and ("fedem", s) in runs]
        if not have:
            continue
        diff = np.mean([runs[("fedem", s)].loc[users].to_numpy() - runs[(o, s)].loc[users].to_numpy() for s in have], axis=0)
        cells = []
        for g, ix in groups.items():
            boot = np.array([diff[d].mean() for d in draws[g]])
            lo, hi = np.quantile(boot, [0.025, 0.975])
            mark = "**" if lo > 0 or hi < 0 else ""
            cells.append(f"{mark}{diff[ix].mean():+.4f} [{lo:+.4f}, {hi:+.4f}]{mark}")
        print(f"| {o} ({len(have)} seeds) | " + " | ".join(cells) + " |")
    print("\nbold: the interval excludes 0.")


if __name__ == "__main__":
    main()
