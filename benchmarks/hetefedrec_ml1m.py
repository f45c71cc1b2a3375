"""HeteFedRec's Table II (Fed-NCF, ML) and Table IV on MovieLens-1M, every configuration.

The heterogeneous configurations share one model (``hetencf`` with sizes 8/16/32) and could be a
sweep, but the homogeneous baselines need other sizes, so this script runs each configuration
on its own (``benchmarks/hetefedrec_ml1m.toml`` plus the configuration's overrides) and writes
one tidy CSV per configuration into OUT; re-running skips finished ones.

    RF2_DATA_DIR=../shared/data python benchmarks/hetefedrec_ml1m.py run OUT [--epochs 20]
        [--client-optimizer sgd --client-lr 1.0] [--seed 1] [--only "HeteFedRec" "All Small"]
        [--config benchmarks/hetefedrec_ml1m_protocol.toml --local-epochs 1 --local-valid-fraction 0]
    python benchmarks/hetefedrec_ml1m.py table OUT     # the markdown table of every CSV under OUT
    python benchmarks/hetefedrec_ml1m.py table OUT --by-tier   # NDCG@20 per size group (tier)

``--config`` picks the sweep file whose ``[run]`` settings every configuration starts from (default
``hetefedrec_ml1m.toml``, the first reproduction; ``hetefedrec_ml1m_protocol.toml`` is the paper's
§V protocol, issue 14). ``table`` reads every rf2 result CSV under OUT (also ``rf2 sweep``
directories, whose noise-floor replicates it leaves out, and ``rf2 run --out`` files) and names each
row by its optimisation and model sizes.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
TOML = HERE / "hetefedrec_ml1m.toml"
H = "hetefedrec:8,16,32"

#: (label, optimization, model sizes), in the order of the paper's tables
CONFIGS = [
    ("All Small", "hetefedrec:8", [8]),
    ("All Large", "hetefedrec:32", [32]),
    ("All Large/Exclusive", "hetefedrec:32:exclusive=on", [32]),
    ("Standalone", f"{H}:standalone=on:udl=off:ddr=0:kd=off", [8, 16, 32]),
    ("Clustered FedRec", f"{H}:agg=clustered:udl=off:ddr=0:kd=off", [8, 16, 32]),
    ("Directly Aggregate (w/o RESKD, DDR, UDL)", f"{H}:kd=off:ddr=0:udl=off", [8, 16, 32]),
    ("HeteFedRec w/o RESKD, DDR", f"{H}:kd=off:ddr=0", [8, 16, 32]),
    ("HeteFedRec w/o RESKD", f"{H}:kd=off", [8, 16, 32]),
    ("HeteFedRec", H, [8, 16, 32]),
]
#: `none` on hetencf 8/16/32 trains everyone at N = 32 with plain NCF's loss: All Large
ALIASES = {("none", (8, 16, 32)): "All Large", ("none", (32,)): "All Large", ("none", (8,)): "All Small",
           (f"{H}:ddr=0.1", (8, 16, 32)): "HeteFedRec, DDR α=0.1",
           (f"{H}:kd=off:ddr=0.1", (8, 16, 32)): "HeteFedRec w/o RESKD, DDR α=0.1"}


def slug(label: str) -> str:
    """A file name for ``label`` (letters, digits, ``._-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_")


def label_of(optimization: str, sizes) -> str:
    key = (optimization, tuple(sizes))
    for label, opt, s in CONFIGS:
        if (opt, tuple(s)) == key:
            return label
    return ALIASES.get(key, f"{optimization} (sizes {list(sizes)})")


def run(out: Path, overrides: dict, only: list[str] | None, toml: Path = TOML) -> None:
    from rf2.config import RunConfig
    from rf2.simulation import Simulation

    from rf2.config import load_toml

    out.mkdir(parents=True, exist_ok=True)
    data = load_toml(toml)
    mapping = data["sweep"]["mappings"][0]  # the sweep file's tier mapping (activity:5:3:2: the size groups)
    base = RunConfig.from_dict({**data["run"], "mapping": mapping}).replace(**overrides)
    unknown = sorted(set(only or []) - {c[0] for c in CONFIGS})
    if unknown:
        sys.exit(f"unknown configuration(s) {unknown}; choose from {[c[0] for c in CONFIGS]}")
    by_label = {c[0]: c for c in CONFIGS}
    todo = [by_label[label] for label in only] if only else CONFIGS  # in the order asked
    for label, opt, sizes in todo:
        path = out / (slug(label) + ".csv")
        if path.exists():
            print(f"{label}: done ({path})")
            continue
        cfg = base.replace(optimization=opt, model_options={**base.model_options, "sizes": sizes})
        t = time.perf_counter()
        result = Simulation(cfg).run()
        rows = result.rows()
        rows["seconds"] = time.perf_counter() - t
        tmp = path.with_suffix(".tmp")
        rows.to_csv(tmp, index=False)
        tmp.replace(path)  # a finished configuration appears whole or not at all
        print(f"{label}: {time.perf_counter() - t:.0f} s -> {path}")


def load_rows(paths: list[Path], seed: int | None = None) -> pd.DataFrame:
    """Every rf2 result row under ``paths`` (of ``seed`` only, if given), labelled with its
    configuration."""
    from rf2.results import load_results, with_config_defaults

    frames = []
    for p in paths:
        if p.is_file():
            frames.append(pd.read_csv(p))
            continue
        stores = sorted({f.parent for f in p.rglob("rf2-results.json")})  # `rf2 sweep` directories: their runs
        frames += [load_results(d) for d in stores]
        frames += [pd.read_csv(f) for f in sorted(p.rglob("*.csv")) if not any(d in f.parents for d in stores)]
    frames = [f for f in frames if len(f) and {"metric", "tier", "optimization"} <= set(f.columns)]
    if not frames:
        sys.exit(f"no finished rf2 runs under {', '.join(map(str, paths))}: give result CSVs or results directories")
    rows = pd.concat(frames, ignore_index=True)
    rows = with_config_defaults(rows)  # older files lack newer settings
    if "replicate" in rows.columns:  # a sweep's noise-floor runs (`none` retrained) are not configurations
        rows = rows[rows["replicate"].fillna(0) == 0]
    rows["sizes"] = rows["model_options"].map(lambda s: tuple(ast.literal_eval(s)["sizes"]))
    rows["configuration"] = [label_of(o, s) for o, s in zip(rows["optimization"], rows["sizes"])]
    return rows if seed is None else rows[rows["seed"] == seed]


KEYS = ["configuration", "client_optimizer", "client_lr", "epochs", "local_epochs", "train_negatives"]


def _ordered(wide: pd.DataFrame) -> pd.DataFrame:
    order = {label: i for i, (label, _, _) in enumerate(CONFIGS)}
    wide = wide.reset_index()
    if "mapping" in wide.columns:  # last, after the metrics
        wide = wide[[c for c in wide.columns if c != "mapping"] + ["mapping"]]
    wide["_o"] = wide["configuration"].map(lambda c: order.get(c, len(order)))
    return wide.sort_values([*KEYS[1:], "_o", "configuration"], kind="stable").drop(columns="_o")


def table(paths: list[Path], seed: int | None = None) -> pd.DataFrame:
    """One row per configuration (and client optimiser, lr, epochs): overall NDCG@20, Recall@20,
    AUC and upload MB (means over seeds, or of ``seed`` only)."""
    rows = load_rows(paths, seed)
    rows = rows[rows["tier"] == "overall"]
    wide = rows.pivot_table(index=KEYS, columns="metric", values="value", aggfunc="mean")
    cols = [c for c in ("ndcg@20", "recall@20", "auc", "upload_mb") if c in wide.columns]
    wide = wide[cols]
    ndcg = rows[rows["metric"] == "ndcg@20"].groupby(KEYS)["value"]
    if "ndcg@20" in cols:
        wide.insert(1, "ndcg@20 std", ndcg.std())  # over seeds (nan with one)
    wide["seeds"] = rows.groupby(KEYS)["seed"].nunique()
    return _ordered(wide)


def tier_table(paths: list[Path], metric: str = "ndcg@20", baseline: str = "All Large",
               seed: int | None = None) -> pd.DataFrame:
    """``metric`` per tier (with ``activity`` mappings: per size group), its relative change
    against ``baseline`` run the same way (RF² Eq. 1) and the MDAC over tiers (Eq. 2), in %.
    With several seeds: the per-tier means, and the MDAC of those means (or ``seed`` only)."""
    rows = load_rows(paths, seed)
    rows = rows[rows["metric"] == metric]
    wide = rows.pivot_table(index=[*KEYS, "mapping"], columns="tier", values="value", aggfunc="mean")
    tiers = [t for t in ("low", "mid", "high") if t in wide.columns] or [c for c in wide.columns if c != "overall"]
    wide = wide[[*tiers, "overall"]]
    base = wide.xs(baseline, level="configuration", drop_level=False) if baseline in wide.index.get_level_values(0) else None
    out = wide.copy()
    if base is not None:
        ref = base.droplevel("configuration")
        rel = []
        for idx, row in wide.iterrows():
            key = idx[1:]
            rel.append(100 * (row[tiers] - ref.loc[key, tiers]) / ref.loc[key, tiers] if key in ref.index else row[tiers] * float("nan"))
        rel = pd.DataFrame(rel, index=wide.index)
        out["MDAC % vs " + baseline] = rel.max(axis=1) - rel.min(axis=1)
    return _ordered(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--epochs", type=int)
    r.add_argument("--client-optimizer", choices=["sgd", "adam"])
    r.add_argument("--client-lr", type=float)
    r.add_argument("--seed", type=int)
    r.add_argument("--only", nargs="+")
    r.add_argument("--config", type=Path, default=TOML, help="sweep file of the base [run] settings (default: %(default)s)")
    r.add_argument("--local-epochs", type=int)
    r.add_argument("--local-valid-fraction", type=float)
    t = sub.add_parser("table")
    t.add_argument("paths", type=Path, nargs="+")
    t.add_argument("--by-tier", action="store_true", help="NDCG@20 per tier (size group) and MDAC vs All Large")
    t.add_argument("--seed", type=int, help="only this seed's runs (default: means over seeds)")
    t.add_argument("--plot", type=Path, help="also draw NDCG@20 per size group and configuration to this PNG")
    a = ap.parse_args()
    if a.cmd == "run":
        overrides = {k: v for k, v in (("epochs", a.epochs), ("client_optimizer", a.client_optimizer),
                                       ("client_lr", a.client_lr), ("seed", a.seed), ("local_epochs", a.local_epochs),
                                       ("local_valid_fraction", a.local_valid_fraction)) if v is not None}
        if not a.config.is_file():
            sys.exit(f"--config {a.config}: no such file; give a sweep TOML such as {TOML}")
        run(a.out, overrides, a.only, a.config)
    else:
        print(markdown(tier_table(a.paths, seed=a.seed) if a.by_tier else table(a.paths, a.seed)))
        if a.plot:
            plot_groups(tier_table(a.paths, seed=a.seed), a.plot)
            print(f"wrote {a.plot}")


def plot_groups(frame: pd.DataFrame, path: Path, metric: str = "NDCG@20") -> None:
    """Grouped bars: one group per configuration, one bar per tier (size group) and overall; one
    panel per (client optimiser, lr, epochs)."""
    from rf2.plots import _plt

    plt = _plt()
    tiers = [c for c in ("low", "mid", "high", "overall") if c in frame.columns]
    panels = list(frame.groupby([*KEYS[1:], "mapping"], sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False, sharey=True)
    for ax, (key, sub) in zip(axes[0], panels):
        opt, lr, epochs, local_epochs, negs, mapping = key
        by_size = str(mapping).startswith("activity")
        names = {"low": "fewest interactions (low)" if by_size else "low", "mid": "mid",
                 "high": "most interactions (high)" if by_size else "high", "overall": "overall"}
        x = np.arange(len(sub))
        width = 0.8 / len(tiers)
        for j, t in enumerate(tiers):
            ax.bar(x + (j - (len(tiers) - 1) / 2) * width, sub[t], width, label=names[t])
        ax.set_xticks(x, sub["configuration"], rotation=35, ha="right", fontsize=8)
        drawn = f", 1:{negs:g} negatives re-drawn" if negs else ""
        ax.set_title(f"client {opt} lr {lr:g}, {epochs} epochs x {local_epochs} local{drawn}\ntiers {mapping}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(metric)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"HeteFedRec on MovieLens-1M: {metric} per tier")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(frame: pd.DataFrame) -> str:
    def cell(v):
        return f"{v:,.0f}" if isinstance(v, float) and abs(v) >= 100 else f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
