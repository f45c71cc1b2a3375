"""The summed path on whole tables vs on the rows a round touches (``tables_read_by_index_only``,
1 December), in one process, alternating, on the SYNTHETIC Taobao-size population (846,811 items:
a whole-table gradient per round is 54 MB) and the SYNTHETIC MovieLens-20M-size one (27,001
items). `none`, DLRM, K = 100, one thread; R rounds each way (training only, no evaluation), after
2 warm-up rounds. Reads (or first writes) the dataset cache.

    .venv/bin/python benchmarks/bench_touched_rows.py [taobao|ml20m] [ROUNDS=100] [CACHE]
"""
from __future__ import annotations

import resource
import sys
import time

import torch

from rf2.config import RunConfig
from rf2.data.cache import load
from rf2.models.dlrm import DLRM
from rf2.simulation import Simulation

SIZES = {
    "taobao": ({"n_users": 1141729, "n_items": 846811, "events_per_user": 27.5, "min_events": 1, "click_rate": 0.05},
               0.01, "/tmp/rf2-cache-taobao"),
    "ml20m": ({"n_users": 138000, "n_items": 27000, "events_per_user": 230}, 0.1, "/tmp/rf2-cache"),
}


def main(which: str = "taobao", rounds: int = 100, cache: str | None = None) -> None:
    torch.set_num_threads(1)
    options, server_lr, default_cache = SIZES[which]
    ds = load("synthetic", options, cache or default_cache)
    cfg = RunConfig(dataset="synthetic", dataset_options=options, model="dlrm", clients_per_round=100,
                    server_lr=server_lr)
    sim = Simulation(cfg, dataset=ds, progress=False)
    sched = iter(sim.schedule())
    for i in range(2):
        sim.train_round(i, *next(sched))
    took = {True: 0.0, False: 0.0}
    for i in range(2, 2 + 2 * rounds):
        flag = bool(i % 2)
        DLRM.tables_read_by_index_only = flag
        epoch, chosen = next(sched)
        t = time.perf_counter()
        sim.train_round(i, epoch, chosen)
        took[flag] += time.perf_counter() - t
    DLRM.tables_read_by_index_only = True
    print(f"SYNTHETIC {which}: {ds.n_users:,} users, {ds.n_items:,} items; {rounds} rounds each, alternating: "
          f"touched rows {took[True] / rounds * 1e3:.0f} ms/round, whole tables {took[False] / rounds * 1e3:.0f} "
          f"ms/round ({took[False] / took[True]:.2f}x); peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main(*sys.argv[1:2], *[int(a) for a in sys.argv[2:3]], *sys.argv[3:4])
