"""Full-catalogue ranking evaluation (NDCG@20 / Recall@20 over every item) on MovieLens-1M
(implicit), against one training round, in one run. Three ways, on the same trained model:

* ``grid``: what rf2 does since 1 December: NCF/HeteNCF score a user x item grid (the first layer
  split into a user part and an item part, ``rf2.models.ncf.mlp_grid``) and the top K come from a
  partition (``rf2.evaluation.ranking._smallest_keys``);
* ``pairs``: the model's ``forward`` on every concatenated (user, item) row (the model's
  ``score_grid`` hidden), with the partition top K;
* ``before``: pairs, with the full stable sort for the top K (the code before 1 December).

    RF2_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/bench_ranking.py [ncf|hetencf] [THREADS=1]
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch

import rf2.evaluation.ranking as ranking
from rf2.config import RunConfig
from rf2.simulation import Simulation


class Pairs(torch.nn.Module):
    """The model without its grid scorer: every (user, item) pair is a row of ``forward``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, X):
        return self.model(X)


def main(model: str = "ncf", threads: int = 1) -> None:
    torch.set_num_threads(threads)
    options = {"sizes": [8, 16, 32], "hidden": [8, 8]} if model == "hetencf" else {}
    cfg = RunConfig(dataset="ml-1m-implicit", model=model, model_options=options, clients_per_round=256,
                    max_rounds=1, ranking_k=20, client_optimizer="adam", client_lr=0.001)
    sim = Simulation(cfg, progress=False)
    epoch, chosen = next(iter(sim.schedule()))
    t = time.perf_counter()
    sim.train_round(0, epoch, chosen)
    round_s = time.perf_counter() - t
    ds, enc, k, excl = sim.dataset, sim.encoder, cfg.ranking_k, cfg.ranking_exclusion
    full_sort = ranking._smallest_keys

    def before_top_k(key, m):
        return np.argsort(key, axis=1, kind="stable")[:, :m]

    out = {}
    for name, m in (("grid", sim.model), ("pairs", Pairs(sim.model)), ("before", Pairs(sim.model))):
        ranking._smallest_keys = before_top_k if name == "before" else full_sort
        t = time.perf_counter()
        out[name] = ranking.ranking_by_user(m, ds, enc, k=k, exclude=excl)
        print(f"{name:7s} {time.perf_counter() - t:6.2f} s  ({len(out[name])} users)", flush=True)
        out[name + "_s"] = time.perf_counter() - t
    ranking._smallest_keys = full_sort
    for name in ("pairs", "before"):
        diff = np.abs(out[name].to_numpy() - out["grid"].to_numpy()).max()
        print(f"max |{name} - grid| over the per-user metrics: {diff:.2e}")
    print(f"{model}, {threads} thread(s): one training round (256 clients) {round_s:.2f} s; ranking "
          f"{out['grid_s']:.2f} s (grid) vs {out['pairs_s']:.2f} s (pairs, {out['pairs_s'] / out['grid_s']:.1f}x) vs "
          f"{out['before_s']:.2f} s (before, {out['before_s'] / out['grid_s']:.1f}x)")


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["ncf"]), *[int(a) for a in sys.argv[2:3]])
