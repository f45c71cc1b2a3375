"""Paper scale on two cores, SYNTHETIC: a population of MovieLens-20M's size (138,000 users, 27,000
items, 18.7M events; `synthetic`, labelled so everywhere), DLRM, K = 100, the first R rounds (one
epoch = 1,380 rounds) of `none` (the summed path: client updates summed before they are computed)
and of the optimisations that need each client's own update (Quant, Prune, QuantS: the per-client
path), in one process, one after another: train and evaluation seconds, and each per-client
path's train time as a ratio to `none`'s. ``none/masked`` is `none` with the click history pooled
the way it was before 1 December (gather ``[B, 50, D]``, mask, sum: ``rf2.models.base._masked_pool``)
instead of one ``embedding_bag``, so that ratio is measured in the same run too. The dataset comes through the dataset cache (generated
once, then memory-mapped: rf2/data/cache.py).

    RF2_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/bench_paper_scale.py [ROUNDS=138] [THREADS=1] [CACHE=/tmp/rf2-cache] [SPECS=comma-separated]
"""
from __future__ import annotations

import resource
import sys
import time

import torch

from rf2.config import RunConfig
from rf2.data.cache import load
from rf2.simulation import Simulation

ML20M_SIZE = {"n_users": 138000, "n_items": 27000, "events_per_user": 230}
SPECS = ("none", "none/masked", "quant:1:2:4", "quant:1:2:4:noise=gaussian", "prune:1:2:4", "quants:1:2:4")


def main(rounds: int = 138, threads: int = 1, cache: str = "/tmp/rf2-cache", specs: str = ",".join(SPECS)) -> None:
    import rf2.models.base as base

    plain = base._plain
    torch.set_num_threads(threads)
    t = time.perf_counter()
    ds = load("synthetic", ML20M_SIZE, cache)
    print(f"SYNTHETIC population of MovieLens-20M size: {ds.n_users:,} users, {ds.n_events:,} events; "
          f"loaded in {time.perf_counter() - t:.1f} s (cache {cache})", flush=True)
    train = {}
    for spec in specs.split(","):
        opt, _, variant = spec.partition("/")
        base._plain = (lambda table: False) if variant == "masked" else plain
        cfg = RunConfig(dataset="synthetic", dataset_options=ML20M_SIZE, model="dlrm", clients_per_round=100,
                        max_rounds=rounds, optimization=opt)
        res = Simulation(cfg, dataset=ds, progress=False).run()
        base._plain = plain
        train[spec] = res.seconds["train"]
        ratio = "" if spec == "none" else f" = {train[spec] / train['none']:.2f}x none's"
        print(f"{spec:27s} train {res.seconds['train']:6.1f} s{ratio}, eval {res.seconds['eval']:5.1f} s, "
              f"overall AUC {res.metrics.overall['auc']:.4f}", flush=True)
    print(f"{rounds} rounds, {threads} thread(s); peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]), *sys.argv[3:5])
