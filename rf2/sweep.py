"""Fairness sweeps: tier mappings x optimisations x seeds, resumable, one tidy file per run.

A sweep is a base :class:`~rf2.config.RunConfig` plus three axes. Every (mapping, seed) pair gets
one ``none`` baseline, shared by all its optimisations for MDAC (RF² Eq. 2). The sweep file::

    [sweep]
    mappings = ["random", "dirichlet:5000", "dirichlet:5", "dirichlet:0.5", "dirichlet:0.05", "dirichlet:0.005"]
    optimizations = ["paper-table1"]      # presets expand; "none" is always added
    seeds = [0]
    noise_floor = true                    # add `none` retrained with the same tiers per mapping and seed

    [run]                                 # any RunConfig setting except the three axes
    dataset = "ml-100k"
    clients_per_round = 16

Results go to a directory managed by :class:`rf2.store.ResultsStore` (one tidy CSV per run, committed
atomically, one writer at a time, format-versioned; see :mod:`rf2.store` for the layout).
Runs execute through :mod:`rf2.executors` (``local`` processes by default, ``inprocess``, ``ray``);
only the driver writes. ``rf2 sweep`` again runs only what is missing, whatever killed the last one.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from optimizations import expand_optimizations
from tier_mapping import PAPER_MAPPINGS, map_tiers, parse_mapping
from tier_mapping.report import report_for

from rf2.config import RunConfig, load_toml
from rf2.store import ResultsStore

AXES = ("mapping", "optimization", "seed")


@dataclass(frozen=True)
class SweepSpec:
    base: dict = field(default_factory=dict)  # RunConfig settings shared by every run
    mappings: tuple[str, ...] = PAPER_MAPPINGS
    optimizations: tuple[str, ...] = ("paper-table1",)
    seeds: tuple[int, ...] = (0,)
    noise_floor: bool = True  # add `none` retrained with the same tiers (replicate 1) per mapping and seed

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
        if not isinstance(self.noise_floor, bool):
            raise ValueError(f"sweep: noise_floor must be true or false, got {self.noise_floor!r}")
        if "replicate" in self.base:
            raise ValueError("sweep: replicate is set by the sweep (noise_floor = true adds replicate 1 of none); "
                             "remove it from [run]")
        expand_optimizations(list(self.optimizations))
        self.configs()  # validates every run's settings now (e.g. a preset against n_tiers), not mid-sweep

    @property
    def optimization_list(self) -> list[str]:
        opts = expand_optimizations(list(self.optimizations))
        return ["none"] + [o for o in opts if o != "none"]

    def configs(self) -> list[RunConfig]:
        out = []
        for s in self.seeds:
            for m in self.mappings:
                out += [RunConfig.from_dict({**self.base, "mapping": m, "optimization": o, "seed": s})
                        for o in self.optimization_list]
                if self.noise_floor:  # the noise floor: none retrained, same tiers (rf2.evaluation.uncertainty)
                    out.append(RunConfig.from_dict({**self.base, "mapping": m, "optimization": "none", "seed": s,
                                                    "replicate": 1}))
        return out

    @classmethod
    def from_toml(cls, path: str | Path) -> "SweepSpec":
        data = load_toml(path)
        sweep = data.get("sweep", {})
        unknown = sorted(set(sweep) - {"mappings", "optimizations", "seeds", "noise_floor"})
        if unknown:
            raise ValueError(f"{path}: unknown [sweep] key(s) {unknown}; use mappings, optimizations, seeds, noise_floor")
        extra = sorted(set(data) - {"sweep", "run"})
        if extra:
            raise ValueError(f"{path}: unknown table(s) {extra}; a sweep file has [sweep] and [run]")
        kw = {k: tuple(v) if isinstance(v, list) else (v,) for k, v in sweep.items() if k != "noise_floor"}
        if "noise_floor" in sweep:
            kw["noise_floor"] = sweep["noise_floor"]
        return cls(base=dict(data.get("run", {})), **kw)

    def run_settings(self) -> dict:
        """Every run setting but the axes, defaults filled in: what must agree for two sweeps to
        share a results directory."""
        from rf2.config import RunConfig

        d = RunConfig.from_dict({**self.base, "mapping": self.mappings[0], "optimization": "none",
                                 "seed": self.seeds[0]}).to_dict()
        for k in ("mapping", "optimization", "seed", "replicate"):
            d.pop(k, None)
        return d

    def merged_with(self, other: "SweepSpec") -> "SweepSpec":
        """This sweep with ``other``'s axes added (same settings): what a directory then holds."""
        union = lambda a, b: tuple(dict.fromkeys([*a, *b]))  # noqa: E731 -- order kept, first seen first
        return SweepSpec(base=dict(self.base), mappings=union(other.mappings, self.mappings),
                         optimizations=union(other.optimizations, self.optimizations),
                         seeds=union(other.seeds, self.seeds), noise_floor=self.noise_floor or other.noise_floor)

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
                 f"seeds = {val(self.seeds)}", f"noise_floor = {val(self.noise_floor)}", "", "[run]"]
        lines += [f"{k} = {val(v)}" for k, v in self.base.items()]
        return "\n".join(lines) + "\n"


#: settings added after rf2 0.1: left out of a run's id while at their default, so the ids (and
#: finished runs) of existing results directories stay valid. The id is taken over
#: ``RunConfig.to_dict()``, where ``ranking_exclude = "auto"`` is already resolved
#: (``RunConfig.ranking_exclusion``): ``train`` (the default before ``auto``) is left out as
#: before, so ml-100k (or any explicit dataset) keeps its ids; ``ml-1m-implicit`` with ranking
#: resolves to ``train_clicks`` and gets the id a run that spelled ``train_clicks`` out had.
LATER_FIELDS = ("ranking_k", "client_optimizer", "ranking_exclude", "replicate", "sampled_k", "valid_every",
                "select_by", "local_epochs", "local_batch_size", "local_early_stop", "local_early_stop_threshold",
                "train_negatives", "train_negatives_avoid_eval", "local_valid_fraction", "train_negatives_pool")


#: settings that change only speed and memory, never a score: hashed as this fixed value, the one
#: every id was taken with before they left the identity, so ids of existing results stay valid
#: (``eval_batch_size``'s default was 65,536 until 1 December 2026; it is now 8,192, which is ~2x
#: faster and ~0.8 GB lighter at MovieLens-20M size: benchmarks/README.md, issue 15)
PERFORMANCE_FIELDS = {"eval_batch_size": 65536}
#: where a run computes, not what: never part of its id (a sweep may resume on another machine);
#: the device is still recorded in each run's configuration
PLACEMENT_FIELDS = ("device",)


def run_id(cfg: RunConfig) -> str:
    d = cfg.to_dict()
    defaults = RunConfig().to_dict()
    for k in LATER_FIELDS:
        if d.get(k) == defaults[k]:
            d.pop(k)
    d.update(PERFORMANCE_FIELDS)
    for k in PLACEMENT_FIELDS:
        d.pop(k, None)
    digest = hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]
    rep = f"__rep{cfg.replicate}" if cfg.replicate else ""
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "-", f"{cfg.mapping}__{cfg.optimization}__seed{cfg.seed}{rep}")
    return f"{slug}__{digest}"


@dataclass
class SweepSummary:
    total: int
    skipped: int
    finished: int
    failed: list[tuple[str, str]]
    seconds: float
    out: Path
    executor: str = "inprocess"
    tables_seconds: float = 0.0  # combined tables and bootstrap intervals


class Sweep:
    """Runs a :class:`SweepSpec` into a results directory through an executor
    (:mod:`rf2.executors`: ``inprocess``, ``local`` processes, or ``ray``).

    Only this (driver) process writes the directory, holding an exclusive lock on it for the
    whole sweep (:class:`rf2.store.ResultsStore`); every finished run is committed atomically
    the moment it arrives, so killing the sweep at any point loses no finished run.
    """

    def __init__(self, spec: SweepSpec, out: str | Path, progress: bool = True, executor: str = "local",
                 workers: int | None = None, threads: int | None = None, address: str | None = None):
        from rf2.executors import EXECUTORS

        if executor not in EXECUTORS:
            raise ValueError(f"unknown executor {executor!r}; choose one of {list(EXECUTORS)}")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.spec = spec
        self.out = Path(out)
        self.store = ResultsStore(self.out)
        self.progress = progress
        self.executor_name, self.workers, self.threads, self.address = executor, workers, threads, address
        self.executor_start_seconds = 0.0

    def _directory_spec(self) -> SweepSpec:
        """The spec the directory holds after this sweep: refuses other run settings (they would
        share tables with these runs under one heading), else the union of both sweeps' axes."""
        path = self.out / "sweep.toml"
        if not path.exists():
            return self.spec
        try:
            old = SweepSpec.from_toml(path)
        except (ValueError, OSError):
            return self.spec  # an unreadable provenance file is replaced
        a, b = old.run_settings(), self.spec.run_settings()
        diff = [f"{k} {a[k]!r} -> {b[k]!r}" for k in a if a.get(k) != b.get(k)]
        if diff:
            raise ValueError(f"{self.out} holds a sweep with other settings ({'; '.join(diff)}); sweep into another "
                             f"--out, or extend this one with the same [run] settings (rf2 sweep --out {self.out} "
                             "alone reuses its sweep.toml)")
        return self.spec.merged_with(old)

    def pending(self) -> list[RunConfig]:
        done = self.store.finished_ids()
        return [c for c in self.spec.configs() if run_id(c) not in done]

    def _write_tier_reports(self, configs: list[RunConfig]) -> None:
        """Each (dataset, mapping, seed)'s heterogeneity report (Figure 4), computed here."""
        from rf2.data.cache import load

        datasets: dict = {}
        seen = set()
        for cfg in configs:
            key = (cfg.dataset, json.dumps(cfg.dataset_options, sort_keys=True), cfg.mapping, cfg.n_tiers, cfg.seed)
            if key in seen:
                continue
            seen.add(key)
            if key[:2] not in datasets:
                datasets[key[:2]] = load(cfg.dataset, cfg.dataset_options)
            ds = datasets[key[:2]]
            tiers = map_tiers(ds, cfg.mapping, cfg.n_tiers, seed=cfg.seed)
            self.store.write_tier_report(cfg, report_for(ds, tiers))

    def run(self) -> SweepSummary:
        from rf2.executors import make_executor

        t0 = time.perf_counter()
        with self.store.lock():
            self.store.write_spec(self._directory_spec().to_toml())
            configs = self.spec.configs()
            todo = self.pending()
            failed: list[tuple[str, str]] = []
            done = 0
            if todo:
                try:
                    self._write_tier_reports(todo)
                except Exception as exc:  # a bad dataset/mapping fails every run the same way
                    raise RuntimeError(f"sweep: could not prepare the tier reports: {type(exc).__name__}: {exc}") from exc
                executor = make_executor(self.executor_name, self.workers, self.threads, self.address)
                self.executor_start_seconds = getattr(executor, "start_seconds", 0.0)
                bar = tqdm(total=len(todo), desc=f"sweep ({executor.name})", unit="run", disable=not self.progress,
                           dynamic_ncols=True)
                interrupted = True
                try:
                    for outcome in executor.map([c.to_dict() for c in todo], progress=False):
                        cfg = RunConfig.from_dict(outcome.config)
                        rid = run_id(cfg)
                        if outcome.ok:
                            self.store.commit_run(rid, outcome.rows_csv, outcome.info, outcome.scores)
                            done += 1
                        else:
                            self.store.record_failure(rid, cfg.to_dict(), outcome.error, outcome.traceback)
                            failed.append((rid, outcome.error))
                        bar.set_postfix_str(f"{cfg.mapping} | {cfg.optimization} | seed {cfg.seed}", refresh=False)
                        bar.update(1)
                    interrupted = False
                finally:
                    bar.close()
                    executor.close()
                    if interrupted:  # Ctrl-C, SIGTERM or an error: the tables of what finished (a run may be
                        # committed just before the signal lands, before `done` counts it)
                        try:
                            self.store.write_tables()
                        except Exception:  # noqa: BLE001 -- the interrupt's own error is the one to report
                            pass
            tt = time.perf_counter()
            self.store.write_tables()
            tables_s = time.perf_counter() - tt
        return SweepSummary(len(configs), len(configs) - len(todo), done, failed, time.perf_counter() - t0, self.out,
                            self.executor_name, tables_s)
