"""The per-client paths (Prune, QuantS, Quant: every client's own update is computed, encoded and
aggregated) against the summed path (`none`: the clients' FedAvg computed as one gradient), in ONE
process, round-robin: round r of every specification runs before round r + 1 of any, so load on a
shared machine hits them alike and the ratios are comparable. SYNTHETIC population of MovieLens-20M
size (138,000 users, 27,000 items, 18.7M events), DLRM, K = 100, one thread, training only (no
evaluation), after 2 warm-up rounds each. Per specification: ms per round, the ratio to `none`,
and where a round's time goes (engine = the clients' updates, encode, aggregate, the rest).

    .venv/bin/python benchmarks/bench_per_client.py [ROUNDS=40] [SPECS=none,prune:1:2:4,...] [CACHE=/tmp/rf2-cache] [HISTORY=50]

HISTORY: the click history's length (`history_maxlen`; 50 is `synthetic`'s default, 10 the RF²
authors' and rf2's MovieLens default).
"""
from __future__ import annotations

import resource
import sys
import time
from collections import defaultdict

import torch

from rf2.config import RunConfig
from rf2.data.cache import load
from rf2.simulation import Simulation

ML20M_SIZE = {"n_users": 138000, "n_items": 27000, "events_per_user": 230}
SPECS = "none,prune:1:2:4,quants:1:2:4,quant:1:2:4:noise=gaussian,quant:1:2:4"


def timed(stages: dict, name: str, fn):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            stages[name] += time.perf_counter() - t
    return wrapper


def main(rounds: int = 40, specs: str = SPECS, cache: str = "/tmp/rf2-cache", history: int = 50) -> None:
    torch.set_num_threads(1)
    options = dict(ML20M_SIZE, **({} if history == 50 else {"history_maxlen": history}))
    ds = load("synthetic", options, cache)
    names = specs.split(",")
    sims, scheds, stages = {}, {}, {}
    for spec in names:
        cfg = RunConfig(dataset="synthetic", dataset_options=options, model="dlrm", clients_per_round=100,
                        optimization=spec)
        sim = Simulation(cfg, dataset=ds, progress=False)
        st = stages[spec] = defaultdict(float)
        sim.engine.client_updates = timed(st, "engine", sim.engine.client_updates)
        for part in ("encode", "aggregate"):
            setattr(sim.optimization, part, timed(st, part, getattr(sim.optimization, part)))
        sims[spec], scheds[spec] = sim, iter(sim.schedule())
    total = {s: 0.0 for s in names}
    for i in range(2 + rounds):
        if i == 2:
            for st in stages.values():
                st.clear()
        for spec in names:
            epoch, chosen = next(scheds[spec])
            t = time.perf_counter()
            sims[spec].train_round(i, epoch, chosen)
            if i >= 2:
                total[spec] += time.perf_counter() - t
    base = total[names[0]]
    print(f"SYNTHETIC MovieLens-20M size ({ds.n_users:,} users, {ds.n_events:,} events, history {history}), DLRM, K = 100, one thread; "
          f"{rounds} rounds each, round-robin; ms per round (ratio to {names[0]}):")
    for spec in names:
        st = stages[spec]
        rest = total[spec] - sum(st.values())
        parts = ", ".join(f"{k} {v / rounds * 1e3:.0f}" for k, v in [*st.items(), ("rest", rest)])
        print(f"  {spec:30s} {total[spec] / rounds * 1e3:6.0f} ms ({total[spec] / base:.2f}x)   [{parts}]")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:2]], *sys.argv[2:4], *[int(a) for a in sys.argv[4:5]])
