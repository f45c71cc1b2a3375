"""Fairness sweeps: tier mappings x optimisations x seeds, resumable, one tidy file per run.

A sweep is a base :class:`~rf2.config.RunConfig` plus three axes. Every (mapping, seed) pair gets
one ``none`` baseline, shared by all its optimisations for MDAC (RF² Eq. 2). The sweep file::

    [sweep]
    mappings = ["random", "dirichlet:5000", "dirichlet:5", "dirichlet:0.5", "dirichlet:0.05", "dirichlet:0.005"]
    optimizations = ["paper-table1"]      # presets expand; "none" is always added
    seeds = [0]

    [run]                                 # any RunConfig setting except the three axes
    dataset = "ml-100k"
    clients_per_round = 16

Results directory::

    sweep.toml            the sweep as run (provenance)
    runs/<id>.csv         tidy rows of one finished run (tier, metric, value, ... + every config field)
    runs/<id>.json        its config, timings and round log summary
    runs/<id>.failed.json a run that raised (divergence, bad input): the reason; retried next time
    tiers/<mapping>__seed<k>.csv   each tier's share of the top items (for Figure 4)
    tiers/summary.csv     heterogeneity numbers per mapping and seed
    results.csv, mdac.csv combined tables, rewritten at the end of every sweep

Each run's files are written to a temporary name and renamed into place, so a killed sweep never
leaves a half-written run behind; ``rf2 sweep`` again skips every run whose ``runs/<id>.csv``
exists and runs only what is missing.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from optimizations import expand_optimizations
from tier_mapping import PAPER_MAPPINGS, map_tiers, parse_mapping
from tier_mapping.report import report_for

from rf2.config import RunConfig, load_toml

AXES = ("mapping", "optimization", "seed")


@dataclass(frozen=True)
class SweepSpec:
    base: dict = field(default_factory=dict)  # RunConfig settings shared by every run
    mappings: tuple[str, ...] = PAPER_MAPPINGS
    optimizations: tuple[str, ...] = ("paper-table1",)
    seeds: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        clash = sorted(set(self.base) & set(AXES))
        if clash:
            raise ValueError(f"sweep: {clash} are sweep axes; set them in [sweep] (mappings, optimizations, seeds), not in [run]")
        if not self.mappings or not self.optimizations or not self.seeds:
            raise ValueError("sweep: mappings, optimizations and seeds must each list at least one value")
        for m in self.mappings:
            parse_mapping(m)
        for s in self.seeds:
            if not isinstance(s, int) or isinstance(s, bool):
                raise ValueError(f"sweep: seeds must be integers, got {s!r}")
        expand_optimizations(list(self.optimizations))
        RunConfig.from_dict(dict(self.base))  # validates every base setting now, not mid-sweep

    @property
    def optimization_list(self) -> list[str]:
        opts = expand_optimizations(list(self.optimizations))
        return ["none"] + [o for o in opts if o != "none"]

    def configs(self) -> list[RunConfig]:
        return [
            RunConfig.from_dict({**self.base, "mapping": m, "optimization": o, "seed": s})
            for s in self.seeds for m in self.mappings for o in self.optimization_list
        ]

    @classmethod
    def from_toml(cls, path: str | Path) -> "SweepSpec":
        data = load_toml(path)
        sweep = data.get("sweep", {})
        unknown = sorted(set(sweep) - {"mappings", "optimizations", "seeds"})
        if unknown:
            raise ValueError(f"{path}: unknown [sweep] key(s) {unknown}; use mappings, optimizations, seeds")
        extra = sorted(set(data) - {"sweep", "run"})
        if extra:
            raise ValueError(f"{path}: unknown table(s) {extra}; a sweep file has [sweep] and [run]")
        kw = {k: tuple(v) if isinstance(v, list) else (v,) for k, v in sweep.items()}
        return cls(base=dict(data.get("run", {})), **kw)

    def to_toml(self) -> str:
        def val(v):
            if isinstance(v, str):
                return json.dumps(v)
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, (list, tuple)):
                return "[" + ", ".join(val(x) for x in v) + "]"
            if isinstance(v, dict):
                return "{" + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + "}"
            return repr(v)

        lines = ["[sweep]", f"mappings = {val(self.mappings)}", f"optimizations = {val(self.optimizations)}",
                 f"seeds = {val(self.seeds)}", "", "[run]"]
        lines += [f"{k} = {val(v)}" for k, v in self.base.items()]
        return "\n".join(lines) + "\n"


def run_id(cfg: RunConfig) -> str:
    digest = hashlib.sha1(cfg.to_json().encode()).hexdigest()[:10]
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "-", f"{cfg.mapping}__{cfg.optimization}__seed{cfg.seed}")
    return f"{slug}__{digest}"


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class SweepSummary:
    total: int
    skipped: int
    finished: int
    failed: list[tuple[str, str]]
    seconds: float
    out: Path


class Sweep:
    def __init__(self, spec: SweepSpec, out: str | Path, progress: bool = True):
        self.spec = spec
        self.out = Path(out)
        self.progress = progress
        self._datasets: dict = {}
        self._tiers: dict = {}

    def pending(self) -> list[RunConfig]:
        return [c for c in self.spec.configs() if not (self.out / "runs" / f"{run_id(c)}.csv").exists()]

    def _dataset(self, cfg: RunConfig):
        from rf2.data import load_dataset

        key = (cfg.dataset, json.dumps(cfg.dataset_options, sort_keys=True))
        if key not in self._datasets:
            self._datasets[key] = load_dataset(cfg.dataset, **cfg.dataset_options)
        return self._datasets[key]

    def _tier_assignment(self, cfg: RunConfig, ds):
        key = (cfg.dataset, json.dumps(cfg.dataset_options, sort_keys=True), cfg.mapping, cfg.n_tiers, cfg.seed)
        if key not in self._tiers:
            tiers = map_tiers(ds, cfg.mapping, cfg.n_tiers, seed=cfg.seed)
            self._tiers[key] = tiers
            self._write_tier_report(cfg, ds, tiers)
        return self._tiers[key]

    def _write_tier_report(self, cfg: RunConfig, ds, tiers) -> None:
        rep = report_for(ds, tiers)
        d = self.out / "tiers"
        d.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^A-Za-z0-9._=-]+", "-", f"{cfg.mapping}__seed{cfg.seed}")
        top = rep.top_items.assign(mapping=cfg.mapping, seed=cfg.seed, dataset=cfg.dataset)
        atomic_write(d / f"{slug}.csv", top.to_csv(index=False))
        summary_path = d / "summary.csv"
        row = pd.DataFrame([{**rep.summary(), "seed": cfg.seed, "dataset": cfg.dataset}])
        if summary_path.exists():
            old = pd.read_csv(summary_path)
            old = old[~((old["mapping"] == cfg.mapping) & (old["seed"] == cfg.seed) & (old["dataset"] == cfg.dataset))]
            row = pd.concat([old, row], ignore_index=True)
        atomic_write(summary_path, row.to_csv(index=False))

    def run(self) -> SweepSummary:
        from rf2.simulation import Simulation

        t0 = time.perf_counter()
        (self.out / "runs").mkdir(parents=True, exist_ok=True)
        atomic_write(self.out / "sweep.toml", self.spec.to_toml())
        configs = self.spec.configs()
        todo = self.pending()
        failed: list[tuple[str, str]] = []
        bar = tqdm(todo, desc="sweep", unit="run", disable=not self.progress, dynamic_ncols=True)
        done = 0
        for cfg in bar:
            rid = run_id(cfg)
            bar.set_postfix_str(f"{cfg.mapping} | {cfg.optimization} | seed {cfg.seed}", refresh=True)
            fail_path = self.out / "runs" / f"{rid}.failed.json"
            try:
                ds = self._dataset(cfg)
                tiers = self._tier_assignment(cfg, ds)
                res = Simulation(cfg, dataset=ds, tiers=tiers, progress=self.progress).run()
            except Exception as exc:  # recorded, the sweep goes on
                reason = f"{type(exc).__name__}: {exc}"
                failed.append((rid, reason))
                atomic_write(fail_path, json.dumps({"config": cfg.to_dict(), "error": reason,
                                                    "traceback": traceback.format_exc()}, indent=2))
                continue
            info = {"id": rid, "config": cfg.to_dict(), "seconds": res.seconds, "peak_rss_mb": res.peak_rss_mb,
                    "rounds": len(res.rounds), "final_train_loss": float(res.rounds["train_loss"].iloc[-1])}
            atomic_write(self.out / "runs" / f"{rid}.json", json.dumps(info, indent=2))
            atomic_write(self.out / "runs" / f"{rid}.csv", res.rows().assign(run_id=rid).to_csv(index=False))
            if fail_path.exists():
                fail_path.unlink()
            done += 1
        bar.close()
        from rf2.results import load_results, mdac_table

        rows = load_results(self.out)
        if len(rows):
            atomic_write(self.out / "results.csv", rows.to_csv(index=False))
            atomic_write(self.out / "mdac.csv", mdac_table(rows).to_csv(index=False))
        return SweepSummary(len(configs), len(configs) - len(todo), done, failed, time.perf_counter() - t0, self.out)
