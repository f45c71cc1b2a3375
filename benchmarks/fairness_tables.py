"""Markdown tables of a sweep's MDACs with their intervals, the noise floor and the verdicts.

    python benchmarks/fairness_tables.py RESULTS_DIR [--metric auc] [--mapping dirichlet:0.05]

Reads ``mdac_summary.csv`` (written by ``rf2 sweep``; one row per mapping x optimisation, seeds
combined) and prints: the MDAC table (``MDAC [lo, hi]`` in %, **bold** when above the noise floor,
the floor as the last row), the mean of per-seed MDACs, and, for one mapping, each tier's change
with its interval (Figure 8's analogue).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def pct(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{100 * x:.2f}"


def mdac_markdown(s: pd.DataFrame, mappings: list[str], opts: list[str]) -> str:
    head = "| optimisation | " + " | ".join(mappings) + " |\n|---|" + "---|" * len(mappings)
    lines = [head]
    for o in opts:
        cells = []
        for m in mappings:
            r = s[(s["optimization"] == o) & (s["mapping"] == m)]
            if r.empty:
                cells.append("–")
                continue
            r = r.iloc[0]
            txt = f"{pct(r['mdac'])} [{pct(r['mdac_lo'])}, {pct(r['mdac_hi'])}]"
            cells.append(f"**{txt}**" if r["verdict"] == "above floor" else txt)
        lines.append(f"| {o} | " + " | ".join(cells) + " |")
    fl = s.groupby("mapping")["floor"].first()
    flh = s.groupby("mapping")["floor_hi"].first()
    lines.append("| *noise floor* | " + " | ".join(f"*{pct(fl.get(m, np.nan))}* (≤ {pct(flh.get(m, np.nan))})"
                                                  for m in mappings) + " |")
    return "\n".join(lines)


def mean_mdac_markdown(s: pd.DataFrame, mappings: list[str], opts: list[str]) -> str:
    lines = ["| optimisation | " + " | ".join(mappings) + " |", "|---|" + "---|" * len(mappings)]
    for o in opts:
        cells = []
        for m in mappings:
            r = s[(s["optimization"] == o) & (s["mapping"] == m)]
            cells.append("–" if r.empty else f"{pct(r.iloc[0]['mean_mdac'])} [{pct(r.iloc[0]['mean_mdac_lo'])}, "
                                             f"{pct(r.iloc[0]['mean_mdac_hi'])}]")
        lines.append(f"| {o} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tier_markdown(s: pd.DataFrame, mapping: str, opts: list[str]) -> str:
    tiers = [t for t in ("low", "mid", "high", "overall") if f"rc_{t}" in s.columns]
    lines = ["| optimisation | " + " | ".join(tiers) + " | MDAC | verdict |", "|---|" + "---|" * (len(tiers) + 2)]
    sub = s[s["mapping"] == mapping].set_index("optimization")
    for o in opts:
        if o not in sub.index:
            continue
        r = sub.loc[o]
        cells = [f"{pct(r[f'rc_{t}'])} [{pct(r[f'rc_{t}_lo'])}, {pct(r[f'rc_{t}_hi'])}]" for t in tiers]
        lines.append(f"| {o} | " + " | ".join(cells) + f" | {pct(r['mdac'])} | {r['verdict']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results")
    p.add_argument("--metric", default="auc")
    p.add_argument("--mapping", default=None, help="mapping for the per-tier table (default: the last one)")
    a = p.parse_args(argv)
    f = Path(a.results) / "mdac_summary.csv"
    if not f.exists():
        p.error(f"{f} does not exist; run `rf2 sweep ... --out {a.results}` first")
    s = pd.read_csv(f)
    s = s[s["metric"] == a.metric]
    from rf2.sweep import SweepSpec

    spec = SweepSpec.from_toml(Path(a.results) / "sweep.toml")
    mappings = [m for m in spec.mappings if m in set(s["mapping"])]
    opts = [o for o in spec.optimization_list if o in set(s["optimization"])]
    n = int(s["n_seeds"].max())
    print(f"MDAC of {a.metric} (%), MDAC of the {n}-seed mean tier changes [95% interval]; bold = above the noise floor\n")
    print(mdac_markdown(s, mappings, opts))
    print(f"\nMean of the per-seed MDACs (%) [95% interval] ({n} seeds)\n")
    print(mean_mdac_markdown(s, mappings, opts))
    m = a.mapping or mappings[-1]
    print(f"\nEach tier's relative {a.metric} change (%) at {m}, seed mean [95% interval]\n")
    print(tier_markdown(s, m, opts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
